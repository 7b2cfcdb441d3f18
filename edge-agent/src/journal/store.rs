//! [`Journal`]: the redb file and everything done to it.
//!
//! - Open: the file is checked page by page (redb's integrity check); a
//!   damaged file is quarantined and salvaged ([`super::salvage`]).
//! - Commit: appends and acknowledged deletes in one durable transaction,
//!   after the full-journal policy has made room ([`Journal::commit`]).
//! - Space and the full-journal policy: [`super::policy`].
//! - Salvaged readings come in through [`super::salvage`].

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::capacity::WhenFull;
use super::open::{OpenFailure, Registered, open_db, read_boots, register_boot};
use super::policy::SpaceState;
use super::record::{self, RecordRef};
use super::reservation::Reservation;
use super::salvage;
use super::segment::Segment;
use super::tables::{BOOTS, META, READINGS, next_seq};
use super::{Counters, JournalError, JournalRecord, JournalStats, ReadResult, Unreadable};
use crate::disk::{self, Disk};

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

/// What opening found.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The file was damaged: where it went and what was saved from it.
    pub quarantined: Option<salvage::Report>,
}

/// The journal file, opened for this boot.
pub struct Journal {
    /// Where every file of the journal is read and written.
    pub(super) disk: Arc<dyn Disk>,
    pub(super) path: PathBuf,
    /// Changed at run time by [`Journal::set_policy`].
    options: Mutex<JournalOptions>,
    /// The file layer's size limit, shared with [`LimitedFile`].
    pub(super) size_limit: Arc<AtomicU64>,
    /// `None` only while being reopened.
    pub(super) db: RwLock<Option<Database>>,
    pub(super) boot_index: u32,
    pub(super) boots: HashMap<u32, Arc<str>>,
    pub(super) space: Mutex<SpaceState>,
    pub(super) counters: Mutex<Counters>,
    /// Sequence numbers reserved outside the file.
    pub(super) reservation: Reservation,
    /// Where small commits go ([`super::commit`]); `None` while a fresh
    /// journal is built by salvage, or after the segment failed.
    pub(super) segment: Mutex<Option<Segment>>,
    /// Held by a commit from start to end (there is one writer; this keeps
    /// it so), while `segment` is let go during redb transactions.
    pub(super) commit_lock: Mutex<()>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and records `boot_id` as the
    /// current boot. A damaged file is quarantined and salvaged; [`Opened`]
    /// says so.
    pub fn open(
        path: &Path,
        options: JournalOptions,
        boot_id: &str,
    ) -> Result<(Journal, Opened), JournalError> {
        Journal::open_on(disk::real(), path, options, boot_id)
    }

    /// [`Journal::open`] on another disk (a test's).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        path: &Path,
        options: JournalOptions,
        boot_id: &str,
    ) -> Result<(Journal, Opened), JournalError> {
        Journal::open_as(disk, path, options, Some(boot_id))
    }

    /// Opens the journal for `edge-agent journal stats` and `export`: as the
    /// agent does (repairing it after a crash, quarantining it if damaged),
    /// but without recording a boot.
    pub fn open_for_inspection(
        path: &Path,
        options: JournalOptions,
    ) -> Result<(Journal, Opened), JournalError> {
        Journal::open_as(disk::real(), path, options, None)
    }

    /// Opens the redb file, then replays the hot segment into it.
    pub(super) fn open_as(
        disk: Arc<dyn Disk>,
        path: &Path,
        options: JournalOptions,
        boot_id: Option<&str>,
    ) -> Result<(Journal, Opened), JournalError> {
        let (journal, opened) = Journal::open_redb(disk, path, options, boot_id)?;
        journal.open_segment()?;
        Ok((journal, opened))
    }

    /// Opens the redb file alone (with quarantine and salvage), without a
    /// segment.
    pub(super) fn open_redb(
        disk: Arc<dyn Disk>,
        path: &Path,
        options: JournalOptions,
        boot_id: Option<&str>,
    ) -> Result<(Journal, Opened), JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            disk.create_dir_all(dir)
                .map_err(|source| JournalError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let quarantine_err = |source| JournalError::Quarantine {
            path: path.to_owned(),
            source,
        };
        salvage::finish_interrupted(&*disk, path).map_err(quarantine_err)?;
        let size_limit = Arc::new(AtomicU64::new(options.max_bytes));
        let existed = disk.exists(path);
        let db = match open_db(&*disk, path, &options, &size_limit) {
            Ok(db) => db,
            Err(OpenFailure::Other(e)) => return Err(e),
            Err(OpenFailure::Damaged(reason)) => {
                let report = salvage::recover(&disk, path, &options, boot_id, reason)?;
                let (journal, _) = Journal::open_redb(disk, path, options, boot_id)?;
                return Ok((
                    journal,
                    Opened {
                        quarantined: Some(report),
                    },
                ));
            }
        };
        let open_err = |source: redb::Error| JournalError::Open {
            path: path.to_owned(),
            source,
        };
        let Registered {
            boot_index,
            boots,
            counters,
        } = register_boot(&db, boot_id).map_err(open_err)?;
        let journal = Journal {
            reservation: Reservation::load(disk.clone(), path),
            disk,
            path: path.to_owned(),
            options: Mutex::new(options),
            size_limit,
            db: RwLock::new(Some(db)),
            boot_index,
            boots,
            space: Mutex::new(SpaceState::default()),
            counters: Mutex::new(counters),
            segment: Mutex::new(None),
            commit_lock: Mutex::new(()),
        };
        journal.measure()?;
        // The file was created now: the journal it replaces (deleted by
        // hand) may have handed out numbers past anything this one knows
        // of; they are not handed out again. (A salvaged journal was raised
        // before it was put in place.)
        let limit = journal.reservation.limit();
        if !existed && limit > 0 {
            tracing::info!(path = %path.display(), next_seq = limit,
                "new journal file; sequence numbers continue after those of the one it replaces");
            journal.raise_next_seq(limit)?;
        }
        Ok((journal, Opened { quarantined: None }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options in force now.
    pub fn options(&self) -> JournalOptions {
        self.options.lock().expect("options lock").clone()
    }

    /// Changes the size limit and the full-journal policy of the open
    /// journal (a remote config did). The page cache keeps its size. A limit
    /// below what the file already holds makes the next commit free space
    /// by the policy; the file itself does not shrink.
    pub fn set_policy(&self, max_bytes: u64, when_full: WhenFull, downsample_window: Duration) {
        {
            let mut options = self.options.lock().expect("options lock");
            options.max_bytes = max_bytes;
            options.when_full = when_full;
            options.downsample_window = downsample_window;
            self.size_limit.store(max_bytes, Ordering::Relaxed);
        }
        // Space estimates were made against the old limit. (The space lock
        // is taken after the options lock is released: the policy takes them
        // the other way round.)
        self.space.lock().expect("space lock").full_since = None;
    }

    fn storage_err(&self) -> impl Fn(redb::Error) -> JournalError + '_ {
        |source| JournalError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` with the open database. A growth refused for want of space
    /// leaves redb answering nothing: the file is reopened before the error
    /// is returned, and the next write makes room first
    /// ([`Journal::after_refused_growth`]).
    pub(super) fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, JournalError> {
        let result = {
            let guard = self.db.read().expect("journal lock");
            let db = guard.as_ref().ok_or_else(|| JournalError::Storage {
                path: self.path.clone(),
                source: redb::Error::DatabaseClosed,
            })?;
            f(db).map_err(self.storage_err())
        };
        if let Err(e) = &result
            && e.is_no_space()
        {
            self.after_refused_growth()?;
        }
        result
    }

    /// The boot id this journal was opened in (what new readings are
    /// journaled under).
    pub fn boot_id(&self) -> Arc<str> {
        self.boots
            .get(&self.boot_index)
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"))
    }

    /// The persisted counters, as of the last commit.
    pub fn counters(&self) -> Counters {
        *self.counters.lock().expect("counters lock")
    }

    /// Reads up to `limit` records with sequence numbers above `after`, in
    /// order. A record that cannot be decoded comes back as an error in its
    /// place, so the caller can report and skip it.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ReadResult>, JournalError> {
        self.read_range(after, u64::MAX, limit)
    }

    /// Like [`Journal::read_after`], stopping after sequence number `up_to`.
    /// Readings in redb and in the hot segment come merged, in order;
    /// acknowledged ones still waiting to be deleted from redb are skipped.
    pub fn read_range(
        &self,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<ReadResult>, JournalError> {
        if after >= up_to || limit == 0 {
            return Ok(Vec::new());
        }
        // The segment first, then redb: a reading moving from one to the
        // other meanwhile is seen in both (and taken once), never in neither.
        let (hot, acked): (Vec<(u64, Vec<u8>)>, BTreeSet<u64>) = {
            let segment = self.segment.lock().expect("segment lock");
            match segment.as_ref() {
                Some(s) => (
                    s.readings
                        .range(after + 1..=up_to)
                        .take(limit)
                        .map(|(k, v)| (*k, v.clone()))
                        .collect(),
                    s.cold_acks.range(after + 1..=up_to).copied().collect(),
                ),
                None => (Vec::new(), BTreeSet::new()),
            }
        };
        let (cold, boots) = self.with_db(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(READINGS)?;
            let boots = self.boots_of(&tx)?.into_owned();
            let mut out = Vec::new();
            for entry in table.range(after + 1..=up_to)? {
                let (seq, value) = entry?;
                if acked.contains(&seq.value()) {
                    continue;
                }
                out.push(to_record(seq.value(), value.value(), &boots));
                if out.len() >= limit {
                    break;
                }
            }
            Ok((out, boots))
        })?;
        let hot = hot.iter().map(|(seq, v)| to_record(*seq, v, &boots));
        Ok(merge(cold, hot, limit))
    }

    /// The boot table, re-read only if a boot was imported since opening.
    fn boots_of(
        &self,
        tx: &redb::ReadTransaction,
    ) -> Result<std::borrow::Cow<'_, HashMap<u32, Arc<str>>>, redb::Error> {
        let table = tx.open_table(BOOTS)?;
        if table.len()? as usize == self.boots.len() {
            return Ok(std::borrow::Cow::Borrowed(&self.boots));
        }
        Ok(std::borrow::Cow::Owned(read_boots(&table)?))
    }

    /// Counts and bounds of what the journal holds, in redb and the hot
    /// segment.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        // What the segment holds, then redb (a reading moving meanwhile may
        // be counted twice in this one figure, never lost).
        let hot = self.segment.lock().expect("segment lock").as_ref().map(|s| {
            let first = s.readings.first_key_value();
            (
                s.readings.len() as u64,
                first.map(|(seq, frame)| (*seq, oldest_timestamp(frame))),
                s.readings.last_key_value().map(|(k, _)| *k),
                s.next_seq,
                s.cold_acks.clone(),
            )
        });
        let no_acks = BTreeSet::new();
        let acked = hot.as_ref().map_or(&no_acks, |h| &h.4);
        let (mut records, first, last, next) = self.with_db(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(READINGS)?;
            let meta = tx.open_table(META)?;
            let mut gone = 0;
            for &seq in acked {
                gone += u64::from(t.get(seq)?.is_some());
            }
            let live = |e: &Result<_, redb::StorageError>| match e {
                Ok((k, _)) => !acked.contains(&redb::AccessGuard::<u64>::value(k)),
                Err(_) => true,
            };
            let first = match t.iter()?.find(live) {
                Some(e) => {
                    let (k, v) = e?;
                    Some((k.value(), oldest_timestamp(v.value())))
                }
                None => None,
            };
            let last = match t.iter()?.rev().find(live) {
                Some(e) => Some(e?.0.value()),
                None => None,
            };
            Ok((t.len()? - gone, first, last, next_seq(&t, &meta)?))
        })?;
        let (mut first, mut last, mut next) = (first, last, next);
        if let Some((count, hot_first, hot_last, hot_next, _)) = hot {
            records += count;
            if let Some((seq, ts)) = hot_first
                && first.is_none_or(|(f, _)| seq < f)
            {
                first = Some((seq, ts));
            }
            last = last.max(hot_last);
            next = next.max(hot_next);
        }
        Ok(JournalStats {
            records,
            first_seq: first.map(|(seq, _)| seq),
            oldest_timestamp_ns: first.and_then(|(_, ts)| ts),
            last_seq: last,
            next_seq: next,
            file_bytes: self.disk.file_len(&self.path).unwrap_or(0),
            max_bytes: self.options().max_bytes,
            counters: self.counters(),
        })
    }

    /// Calls `f` on every record in order, in windows of `window` records, so
    /// the backlog is never all in memory. Stops at the first error `f`
    /// returns.
    pub fn for_each<E: From<JournalError>>(
        &self,
        window: usize,
        mut f: impl FnMut(ReadResult) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = 0;
        loop {
            let batch = self.read_after(after, window)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = match last {
                Ok(r) => r.seq,
                Err(u) => u.seq,
            };
            for item in batch {
                f(item)?;
            }
        }
    }
}

/// The timestamp of a stored reading: the last field of its line.
fn oldest_timestamp(value: &[u8]) -> Option<i64> {
    let r = record::decode_reading(value).ok()?;
    r.line.rsplit(' ').next()?.parse().ok()
}

/// Two runs of records in sequence order, merged, at most `limit`.
fn merge(a: Vec<ReadResult>, b: impl Iterator<Item = ReadResult>, limit: usize) -> Vec<ReadResult> {
    let seq = |r: &ReadResult| match r {
        Ok(r) => r.seq,
        Err(u) => u.seq,
    };
    let (mut a, mut b) = (a.into_iter().peekable(), b.peekable());
    let mut out = Vec::new();
    while out.len() < limit {
        if let (Some(x), Some(y)) = (a.peek(), b.peek())
            && seq(x) == seq(y)
        {
            // Moved from the segment into redb while being read: once.
            b.next();
        }
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => seq(x) <= seq(y),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}

fn to_record(seq: u64, value: &[u8], boots: &HashMap<u32, Arc<str>>) -> ReadResult {
    match record::decode_reading(value) {
        Ok(RecordRef {
            seq: stored,
            boot,
            key,
            line,
            taken,
        }) if stored == seq => Ok(JournalRecord {
            seq,
            boot_id: boots
                .get(&boot)
                .cloned()
                .unwrap_or_else(|| Arc::from("unknown")),
            key: key.to_owned(),
            line: line.to_owned(),
            taken,
        }),
        Ok(r) => Err(Unreadable {
            seq,
            reason: format!("the record stored under {seq} says it is {}", r.seq),
        }),
        Err(reason) => Err(Unreadable { seq, reason }),
    }
}
