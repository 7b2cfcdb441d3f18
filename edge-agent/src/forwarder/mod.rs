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
//! - `fill`: handing over: journal reads within the lanes, windows and
//!   budget, held readings, librdkafka's queue.
//! - [`record`]: the Kafka record a reading becomes (value, key, headers).
//! - [`producer`]: librdkafka's configuration and callbacks.
//! - `state`: what one run of the forwarder keeps track of, and the pure
//!   decision of what the loop does next (`state::Step`); this file only
//!   performs the steps.
//! - [`session`]: when a producer session is given up for a fresh one
//!   (pure, unit-tested); [`diagnosis`]: what a failed delivery means.
//! - [`security`]: TLS and SASL settings, secrets read from files.
//! - [`restamp`]: readings taken before the clock was set are held, then
//!   sent with corrected timestamps (or tagged, if that cannot be done).

pub mod budget;
pub mod config;
pub mod diagnosis;
mod fill;
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
use rdkafka::producer::{Producer as _, PurgeConfig};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use config::{ForwarderConfig, Order};

use crate::journal::{JournalReader, Progress};
use crate::stats::{Link, Stats};
use diagnosis::{Diagnosis, calls_for_diagnosis, episode_of};
use producer::{Event, Producer};
use session::{Episode, Renewal};
use state::{Run, Step, Stopping};

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
    stats: Arc<Stats>,
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
        stats: Arc<Stats>,
    ) -> Self {
        Forwarder {
            config,
            boot_id: journal.boot_id(),
            journal,
            committed,
            acks,
            stats,
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
        let producer = producer::create(&self.config, deliveries_tx.clone(), self.stats.clone())?;
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
    /// The forwarding loop: asks [`Run::next`] what to do, does it, and
    /// waits for news when there is nothing to do. Returns the producer, to
    /// be dropped.
    async fn forward(
        &mut self,
        mut producer: Producer,
        deliveries_tx: mpsc::UnboundedSender<producer::Event>,
        deliveries: &mut mpsc::UnboundedReceiver<producer::Event>,
        shutdown: CancellationToken,
        handover: CancellationToken,
    ) -> Result<Producer, ForwarderError> {
        let head = self.committed.borrow().last_seq;
        let mut run = Run::new(&self.config.forward, head, Instant::now());
        let mut stopping: Option<Stopping> = None;
        let mut committed_open = true;
        loop {
            let now = Instant::now();
            self.observe_wire(&producer, &mut run, now);
            let progress = *self.committed.borrow();
            let wake = match run.next(progress, stopping, now) {
                Step::Rewind => {
                    self.rewind(&producer, &mut run).await;
                    continue;
                }
                Step::Renew => {
                    producer = self
                        .renew_producer(producer, &deliveries_tx, &mut run)
                        .await?;
                    continue;
                }
                Step::Fill => {
                    self.fill(&producer, &mut run).await;
                    self.send_acks(&mut run);
                    continue;
                }
                Step::Stop => break,
                Step::Wait(until) => until,
            };
            tokio::select! {
                Some(event) = deliveries.recv() => {
                    self.handle(event, &producer, &mut run);
                    while let Ok(event) = deliveries.try_recv() {
                        self.handle(event, &producer, &mut run);
                    }
                    self.send_acks(&mut run);
                }
                changed = self.committed.changed(), if committed_open => {
                    committed_open = changed.is_ok();
                    run.saw_head(self.committed.borrow().last_seq, Instant::now());
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled(), if stopping.is_none_or(|s| s.handing_over) => {
                    stopping = Some(Stopping::after(self.config.forward.shutdown_grace, false));
                }
                _ = handover.cancelled(), if stopping.is_none() => {
                    stopping = Some(Stopping::after(self.config.forward.shutdown_grace, true));
                }
            }
            run.fill_due = true;
        }
        self.finish(&mut run);
        Ok(producer)
    }

    /// Stopping: the last acknowledgements go to the writer, and what is
    /// left is said.
    fn finish(&self, run: &mut Run) {
        let unsent = run.lanes.unsent(self.committed.borrow().last_seq);
        if unsent > 0 {
            tracing::info!(
                unsent,
                "stopping with readings not yet acknowledged by Kafka; they stay in the journal"
            );
        }
        self.send_acks(run);
    }

    /// A fresh producer session in place of `old` (nothing is in flight).
    async fn renew_producer(
        &self,
        old: Producer,
        deliveries_tx: &mpsc::UnboundedSender<producer::Event>,
        run: &mut Run,
    ) -> Result<Producer, ForwarderError> {
        run.wire_base += old.context().wire_bytes();
        let producer = self.replace_producer(old, deliveries_tx.clone()).await?;
        run.renewed();
        self.stats.producer_renewed();
        Ok(producer)
    }

    /// With a budget: what librdkafka put on the wire since the last look.
    fn observe_wire(&self, producer: &Producer, run: &mut Run, now: Instant) {
        if let Some(budget) = &mut run.budget {
            let sent = producer.context().wire_bytes();
            budget.observe_wire(sent, now.into_std());
            self.stats.wire_bytes(run.wire_base + sent);
        }
    }

    /// Passes what Kafka acknowledged to the journal writer, to delete.
    fn send_acks(&self, run: &mut Run) {
        let acked = run.lanes.take_acked();
        if !acked.is_empty() {
            let _ = self.acks.send(acked);
        }
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
        self.stats.link_error(diagnosis.clone());
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
                self.stats.forwarded(1);
                if self.stats.link_up() != Link::Up {
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
        self.stats.link_down(error.to_string());
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
                renewals_before = self.stats.snapshot().producer_renewals,
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
            self.stats.clone(),
        )?)
    }
}
