//! # The forwarder: journal → Kafka
//!
//! Reads the journal in sequence order, in bounded windows, and hands each
//! reading to librdkafka (`acks=all`, idempotent). Only when a delivery report
//! says Kafka has a reading is its sequence number passed to the journal
//! writer for deletion.
//!
//! While Kafka is unreachable, or the topic does not exist, deliveries fail;
//! the forwarder stops sending newer readings, waits for the outstanding ones
//! to resolve, backs off (exponentially, with jitter), and resumes from the
//! oldest unacknowledged reading. Nothing is ever dropped: a reading that
//! times out inside librdkafka is simply read from the journal again. The
//! producer reconnects by itself, so the agent catches up without a restart.
//!
//! ## Layout
//! - [`window`]: the in-flight bookkeeping, pure and unit-tested.
//! - [`producer`]: librdkafka's configuration and callbacks.

pub mod producer;
pub mod window;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use telemetry::backoff::Backoff;
use telemetry::record::{Format, HEADER_BOOT, HEADER_CONTENT_TYPE, HEADER_SEQ};
use telemetry::telegraf_json;
use telemetry::throttle::Throttle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::journal::{Journal, JournalRecord, Progress, ReadResult};
use crate::status::{Link, Status};
use producer::{Delivery, Producer};
use window::Window;

/// Most journal records read in one go.
const READ_CHUNK: usize = 2_000;

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[from] KafkaError),
}

pub struct Forwarder {
    config: Arc<AgentConfig>,
    journal: Arc<Journal>,
    /// What the journal writer has committed.
    committed: watch::Receiver<Progress>,
    /// Acknowledged sequence numbers, to the journal writer.
    acks: mpsc::UnboundedSender<Vec<u64>>,
    status: Arc<Status>,
}

/// Why one record was not handed over.
enum SendError {
    /// librdkafka's queue is full: wait for deliveries, then continue.
    QueueFull,
    /// The record cannot be encoded in the configured format.
    Encode(String),
    /// librdkafka refused it for another reason.
    Kafka(KafkaError),
}

/// The state of one run, kept apart from the task's inputs.
struct Run {
    window: Window,
    backoff: Backoff,
    /// No new sends before this instant (backing off after a failure).
    resume_at: Option<Instant>,
    /// librdkafka reported a fatal error: replace the producer.
    fatal: bool,
    /// The most recent delivery error since the last rewind.
    last_failure: Option<KafkaError>,
    /// The last diagnosis logged, to log again at once when it changes.
    last_diagnosis: String,
    failure_log: Throttle,
}

impl Forwarder {
    pub fn new(
        config: Arc<AgentConfig>,
        journal: Arc<Journal>,
        committed: watch::Receiver<Progress>,
        acks: mpsc::UnboundedSender<Vec<u64>>,
        status: Arc<Status>,
    ) -> Self {
        Forwarder {
            config,
            journal,
            committed,
            acks,
            status,
        }
    }

    /// Forwards until `shutdown`. It then keeps forwarding until the journal
    /// is drained (the samplers have stopped, their last readings are
    /// committed and acknowledged) or `forward.shutdown_grace` has passed.
    /// Whatever is not acknowledged by then stays in the journal for the next
    /// start.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ForwarderError> {
        let (deliveries_tx, mut deliveries) = mpsc::unbounded_channel();
        let mut producer =
            producer::create(&self.config, deliveries_tx.clone(), self.status.clone())?;
        let mut run = Run {
            window: Window::new(self.config.forward.max_in_flight),
            backoff: Backoff::new(
                Duration::from_millis(250),
                self.config.forward.max_retry_delay,
            ),
            resume_at: None,
            fatal: false,
            last_failure: None,
            last_diagnosis: String::new(),
            failure_log: Throttle::new(Duration::from_secs(60)),
        };
        let mut stopping: Option<Instant> = None;
        let mut committed_open = true;
        loop {
            if run.resume_at.is_none_or(|t| Instant::now() >= t) {
                run.resume_at = None;
                self.fill(&producer, &mut run).await;
            }
            let acked = run.window.take_acked();
            if !acked.is_empty() {
                let _ = self.acks.send(acked);
            }
            if run.window.ready_to_rewind() {
                self.rewind(&producer, &mut run).await;
                if run.fatal {
                    producer = self
                        .replace_producer(producer, deliveries_tx.clone())
                        .await?;
                    run.fatal = false;
                }
            }
            if let Some(deadline) = stopping {
                let progress = *self.committed.borrow();
                let drained = progress.sampling_done
                    && run.window.cursor() >= progress.last_seq
                    && run.window.in_flight() == 0
                    && !run.window.ready_to_rewind();
                if drained || Instant::now() >= deadline {
                    break;
                }
            }
            let wake = [run.resume_at, stopping]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(d) = deliveries.recv() => {
                    self.handle(d, &producer, &mut run);
                    while let Ok(d) = deliveries.try_recv() {
                        self.handle(d, &producer, &mut run);
                    }
                }
                changed = self.committed.changed(), if committed_open => {
                    committed_open = changed.is_ok();
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + self.config.forward.shutdown_grace);
                }
            }
        }
        let outstanding = *self.committed.borrow();
        let unsent = outstanding.last_seq.saturating_sub(run.window.cursor())
            + run.window.in_flight() as u64;
        if unsent > 0 {
            tracing::info!(
                unsent,
                "stopping with readings not yet acknowledged by Kafka; they stay in the journal"
            );
        }
        let acked = run.window.take_acked();
        if !acked.is_empty() {
            let _ = self.acks.send(acked);
        }
        // Dropping the producer purges its queue; do it off the runtime.
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        Ok(())
    }

    /// After a failure has fully resolved: go back to the oldest failed
    /// reading, back off, and tell the operator what is wrong.
    async fn rewind(&self, producer: &Producer, run: &mut Run) {
        let from = run.window.rewind() + 1;
        let delay = run.backoff.next_delay(rand::random());
        run.resume_at = Some(Instant::now() + delay);
        let diagnosis = match run.last_failure.take() {
            Some(e) if is_timeout_or_unknown_topic(&e) => self.diagnose(producer).await,
            Some(e) => {
                format!("Kafka refused readings ({e}); they stay in the journal and are sent again")
            }
            None => {
                "delivery failed; the readings stay in the journal and are sent again".to_owned()
            }
        };
        self.status.link_error(diagnosis.clone());
        let changed = diagnosis != run.last_diagnosis;
        if let Some(held_back) = run
            .failure_log
            .allow(std::time::Instant::now())
            .or(changed.then_some(0))
        {
            tracing::warn!(
                resend_from_seq = from,
                retry_in = ?delay,
                retries_not_logged = held_back,
                "{diagnosis}"
            );
        }
        run.last_diagnosis = diagnosis;
    }

    /// Asks the broker why deliveries time out: unreachable, or topic missing?
    async fn diagnose(&self, producer: &Producer) -> String {
        let producer = producer.clone();
        let topic = self.config.kafka.topic.clone();
        let brokers = self.config.kafka.brokers.join(",");
        tokio::task::spawn_blocking(move || {
            match producer.client().fetch_metadata(Some(&topic), Duration::from_secs(5)) {
                Err(e) => format!(
                    "cannot reach Kafka at {brokers} ({e}); readings stay in the journal and are sent when it returns"
                ),
                Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => format!(
                        "Kafka at {brokers} did not acknowledge readings in time; they stay in the journal and are sent again"
                    ),
                    _ => format!(
                        "Kafka topic {topic:?} does not exist on {brokers}; create it (the agent never creates topics). \
                         Readings stay in the journal and are sent once it exists"
                    ),
                },
            }
        })
        .await
        .unwrap_or_else(|e| format!("cannot diagnose the delivery failure: {e}"))
    }

    /// Hands committed records to librdkafka while the window has room.
    async fn fill(&mut self, producer: &Producer, run: &mut Run) {
        loop {
            let committed = self.committed.borrow().last_seq;
            let room = run.window.room();
            if room == 0 || run.window.cursor() >= committed {
                return;
            }
            let batch = match self.read(run.window.cursor(), room.min(READ_CHUNK)).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the journal; retrying");
                    run.resume_at = Some(Instant::now() + run.backoff.next_delay(rand::random()));
                    return;
                }
            };
            if batch.is_empty() {
                // Everything up to `committed` was acknowledged and deleted
                // (possible after a rewind).
                run.window.skipped_to(committed);
                return;
            }
            for item in batch {
                let record = match item {
                    Ok(record) => record,
                    Err(bad) => {
                        self.status.unreadable(1);
                        tracing::error!(seq = bad.seq, reason = %bad.reason, "journal record is unreadable; skipping it");
                        run.window.skipped(bad.seq);
                        continue;
                    }
                };
                match self.send(producer, &record) {
                    Ok(()) => run.window.sent(record.seq),
                    Err(SendError::QueueFull) => return,
                    Err(SendError::Encode(reason)) => {
                        self.status.unreadable(1);
                        tracing::error!(
                            seq = record.seq,
                            reason,
                            "journal record cannot be encoded; skipping it"
                        );
                        run.window.skipped(record.seq);
                    }
                    Err(SendError::Kafka(e)) => {
                        run.window.sent(record.seq);
                        self.failed(record.seq, &e, producer, run);
                        return;
                    }
                }
            }
        }
    }

    async fn read(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ReadResult>, crate::journal::JournalError> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.read_after(after, limit))
            .await
            .expect("journal read task panicked")
    }

    fn send(&self, producer: &Producer, record: &JournalRecord) -> Result<(), SendError> {
        let format = self.config.kafka.format;
        let value: Cow<'_, str> = match format {
            Format::Influx => Cow::Borrowed(&record.line),
            Format::Json => {
                let reading = record
                    .reading()
                    .map_err(|e| SendError::Encode(e.to_string()))?;
                Cow::Owned(
                    telegraf_json::encode(&reading)
                        .map_err(|e| SendError::Encode(e.to_string()))?,
                )
            }
        };
        let seq = record.seq.to_string();
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: HEADER_SEQ,
                value: Some(seq.as_str()),
            })
            .insert(Header {
                key: HEADER_BOOT,
                value: Some(&*record.boot_id),
            })
            .insert(Header {
                key: HEADER_CONTENT_TYPE,
                value: Some(format.content_type()),
            });
        // The Kafka timestamp is left to librdkafka (send time): stamping a
        // month-old backlog reading with its sampling time would let the
        // broker's retention delete it on arrival.
        let message = BaseRecord::with_opaque_to(&self.config.kafka.topic, Box::new(record.seq))
            .key(record.key.as_str())
            .payload(value.as_ref())
            .headers(headers);
        producer.send(message).map_err(|(e, _)| match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => SendError::QueueFull,
            e => SendError::Kafka(e),
        })
    }

    fn handle(&self, delivery: Delivery, producer: &Producer, run: &mut Run) {
        match delivery.result {
            Ok(()) => {
                run.window.delivered(delivery.seq);
                self.status.forwarded(1);
                if self.status.link_up() != Link::Up {
                    run.backoff.reset();
                    run.failure_log.reset();
                    run.last_diagnosis.clear();
                    tracing::info!(
                        topic = %self.config.kafka.topic,
                        "Kafka is acknowledging readings; forwarding the journal"
                    );
                }
            }
            Err(e) => self.failed(delivery.seq, &e, producer, run),
        }
    }

    fn failed(&self, seq: u64, error: &KafkaError, producer: &Producer, run: &mut Run) {
        tracing::debug!(seq, %error, "delivery failed");
        run.window.failed(seq);
        self.status.link_down(error.to_string());
        run.last_failure = Some(error.clone());
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(
                ?code,
                reason,
                "the Kafka producer hit a fatal error; it will be recreated"
            );
            run.fatal = true;
        }
    }

    /// Drops a producer that hit a fatal error and creates a fresh one.
    async fn replace_producer(
        &self,
        old: Producer,
        deliveries: mpsc::UnboundedSender<Delivery>,
    ) -> Result<Producer, ForwarderError> {
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        Ok(producer::create(
            &self.config,
            deliveries,
            self.status.clone(),
        )?)
    }
}

/// Whether a failure calls for asking the broker what is wrong: librdkafka
/// reports a missing topic as a timeout when the topic never appears.
fn is_timeout_or_unknown_topic(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
        )
    )
}
