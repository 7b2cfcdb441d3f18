//! # The journal: the device's source of truth
//!
//! Every reading is written here before anything else happens to it, and it
//! stays here until Kafka has acknowledged it. Links drop for weeks; the
//! journal is what makes that harmless.
//!
//! ## Design constraints
//! - Field gateways lose power without warning and write to SD cards that wear
//!   out: commits are grouped (one fsync per `journal.commit_interval`, by
//!   default 1 s) instead of one per reading, and a small commit is one 4 KiB
//!   block in the hot [`segment`], not a redb transaction (about 24 KiB).
//! - The disk is small and shared: the file never grows past
//!   `journal.max_bytes`, and a full disk is survived, not crashed on.
//! - Memory is bounded: the redb page cache has an explicit size, and readers
//!   take bounded windows ([`JournalReader::read_after`]), never the whole
//!   backlog.
//! - One writer: the [`writer`] task owns the [`Journal`] (the write handle),
//!   so appends, the deletion of acknowledged readings and the full-journal
//!   policy share one commit stream, with no locks. The forwarder, the
//!   status reports and `journal export` read through cloned
//!   [`JournalReader`]s, which never wait for a commit.
//!
//! ## Invariants
//! 1. Sequence numbers are contiguous `u64` values starting at 1 and are never
//!    reused: the next number is stored in the same transaction as the
//!    readings it numbers, so it survives the journal emptying (by
//!    acknowledgements or by the policy, whose aggregates are numbered
//!    before it removes anything), and numbers
//!    are reserved in a file next to the journal before they are used
//!    ([`reservation`]), so they survive the journal being damaged or
//!    deleted (new readings then start after a gap).
//! 2. A commit that has returned is durable (the segment's `fdatasync`, or
//!    redb's `Durability::Immediate`). On power loss only readings not yet committed are lost.
//!    Shown by cutting the power at thousands of random points of a random
//!    workload, with writes that were not synced kept, dropped or torn
//!    (`tests/power_cuts.rs`, on [`crate::disk::power_cut`]).
//! 3. A reading is deleted only after Kafka has acknowledged it, or by the
//!    full-journal policy, which counts every reading it drops or aggregates
//!    in the same transaction that removes it.
//! 4. Appends and deletes of one group commit are one segment commit (one
//!    checksum) or one redb transaction: either both happened or neither
//!    did. Only when a redb transaction could not grow the file (scattered
//!    deletes rewrite many pages) are the acknowledged readings deleted
//!    first, in small transactions, and the appends committed after them;
//!    never the other way round.
//! 5. The file is never larger than `journal.max_bytes` ([`file`](mod@file) refuses the
//!    growth), and it is kept below its [`capacity`] by a headroom, so there
//!    is always room to free space. A commit refused for want of space
//!    anyway makes the next one free room first, whatever the estimate says.
//! 6. A journal that fails its integrity check on open is renamed aside
//!    (`<name>.corrupt-<UTC time>`), never deleted; whatever frames in it are
//!    intact are copied into a fresh journal with their sequence numbers
//!    ([`salvage`]). The fresh journal is built beside it and takes its
//!    place only when complete, so a salvage cut short starts again.
//!
//! ## When the journal is full (`journal.when_full`)
//! - `drop_oldest` (default): the oldest readings are deleted.
//! - `reject_new`: new readings are refused until Kafka takes some.
//! - `downsample`: the oldest raw readings are replaced by per-series
//!   aggregates ([`downsample`]); when nothing raw is left, the oldest are
//!   dropped.
//!
//! ## On-disk format
//! The hot segment, `<journal>.segment`: see [`segment`]. redb:
//! | table | key | value |
//! |---|---|---|
//! | `readings` | sequence number `u64` | a reading frame ([`record`]): seq, boot index, Kafka key, line protocol, CRC |
//! | `boots` | boot index `u32` | a boot frame: the boot id (`/proc/sys/kernel/random/boot_id`) |
//! | `meta` | name | a meta frame: `next_seq`, `stored_bytes`, the [`Counters`] and `segment_generation` |
//!
//! ## Layout
//! From the bottom up; a module uses only those above it in this list (and
//! the types of this file).
//! - [`config`], [`record`], [`file`](mod@file), [`capacity`], [`downsample`],
//!   [`reservation`], [`segment`], `tables`: the options, the frame format,
//!   the size-limited file, the space arithmetic, aggregation, sequence
//!   numbers reserved outside the file, the segment file, and the redb
//!   tables with the operations transactions share.
//! - `db`: the redb file opened with redb's integrity check and ours, and
//!   the boot registered.
//! - `handle`: [`Journal`] (write) and [`JournalReader`] (read), and their
//!   access to redb (reopened after a refused growth).
//! - [`policy`]: making room when full; [`commit`]: the commit protocol,
//!   segment or redb; [`salvage`]: recovery from a damaged file.
//! - `open`: opening all of it, with quarantine and salvage, and the segment
//!   replayed.
//! - `read`: reading back, merged from redb and the segment, and stats;
//!   [`inspect`]: `edge-agent journal stats` and `export`.
//! - [`writer`]: the group-commit task.

pub mod capacity;
pub mod commit;
pub mod commit_report;
pub mod config;
mod db;
pub mod downsample;
pub mod file;
mod handle;
pub mod inspect;
mod open;
pub mod policy;
mod read;
pub mod record;
pub mod reservation;
pub mod salvage;
pub mod segment;
mod tables;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use telemetry::{InvalidReading, Reading, line_protocol};

pub use capacity::WhenFull;
pub use config::JournalOptions;
pub use config::WriterSettings;
pub use handle::{Journal, JournalReader};
pub use open::Opened;
pub use writer::{JournalWriter, Progress, WriterHandles};

/// What can go wrong with the journal. Every variant says which file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the journal directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the journal {path}: {source}")]
    Open { path: PathBuf, source: redb::Error },
    #[error(
        "the journal {path} is in use by another process (a running edge-agent?); stop it first"
    )]
    InUse { path: PathBuf },
    #[error("journal {path}: {source}")]
    Storage { path: PathBuf, source: redb::Error },
    #[error(
        "journal {path} is full and no space could be freed ({reason}); the readings are kept in memory and retried"
    )]
    Full { path: PathBuf, reason: String },
    #[error("journal segment {path}: {source}")]
    Segment {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot quarantine the damaged journal {path}: {source}")]
    Quarantine {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl JournalError {
    /// Whether the failure was a lack of space (the limit or a full disk).
    pub fn is_no_space(&self) -> bool {
        match self {
            JournalError::Full { .. } => true,
            JournalError::Storage { source, .. } => tables::is_no_space(source),
            _ => false,
        }
    }
}

/// One journaled reading, ready to forward.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRecord {
    pub seq: u64,
    /// The boot the reading was taken in.
    pub boot_id: Arc<str>,
    /// The Kafka key: the device id.
    pub key: String,
    /// The reading as line protocol.
    pub line: String,
    /// When it was taken, besides its timestamp (`None` for aggregates and
    /// readings journaled by older versions).
    pub taken: Option<record::Taken>,
}

/// A reading as the sampler hands it to the journal: with the time since
/// boot and whether the clock was believed when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub reading: Reading,
    pub taken: Option<record::Taken>,
}

impl From<Reading> for Sampled {
    fn from(reading: Reading) -> Self {
        Sampled {
            reading,
            taken: None,
        }
    }
}

/// What [`Journal::commit`] takes: a reading, and maybe when it was taken.
pub trait Journaled {
    fn reading(&self) -> &Reading;
    fn taken(&self) -> Option<record::Taken>;
}

impl Journaled for Reading {
    fn reading(&self) -> &Reading {
        self
    }
    fn taken(&self) -> Option<record::Taken> {
        None
    }
}

impl Journaled for Sampled {
    fn reading(&self) -> &Reading {
        &self.reading
    }
    fn taken(&self) -> Option<record::Taken> {
        self.taken
    }
}

/// A reading encoded for the journal and not yet numbered: its Kafka key
/// (the device id), its line protocol, and when it was taken. The writer
/// encodes each reading as it arrives, while the previous commit is being
/// written, so that a commit only numbers, frames and stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub key: String,
    pub line: String,
    pub taken: Option<record::Taken>,
}

impl Encoded {
    /// Validates and encodes `r`; a reading that is not valid line protocol
    /// is refused with the reason.
    pub fn new(r: &impl Journaled) -> Result<Encoded, InvalidReading> {
        let reading = r.reading();
        Ok(Encoded {
            line: line_protocol::encode(reading)?,
            key: reading.tag("device_id").unwrap_or_default().to_owned(),
            taken: r.taken(),
        })
    }
}

impl JournalRecord {
    /// The reading itself.
    pub fn reading(&self) -> Result<Reading, telemetry::line_protocol::LineProtocolError> {
        line_protocol::parse_line(&self.line, 0)
    }
}

/// Readings removed or refused by the full-journal policy, and damaged
/// journals recovered from. Persisted in the journal, so they count since the
/// journal was created, across restarts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Readings deleted unsent to make room (`drop_oldest`, or `downsample`
    /// with nothing raw left).
    pub dropped_oldest: u64,
    /// Readings refused because the journal was full (`reject_new`).
    pub rejected_new: u64,
    /// Raw readings replaced by aggregates (`downsample`).
    pub aggregated: u64,
    /// Aggregate readings written in their place.
    pub aggregates: u64,
    /// Damaged journal files moved aside.
    pub quarantined: u64,
    /// Readings recovered from damaged journal files.
    pub salvaged: u64,
}

impl Counters {
    /// The meta table keys, in a fixed order.
    pub(crate) const KEYS: [&'static str; 6] = [
        "dropped_oldest",
        "rejected_new",
        "aggregated",
        "aggregates",
        "quarantined",
        "salvaged",
    ];

    pub(crate) fn values(&self) -> [u64; 6] {
        [
            self.dropped_oldest,
            self.rejected_new,
            self.aggregated,
            self.aggregates,
            self.quarantined,
            self.salvaged,
        ]
    }

    pub(crate) fn from_values(v: [u64; 6]) -> Counters {
        Counters {
            dropped_oldest: v[0],
            rejected_new: v[1],
            aggregated: v[2],
            aggregates: v[3],
            quarantined: v[4],
            salvaged: v[5],
        }
    }

    pub(crate) fn add(&mut self, other: &Counters) {
        let (a, b) = (self.values(), other.values());
        *self = Counters::from_values(std::array::from_fn(|i| a[i] + b[i]));
    }
}

/// What a commit did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Committed {
    /// Sequence numbers given to the appended readings (empty if none).
    pub seqs: std::ops::Range<u64>,
    /// Readings that could not be encoded and were not written.
    pub rejected: Vec<InvalidReading>,
    /// Acknowledged readings removed.
    pub deleted: u64,
    /// What the full-journal policy did in this commit and the ones it ran
    /// right after it.
    pub policy: Counters,
}

/// A summary of what the journal holds.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalStats {
    pub records: u64,
    pub first_seq: Option<u64>,
    /// When the oldest reading held was sampled (ns since the epoch).
    pub oldest_timestamp_ns: Option<i64>,
    pub last_seq: Option<u64>,
    /// The number the next appended reading will get.
    pub next_seq: u64,
    /// The file's real size.
    pub file_bytes: u64,
    /// `journal.max_bytes`.
    pub max_bytes: u64,
    pub counters: Counters,
}

/// A record that failed to decode; reported and skipped rather than allowed
/// to stall the forwarder.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub seq: u64,
    pub reason: String,
}

/// One entry of [`JournalReader::read_after`].
pub type ReadResult = Result<JournalRecord, Unreadable>;

/// The id of the running boot, from the kernel.
pub fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
