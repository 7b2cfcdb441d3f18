//! # The forwarder: journal → Kafka
//!
//! Reads the journal in bounded windows and hands each reading to librdkafka
//! (`acks=all`, idempotent). Only when a delivery report says Kafka has a
//! reading is its sequence number passed to the journal writer for deletion.
//!
//! Order: in `live_first` (the default), readings are sent as soon as they
//! are committed, and what the link could not carry (the backlog from before
//! a restart or an outage) drains behind them in lanes, oldest first, with
//! the capacity left (see [`lanes`]). The backlog's share of librdkafka's
//! queue is held to about a second of deliveries, so a live reading never
//! waits behind much of it. In `fifo`, everything goes in sampling order.
//!
//! While Kafka is unreachable, or the topic does not exist, deliveries fail;
//! the forwarder stops sending, waits for the outstanding ones to resolve,
//! backs off (exponentially, with jitter), and resumes from the oldest
//! unacknowledged reading of each lane. Nothing is ever dropped: a reading
//! that times out inside librdkafka is simply read from the journal again.
//! The producer reconnects by itself, so the agent catches up without a
//! restart.
//!
//! A bandwidth budget ([`budget`]) and send windows ([`schedule`]) gate what
//! is handed over; live readings may be exempted from both.
//!
//! ## Layout
//! - [`config`]: `[kafka]` and `[forward]`, with their defaults and checks.
//! - [`lanes`]: the in-flight bookkeeping and drain order, pure and
//!   unit-tested.
//! - [`budget`]: the token bucket over bytes on the wire.
//! - [`schedule`]: send windows by local time of day.
//! - [`record`]: the Kafka record a reading becomes (value, key, headers).
//! - [`producer`]: librdkafka's configuration and callbacks.
//! - `state`: what one run of the forwarder keeps track of.
//! - [`session`]: when a producer session is given up for a fresh one
//!   (pure, unit-tested); [`diagnosis`]: what a failed delivery means.
//! - [`security`]: TLS and SASL settings, secrets read from files.
//! - [`restamp`]: readings taken before the clock was set are held, then
//!   sent with corrected timestamps (or tagged, if that cannot be done).

pub mod budget;
pub mod config;
pub mod diagnosis;
pub mod lanes;
pub mod producer;
pub mod record;
pub mod restamp;
pub mod schedule;
pub mod security;
pub mod session;
mod state;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer as _, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use config::{ForwarderConfig, Order};

use crate::journal::{JournalReader, JournalRecord, Progress};
use crate::status::{Link, Status};
use diagnosis::{Diagnosis, calls_for_diagnosis, episode_of};
use lanes::{Allowed, LaneKind};
use producer::{Event, Producer};
use session::{Episode, Renewal};
use state::Run;

/// Most journal records read in one go.
const READ_CHUNK: usize = 2_000;

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[from] producer::CreateError),
}

pub struct Forwarder {
    config: Arc<ForwarderConfig>,
    journal: JournalReader,
    /// The boot this journal was opened in: readings of other boots cannot
    /// have their timestamps corrected from this boot's clock.
    boot_id: Arc<str>,
    /// What the journal writer has committed.
    committed: watch::Receiver<Progress>,
    /// Acknowledged sequence numbers, to the journal writer.
    acks: mpsc::UnboundedSender<Vec<u64>>,
    status: Arc<Status>,
    /// Whether timestamps can be believed (see [`restamp`]).
    clock: Arc<dyn Clock>,
}

/// Why one record was not handed over.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("librdkafka's queue is full")]
    /// librdkafka's queue is full: wait for deliveries, then continue.
    QueueFull,
    /// The record cannot be built (see [`record`]).
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// librdkafka refused it for another reason.
    #[error(transparent)]
    Kafka(KafkaError),
}

impl Forwarder {
    pub fn new(
        config: Arc<ForwarderConfig>,
        journal: JournalReader,
        committed: watch::Receiver<Progress>,
        acks: mpsc::UnboundedSender<Vec<u64>>,
        status: Arc<Status>,
    ) -> Self {
        Forwarder {
            config,
            boot_id: journal.boot_id(),
            journal,
            committed,
            acks,
            status,
            clock: Arc::new(SystemClock::default()),
        }
    }

    /// Uses `clock` to decide about readings taken before the clock was set.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Creates the producer: the step that can fail (librdkafka refuses the
    /// settings). The returned [`Started`] forwards when run.
    pub fn start(self) -> Result<Started, ForwarderError> {
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let producer = producer::create(&self.config, deliveries_tx.clone(), self.status.clone())?;
        Ok(Started {
            forwarder: self,
            producer,
            deliveries_tx,
            deliveries,
        })
    }
}

/// A forwarder whose producer exists.
pub struct Started {
    forwarder: Forwarder,
    producer: Producer,
    deliveries_tx: mpsc::UnboundedSender<producer::Event>,
    deliveries: mpsc::UnboundedReceiver<producer::Event>,
}

impl Started {
    /// Forwards until `shutdown` or `handover`. After `shutdown` it keeps
    /// forwarding until the journal is drained (the samplers have stopped,
    /// their last readings are committed and acknowledged) or
    /// `forward.shutdown_grace` has passed; whatever is not acknowledged by
    /// then stays in the journal for the next start. On `handover` (a new
    /// config replaces this forwarder) it stops sending and waits, at most
    /// `forward.shutdown_grace`, only for what it already handed to
    /// librdkafka; the next forwarder sends the rest from the journal.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        handover: CancellationToken,
    ) -> Result<(), ForwarderError> {
        let Started {
            forwarder: mut this,
            producer,
            deliveries_tx,
            mut deliveries,
        } = self;
        let producer = this
            .forward(producer, deliveries_tx, &mut deliveries, shutdown, handover)
            .await?;
        // Dropping the producer purges its queue; do it off the runtime.
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        Ok(())
    }
}

impl Forwarder {
    /// The forwarding loop; returns the producer to be dropped.
    async fn forward(
        &mut self,
        mut producer: Producer,
        deliveries_tx: mpsc::UnboundedSender<producer::Event>,
        deliveries: &mut mpsc::UnboundedReceiver<producer::Event>,
        shutdown: CancellationToken,
        handover: CancellationToken,
    ) -> Result<Producer, ForwarderError> {
        let head = self.committed.borrow().last_seq;
        let now = Instant::now();
        let mut run = Run::new(&self.config.forward, head, now);
        let mut stopping: Option<Instant> = None;
        let mut handing_over = false;
        let mut committed_open = true;
        loop {
            let now = Instant::now();
            if let Some(budget) = &mut run.budget {
                let sent = producer.context().wire_bytes();
                budget.observe_wire(sent, now.into_std());
                self.status.wire_bytes(run.wire_base + sent);
            }
            if run.lanes.ready_to_rewind() {
                self.rewind(&producer, &mut run).await;
            }
            if run.renew.is_some() && run.lanes.in_flight() == 0 {
                run.wire_base += producer.context().wire_bytes();
                producer = self
                    .replace_producer(producer, deliveries_tx.clone())
                    .await?;
                run.renew = None;
                run.session.renewed();
                self.status.producer_renewed();
            }
            if run.renew.is_none() && run.resume_at.is_none_or(|t| now >= t) {
                run.resume_at = None;
                run.wake_at = None;
                if !handing_over {
                    self.fill(&producer, &mut run).await;
                }
            }
            let acked = run.lanes.take_acked();
            if !acked.is_empty() {
                let _ = self.acks.send(acked);
            }
            if let Some(deadline) = stopping {
                let progress = *self.committed.borrow();
                let drained = if handing_over {
                    run.lanes.in_flight() == 0
                } else {
                    progress.sampling_done && run.lanes.drained(progress.last_seq)
                };
                if drained || Instant::now() >= deadline {
                    break;
                }
            }
            let wake = [run.resume_at, run.wake_at, stopping]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                Some(event) = deliveries.recv() => {
                    self.handle(event, &producer, &mut run);
                    while let Ok(event) = deliveries.try_recv() {
                        self.handle(event, &producer, &mut run);
                    }
                }
                changed = self.committed.changed(), if committed_open => {
                    committed_open = changed.is_ok();
                    let head = self.committed.borrow().last_seq;
                    run.saw_head(head, Instant::now());
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled(), if stopping.is_none() || handing_over => {
                    handing_over = false;
                    stopping = Some(Instant::now() + self.config.forward.shutdown_grace);
                }
                _ = handover.cancelled(), if stopping.is_none() => {
                    handing_over = true;
                    stopping = Some(Instant::now() + self.config.forward.shutdown_grace);
                }
            }
        }
        let outstanding = self.committed.borrow().last_seq;
        let unsent = run.lanes.unsent(outstanding);
        if unsent > 0 {
            tracing::info!(
                unsent,
                "stopping with readings not yet acknowledged by Kafka; they stay in the journal"
            );
        }
        let acked = run.lanes.take_acked();
        if !acked.is_empty() {
            let _ = self.acks.send(acked);
        }
        Ok(producer)
    }

    /// After a failure has fully resolved: go back to the oldest failed
    /// reading of each lane, back off, and tell the operator what is wrong.
    async fn rewind(&self, producer: &Producer, run: &mut Run) {
        let from = run.lanes.rewind();
        if self.config.forward.order == Order::LiveFirst {
            // Whatever the outage held back is backlog now; readings taken
            // from here on go first.
            run.lanes.jump_live(self.committed.borrow().last_seq);
        }
        let delay = run.backoff.next_delay(rand::random());
        run.resume_at = Some(Instant::now() + delay);
        let (episode, diagnosis) = match run.last_failure.take() {
            Some(e) if calls_for_diagnosis(&e) => {
                let d = self.diagnose(producer).await;
                (d.episode(), d.explain(&self.config.kafka))
            }
            Some(e) => (
                episode_of(&e),
                format!(
                    "Kafka refused readings ({e}); they stay in the journal and are sent again"
                ),
            ),
            None => (
                Episode::Unreachable,
                "delivery failed; the readings stay in the journal and are sent again".to_owned(),
            ),
        };
        run.session.episode(episode, Instant::now());
        if run.renew.is_none()
            && let Some(reason) = run.session.decide(Instant::now())
        {
            self.renew(reason, producer, run);
        }
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
    async fn diagnose(&self, producer: &Producer) -> Diagnosis {
        let producer = producer.clone();
        let topic = self.config.kafka.topic.clone();
        tokio::task::spawn_blocking(move || {
            match producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
            {
                Err(e) => Diagnosis::Unreachable(e.to_string()),
                Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        Diagnosis::TimedOut
                    }
                    _ => Diagnosis::TopicMissing,
                },
            }
        })
        .await
        .unwrap_or_else(|e| Diagnosis::Unreachable(format!("cannot diagnose: {e}")))
    }

    /// Which lanes the send windows let through now.
    fn allowed(&self, run: &mut Run, now: Instant) -> Allowed {
        let forward = &self.config.forward;
        // Only look at the clock when there are windows: this runs for every
        // chunk handed over.
        let open = forward.send_windows.is_empty()
            || schedule::open_at(&forward.send_windows, schedule::local_minute_of_day());
        if open == run.window_closed {
            run.window_closed = !open;
            if !forward.send_windows.is_empty() {
                tracing::info!(
                    open,
                    live_exempt = forward.live_exempt,
                    "send window {}",
                    if open { "open" } else { "closed" }
                );
            }
        }
        if !open {
            // Windows are whole minutes: look again within one.
            run.wake_no_later_than(now + Duration::from_secs(10));
        }
        let exempt = forward.live_exempt;
        Allowed {
            live: (open || exempt) && !run.live_held,
            backlog: open,
            backlog_in_flight: run.backlog_in_flight(),
        }
    }

    /// Hands committed records to librdkafka while the lanes, the budget and
    /// librdkafka's queue have room.
    async fn fill(&mut self, producer: &Producer, run: &mut Run) {
        let live_first = self.config.forward.order == Order::LiveFirst;
        // Held readings are looked at again on every fill, and at least
        // every second.
        run.live_held = false;
        let clock = self.clock.stamp();
        loop {
            let committed = self.committed.borrow().last_seq;
            let now = Instant::now();
            if live_first
                && !run.lanes.failure_pending()
                && run.lanes.live_pending(committed) > 0
                && run.live_lag(now) > self.config.forward.live_horizon
            {
                tracing::debug!(
                    from = run.lanes.live_cursor(),
                    to = committed,
                    "live readings fell behind; they join the backlog"
                );
                run.lanes.jump_live(committed);
            }
            let allowed = self.allowed(run, now);
            let Some(next) = run.lanes.next(committed, allowed) else {
                return;
            };
            let budgeted = !(next.lane == LaneKind::Live && self.config.forward.live_exempt);
            let mut limit = next.limit.min(READ_CHUNK);
            if let (Some(budget), true) = (&mut run.budget, budgeted) {
                limit =
                    limit.min(budget.records_allowed(run.record_bytes as usize, now.into_std()));
                if limit == 0 {
                    let wait = budget.wait(now.into_std());
                    run.wake_no_later_than(now + wait);
                    return;
                }
            }
            let batch = match self
                .journal
                .read_range_async(next.after, next.up_to, limit)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the journal; retrying");
                    run.resume_at = Some(Instant::now() + run.backoff.next_delay(rand::random()));
                    return;
                }
            };
            if batch.is_empty() {
                // Everything up to `up_to` was acknowledged and deleted
                // (possible after a rewind).
                run.lanes.skipped_to(next.up_to);
                continue;
            }
            'records: for item in batch {
                let record = match item {
                    Ok(record) => record,
                    Err(bad) => {
                        self.status.unreadable(1);
                        tracing::error!(seq = bad.seq, reason = %bad.reason, "journal record is unreadable; skipping it");
                        run.lanes.skipped(bad.seq);
                        continue;
                    }
                };
                if budgeted
                    && let Some(budget) = &mut run.budget
                    && !budget.allows(Instant::now().into_std())
                {
                    return;
                }
                let verdict = restamp::decide(
                    record.taken,
                    record.boot_id == self.boot_id,
                    clock,
                    self.config.forward.hold_unsynced,
                );
                if verdict == restamp::Verdict::Hold {
                    run.wake_no_later_than(Instant::now() + Duration::from_secs(1));
                    if next.lane == LaneKind::Live {
                        // The backlog may still go.
                        run.live_held = true;
                        break 'records;
                    }
                    return;
                }
                match self.send(producer, &record, verdict) {
                    Ok(raw) => {
                        run.lanes.sent(record.seq);
                        run.record_bytes = 0.9 * run.record_bytes + 0.1 * raw as f64;
                        if let Some(budget) = &mut run.budget {
                            budget.charge(raw);
                        }
                    }
                    Err(SendError::QueueFull) => return,
                    Err(SendError::Record(reason)) => {
                        self.status.unreadable(1);
                        tracing::error!(
                            seq = record.seq,
                            %reason,
                            "journal record cannot be encoded; skipping it"
                        );
                        run.lanes.skipped(record.seq);
                    }
                    Err(SendError::Kafka(e)) => {
                        run.lanes.sent(record.seq);
                        self.failed(record.seq, &e, producer, run);
                        return;
                    }
                }
            }
        }
    }

    /// Hands one record to librdkafka; returns its raw size (value, key and
    /// headers), what the budget is charged before compression.
    fn send(
        &self,
        producer: &Producer,
        record: &JournalRecord,
        verdict: restamp::Verdict,
    ) -> Result<usize, SendError> {
        let out = record::build(record, verdict, self.config.kafka.format)?;
        let raw = out.raw_len();
        // The Kafka timestamp is left to librdkafka (send time): stamping a
        // month-old backlog reading with its sampling time would let the
        // broker's retention delete it on arrival.
        let message = BaseRecord::with_opaque_to(&self.config.kafka.topic, Box::new(record.seq))
            .key(out.key)
            .payload(out.value.as_ref())
            .headers(out.headers);
        producer
            .send(message)
            .map(|()| raw)
            .map_err(|(e, _)| match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => SendError::QueueFull,
                e => SendError::Kafka(e),
            })
    }

    fn handle(&self, event: Event, producer: &Producer, run: &mut Run) {
        let delivery = match event {
            Event::Delivery(delivery) => delivery,
            Event::BrokerLost => {
                if run.renew.is_none() && run.lanes.in_flight() > 0 && !run.told_lost {
                    run.told_lost = true;
                    tracing::info!(
                        in_flight = run.lanes.in_flight(),
                        "lost the connection to Kafka: the readings in flight go back to the journal, \
                         and a fresh producer session starts"
                    );
                }
                run.renew.get_or_insert(Renewal::BrokerLost);
                // What was queued comes back as failed deliveries, to be read
                // from the journal again.
                producer.purge(PurgeConfig::default().queue().inflight().non_blocking());
                return;
            }
        };
        match delivery.result {
            Ok(()) => {
                run.lanes.delivered(delivery.seq);
                run.delivered(Instant::now());
                run.session.acknowledged();
                self.status.forwarded(1);
                if self.status.link_up() != Link::Up {
                    run.backoff.reset();
                    run.failure_log.reset();
                    run.told_lost = false;
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
        run.lanes.failed(seq);
        self.status.link_down(error.to_string());
        run.last_failure = Some(error.clone());
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(
                ?code,
                reason,
                "the Kafka producer hit a fatal error; it will be recreated"
            );
            run.renew.get_or_insert(Renewal::Fatal);
        }
    }

    /// Starts replacing the producer for `reason` (not a lost connection
    /// nor a fatal error, which are told where they are noticed): what it
    /// holds comes back as failed deliveries, and the loop replaces it once
    /// nothing is in flight.
    fn renew(&self, reason: Renewal, producer: &Producer, run: &mut Run) {
        if let Some(held_back) = run.renewal_log.allow(std::time::Instant::now()) {
            tracing::warn!(
                reason = reason.as_str(),
                renewals_before = self.status.snapshot().producer_renewals,
                renewals_not_logged = held_back,
                "{reason}: a fresh Kafka producer session starts; the readings stay in the journal"
            );
        }
        run.renew = Some(reason);
        producer.purge(PurgeConfig::default().queue().inflight().non_blocking());
    }

    /// Drops a producer that hit a fatal error and creates a fresh one.
    async fn replace_producer(
        &self,
        old: Producer,
        deliveries: mpsc::UnboundedSender<Event>,
    ) -> Result<Producer, ForwarderError> {
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        Ok(producer::create(
            &self.config,
            deliveries,
            self.status.clone(),
        )?)
    }
}
