//! `buoy-fleet status`: one row per device, as a table or as JSON. The
//! rendering is pure; [`crate::commands`] feeds it from the broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::view::{Device, Filter, age_text, verdict_text};

/// One device's row (also `/api/devices`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub device: String,
    pub online: bool,
    /// When the device's last state was made (ms since the epoch): for an
    /// offline device, roughly when it was last heard of.
    pub last_state_ms: Option<i64>,
    pub uptime_s: Option<u64>,
    pub agent_version: Option<String>,
    /// Per layer: the version running and the last decision.
    pub layers: BTreeMap<String, LayerRow>,
    /// A trial running, as `layer vN`.
    pub trial: Option<String>,
    pub link: Option<String>,
    pub backlog: Option<u64>,
    pub oldest_unsent_age_s: Option<f64>,
    pub dropped: u64,
    pub failing_sensors: Vec<String>,
    pub clock_synced: Option<bool>,
    pub labels: BTreeMap<String, String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    pub applied_version: u64,
    pub last_version: Option<u64>,
    pub last_result: Option<&'static str>,
}

impl Row {
    pub fn of(d: &Device) -> Row {
        let s = d.state.as_ref();
        let layers = s
            .map(|s| {
                s.config
                    .layers
                    .iter()
                    .map(|(name, l)| {
                        let row = LayerRow {
                            applied_version: l.applied_version,
                            last_version: l.last.as_ref().and_then(|d| d.version),
                            last_result: l.last.as_ref().map(|d| verdict_text(d.result)),
                        };
                        (name.clone(), row)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Row {
            device: d.id.clone(),
            online: d.is_online(),
            last_state_ms: s.map(|s| s.time_ns / 1_000_000),
            uptime_s: s.map(|s| s.uptime_s),
            agent_version: s.map(|s| s.agent_version.to_string()),
            layers,
            trial: s
                .and_then(|s| s.config.trial.as_ref())
                .map(|t| format!("{} v{}", t.layer, t.version)),
            link: s.map(|s| s.link.state.to_string()),
            backlog: d.backlog(),
            oldest_unsent_age_s: d.oldest_unsent_age_s(),
            dropped: d.dropped(),
            failing_sensors: s
                .map(|s| {
                    s.sensors
                        .iter()
                        .filter(|x| x.state == hardware::HealthState::Failing)
                        .map(|x| x.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            clock_synced: s.map(|s| s.clock.synced),
            labels: d.labels(),
            problems: d.problems(),
        }
    }
}

/// The rows of the devices `filter` selects, by device id.
pub fn rows<'a>(devices: impl IntoIterator<Item = &'a Device>, filter: &Filter) -> Vec<Row> {
    devices
        .into_iter()
        .filter(|d| filter.matches(d))
        .map(Row::of)
        .collect()
}

/// `online 2h 3m` or `offline, last heard 5m ago`.
pub fn presence(row: &Row, now_ms: i64) -> String {
    match (row.online, row.uptime_s, row.last_state_ms) {
        (true, Some(up), _) => format!("online, up {}", age_text(up as f64)),
        (true, None, _) => "online".into(),
        (false, _, Some(at)) => format!(
            "offline, last heard {} ago",
            age_text((now_ms - at) as f64 / 1000.0)
        ),
        (false, _, None) => "offline".into(),
    }
}

/// `fleet:2 site/north-sea:1 device:4 (v5 rejected)`.
pub fn layers_text(row: &Row) -> String {
    let mut out = Vec::new();
    for (name, l) in &row.layers {
        let short = name.strip_prefix("group/").unwrap_or(name);
        let mut cell = format!("{short}:{}", l.applied_version);
        if let (Some(v), Some(result)) = (l.last_version, l.last_result)
            && result != "accepted"
            && v > l.applied_version
        {
            let _ = write!(cell, " (v{v} {result})");
        }
        out.push(cell);
    }
    if let Some(t) = &row.trial {
        out.push(format!("trial {t}"));
    }
    out.join(" ")
}

/// One row of the table.
fn cells_of(r: &Row, now_ms: i64) -> Vec<String> {
    let backlog = match (r.backlog, r.oldest_unsent_age_s) {
        (Some(n), Some(age)) if n > 0 => format!("{n} ({} old)", age_text(age)),
        (Some(n), _) => n.to_string(),
        (None, _) => "-".into(),
    };
    let sensors = if r.failing_sensors.is_empty() {
        "ok".to_owned()
    } else {
        format!("failing: {}", r.failing_sensors.join(","))
    };
    let clock = match r.clock_synced {
        Some(true) => "synced",
        Some(false) => "NOT synced",
        None => "-",
    };
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        r.device.clone(),
        presence(r, now_ms),
        r.agent_version.clone().unwrap_or_else(|| "-".into()),
        layers_text(r),
        r.link.clone().unwrap_or_else(|| "-".into()),
        backlog,
        r.dropped.to_string(),
        sensors,
        clock.to_owned(),
        labels.join(","),
    ]
}

/// The table `buoy-fleet status` prints.
pub fn table(rows: &[Row], now_ms: i64) -> String {
    let header = [
        "DEVICE", "PRESENCE", "AGENT", "CONFIG", "LINK", "BACKLOG", "DROPPED", "SENSORS", "CLOCK",
        "LABELS",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    cells.extend(rows.iter().map(|r| cells_of(r, now_ms)));
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let with_problems: Vec<&Row> = rows.iter().filter(|r| !r.problems.is_empty()).collect();
    let _ = writeln!(
        out,
        "\n{} devices, {} online, {} with problems",
        rows.len(),
        rows.iter().filter(|r| r.online).count(),
        with_problems.len()
    );
    for r in with_problems {
        for p in &r.problems {
            let _ = writeln!(out, "  {}: {p}", r.device);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{Fleet, classify};

    #[test]
    fn the_table_has_a_row_per_device_and_lists_problems_under_it() {
        let mut fleet = Fleet::default();
        fleet.take(classify("buoy/pi-2/status", b"offline"));
        fleet.take(classify("buoy/pi-1/status", b"online"));
        let state = serde_json::json!({
            "device_id": "pi-1", "labels": {"site": "north-sea"}, "agent_version": "0.1.0", "uptime_s": 7260,
            "config": {"applied_version": 4, "layers": {"device": {"applied_version": 4},
                "group/site/north-sea": {"applied_version": 1,
                    "last": {"layer": "group/site/north-sea", "version": 2, "result": "rejected", "reason": "bad"}}},
                "last": null, "accepted": 1, "rejected": 1},
            "link": {"state": "up", "producer_renewals": 0},
            "journal": {"records": 12, "file_bytes": 1, "max_bytes": 100, "oldest_unsent_age_s": 3.0},
            "dropped": {"queue_full": 0, "unencodable": 0, "dropped_oldest": 0, "rejected_new": 0, "aggregated": 0},
            "sensors": [], "sampled": 1, "journaled": 1, "forwarded": 1,
            "clock": {"synced": true}, "time_ns": 1_000_000_000_000i64
        });
        fleet.take(classify("buoy/pi-1/state", state.to_string().as_bytes()));
        let rows = rows(fleet.devices.values(), &Filter::default());
        let text = table(&rows, 1_000_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("DEVICE"), "{text}");
        assert!(lines[1].starts_with("pi-1"), "{text}");
        for cell in [
            "online, up 2h 1m",
            "device:4 site/north-sea:1 (v2 rejected)",
            "12 (3s old)",
            "site=north-sea",
            "synced",
        ] {
            assert!(lines[1].contains(cell), "{cell}: {text}");
        }
        assert!(
            lines[2].starts_with("pi-2") && lines[2].contains("offline"),
            "{text}"
        );
        assert!(
            text.contains("2 devices, 1 online, 2 with problems"),
            "{text}"
        );
        assert!(
            text.contains("pi-1: config group/site/north-sea v2 rejected: bad"),
            "{text}"
        );
        assert!(text.contains("pi-2: offline"), "{text}");
    }
}
