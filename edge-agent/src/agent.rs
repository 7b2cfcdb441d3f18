//! Wires the stages together and runs them until shutdown.
//!
//! ```text
//! Sampler (one per sensor) ──readings──► JournalWriter ──committed seq──► Forwarder ──► Kafka
//!                                              ▲                              │
//!                                              └────────── acked seqs ────────┘
//! ```
//!
//! Shutdown is built from ownership: the samplers and the forwarder stop on the
//! cancellation token; each holds a sender into the journal writer, and the
//! writer makes its last commit and returns once all of them are gone. So a
//! clean stop never leaves a sampled reading uncommitted.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::AgentConfig;
use crate::forwarder::Forwarder;
use crate::journal::{self, Journal, JournalWriter};
use crate::sampler::Sampler;
use crate::status::{self, Status};
use hardware::Supervisor;

/// Runs the agent until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_status(config, shutdown, Arc::new(Status::default())).await
}

/// [`run`], updating `status` as it goes (what the status line reports).
pub async fn run_with_status(
    config: AgentConfig,
    shutdown: CancellationToken,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

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

    let (writer, handles) = JournalWriter::new(
        journal.clone(),
        config.journal.commit_interval,
        config.journal.max_batch,
        status.clone(),
    )?;
    let mut writer_task = tokio::spawn(writer.run());
    let forwarder = Forwarder::new(
        config.clone(),
        journal.clone(),
        handles.committed.clone(),
        handles.acks,
        status.clone(),
    );
    let mut forwarder_task = tokio::spawn(forwarder.run(shutdown.clone()));

    let mut samplers = JoinSet::new();
    for s in config.enabled_sensors() {
        tracing::info!(sensor = %s.name, kind = s.kind.name(), device = %s.device(), interval = ?s.interval, "sampling");
        let sampler = Sampler {
            device_id: config.device_id.clone(),
            sensor: Supervisor::new(s.clone()),
            clock: clock.clone(),
            out: handles.readings.clone(),
            status: status.clone(),
        };
        samplers.spawn(sampler.run(shutdown.clone()));
    }
    if samplers.is_empty() {
        tracing::warn!("no sensors are enabled; only the existing backlog will be forwarded");
    }
    drop(handles.readings);

    let reporter_journal = journal.clone();
    let reporter = tokio::spawn(status::report_periodically(
        status.clone(),
        config.status.log_interval,
        move || reporter_journal.stats().ok(),
        shutdown.clone(),
    ));

    // Run until asked to stop, unless the forwarder or writer fails first.
    let early = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut forwarder_task => Some(("forwarder", r.map(|r| r.map_err(anyhow::Error::from)))),
        r = &mut writer_task => Some(("journal writer", r.map(|r| r.map_err(anyhow::Error::from)))),
    };
    shutdown.cancel();
    while samplers.join_next().await.is_some() {}
    let mut failure = None;
    if let Some((stage, result)) = early {
        failure = Some(match result {
            Ok(Ok(())) => anyhow::anyhow!("the {stage} stopped unexpectedly"),
            Ok(Err(e)) => e.context(format!("the {stage} failed")),
            Err(e) => anyhow::Error::from(e).context(format!("the {stage} panicked")),
        });
    }
    if !forwarder_task.is_finished() || failure.is_none() {
        match forwarder_task.await {
            Ok(Err(e)) if failure.is_none() => failure = Some(anyhow::Error::from(e)),
            _ => {}
        }
    }
    if !writer_task.is_finished() || failure.is_none() {
        match writer_task.await {
            Ok(Err(e)) if failure.is_none() => failure = Some(e.into()),
            _ => {}
        }
    }
    let _ = reporter.await;
    status::log_status(&status.snapshot(), journal.stats().ok().as_ref());
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("edge agent stopped; the journal is committed");
            Ok(())
        }
    }
}
