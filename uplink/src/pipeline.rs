//! # The pipeline: consumer → decode → batcher → sinks → offsets
//!
//! One loop, one record at a time, so offsets stay contiguous by construction:
//!
//! 1. A record is decoded. If it can never be written it goes to the
//!    dead-letter topic (and the loop waits until Kafka has it).
//! 2. Its lines join the batch, which is written when full or due.
//! 3. A batch is written to every sink. 429, 5xx and connection failures are
//!    retried for ever with backoff (honouring `Retry-After`); 413 splits the
//!    batch; 400/422 bisect it down to the refused lines, which are
//!    dead-lettered; 401/403/404 are reported loudly and retried slowly.
//! 4. Only then are the batch's offsets stored for commit.
//!
//! On shutdown the batch in hand gets `retry.shutdown_grace` to be written;
//! if it does not make it, it is abandoned uncommitted and re-read next time.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use telemetry::backoff::Backoff;
use telemetry::line_protocol;
use telemetry::record::HEADER_CONTENT_TYPE;
use telemetry::throttle::Throttle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batcher::{Batch, Batcher, Limits, Line, Origin};
use crate::config::UplinkConfig;
use crate::consumer::{self, Consumer};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::decode::{self, DecodeSettings, RecordView};
use crate::sinks::{self, Sink, WriteError};

/// Counters since start, logged periodically.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub records: u64,
    pub lines_written: u64,
    pub dead_lettered: u64,
    pub write_retries: u64,
    pub batches: u64,
}

pub struct Pipeline {
    consumer: Consumer,
    dead_letters: DeadLetters,
    sinks: Vec<Box<dyn Sink>>,
    batcher: Batcher,
    settings: DecodeSettings,
    max_retry_delay: Duration,
    shutdown_grace: Duration,
    status_interval: Duration,
    counters: Counters,
    write_log: Throttle,
}

impl Pipeline {
    pub fn new(config: &UplinkConfig) -> anyhow::Result<Pipeline> {
        let sinks = config
            .sinks
            .iter()
            .map(sinks::build)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pipeline {
            consumer: consumer::create(config)?,
            dead_letters: DeadLetters::new(config)?,
            sinks,
            batcher: Batcher::new(Limits {
                max_lines: config.batch.max_lines,
                max_bytes: config.batch.max_bytes.bytes() as usize,
                max_wait: config.batch.max_wait,
            }),
            settings: DecodeSettings {
                json_timestamp_unit: config.kafka.json_timestamp_unit,
                max_record_size: config.kafka.max_record_size.bytes() as usize,
            },
            max_retry_delay: config.retry.max_delay,
            shutdown_grace: config.retry.shutdown_grace,
            status_interval: config.status.log_interval,
            counters: Counters::default(),
            write_log: Throttle::new(Duration::from_secs(60)),
        })
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<Counters> {
        let mut consumer_errors = Throttle::new(Duration::from_secs(60));
        let mut status_at = Instant::now() + self.status_interval;
        loop {
            let deadline = self.batcher.deadline().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.flush(&shutdown).await;
                }
                _ = tokio::time::sleep_until(status_at), if !self.status_interval.is_zero() => {
                    self.log_status();
                    status_at = Instant::now() + self.status_interval;
                }
                message = self.consumer.recv() => match message {
                    Ok(m) => {
                        let m = m.detach();
                        if !self.take(m, &shutdown).await {
                            break;
                        }
                        if self.batcher.is_full() {
                            self.flush(&shutdown).await;
                        }
                    }
                    Err(e) => {
                        if let Some(held_back) = consumer_errors.allow(std::time::Instant::now()) {
                            tracing::warn!(error = %e, similar_not_logged = held_back, "Kafka consumer error; retrying");
                        }
                    }
                },
            }
        }
        // Give the batch in hand a bounded time to make it, then commit what
        // was stored.
        if !self.batcher.is_empty() {
            let grace = CancellationToken::new();
            let timer = {
                let grace = grace.clone();
                let wait = self.shutdown_grace;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    grace.cancel();
                })
            };
            self.flush(&grace).await;
            timer.abort();
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
        log_counters(&self.counters);
        Ok(self.counters)
    }

    fn log_status(&self) {
        log_counters(&self.counters);
    }

    /// Decodes one record into the batch, or dead-letters it. Returns false if
    /// shutdown interrupted a dead-letter delivery.
    async fn take(&mut self, m: OwnedMessage, stop: &CancellationToken) -> bool {
        self.counters.records += 1;
        let origin = Origin {
            topic: Arc::from(m.topic()),
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
        let failure = match decode::decode(&view, &self.settings) {
            Ok(readings) => {
                let mut lines = Vec::with_capacity(readings.len());
                let mut failure = None;
                for r in &readings {
                    match line_protocol::encode(r) {
                        Ok(line) => lines.push(line),
                        Err(e) => {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                }
                match failure {
                    None => {
                        if lines.is_empty() {
                            self.batcher.settle(&origin, now);
                        }
                        for line in lines {
                            self.batcher.push(line, origin.clone(), now);
                        }
                        return true;
                    }
                    Some(e) => e,
                }
            }
            Err(e) => e.to_string(),
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let letter = DeadLetter {
            key: m.key(),
            payload: m.payload().unwrap_or_default(),
            headers,
            error: &failure,
            origin: &origin,
            sink: None,
        };
        if !self.dead_letters.send(letter, stop).await {
            return false;
        }
        self.counters.dead_lettered += 1;
        self.batcher.settle(&origin, now);
        true
    }

    /// Writes the batch to every sink, then stores its offsets. If `stop`
    /// fires first, the batch is abandoned and nothing is stored.
    async fn flush(&mut self, stop: &CancellationToken) {
        let batch = self.batcher.take();
        let Batch { lines, commit } = batch;
        for i in 0..self.sinks.len() {
            if !self.write_all(i, &lines, stop).await {
                tracing::warn!(
                    lines = lines.len(),
                    "stopping before the database accepted the batch; it is not committed and will be read again"
                );
                return;
            }
        }
        self.counters.lines_written += lines.len() as u64;
        self.counters.batches += 1;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &commit {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::error!(error = %e, "cannot record an offset to commit");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partitions were revoked meanwhile; their new owner reads
            // these records again, which only rewrites the same points.
            tracing::debug!(error = %e, "cannot store offsets for partitions no longer assigned");
        }
    }

    /// Writes `lines` to sink `i`, splitting or bisecting as the database
    /// asks. Returns false if `stop` fired before everything was accepted.
    async fn write_all(&mut self, i: usize, lines: &[Line], stop: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.max_retry_delay);
        // Chunks still to write, last one on top; starts as the whole batch.
        let mut todo: Vec<&[Line]> = vec![lines];
        while let Some(chunk) = todo.pop() {
            if chunk.is_empty() {
                continue;
            }
            let body = join(chunk);
            loop {
                let result = self.sinks[i].write(body.clone()).await;
                match result {
                    Ok(()) => {
                        backoff.reset();
                        self.write_log.reset();
                        break;
                    }
                    Err(WriteError::TooLarge { reason } | WriteError::Rejected { reason }) => {
                        if chunk.len() > 1 {
                            let (a, b) = chunk.split_at(chunk.len() / 2);
                            todo.push(b);
                            todo.push(a);
                        } else if !self.dead_letter_line(&chunk[0], &reason, i, stop).await {
                            return false;
                        }
                        break;
                    }
                    Err(e @ (WriteError::Retry { .. } | WriteError::Misconfigured { .. })) => {
                        self.counters.write_retries += 1;
                        let delay = match &e {
                            WriteError::Retry {
                                retry_after: Some(d),
                                ..
                            } => *d,
                            _ => backoff.next_delay(rand::random()),
                        };
                        if let Some(held_back) = self.write_log.allow(std::time::Instant::now()) {
                            let sink = self.sinks[i].name();
                            match e {
                                WriteError::Misconfigured { .. } => tracing::error!(
                                    sink, error = %e, retry_in = ?delay, retries_not_logged = held_back,
                                    "the database refuses the uplink; fix its configuration. Nothing is committed meanwhile"
                                ),
                                _ => tracing::warn!(
                                    sink, error = %e, retry_in = ?delay, retries_not_logged = held_back,
                                    "database write failed; retrying. Nothing is committed meanwhile"
                                ),
                            }
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.cancelled() => return false,
                        }
                    }
                }
            }
        }
        true
    }

    async fn dead_letter_line(
        &mut self,
        line: &Line,
        reason: &str,
        sink: usize,
        stop: &CancellationToken,
    ) -> bool {
        let letter = DeadLetter {
            key: None,
            payload: line.text.as_bytes(),
            headers: Vec::new(),
            error: reason,
            origin: &line.origin,
            sink: Some(self.sinks[sink].name()),
        };
        let sent = self.dead_letters.send(letter, stop).await;
        if sent {
            self.counters.dead_lettered += 1;
        }
        sent
    }
}

fn join(lines: &[Line]) -> String {
    let mut body = String::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
    for line in lines {
        body.push_str(&line.text);
        body.push('\n');
    }
    body
}

fn log_counters(c: &Counters) {
    tracing::info!(
        records = c.records,
        lines_written = c.lines_written,
        batches = c.batches,
        dead_lettered = c.dead_lettered,
        write_retries = c.write_retries,
        "status"
    );
}
