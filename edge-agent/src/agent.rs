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

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::AgentConfig;
use crate::journal::{self, Journal};
use crate::pipeline::{Pipeline, StageFailed};
use crate::remote_config::controller::{self, Controller, Decision, Startup, Verdict};
use crate::remote_config::mqtt::{self, StateSource};
use crate::remote_config::store::Store;
use crate::status::{self, Status};

/// Runs the agent until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_status(config, shutdown, Arc::new(Status::default())).await
}

/// [`run`], updating `status` as it goes (what the status line reports).
pub async fn run_with_status(
    local: AgentConfig,
    shutdown: CancellationToken,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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

    let boot_id = journal::current_boot_id();
    let path = config.journal.path.clone();
    let options = config.journal.options();
    let (journal, opened) =
        tokio::task::spawn_blocking(move || Journal::open(&path, options, &boot_id))
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
    let journal = Arc::new(journal);
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
        journal.clone(),
        status.clone(),
        clock.clone(),
        shutdown.clone(),
    );
    let mut pipeline = match (pipeline, &mut remote) {
        (Ok(p), _) => p,
        // A stored remote config the producer now refuses (the local
        // config changed under it) must not keep the agent from starting.
        (Err(StageFailed::Forwarder(e)), Some(startup)) if startup.report.applied_version > 0 => {
            fall_back_to_local(startup, &local, &journal, &e.to_string());
            Pipeline::start(
                Arc::new(local.clone()),
                journal.clone(),
                status.clone(),
                clock.clone(),
                shutdown.clone(),
            )?
        }
        (Err(e), _) => return Err(e.into()),
    };

    let (apply_tx, mut apply_rx) = mpsc::channel(1);
    let mut remote_tasks = JoinSet::new();
    if let Some(startup) = remote {
        let (controller, report) = Controller::new(local.clone(), store, startup, apply_tx);
        let (payloads_tx, payloads) = mpsc::channel(16);
        remote_tasks.spawn(controller.run(payloads));
        let source = StateSource {
            device_id: local.device_id.clone(),
            report,
            status: status.clone(),
            journal: journal.clone(),
            clock: clock.clone(),
            started: Instant::now(),
        };
        remote_tasks.spawn(mqtt::run(
            local.mqtt.clone(),
            source,
            payloads_tx,
            shutdown.clone(),
        ));
    } else {
        drop(apply_tx);
    }

    // Run until asked to stop, unless the forwarder or writer fails first.
    let failure = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            failed = pipeline.failed() => break Some(failed),
            Some(request) = apply_rx.recv() => {
                let result = pipeline.apply(Arc::new(request.config)).await;
                let _ = request.done.send(result.map_err(|e| e.to_string()));
            }
        }
    };
    shutdown.cancel();
    // A config still waiting is refused ("the agent is stopping").
    drop(apply_rx);
    let stopped = pipeline.stop().await;
    while remote_tasks.join_next().await.is_some() {}
    status::log_status(&status.snapshot(), journal.stats().ok().as_ref());
    match failure.map(Err).unwrap_or(stopped) {
        Err(e) => Err(e.into()),
        Ok(()) => {
            tracing::info!("edge agent stopped; the journal is committed");
            Ok(())
        }
    }
}

/// The stored remote config cannot start: run the local one, and say so in
/// the log and the reported state.
fn fall_back_to_local(startup: &mut Startup, local: &AgentConfig, journal: &Journal, error: &str) {
    let version = startup.report.applied_version;
    let reason = format!(
        "the stored remote config version {version} cannot start ({error}); running the local config"
    );
    tracing::error!("{reason}");
    let j = &local.journal;
    journal.set_policy(j.max_bytes.bytes(), j.when_full, j.downsample_window);
    startup.config = local.clone();
    startup.report.applied_version = 0;
    startup.report.last = Some(Decision {
        version: Some(version),
        result: Verdict::Rejected,
        reason: Some(reason),
    });
}
