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

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::AgentConfig;
use crate::journal;
use crate::pipeline::{NotStarted, Pipeline, StageFailed};
use crate::remote_config::controller::{
    self, ConfigReport, Controller, Decision, Startup, Verdict,
};
use crate::remote_config::mqtt;
use crate::remote_config::state::StateSource;
use crate::remote_config::store::Store;
use crate::status::{self, Status};
use crate::{local_status, service_manager};

/// What the agent runs with besides its config; tests put in their own.
pub struct Setup {
    /// Counters every stage updates (what the status line reports).
    pub status: Arc<Status>,
    pub clock: Arc<dyn Clock>,
    /// The boot new readings are journaled under.
    pub boot_id: String,
    /// Where to report every commit (`edge-agent run --report-commits`).
    pub report_commits: Option<PathBuf>,
}

impl Setup {
    /// The real clock and this machine's boot id.
    pub fn system() -> Setup {
        Setup {
            status: Arc::new(Status::default()),
            clock: Arc::new(SystemClock::default()),
            boot_id: journal::current_boot_id(),
            report_commits: None,
        }
    }
}

/// Runs the agent until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(config, shutdown, Setup::system()).await
}

/// [`run`], updating `status` as it goes (what the status line reports).
pub async fn run_with_status(
    config: AgentConfig,
    shutdown: CancellationToken,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let setup = Setup {
        status,
        ..Setup::system()
    };
    run_with(config, shutdown, setup).await
}

/// [`run`] with what `setup` gives.
pub async fn run_with(
    local: AgentConfig,
    shutdown: CancellationToken,
    setup: Setup,
) -> anyhow::Result<()> {
    let Setup {
        status,
        clock,
        boot_id,
        report_commits,
    } = setup;
    let store = Store::in_dir(
        local
            .journal
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let mut remote = local
        .mqtt
        .enabled
        .then(|| controller::startup(&local, &store));
    let config = remote.as_ref().map_or(&local, |s| &s.config).clone();

    let path = config.journal.path.clone();
    let options = config.journal.options();
    let (journal, opened) =
        tokio::task::spawn_blocking(move || journal::Journal::open(&path, options, &boot_id))
            .await?
            .context("cannot start without a journal")?;
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
    let reader = journal.reader();
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

    let pipeline = Pipeline::start(
        Arc::new(config),
        journal,
        status.clone(),
        clock.clone(),
        shutdown.clone(),
    );
    let mut pipeline = match (pipeline.map_err(|n| *n), &mut remote) {
        (Ok(p), _) => p,
        // A stored remote config the producer now refuses (the local
        // config changed under it) must not keep the agent from starting.
        (
            Err(NotStarted {
                error: StageFailed::Forwarder(e),
                journal,
            }),
            Some(startup),
        ) if startup.report.applied_version > 0 => {
            fall_back_to_local(startup, &local, &e.to_string());
            Pipeline::start(
                Arc::new(local.clone()),
                journal,
                status.clone(),
                clock.clone(),
                shutdown.clone(),
            )
            .map_err(|n| n.error)?
        }
        (Err(e), _) => return Err(e.error.into()),
    };
    let commit_report = match &report_commits {
        Some(path) => Some(journal::commit_report::start(path, pipeline.committed())?),
        None => None,
    };

    let (apply_tx, mut apply_rx) = mpsc::channel(1);
    let mut remote_tasks = JoinSet::new();
    let source = |report| StateSource {
        device_id: local.device_id.clone(),
        report,
        status: status.clone(),
        journal: reader.clone(),
        clock: clock.clone(),
        started: Instant::now(),
    };
    let source = if let Some(startup) = remote {
        let (controller, report) = Controller::new(local.clone(), store, startup, apply_tx);
        let (payloads_tx, payloads) = mpsc::channel(16);
        remote_tasks.spawn(controller.run(payloads));
        let source = source(report);
        remote_tasks.spawn(mqtt::run(
            local.mqtt.clone(),
            source.clone(),
            payloads_tx,
            shutdown.clone(),
        ));
        source
    } else {
        drop(apply_tx);
        source(tokio::sync::watch::channel(ConfigReport::default()).1)
    };
    let local_servers = serve_local(&local, &source, &shutdown).await;
    service_manager::ready();
    let watchdog = service_manager::watchdog_interval();
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let stall_at = service_manager::stall_hook().map(|after| tokio::time::Instant::now() + after);

    // Run until asked to stop, unless the forwarder or writer fails first.
    let failure = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            failed = pipeline.failed() => break Some(failed),
            Some(request) = apply_rx.recv() => {
                let result = pipeline.apply(Arc::new(request.config)).await;
                let _ = request.done.send(result.map_err(|e| e.to_string()));
            }
            _ = ping.tick(), if watchdog.is_some() => {
                if stall_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    service_manager::stall();
                }
                service_manager::alive(&source.state());
            }
        }
    };
    service_manager::stopping();
    shutdown.cancel();
    // A config still waiting is refused ("the agent is stopping").
    drop(apply_rx);
    let stopped = pipeline.stop().await;
    if let Some(report) = commit_report {
        let _ = report.await;
    }
    while remote_tasks.join_next().await.is_some() {}
    for server in local_servers {
        let _ = server.await;
    }
    status::log_status(&status.snapshot(), reader.stats().ok().as_ref());
    match failure.map(Err).unwrap_or(stopped) {
        Err(e) => Err(e.into()),
        Ok(()) => {
            tracing::info!("edge agent stopped; the journal is committed");
            Ok(())
        }
    }
}

/// Starts the status socket and, if configured, the metrics endpoint. Neither
/// is worth stopping the sampling for: a failure is logged.
/// Returns their tasks, which end on `shutdown`.
async fn serve_local(
    config: &AgentConfig,
    source: &StateSource,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
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
    let version = startup.report.applied_version;
    let reason = format!(
        "the stored remote config version {version} cannot start ({error}); running the local config"
    );
    tracing::error!("{reason}");
    startup.config = local.clone();
    startup.report.applied_version = 0;
    startup.report.last = Some(Decision {
        version: Some(version),
        result: Verdict::Rejected,
        reason: Some(reason),
    });
}
