//! # The writer: one sealed batch into every sink
//!
//! A batch is written by its own task, so several are in flight at once;
//! each sink admits at most `max_concurrent_writes` of them at a time. The
//! task ends when every sink accepted the batch's lines (or dead-lettered
//! the ones it refused) and the dead-letter topic acknowledged the batch's
//! letters. Only then may its offsets be committed.
//!
//! Per answer (see [`WriteError`]):
//! - 429, 5xx, no answer: the same lines again, after `Retry-After` or a
//!   backoff with jitter, for ever;
//! - 413: the lines are split in half and each half written;
//! - 400, 422: the lines the database named go to the dead-letter topic and
//!   the rest is written again; if it named none, the lines are bisected down
//!   to the ones it refuses;
//! - 401, 403, 404: said loudly, retried slowly, nothing committed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telemetry::backoff::Backoff;
use telemetry::throttle::Throttle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batcher::Batch;
use crate::dead_letter::{DeadLetter, DeadLetterReason, DeadLetters};
use crate::metrics::{self, Metrics};
use crate::record::{Line, Partition};
use crate::sinks::{Sink, WriteError};

/// A finished writer task.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    /// The offsets the batch settles (see [`Batch::commit`]).
    pub commit: BTreeMap<Partition, i64>,
    pub lines: usize,
    pub sealed: Instant,
    /// False if it was abandoned at shutdown: then it must not be committed.
    pub ok: bool,
}

/// The batches being written, one task each, at most `max` at once.
pub struct InFlight {
    tasks: JoinSet<Done>,
    max: usize,
    next_id: u64,
    /// Cancelled when the writers' grace at shutdown is over.
    stop: CancellationToken,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            tasks: JoinSet::new(),
            max,
            next_id: 0,
            stop: CancellationToken::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Whether another batch may start.
    pub fn has_room(&self) -> bool {
        self.tasks.len() < self.max
    }

    /// Starts writing `batch` with `writer`; returns its id.
    pub fn start(&mut self, writer: &Writer, batch: Batch) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let writer = writer.clone();
        let stop = self.stop.clone();
        let sealed = Instant::now();
        self.tasks.spawn(async move {
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
        id
    }

    /// The next batch to finish (pending for ever when there is none).
    pub async fn next(&mut self) -> Done {
        match self.tasks.join_next().await {
            Some(done) => done.expect("writer tasks do not panic"),
            None => std::future::pending().await,
        }
    }

    /// Makes every batch still being written give up.
    pub fn abandon(&self) {
        self.stop.cancel();
    }
}

/// A sink and what limits it.
pub struct SinkSlot {
    pub sink: Box<dyn Sink>,
    pub permits: Semaphore,
    log: Mutex<Throttle>,
}

impl SinkSlot {
    pub fn new(sink: Box<dyn Sink>, max_concurrent_writes: usize) -> Self {
        SinkSlot {
            sink,
            permits: Semaphore::new(max_concurrent_writes),
            log: Mutex::new(Throttle::new(Duration::from_secs(60))),
        }
    }
}

/// What a batch's task shares with the others.
#[derive(Clone)]
pub struct Writer {
    pub sinks: Arc<[SinkSlot]>,
    pub dead_letters: DeadLetters,
    pub metrics: Arc<Metrics>,
    pub max_retry_delay: Duration,
}

impl Writer {
    /// Writes `batch` everywhere. Returns false if `stop` fired first: the
    /// batch is then not dealt with and must not be committed.
    pub async fn write(&self, batch: &Batch, stop: &CancellationToken) -> bool {
        let letters = async {
            for letter in &batch.letters {
                if !self.send_letter(letter, stop).await {
                    return false;
                }
            }
            true
        };
        let lines: Vec<Line<'_>> = batch.lines.iter().collect();
        let sinks = futures_util::future::join_all(
            self.sinks
                .iter()
                .map(|slot| self.write_to(slot, &lines, stop)),
        );
        let (letters_ok, sinks_ok) = tokio::join!(letters, sinks);
        letters_ok && sinks_ok.into_iter().all(|ok| ok)
    }

    /// Writes `lines` to one sink, splitting or bisecting as it asks.
    async fn write_to(
        &self,
        slot: &SinkSlot,
        lines: &[Line<'_>],
        stop: &CancellationToken,
    ) -> bool {
        if lines.is_empty() {
            return true;
        }
        let _permit = tokio::select! {
            permit = slot.permits.acquire() => permit.expect("semaphore never closed"),
            _ = stop.cancelled() => return false,
        };
        let name = slot.sink.name();
        let labels = metrics::sink(name);
        let mut backoff = Backoff::new(Duration::from_millis(200), self.max_retry_delay);
        // Lines still to write, in chunks; the next one on top.
        let mut todo: Vec<Vec<Line<'_>>> = vec![lines.to_vec()];
        while let Some(chunk) = todo.pop() {
            if chunk.is_empty() {
                continue;
            }
            match slot.sink.write(&chunk).await {
                Ok(()) => {
                    backoff.reset();
                    self.accepted(&labels, chunk.len());
                }
                Err(WriteError::Rejected {
                    reason,
                    lines: named,
                }) if !named.is_empty() => {
                    let Some(rest) = self
                        .dead_letter_named(chunk, &named, &reason, name, stop)
                        .await
                    else {
                        return false;
                    };
                    todo.push(rest);
                }
                Err(WriteError::TooLarge { reason } | WriteError::Rejected { reason, .. }) => {
                    if chunk.len() > 1 {
                        let mut first = chunk;
                        let second = first.split_off(first.len() / 2);
                        todo.push(second);
                        todo.push(first);
                    } else if !self.dead_letter_line(&chunk[0], &reason, name, stop).await {
                        return false;
                    }
                }
                Err(e @ (WriteError::Retry { .. } | WriteError::Misconfigured { .. })) => {
                    todo.push(chunk);
                    let delay = self.delay_after(slot, &e, &mut backoff, &labels);
                    if !sleep_unless_stopped(delay, stop).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The sink accepted `lines` lines.
    fn accepted(&self, labels: &metrics::Labels, lines: usize) {
        self.metrics.misconfigured.get_or_create(labels).set(0);
        self.metrics
            .lines_written
            .get_or_create(labels)
            .inc_by(lines as u64);
    }

    /// After a write to be retried: how long to wait (the database's
    /// `Retry-After`, or the backoff), counted and logged (at most once a
    /// minute), with whether the database refuses the uplink's settings.
    fn delay_after(
        &self,
        slot: &SinkSlot,
        e: &WriteError,
        backoff: &mut Backoff,
        labels: &metrics::Labels,
    ) -> Duration {
        let name = slot.sink.name();
        self.metrics.write_retries.get_or_create(labels).inc();
        let jittered = backoff.next_delay(rand::random());
        let delay = match e {
            WriteError::Retry {
                retry_after: Some(asked),
                ..
            } => (*asked).max(jittered / 4),
            _ => jittered,
        };
        let misconfigured = matches!(e, WriteError::Misconfigured { .. });
        self.metrics
            .misconfigured
            .get_or_create(labels)
            .set(i64::from(misconfigured));
        let allowed = slot
            .log
            .lock()
            .expect("log throttle")
            .allow(std::time::Instant::now());
        if let Some(held_back) = allowed {
            if misconfigured {
                tracing::error!(
                    sink = name, error = %e, retry_in = ?delay, retries_not_logged = held_back,
                    "the database refuses the uplink; fix its configuration. Consuming stops once every batch slot waits on it; nothing is committed meanwhile"
                );
            } else {
                tracing::warn!(
                    sink = name, error = %e, retry_in = ?delay, retries_not_logged = held_back,
                    "database write failed; retrying. Nothing is committed meanwhile"
                );
            }
        }
        delay
    }

    /// The lines of `chunk` the database `named` as refused go to the
    /// dead-letter topic; returns the others, to write again (`None`:
    /// stopped).
    async fn dead_letter_named<'a>(
        &self,
        chunk: Vec<Line<'a>>,
        named: &[usize],
        reason: &str,
        sink: &str,
        stop: &CancellationToken,
    ) -> Option<Vec<Line<'a>>> {
        let mut rest = Vec::with_capacity(chunk.len());
        for (i, line) in chunk.into_iter().enumerate() {
            if named.contains(&i) {
                if !self.dead_letter_line(&line, reason, sink, stop).await {
                    return None;
                }
            } else {
                rest.push(line);
            }
        }
        Some(rest)
    }

    async fn dead_letter_line(
        &self,
        line: &Line<'_>,
        reason: &str,
        sink: &str,
        stop: &CancellationToken,
    ) -> bool {
        let letter = DeadLetter {
            key: None,
            payload: line.text().as_bytes().to_vec(),
            headers: Vec::new(),
            reason: DeadLetterReason::Rejected,
            error: reason.to_owned(),
            origin: line.origin().clone(),
            sink: Some(sink.to_owned()),
        };
        self.send_letter(&letter, stop).await
    }

    /// Sends a letter and counts it; false if `stop` fired first.
    async fn send_letter(&self, letter: &DeadLetter, stop: &CancellationToken) -> bool {
        let sent = self.dead_letters.send(letter, stop).await;
        if sent {
            self.metrics
                .dead_lettered
                .get_or_create(&metrics::reason(letter.reason))
                .inc();
        }
        sent
    }
}

/// Sleeps for `delay`; false if `stop` fired first.
async fn sleep_unless_stopped(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}
