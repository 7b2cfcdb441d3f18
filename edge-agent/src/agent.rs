//! Wires the stages together and runs them until shutdown.
//!
//! ```text
//! Sampler (one per sensor) ──readings──► JournalWriter ──committed seq──► Forwarder ──► Kafka
//!                                              ▲                              │
//!                                              └────────── acked seqs ────────┘
//! MQTT ──desired config──► remote_config::Controller ──apply──► Pipeline (the stages above)
//! ```
//!
//! Shutdown is built from ownership: the samplers and the forwarder stop on the
//! cancellation token; each holds a sender into the journal writer, and the
//! writer makes its last commit and returns once all of them are gone. So a
//! clean stop never leaves a sampled reading uncommitted.
//!
//! With `[mqtt]` enabled, the last accepted remote config (stored next to the
//! journal) is laid over the local one before anything starts, and configs
//! arriving later are applied to the running [`Pipeline`] in place.
//!
//! Beside the stages: the status socket ([`local_status`]), metrics
//! ([`crate::metrics`], when `[metrics] listen` is set), and systemd's
//! readiness and watchdog ([`service_manager`]), pinged from the main loop
//! below so that a stalled loop gets the agent restarted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::AgentConfig;
use crate::journal::{self, Journal, JournalError, JournalReader};
use crate::pipeline::{NotStarted, Pipeline, StageFailed};
use crate::remote_config::controller::{
    self, ApplyRequest, ConfigReport, Confirmation, Controller, Startup,
};
use crate::remote_config::mqtt;
use crate::remote_config::state::{ReportedState, StateSource};
use crate::remote_config::store::Store;
use crate::stats::{self, Stats};
use crate::{local_status, service_manager};

/// What the agent runs with besides its config; tests put in their own.
pub struct Setup {
    /// Counters every stage updates (what the status line reports).
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
    /// The boot new readings are journaled under.
    pub boot_id: String,
    /// Where to report every commit (`edge-agent run --report-commits`).
    pub report_commits: Option<PathBuf>,
    /// Where to write the final state on a clean stop
    /// (`edge-agent run --report-state`).
    pub report_state: Option<PathBuf>,
    /// Test-only fault: the main loop stalls for good after this long, so
    /// that the watchdog test sees the pings stop
    /// ([`service_manager::STALL_HOOK_VAR`]).
    pub stall_main_loop_after: Option<Duration>,
}

impl Setup {
    /// The real clock and this machine's boot id.
    pub fn system() -> Setup {
        Setup {
            stats: Arc::new(Stats::default()),
            clock: Arc::new(SystemClock::default()),
            boot_id: journal::current_boot_id(),
            report_commits: None,
            report_state: None,
            stall_main_loop_after: None,
        }
    }
}

/// Why the agent could not start, or stopped on a failure.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start without a journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot report commits: {0}")]
    CommitReport(#[from] journal::commit_report::ReportError),
    #[error(transparent)]
    Stage(#[from] StageFailed),
    #[error("opening the journal panicked")]
    OpenPanicked(#[from] tokio::task::JoinError),
    #[error("cannot write the final state to {path}: {source}")]
    ReportState {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_with(config, shutdown, Setup::system()).await
}

/// [`run`], updating `status` as it goes (what the status line reports).
pub async fn run_with_status(
    config: AgentConfig,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
) -> Result<(), AgentError> {
    let setup = Setup {
        stats,
        ..Setup::system()
    };
    run_with(config, shutdown, setup).await
}

/// [`run`] with what `setup` gives.
pub async fn run_with(
    local: AgentConfig,
    shutdown: CancellationToken,
    setup: Setup,
) -> Result<(), AgentError> {
    Agent::start(local, shutdown, setup).await?.run().await
}

/// The running agent: the [`Pipeline`], the remote config, the status socket
/// and metrics, and the watchdog. [`Agent::start`] starts it all,
/// [`Agent::run`] serves until shutdown and then stops it all in order.
pub struct Agent {
    pipeline: Pipeline,
    shutdown: CancellationToken,
    /// Desired configs the controller wants applied.
    apply_rx: mpsc::Receiver<ApplyRequest>,
    /// What the status socket, metrics, systemd and MQTT report.
    source: StateSource,
    stats: Arc<Stats>,
    reader: JournalReader,
    /// The controller and the MQTT session.
    remote_tasks: JoinSet<()>,
    local_servers: Vec<JoinHandle<()>>,
    commit_report: Option<JoinHandle<()>>,
    report_state: Option<PathBuf>,
    stall_main_loop_after: Option<Duration>,
}

impl Agent {
    /// Opens the journal (under the stored remote config, if `[mqtt]` is on)
    /// and starts every stage; systemd is told the agent is ready.
    pub async fn start(
        local: AgentConfig,
        shutdown: CancellationToken,
        setup: Setup,
    ) -> Result<Agent, AgentError> {
        let store = Store::in_dir(local.journal.state_dir());
        let mut remote = local
            .mqtt
            .enabled
            .then(|| controller::startup(&local, &store));
        let config = remote.as_ref().map_or(&local, |s| &s.config).clone();
        let journal = open_journal(&config, setup.boot_id.clone()).await?;
        let reader = journal.reader();
        let pipeline = start_pipeline(config, &local, journal, remote.as_mut(), &setup, &shutdown)?;
        let commit_report = match &setup.report_commits {
            Some(path) => Some(journal::commit_report::start(path, pipeline.committed())?),
            None => None,
        };
        let (apply_tx, apply_rx) = mpsc::channel(1);
        let source = StateSource {
            device_id: local.device_id.clone(),
            labels: local.labels.clone(),
            report: watch::channel(ConfigReport::default()).1,
            stats: setup.stats.clone(),
            journal: reader.clone(),
            clock: setup.clock.clone(),
            started: Instant::now(),
        };
        let (source, remote_tasks) =
            start_remote(&local, store, remote, apply_tx, source, &shutdown);
        let local_servers = serve_local(&local, &source, &shutdown).await;
        service_manager::ready();
        Ok(Agent {
            pipeline,
            shutdown,
            apply_rx,
            source,
            stats: setup.stats,
            reader,
            remote_tasks,
            local_servers,
            commit_report,
            report_state: setup.report_state,
            stall_main_loop_after: setup.stall_main_loop_after,
        })
    }

    /// Serves until shutdown, or until the forwarder or the writer fails:
    /// applies desired configs, pings the watchdog. Then stops.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let watchdog = service_manager::watchdog_interval();
        let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let stall_at = self
            .stall_main_loop_after
            .map(|after| tokio::time::Instant::now() + after);
        let failure = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break None,
                failed = self.pipeline.failed() => break Some(failed),
                Some(request) = self.apply_rx.recv() => {
                    let result = self.pipeline.apply(Arc::new(request.config)).await;
                    let _ = request.done.send(result);
                }
                _ = ping.tick(), if watchdog.is_some() => {
                    if stall_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                        service_manager::stall();
                    }
                    service_manager::alive(&self.source.state());
                }
            }
        };
        self.stop(failure).await
    }

    /// Stops every stage in order (the pipeline commits what the samplers
    /// left), then the remote config and the local servers. Returns
    /// `failure`, else how the pipeline stopped.
    async fn stop(mut self, failure: Option<StageFailed>) -> Result<(), AgentError> {
        service_manager::stopping();
        self.shutdown.cancel();
        // A config still waiting is refused ("the agent is stopping").
        drop(self.apply_rx);
        let stopped = self.pipeline.stop().await;
        if let Some(report) = self.commit_report {
            let _ = report.await;
        }
        while self.remote_tasks.join_next().await.is_some() {}
        for server in self.local_servers {
            let _ = server.await;
        }
        stats::log_status(&self.stats.snapshot(), self.reader.stats().ok().as_ref());
        failure.map(Err).unwrap_or(stopped)?;
        if let Some(path) = &self.report_state {
            write_final_state(path, &self.source.state())?;
        }
        tracing::info!("edge agent stopped; the journal is committed");
        Ok(())
    }
}

/// Writes `state` to `path` as JSON, through a temporary file renamed over
/// it, so a reader sees the whole state or none.
fn write_final_state(path: &Path, state: &ReportedState) -> Result<(), AgentError> {
    let json = serde_json::to_vec(state).expect("the state serialises");
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| AgentError::ReportState {
            path: path.to_owned(),
            source,
        })
}

/// Opens the journal `config` names (repairing or salvaging it), and logs
/// what it holds.
async fn open_journal(config: &AgentConfig, boot_id: String) -> Result<Journal, AgentError> {
    let path = config.journal.path.clone();
    let options = config.journal.options();
    let (journal, opened) =
        tokio::task::spawn_blocking(move || Journal::open(&path, options, &boot_id)).await??;
    if let Some(q) = &opened.quarantined {
        tracing::error!(
            damaged = %q.reason,
            moved_to = %q.moved_to.display(),
            salvaged = q.salvaged,
            unparsable = q.unparsable,
            missing = q.missing,
            "the journal was damaged: it was moved aside (not deleted), a fresh journal was started, \
             and the intact readings found in it were copied over to be forwarded; \
             readings in damaged parts are lost (at most `missing`: sequence numbers absent \
             between the oldest and newest salvaged)"
        );
    }
    if let Some(dir) = journal.path().parent() {
        crate::disk::mount::advise(dir);
    }
    let stats = journal.stats()?;
    tracing::info!(
        path = %journal.path().display(),
        backlog = stats.records,
        file_bytes = stats.file_bytes,
        max_bytes = stats.max_bytes,
        when_full = config.journal.when_full.as_str(),
        next_seq = stats.next_seq,
        device_id = %config.device_id,
        brokers = %config.kafka.brokers.join(","),
        topic = %config.kafka.topic,
        "edge agent starting"
    );
    Ok(journal)
}

/// Starts the stages under `config`. A stored remote config the producer
/// now refuses (the local config changed under it) must not keep the agent
/// from starting: the local config runs instead.
fn start_pipeline(
    config: AgentConfig,
    local: &AgentConfig,
    journal: Journal,
    remote: Option<&mut Startup>,
    setup: &Setup,
    shutdown: &CancellationToken,
) -> Result<Pipeline, StageFailed> {
    let start = |config: &AgentConfig, journal| {
        let (stats, clock) = (setup.stats.clone(), setup.clock.clone());
        Pipeline::start(
            Arc::new(config.clone()),
            journal,
            stats,
            clock,
            shutdown.clone(),
        )
    };
    match (start(&config, journal).map_err(|n| *n), remote) {
        (Ok(p), _) => Ok(p),
        (
            Err(NotStarted {
                error: StageFailed::Forwarder(e),
                journal,
            }),
            Some(startup),
        ) if startup.report.remote_running() => {
            fall_back_to_local(startup, local, &e.to_string());
            start(local, journal).map_err(|n| n.error)
        }
        (Err(e), _) => Err(e.error),
    }
}

/// With `[mqtt]` on: the controller and the MQTT session, reporting through
/// `source`. Returns the source and their tasks.
fn start_remote(
    local: &AgentConfig,
    store: Store,
    remote: Option<Startup>,
    apply_tx: mpsc::Sender<ApplyRequest>,
    mut source: StateSource,
    shutdown: &CancellationToken,
) -> (StateSource, JoinSet<()>) {
    let mut tasks = JoinSet::new();
    let Some(startup) = remote else {
        return (source, tasks);
    };
    let (connected_tx, mqtt_connected) = watch::channel(false);
    let confirmation = Confirmation {
        mqtt_connected,
        stats: source.stats.clone(),
        clock: source.clock.clone(),
    };
    let (controller, report) =
        Controller::new(local.clone(), store, startup, apply_tx, confirmation);
    source.report = report;
    let (payloads_tx, payloads) = mpsc::channel(16);
    tasks.spawn(controller.run(payloads));
    let channels = mqtt::Channels {
        payloads: payloads_tx,
        connected: connected_tx,
    };
    tasks.spawn(mqtt::run(
        local.mqtt.clone(),
        source.clone(),
        channels,
        shutdown.clone(),
    ));
    (source, tasks)
}

/// Starts the status socket and, if configured, the metrics endpoint. Neither
/// is worth stopping the sampling for: a failure is logged.
/// Returns their tasks, which end on `shutdown`.
async fn serve_local(
    config: &AgentConfig,
    source: &StateSource,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut servers = Vec::new();
    match local_status::serve(&config.status_socket(), source.clone(), shutdown.clone()) {
        Ok(server) => servers.push(server),
        Err(e) => tracing::error!("{e}; `edge-agent status` will not reach this agent"),
    }
    // A bad address was refused with the rest of the config.
    if let Ok(Some(addr)) = telemetry::metrics_http::listen_addr(&config.metrics.listen) {
        let source = source.clone();
        let render = move || crate::metrics::render(&source.state());
        match telemetry::metrics_http::serve(addr, render, shutdown.clone()).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                tracing::error!(%addr, error = %e, "metrics.listen: cannot listen; no metrics")
            }
        }
    }
    servers
}

/// The stored remote config cannot start: run the local one, and say so in
/// the log and the reported state.
/// (The journal's limit and policy come back with the local config: the
/// writer takes them from it.)
fn fall_back_to_local(startup: &mut Startup, local: &AgentConfig, error: &str) {
    let reason =
        format!("the stored remote config cannot start ({error}); running the local config");
    tracing::error!("{reason}");
    startup.config = local.clone();
    startup.report.fall_back(&reason);
}
