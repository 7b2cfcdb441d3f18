//! Handing over: committed readings read from the journal, within the
//! lanes, the send windows and the budget, held while the clock is not
//! set, made records ([`super::record`]) and given to librdkafka.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

use super::config::Order;
use super::lanes::{self, Allowed, LaneKind};
use super::producer::Producer;
use super::state::Run;
use super::{Forwarder, SendError, record, restamp, schedule};
use crate::journal::JournalRecord;

/// Most journal records read in one go.
const READ_CHUNK: usize = 2_000;

/// One range of one lane to read and hand over.
struct Chunk {
    next: lanes::Next,
    /// Most records to read: the lane's room, a read's size, the budget.
    limit: usize,
    /// Whether the budget counts these (live readings may be exempt).
    budgeted: bool,
}

impl Forwarder {
    /// Hands committed records to librdkafka while the lanes, the budget and
    /// librdkafka's queue have room.
    pub(super) async fn fill(&mut self, producer: &Producer, run: &mut Run) {
        run.filling();
        // Held readings are looked at again on every fill, and at least
        // every second.
        run.live_held = false;
        let clock = self.clock.stamp();
        loop {
            let Some(chunk) = self.next_chunk(run) else {
                return;
            };
            let batch = match self
                .journal
                .read_range_async(chunk.next.after, chunk.next.up_to, chunk.limit)
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
                run.lanes.skipped_to(chunk.next.up_to);
                continue;
            }
            if !self.send_batch(producer, run, batch, &chunk, clock) {
                return;
            }
        }
    }

    /// The next range to read and hand over, within the lanes, the send
    /// windows and the budget; `None` when nothing may go now. Live
    /// readings that fell behind `forward.live_horizon` join the backlog
    /// first.
    fn next_chunk(&self, run: &mut Run) -> Option<Chunk> {
        let committed = self.committed.borrow().last_seq;
        let now = Instant::now();
        if self.config.forward.order == Order::LiveFirst
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
        let next = run.lanes.next(committed, allowed)?;
        let budgeted = !(next.lane == LaneKind::Live && self.config.forward.live_exempt);
        let mut limit = next.limit.min(READ_CHUNK);
        if let (Some(budget), true) = (&mut run.budget, budgeted) {
            limit = limit.min(budget.records_allowed(run.record_bytes as usize, now.into_std()));
            if limit == 0 {
                let wait = budget.wait(now.into_std());
                run.wake_no_later_than(now + wait);
                return None;
            }
        }
        Some(Chunk {
            next,
            limit,
            budgeted,
        })
    }

    /// Hands `batch` over record by record; `false` when the fill is over
    /// (librdkafka's queue or the budget is full, a backlog reading waits
    /// for the clock, or Kafka refused one).
    fn send_batch(
        &self,
        producer: &Producer,
        run: &mut Run,
        batch: Vec<crate::journal::ReadResult>,
        chunk: &Chunk,
        clock: crate::clock::Stamp,
    ) -> bool {
        for item in batch {
            let record = match item {
                Ok(record) => record,
                Err(bad) => {
                    self.stats.unreadable(1);
                    tracing::error!(seq = bad.seq, reason = %bad.reason, "journal record is unreadable; skipping it");
                    run.lanes.skipped(bad.seq);
                    continue;
                }
            };
            if chunk.budgeted
                && let Some(budget) = &mut run.budget
                && !budget.allows(Instant::now().into_std())
            {
                return false;
            }
            let verdict = restamp::decide(
                record.taken,
                record.boot_id == self.boot_id,
                clock,
                self.config.forward.hold_unsynced,
            );
            if verdict == restamp::Verdict::Hold {
                run.wake_no_later_than(Instant::now() + Duration::from_secs(1));
                // A held live reading lets the backlog go still.
                if chunk.next.lane == LaneKind::Live {
                    run.live_held = true;
                    return true;
                }
                return false;
            }
            if !self.send_one(producer, run, &record, verdict) {
                return false;
            }
        }
        true
    }

    /// Sends one record and books it in the lanes and the budget; `false`
    /// when the fill is over (queue full, or Kafka refused it).
    fn send_one(
        &self,
        producer: &Producer,
        run: &mut Run,
        record: &JournalRecord,
        verdict: restamp::Verdict,
    ) -> bool {
        match self.send(producer, record, verdict) {
            Ok(raw) => {
                run.lanes.sent(record.seq);
                run.record_bytes = 0.9 * run.record_bytes + 0.1 * raw as f64;
                if let Some(budget) = &mut run.budget {
                    budget.charge(raw);
                }
                true
            }
            Err(SendError::QueueFull) => false,
            Err(SendError::Record(reason)) => {
                self.stats.unreadable(1);
                tracing::error!(
                    seq = record.seq,
                    %reason,
                    "journal record cannot be encoded; skipping it"
                );
                run.lanes.skipped(record.seq);
                true
            }
            Err(SendError::Kafka(e)) => {
                run.lanes.sent(record.seq);
                self.failed(record.seq, &e, producer, run);
                false
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
}
