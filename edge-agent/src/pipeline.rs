//! # The pipeline: the stages running under one config, replaced in place
//!
//! [`Pipeline::start`] starts the journal writer, the forwarder, one sampler
//! per enabled sensor and the status reporter. [`Pipeline::apply`] moves
//! them to a new config without stopping the process, touching only what
//! changed:
//!
//! - `journal`: the commit interval, batch size, limit and policy are
//!   handed to the running writer, which owns the journal;
//! - a sensor whose settings changed is stopped and started again, a new
//!   one is started, a removed one stopped; the others keep sampling;
//! - `kafka` or `forward`: a new forwarder (with a new producer) is created
//!   first, then the old one hands over: it stops sending and waits, at most
//!   `forward.shutdown_grace`, for what it already sent to be acknowledged.
//!   The new one continues from the journal, so nothing is lost; a reading
//!   acknowledged but not yet deleted may be sent twice, which is harmless
//!   (the same point, written again);
//! - `status`: the status line's reporter restarts.
//!
//! Only creating the producer can fail (librdkafka refuses a combination
//! of settings). It is the last step, and the old forwarder keeps running
//! until it succeeds; when it fails, the steps already taken are undone by
//! moving back to the old config the same way, and the error says whether
//! that worked.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::journal::Sampled;
use hardware::Supervisor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{AgentConfig, SensorConfig};
use crate::forwarder::{Forwarder, ForwarderError};
use crate::journal::{
    Journal, JournalError, JournalReader, JournalWriter, Progress, WriterSettings,
};
use crate::sampler::Sampler;
use crate::stats::{self, Stats};

/// A stage that stopped on its own: the agent stops too.
#[derive(Debug, thiserror::Error)]
pub enum StageFailed {
    #[error("the forwarder failed: {0}")]
    Forwarder(#[from] ForwarderError),
    #[error("the journal writer failed: {0}")]
    Writer(#[from] JournalError),
    #[error("the {0} stopped unexpectedly")]
    Stopped(&'static str),
    #[error("the {0} panicked")]
    Panicked(&'static str),
}

/// Why [`Pipeline::start`] failed, with the journal back (so that another
/// config can start on it).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct NotStarted {
    pub error: StageFailed,
    pub journal: Journal,
}

/// Why a new config could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{error}; {}", match rollback { None => "rolled back to the previous config".to_owned(), Some(e) => format!("rolling back failed too ({e}); the agent should be restarted") })]
pub struct ApplyFailed {
    pub error: ForwarderError,
    /// `None`: the previous config runs again.
    pub rollback: Option<ForwarderError>,
}

/// What [`Pipeline::apply`] restarted or changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub journal: bool,
    pub sensors_restarted: Vec<String>,
    pub sensors_stopped: Vec<String>,
    pub forwarder: bool,
    pub reporter: bool,
}

struct RunningSampler {
    config: SensorConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningForwarder {
    /// The config it forwards under.
    config: crate::forwarder::config::ForwarderConfig,
    handover: CancellationToken,
    task: JoinHandle<Result<(), ForwarderError>>,
}

/// The running stages.
pub struct Pipeline {
    config: Arc<AgentConfig>,
    journal: JournalReader,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    /// Kept to start samplers with; dropped at shutdown so the writer ends.
    readings: Option<mpsc::Sender<Sampled>>,
    acks: Option<mpsc::UnboundedSender<Vec<u64>>>,
    committed: watch::Receiver<Progress>,
    writer_settings: watch::Sender<WriterSettings>,
    writer: Option<JoinHandle<Result<(), JournalError>>>,
    forwarder: Option<RunningForwarder>,
    samplers: BTreeMap<String, RunningSampler>,
    reporter: (CancellationToken, JoinHandle<()>),
}

impl Pipeline {
    /// Starts every stage under `config`; the writer takes the journal.
    pub fn start(
        config: Arc<AgentConfig>,
        journal: Journal,
        stats: Arc<Stats>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Result<Pipeline, Box<NotStarted>> {
        let reader = journal.reader();
        let settings = config.journal.writer_settings();
        let (writer, handles) =
            JournalWriter::new(journal, settings, stats.clone()).map_err(|failed| {
                let (e, journal) = *failed;
                NotStarted {
                    error: e.into(),
                    journal,
                }
            })?;
        let reporter = start_reporter(&config, &reader, &stats, &shutdown);
        let mut pipeline = Pipeline {
            config: config.clone(),
            journal: reader,
            stats,
            clock,
            shutdown,
            readings: Some(handles.readings),
            acks: Some(handles.acks),
            committed: handles.committed,
            writer_settings: handles.settings,
            writer: None,
            forwarder: None,
            samplers: BTreeMap::new(),
            reporter,
        };
        // The producer is the step that can fail: before the writer runs,
        // so that the journal can be handed back.
        let forwarder = match pipeline.new_forwarder(&config).start() {
            Ok(f) => f,
            Err(e) => {
                pipeline.reporter.0.cancel();
                return Err(Box::new(NotStarted {
                    error: e.into(),
                    journal: writer.into_journal(),
                }));
            }
        };
        pipeline.writer = Some(tokio::spawn(writer.run()));
        pipeline.run_forwarder(forwarder, &config);
        for s in config.enabled_sensors() {
            pipeline.start_sampler(s);
        }
        if pipeline.samplers.is_empty() {
            tracing::warn!("no sensors are enabled; only the existing backlog will be forwarded");
        }
        Ok(pipeline)
    }

    /// What the journal writer has committed so far.
    pub fn committed(&self) -> watch::Receiver<Progress> {
        self.committed.clone()
    }

    /// The config the stages run under.
    pub fn config(&self) -> &Arc<AgentConfig> {
        &self.config
    }

    /// Resolves when the forwarder or the journal writer stops on its own,
    /// which only a fatal fault makes them do. Cancel-safe.
    pub async fn failed(&mut self) -> StageFailed {
        let forwarder = async {
            match &mut self.forwarder {
                Some(f) => (&mut f.task).await,
                None => std::future::pending().await,
            }
        };
        let writer = async {
            match &mut self.writer {
                Some(w) => w.await,
                None => std::future::pending().await,
            }
        };
        // A finished task is taken out, so that `stop` does not wait for it
        // again.
        tokio::select! {
            r = forwarder => {
                self.forwarder = None;
                match r {
                    Ok(Ok(())) => StageFailed::Stopped("forwarder"),
                    Ok(Err(e)) => e.into(),
                    Err(_) => StageFailed::Panicked("forwarder"),
                }
            }
            r = writer => {
                self.writer = None;
                match r {
                    Ok(Ok(())) => StageFailed::Stopped("journal writer"),
                    Ok(Err(e)) => e.into(),
                    Err(_) => StageFailed::Panicked("journal writer"),
                }
            }
        }
    }

    /// Moves the running stages to `new`; see the module doc. On failure the
    /// old config runs again (unless [`ApplyFailed::rollback`] says
    /// otherwise).
    pub async fn apply(&mut self, new: Arc<AgentConfig>) -> Result<Changes, ApplyFailed> {
        let old = self.config.clone();
        match self.switch(&old, &new).await {
            Ok(changes) => {
                self.config = new;
                Ok(changes)
            }
            Err(error) => {
                let rollback = self.switch(&new, &old).await.err();
                Err(ApplyFailed { error, rollback })
            }
        }
    }

    async fn switch(
        &mut self,
        from: &AgentConfig,
        to: &Arc<AgentConfig>,
    ) -> Result<Changes, ForwarderError> {
        let mut changes = Changes::default();
        let writer = to.journal.writer_settings();
        if from.journal.writer_settings() != writer {
            let _ = self.writer_settings.send(writer);
            changes.journal = true;
        }
        if from.status != to.status {
            self.reporter.0.cancel();
            let _ = (&mut self.reporter.1).await;
            self.reporter = start_reporter(to, &self.journal, &self.stats, &self.shutdown);
            changes.reporter = true;
        }
        self.switch_samplers(to, &mut changes).await;
        // Against the running forwarder's config, not `from`: after a failed
        // apply the old forwarder is still running and stays.
        let forwarder_stale = self
            .forwarder
            .as_ref()
            .is_none_or(|f| f.config != to.forwarder());
        if forwarder_stale {
            // Created before the old one stops: if librdkafka refuses the
            // settings, the old forwarder is still running.
            let next = self.new_forwarder(to).start()?;
            if let Some(old) = self.forwarder.take() {
                old.handover.cancel();
                if let Ok(Err(e)) = old.task.await {
                    tracing::warn!(error = %e, "the previous forwarder had failed");
                }
            }
            self.run_forwarder(next, to);
            changes.forwarder = true;
        }
        Ok(changes)
    }

    /// Restarts the samplers whose sensor changed, stops removed or disabled
    /// ones and starts new ones.
    async fn switch_samplers(&mut self, to: &AgentConfig, changes: &mut Changes) {
        let wanted: BTreeMap<&str, &SensorConfig> =
            to.enabled_sensors().map(|s| (s.name.as_str(), s)).collect();
        let stale: Vec<String> = self
            .samplers
            .iter()
            .filter(|(name, running)| wanted.get(name.as_str()) != Some(&&running.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            let running = self.samplers.remove(name).expect("listed above");
            running.stop.cancel();
            let _ = running.task.await;
            if wanted.contains_key(name.as_str()) {
                changes.sensors_restarted.push(name.clone());
            } else {
                changes.sensors_stopped.push(name.clone());
            }
        }
        for (name, s) in &wanted {
            if !self.samplers.contains_key(*name) {
                if !stale.iter().any(|n| n == name) {
                    changes.sensors_restarted.push(name.to_string());
                }
                self.start_sampler(s);
            }
        }
        let names: Vec<&str> = wanted.keys().copied().collect();
        self.stats.retain_sensors(&names);
    }

    fn start_sampler(&mut self, s: &SensorConfig) {
        let Some(out) = self.readings.clone() else {
            return;
        };
        tracing::info!(sensor = %s.name, kind = s.kind.name(), device = %s.device(), interval = ?s.interval, "sampling");
        let stop = self.shutdown.child_token();
        let sampler = Sampler {
            device_id: self.config.device_id.clone(),
            sensor: Supervisor::new(s.clone()),
            clock: self.clock.clone(),
            out,
            stats: self.stats.clone(),
        };
        let task = tokio::spawn(sampler.run(stop.clone()));
        self.samplers.insert(
            s.name.clone(),
            RunningSampler {
                config: s.clone(),
                stop,
                task,
            },
        );
    }

    fn new_forwarder(&self, config: &AgentConfig) -> Forwarder {
        Forwarder::new(
            Arc::new(config.forwarder()),
            self.journal.clone(),
            self.committed.clone(),
            self.acks.clone().expect("acks are open until shutdown"),
            self.stats.clone(),
        )
        .with_clock(self.clock.clone())
    }

    fn run_forwarder(&mut self, started: crate::forwarder::Started, config: &Arc<AgentConfig>) {
        let handover = CancellationToken::new();
        let task = tokio::spawn(started.run(self.shutdown.clone(), handover.clone()));
        self.forwarder = Some(RunningForwarder {
            config: config.forwarder(),
            handover,
            task,
        });
    }

    /// Stops every stage in order, once `shutdown` was cancelled: the
    /// samplers, then the forwarder (which drains what the samplers left),
    /// then the writer, which commits the last readings and acks. Returns
    /// the first failure.
    pub async fn stop(mut self) -> Result<(), StageFailed> {
        self.shutdown.cancel();
        for (_, s) in std::mem::take(&mut self.samplers) {
            let _ = s.task.await;
        }
        // The writer says "sampling done" once every reading sender is gone.
        self.readings = None;
        let mut failure = None;
        if let Some(f) = self.forwarder.take() {
            failure = match f.task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.into()),
                Err(_) => Some(StageFailed::Panicked("forwarder")),
            };
        }
        self.acks = None;
        let writer = match self.writer.take() {
            None => None,
            Some(task) => match task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.into()),
                Err(_) => Some(StageFailed::Panicked("journal writer")),
            },
        };
        let _ = self.reporter.1.await;
        match failure.or(writer) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn start_reporter(
    config: &AgentConfig,
    journal: &JournalReader,
    stats: &Arc<Stats>,
    shutdown: &CancellationToken,
) -> (CancellationToken, JoinHandle<()>) {
    let stop = shutdown.child_token();
    let journal = journal.clone();
    let task = tokio::spawn(stats::report_periodically(
        stats.clone(),
        config.status.log_interval,
        move || journal.stats().ok(),
        stop.clone(),
    ));
    (stop, task)
}
