//! The decisions of a rollout (`buoy-fleet push` and `rollback`). Pure:
//! which layer and devices `--to` names, the next version, what a device
//! said about a version, whether a canary stayed healthy, what a canary's
//! device-level override holds.

use std::collections::{BTreeMap, BTreeSet};

use edge_agent::remote_config::desired;
use edge_agent::remote_config::layers::{Layer, merge};
use edge_agent::remote_config::report::Verdict;
use serde_json::{Map, Value};

use crate::view::{Device, Fleet};

/// What `--to` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `all`: the fleet layer.
    All,
    /// `key=value`: a group layer.
    Group { key: String, value: String },
    /// `device:<id>`: one device's own layer.
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--to {0:?}: say all, key=value (a label) or device:<id>")]
pub struct BadTarget(String);

impl std::str::FromStr for Target {
    type Err = BadTarget;
    fn from_str(s: &str) -> Result<Target, BadTarget> {
        if s == "all" {
            return Ok(Target::All);
        }
        if let Some(id) = s.strip_prefix("device:").filter(|id| !id.is_empty()) {
            return Ok(Target::Device(id.to_owned()));
        }
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Target::Group {
                key: k.to_owned(),
                value: v.to_owned(),
            }),
            _ => Err(BadTarget(s.to_owned())),
        }
    }
}

impl Target {
    /// The layer as the devices name it.
    pub fn layer(&self) -> Layer {
        match self {
            Target::All => Layer::Fleet,
            Target::Group { key, value } => Layer::Group {
                key: key.clone(),
                value: value.clone(),
            },
            Target::Device(_) => Layer::Device,
        }
    }

    /// The retained config topic.
    pub fn topic(&self) -> String {
        match self {
            Target::Device(id) => Layer::Device.topic(id),
            other => other.layer().topic("-"),
        }
    }

    /// Where its history is kept (retained, for `rollback`).
    pub fn history_topic(&self) -> String {
        match self {
            Target::Device(id) => format!("buoy/fleet/history/device/{id}"),
            other => format!("buoy/fleet/history/{}", other.layer().name()),
        }
    }

    /// The devices it reaches, by id.
    pub fn devices(&self, fleet: &Fleet) -> Vec<String> {
        fleet
            .devices
            .values()
            .filter(|d| match self {
                Target::All => true,
                Target::Group { key, value } => d.labels().get(key) == Some(value),
                Target::Device(id) => &d.id == id,
            })
            .map(|d| d.id.clone())
            .collect()
    }
}

/// The version a new push takes: above the retained one and above any
/// version a device reports for the layer.
pub fn next_version(retained: Option<&[u8]>, layer: &str, devices: &[&Device]) -> u64 {
    let on_broker = retained
        .and_then(|p| desired::parse(p).ok())
        .map_or(0, |d| d.version);
    let reported = devices
        .iter()
        .filter_map(|d| d.state.as_ref()?.config.layers.get(layer).cloned())
        .map(|l| {
            l.applied_version
                .max(l.last.and_then(|d| d.version).unwrap_or(0))
        })
        .max()
        .unwrap_or(0);
    on_broker.max(reported) + 1
}

/// What `device` said about `version` of `layer`: `None` while it has not.
pub fn answer(device: &Device, layer: &str, version: u64) -> Option<(Verdict, Option<String>)> {
    let l = device.state.as_ref()?.config.layers.get(layer)?;
    match &l.last {
        Some(d) if d.version == Some(version) => Some((d.result, d.reason.clone())),
        _ if l.applied_version >= version => Some((Verdict::Accepted, None)),
        _ => None,
    }
}

/// How a canary looked when it took the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub problems: BTreeSet<String>,
    pub backlog: u64,
}

/// A backlog this much above the canary's at the start is growing.
pub const BACKLOG_GROWTH: u64 = 100;

impl Health {
    pub fn of(d: &Device) -> Health {
        Health {
            problems: d.problems().into_iter().collect(),
            backlog: d.backlog().unwrap_or(0),
        }
    }

    /// Why `now` is worse than `self`; `None` when it is not.
    pub fn regression(&self, now: &Device) -> Option<String> {
        if !now.is_online() {
            return Some("went offline".into());
        }
        let link = now.state.as_ref().map(|s| s.link.state.to_string());
        if link.as_deref() == Some("down") {
            return Some("its Kafka link went down".into());
        }
        let h = Health::of(now);
        if let Some(new) = h.problems.difference(&self.problems).next() {
            return Some(format!("a new problem: {new}"));
        }
        if h.backlog > self.backlog + BACKLOG_GROWTH {
            return Some(format!(
                "its backlog grew from {} to {} readings",
                self.backlog, h.backlog
            ));
        }
        None
    }
}

/// A canary's device-level override: the new settings, with the device's
/// own layer still winning where it sets a key (as it will once the new
/// settings are on the group or fleet layer).
pub fn canary_settings(new: &Map<String, Value>, own: &Map<String, Value>) -> Map<String, Value> {
    merge([(&Layer::Fleet, new), (&Layer::Device, own)]).unwrap_or_else(|_| new.clone())
}

/// A desired config's payload before signing: `settings`, `version` and
/// `trial`.
pub fn payload(settings: &Map<String, Value>, version: u64, trial: Option<&str>) -> Vec<u8> {
    let mut object = settings.clone();
    object.insert(desired::VERSION_KEY.into(), Value::from(version));
    if let Some(t) = trial {
        object.insert(desired::TRIAL_KEY.into(), Value::from(t));
    }
    serde_json::to_vec(&Value::Object(object)).expect("JSON serialises")
}

/// The settings (without version, signature and trial) of a retained
/// payload; empty when there is none or it does not parse.
pub fn settings_of(payload: Option<&[u8]>) -> (u64, Map<String, Value>) {
    payload
        .and_then(|p| desired::parse(p).ok())
        .map_or((0, Map::new()), |d| (d.version, d.settings))
}

/// The history of a layer: its pushes, newest last, at most
/// [`HISTORY_LEN`].
pub const HISTORY_LEN: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub version: u64,
    pub settings: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
    pub pushed_at_ms: i64,
}

impl History {
    pub fn read(payload: Option<&[u8]>) -> History {
        payload
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or_default()
    }

    pub fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
        let over = self.entries.len().saturating_sub(HISTORY_LEN);
        self.entries.drain(..over);
    }

    /// What to roll back to: the entry before the newest.
    pub fn previous(&self) -> Option<&Entry> {
        self.entries.iter().rev().nth(1)
    }
}

/// The devices' answers so far, for the report at the end.
pub type Answers = BTreeMap<String, (Verdict, Option<String>)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::classify;

    fn device(id: &str, labels: Value, layers: Value, online: bool) -> Device {
        let mut fleet = Fleet::default();
        fleet.take(classify(
            &format!("buoy/{id}/status"),
            if online { b"online" } else { b"offline" },
        ));
        let state = serde_json::json!({
            "device_id": id, "labels": labels, "agent_version": "0.1.0", "uptime_s": 1,
            "config": {"applied_version": 0, "layers": layers, "last": null, "accepted": 0, "rejected": 0},
            "link": {"state": "up", "producer_renewals": 0},
            "journal": {"records": 3, "file_bytes": 1, "max_bytes": 100},
            "dropped": {"queue_full": 0, "unencodable": 0, "dropped_oldest": 0, "rejected_new": 0, "aggregated": 0},
            "sensors": [], "sampled": 1, "journaled": 1, "forwarded": 1,
            "clock": {"synced": true}, "time_ns": 0
        });
        fleet.take(classify(
            &format!("buoy/{id}/state"),
            state.to_string().as_bytes(),
        ));
        fleet.devices.remove(id).unwrap()
    }

    #[test]
    fn targets_name_a_layer_its_topic_and_its_devices() {
        let t: Target = "site=north-sea".parse().unwrap();
        assert_eq!(t.topic(), "buoy/group/site/north-sea/config");
        assert_eq!(t.layer().name(), "group/site/north-sea");
        assert_eq!(
            "all".parse::<Target>().unwrap().topic(),
            "buoy/fleet/config"
        );
        let d: Target = "device:pi-7".parse().unwrap();
        assert_eq!(d.topic(), "buoy/pi-7/config");
        assert!("pi-7".parse::<Target>().is_err());
        assert!("device:".parse::<Target>().is_err());
        let mut fleet = Fleet::default();
        for (id, site) in [("a", "north-sea"), ("b", "south"), ("c", "north-sea")] {
            let d = device(
                id,
                serde_json::json!({"site": site}),
                serde_json::json!({}),
                true,
            );
            fleet.devices.insert(id.into(), d);
        }
        assert_eq!(t.devices(&fleet), ["a", "c"]);
        assert_eq!(d.devices(&fleet), Vec::<String>::new());
    }

    #[test]
    fn the_next_version_is_above_the_broker_and_every_device() {
        let layers = serde_json::json!({"fleet": {"applied_version": 4,
            "last": {"layer": "fleet", "version": 6, "result": "rejected", "reason": "x"}}});
        let d = device("a", serde_json::json!({}), layers, true);
        assert_eq!(next_version(Some(br#"{"version": 5}"#), "fleet", &[&d]), 7);
        assert_eq!(next_version(Some(br#"{"version": 9}"#), "fleet", &[&d]), 10);
        assert_eq!(next_version(None, "device", &[&d]), 1);
        assert_eq!(
            answer(&d, "fleet", 6),
            Some((Verdict::Rejected, Some("x".into())))
        );
        assert_eq!(answer(&d, "fleet", 3), Some((Verdict::Accepted, None)));
        assert_eq!(answer(&d, "fleet", 7), None);
    }

    #[test]
    fn a_canary_regresses_when_offline_link_down_new_problems_or_a_growing_backlog() {
        let d = device("a", serde_json::json!({}), serde_json::json!({}), true);
        let before = Health::of(&d);
        assert_eq!(before.regression(&d), None);
        let off = device("a", serde_json::json!({}), serde_json::json!({}), false);
        assert_eq!(before.regression(&off).as_deref(), Some("went offline"));
        let mut grown = d.clone();
        grown
            .state
            .as_mut()
            .unwrap()
            .journal
            .as_mut()
            .unwrap()
            .records = 500;
        assert!(
            before
                .regression(&grown)
                .unwrap()
                .contains("backlog grew from 3 to 500")
        );
        let mut down = d.clone();
        down.state.as_mut().unwrap().link.state = "down".into();
        assert!(before.regression(&down).unwrap().contains("link went down"));
    }

    #[test]
    fn a_canary_keeps_its_own_keys_and_history_rolls_back_one_step() {
        let new: Map<String, Value> =
            serde_json::from_str(r#"{"forward": {"order": "fifo"}, "kafka": {"topic": "new"}}"#)
                .unwrap();
        let own: Map<String, Value> =
            serde_json::from_str(r#"{"kafka": {"topic": "mine"}}"#).unwrap();
        assert_eq!(
            Value::Object(canary_settings(&new, &own)),
            serde_json::json!({"forward": {"order": "fifo"}, "kafka": {"topic": "mine"}})
        );
        let mut h = History::default();
        for v in 1..=25 {
            h.push(Entry {
                version: v,
                settings: Map::new(),
                trial: None,
                pushed_at_ms: 0,
            });
        }
        assert_eq!(h.entries.len(), HISTORY_LEN);
        assert_eq!(h.previous().unwrap().version, 24);
        let p = payload(&new, 3, Some("10m"));
        let d = desired::parse(&p).unwrap();
        assert_eq!(
            (d.version, d.trial),
            (3, Some(std::time::Duration::from_secs(600)))
        );
    }
}
