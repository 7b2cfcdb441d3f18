//! Building and running the real `edge-agent`, `uplink` and `buoy-fleet`
//! binaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::process::{AgentFiles, Service};

/// The directory holding freshly built `edge-agent` and `uplink` binaries
/// (of the same profile as this test), building them once per test run.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Tests run from target/<profile>/deps/; binaries are in target/<profile>/.
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps")
            .to_owned();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(workspace).args([
            "build",
            "--quiet",
            "-p",
            "edge-agent",
            "-p",
            "uplink",
            "-p",
            "buoy-fleet",
            "-p",
            "buoy-demo",
            "--bins",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        dir
    })
}

pub fn path(binary: &str) -> PathBuf {
    let p = bin_dir().join(binary);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// A command for `binary` with a clean environment: no `BUOY_*` overrides
/// or systemd directories inherited from whoever runs the tests.
pub fn command(binary: &str) -> Command {
    let mut c = Command::new(path(binary));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BUOY_") {
            c.env_remove(key);
        }
    }
    c.env_remove("STATE_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info");
    c
}

/// Writes `config` to `<dir>/<name>.toml` and starts `binary` with it.
pub fn start(binary: &str, dir: &Path, config: &str) -> Service {
    start_with(binary, dir, config, &format!("{binary}.log"), &[])
}

/// Like [`start`], logging to `<dir>/<log>` with extra environment `env`
/// (e.g. a `RUST_LOG` that shows more).
pub fn start_with(
    binary: &str,
    dir: &Path,
    config: &str,
    log: &str,
    env: &[(&str, &str)],
) -> Service {
    start_with_args(binary, dir, config, log, env, &[])
}

/// [`start_with`], with `args` after `run`. An edge agent also gets
/// `--report-state <dir>/<log>.state.json`, and its status socket is taken
/// from `config`, for [`agent_number`] and [`final_state`].
pub fn start_with_args(
    binary: &str,
    dir: &Path,
    config: &str,
    log: &str,
    env: &[(&str, &str)],
    args: &[&std::ffi::OsStr],
) -> Service {
    let config_path = dir.join(format!("{binary}.toml"));
    std::fs::write(&config_path, config).expect("write config");
    let mut c = command(binary);
    c.arg("--config").arg(&config_path).arg("run").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let files = (binary == "edge-agent").then(|| agent_files(dir, config, log, env));
    if let Some(Ok(files)) = &files {
        let _ = std::fs::remove_file(&files.final_state);
        c.arg("--report-state").arg(&files.final_state);
    }
    let mut service = Service::spawn(binary, c, &dir.join(log));
    service.state = files;
    service
}

/// Where an agent started with `config` and `env` answers, and where it
/// is told to leave its final state; the config's problems if it would
/// refuse it.
fn agent_files(
    dir: &Path,
    config: &str,
    log: &str,
    env: &[(&str, &str)],
) -> Result<AgentFiles, String> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = edge_agent::config::AgentConfig::load("test", Some(config), &env)
        .map_err(|e| e.to_string())?;
    Ok(AgentFiles {
        socket: loaded.config.status_socket(),
        final_state: dir.join(format!("{log}.state.json")),
    })
}

/// Runs `edge-agent journal <args>` with the agent config last written to
/// `dir` by [`start`]; returns (success, stdout, stderr).
pub fn journal_command(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command("edge-agent")
        .arg("--config")
        .arg(dir.join("edge-agent.toml"))
        .arg("journal")
        .args(args)
        .output()
        .expect("run edge-agent journal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `edge-agent journal stats --json`, parsed.
pub fn journal_stats_json(dir: &Path) -> serde_json::Value {
    let (ok, out, err) = journal_command(dir, &["stats", "--json"]);
    assert!(ok, "edge-agent journal stats failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The most recent status line that has `key`, as key → value. Only for
/// the uplink, which has no status socket yet (issue 20): an edge agent's
/// counts come from [`state_of`] and [`final_state`].
pub fn last_status(log: &str, key: &str) -> Option<HashMap<String, String>> {
    let needle = format!(" {key}=");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" status ") && l.contains(&needle))?;
    let fields = line.split_once(" status ")?.1;
    Some(
        fields
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect(),
    )
}

/// A number from the most recent status line that has `key`.
pub fn status_number(log: &str, key: &str) -> Option<u64> {
    last_status(log, key)?.get(key)?.parse().ok()
}

/// The running agent's reported state, asked over its status socket
/// (`edge-agent.sock` next to the journal in `dir`, where the configs of
/// these tests put it); `None` while no agent answers there.
pub fn agent_state(dir: &Path) -> Option<serde_json::Value> {
    edge_agent::local_status::ask_json(&dir.join("edge-agent.sock")).ok()
}

/// A number at `path` (keys separated by `/`) of the reported state, 0
/// when it is absent.
pub fn state_number(state: &serde_json::Value, path: &str) -> u64 {
    path.split('/')
        .fold(state, |v, key| &v[key])
        .as_u64()
        .unwrap_or(0)
}

/// `agent`'s reported state, asked over its status socket; `None` while it
/// does not answer (starting, stopped, or not an edge agent).
pub fn state_of(agent: &Service) -> Option<serde_json::Value> {
    edge_agent::local_status::ask_json(&agent_files_of(agent).socket).ok()
}

fn agent_files_of(agent: &Service) -> &AgentFiles {
    match &agent.state {
        Some(Ok(files)) => files,
        Some(Err(refused)) => panic!("the agent was started with a config it refuses: {refused}"),
        None => panic!(
            "{} is not an edge agent started by binaries::start",
            agent.name
        ),
    }
}

/// `agent`'s reported state, waiting up to 30 s for it to answer.
pub fn state_now(agent: &Service) -> serde_json::Value {
    crate::process::wait_for(
        "the agent to answer on its status socket",
        std::time::Duration::from_secs(30),
        || state_of(agent),
        || agent.log_tail(30),
    )
}

/// A number at `path` (as [`state_number`]) of `agent`'s reported state,
/// asked now; `None` while it does not answer.
pub fn agent_number(agent: &Service, path: &str) -> Option<u64> {
    Some(state_number(&state_of(agent)?, path))
}

/// The state `agent` reported when it stopped cleanly (`--report-state`).
pub fn final_state(agent: &Service) -> serde_json::Value {
    let files = agent_files_of(agent);
    let text = std::fs::read_to_string(&files.final_state).unwrap_or_else(|e| {
        panic!(
            "the agent left no final state at {} ({e}); its log ends:\n{}",
            files.final_state.display(),
            agent.log_tail(30)
        )
    });
    serde_json::from_str(&text).expect("the final state is JSON")
}

/// What the journal holds, read after the agent has exited.
pub fn journal_stats(path: &Path) -> edge_agent::journal::JournalStats {
    use edge_agent::journal::{Journal, JournalOptions};
    let (journal, opened) = Journal::open_for_inspection(path, JournalOptions::for_inspection())
        .unwrap_or_else(|e| panic!("cannot open the journal {}: {e}", path.display()));
    assert_eq!(
        opened.quarantined,
        None,
        "the journal {} was damaged",
        path.display()
    );
    journal.stats().expect("journal stats")
}
