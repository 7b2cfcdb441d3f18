//! What one run of the forwarder keeps track of, beside its lanes: backoff,
//! the budget, the delivery rate that sizes the backlog's share of
//! librdkafka's queue, and when each committed head was first seen (the age
//! of the live lane's oldest unsent reading).

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::KafkaError;
use telemetry::backoff::Backoff;
use telemetry::throttle::Throttle;
use tokio::time::Instant;

use super::budget::Budget;
use super::config::{ForwardConfig, Order};
use super::lanes::Lanes;
use super::session::{Renewal, SessionWatch};

/// The backlog may have about this much of deliveries in flight...
const BACKLOG_QUEUE_TIME: Duration = Duration::from_secs(1);
/// ...but never fewer records than this.
const MIN_BACKLOG_IN_FLIGHT: usize = 500;
/// Most commit times remembered for the live lane's age.
const MAX_HEADS: usize = 4096;

/// Deliveries per second, measured over the last second or so.
#[derive(Debug)]
pub struct AckRate {
    pub since: Instant,
    pub count: u64,
    pub per_sec: f64,
}

/// The state of one run, kept apart from the task's inputs.
pub struct Run {
    pub lanes: Lanes,
    pub backoff: Backoff,
    /// No new sends before this instant (backing off after a failure).
    pub resume_at: Option<Instant>,
    /// Look again at this instant (budget refilled, send window open).
    pub wake_at: Option<Instant>,
    /// Replace the producer once nothing is in flight, and why: it hit a
    /// fatal error, every broker went away (a broker that restarted may not
    /// know the old producer session; a fresh one starts clean), or the
    /// session stopped making progress ([`SessionWatch`]).
    pub renew: Option<Renewal>,
    /// What the current producer session has shown since its last
    /// acknowledgement.
    pub session: SessionWatch,
    pub renewal_log: Throttle,
    /// The most recent delivery error since the last rewind.
    pub last_failure: Option<KafkaError>,
    /// The last diagnosis logged, to log again at once when it changes.
    pub last_diagnosis: String,
    pub failure_log: Throttle,
    pub budget: Option<Budget>,
    /// Bytes sent by producers replaced since start.
    pub wire_base: u64,
    pub acks: AckRate,
    /// Average raw size of a record handed over, for reading ahead within
    /// the budget.
    pub record_bytes: f64,
    /// When each committed head was first seen: the age of the live lane's
    /// oldest unsent reading.
    pub heads: VecDeque<(u64, Instant)>,
    /// The live lane's next reading waits for the clock to be set
    /// ([`super::restamp`]): the live lane may not send until the next look.
    pub live_held: bool,
    /// The send windows were closed at the last look (for logging changes).
    pub window_closed: bool,
    /// The loss of the broker connection was logged (once per outage).
    pub told_lost: bool,
}

impl Run {
    pub fn new(forward: &ForwardConfig, head: u64, now: Instant) -> Run {
        Run {
            lanes: Lanes::new(
                forward.max_in_flight,
                head,
                forward.order == Order::LiveFirst,
            ),
            backoff: Backoff::new(Duration::from_millis(250), forward.max_retry_delay),
            resume_at: None,
            wake_at: None,
            renew: None,
            session: SessionWatch::new(forward.renew_after),
            renewal_log: Throttle::new(Duration::from_secs(60)),
            last_failure: None,
            last_diagnosis: String::new(),
            failure_log: Throttle::new(Duration::from_secs(60)),
            budget: (forward.max_bytes_per_sec.bytes() > 0)
                .then(|| Budget::new(forward.max_bytes_per_sec.bytes(), now.into_std())),
            wire_base: 0,
            acks: AckRate {
                since: now,
                count: 0,
                per_sec: 0.0,
            },
            record_bytes: 200.0,
            heads: VecDeque::from([(head, now)]),
            live_held: false,
            window_closed: false,
            told_lost: false,
        }
    }

    /// The oldest committed reading the live lane has not sent: how long
    /// since it was committed.
    pub fn live_lag(&mut self, now: Instant) -> Duration {
        let cursor = self.lanes.live_cursor();
        while self.heads.len() > 1 && self.heads[0].0 <= cursor {
            self.heads.pop_front();
        }
        match self.heads.front() {
            Some(&(seq, at)) if seq > cursor => now.saturating_duration_since(at),
            _ => Duration::ZERO,
        }
    }

    pub fn saw_head(&mut self, seq: u64, now: Instant) {
        if self.heads.back().is_none_or(|&(last, _)| seq > last) {
            self.heads.push_back((seq, now));
            if self.heads.len() > MAX_HEADS {
                self.heads.remove(MAX_HEADS / 2);
            }
        }
    }

    pub fn delivered(&mut self, now: Instant) {
        self.acks.count += 1;
        let elapsed = now.saturating_duration_since(self.acks.since);
        if elapsed >= Duration::from_secs(1) {
            self.acks.per_sec = self.acks.count as f64 / elapsed.as_secs_f64();
            self.acks.count = 0;
            self.acks.since = now;
        }
    }

    /// How many backlog records may be in flight: about a second of what
    /// Kafka has been acknowledging.
    pub fn backlog_in_flight(&self) -> usize {
        ((self.acks.per_sec * BACKLOG_QUEUE_TIME.as_secs_f64()) as usize).max(MIN_BACKLOG_IN_FLIGHT)
    }

    pub fn wake_no_later_than(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}
