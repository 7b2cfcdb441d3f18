//! What happens to a desired config arriving on one layer: parse → check
//! the signature → check the version against that layer's → merge it with
//! the other accepted layers, lay the result over the local config and
//! validate it whole → persist every layer together → apply → report. Any failure reports `rejected` with the reason and
//! changes nothing; a failure while applying puts the previous config back
//! (in the pipeline and on disk).

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};
use telemetry::throttle::Throttle;
use tokio::sync::{mpsc, oneshot, watch};

use super::desired::{self, Desired, Rejected};
use super::layers::{Layer, decode_stored, encode_stored, merge};
use super::overlay::{check_remote, overlay};
pub use super::report::{ConfigReport, Decision, Verdict};
use super::store::Store;
use crate::config::AgentConfig;
use crate::pipeline::{ApplyFailed, Changes};

/// A config for the agent to run, and where to say how it went.
pub struct ApplyRequest {
    pub config: AgentConfig,
    pub done: oneshot::Sender<Result<Changes, ApplyFailed>>,
}

/// Why a desired config was not applied (reported as `rejected`, with this
/// as the reason).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Unsigned, badly signed, stale, malformed or invalid.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("cannot read the stored config before replacing it: {0}")]
    ReadStored(std::io::Error),
    #[error("cannot store it durably in {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The new layer is fine, but with it another accepted layer no longer
    /// is.
    #[error("with it, the {layer} layer is refused: {error}")]
    OtherLayer { layer: String, error: Rejected },
    #[error("the agent is stopping")]
    Stopping,
    /// The agent tried it and went back to the config it ran; `restore` is
    /// set when putting back the stored config failed too.
    #[error("applying failed: {error}{}", restore.as_ref().map_or(String::new(), |(e, version)| format!(" (and putting back the stored config failed: {e}; it may start with version {version} after a restart)")))]
    Apply {
        error: ApplyFailed,
        restore: Option<(std::io::Error, u64)>,
    },
}

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
    version: u64,
    canonical: Vec<u8>,
    settings: Map<String, Value>,
    payload: Vec<u8>,
}

impl Accepted {
    fn new(d: Desired, payload: &[u8]) -> Accepted {
        Accepted {
            version: d.version,
            canonical: d.canonical,
            settings: d.settings,
            payload: payload.to_vec(),
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
        check_remote(&accepted.settings).map_err(|e| (Some(layer.clone()), e))?;
    }
    let merged =
        merge(layers.iter().map(|(l, a)| (l, &a.settings))).map_err(|(l, e)| (Some(l), e))?;
    overlay(local, &merged).map_err(|e| (None, e))
}

/// The file's bytes for `layers`.
fn stored_bytes(layers: &LayerSet) -> Vec<u8> {
    let payloads: BTreeMap<Layer, Vec<u8>> = layers
        .iter()
        .map(|(l, a)| (l.clone(), a.payload.clone()))
        .collect();
    encode_stored(&payloads)
}

/// The config to start with: the local one with the stored layers laid over
/// it, if there are any and they still pass every check together.
pub struct Startup {
    pub config: AgentConfig,
    pub report: ConfigReport,
    /// The stored layers that could be read, whether they apply or not: a
    /// newer version is needed to replace one.
    stored: LayerSet,
}

/// The stored payloads of the layers this device takes. Layers it no longer
/// takes (its labels changed) are left out.
fn stored_payloads(store: &Store, taken: &[Layer]) -> BTreeMap<Layer, Vec<u8>> {
    let bytes = match store.load() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return BTreeMap::new(),
        Err(e) => {
            tracing::error!(path = %store.path().display(), error = %e, "cannot read the stored remote config; running the local config");
            return BTreeMap::new();
        }
    };
    let mut payloads = match decode_stored(&bytes) {
        Ok(payloads) => payloads,
        Err(e) => {
            tracing::error!(path = %store.path().display(), error = %e, "the stored remote config is damaged; running the local config");
            return BTreeMap::new();
        }
    };
    payloads.retain(|layer, _| {
        let keep = taken.contains(layer);
        if !keep {
            tracing::info!(
                layer = layer.name(),
                "no longer taking this stored layer: the device's labels changed"
            );
        }
        keep
    });
    payloads
}

/// The stored layers that still parse and pass the signature check, and the
/// first failure of any that does not.
fn read_stored(
    local: &AgentConfig,
    store: &Store,
    taken: &[Layer],
) -> (LayerSet, Option<(Option<Layer>, Rejected)>) {
    let key = public_key(local);
    let mut stored = LayerSet::new();
    let mut failed = None;
    for (layer, payload) in stored_payloads(store, taken) {
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
    let (stored, failed) = read_stored(local, store, &taken);
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
                    version = accepted.version,
                    "running the stored remote config"
                );
                report.record(
                    layer,
                    decision(layer, Some(accepted.version), None),
                    Some(accepted.version),
                );
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
                report.record(
                    layer,
                    decision(layer, Some(accepted.version), Some(&reason)),
                    None,
                );
            }
            local.clone()
        }
    };
    Startup {
        config,
        report,
        stored,
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

/// Decides on desired configs, one at a time.
pub struct Controller {
    local: AgentConfig,
    key: Option<VerifyingKey>,
    store: Store,
    /// The layers accepted (running, or stored but not starting): a layer
    /// delivered again unchanged is not news, and only a newer version
    /// replaces one.
    current: LayerSet,
    report: watch::Sender<ConfigReport>,
    apply: mpsc::Sender<ApplyRequest>,
    rejections_log: Throttle,
}

impl Controller {
    pub fn new(
        local: AgentConfig,
        store: Store,
        startup: Startup,
        apply: mpsc::Sender<ApplyRequest>,
    ) -> (Controller, watch::Receiver<ConfigReport>) {
        let (report, report_rx) = watch::channel(startup.report);
        let controller = Controller {
            key: public_key(&local),
            local,
            store,
            current: startup.stored,
            report,
            apply,
            rejections_log: Throttle::new(std::time::Duration::from_secs(60)),
        };
        (controller, report_rx)
    }

    /// Takes desired configs until the sender is dropped.
    pub async fn run(mut self, mut payloads: mpsc::Receiver<(Layer, Vec<u8>)>) {
        while let Some((layer, payload)) = payloads.recv().await {
            self.handle(&layer, &payload).await;
        }
    }

    /// Decides on one payload for `layer` and reports the decision.
    pub async fn handle(&mut self, layer: &Layer, payload: &[u8]) {
        let parsed = desired::parse(payload);
        let version = parsed.as_ref().ok().map(|d| d.version);
        let outcome = match parsed {
            Ok(d) => self.consider(layer, d, payload).await,
            Err(e) => Err(Refusal::Rejected(e)),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(changes)) => {
                let version = version.expect("accepted configs have one");
                tracing::info!(
                    layer = layer.name(),
                    version,
                    journal = changes.journal,
                    sensors_restarted = ?changes.sensors_restarted,
                    sensors_stopped = ?changes.sensors_stopped,
                    forwarder = changes.forwarder,
                    status_reporter = changes.reporter,
                    "remote config applied"
                );
                self.report.send_modify(|r| r.accept(layer, version));
            }
            Err(reason) => {
                if let Some(held_back) = self.rejections_log.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        layer = layer.name(),
                        version,
                        similar_not_logged = held_back,
                        "remote config rejected, nothing changed: {reason}"
                    );
                }
                self.report
                    .send_modify(|r| r.reject(layer, version, reason.to_string()));
            }
        }
    }

    /// `Ok(None)`: the layer already running, delivered again (a retained
    /// message after a reconnect).
    async fn consider(
        &mut self,
        layer: &Layer,
        d: Desired,
        payload: &[u8],
    ) -> Result<Option<Changes>, Refusal> {
        desired::check_signature(&d, self.key.as_ref())?;
        if let Some(current) = self.current.get(layer) {
            if d.version == current.version && d.canonical == current.canonical {
                return Ok(None);
            }
            desired::check_version(&d, current.version)?;
        }
        let version = d.version;
        let mut candidate = self.current.clone();
        candidate.insert(layer.clone(), Accepted::new(d, payload));
        let config = compose(&self.local, &candidate).map_err(|(at, error)| match at {
            Some(at) if at != *layer => Refusal::OtherLayer {
                layer: at.name(),
                error,
            },
            _ => Refusal::Rejected(error),
        })?;
        let previous = self.store.load().map_err(Refusal::ReadStored)?;
        self.store
            .save(&stored_bytes(&candidate))
            .map_err(|source| Refusal::Store {
                path: self.store.path().to_owned(),
                source,
            })?;
        let (done, result) = oneshot::channel();
        let applied = match self.apply.send(ApplyRequest { config, done }).await {
            Ok(()) => result.await.map_err(|_| Refusal::Stopping)?,
            Err(_) => return Err(Refusal::Stopping),
        };
        match applied {
            Ok(changes) => {
                self.current = candidate;
                Ok(Some(changes))
            }
            Err(error) => Err(Refusal::Apply {
                error,
                restore: self
                    .store
                    .restore(previous.as_deref())
                    .err()
                    .map(|e| (e, version)),
            }),
        }
    }
}
