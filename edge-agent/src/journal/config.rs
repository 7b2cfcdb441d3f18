//! `[journal]`: the journal's section of the agent's config, its defaults
//! and its checks; and what opening the journal ([`JournalOptions`]) and the
//! writer ([`WriterSettings`]) take of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::Problem;
use telemetry::units::ByteSize;

use super::capacity::WhenFull;

/// `[journal]`: the durable store on the device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// The redb file. Default: `$STATE_DIRECTORY/journal.redb`, else
    /// `./buoy-data/journal.redb`.
    pub path: PathBuf,
    /// Readings are committed (fsync'd) at least this often; at most this
    /// window of readings is lost on power loss. `0s` commits every reading.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Memory redb may use for its page cache. The journal is written and
    /// read sequentially, so a small cache costs little.
    pub cache_size: ByteSize,
    /// Most readings written in one commit.
    pub max_batch: usize,
    /// The journal file never grows past this. The file grows by doubling,
    /// so it fills at least half of it; `edge-agent journal stats` shows the
    /// real size.
    pub max_bytes: ByteSize,
    /// What happens when the journal is full (the limit, or a full disk):
    /// `drop_oldest` deletes the oldest readings, `reject_new` refuses new
    /// ones until Kafka takes some, `downsample` replaces the oldest raw
    /// readings by per-series aggregates (`<measurement>_agg` with
    /// `<field>_min`, `_max`, `_mean` and `count`) and drops only when nothing
    /// raw is left. Every reading dropped, refused or aggregated is counted.
    pub when_full: WhenFull,
    /// The window `downsample` aggregates over.
    #[serde(with = "humantime_serde")]
    pub downsample_window: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: default_state_dir().join("journal.redb"),
            commit_interval: Duration::from_secs(1),
            cache_size: ByteSize::mib(4),
            max_batch: 10_000,
            max_bytes: ByteSize::mib(256),
            when_full: WhenFull::DropOldest,
            downsample_window: Duration::from_secs(300),
        }
    }
}

impl JournalConfig {
    /// How the journal is opened and bounded.
    pub fn options(&self) -> JournalOptions {
        JournalOptions {
            cache_bytes: usize::try_from(self.cache_size.bytes()).unwrap_or(usize::MAX),
            max_bytes: self.max_bytes.bytes(),
            when_full: self.when_full,
            downsample_window: self.downsample_window,
        }
    }

    /// What the running writer is told: how it commits and the policy.
    pub fn writer_settings(&self) -> WriterSettings {
        WriterSettings {
            commit_interval: self.commit_interval,
            max_batch: self.max_batch,
            max_bytes: self.max_bytes.bytes(),
            when_full: self.when_full,
            downsample_window: self.downsample_window,
        }
    }
}

/// How often and in what batches the writer commits, and how full the
/// journal may get (`[journal]`). All of it can change while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterSettings {
    pub commit_interval: Duration,
    pub max_batch: usize,
    /// `journal.max_bytes`.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    pub downsample_window: Duration,
}

impl WriterSettings {
    /// `commit_interval = 0s` commits every reading on its own.
    pub(super) fn effective_max_batch(&self) -> usize {
        if self.commit_interval.is_zero() {
            1
        } else {
            self.max_batch.max(1)
        }
    }
}

impl JournalConfig {
    /// The directory of the journal, which holds the agent's other state
    /// files too (the reservation, `remote-config.json`, the status socket).
    pub fn state_dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// Everything wrong with `[journal]`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.commit_interval > Duration::from_secs(3600) {
            p.push(Problem::new(
                "journal.commit_interval",
                "must be at most 1h: readings not yet committed are lost on power loss",
            ));
        }
        if self.cache_size < ByteSize::kib(256) {
            p.push(Problem::new(
                "journal.cache_size",
                "must be at least 256KiB",
            ));
        }
        if self.max_batch == 0 {
            p.push(Problem::new("journal.max_batch", "must be at least 1"));
        }
        if self.max_bytes < ByteSize::mib(4) {
            p.push(Problem::new(
                "journal.max_bytes",
                "must be at least 4MiB (an empty journal file takes about 1MiB)",
            ));
        }
        if self.downsample_window < Duration::from_secs(1)
            || self.downsample_window > Duration::from_secs(86_400)
        {
            p.push(Problem::new(
                "journal.downsample_window",
                "must be between 1s and 24h",
            ));
        }
        p
    }
}

/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else `./buoy-data`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .unwrap_or_else(|| PathBuf::from("buoy-data"))
}

/// How the journal is opened and bounded (from `[journal]`).
#[derive(Debug, Clone, PartialEq)]
pub struct JournalOptions {
    /// redb's page cache.
    pub cache_bytes: usize,
    /// The most the file may grow to.
    pub max_bytes: u64,
    pub when_full: WhenFull,
    /// The aggregation window of `downsample`.
    pub downsample_window: Duration,
}

impl JournalOptions {
    /// Small and unbounded enough for tests and tools that only read.
    pub fn for_inspection() -> JournalOptions {
        JournalOptions {
            cache_bytes: 1 << 20,
            max_bytes: u64::MAX,
            when_full: WhenFull::DropOldest,
            downsample_window: Duration::from_secs(300),
        }
    }
}
