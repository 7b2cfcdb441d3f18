//! # The pipeline: consumer → decode → batcher → writer → offsets
//!
//! One loop owns the consumer, the open batch and the offset book:
//!
//! 1. A record, borrowed from librdkafka's queue, is decoded into lines of
//!    the open batch, or, if it can never be written, kept as a letter for
//!    the dead-letter topic. Either way it joins the open batch.
//! 2. A batch is sealed when full or due, registered with [`Offsets`], and
//!    handed to its own writer task ([`InFlight`]); up to
//!    `batch.max_in_flight` run at once.
//! 3. When a task finishes, its offsets are marked done, and whatever
//!    contiguous prefix that completes is stored for commit.
//! 4. When every slot is taken and the open batch is full, the loop stops
//!    taking records: librdkafka's queue fills to its bound and fetching
//!    stops by itself. If that lasts [`PAUSE_AFTER`], the partitions are
//!    paused and the consumer polled again, so the group keeps us; they
//!    resume when a slot frees. Memory stays bounded however long a database
//!    is away. Short stalls never pause: a pause drops librdkafka's
//!    prefetched records, and Tansu 0.6 answers the fetch that resumes them
//!    from inside a record batch with the batch after it.
//!
//! What to do after each event is decided by pure functions ([`due`],
//! [`next_step`]); the loop only performs it. Revoked partitions leave the
//! open batch and the offset book; the commit itself happens in the
//! consumer's rebalance callback. A record that arrives beyond the offset
//! its partition was at is a gap the broker left: it is counted and logged
//! ([`Positions`]). On shutdown the batches in flight get
//! `retry.shutdown_grace` to finish, what finished is committed, and the
//! rest is re-read on the next start.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use telemetry::record::HEADER_CONTENT_TYPE;
use telemetry::throttle::Throttle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batcher::{Batcher, Limits};
use crate::config::UplinkConfig;
use crate::consumer::{self, Change, Consumer};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::decode::{self, DecodeSettings, RecordView};
use crate::metrics::{self, Metrics};
use crate::offsets::{Offsets, Positions};
use crate::record::{Origin, Partition};
use crate::sinks::{self, BuildError};
use crate::status::{self, Reporter};
use crate::writer::{Done, InFlight, SinkSlot, Writer};

pub use crate::status::Counters;

/// Why the pipeline could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("sink[{index}] ({kind}): {error}")]
    Sink {
        index: usize,
        kind: &'static str,
        error: BuildError,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the final offset commit did not run: {0}")]
    Commit(#[from] std::io::Error),
}

/// The consumer, and everything else the loop owns.
pub struct Pipeline {
    consumer: Consumer,
    state: State,
}

/// What the loop owns besides the consumer. Its methods get the consumer
/// as an argument, so that a record borrowed from it is decoded in place.
struct State {
    writer: Writer,
    batcher: Batcher,
    offsets: Offsets,
    positions: Positions,
    in_flight: InFlight,
    paused: bool,
    /// Since when the open batch is full with every writer slot taken.
    blocked_since: Option<Instant>,
    settings: DecodeSettings,
    shutdown_grace: Duration,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    counters: Counters,
    /// The topic of the last record, shared by the records after it.
    topic: Option<Arc<str>>,
    consumer_errors: Throttle,
    skip_log: Throttle,
}

/// Records taken from librdkafka's queue per round of the loop, at most.
const MAX_TAKEN_AT_ONCE: usize = 1024;

/// When the open batch must be sealed by its age: its deadline, if it has
/// one and a writer slot is free to take it.
pub fn due(deadline: Option<std::time::Instant>, has_room: bool) -> Option<std::time::Instant> {
    deadline.filter(|_| has_room)
}

/// How long the loop may stop taking records (a full batch, every writer
/// slot taken) before it pauses the partitions to go on polling. Well inside
/// `max.poll.interval.ms` (30 s), after which the group would drop us.
pub const PAUSE_AFTER: Duration = Duration::from_secs(10);

/// Where the flow of records stands, for [`next_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The open batch is full.
    pub full: bool,
    /// A writer slot is free.
    pub has_room: bool,
    pub paused: bool,
    pub blocked_since: Option<Instant>,
}

/// What the loop does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Seal the open batch and start writing it.
    pub seal: bool,
    /// Pause (true) or resume (false) the partitions.
    pub pause: Option<bool>,
    /// Since when the loop is blocked, if it is.
    pub blocked_since: Option<Instant>,
    /// Whether to poll the consumer: for records, or, while paused, only to
    /// stay in the group.
    pub poll: bool,
}

/// After an event: a full batch is sealed if a writer slot is free. If it
/// cannot be, the loop stops polling; after [`PAUSE_AFTER`] it pauses the
/// partitions and polls again. Once a slot frees, it resumes.
pub fn next_step(flow: Flow, now: Instant) -> Step {
    let seal = flow.full && flow.has_room;
    let blocked = flow.full && !seal;
    if !blocked {
        return Step {
            seal,
            pause: flow.paused.then_some(false),
            blocked_since: None,
            poll: true,
        };
    }
    let since = flow.blocked_since.unwrap_or(now);
    let pause = !flow.paused && now >= since + PAUSE_AFTER;
    Step {
        seal,
        pause: pause.then_some(true),
        blocked_since: Some(since),
        poll: flow.paused || pause,
    }
}

impl Pipeline {
    pub async fn new(config: &UplinkConfig, metrics: Arc<Metrics>) -> Result<Self, PipelineError> {
        let mut slots = Vec::new();
        for (index, sink) in config.sinks.iter().enumerate() {
            let built = sinks::build(sink)
                .await
                .map_err(|error| PipelineError::Sink {
                    index,
                    kind: sink.kind.as_str(),
                    error,
                })?;
            slots.push(SinkSlot::new(built, sink.max_concurrent_writes));
        }
        metrics.announce(slots.iter().map(|s| s.sink.name()));
        let writer = Writer {
            sinks: slots.into(),
            dead_letters: DeadLetters::new(config)?,
            metrics: metrics.clone(),
            max_retry_delay: config.retry.max_delay,
        };
        let state = State {
            writer,
            batcher: Batcher::new(Limits {
                max_lines: config.batch.max_lines,
                max_bytes: config.batch.max_bytes.bytes() as usize,
                max_wait: config.batch.max_wait,
            }),
            offsets: Offsets::default(),
            positions: Positions::default(),
            in_flight: InFlight::new(config.batch.max_in_flight),
            paused: false,
            blocked_since: None,
            settings: DecodeSettings {
                json_timestamp_unit: config.kafka.json_timestamp_unit,
                max_record_size: config.kafka.max_record_size.bytes() as usize,
                integers: config.kafka.integer_fields,
            },
            shutdown_grace: config.retry.shutdown_grace,
            reporter: Reporter::new(Instant::now(), config.status.log_interval),
            metrics,
            counters: Counters::default(),
            topic: None,
            consumer_errors: Throttle::new(Duration::from_secs(60)),
            skip_log: Throttle::new(Duration::from_secs(60)),
        };
        Ok(Pipeline {
            consumer: consumer::create(config)?,
            state,
        })
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Counters, PipelineError> {
        let Pipeline {
            consumer,
            mut state,
        } = self;
        let mut poll = true;
        loop {
            let deadline = due(state.batcher.deadline(), state.in_flight.has_room());
            let pause_at = state
                .blocked_since
                .filter(|_| !state.paused)
                .map(|s| s + PAUSE_AFTER);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                done = state.in_flight.next(), if !state.in_flight.is_empty() => {
                    state.finished(&consumer, done);
                }
                _ = tokio::time::sleep_until(deadline.map_or_else(Instant::now, Instant::from_std)), if deadline.is_some() => {
                    state.seal();
                }
                _ = tokio::time::sleep_until(state.reporter.next_at()) => state.report(),
                _ = tokio::time::sleep_until(pause_at.unwrap_or_else(Instant::now)), if pause_at.is_some() => {}
                message = consumer.recv(), if poll => {
                    state.received(&consumer, message);
                    state.take_ready(&consumer);
                }
            }
            let flow = Flow {
                full: state.batcher.is_full(),
                has_room: state.in_flight.has_room(),
                paused: state.paused,
                blocked_since: state.blocked_since,
            };
            let step = next_step(flow, Instant::now());
            if step.seal {
                state.seal();
            }
            if let Some(paused) = step.pause {
                state.set_paused(&consumer, paused);
            }
            state.blocked_since = step.blocked_since;
            poll = step.poll;
        }
        state.finish(consumer).await
    }
}

impl State {
    /// The rate gauge and consumer positions, and the status line when due.
    fn report(&mut self) {
        let lines = self.counters.lines_written;
        if self.reporter.tick(Instant::now(), &self.metrics, lines) {
            self.log_status();
        }
        for ((topic, partition), next) in self.positions.iter() {
            self.metrics.consumed(topic, *partition, next);
        }
    }

    fn log_status(&self) {
        let sinks = self.writer.sinks.iter().map(|s| s.sink.name());
        status::log(&self.counters, &self.metrics, sinks);
    }

    /// Records librdkafka already holds are taken without a round of the
    /// loop each, up to a full batch.
    fn take_ready(&mut self, consumer: &Consumer) {
        for _ in 0..MAX_TAKEN_AT_ONCE {
            if self.batcher.is_full() {
                break;
            }
            let Some(message) = consumer.recv().now_or_never() else {
                break;
            };
            self.received(consumer, message);
        }
    }

    /// Shutdown: the open batch is sealed, the batches in flight get the
    /// grace period, and what finished is committed.
    async fn finish(mut self, consumer: Consumer) -> Result<Counters, PipelineError> {
        self.apply_rebalance(&consumer);
        if !self.batcher.is_empty() {
            self.seal();
        }
        let grace = tokio::time::sleep(self.shutdown_grace);
        tokio::pin!(grace);
        let mut abandoned = false;
        while !self.in_flight.is_empty() {
            tokio::select! {
                done = self.in_flight.next() => self.finished(&consumer, done),
                _ = &mut grace, if !abandoned => {
                    tracing::warn!(
                        batches = self.in_flight.len(),
                        "stopping before the database accepted every batch; those are not committed and will be read again"
                    );
                    self.in_flight.abandon();
                    abandoned = true;
                }
            }
        }
        final_commit(consumer).await?;
        self.log_status();
        Ok(self.counters)
    }

    /// One record, or a consumer error, from `recv`.
    fn received(&mut self, consumer: &Consumer, message: KafkaResult<impl Message>) {
        // Rebalances the callback saw inside `recv` apply before the record
        // it returned.
        self.apply_rebalance(consumer);
        match message {
            Ok(m) => self.take(&m),
            Err(e) => {
                if let Some(held_back) = self.consumer_errors.allow(std::time::Instant::now()) {
                    tracing::warn!(error = %e, similar_not_logged = held_back, "Kafka consumer error; retrying");
                }
            }
        }
    }

    /// Applies what the consumer's rebalance callback saw: revoked
    /// partitions leave the open batch and the offset book; assigned ones
    /// start from their committed offset.
    fn apply_rebalance(&mut self, consumer: &Consumer) {
        for change in consumer.context().take_changes() {
            match change {
                Change::Revoked(p) => {
                    let gone = std::slice::from_ref(&p);
                    self.batcher.drop_partitions(gone);
                    self.offsets.revoked(gone);
                    self.positions.revoked(&p);
                    self.metrics.forget(&p.0, p.1);
                    self.metrics.partitions_revoked.inc();
                    self.metrics.partitions_assigned.dec();
                }
                Change::Assigned(p, start) => {
                    self.metrics.partitions_assigned.inc();
                    self.positions.assigned(p, start);
                }
            }
        }
    }

    /// A record of `partition` at `offset` arrived: counts and logs the
    /// offsets before it that never did.
    fn check_gap(&mut self, partition: &Partition, offset: i64) {
        let Some(gap) = self.positions.read(partition, offset) else {
            return;
        };
        let (topic, number) = (&*partition.0, partition.1);
        self.metrics
            .offsets_skipped
            .get_or_create(&metrics::partition(topic, number))
            .inc_by((gap.end - gap.start) as u64);
        if let Some(held_back) = self.skip_log.allow(std::time::Instant::now()) {
            tracing::error!(
                topic,
                partition = number,
                from = gap.start,
                to = gap.end - 1,
                similar_not_logged = held_back,
                "the broker skipped offsets: these records were never delivered and are not written (compaction, or Tansu answering a fetch from inside a record batch)"
            );
        }
    }

    fn set_paused(&mut self, consumer: &Consumer, paused: bool) {
        self.paused = paused;
        consumer.context().set_paused(paused);
        self.metrics.paused.set(i64::from(paused));
        let assignment = match consumer.assignment() {
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
            consumer.pause(&assignment)
        } else {
            tracing::info!("resuming consumption");
            consumer.resume(&assignment)
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
        let commit = batch.commit.clone();
        let id = self.in_flight.start(&self.writer, batch);
        self.offsets.sealed(id, &commit);
        self.metrics.batches_in_flight.inc();
    }

    /// A writer task finished: store what is now contiguous.
    fn finished(&mut self, consumer: &Consumer, done: Done) {
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
        if let Err(e) = consumer.store_offsets(&tpl) {
            // Revoked meanwhile; the new owner reads these records again,
            // which only rewrites the same points.
            tracing::debug!(error = %e, "cannot store offsets for partitions no longer assigned");
        }
    }

    /// Decodes one record into the open batch, as lines or as a letter.
    fn take(&mut self, m: &impl Message) {
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
        self.check_gap(&(topic.clone(), m.partition()), m.offset());
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
        let mark = self.batcher.lines().mark();
        match decode::decode(&view, &self.settings, self.batcher.lines()) {
            Ok(()) => self.batcher.took(mark, origin, now),
            Err(e) => {
                let letter = DeadLetter::of_record(m, e.to_string(), origin);
                self.batcher.push_letter(letter, now);
            }
        }
    }
}

/// How long a stopping uplink waits for Kafka to answer its last offset
/// commit. With the broker unreachable a synchronous commit (and closing the
/// consumer) waits for a coordinator that may never come back, and the
/// uplink could not be stopped; what was not committed is read again.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Commits what every sink accepted and closes the consumer, on a thread of
/// its own, waiting at most [`FINAL_COMMIT_WAIT`]. A thread that is still
/// waiting then is left behind: the process ends without it.
async fn final_commit(consumer: Consumer) -> Result<(), PipelineError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("final-commit".into())
        .spawn(move || {
            let outcome = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
            let _ = done.send(outcome);
        })?;
    match tokio::time::timeout(FINAL_COMMIT_WAIT, result).await {
        Ok(Ok(
            Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)),
        )) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "final offset commit failed; the last records will be read again")
        }
        Ok(Err(_)) => tracing::warn!(
            "the final offset commit ended without an answer; the last records will be read again"
        ),
        Err(_) => tracing::warn!(
            waited = ?FINAL_COMMIT_WAIT,
            "Kafka did not answer the final offset commit; stopping without it, the last records will be read again"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(full: bool, has_room: bool, paused: bool, blocked_since: Option<Instant>) -> Flow {
        Flow {
            full,
            has_room,
            paused,
            blocked_since,
        }
    }

    #[test]
    fn a_full_batch_is_sealed_when_a_slot_is_free() {
        let now = Instant::now();
        let step = next_step(flow(true, true, false, None), now);
        assert!(step.seal && step.poll);
        assert_eq!((step.pause, step.blocked_since), (None, None));
        assert!(!next_step(flow(false, true, false, None), now).seal);
    }

    #[test]
    fn blocked_it_stops_polling_and_pauses_only_after_a_while() {
        let t0 = Instant::now();
        let blocked = next_step(flow(true, false, false, None), t0);
        assert_eq!(
            blocked,
            Step {
                seal: false,
                pause: None,
                blocked_since: Some(t0),
                poll: false
            },
            "a short stall drops nothing librdkafka prefetched"
        );
        let later = t0 + PAUSE_AFTER - Duration::from_millis(1);
        assert!(!next_step(flow(true, false, false, Some(t0)), later).poll);
        let long = next_step(flow(true, false, false, Some(t0)), t0 + PAUSE_AFTER);
        assert_eq!(long.pause, Some(true));
        assert!(long.poll, "paused, it polls to stay in the group");
        let still = next_step(flow(true, false, true, Some(t0)), t0 + PAUSE_AFTER * 3);
        assert_eq!((still.pause, still.poll), (None, true));
    }

    #[test]
    fn a_freed_slot_seals_resumes_and_polls_again() {
        let t0 = Instant::now();
        let freed = next_step(flow(true, true, true, Some(t0)), t0 + PAUSE_AFTER * 2);
        assert_eq!(
            freed,
            Step {
                seal: true,
                pause: Some(false),
                blocked_since: None,
                poll: true
            }
        );
        let unpaused = next_step(
            flow(true, true, false, Some(t0)),
            t0 + Duration::from_secs(1),
        );
        assert_eq!((unpaused.pause, unpaused.poll), (None, true));
    }

    #[test]
    fn a_due_batch_waits_for_a_free_slot() {
        let at = std::time::Instant::now();
        assert_eq!(due(Some(at), true), Some(at));
        assert_eq!(due(Some(at), false), None);
        assert_eq!(due(None, true), None);
    }
}
