//! The reported state: published retained on `buoy/<device_id>/state`,
//! answered on the local status socket (`edge-agent status`) and exported as
//! metrics.
//!
//! ```json
//! {"device_id":"pi-0001","labels":{"site":"north-sea"},"agent_version":"0.1.0","uptime_s":3600,
//!  "config":{"applied_version":4,"layers":{"fleet":{"applied_version":2},…},
//!            "last":{"layer":"device","version":5,"result":"rejected","reason":"…"},"accepted":1,"rejected":1},
//!  "link":{"state":"up"},
//!  "journal":{"records":12,"file_bytes":1589248,"max_bytes":268435456,"oldest_unsent_age_s":1.2},
//!  "dropped":{"queue_full":0,"unencodable":0,"dropped_oldest":0,"rejected_new":0,"aggregated":0},
//!  "sensors":[{"name":"env","kind":"bme280","state":"ok","readings":3600,"errors":0,…}],
//!  "clock":{"synced":true},
//!  "sampled":3600,"journaled":3600,"commits":3600,"forwarded":3588,"time_ns":1700000000000000000}
//! ```

use std::sync::Arc;
use std::time::Instant;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::layers::Labels;
use super::report::ConfigReport;
use crate::clock::Clock;
use crate::journal::{JournalReader, JournalStats};
use crate::stats::{Snapshot, Stats};
use hardware::{HealthState, SensorHealth};

/// Share of `journal.max_bytes` above which the journal counts as full.
const FULL_SHARE: f64 = 0.95;

/// What the reported state is made from.
#[derive(Clone)]
pub struct StateSource {
    pub device_id: String,
    pub labels: Labels,
    pub report: watch::Receiver<ConfigReport>,
    pub stats: Arc<Stats>,
    pub journal: JournalReader,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
}

impl StateSource {
    pub fn state(&self) -> ReportedState {
        let now = self.clock.stamp();
        let mut state = ReportedState::new(
            &self.device_id,
            self.started.elapsed().as_secs(),
            self.report.borrow().clone(),
            self.stats.snapshot(),
            self.journal.stats().ok(),
            now.wall_ns,
        );
        state.clock.synced = now.synced;
        state.labels = self.labels.clone();
        state
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedState {
    pub device_id: String,
    /// The device's `labels` (local config).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    pub agent_version: Cow<'static, str>,
    pub uptime_s: u64,
    pub config: ConfigReport,
    pub link: LinkReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalReport>,
    pub dropped: DroppedReport,
    pub sensors: Vec<SensorHealth>,
    pub sampled: u64,
    pub journaled: u64,
    /// Journal commits since start (each one an fsync).
    #[serde(default)]
    pub commits: u64,
    pub forwarded: u64,
    pub clock: ClockReport,
    /// When this state was made (ns since the epoch).
    pub time_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockReport {
    /// Whether the wall clock is believed (see `crate::clock`); while it is
    /// not, new readings wait in the journal for it to be set.
    pub synced: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// `unknown` (nothing sent yet), `up` or `down`.
    pub state: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Fresh Kafka producer sessions started since start, in place of one
    /// that lost its brokers, hit a fatal error or stopped making progress.
    pub producer_renewals: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalReport {
    /// Readings not yet acknowledged by Kafka.
    pub records: u64,
    pub file_bytes: u64,
    pub max_bytes: u64,
    /// How old the oldest unsent reading is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_unsent_age_s: Option<f64>,
    /// Times this journal was found damaged and moved aside, and the
    /// readings salvaged from the damaged files: totals kept in the journal
    /// across restarts.
    #[serde(default)]
    pub quarantined: u64,
    #[serde(default)]
    pub salvaged: u64,
}

/// Readings lost or reduced since start, by cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedReport {
    /// The journal writer's queue was full.
    pub queue_full: u64,
    /// The reading could not be encoded.
    pub unencodable: u64,
    /// The journal was full: oldest deleted, new refused, raw aggregated.
    pub dropped_oldest: u64,
    pub rejected_new: u64,
    pub aggregated: u64,
    /// Journaled readings that could not be read back or made into a Kafka
    /// record, and were skipped.
    #[serde(default)]
    pub unreadable: u64,
}

impl ReportedState {
    pub fn new(
        device_id: &str,
        uptime_s: u64,
        config: ConfigReport,
        stats: Snapshot,
        journal: Option<JournalStats>,
        now_ns: i64,
    ) -> ReportedState {
        ReportedState {
            device_id: device_id.to_owned(),
            labels: Labels::new(),
            agent_version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
            uptime_s,
            config,
            link: LinkReport {
                state: Cow::Borrowed(stats.link.as_str()),
                last_error: stats.last_error,
                producer_renewals: stats.producer_renewals,
            },
            journal: journal.map(|j| JournalReport {
                records: j.records,
                file_bytes: j.file_bytes,
                max_bytes: j.max_bytes,
                oldest_unsent_age_s: j
                    .oldest_timestamp_ns
                    .map(|t| (now_ns.saturating_sub(t)).max(0) as f64 / 1e9),
                quarantined: j.counters.quarantined,
                salvaged: j.counters.salvaged,
            }),
            dropped: DroppedReport {
                queue_full: stats.dropped_queue_full,
                unencodable: stats.rejected,
                dropped_oldest: stats.journal_policy.dropped_oldest,
                rejected_new: stats.journal_policy.rejected_new,
                aggregated: stats.journal_policy.aggregated,
                unreadable: stats.unreadable,
            },
            sensors: stats.sensors,
            sampled: stats.sampled,
            journaled: stats.journaled,
            commits: stats.commits,
            forwarded: stats.forwarded,
            clock: ClockReport { synced: true },
            time_ns: now_ns,
        }
    }

    /// What an operator should look at, one line each; none when healthy.
    /// `edge-agent status` exits non-zero when there is any.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.link.state == "down" {
            p.push(format!(
                "Kafka link down: {}",
                self.link.last_error.as_deref().unwrap_or("no reason given")
            ));
        }
        for s in self
            .sensors
            .iter()
            .filter(|s| s.state == HealthState::Failing)
        {
            p.push(format!(
                "sensor {} failing: {}",
                s.name,
                s.last_error.as_deref().unwrap_or("no reason given")
            ));
        }
        match &self.journal {
            None => p.push("the journal cannot be read".into()),
            Some(j) if j.file_bytes as f64 >= j.max_bytes as f64 * FULL_SHARE => p.push(format!(
                "journal full ({} of {} bytes): the full-journal policy is dropping or aggregating readings",
                j.file_bytes, j.max_bytes
            )),
            Some(_) => {}
        }
        p
    }

    /// What makes a state worth publishing at once: the config decision,
    /// the link state, and which sensors are failing. Counters and ages
    /// change all the time; they go out with the periodic state.
    pub fn news(
        &self,
    ) -> (
        ConfigReport,
        Cow<'static, str>,
        Vec<(String, hardware::HealthState)>,
    ) {
        (
            self.config.clone(),
            self.link.state.clone(),
            self.sensors
                .iter()
                .map(|s| (s.name.clone(), s.state))
                .collect(),
        )
    }
}
