//! What one run of the forwarder keeps track of, beside its lanes: backoff,
//! the budget, the delivery rate that sizes the backlog's share of
//! librdkafka's queue, and when each committed head was first seen (the age
//! of the live lane's oldest unsent reading); and [`Run::next`], the pure
//! decision of what the forwarding loop does next.

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
use crate::journal::Progress;

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

/// What the forwarding loop does next ([`Run::next`]); the loop performs
/// it, then asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every delivery of a failure has resolved: go back to the oldest
    /// failed reading of each lane, back off, and say what is wrong.
    Rewind,
    /// Replace the producer: it is to be renewed and nothing is in flight.
    Renew,
    /// Hand committed readings to librdkafka while there is room.
    Fill,
    /// Stopping, and drained (or handed over), or out of time.
    Stop,
    /// Nothing to do before this instant, or an event (a delivery, a
    /// commit, shutdown).
    Wait(Instant),
}

/// The forwarder was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopping {
    /// `forward.shutdown_grace` from when it was told.
    pub deadline: Instant,
    /// A new forwarder takes over: send nothing more, wait only for what is
    /// in flight. Otherwise (shutdown) drain what the samplers left.
    pub handing_over: bool,
}

impl Stopping {
    /// Told now, with `grace` to finish.
    pub fn after(grace: Duration, handing_over: bool) -> Stopping {
        Stopping {
            deadline: Instant::now() + grace,
            handing_over,
        }
    }
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
    /// Something happened since the last fill (a delivery, a commit, a
    /// timer): look for readings to hand over again.
    pub fill_due: bool,
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
            fill_due: true,
        }
    }

    /// What to do next, given what the journal has committed and whether
    /// the forwarder is stopping. Does nothing itself.
    pub fn next(&self, progress: Progress, stopping: Option<Stopping>, now: Instant) -> Step {
        if self.lanes.ready_to_rewind() {
            return Step::Rewind;
        }
        if self.renew.is_some() && self.lanes.in_flight() == 0 {
            return Step::Renew;
        }
        let handing_over = stopping.is_some_and(|s| s.handing_over);
        let backing_off = self.resume_at.is_some_and(|t| now < t);
        if self.fill_due && self.renew.is_none() && !backing_off && !handing_over {
            return Step::Fill;
        }
        if let Some(s) = stopping {
            let drained = if s.handing_over {
                self.lanes.in_flight() == 0
            } else {
                progress.sampling_done && self.lanes.drained(progress.last_seq)
            };
            if drained || now >= s.deadline {
                return Step::Stop;
            }
        }
        // A wake-up already passed is over (the fill it was for happened, or
        // cannot happen now): waiting on it would spin.
        let wake = [
            self.resume_at.filter(|t| *t > now),
            self.wake_at.filter(|t| *t > now),
            stopping.map(|s| s.deadline),
        ];
        Step::Wait(
            wake.into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(3600)),
        )
    }

    /// A fresh producer session took over.
    pub fn renewed(&mut self) {
        self.renew = None;
        self.session.renewed();
    }

    /// A fill starts: the backoff and the wake-up it waited for are over.
    pub fn filling(&mut self) {
        self.fill_due = false;
        self.resume_at = None;
        self.wake_at = None;
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

#[cfg(test)]
mod tests {
    use telemetry::units::ByteSize;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn run(head: u64, now: Instant) -> Run {
        Run::new(&ForwardConfig::default(), head, now)
    }

    fn committed(last_seq: u64) -> Progress {
        Progress {
            last_seq,
            sampling_done: false,
        }
    }

    /// What the loop does after a fill that handed over `seqs`.
    fn filled(r: &mut Run, seqs: std::ops::RangeInclusive<u64>) {
        r.filling();
        for seq in seqs {
            r.lanes.sent(seq);
        }
    }

    #[test]
    fn committed_readings_are_handed_over_then_the_loop_waits_for_news() {
        let now = Instant::now();
        let mut r = run(0, now);
        assert_eq!(r.next(committed(5), None, now), Step::Fill);
        filled(&mut r, 1..=5);
        assert_eq!(
            r.next(committed(5), None, now),
            Step::Wait(now + Duration::from_secs(3600)),
            "nothing to do until a delivery, a commit or a timer"
        );
        r.fill_due = true;
        assert_eq!(r.next(committed(6), None, now), Step::Fill);
    }

    #[test]
    fn an_outage_rewinds_once_everything_in_flight_failed_then_backs_off() {
        let now = Instant::now();
        let mut r = run(0, now);
        filled(&mut r, 1..=3);
        r.lanes.failed(1);
        r.fill_due = true;
        assert_eq!(
            r.next(committed(3), None, now),
            Step::Fill,
            "still in flight: no rewind yet (and lanes send nothing while a failure waits)"
        );
        r.lanes.failed(2);
        r.lanes.failed(3);
        assert_eq!(r.next(committed(3), None, now), Step::Rewind);
        // What the loop's rewind does: lanes back, a backoff.
        r.lanes.rewind();
        r.resume_at = Some(now + 2 * SECOND);
        assert_eq!(
            r.next(committed(3), None, now),
            Step::Wait(now + 2 * SECOND),
            "no sending while backing off, even with news"
        );
        assert_eq!(r.next(committed(3), None, now + 2 * SECOND), Step::Fill);
    }

    #[test]
    fn after_losing_the_brokers_the_producer_is_renewed_once_nothing_is_in_flight() {
        let now = Instant::now();
        let mut r = run(0, now);
        filled(&mut r, 1..=2);
        r.renew = Some(Renewal::BrokerLost);
        r.fill_due = true;
        assert_eq!(
            r.next(committed(4), None, now),
            Step::Wait(now + Duration::from_secs(3600)),
            "nothing new goes to a session that is being replaced"
        );
        r.lanes.delivered(1);
        assert!(matches!(r.next(committed(4), None, now), Step::Wait(_)));
        r.lanes.failed(2);
        assert_eq!(
            r.next(committed(4), None, now),
            Step::Rewind,
            "the failed reading is resent by the fresh session"
        );
        r.lanes.rewind();
        assert_eq!(r.next(committed(4), None, now), Step::Renew);
        r.renew = None;
        assert_eq!(r.next(committed(4), None, now), Step::Fill);
    }

    #[test]
    fn on_shutdown_it_drains_what_the_samplers_left_or_stops_at_the_deadline() {
        let now = Instant::now();
        let stopping = Some(Stopping {
            deadline: now + 5 * SECOND,
            handing_over: false,
        });
        let mut r = run(0, now);
        assert_eq!(r.next(committed(2), stopping, now), Step::Fill);
        filled(&mut r, 1..=2);
        let done = Progress {
            last_seq: 2,
            sampling_done: true,
        };
        assert_eq!(
            r.next(done, stopping, now),
            Step::Wait(now + 5 * SECOND),
            "two readings in flight"
        );
        r.lanes.delivered(1);
        r.lanes.delivered(2);
        assert_eq!(
            r.next(committed(2), stopping, now),
            Step::Wait(now + 5 * SECOND),
            "sampling may still commit"
        );
        assert_eq!(r.next(done, stopping, now), Step::Stop);
        filled(&mut r, 3..=3);
        assert_eq!(
            r.next(committed(3), stopping, now + 5 * SECOND),
            Step::Stop,
            "out of time: the rest stays journaled"
        );
    }

    #[test]
    fn a_handover_sends_nothing_more_and_waits_only_for_what_is_in_flight() {
        let now = Instant::now();
        let stopping = Some(Stopping {
            deadline: now + 5 * SECOND,
            handing_over: true,
        });
        let mut r = run(0, now);
        filled(&mut r, 1..=1);
        r.fill_due = true;
        assert_eq!(
            r.next(committed(9), stopping, now),
            Step::Wait(now + 5 * SECOND)
        );
        r.lanes.delivered(1);
        assert_eq!(
            r.next(committed(9), stopping, now),
            Step::Stop,
            "the next forwarder sends 2 to 9"
        );
    }

    #[test]
    fn a_wake_up_for_the_budget_or_a_held_reading_comes_back_as_a_fill() {
        let now = Instant::now();
        let mut r = Run::new(
            &ForwardConfig {
                max_bytes_per_sec: ByteSize(1_000),
                ..ForwardConfig::default()
            },
            0,
            now,
        );
        assert!(r.budget.is_some());
        r.filling();
        r.wake_no_later_than(now + SECOND);
        assert_eq!(r.next(committed(9), None, now), Step::Wait(now + SECOND));
        r.fill_due = true; // the loop woke
        assert_eq!(r.next(committed(9), None, now + SECOND), Step::Fill);
        r.filling();
        assert_eq!(
            r.next(committed(9), None, now + 2 * SECOND),
            Step::Wait(now + 2 * SECOND + Duration::from_secs(3600)),
            "a wake-up already past is not waited on again"
        );
    }
}
