//! `edge-agent sensors`: open every enabled sensor once and show what it
//! reads, or exactly why it cannot. The first thing an installer runs on a
//! new device.

use std::fmt::Write as _;

use hardware::{Outcome, SensorConfig, Supervisor};
use serde::Serialize;

use crate::config::AgentConfig;
use crate::sampler::{READ_TIMEOUT, to_reading};

/// What one sensor gave.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub kind: &'static str,
    pub device: String,
    pub enabled: bool,
    /// The readings as line protocol, as they would be journaled.
    pub readings: Vec<String>,
    pub error: Option<String>,
    pub hint: Option<&'static str>,
}

impl Check {
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Opens and reads every configured sensor once, in config order. Disabled
/// ones are listed but not opened.
pub async fn check_all(config: &AgentConfig, now_ns: i64) -> Vec<Check> {
    let mut checks = Vec::new();
    for s in &config.sensors {
        checks.push(check(&config.device_id, s, now_ns).await);
    }
    checks
}

async fn check(device_id: &str, config: &SensorConfig, now_ns: i64) -> Check {
    let mut out = Check {
        name: config.name.clone(),
        kind: config.kind.name(),
        device: config.device(),
        enabled: config.enabled,
        readings: Vec::new(),
        error: None,
        hint: None,
    };
    if !config.enabled {
        return out;
    }
    let mut sensor = Supervisor::new(config.clone());
    match sensor.read(READ_TIMEOUT).await {
        Outcome::Read(observations) => {
            for obs in observations {
                let reading = to_reading(device_id, &config.name, obs, now_ns);
                match telemetry::line_protocol::encode(&reading) {
                    Ok(line) => out.readings.push(line),
                    Err(e) => out.error = Some(format!("the reading cannot be encoded: {e}")),
                }
            }
        }
        Outcome::Failed(e) => {
            out.hint = e.hint(config.kind);
            out.error = Some(e.to_string());
        }
        Outcome::Waiting => unreachable!("a new supervisor opens at once"),
    }
    out
}

/// The human-readable report.
pub fn describe(checks: &[Check]) -> String {
    let mut s = String::new();
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let head = format!("{:width$}  {} on {}", c.name, c.kind, c.device);
        if !c.enabled {
            let _ = writeln!(s, "{head}: disabled, not opened");
        } else if let Some(e) = &c.error {
            let _ = writeln!(s, "{head}: FAILED: {e}");
            if let Some(hint) = c.hint {
                let _ = writeln!(s, "{:width$}  hint: {hint}", "");
            }
        } else {
            let _ = writeln!(s, "{head}: ok");
            for line in &c.readings {
                let _ = writeln!(s, "{:width$}    {line}", "");
            }
        }
    }
    let tried = checks.iter().filter(|c| c.enabled).count();
    let failed = checks.iter().filter(|c| c.failed()).count();
    let _ = writeln!(
        s,
        "{} of {tried} enabled sensors read{}",
        tried - failed,
        if failed > 0 {
            format!("; {failed} FAILED")
        } else {
            String::new()
        }
    );
    s
}
