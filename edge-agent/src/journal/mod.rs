//! # The journal: the device's source of truth
//!
//! Every reading is written here before anything else happens to it, and it
//! stays here until Kafka has acknowledged it. Links drop for weeks; the
//! journal is what makes that harmless.
//!
//! ## Design constraints
//! - Field gateways lose power without warning and write to SD cards that wear
//!   out: commits are grouped (one fsync per `journal.commit_interval`, by
//!   default 1 s) instead of one per reading.
//! - Memory is bounded: the redb page cache has an explicit size, and readers
//!   take bounded windows ([`Journal::read_after`]), never the whole backlog.
//! - One writer: the [`writer`] task owns every write transaction, so appends
//!   and the deletion of acknowledged readings share one commit.
//!
//! ## Invariants
//! 1. Sequence numbers are contiguous `u64` values starting at 1 and are never
//!    reused: the next number is stored in the same transaction as the
//!    readings it numbers, so it survives the journal emptying.
//! 2. A commit that has returned is durable (`Durability::Immediate`, which
//!    fsyncs). On power loss only readings not yet committed are lost.
//! 3. A reading is deleted only after Kafka has acknowledged it: deletes come
//!    from the forwarder's delivery reports, never from anywhere else.
//! 4. Appends and deletes of one group commit are one transaction: either
//!    both happened or neither did.
//!
//! ## On-disk format (redb)
//! | table | key | value |
//! |---|---|---|
//! | `readings` | sequence number `u64` | [`record`]: version, boot index, Kafka key, line protocol |
//! | `boots` | boot index `u32` | boot id (`/proc/sys/kernel/random/boot_id`) |
//! | `meta` | `"next_seq"` | next sequence number `u64` |

pub mod record;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use telemetry::{InvalidReading, Reading, line_protocol};

pub use writer::{JournalWriter, Progress, WriterHandles};

const READINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("readings");
const BOOTS: TableDefinition<u32, &str> = TableDefinition::new("boots");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";

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
    #[error("journal {path}: {source}")]
    Storage { path: PathBuf, source: redb::Error },
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
}

impl JournalRecord {
    /// The reading itself.
    pub fn reading(&self) -> Result<Reading, telemetry::line_protocol::LineProtocolError> {
        line_protocol::parse_line(&self.line, 0)
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
}

/// A summary of what the journal holds.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalStats {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The number the next appended reading will get.
    pub next_seq: u64,
    pub file_bytes: u64,
}

/// A record that failed to decode; reported and skipped rather than allowed
/// to stall the forwarder.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub seq: u64,
    pub reason: String,
}

/// One entry of [`Journal::read_after`].
pub type ReadResult = Result<JournalRecord, Unreadable>;

/// The journal file, opened for this boot.
pub struct Journal {
    db: Database,
    path: PathBuf,
    boot_index: u32,
    boots: HashMap<u32, Arc<str>>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` with a page cache of
    /// `cache_bytes`, and records `boot_id` as the current boot.
    pub fn open(path: &Path, cache_bytes: usize, boot_id: &str) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |e: redb::Error| JournalError::Open {
            path: path.to_owned(),
            source: e,
        };
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| open_err(e.into()))?;
        let (boot_index, boots) = register_boot(&db, boot_id).map_err(open_err)?;
        Ok(Journal {
            db,
            path: path.to_owned(),
            boot_index,
            boots,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage_err(&self) -> impl Fn(redb::Error) -> JournalError + '_ {
        |source| JournalError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends `readings` and deletes the acknowledged sequence numbers in
    /// `delete`, in one durable transaction. Readings that cannot be encoded
    /// are left out and returned in [`Committed::rejected`].
    pub fn commit(&self, readings: &[Reading], delete: &[u64]) -> Result<Committed, JournalError> {
        self.commit_inner(readings, delete)
            .map_err(self.storage_err())
    }

    fn commit_inner(&self, readings: &[Reading], delete: &[u64]) -> Result<Committed, redb::Error> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let mut committed = Committed::default();
        {
            let mut table = tx.open_table(READINGS)?;
            let mut meta = tx.open_table(META)?;
            let first = meta.get(NEXT_SEQ)?.map_or(1, |v| v.value());
            let mut next = first;
            let mut line = String::with_capacity(256);
            let mut value = Vec::with_capacity(256);
            for reading in readings {
                line.clear();
                if let Err(e) = line_protocol::encode_into(reading, &mut line) {
                    committed.rejected.push(e);
                    continue;
                }
                let key = reading.tag("device_id").unwrap_or_default();
                value.clear();
                record::encode_into(&mut value, self.boot_index, key, &line);
                table.insert(next, value.as_slice())?;
                next += 1;
            }
            if next != first {
                meta.insert(NEXT_SEQ, next)?;
            }
            committed.seqs = first..next;
            for &seq in delete {
                if table.remove(seq)?.is_some() {
                    committed.deleted += 1;
                }
            }
        }
        tx.commit()?;
        Ok(committed)
    }

    /// Reads up to `limit` records with sequence numbers above `after`, in
    /// order. A record that cannot be decoded comes back as an error in its
    /// place, so the caller can report and skip it.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ReadResult>, JournalError> {
        self.read_inner(after, limit).map_err(self.storage_err())
    }

    fn read_inner(&self, after: u64, limit: usize) -> Result<Vec<ReadResult>, redb::Error> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(READINGS)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)?.take(limit) {
            let (seq, value) = entry?;
            let seq = seq.value();
            out.push(match record::decode(value.value()) {
                Ok((boot, key, line)) => Ok(JournalRecord {
                    seq,
                    boot_id: self
                        .boots
                        .get(&boot)
                        .cloned()
                        .unwrap_or_else(|| Arc::from("unknown")),
                    key: key.to_owned(),
                    line: line.to_owned(),
                }),
                Err(reason) => Err(Unreadable { seq, reason }),
            });
        }
        Ok(out)
    }

    /// Counts and bounds of what the journal holds.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        self.stats_inner().map_err(self.storage_err())
    }

    fn stats_inner(&self) -> Result<JournalStats, redb::Error> {
        let tx = self.db.begin_read()?;
        let file_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let next_seq = match tx.open_table(META) {
            Ok(meta) => meta.get(NEXT_SEQ)?.map_or(1, |v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => 1,
            Err(e) => return Err(e.into()),
        };
        let (records, first_seq, last_seq) = match tx.open_table(READINGS) {
            Ok(t) => (
                t.len()?,
                t.first()?.map(|(k, _)| k.value()),
                t.last()?.map(|(k, _)| k.value()),
            ),
            Err(redb::TableError::TableDoesNotExist(_)) => (0, None, None),
            Err(e) => return Err(e.into()),
        };
        Ok(JournalStats {
            records,
            first_seq,
            last_seq,
            next_seq,
            file_bytes,
        })
    }
}

/// Finds or adds `boot_id` in the `boots` table and returns its index and the
/// whole table (a handful of entries: one per boot the journal has seen
/// readings from, plus this one).
fn register_boot(
    db: &Database,
    boot_id: &str,
) -> Result<(u32, HashMap<u32, Arc<str>>), redb::Error> {
    let tx = db.begin_write()?;
    let mut boots = HashMap::new();
    let index;
    {
        let mut table = tx.open_table(BOOTS)?;
        for entry in table.iter()? {
            let (k, v) = entry?;
            boots.insert(k.value(), Arc::<str>::from(v.value()));
        }
        index = match boots.iter().find(|(_, v)| &***v == boot_id) {
            Some((&i, _)) => i,
            None => {
                let i = boots.keys().max().map_or(0, |m| m + 1);
                table.insert(i, boot_id)?;
                boots.insert(i, Arc::from(boot_id));
                i
            }
        };
        tx.open_table(READINGS)?;
        tx.open_table(META)?;
    }
    tx.commit()?;
    Ok((index, boots))
}

/// The id of the running boot, from the kernel.
pub fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(i: i64) -> Reading {
        Reading::new("weather", 1_700_000_000_000_000_000 + i)
            .with_tag("device_id", "pi-1")
            .with_tag("sensor", "env")
            .with_field("pressure_hpa", 1000.0 + i as f64)
    }

    fn open(dir: &tempfile::TempDir, boot: &str) -> Journal {
        Journal::open(&dir.path().join("j.redb"), 1 << 20, boot).unwrap()
    }

    #[test]
    fn sequence_numbers_are_contiguous_and_survive_emptying_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, "boot-a");
        let a = j.commit(&[reading(1), reading(2)], &[]).unwrap();
        assert_eq!(a.seqs, 1..3);
        let b = j.commit(&[reading(3)], &[1, 2]).unwrap();
        assert_eq!((b.seqs.clone(), b.deleted), (3..4, 2));
        let c = j.commit(&[], &[3]).unwrap();
        assert_eq!(c.deleted, 1);
        assert_eq!(j.stats().unwrap().records, 0);
        drop(j);
        let j = open(&dir, "boot-b");
        assert_eq!(j.commit(&[reading(4)], &[]).unwrap().seqs, 4..5);
        assert_eq!(j.stats().unwrap().next_seq, 5);
    }

    #[test]
    fn records_read_back_in_order_with_their_boot_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, "boot-a");
        j.commit(&[reading(1), reading(2)], &[]).unwrap();
        drop(j);
        let j = open(&dir, "boot-b");
        j.commit(&[reading(3)], &[]).unwrap();
        let records: Vec<_> = j
            .read_after(0, 10)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(&*records[0].boot_id, "boot-a");
        assert_eq!(&*records[2].boot_id, "boot-b");
        assert_eq!(records[0].key, "pi-1");
        assert_eq!(records[1].reading().unwrap(), reading(2));
        let window = j.read_after(1, 1).unwrap();
        assert_eq!(window.len(), 1);
        assert_eq!(window[0].as_ref().unwrap().seq, 2);
    }

    #[test]
    fn unencodable_readings_are_rejected_without_losing_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, "b");
        let bad = Reading::new("weather", 1).with_field("x", f64::NAN);
        let c = j.commit(&[reading(1), bad, reading(2)], &[]).unwrap();
        assert_eq!(c.seqs, 1..3);
        assert_eq!(c.rejected.len(), 1);
        assert_eq!(j.stats().unwrap().records, 2);
    }

    #[test]
    fn deleting_unknown_sequence_numbers_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, "b");
        j.commit(&[reading(1)], &[]).unwrap();
        assert_eq!(j.commit(&[], &[7, 8]).unwrap().deleted, 0);
        assert_eq!(j.stats().unwrap().records, 1);
    }
}
