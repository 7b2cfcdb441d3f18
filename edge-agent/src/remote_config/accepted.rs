//! An accepted layer, and the config a set of them makes of the local one.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};

use super::desired::{self, Desired, Rejected};
use super::layers::{Layer, merge};
use super::overlay::{Reach, check_remote, overlay};
use crate::config::AgentConfig;

/// The public key from `mqtt.config_public_key` (checked at load).
pub fn public_key(local: &AgentConfig) -> Option<VerifyingKey> {
    local
        .mqtt
        .config_public_key
        .as_deref()
        .map(|k| desired::parse_public_key(k).expect("checked when the config was loaded"))
}

/// One accepted layer: its payload as it arrived, and what was read from it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub(super) version: u64,
    pub(super) canonical: Vec<u8>,
    settings: Map<String, Value>,
    pub(super) trial: Option<Duration>,
    payload: Vec<u8>,
}

impl Accepted {
    pub(super) fn new(d: Desired, payload: &[u8]) -> Accepted {
        Accepted {
            version: d.version,
            canonical: d.canonical,
            settings: d.settings,
            trial: d.trial,
            payload: payload.to_vec(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    fn reach(&self) -> Reach {
        if self.trial.is_some() {
            Reach::Trial
        } else {
            Reach::Plain
        }
    }
}

/// The accepted layers, in merge order.
pub type LayerSet = BTreeMap<Layer, Accepted>;

/// The config `layers` make of `local`: each layer's keys checked, the
/// layers merged in order, the result laid over `local` and validated
/// whole. `Err` names the layer at fault when it is one layer's.
pub fn compose(
    local: &AgentConfig,
    layers: &LayerSet,
) -> Result<AgentConfig, (Option<Layer>, Rejected)> {
    for (layer, accepted) in layers {
        check_remote(&accepted.settings, accepted.reach()).map_err(|e| (Some(layer.clone()), e))?;
    }
    let merged =
        merge(layers.iter().map(|(l, a)| (l, &a.settings))).map_err(|(l, e)| (Some(l), e))?;
    // Each layer's keys were checked above, for its own reach.
    overlay(local, &merged, Reach::Trial).map_err(|e| (None, e))
}

/// The payloads of `layers`, as stored.
pub(super) fn payloads(layers: &LayerSet) -> BTreeMap<Layer, Vec<u8>> {
    layers
        .iter()
        .map(|(l, a)| (l.clone(), a.payload.clone()))
        .collect()
}
