//! # The status line and the rate gauge
//!
//! Every `status.log_interval` the uplink logs one line of counters
//! (records, lines written, batches, dead letters, retries), and at least
//! every 5 s it sets `uplink_lines_per_second`. [`Reporter`] decides when;
//! the loop calls it when [`Reporter::next_at`] comes.

use std::time::Duration;

use tokio::time::Instant;

use crate::dead_letter::DeadLetterReason;
use crate::metrics::{self, Metrics};

/// Counters since start, for the status line and the caller.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    pub records: u64,
    pub lines_written: u64,
    pub batches: u64,
}

/// When to update the rate gauge and log the status line.
#[derive(Debug)]
pub struct Reporter {
    every: Duration,
    next_at: Instant,
    last_at: Instant,
    last_lines: u64,
    /// Zero: no status line.
    status_interval: Duration,
    status_at: Instant,
}

impl Reporter {
    /// The gauge's longest period.
    pub const PERIOD: Duration = Duration::from_secs(5);

    pub fn new(now: Instant, status_interval: Duration) -> Self {
        let every = if status_interval.is_zero() {
            Self::PERIOD
        } else {
            status_interval.min(Self::PERIOD)
        };
        Reporter {
            every,
            next_at: now + every,
            last_at: now,
            last_lines: 0,
            status_interval,
            status_at: now + status_interval,
        }
    }

    /// When [`Reporter::tick`] is next due.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Sets the rate gauge from the lines written so far; says whether the
    /// status line is due.
    pub fn tick(&mut self, now: Instant, metrics: &Metrics, lines: u64) -> bool {
        let seconds = (now - self.last_at).as_secs_f64().max(1e-3);
        metrics
            .lines_per_second
            .set((lines - self.last_lines) as f64 / seconds);
        self.last_at = now;
        self.last_lines = lines;
        self.next_at = now + self.every;
        let due = !self.status_interval.is_zero() && now >= self.status_at;
        if due {
            self.status_at = now + self.status_interval;
        }
        due
    }
}

/// Logs the status line.
pub fn log(c: &Counters, m: &Metrics, sinks: impl Iterator<Item = impl AsRef<str>>) {
    let dead_lettered: u64 = DeadLetterReason::ALL
        .into_iter()
        .map(|r| m.dead_lettered.get_or_create(&metrics::reason(r)).get())
        .sum();
    let write_retries: u64 = sinks
        .map(|name| {
            m.write_retries
                .get_or_create(&metrics::sink(name.as_ref()))
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
    fn the_gauge_ticks_every_five_seconds_and_the_status_line_at_its_interval() {
        let t0 = Instant::now();
        let m = Metrics::default();
        let mut r = Reporter::new(t0, Duration::from_secs(12));
        assert_eq!(r.next_at(), t0 + Duration::from_secs(5));
        assert!(!r.tick(t0 + Duration::from_secs(5), &m, 500));
        assert_eq!(m.lines_per_second.get(), 100.0);
        assert!(!r.tick(t0 + Duration::from_secs(10), &m, 500));
        assert!(r.tick(t0 + Duration::from_secs(15), &m, 600), "12 s passed");
        assert_eq!(r.next_at(), t0 + Duration::from_secs(20));
        let mut quiet = Reporter::new(t0, Duration::ZERO);
        assert!(!quiet.tick(t0 + Duration::from_secs(3600), &m, 0));
    }
}
