//! What happens to a desired config: parse → check the signature → check
//! the version → lay it over the local config and validate → persist →
//! apply → report. Any failure reports `rejected` with the reason and
//! changes nothing; a failure while applying puts the previous config back
//! (in the pipeline and on disk).

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use telemetry::throttle::Throttle;
use tokio::sync::{mpsc, oneshot, watch};

use super::desired::{self, Desired, Rejected};
use super::overlay::overlay;
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

/// `accepted` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    Rejected,
}

/// The decision on one desired config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The config's version, when it had a readable one.
    pub version: Option<u64>,
    pub result: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The config part of the reported state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The version of the remote config running; 0: the local config only.
    pub applied_version: u64,
    /// The most recent decision (also after a restart, for the stored
    /// config).
    pub last: Option<Decision>,
    /// Desired configs accepted and rejected since start.
    pub accepted: u64,
    pub rejected: u64,
}

/// The config to start with: the local one with the stored remote config
/// laid over it, if there is one and it still passes every check.
pub struct Startup {
    pub config: AgentConfig,
    pub report: ConfigReport,
    /// The stored payload's version and canonical bytes, when it was read:
    /// a newer one is needed to replace it even if it no longer applies.
    stored: Option<(u64, Vec<u8>)>,
}

/// The public key from `mqtt.config_public_key` (checked at load).
pub fn public_key(local: &AgentConfig) -> Option<VerifyingKey> {
    local
        .mqtt
        .config_public_key
        .as_deref()
        .map(|k| desired::parse_public_key(k).expect("checked when the config was loaded"))
}

/// The stored desired config, if there is one and it can be read.
fn stored_payload(store: &Store) -> Option<Vec<u8>> {
    match store.load() {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(path = %store.path().display(), error = %e, "cannot read the stored remote config; running the local config");
            None
        }
    }
}

/// Reads the stored config and lays it over `local`.
pub fn startup(local: &AgentConfig, store: &Store) -> Startup {
    let Some(payload) = stored_payload(store) else {
        return Startup {
            config: local.clone(),
            report: ConfigReport::default(),
            stored: None,
        };
    };
    let parsed = desired::parse(&payload);
    let stored = parsed
        .as_ref()
        .ok()
        .map(|d| (d.version, d.canonical.clone()));
    let checked = parsed.and_then(|d| {
        desired::check_signature(&d, public_key(local).as_ref())?;
        let config = overlay(local, &d.settings)?;
        Ok((d.version, config))
    });
    let (config, decision) = match checked {
        Ok((version, config)) => {
            tracing::info!(version, path = %store.path().display(), "running the stored remote config");
            (
                config,
                Decision {
                    version: Some(version),
                    result: Verdict::Accepted,
                    reason: None,
                },
            )
        }
        Err(e) => {
            let reason = format!(
                "the stored remote config no longer applies ({e}); running the local config"
            );
            tracing::error!(path = %store.path().display(), "{reason}");
            (
                local.clone(),
                Decision {
                    version: stored.as_ref().map(|v| v.0),
                    result: Verdict::Rejected,
                    reason: Some(reason),
                },
            )
        }
    };
    let report = ConfigReport {
        applied_version: match decision.result {
            Verdict::Accepted => decision.version.unwrap_or(0),
            Verdict::Rejected => 0,
        },
        last: Some(decision),
        ..ConfigReport::default()
    };
    Startup {
        config,
        report,
        stored,
    }
}

/// Decides on desired configs, one at a time.
pub struct Controller {
    local: AgentConfig,
    key: Option<VerifyingKey>,
    store: Store,
    /// The highest version accepted (applied or stored), and its canonical
    /// bytes: the same config again is not news.
    current: Option<(u64, Vec<u8>)>,
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
    pub async fn run(mut self, mut payloads: mpsc::Receiver<Vec<u8>>) {
        while let Some(payload) = payloads.recv().await {
            self.handle(&payload).await;
        }
    }

    /// Decides on one payload and reports the decision.
    pub async fn handle(&mut self, payload: &[u8]) {
        let parsed = desired::parse(payload);
        let version = parsed.as_ref().ok().map(|d| d.version);
        let outcome = match parsed {
            Ok(d) => self.consider(d, payload).await,
            Err(e) => Err(Refusal::Rejected(e)),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(changes)) => {
                let version = version.expect("accepted configs have one");
                tracing::info!(
                    version,
                    journal = changes.journal,
                    sensors_restarted = ?changes.sensors_restarted,
                    sensors_stopped = ?changes.sensors_stopped,
                    forwarder = changes.forwarder,
                    status_reporter = changes.reporter,
                    "remote config applied"
                );
                self.report.send_modify(|r| {
                    r.applied_version = version;
                    r.accepted += 1;
                    r.last = Some(Decision {
                        version: Some(version),
                        result: Verdict::Accepted,
                        reason: None,
                    });
                });
            }
            Err(reason) => {
                if let Some(held_back) = self.rejections_log.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        version,
                        similar_not_logged = held_back,
                        "remote config rejected, nothing changed: {reason}"
                    );
                }
                self.report.send_modify(|r| {
                    r.rejected += 1;
                    r.last = Some(Decision {
                        version,
                        result: Verdict::Rejected,
                        reason: Some(reason.to_string()),
                    });
                });
            }
        }
    }

    /// `Ok(None)`: the config already running, delivered again (a retained
    /// message after a reconnect).
    async fn consider(&mut self, d: Desired, payload: &[u8]) -> Result<Option<Changes>, Refusal> {
        desired::check_signature(&d, self.key.as_ref())?;
        if let Some((version, canonical)) = &self.current {
            if d.version == *version && d.canonical == *canonical {
                return Ok(None);
            }
            desired::check_version(&d, *version)?;
        }
        let config = overlay(&self.local, &d.settings)?;
        let previous = self.store.load().map_err(Refusal::ReadStored)?;
        self.store.save(payload).map_err(|source| Refusal::Store {
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
                self.current = Some((d.version, d.canonical));
                Ok(Some(changes))
            }
            Err(error) => Err(Refusal::Apply {
                error,
                restore: self
                    .store
                    .restore(previous.as_deref())
                    .err()
                    .map(|e| (e, d.version)),
            }),
        }
    }
}
