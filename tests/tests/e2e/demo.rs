//! `scripts/demo`, run as a new user runs it: the story (readings flowing,
//! the broker stopped, readings piling up, the broker back, the backlog
//! drained, every reading counted) with its exit status, the panel redrawn
//! in place on a terminal (tmux), and the final count's arithmetic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buoy_tests::binaries;
use buoy_tests::process::{require, wait_for};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `scripts/demo` with `seconds` and `broker`, its environment otherwise
/// the user's (no BUOY_* overrides).
fn demo(seconds: u32, broker: &str) -> Command {
    // Built first, so that the demo's own `cargo build` finds them current.
    binaries::path("buoy-demo-kafka");
    let mut c = Command::new(workspace().join("scripts/demo"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BUOY_") {
            c.env_remove(key);
        }
    }
    c.env("BUOY_DEMO_SECONDS", seconds.to_string())
        .env("BUOY_DEMO_BROKER", broker);
    c
}

/// The number after `prefix` in `line` (up to the next space).
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Acceptance: `BUOY_DEMO_SECONDS=90 scripts/demo` exits 0, and its output
/// (not a terminal) shows the outage, the drain and a final count in which
/// the readings journaled equal the points in VictoriaMetrics.
#[test]
fn the_demo_shows_an_outage_a_drain_and_a_count_that_adds_up() {
    require(
        "tansu",
        "cargo install tansu --locked --version 0.6.0 --features dynostore,libsql",
    );
    let started = Instant::now();
    let out = demo(90, "tansu")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/demo");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!(
        "{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scripts/demo failed:\n{all}");
    assert!(
        took >= Duration::from_secs(90) && took < Duration::from_secs(90 + 90),
        "the 90-second story took {took:?}:\n{all}"
    );

    let phase = |n: u32, words: &str| -> String {
        let head = format!("demo {n}/6 {words}");
        stdout
            .lines()
            .find(|l| l.starts_with(&head))
            .unwrap_or_else(|| panic!("no line `{head}…`:\n{all}"))
            .to_owned()
    };
    phase(1, "readings flowing");
    phase(2, "link cut");
    let piled = phase(3, "readings piling up");
    assert!(piled.contains("Kafka link down"), "{piled}");
    let piled_up = piled
        .split("; ")
        .find(|p| p.contains(" wait in the journal"))
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("how many waited: {piled}"));
    assert!(
        piled_up >= 50,
        "readings piled up in the journal during the outage: {piled}"
    );
    phase(4, "link restored");
    let drained = phase(5, "backlog drained");
    let since_cut = number_after(&drained, "the ").expect("readings journaled since the cut");
    assert!(since_cut >= piled_up, "{drained} / {piled}");
    phase(6, "end");

    let live = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("live readings first: "))
        .unwrap_or_else(|| panic!("no word on live readings first:\n{all}"));
    assert!(
        live.split(' ').next().and_then(|n| n.parse::<u64>().ok()) >= Some(1),
        "live readings did not go before the backlog: {live}"
    );

    let check = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("check: journaled "))
        .unwrap_or_else(|| panic!("no final check:\n{all}"));
    let journaled = number_after(check, "journaled ").expect("journaled");
    let in_db = number_after(check, "= ").expect("in VictoriaMetrics");
    assert!(journaled > 500, "{check}");
    assert_eq!(journaled, in_db, "{check}");
    assert!(check.ends_with(": 0 lost, 0 duplicated"), "{check}");
}

/// A tmux session of `width` columns and `height` lines on a server of its
/// own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        require("tmux", "apt-get install tmux");
        let socket = format!("buoy-demo-test-{}", std::process::id());
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "demo",
            ])
            .args(["-x", &width.to_string(), "-y", &height.to_string(), command])
            .status()
            .expect("start tmux");
        assert!(status.success(), "tmux new-session failed");
        Tmux { socket }
    }

    /// The screen; with `history`, every line that scrolled off it too.
    fn capture(&self, history: bool) -> String {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "capture-pane", "-p", "-t", "demo"]);
        if history {
            c.args(["-S", "-", "-E", "-"]);
        }
        let out = c.output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The row of the panel's first line on the screen, and that line.
fn panel_row(screen: &str) -> Option<(usize, String)> {
    let rows: Vec<(usize, &str)> = screen
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("Buoy demo "))
        .collect();
    assert!(
        rows.len() <= 1,
        "the panel is on the screen twice:\n{screen}"
    );
    rows.first().map(|(i, l)| (*i, (*l).to_owned()))
}

/// Acceptance: on a terminal the panel is redrawn in place: captured twice
/// while the demo runs it stands at the same row with new figures, and the
/// whole scrollback at the end holds it once, so it never scrolled.
#[test]
fn on_a_terminal_the_demo_redraws_one_panel_in_place() {
    binaries::path("buoy-demo-kafka");
    let script = workspace().join("scripts/demo");
    let shell = format!(
        "cd {} && env -u BUOY_CONFIG BUOY_DEMO_SECONDS=45 BUOY_DEMO_BROKER=mock {} ; echo DEMO-EXIT=$? ; sleep 600",
        workspace().display(),
        script.display()
    );
    let tmux = Tmux::start(&shell, 120, 50);
    let (row_a, first) = wait_for(
        "the demo's panel on the screen",
        Duration::from_secs(240),
        || panel_row(&tmux.capture(false)),
        || tmux.capture(true),
    );
    std::thread::sleep(Duration::from_secs(4));
    let screen = tmux.capture(false);
    let (row_b, second) =
        panel_row(&screen).unwrap_or_else(|| panic!("the panel went away:\n{screen}"));
    assert_eq!(row_a, row_b, "the panel moved:\n{screen}");
    assert_ne!(first, second, "the panel was not redrawn:\n{screen}");
    for field in ["temperature", "Kafka link", "journal", "VictoriaMetrics  "] {
        assert!(
            screen.contains(field),
            "no `{field}` in the panel:\n{screen}"
        );
    }

    let end = wait_for(
        "the demo to end",
        Duration::from_secs(150),
        || {
            let all = tmux.capture(true);
            all.contains("DEMO-EXIT=").then_some(all)
        },
        || tmux.capture(true),
    );
    assert!(end.contains("DEMO-EXIT=0"), "the demo failed:\n{end}");
    let headers = end.lines().filter(|l| l.starts_with("Buoy demo ")).count();
    assert_eq!(
        headers, 1,
        "the panel scrolled (drawn {headers} times):\n{end}"
    );
    assert!(
        end.contains("0 lost, 0 duplicated"),
        "no final count after the panel:\n{end}"
    );
}

/// The final check's arithmetic (`scripts/lib/demo_check.py`): a reading
/// missing from the database, or a point that is no reading's, fails it.
#[test]
fn the_demo_fails_when_a_reading_is_lost_or_duplicated() {
    let lib = workspace().join("scripts/lib");
    let program = r#"
import demo_check as c
keys = {("a", 1), ("a", 2), ("b", 1)}
print(c.tally(3, 0, keys, keys))
print(c.tally(3, 0, keys, keys - {("a", 2)}))
print(c.tally(3, 0, keys, keys | {("a", 3)}))
print(c.tally(3, 1, keys - {("b", 1)}, keys - {("b", 1)}))
"#;
    let out = Command::new("python3")
        .current_dir(&lib)
        .args(["-c", program])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "(0, 0, True)",
            "(1, 0, False)",
            "(0, 1, False)",
            "(0, 0, True)"
        ],
        "(lost, duplicated, ok) for: all there; one missing; one extra; one still in the journal"
    );
}

/// `scripts/demo --help` explains the settings and the exit status; a
/// setting it cannot use is refused at once, with what it takes.
#[test]
fn the_demo_explains_itself_and_refuses_bad_settings() {
    let script = workspace().join("scripts/demo");
    let help = Command::new(&script)
        .arg("--help")
        .output()
        .expect("run scripts/demo");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for words in [
        "BUOY_DEMO_SECONDS",
        "BUOY_DEMO_BROKER",
        "librdkafka",
        "Exit status",
    ] {
        assert!(
            text.contains(words),
            "--help does not mention {words}:\n{text}"
        );
    }
    for (seconds, broker, says) in [
        ("20", "mock", "at least 40 seconds"),
        ("soon", "mock", "a whole number of seconds"),
        ("60", "kafka", "tansu or mock"),
    ] {
        let out = Command::new(&script)
            .env("BUOY_DEMO_SECONDS", seconds)
            .env("BUOY_DEMO_BROKER", broker)
            .output()
            .expect("run scripts/demo");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{seconds} {broker}: {err}");
        assert!(err.contains(says), "{seconds} {broker}: {err}");
    }
}
