//! The remote config a start begins with: the stored layers, read from
//! `remote-config.json` and checked again (signatures, and the merge laid
//! over the local config), the trial carried over if one was running, and
//! the versions reverted before.

use std::collections::BTreeMap;

use super::accepted::{Accepted, LayerSet, compose, public_key};
use super::desired::{self, Rejected};
use super::layers::Layer;
use super::report::{ConfigReport, Decision, Verdict};
use super::store::{Store, StoredSet, StoredTrial};
use crate::config::AgentConfig;

/// The config to start with: the local one with the stored layers laid over
/// it, if there are any and they still pass every check together.
pub struct Startup {
    pub config: AgentConfig,
    pub report: ConfigReport,
    /// The stored layers that could be read, whether they apply or not: a
    /// newer version is needed to replace one.
    pub(super) stored: LayerSet,
    /// A trial that was running when the agent stopped: it runs on.
    pub(super) trial: Option<StoredTrial>,
    pub(super) reverted: BTreeMap<Layer, u64>,
}

/// The stored file, with the layers this device no longer takes (its
/// labels changed) left out.
fn stored_file(store: &Store, taken: &[Layer]) -> StoredSet {
    let bytes = match store.load() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return StoredSet::default(),
        Err(e) => {
            tracing::error!(path = %store.path().display(), error = %e, "cannot read the stored remote config; running the local config");
            return StoredSet::default();
        }
    };
    let mut file = match StoredSet::decode(&bytes) {
        Ok(file) => file,
        Err(e) => {
            tracing::error!(path = %store.path().display(), error = %e, "the stored remote config is damaged; running the local config");
            return StoredSet::default();
        }
    };
    file.layers.retain(|layer, _| {
        let keep = taken.contains(layer);
        if !keep {
            tracing::info!(
                layer = layer.name(),
                "no longer taking this stored layer: the device's labels changed"
            );
        }
        keep
    });
    if let Some(trial) = &mut file.trial {
        trial.previous.retain(|layer, _| taken.contains(layer));
    }
    file
}

/// The payloads that still parse and pass the signature check, and the
/// first failure of any that does not.
pub(super) fn read_layers(
    local: &AgentConfig,
    payloads: BTreeMap<Layer, Vec<u8>>,
) -> (LayerSet, Option<(Option<Layer>, Rejected)>) {
    let key = public_key(local);
    let mut stored = LayerSet::new();
    let mut failed = None;
    for (layer, payload) in payloads {
        match desired::parse(&payload) {
            Ok(d) => {
                // A layer whose signature no longer passes (the key
                // changed) is not kept: it must not run with the next one.
                match desired::check_signature(&d, key.as_ref()) {
                    Ok(()) => drop(stored.insert(layer, Accepted::new(d, &payload))),
                    Err(e) => drop(failed.get_or_insert((Some(layer), e))),
                }
            }
            Err(e) => {
                failed.get_or_insert((Some(layer), e));
            }
        }
    }
    (stored, failed)
}

/// Reads the stored layers and lays them over `local`.
pub fn startup(local: &AgentConfig, store: &Store) -> Startup {
    let taken = Layer::all_for(&local.labels);
    let mut report = ConfigReport::for_layers(&taken);
    let file = stored_file(store, &taken);
    let (stored, failed) = read_layers(local, file.layers);
    let composed = match failed {
        Some(failure) => Err(failure),
        None if stored.is_empty() => Ok(local.clone()),
        None => compose(local, &stored),
    };
    let config = match composed {
        Ok(config) => {
            for (layer, accepted) in &stored {
                tracing::info!(
                    layer = layer.name(),
                    version = accepted.version(),
                    "running the stored remote config"
                );
                let version = Some(accepted.version());
                report.record(layer, decision(layer, version, None), version);
            }
            config
        }
        Err((at, e)) => {
            let at = at.map_or(String::new(), |l| format!("the {} layer: ", l.name()));
            let reason = format!(
                "the stored remote config no longer applies ({at}{e}); running the local config"
            );
            tracing::error!(path = %store.path().display(), "{reason}");
            for (layer, accepted) in &stored {
                let version = Some(accepted.version());
                report.record(layer, decision(layer, version, Some(&reason)), None);
            }
            local.clone()
        }
    };
    Startup {
        config,
        report,
        stored,
        trial: file.trial,
        reverted: file.reverted,
    }
}

/// `accepted`, or `rejected` for `reason`.
fn decision(layer: &Layer, version: Option<u64>, reason: Option<&str>) -> Decision {
    Decision {
        layer: layer.name(),
        version,
        result: if reason.is_some() {
            Verdict::Rejected
        } else {
            Verdict::Accepted
        },
        reason: reason.map(str::to_owned),
    }
}
