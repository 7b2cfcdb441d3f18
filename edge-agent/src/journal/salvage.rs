//! Recovery from a damaged journal file: copy whatever is still intact into
//! a fresh journal, move the damaged file aside (never delete it), and put
//! the fresh one in its place; a power cut at any step leaves the damaged
//! journal in place or the finished result (`recover`).
//!
//! Salvage does not trust redb's structure, which is what is damaged: it
//! scans the file's raw bytes for checksummed frames ([`record::scan`]), in
//! 4 MiB windows so memory stays bounded. Every intact reading frame is
//! imported with its own sequence number, so it is forwarded like any other
//! journaled reading. The fresh journal numbers new readings after every
//! number the damaged one may have handed out: past the highest found, its
//! high-water mark (a meta frame) if found, and (applied on open) the limit
//! kept outside the file ([`super::reservation`]), since the newest readings
//! may be exactly what the damage took. The damaged journal's counters
//! (dropped, aggregated, quarantined, ...) are recovered the same way and
//! carry over.
//!
//! A redb file also holds stale copies of records in pages it has freed, so
//! salvage may find readings Kafka already acknowledged. They are sent again:
//! a reading's series and timestamp make a resent one the same point, so the
//! database does not change.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use redb::ReadableTable;

use super::capacity::WhenFull;
use super::record::{self, Frame};
use super::reservation::Reservation;
use super::tables::{
    BOOTS, META, NEXT_SEQ, READINGS, add_counters, begin, get, keep_next_seq, next_seq, put,
};
use super::{Counters, Journal, JournalError};
use crate::disk::{Disk, Mode, dir_of};

/// A reading found in a damaged file: sequence number, boot index, key,
/// line and when it was taken.
type Salvaged = (u64, u32, String, String, Option<record::Taken>);

/// The scan window.
const CHUNK: usize = 4 << 20;
/// Bytes carried over between windows: a frame longer than this that
/// straddles two windows is not found.
const OVERLAP: usize = 64 << 10;
/// Readings imported per transaction.
const IMPORT_BATCH: usize = 5_000;
/// And at most this many bytes of them: one transaction must fit in the
/// smallest journal's headroom, whatever the size of its readings.
const IMPORT_BYTES: usize = 128 << 10;

/// What happened to a damaged journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Where the damaged file is now.
    pub moved_to: PathBuf,
    /// What was wrong with it.
    pub reason: String,
    /// Intact readings copied into the fresh journal.
    pub salvaged: u64,
    /// Frames that looked like readings but did not parse as line protocol.
    pub unparsable: u64,
    /// Sequence numbers missing between the oldest and newest salvaged: at
    /// most this many readings were lost in the damage (some may have been
    /// delivered and deleted before it).
    pub missing: u64,
}

/// Renames `path` to `<path>.corrupt-<UTC time>` (with a suffix if that
/// exists) and makes the rename durable.
pub fn move_aside(disk: &dyn Disk, path: &Path) -> io::Result<PathBuf> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(':', "");
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let target = (0..)
        .map(|i| {
            let suffix = if i == 0 {
                String::new()
            } else {
                format!("-{i}")
            };
            path.with_file_name(format!("{name}.corrupt-{stamp}{suffix}"))
        })
        .find(|p| !disk.exists(p))
        .expect("a free name");
    disk.rename(path, &target)?;
    disk.sync_dir(dir_of(path))?;
    Ok(target)
}

/// `<journal>.salvage`: where a damaged journal's readings are gathered
/// before the result takes its place.
pub fn staging_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".salvage");
    PathBuf::from(name)
}

/// Replaces the damaged journal at `path` by `staged`, a fresh one opened
/// at [`staging_path`], filled with what is intact in the damaged one, so
/// that a power cut at any point leaves either the damaged
/// journal in place (and the salvage starts again) or the finished result:
/// 1. the fresh journal is built, durably, at [`staging_path`];
/// 2. the damaged file is moved aside ([`move_aside`]);
/// 3. the fresh one is renamed into place and the directory synced.
///
/// [`finish_interrupted`] completes or discards one cut short.
pub(super) fn recover(
    mut staged: Journal,
    path: &Path,
    reason: String,
) -> Result<Report, JournalError> {
    let disk = staged.disk().clone();
    let io_err = |source: io::Error| JournalError::Quarantine {
        path: path.to_owned(),
        source,
    };
    let mut report = salvage(&mut staged, path, reason)?;
    // Numbers past even the damaged file's high-water mark may have gone
    // with the damage: on after the reservation's limit.
    staged.raise_next_seq(Reservation::load(disk.clone(), path).limit())?;
    drop(staged);
    report.moved_to = move_aside(&*disk, path).map_err(io_err)?;
    disk.rename(&staging_path(path), path).map_err(io_err)?;
    disk.sync_dir(dir_of(path)).map_err(io_err)?;
    Ok(report)
}

/// After a salvage cut short ([`recover`]): with the damaged journal still
/// in place, the half-built one is removed (the salvage starts again); with
/// it moved aside, the finished one is put in its place.
pub(super) fn finish_interrupted(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    let staging = staging_path(path);
    if !disk.exists(&staging) {
        return Ok(());
    }
    if disk.exists(path) {
        disk.remove(&staging)?;
    } else {
        disk.rename(&staging_path(path), path)?;
    }
    disk.sync_dir(dir_of(path))
}

/// Copies every intact reading of the damaged file at `source` into
/// `journal`, and counts the quarantine and what was saved in the journal's
/// counters.
fn salvage(journal: &mut Journal, source: &Path, reason: String) -> Result<Report, JournalError> {
    let io_err = |e: io::Error| JournalError::Quarantine {
        path: source.to_owned(),
        source: e,
    };
    let (boots, meta) = boots_and_meta(journal, source).map_err(|e| e.into_journal(&io_err))?;
    let before = journal.stats()?.records;
    let dropped_before = journal.counters().dropped_oldest;
    let found = import_readings(journal, source, &boots).map_err(|e| e.into_journal(&io_err))?;
    let dropped = journal.counters().dropped_oldest - dropped_before;
    let salvaged = journal.stats()?.records - before + dropped;
    // The damaged journal's own high-water mark, if found.
    journal.raise_next_seq(meta.get(NEXT_SEQ).copied().unwrap_or(0))?;
    // The damaged journal's counters carry over, plus this quarantine.
    let mut carried =
        Counters::from_values(Counters::KEYS.map(|k| meta.get(k).copied().unwrap_or(0)));
    carried.add(&Counters {
        quarantined: 1,
        salvaged,
        ..Counters::default()
    });
    journal.import(&[], carried, &age_of(&boots), found.floor)?;
    let missing = if found.highest >= found.lowest {
        (found.highest - found.lowest + 1).saturating_sub(salvaged)
    } else {
        0
    };
    Ok(Report {
        moved_to: source.to_owned(),
        reason,
        salvaged,
        unparsable: found.unparsable,
        missing,
    })
}

/// The damaged file's boot index → this journal's.
type Boots = HashMap<u32, u32>;

/// Pass 1 over the damaged file: its boot ids, imported into `journal` (the
/// damaged file's index → this journal's), so readings keep the boot they
/// were taken in; and the latest value of each meta key (they only grow, so
/// the largest copy of each).
fn boots_and_meta(
    journal: &mut Journal,
    source: &Path,
) -> Result<(Boots, HashMap<String, u64>), ScanError> {
    let disk = journal.disk().clone();
    let mut boots: HashMap<u32, u32> = HashMap::new();
    let mut meta: HashMap<String, u64> = HashMap::new();
    scan_file(&*disk, source, |frame| {
        match frame {
            Frame::Boot { index, id } if !boots.contains_key(&index) => {
                boots.insert(index, journal.import_boot(id)?);
            }
            Frame::Meta { name, value } => {
                let v = meta.entry(name.to_owned()).or_default();
                *v = (*v).max(value);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((boots, meta))
}

/// Boots were numbered in the order they came: that order, by the index
/// each has in this journal.
fn age_of(boots: &HashMap<u32, u32>) -> HashMap<u32, u32> {
    boots.iter().map(|(&old, &new)| (new, old + 1)).collect()
}

/// What pass 2 found besides the readings it imported.
struct Found {
    unparsable: u64,
    lowest: u64,
    highest: u64,
    /// Aggregates the policy writes while importing are numbered after
    /// every number ever given (readings in the hot segment are above
    /// anything redb holds).
    floor: u64,
}

/// Pass 2: every intact, parsable reading, imported in batches with its
/// sequence number and boot.
fn import_readings(
    journal: &mut Journal,
    source: &Path,
    boots: &HashMap<u32, u32>,
) -> Result<Found, ScanError> {
    let disk = journal.disk().clone();
    let unknown_boot = journal.import_boot("unknown (salvaged)")?;
    let age = age_of(boots);
    let floor = Reservation::load(disk.clone(), source).limit();
    let mut found = Found {
        unparsable: 0,
        lowest: u64::MAX,
        highest: 0,
        floor,
    };
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut batch_bytes = 0;
    scan_file(&*disk, source, |frame| {
        if let Frame::Reading(r) = frame {
            found.lowest = found.lowest.min(r.seq);
            found.highest = found.highest.max(r.seq);
            if telemetry::line_protocol::parse_line(r.line, 0).is_err() {
                found.unparsable += 1;
                return Ok(());
            }
            let boot = boots.get(&r.boot).copied().unwrap_or(unknown_boot);
            batch.push((r.seq, boot, r.key.to_owned(), r.line.to_owned(), r.taken));
            batch_bytes += r.line.len() + r.key.len();
            if batch.len() >= IMPORT_BATCH || batch_bytes >= IMPORT_BYTES {
                journal.import(&batch, Counters::default(), &age, floor)?;
                (batch_bytes, _) = (0, batch.clear());
            }
        }
        Ok(())
    })?;
    journal.import(&batch, Counters::default(), &age, floor)?;
    Ok(found)
}

impl Journal {
    /// Inserts salvaged readings with their own sequence numbers (keeping
    /// `next_seq` above all of them), making room first as the policy says;
    /// under `reject_new` a full journal refuses them, counted.
    pub(super) fn import(
        &mut self,
        records: &[Salvaged],
        counters: Counters,
        age: &HashMap<u32, u32>,
        floor: u64,
    ) -> Result<(), JournalError> {
        // A growth refused at the limit: the policy makes room, once more
        // each time (as the writer's retries do for commits).
        let mut tries = 0;
        loop {
            match self.import_once(records, counters, age, floor) {
                Err(e) if e.is_no_space() && tries < 3 => tries += 1,
                done => return done,
            }
        }
    }

    /// `age` ranks boots (this journal's indices) oldest first: of two
    /// frames with one number, the one from the later boot is kept (the
    /// other is a commit a power cut took, whose number was given again).
    fn import_once(
        &mut self,
        mut records: &[Salvaged],
        mut counters: Counters,
        age: &HashMap<u32, u32>,
        floor: u64,
    ) -> Result<(), JournalError> {
        let batch: u64 = records
            .iter()
            .map(|(_, _, k, l, _)| record::reading_len(k, l) as u64)
            .sum();
        if self.may_be_full(batch)? {
            if self.options().when_full == WhenFull::RejectNew {
                // Full: what is journaled stays, the rest is refused.
                counters.rejected_new += records.len() as u64;
                records = &[];
            } else {
                self.make_room(batch, floor)?;
            }
        }
        let change = self.with_db(|_, db| {
            let tx = begin(db)?;
            let change = {
                let mut table = tx.open_table(READINGS)?;
                let mut meta = tx.open_table(META)?;
                let mut change = 0;
                let mut next = next_seq(&table, &meta)?;
                let mut value = Vec::new();
                for (seq, boot, key, line, taken) in records {
                    if let Some(old) = table.get(*seq)? {
                        let old_boot = record::decode_reading(old.value()).map(|r| r.boot);
                        let rank = |b: u32| age.get(&b).copied().unwrap_or(0);
                        if old_boot.is_ok_and(|b| rank(b) > rank(*boot)) {
                            continue;
                        }
                    }
                    value.clear();
                    record::encode_reading(&mut value, *seq, *boot, key, line, *taken);
                    if let Some(old) = table.insert(*seq, value.as_slice())? {
                        change -= old.value().len() as i64;
                    }
                    change += value.len() as i64;
                    next = next.max(seq + 1);
                }
                keep_next_seq(&table, &mut meta, next)?;
                add_counters(&mut meta, &counters)?;
                change
            };
            tx.commit()?;
            Ok(change)
        });
        self.stored_changed(change?);
        self.counters.add(&counters);
        Ok(())
    }

    /// Makes sure new readings are numbered from at least `next_seq`.
    pub(super) fn raise_next_seq(&mut self, next_seq: u64) -> Result<(), JournalError> {
        self.with_db(|_, db| {
            let tx = begin(db)?;
            {
                let mut meta = tx.open_table(META)?;
                let now = get(&meta, NEXT_SEQ)?;
                if next_seq > now {
                    put(&mut meta, NEXT_SEQ, next_seq)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Adds a boot id found in a damaged journal; returns its index here.
    pub(super) fn import_boot(&mut self, boot_id: &str) -> Result<u32, JournalError> {
        if let Some((&i, _)) = self.boots.iter().find(|(_, v)| &***v == boot_id) {
            return Ok(i);
        }
        let index = self.with_db(|_, db| {
            let tx = begin(db)?;
            let index = {
                let mut table = tx.open_table(BOOTS)?;
                let index = table.last()?.map_or(0, |(k, _)| k.value() + 1);
                let mut value = Vec::new();
                record::encode_boot(&mut value, index, boot_id);
                table.insert(index, value.as_slice())?;
                index
            };
            tx.commit()?;
            Ok(index)
        })?;
        // Readers learn of it with the next view published.
        Arc::make_mut(&mut self.boots).insert(index, Arc::from(boot_id));
        Ok(index)
    }
}

enum ScanError {
    Io(io::Error),
    Journal(JournalError),
}

impl From<JournalError> for ScanError {
    fn from(e: JournalError) -> Self {
        ScanError::Journal(e)
    }
}

impl ScanError {
    fn into_journal(self, io_err: &impl Fn(io::Error) -> JournalError) -> JournalError {
        match self {
            ScanError::Io(e) => io_err(e),
            ScanError::Journal(e) => e,
        }
    }
}

/// Calls `f` on every intact frame of the file, in windows of [`CHUNK`].
fn scan_file(
    disk: &dyn Disk,
    path: &Path,
    mut f: impl FnMut(Frame<'_>) -> Result<(), JournalError>,
) -> Result<(), ScanError> {
    let file = disk.open(path, Mode::Existing).map_err(ScanError::Io)?;
    let len = file.len().map_err(ScanError::Io)?;
    let mut offset = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + OVERLAP);
    loop {
        let start = buf.len();
        let n = (len - offset).min(CHUNK as u64) as usize;
        buf.resize(start + n, 0);
        file.read(offset, &mut buf[start..])
            .map_err(ScanError::Io)?;
        offset += n as u64;
        let eof = offset == len;
        let limit = if eof { buf.len() } else { buf.len() - OVERLAP };
        for (at, frame) in record::scan(&buf) {
            if at >= limit {
                break;
            }
            f(frame)?;
        }
        if eof {
            return file.close().map_err(ScanError::Io);
        }
        buf.drain(..limit);
    }
}
