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

use crate::remote_config::state::StateSource;

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

/// The JSON an asker gets: the state, with `problems` added.
fn answer(source: &StateSource) -> String {
    let state = source.state();
    let mut value = serde_json::to_value(&state).expect("the state serialises");
    value["problems"] = state.problems().into();
    let mut text = value.to_string();
    text.push('\n');
    text
}

/// Asks the agent listening on `path`; `Err` says why nobody answered.
pub fn ask(path: &Path) -> Result<Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "no edge agent is running (nothing answers on {}): {e}",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to ask the agent on {}: run as root or as a member of the agent's group (buoy)",
            path.display()
        ),
        _ => format!("cannot reach the agent on {}: {e}", path.display()),
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("the agent on {} did not answer: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("the agent's answer is not JSON: {e}"))
}

/// The problems listed in an answer.
pub fn problems(state: &Value) -> Vec<String> {
    state["problems"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The answer, for a human.
pub fn describe(s: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "edge agent {} (version {}), up {}",
        s["device_id"].as_str().unwrap_or("?"),
        s["agent_version"].as_str().unwrap_or("?"),
        humantime::format_duration(Duration::from_secs(s["uptime_s"].as_u64().unwrap_or(0)))
    );
    let link = &s["link"];
    let renewals = match link["producer_renewals"].as_u64() {
        Some(n) if n > 0 => format!(", {n} fresh producer sessions since start"),
        _ => String::new(),
    };
    let _ = match link["last_error"].as_str() {
        Some(e) => writeln!(
            out,
            "  link       {} (last error: {e}){renewals}",
            link["state"].as_str().unwrap_or("?")
        ),
        None => writeln!(
            out,
            "  link       {}{renewals}",
            link["state"].as_str().unwrap_or("?")
        ),
    };
    let j = &s["journal"];
    if j.is_object() {
        let age = j["oldest_unsent_age_s"]
            .as_f64()
            .map(|a| format!(", oldest {} old", seconds(a)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  backlog    {} readings not yet acknowledged by Kafka{age}",
            j["records"]
        );
        let _ = writeln!(
            out,
            "  journal    {} of {} ({:.0}%)",
            bytes(j["file_bytes"].as_u64().unwrap_or(0)),
            bytes(j["max_bytes"].as_u64().unwrap_or(0)),
            100.0 * j["file_bytes"].as_f64().unwrap_or(0.0)
                / j["max_bytes"].as_f64().unwrap_or(1.0).max(1.0)
        );
    } else {
        let _ = writeln!(out, "  journal    cannot be read");
    }
    let d = &s["dropped"];
    let _ = writeln!(
        out,
        "  dropped    {} oldest (journal full), {} new refused, {} aggregated, {} queue full, {} unencodable",
        d["dropped_oldest"], d["rejected_new"], d["aggregated"], d["queue_full"], d["unencodable"]
    );
    let _ = writeln!(
        out,
        "  readings   {} sampled, {} journaled, {} forwarded since start",
        s["sampled"], s["journaled"], s["forwarded"]
    );
    for sensor in s["sensors"].as_array().into_iter().flatten() {
        let error = sensor["last_error"]
            .as_str()
            .filter(|_| sensor["state"] == "failing")
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  sensor     {} ({}) {}, {} readings, {} errors{error}",
            sensor["name"].as_str().unwrap_or("?"),
            sensor["kind"].as_str().unwrap_or("?"),
            sensor["state"].as_str().unwrap_or("?"),
            sensor["readings"],
            sensor["errors"]
        );
    }
    let c = &s["config"];
    let version = c["applied_version"].as_u64().unwrap_or(0);
    let config = if version == 0 {
        "local file only".to_owned()
    } else {
        format!("remote version {version}")
    };
    let last = match c["last"].as_object() {
        Some(last) => format!(
            "; last desired config {} {}{}",
            last.get("version").map_or("?".into(), |v| v.to_string()),
            last.get("result").and_then(Value::as_str).unwrap_or("?"),
            last.get("reason")
                .and_then(Value::as_str)
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    let _ = writeln!(out, "  config     {config}{last}");
    let _ = writeln!(
        out,
        "  clock      {}",
        if s["clock"]["synced"].as_bool().unwrap_or(true) {
            "synchronised"
        } else {
            "NOT synchronised: new readings wait in the journal until it is set"
        }
    );
    let problems = problems(s);
    if problems.is_empty() {
        let _ = writeln!(out, "healthy");
    } else {
        for p in problems {
            let _ = writeln!(out, "PROBLEM: {p}");
        }
    }
    out
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
