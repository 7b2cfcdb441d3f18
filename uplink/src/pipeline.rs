//! # The pipeline: consumer → decode → batcher → writer → offsets
//!
//! One loop owns the consumer, the open batch and the offset book:
//!
//! 1. A record is decoded into lines (integers pinned to float unless
//!    `kafka.integer_fields = "keep"`), or, if it can never be written, kept
//!    as a letter for the dead-letter topic. Either way it joins the open batch.
//! 2. A batch is sealed when full or due, registered with [`Offsets`], and
//!    handed to its own writer task ([`Writer`]); up to `batch.max_in_flight`
//!    run at once.
//! 3. When a task finishes, its offsets are marked done, and whatever
//!    contiguous prefix that completes is stored for commit.
//! 4. When every slot is taken and the open batch is full, the partitions are
//!    paused (and the consumer still polled, so the group keeps us); they
//!    resume when a slot frees. Memory stays bounded however long a database
//!    is away.
//!
//! Revoked partitions leave the open batch and the offset book; the commit
//! itself happens in the consumer's rebalance callback. On shutdown the
//! batches in flight get `retry.shutdown_grace` to finish, what finished is
//! committed, and the rest is re-read on the next start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use telemetry::line_protocol;
use telemetry::record::HEADER_CONTENT_TYPE;
use telemetry::throttle::Throttle;
use telemetry::{FieldValue, Reading};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batcher::{Batch, Batcher, Limits, Origin};
use crate::config::{IntegerFields, UplinkConfig};
use crate::consumer::{self, Consumer};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::decode::{self, DecodeSettings, RecordView};
use crate::metrics::{self, Metrics};
use crate::offsets::{Offsets, Partition};
use crate::sinks;
use crate::writer::{SinkSlot, Writer};

/// Counters since start, for the status line and the caller.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub records: u64,
    pub lines_written: u64,
    pub batches: u64,
}

/// A finished writer task.
struct Done {
    id: u64,
    commit: BTreeMap<Partition, i64>,
    lines: usize,
    sealed: Instant,
    ok: bool,
}

pub struct Pipeline {
    consumer: Consumer,
    writer: Writer,
    batcher: Batcher,
    offsets: Offsets,
    in_flight: JoinSet<Done>,
    max_in_flight: usize,
    next_batch: u64,
    paused: bool,
    settings: DecodeSettings,
    integers: IntegerFields,
    shutdown_grace: Duration,
    status_interval: Duration,
    metrics: Arc<Metrics>,
    counters: Counters,
    /// Cancelled when the writers' grace at shutdown is over.
    stop_writes: CancellationToken,
    /// The topic of the last record, shared by the records after it.
    topic: Option<Arc<str>>,
    /// Per partition, the offset after the last record read.
    consumed: HashMap<Partition, i64>,
}

/// Records taken from librdkafka's queue per round of the loop, at most.
const MAX_TAKEN_AT_ONCE: usize = 1024;

impl Pipeline {
    pub async fn new(config: &UplinkConfig, metrics: Arc<Metrics>) -> anyhow::Result<Pipeline> {
        let mut slots = Vec::new();
        for (i, sink) in config.sinks.iter().enumerate() {
            let built = sinks::build(sink)
                .await
                .map_err(|e| anyhow::anyhow!("sink[{i}] ({}): {e}", sink.kind.as_str()))?;
            slots.push(SinkSlot::new(built, sink.max_concurrent_writes));
        }
        Ok(Pipeline {
            consumer: consumer::create(config)?,
            writer: Writer {
                sinks: slots.into(),
                dead_letters: DeadLetters::new(config)?,
                metrics: metrics.clone(),
                max_retry_delay: config.retry.max_delay,
            },
            batcher: Batcher::new(Limits {
                max_lines: config.batch.max_lines,
                max_bytes: config.batch.max_bytes.bytes() as usize,
                max_wait: config.batch.max_wait,
            }),
            offsets: Offsets::default(),
            in_flight: JoinSet::new(),
            max_in_flight: config.batch.max_in_flight,
            next_batch: 0,
            paused: false,
            settings: DecodeSettings {
                json_timestamp_unit: config.kafka.json_timestamp_unit,
                max_record_size: config.kafka.max_record_size.bytes() as usize,
            },
            integers: config.kafka.integer_fields,
            shutdown_grace: config.retry.shutdown_grace,
            status_interval: config.status.log_interval,
            metrics,
            counters: Counters::default(),
            stop_writes: CancellationToken::new(),
            topic: None,
            consumed: HashMap::new(),
        })
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<Counters> {
        let mut consumer_errors = Throttle::new(Duration::from_secs(60));
        let mut status_at = Instant::now() + self.status_interval;
        let tick = if self.status_interval.is_zero() {
            RateGauge::PERIOD
        } else {
            self.status_interval.min(RateGauge::PERIOD)
        };
        let mut rate = RateGauge::new(Instant::now(), tick);
        loop {
            let room = self.in_flight.len() < self.max_in_flight;
            let deadline = self
                .batcher
                .deadline()
                .map(Instant::from_std)
                .filter(|_| room);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finished(done.expect("writer tasks do not panic"));
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.seal();
                }
                _ = tokio::time::sleep_until(rate.next_at) => {
                    self.report(&mut rate, &mut status_at);
                }
                message = self.consumer.recv() => {
                    let message = message.map(|m| m.detach());
                    self.received(message, &mut consumer_errors);
                    self.take_ready(&mut consumer_errors);
                }
            }
            if self.batcher.is_full() && self.in_flight.len() < self.max_in_flight {
                self.seal();
            }
            let blocked = self.batcher.is_full();
            if blocked != self.paused {
                self.set_paused(blocked);
            }
        }
        self.finish().await
    }

    /// The rate gauge and consumer positions, and the status line when due.
    fn report(&mut self, rate: &mut RateGauge, status_at: &mut Instant) {
        rate.update(Instant::now(), &self.metrics, self.counters.lines_written);
        for ((topic, partition), next) in &self.consumed {
            self.metrics.consumed(topic, *partition, *next);
        }
        if !self.status_interval.is_zero() && Instant::now() >= *status_at {
            self.log_status();
            *status_at = Instant::now() + self.status_interval;
        }
    }

    /// Records librdkafka already holds are taken without a round of the
    /// loop each, up to a full batch.
    fn take_ready(&mut self, consumer_errors: &mut Throttle) {
        for _ in 0..MAX_TAKEN_AT_ONCE {
            if self.batcher.is_full() {
                break;
            }
            let Some(message) = self.consumer.recv().now_or_never() else {
                break;
            };
            let message = message.map(|m| m.detach());
            self.received(message, consumer_errors);
        }
    }

    /// Shutdown: the open batch is sealed, the batches in flight get the
    /// grace period, and what finished is committed.
    async fn finish(mut self) -> anyhow::Result<Counters> {
        self.apply_revocations();
        if !self.batcher.is_empty() {
            self.seal();
        }
        let grace = tokio::time::sleep(self.shutdown_grace);
        tokio::pin!(grace);
        let mut abandoned = false;
        while !self.in_flight.is_empty() {
            tokio::select! {
                Some(done) = self.in_flight.join_next() => {
                    self.finished(done.expect("writer tasks do not panic"));
                }
                _ = &mut grace, if !abandoned => {
                    tracing::warn!(
                        batches = self.in_flight.len(),
                        "stopping before the database accepted every batch; those are not committed and will be read again"
                    );
                    self.stop_writes.cancel();
                    abandoned = true;
                }
            }
        }
        let consumer = self.consumer;
        let commit = tokio::task::spawn_blocking(move || {
            let result = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
            result
        })
        .await?;
        match commit {
            Ok(())
            | Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => {
                tracing::warn!(error = %e, "final offset commit failed; the last records will be read again")
            }
        }
        log_status(&self.counters, &self.metrics, &self.writer);
        Ok(self.counters)
    }

    fn log_status(&self) {
        log_status(&self.counters, &self.metrics, &self.writer);
    }

    /// One record, or a consumer error, from `recv`.
    fn received(&mut self, message: KafkaResult<OwnedMessage>, errors: &mut Throttle) {
        // Revocations the callback saw inside `recv` apply before the record
        // it returned.
        self.apply_revocations();
        match message {
            Ok(m) => self.take(m),
            Err(e) => {
                if let Some(held_back) = errors.allow(std::time::Instant::now()) {
                    tracing::warn!(error = %e, similar_not_logged = held_back, "Kafka consumer error; retrying");
                }
            }
        }
    }

    /// Drops what the consumer's rebalance callback revoked.
    fn apply_revocations(&mut self) {
        let revoked = self.consumer.context().take_revoked();
        if !revoked.is_empty() {
            self.batcher.drop_partitions(&revoked);
            self.offsets.revoked(&revoked);
            for p in &revoked {
                self.consumed.remove(p);
                self.metrics.forget(&p.0, p.1);
            }
        }
    }

    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        self.consumer.context().set_paused(paused);
        self.metrics.paused.set(i64::from(paused));
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        let result = if paused {
            tracing::info!(
                batches_in_flight = self.in_flight.len(),
                "every batch slot is taken: pausing consumption until the database catches up"
            );
            self.consumer.pause(&assignment)
        } else {
            tracing::info!("resuming consumption");
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, paused, "cannot pause or resume the partitions");
        }
    }

    /// Seals the open batch and starts its writer task.
    fn seal(&mut self) {
        let batch = self.batcher.take();
        if batch.commit.is_empty() {
            return;
        }
        self.next_batch += 1;
        let id = self.next_batch;
        self.offsets.sealed(id, &batch.commit);
        self.metrics.batches_in_flight.inc();
        let writer = self.writer.clone();
        let stop = self.stop_writes.clone();
        let sealed = Instant::now();
        self.in_flight.spawn(async move {
            let ok = writer.write(&batch, &stop).await;
            let Batch { lines, commit, .. } = batch;
            Done {
                id,
                commit,
                lines: lines.len(),
                sealed,
                ok,
            }
        });
    }

    /// A writer task finished: store what is now contiguous.
    fn finished(&mut self, done: Done) {
        self.metrics.batches_in_flight.dec();
        if !done.ok {
            return; // abandoned at shutdown: not committed
        }
        self.metrics
            .batch_seconds
            .observe(done.sealed.elapsed().as_secs_f64());
        self.counters.batches += 1;
        self.counters.lines_written += done.lines as u64;
        let moved = self.offsets.completed(done.id, &done.commit);
        if moved.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &moved {
            self.metrics.written(topic, *partition, *offset);
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::error!(error = %e, "cannot record an offset to commit");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Revoked meanwhile; the new owner reads these records again,
            // which only rewrites the same points.
            tracing::debug!(error = %e, "cannot store offsets for partitions no longer assigned");
        }
    }

    /// Decodes one record into the open batch, as lines or as a letter.
    fn take(&mut self, m: OwnedMessage) {
        self.counters.records += 1;
        self.metrics.records.inc();
        let topic = match &self.topic {
            Some(t) if **t == *m.topic() => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(m.topic());
                self.topic = Some(t.clone());
                t
            }
        };
        self.consumed
            .insert((topic.clone(), m.partition()), m.offset() + 1);
        let origin = Origin {
            topic,
            partition: m.partition(),
            offset: m.offset(),
        };
        let content_type = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == HEADER_CONTENT_TYPE)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        });
        let view = RecordView {
            topic: m.topic(),
            payload: m.payload(),
            content_type,
            timestamp_ms: m.timestamp().to_millis(),
        };
        let now = std::time::Instant::now();
        let error = match decode::decode(&view, &self.settings)
            .map_err(|e| e.to_string())
            .and_then(|readings| encode(readings, self.integers).map_err(|e| e.to_string()))
        {
            Ok(lines) => {
                if lines.is_empty() {
                    self.batcher.settle(&origin, now);
                }
                for line in lines {
                    self.batcher.push(line, origin.clone(), now);
                }
                return;
            }
            Err(e) => e,
        };
        self.batcher.push_letter(letter_of(&m, error, origin), now);
    }
}

/// A record that can never be written, as a dead letter: its key, payload
/// and headers as they came, and why.
fn letter_of(m: &OwnedMessage, error: String, origin: Origin) -> DeadLetter {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    DeadLetter {
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().unwrap_or_default().to_vec(),
        headers,
        error,
        origin,
        sink: None,
    }
}

/// Readings → lines, integers pinned to float unless kept.
fn encode(
    readings: Vec<Reading>,
    integers: IntegerFields,
) -> Result<Vec<String>, telemetry::InvalidReading> {
    readings
        .into_iter()
        .map(|mut r| {
            if integers == IntegerFields::Float {
                for value in r.fields.values_mut() {
                    match *value {
                        FieldValue::Int(i) => *value = FieldValue::Float(i as f64),
                        FieldValue::UInt(u) => *value = FieldValue::Float(u as f64),
                        _ => {}
                    }
                }
            }
            line_protocol::encode(&r)
        })
        .collect()
}

/// `uplink_lines_per_second`, updated every 5 s or more often.
struct RateGauge {
    every: Duration,
    next_at: Instant,
    last_at: Instant,
    last_lines: u64,
}

impl RateGauge {
    const PERIOD: Duration = Duration::from_secs(5);

    fn new(now: Instant, every: Duration) -> Self {
        RateGauge {
            every,
            next_at: now + every,
            last_at: now,
            last_lines: 0,
        }
    }

    fn update(&mut self, now: Instant, metrics: &Metrics, lines: u64) {
        let seconds = (now - self.last_at).as_secs_f64().max(1e-3);
        metrics
            .lines_per_second
            .set((lines - self.last_lines) as f64 / seconds);
        self.last_at = now;
        self.last_lines = lines;
        self.next_at = now + self.every;
    }
}

fn log_status(c: &Counters, m: &Metrics, writer: &Writer) {
    let dead_lettered: u64 = ["malformed", "rejected"]
        .iter()
        .map(|r| {
            m.dead_lettered
                .get_or_create(&vec![("reason", (*r).to_owned())])
                .get()
        })
        .sum();
    let write_retries: u64 = writer
        .sinks
        .iter()
        .map(|s| {
            m.write_retries
                .get_or_create(&metrics::sink(s.sink.name()))
                .get()
        })
        .sum();
    tracing::info!(
        records = c.records,
        lines_written = c.lines_written,
        batches = c.batches,
        batches_in_flight = m.batches_in_flight.get(),
        dead_lettered,
        write_retries,
        "status"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_become_floats_unless_kept() {
        let r = Reading::new("m", 5)
            .with_field("a", 3i64)
            .with_field("b", 4u64)
            .with_field("c", true);
        assert_eq!(
            encode(vec![r.clone()], IntegerFields::Float).unwrap(),
            ["m a=3.0,b=4.0,c=true 5"]
        );
        assert_eq!(
            encode(vec![r], IntegerFields::Keep).unwrap(),
            ["m a=3i,b=4u,c=true 5"]
        );
    }
}
