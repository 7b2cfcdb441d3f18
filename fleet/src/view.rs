//! The fleet as the broker shows it: every device that ever published a
//! retained status or state on `buoy/<device_id>/…`, and what is wrong with
//! each. Pure: messages in, a view out.

use std::collections::BTreeMap;

use edge_agent::remote_config::report::{Decision, Verdict};
use edge_agent::remote_config::state::ReportedState;
use serde::Serialize;

/// Readings waiting longer than this make a problem.
pub const STALE_BACKLOG_S: f64 = 600.0;

/// One device as last seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Device {
    pub id: String,
    /// The retained `status`: `Some(true)` online, `Some(false)` offline.
    pub online: Option<bool>,
    pub state: Option<ReportedState>,
    /// Why the last state could not be read, if it could not.
    pub unreadable: Option<String>,
}

/// What a message on the broker was, for the fleet.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Status { device: String, online: bool },
    State { device: String, payload: Vec<u8> },
    Other,
}

/// Classifies a message by its topic.
pub fn classify(topic: &str, payload: &[u8]) -> Seen {
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        ["buoy", device, "status"] if !payload.is_empty() => Seen::Status {
            device: (*device).to_owned(),
            online: payload == b"online",
        },
        ["buoy", device, "state"] if !payload.is_empty() => Seen::State {
            device: (*device).to_owned(),
            payload: payload.to_vec(),
        },
        _ => Seen::Other,
    }
}

/// A config decision as the fleet saw it arrive.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Heard {
    pub at_ms: i64,
    pub decision: Decision,
}

/// Every device, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    pub devices: BTreeMap<String, Device>,
}

impl Fleet {
    /// Takes in one message.
    pub fn take(&mut self, seen: Seen) {
        match seen {
            Seen::Status { device, online } => self.device(&device).online = Some(online),
            Seen::State { device, payload } => {
                let d = self.device(&device);
                match serde_json::from_slice::<ReportedState>(&payload) {
                    Ok(state) => {
                        d.state = Some(state);
                        d.unreadable = None;
                    }
                    Err(e) => d.unreadable = Some(e.to_string()),
                }
            }
            Seen::Other => {}
        }
    }

    fn device(&mut self, id: &str) -> &mut Device {
        self.devices.entry(id.to_owned()).or_insert_with(|| Device {
            id: id.to_owned(),
            ..Device::default()
        })
    }
}

impl Device {
    pub fn is_online(&self) -> bool {
        self.online == Some(true)
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.state
            .as_ref()
            .map(|s| s.labels.clone())
            .unwrap_or_default()
    }

    /// The readings waiting in the journal, if known.
    pub fn backlog(&self) -> Option<u64> {
        Some(self.state.as_ref()?.journal.as_ref()?.records)
    }

    pub fn oldest_unsent_age_s(&self) -> Option<f64> {
        self.state.as_ref()?.journal.as_ref()?.oldest_unsent_age_s
    }

    /// Readings dropped since the agent started, all causes.
    pub fn dropped(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| {
            let d = &s.dropped;
            d.queue_full + d.unencodable + d.dropped_oldest + d.rejected_new + d.unreadable
        })
    }

    /// What an operator should look at, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.is_online() {
            p.push("offline".to_owned());
        }
        if let Some(e) = &self.unreadable {
            p.push(format!("state unreadable: {e}"));
        }
        let Some(state) = &self.state else {
            p.push("no state reported".to_owned());
            return p;
        };
        p.extend(state.problems());
        if let Some(age) = self.oldest_unsent_age_s().filter(|a| *a > STALE_BACKLOG_S) {
            p.push(format!("readings waiting for {}", age_text(age)));
        }
        if self.dropped() > 0 {
            p.push(format!("{} readings dropped", self.dropped()));
        }
        if !state.clock.synced {
            p.push("clock not synchronised".to_owned());
        }
        for (name, layer) in &state.config.layers {
            if let Some(last) = &layer.last
                && last.result != Verdict::Accepted
                && last.version > Some(layer.applied_version)
            {
                p.push(format!(
                    "config {name} v{} {}: {}",
                    last.version.unwrap_or(0),
                    verdict_text(last.result),
                    last.reason.as_deref().unwrap_or("no reason given")
                ));
            }
        }
        p
    }
}

pub fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Accepted => "accepted",
        Verdict::Rejected => "rejected",
        Verdict::Reverted => "reverted",
    }
}

/// `90` → `1m 30s`, to the second.
pub fn age_text(seconds: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(
        seconds.max(0.0).round() as u64
    ))
    .to_string()
}

/// A selection of devices: `--label key=value` (all must match) and
/// `--state`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub labels: Vec<(String, String)>,
    pub state: Option<StateFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    Online,
    Offline,
    /// Devices with any problem.
    Problem,
    /// Devices without any.
    Ok,
}

impl Filter {
    pub fn matches(&self, d: &Device) -> bool {
        let labels = d.labels();
        let labelled = self
            .labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v));
        labelled
            && match self.state {
                None => true,
                Some(StateFilter::Online) => d.is_online(),
                Some(StateFilter::Offline) => !d.is_online(),
                Some(StateFilter::Problem) => !d.problems().is_empty(),
                Some(StateFilter::Ok) => d.problems().is_empty(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn state_json(id: &str, link: &str, synced: bool) -> Vec<u8> {
        serde_json::json!({
            "device_id": id, "labels": {"site": "north-sea"}, "agent_version": "0.1.0", "uptime_s": 60,
            "config": {"applied_version": 0, "layers": {"fleet": {"applied_version": 2,
                "last": {"layer": "fleet", "version": 3, "result": "rejected", "reason": "bad"}}},
                "last": null, "accepted": 0, "rejected": 1},
            "link": {"state": link, "producer_renewals": 0},
            "journal": {"records": 5, "file_bytes": 1, "max_bytes": 100, "oldest_unsent_age_s": 700.0},
            "dropped": {"queue_full": 0, "unencodable": 0, "dropped_oldest": 2, "rejected_new": 0, "aggregated": 0},
            "sensors": [], "sampled": 1, "journaled": 1, "forwarded": 1,
            "clock": {"synced": synced}, "time_ns": 0
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn devices_come_from_their_status_and_state_and_problems_are_named() {
        let mut fleet = Fleet::default();
        for (topic, payload) in [
            ("buoy/pi-1/status", b"online".to_vec()),
            ("buoy/pi-1/state", state_json("pi-1", "down", false)),
            ("buoy/pi-2/status", b"offline".to_vec()),
            ("buoy/pi-3/state", b"{not json".to_vec()),
            ("buoy/fleet/config", b"{}".to_vec()),
            ("buoy/pi-4/status", Vec::new()),
        ] {
            fleet.take(classify(topic, &payload));
        }
        let ids: Vec<&String> = fleet.devices.keys().collect();
        assert_eq!(
            ids,
            ["pi-1", "pi-2", "pi-3"],
            "configs and deleted messages are not devices"
        );
        let p = fleet.devices["pi-1"].problems();
        for says in [
            "Kafka link down",
            "readings waiting for 11m 40s",
            "2 readings dropped",
            "clock not synchronised",
            "config fleet v3 rejected: bad",
        ] {
            assert!(p.iter().any(|l| l.contains(says)), "{says}: {p:?}");
        }
        assert!(!p.contains(&"offline".to_owned()));
        assert_eq!(
            fleet.devices["pi-2"].problems(),
            ["offline", "no state reported"]
        );
        assert!(fleet.devices["pi-3"].problems()[1].starts_with("state unreadable"));
    }

    #[test]
    fn filters_select_by_label_and_state() {
        let mut fleet = Fleet::default();
        fleet.take(classify("buoy/pi-1/status", b"online"));
        fleet.take(classify("buoy/pi-1/state", &state_json("pi-1", "up", true)));
        fleet.take(classify("buoy/pi-2/status", b"offline"));
        let pick = |f: Filter| -> Vec<String> {
            fleet
                .devices
                .values()
                .filter(|d| f.matches(d))
                .map(|d| d.id.clone())
                .collect()
        };
        let site = |v: &str| vec![("site".to_owned(), v.to_owned())];
        assert_eq!(
            pick(Filter {
                labels: site("north-sea"),
                state: None
            }),
            ["pi-1"]
        );
        assert!(
            pick(Filter {
                labels: site("south"),
                state: None
            })
            .is_empty()
        );
        assert_eq!(
            pick(Filter {
                labels: vec![],
                state: Some(StateFilter::Offline)
            }),
            ["pi-2"]
        );
        assert_eq!(
            pick(Filter {
                labels: vec![],
                state: Some(StateFilter::Online)
            }),
            ["pi-1"]
        );
    }
}
