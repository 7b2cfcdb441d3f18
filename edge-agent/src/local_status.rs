//! # `edge-agent status`: the running agent, asked over a Unix socket
//!
//! The agent answers every connection to its status socket with its
//! reported state (the same JSON as on MQTT, see
//! [`crate::remote_config::state`]) plus the problems found in it, and
//! closes. The socket is made `0660` in the agent's state directory
//! (`0750`), so only root, the agent's user and its group can ask.
//!
//! `edge-agent status` prints it for a human, or as JSON, and exits 0 when
//! healthy, 1 when there are problems (Kafka link down, a sensor failing,
//! the journal full) and 3 when no agent answers: a health check.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use hardware::HealthState;
use serde::{Deserialize, Serialize};

use crate::remote_config::controller::{ConfigReport, Verdict};
use crate::remote_config::state::{JournalReport, LinkReport, ReportedState, StateSource};

/// Exit status when no agent answers (as LSB's "program is not running").
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status when the agent answers with problems.
pub const EXIT_UNHEALTHY: u8 = 1;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("status socket {path}: {source}")]
pub struct SocketError {
    path: PathBuf,
    source: std::io::Error,
}

/// Binds the socket (replacing one left by an agent that died: the journal's
/// lock already keeps a second agent from running on the same state) and
/// answers until `shutdown`; the socket file is removed on the way out.
pub fn serve(
    path: &Path,
    source: StateSource,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, SocketError> {
    let err = |source| SocketError {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    let path = path.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            let mut stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "status socket: accept failed");
                        continue;
                    }
                },
            };
            let source = source.clone();
            tokio::spawn(async move {
                let answer = answer(&source);
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// What an asker gets: the reported state, with the problems in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(flatten)]
    pub state: ReportedState,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The JSON an asker gets: the state, with `problems` added.
fn answer(source: &StateSource) -> String {
    let state = source.state();
    let problems = state.problems();
    let mut text =
        serde_json::to_string(&Answer { state, problems }).expect("the state serialises");
    text.push('\n');
    text
}

/// Why nobody answered on the status socket.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no edge agent is running (nothing answers on {}): {source}", path.display())]
    NotRunning {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("not allowed to ask the agent on {}: run as root or as a member of the agent's group (buoy)", path.display())]
    NotAllowed { path: std::path::PathBuf },
    #[error("cannot reach the agent on {}: {source}", path.display())]
    Unreachable {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the agent on {} did not answer: {source}", path.display())]
    NoAnswer {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the agent's answer is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// Asks the agent listening on `path`; `Err` says why nobody answered.
pub fn ask(path: &Path) -> Result<Answer, AskError> {
    Ok(serde_json::from_value(ask_json(path)?)?)
}

/// [`ask`], the answer as the JSON it came in.
pub fn ask_json(path: &Path) -> Result<Value, AskError> {
    let path_buf = path.to_owned();
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                AskError::NotRunning {
                    path: path_buf,
                    source,
                }
            }
            std::io::ErrorKind::PermissionDenied => AskError::NotAllowed { path: path_buf },
            _ => AskError::Unreachable {
                path: path_buf,
                source,
            },
        })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|source| AskError::NoAnswer {
            path: path.to_owned(),
            source,
        })?;
    Ok(serde_json::from_str(&text)?)
}

/// The answer, for a human.
pub fn describe(a: &Answer) -> String {
    let s = &a.state;
    let mut out = format!(
        "edge agent {} (version {}), up {}\n",
        s.device_id,
        s.agent_version,
        humantime::format_duration(Duration::from_secs(s.uptime_s))
    );
    describe_link(&mut out, &s.link);
    describe_journal(&mut out, s.journal.as_ref());
    let d = &s.dropped;
    let _ = writeln!(
        out,
        "  dropped    {} oldest (journal full), {} new refused, {} aggregated, {} queue full, {} unencodable, {} unreadable",
        d.dropped_oldest, d.rejected_new, d.aggregated, d.queue_full, d.unencodable, d.unreadable
    );
    let _ = writeln!(
        out,
        "  readings   {} sampled, {} journaled, {} forwarded since start",
        s.sampled, s.journaled, s.forwarded
    );
    for sensor in &s.sensors {
        let error = match (&sensor.last_error, sensor.state) {
            (Some(e), HealthState::Failing) => format!(": {e}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  sensor     {} ({}) {}, {} readings, {} errors{error}",
            sensor.name,
            sensor.kind,
            sensor.state.as_str(),
            sensor.readings,
            sensor.errors
        );
    }
    describe_config(&mut out, &s.config);
    let _ = writeln!(
        out,
        "  clock      {}",
        if s.clock.synced {
            "synchronised"
        } else {
            "NOT synchronised: new readings wait in the journal until it is set"
        }
    );
    if a.problems.is_empty() {
        let _ = writeln!(out, "healthy");
    }
    for p in &a.problems {
        let _ = writeln!(out, "PROBLEM: {p}");
    }
    out
}

fn describe_link(out: &mut String, link: &LinkReport) {
    let renewals = match link.producer_renewals {
        0 => String::new(),
        n => format!(", {n} fresh producer sessions since start"),
    };
    let error = link
        .last_error
        .as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default();
    let _ = writeln!(out, "  link       {}{error}{renewals}", link.state);
}

fn describe_journal(out: &mut String, journal: Option<&JournalReport>) {
    let Some(j) = journal else {
        let _ = writeln!(out, "  journal    cannot be read");
        return;
    };
    let age = j
        .oldest_unsent_age_s
        .map(|a| format!(", oldest {} old", seconds(a)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  backlog    {} readings not yet acknowledged by Kafka{age}",
        j.records
    );
    let _ = writeln!(
        out,
        "  journal    {} of {} ({:.0}%)",
        bytes(j.file_bytes),
        bytes(j.max_bytes),
        100.0 * j.file_bytes as f64 / (j.max_bytes as f64).max(1.0)
    );
}

fn describe_config(out: &mut String, c: &ConfigReport) {
    let running: Vec<String> = c
        .layers
        .iter()
        .filter(|(_, l)| l.applied_version > 0)
        .map(|(name, l)| format!("{name} v{}", l.applied_version))
        .collect();
    let config = match (running.is_empty(), c.applied_version) {
        (true, 0) => "local file only".to_owned(),
        (true, version) => format!("remote version {version}"),
        (false, _) => format!("remote layers {}", running.join(", ")),
    };
    let last = match &c.last {
        Some(last) => format!(
            "; last desired config {}{} {}{}",
            if last.layer.is_empty() {
                String::new()
            } else {
                format!("{} ", last.layer)
            },
            last.version.map_or("?".into(), |v| format!("v{v}")),
            match last.result {
                Verdict::Accepted => "accepted",
                Verdict::Rejected => "rejected",
                Verdict::Reverted => "reverted",
            },
            last.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    let trial = c.trial.as_ref().map_or(String::new(), |t| {
        format!("; on trial: {} v{} until confirmed", t.layer, t.version)
    });
    let _ = writeln!(out, "  config     {config}{last}{trial}");
}

fn seconds(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
}

fn bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= MIB {
        format!("{:.1} MiB", b as f64 / MIB)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    fn answer_with(stats: &Stats) -> Answer {
        let state = ReportedState::new(
            "pi-7",
            3_600,
            ConfigReport::default(),
            stats.snapshot(),
            None,
            1_700_000_000_000_000_000,
        );
        let problems = state.problems();
        Answer { state, problems }
    }

    #[test]
    fn the_answer_reads_back_as_the_state_the_agent_reported() {
        let stats = Stats::default();
        stats.sampled(12);
        let sent = answer_with(&stats);
        let wire = serde_json::to_string(&sent).unwrap();
        let value: Value = serde_json::from_str(&wire).unwrap();
        assert_eq!(
            value["device_id"], "pi-7",
            "the state's keys stay at the top"
        );
        assert_eq!(value["problems"][0], "the journal cannot be read");
        let read: Answer = serde_json::from_str(&wire).unwrap();
        assert_eq!(read, sent);
    }

    #[test]
    fn a_human_sees_the_problems_and_the_counters() {
        let stats = Stats::default();
        stats.sampled(12);
        let text = describe(&answer_with(&stats));
        assert!(text.starts_with("edge agent pi-7 (version "), "{text}");
        assert!(
            text.contains("  readings   12 sampled, 0 journaled"),
            "{text}"
        );
        assert!(text.contains("  journal    cannot be read"), "{text}");
        assert!(
            text.contains("PROBLEM: the journal cannot be read"),
            "{text}"
        );
        assert!(!text.contains("healthy"), "{text}");
    }
}
