//! What happens to a desired config arriving on one layer: parse → check
//! the signature → check the version against that layer's → merge it with
//! the other accepted layers, lay the result over the local config and
//! validate it whole → persist every layer together → apply → report. Any
//! failure reports `rejected` with the reason and changes nothing; a
//! failure while applying puts the previous config back (in the pipeline
//! and on disk).
//!
//! A layer with `"trial"` is stored with the layers it replaces; the
//! controller watches for its confirmation ([`super::trial`]) and puts the
//! previous layers back if it does not come. Configs arriving meanwhile
//! wait for the trial's end (the newest per layer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use telemetry::throttle::Throttle;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::accepted::payloads;
pub use super::accepted::{Accepted, LayerSet, compose, public_key};
use super::desired::{self, Desired, Rejected};
use super::layers::Layer;
pub use super::report::{ConfigReport, Decision, Verdict};
pub use super::startup::{Startup, startup};
use super::store::{Store, StoredSet, StoredTrial};
use super::trial::{self, Seen, Step};
use crate::clock::Clock;
use crate::config::AgentConfig;
use crate::pipeline::{ApplyFailed, Changes};
use crate::stats::Stats;

/// How often a running trial looks for its confirmation.
const TRIAL_POLL: Duration = Duration::from_millis(200);

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

/// What confirms a trial: the MQTT session's connection, and the counter of
/// readings Kafka acknowledged.
#[derive(Clone)]
pub struct Confirmation {
    pub mqtt_connected: watch::Receiver<bool>,
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
}

/// A trial being watched.
struct Running {
    stored: StoredTrial,
    deadline: Instant,
    /// Readings acknowledged before it began.
    acked_before: u64,
    seen: Seen,
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
    /// Per layer, the newest version reverted.
    reverted: BTreeMap<Layer, u64>,
    trial: Option<Running>,
    /// Configs that arrived during a trial: the newest per layer.
    waiting: BTreeMap<Layer, Vec<u8>>,
    confirmation: Confirmation,
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
        confirmation: Confirmation,
    ) -> (Controller, watch::Receiver<ConfigReport>) {
        let (report, report_rx) = watch::channel(startup.report);
        let mut controller = Controller {
            key: public_key(&local),
            local,
            store,
            current: startup.stored,
            reverted: startup.reverted,
            trial: None,
            waiting: BTreeMap::new(),
            confirmation,
            report,
            apply,
            rejections_log: Throttle::new(Duration::from_secs(60)),
        };
        if let Some(stored) = startup.trial {
            tracing::warn!(
                layer = stored.layer.name(),
                version = stored.version,
                "a trial config was running when the agent stopped; it runs on until confirmed or its time is up"
            );
            controller.watch_trial(stored);
        }
        (controller, report_rx)
    }

    /// Takes desired configs until the sender is dropped.
    pub async fn run(mut self, mut payloads: mpsc::Receiver<(Layer, Vec<u8>)>) {
        let mut poll = tokio::time::interval(TRIAL_POLL);
        loop {
            tokio::select! {
                payload = payloads.recv() => match payload {
                    None => return,
                    Some((layer, payload)) if self.trial.is_some() => {
                        self.waiting.insert(layer, payload);
                    }
                    Some((layer, payload)) => self.handle(&layer, &payload).await,
                },
                _ = poll.tick(), if self.trial.is_some() => self.check_trial().await,
            }
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
                    trial = self.trial.is_some(),
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

    /// `Ok(None)`: not news (the layer already running, or a version
    /// reverted before, delivered again).
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
        if let Some(&reverted) = self.reverted.get(layer) {
            if d.version == reverted {
                return Ok(None);
            }
            desired::check_version(&d, reverted)?;
        }
        let (version, trial) = (d.version, d.trial);
        let mut candidate = self.current.clone();
        candidate.insert(layer.clone(), Accepted::new(d, payload));
        let config = compose(&self.local, &candidate).map_err(|(at, error)| match at {
            Some(at) if at != *layer => Refusal::OtherLayer {
                layer: at.name(),
                error,
            },
            _ => Refusal::Rejected(error),
        })?;
        let trial = trial.map(|length| StoredTrial {
            layer: layer.clone(),
            version,
            ends_at_ms: self.confirmation.clock.now_ns() / 1_000_000 + length.as_millis() as i64,
            duration_ms: length.as_millis() as u64,
            previous: payloads(&self.current),
        });
        let previous = self.store.load().map_err(Refusal::ReadStored)?;
        self.save(&candidate, trial.clone())
            .map_err(|source| Refusal::Store {
                path: self.store.path().to_owned(),
                source,
            })?;
        match self.run_config(config).await.ok_or(Refusal::Stopping)? {
            Ok(changes) => {
                self.current = candidate;
                if let Some(trial) = trial {
                    self.watch_trial(trial);
                }
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

    /// Stores `layers` (and the trial, if one starts) as the set to start
    /// with.
    fn save(&self, layers: &LayerSet, trial: Option<StoredTrial>) -> std::io::Result<()> {
        let file = StoredSet {
            layers: payloads(layers),
            trial,
            reverted: self.reverted.clone(),
        };
        self.store.save(&file.encode())
    }

    /// Has the pipeline run `config`; `None`: the agent is stopping.
    async fn run_config(&self, config: AgentConfig) -> Option<Result<Changes, ApplyFailed>> {
        let (done, result) = oneshot::channel();
        self.apply.send(ApplyRequest { config, done }).await.ok()?;
        result.await.ok()
    }

    /// Starts watching `stored` for its confirmation.
    fn watch_trial(&mut self, stored: StoredTrial) {
        let now_ms = self.confirmation.clock.now_ns() / 1_000_000;
        let deadline = Instant::now() + trial::remaining(&stored, now_ms);
        let (layer, version, ends_at_ms) =
            (stored.layer.clone(), stored.version, stored.ends_at_ms);
        self.report
            .send_modify(|r| r.trial_started(&layer, version, ends_at_ms));
        self.trial = Some(Running {
            stored,
            deadline,
            acked_before: self.confirmation.stats.snapshot().forwarded,
            seen: Seen::default(),
        });
    }

    /// Confirms or reverts the trial when it is time; then takes the
    /// configs that waited.
    async fn check_trial(&mut self) {
        let Some(running) = &mut self.trial else {
            return;
        };
        running.seen.mqtt |= *self.confirmation.mqtt_connected.borrow();
        running.seen.kafka_ack |=
            self.confirmation.stats.snapshot().forwarded > running.acked_before;
        match trial::step(
            &running.stored,
            running.seen,
            Instant::now() >= running.deadline,
        ) {
            Step::Wait => return,
            Step::Confirm => self.confirm_trial(),
            Step::Revert(reason) => self.revert_trial(reason).await,
        }
        while self.trial.is_none() {
            let Some((layer, payload)) = self.waiting.pop_first() else {
                break;
            };
            self.handle(&layer, &payload).await;
        }
    }

    fn confirm_trial(&mut self) {
        let running = self.trial.take().expect("a trial runs");
        tracing::info!(
            layer = running.stored.layer.name(),
            version = running.stored.version,
            "trial config confirmed: MQTT reached and a reading acknowledged by Kafka"
        );
        if let Err(e) = self.save(&self.current, None) {
            tracing::error!(
                "cannot store the confirmed trial: {e}; it may run as a trial again after a restart"
            );
        }
        self.report.send_modify(ConfigReport::trial_confirmed);
    }

    /// Puts back the layers the trial replaced, stores them and reports
    /// `reverted`.
    async fn revert_trial(&mut self, reason: String) {
        let running = self.trial.take().expect("a trial runs");
        let StoredTrial {
            layer,
            version,
            previous,
            ..
        } = running.stored;
        tracing::warn!(layer = layer.name(), version, "{reason}");
        let (previous, failed) = super::startup::read_layers(&self.local, previous);
        if let Some((at, e)) = failed {
            tracing::error!(layer = ?at.map(|l| l.name()), "a previous layer cannot be read back ({e}); it is left out");
        }
        let config = compose(&self.local, &previous).unwrap_or_else(|(_, e)| {
            tracing::error!("the previous layers no longer apply ({e}); running the local config");
            self.local.clone()
        });
        self.reverted.insert(layer.clone(), version);
        if let Err(e) = self.save(&previous, None) {
            tracing::error!(
                "cannot store the reverted config: {e}; the trial may run again after a restart"
            );
        }
        if let Some(Err(e)) = self.run_config(config).await {
            tracing::error!("putting the previous config back failed: {e}");
        }
        let restored = previous.get(&layer).map_or(0, |a| a.version);
        self.current = previous;
        self.report
            .send_modify(|r| r.revert(&layer, version, restored, reason));
    }
}
