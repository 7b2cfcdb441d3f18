//! The agent's running statistics ([`Stats`]): counters every stage
//! updates, the link state and the sensors' health, from which the reported
//! state is made (`remote_config::state`), and a periodic status line in the
//! log.
//!
//! The status line is what an operator (or `scripts/demo`) reads to see the
//! agent working:
//!
//! ```text
//! INFO status sampled=1200 journaled=1200 backlog=12 forwarded=1188 link="up" ...
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hardware::{HealthState, SensorHealth};
use tokio_util::sync::CancellationToken;

use crate::journal::{Counters, JournalStats};

/// Whether Kafka is taking readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Nothing sent yet.
    Unknown,
    Up,
    Down,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Unknown => "unknown",
            Link::Up => "up",
            Link::Down => "down",
        }
    }
}

#[derive(Debug)]
struct LinkState {
    link: Link,
    last_error: Option<String>,
}

/// Counters since start, shared by every stage.
#[derive(Debug)]
pub struct Stats {
    sampled: AtomicU64,
    sensor_errors: AtomicU64,
    /// Readings dropped because the journal writer's queue was full.
    dropped_queue_full: AtomicU64,
    /// Readings that could not be encoded (NaN from a driver, say).
    rejected: AtomicU64,
    journaled: AtomicU64,
    /// Journal commits (each one an fsync).
    commits: AtomicU64,
    forwarded: AtomicU64,
    deleted: AtomicU64,
    delivery_errors: AtomicU64,
    /// Fresh Kafka producer sessions started in place of one that lost its
    /// brokers, hit a fatal error or stopped making progress.
    producer_renewals: AtomicU64,
    /// Bytes the producer put on the wire (known when a budget is set).
    wire_bytes: AtomicU64,
    /// Journal records that could not be decoded and were skipped.
    unreadable: AtomicU64,
    /// What the full-journal policy did since start.
    journal_policy: Mutex<Counters>,
    link: Mutex<LinkState>,
    /// Each sensor's health, by sensor name.
    sensors: Mutex<BTreeMap<String, SensorHealth>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sampled: AtomicU64::new(0),
            sensor_errors: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            journaled: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            delivery_errors: AtomicU64::new(0),
            producer_renewals: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            journal_policy: Mutex::new(Counters::default()),
            link: Mutex::new(LinkState {
                link: Link::Unknown,
                last_error: None,
            }),
            sensors: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub sampled: u64,
    pub sensor_errors: u64,
    pub dropped_queue_full: u64,
    pub rejected: u64,
    pub journaled: u64,
    pub commits: u64,
    pub forwarded: u64,
    pub deleted: u64,
    pub delivery_errors: u64,
    pub producer_renewals: u64,
    pub wire_bytes: u64,
    pub unreadable: u64,
    /// What the full-journal policy did since start (the journal's own
    /// counters, in [`JournalStats`], count since it was created).
    pub journal_policy: Counters,
    pub link: Link,
    pub last_error: Option<String>,
    /// Each sensor's health, ordered by name.
    pub sensors: Vec<SensorHealth>,
}

impl Stats {
    pub fn sampled(&self, n: u64) {
        self.sampled.fetch_add(n, Relaxed);
    }
    pub fn sensor_error(&self) {
        self.sensor_errors.fetch_add(1, Relaxed);
    }
    pub fn dropped_queue_full(&self) {
        self.dropped_queue_full.fetch_add(1, Relaxed);
    }
    pub fn rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Relaxed);
    }
    /// One journal commit appended and deleted these many readings.
    pub fn journaled(&self, appended: u64, deleted: u64) {
        self.commits.fetch_add(1, Relaxed);
        self.journaled.fetch_add(appended, Relaxed);
        self.deleted.fetch_add(deleted, Relaxed);
    }
    pub fn forwarded(&self, n: u64) {
        self.forwarded.fetch_add(n, Relaxed);
    }
    /// A fresh Kafka producer session replaced the previous one.
    pub fn producer_renewed(&self) {
        self.producer_renewals.fetch_add(1, Relaxed);
    }
    /// Bytes on the wire since start, as librdkafka counts them.
    pub fn wire_bytes(&self, total: u64) {
        self.wire_bytes.store(total, Relaxed);
    }
    pub fn unreadable(&self, n: u64) {
        self.unreadable.fetch_add(n, Relaxed);
    }
    /// Records a sensor's health after a read.
    pub fn sensor_health(&self, health: &SensorHealth) {
        let mut sensors = self.sensors.lock().expect("stats lock");
        match sensors.get_mut(&health.name) {
            Some(h) => h.clone_from(health),
            None => {
                sensors.insert(health.name.clone(), health.clone());
            }
        }
    }

    /// Forgets the health of sensors no longer configured.
    pub fn retain_sensors(&self, names: &[&str]) {
        let mut sensors = self.sensors.lock().expect("stats lock");
        sensors.retain(|name, _| names.contains(&name.as_str()));
    }

    pub fn journal_policy(&self, done: &Counters) {
        self.journal_policy.lock().expect("stats lock").add(done);
    }

    /// Records a successful delivery; returns the previous link state.
    pub fn link_up(&self) -> Link {
        let mut s = self.link.lock().expect("stats lock");
        std::mem::replace(&mut s.link, Link::Up)
    }

    /// Records a failure; returns the previous link state.
    pub fn link_down(&self, error: impl Into<String>) -> Link {
        self.delivery_errors.fetch_add(1, Relaxed);
        let mut s = self.link.lock().expect("stats lock");
        s.last_error = Some(error.into());
        std::mem::replace(&mut s.link, Link::Down)
    }

    /// Records a client-level error (broker unreachable) that is not tied to
    /// one record.
    pub fn link_error(&self, error: impl Into<String>) -> Link {
        let mut s = self.link.lock().expect("stats lock");
        s.last_error = Some(error.into());
        std::mem::replace(&mut s.link, Link::Down)
    }

    pub fn snapshot(&self) -> Snapshot {
        let link = self.link.lock().expect("stats lock");
        Snapshot {
            sampled: self.sampled.load(Relaxed),
            sensor_errors: self.sensor_errors.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            journaled: self.journaled.load(Relaxed),
            commits: self.commits.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            delivery_errors: self.delivery_errors.load(Relaxed),
            producer_renewals: self.producer_renewals.load(Relaxed),
            wire_bytes: self.wire_bytes.load(Relaxed),
            unreadable: self.unreadable.load(Relaxed),
            journal_policy: *self.journal_policy.lock().expect("stats lock"),
            link: link.link,
            last_error: link.last_error.clone(),
            sensors: self
                .sensors
                .lock()
                .expect("stats lock")
                .values()
                .cloned()
                .collect(),
        }
    }
}

/// Logs one status line. The journal's counters (dropped, refused,
/// aggregated, quarantined, salvaged) are its persisted totals.
pub fn log_status(s: &Snapshot, journal: Option<&JournalStats>) {
    log_status_with_rate(s, journal, None);
}

/// How long ago the oldest reading still in the journal was sampled: how far
/// behind Kafka is.
pub fn oldest_unsent_age(journal: &JournalStats, now_ns: i64) -> Option<Duration> {
    let oldest = journal.oldest_timestamp_ns?;
    Some(Duration::from_nanos(
        now_ns.saturating_sub(oldest).max(0) as u64
    ))
}

fn log_status_with_rate(s: &Snapshot, journal: Option<&JournalStats>, send_rate: Option<f64>) {
    let counters = journal.map(|j| j.counters).unwrap_or_default();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let oldest_unsent_age_s = journal
        .and_then(|j| oldest_unsent_age(j, now_ns))
        .map_or(0.0, |d| (d.as_secs_f64() * 10.0).round() / 10.0);
    tracing::info!(
        sampled = s.sampled,
        journaled = s.journaled,
        commits = s.commits,
        backlog = journal.map_or(-1, |j| j.records as i64),
        journal_bytes = journal.map_or(0, |j| j.file_bytes),
        journal_max_bytes = journal.map_or(0, |j| j.max_bytes),
        dropped_oldest = counters.dropped_oldest,
        rejected_new = counters.rejected_new,
        aggregated = counters.aggregated,
        aggregates = counters.aggregates,
        quarantined = counters.quarantined,
        salvaged = counters.salvaged,
        oldest_unsent_age_s,
        forwarded = s.forwarded,
        send_rate = send_rate.map_or(0.0, |r| r.round()),
        wire_bytes = s.wire_bytes,
        link = s.link.as_str(),
        sensor_errors = s.sensor_errors,
        dropped_queue_full = s.dropped_queue_full,
        rejected = s.rejected,
        unreadable = s.unreadable,
        delivery_errors = s.delivery_errors,
        producer_renewals = s.producer_renewals,
        last_error = s.last_error.as_deref().unwrap_or(""),
        sensors_failing = failing_sensors(&s.sensors).as_str(),
        "status"
    );
}

/// `name: last error` of each failing sensor, for the status line.
fn failing_sensors(sensors: &[SensorHealth]) -> String {
    let failing: Vec<String> = sensors
        .iter()
        .filter(|h| h.state == HealthState::Failing)
        .map(|h| format!("{}: {}", h.name, h.last_error.as_deref().unwrap_or("?")))
        .collect();
    failing.join("; ")
}

/// Logs a status line every `interval` until shutdown. `journal` reports
/// what the journal holds.
pub async fn report_periodically(
    stats: std::sync::Arc<Stats>,
    interval: Duration,
    journal: impl Fn() -> Option<JournalStats>,
    shutdown: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = (tokio::time::Instant::now(), stats.snapshot().forwarded);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let snapshot = stats.snapshot();
                let now = tokio::time::Instant::now();
                let elapsed = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let rate = (snapshot.forwarded - last.1) as f64 / elapsed;
                last = (now, snapshot.forwarded);
                log_status_with_rate(&snapshot, journal().as_ref(), Some(rate));
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_transitions_are_reported() {
        let s = Stats::default();
        assert_eq!(s.link_down("broker gone"), Link::Unknown);
        assert_eq!(s.link_down("still gone"), Link::Down);
        assert_eq!(s.link_up(), Link::Down);
        let snap = s.snapshot();
        assert_eq!(snap.link, Link::Up);
        assert_eq!(snap.delivery_errors, 2);
        assert_eq!(snap.last_error.as_deref(), Some("still gone"));
    }
}
