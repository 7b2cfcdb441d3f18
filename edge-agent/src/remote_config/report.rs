//! The config part of the reported state: per layer, the version running
//! and the last decision on it. Pure.
//!
//! ```json
//! "config": {"applied_version": 4,
//!            "layers": {"fleet": {"applied_version": 2},
//!                       "group/site/north-sea": {"applied_version": 1,
//!                           "last": {"layer": "group/site/north-sea", "version": 2, "result": "rejected", "reason": "…"}},
//!                       "device": {"applied_version": 4, "last": {"layer": "device", "version": 4, "result": "accepted"}}},
//!            "last": {"layer": "group/site/north-sea", "version": 2, "result": "rejected", "reason": "…"},
//!            "trial": {"layer": "device", "version": 5, "ends_at_ms": 1764950000000},
//!            "accepted": 1, "rejected": 1, "reverted": 0}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layers::Layer;

/// What became of a desired config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Checked, stored and running.
    Accepted,
    /// Refused; nothing changed.
    Rejected,
    /// Run on trial, not confirmed in time, and replaced by the config
    /// that ran before it.
    Reverted,
}

/// A trial running: the layer and version on trial, and when it reverts
/// unless confirmed (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialReport {
    pub layer: String,
    pub version: u64,
    pub ends_at_ms: i64,
}

/// The decision on one desired config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The layer it came in on (`fleet`, `group/<key>/<value>`, `device`).
    #[serde(default)]
    pub layer: String,
    /// The config's version, when it had a readable one.
    pub version: Option<u64>,
    pub result: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One layer's part of the state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// The version running from this layer; 0: none.
    pub applied_version: u64,
    /// The most recent decision on this layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Decision>,
}

/// The config part of the reported state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The version of the device's own layer running; 0: none. (What the
    /// state said before there were layers; see `layers` for the rest.)
    pub applied_version: u64,
    /// Every layer the device takes, by name.
    #[serde(default)]
    pub layers: BTreeMap<String, LayerReport>,
    /// The most recent decision on any layer (also after a restart, for the
    /// stored layers).
    pub last: Option<Decision>,
    /// The trial running, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialReport>,
    /// Desired configs accepted, rejected and reverted since start.
    pub accepted: u64,
    pub rejected: u64,
    #[serde(default)]
    pub reverted: u64,
}

impl ConfigReport {
    /// A report listing `layers`, nothing applied yet.
    pub fn for_layers(layers: &[Layer]) -> ConfigReport {
        ConfigReport {
            layers: layers
                .iter()
                .map(|l| (l.name(), LayerReport::default()))
                .collect(),
            ..ConfigReport::default()
        }
    }

    /// Whether any remote layer is running.
    pub fn remote_running(&self) -> bool {
        self.applied_version > 0 || self.layers.values().any(|l| l.applied_version > 0)
    }

    /// Records a decision on `layer`; `applied`: the layer's version now
    /// running (`Some(0)`: none any more).
    pub fn record(&mut self, layer: &Layer, decision: Decision, applied: Option<u64>) {
        let entry = self.layers.entry(layer.name()).or_default();
        if let Some(version) = applied {
            entry.applied_version = version;
            if *layer == Layer::Device {
                self.applied_version = version;
            }
        }
        entry.last = Some(decision.clone());
        self.last = Some(decision);
    }

    /// An accepted config, now running.
    pub fn accept(&mut self, layer: &Layer, version: u64) {
        self.accepted += 1;
        let decision = Decision {
            layer: layer.name(),
            version: Some(version),
            result: Verdict::Accepted,
            reason: None,
        };
        self.record(layer, decision, Some(version));
    }

    /// A refused config; the layer runs on as it was.
    pub fn reject(&mut self, layer: &Layer, version: Option<u64>, reason: String) {
        self.rejected += 1;
        let decision = Decision {
            layer: layer.name(),
            version,
            result: Verdict::Rejected,
            reason: Some(reason),
        };
        self.record(layer, decision, None);
    }

    /// A trial began (or runs on after a restart).
    pub fn trial_started(&mut self, layer: &Layer, version: u64, ends_at_ms: i64) {
        self.trial = Some(TrialReport {
            layer: layer.name(),
            version,
            ends_at_ms,
        });
    }

    /// The trial was confirmed: the layer stays as it is.
    pub fn trial_confirmed(&mut self) {
        self.trial = None;
    }

    /// The trial of `version` on `layer` was not confirmed: the layer's
    /// `restored` version runs again (0: none).
    pub fn revert(&mut self, layer: &Layer, version: u64, restored: u64, reason: String) {
        self.trial = None;
        self.reverted += 1;
        let decision = Decision {
            layer: layer.name(),
            version: Some(version),
            result: Verdict::Reverted,
            reason: Some(reason),
        };
        self.record(layer, decision, Some(restored));
    }

    /// Nothing remote runs any more (the stored layers could not start):
    /// every layer at 0, the reason on each layer that had been running.
    pub fn fall_back(&mut self, reason: &str) {
        let running: Vec<(String, u64)> = self
            .layers
            .iter()
            .filter(|(_, l)| l.applied_version > 0)
            .map(|(name, l)| (name.clone(), l.applied_version))
            .collect();
        for (name, version) in running {
            let layer = Layer::from_name(&name).expect("the report names layers");
            let decision = Decision {
                layer: name,
                version: Some(version),
                result: Verdict::Rejected,
                reason: Some(reason.to_owned()),
            };
            self.record(&layer, decision, Some(0));
        }
        self.applied_version = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layer_keeps_its_version_and_last_decision() {
        let group = Layer::Group {
            key: "site".into(),
            value: "n".into(),
        };
        let mut r = ConfigReport::for_layers(&[Layer::Fleet, group.clone(), Layer::Device]);
        assert!(!r.remote_running());
        r.accept(&Layer::Fleet, 3);
        r.accept(&Layer::Device, 5);
        r.reject(&group, Some(2), "bad".into());
        assert!(r.remote_running());
        assert_eq!((r.accepted, r.rejected, r.applied_version), (2, 1, 5));
        assert_eq!(r.layers["fleet"].applied_version, 3);
        assert_eq!(r.layers["group/site/n"].applied_version, 0);
        let last = r.last.clone().unwrap();
        assert_eq!(
            (last.layer.as_str(), last.result),
            ("group/site/n", Verdict::Rejected)
        );
        r.trial_started(&Layer::Device, 6, 1000);
        r.revert(&Layer::Device, 6, 5, "no ack".into());
        assert_eq!(
            (r.applied_version, r.reverted, r.trial.clone()),
            (5, 1, None)
        );
        let last = r.layers["device"].last.clone().unwrap();
        assert_eq!((last.version, last.result), (Some(6), Verdict::Reverted));
        r.fall_back("cannot start");
        assert!(!r.remote_running());
        let fleet = r.layers["fleet"].last.clone().unwrap();
        assert_eq!((fleet.version, fleet.result), (Some(3), Verdict::Rejected));
        assert_eq!(
            r.layers["group/site/n"]
                .last
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("bad")
        );
    }

    #[test]
    fn a_state_from_before_layers_still_reads() {
        let old = r#"{"applied_version":4,"last":{"version":4,"result":"accepted"},"accepted":1,"rejected":0}"#;
        let r: ConfigReport = serde_json::from_str(old).unwrap();
        assert_eq!(r.applied_version, 4);
        assert!(r.layers.is_empty());
        assert!(r.remote_running());
    }
}
