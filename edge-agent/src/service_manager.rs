//! # systemd: readiness, the watchdog and a status line
//!
//! Under `Type=notify` the agent says `READY=1` once its journal is open and
//! every stage runs, and `STOPPING=1` when it begins to stop. With
//! `WatchdogSec=` set, the main loop sends `WATCHDOG=1` every half period,
//! with a one-line `STATUS=` that `systemctl status` shows; if the loop
//! stalls, the pings stop and systemd kills and restarts the agent. Outside
//! systemd (no `NOTIFY_SOCKET`) all of this does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::remote_config::state::ReportedState;

/// Test-only fault hook: after this long the main loop stalls (blocks its
/// thread for good), so the watchdog test can see the pings stop. `main`
/// reads it into [`crate::agent::Setup::stall_main_loop_after`]. Not for
/// production use; not in `--help`.
pub const STALL_HOOK_VAR: &str = "BUOY_TEST_STALL_MAIN_LOOP_AFTER";

/// How often to ping the watchdog: half its period, if systemd set one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `WATCHDOG=1`, with a status line.
pub fn alive(state: &ReportedState) {
    let status = status_line(state);
    send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
}

fn status_line(s: &ReportedState) -> String {
    let backlog = s.journal.as_ref().map_or(0, |j| j.records);
    let problems = s.problems();
    format!(
        "link {}, backlog {backlog}, {} forwarded{}",
        s.link.state,
        s.forwarded,
        if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    )
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// What the stall hook does: block this thread for good.
pub fn stall() -> ! {
    tracing::warn!("{STALL_HOOK_VAR}: the main loop stalls now (test-only fault hook)");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
