//! Building and running the real `edge-agent` and `uplink` binaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::process::Service;

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
            "--bins",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building edge-agent and uplink failed");
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
    c.env_remove("STATE_DIRECTORY").env("RUST_LOG", "info");
    c
}

/// Writes `config` to `<dir>/<name>.toml` and starts `binary` with it.
pub fn start(binary: &str, dir: &Path, config: &str) -> Service {
    let config_path = dir.join(format!("{binary}.toml"));
    std::fs::write(&config_path, config).expect("write config");
    let mut c = command(binary);
    c.arg("--config").arg(&config_path).arg("run");
    Service::spawn(binary, c, &dir.join(format!("{binary}.log")))
}

/// The most recent status line that has `key`, as key → value. Both
/// binaries log `status key=value ...` lines.
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
