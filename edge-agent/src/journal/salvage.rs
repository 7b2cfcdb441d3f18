//! Recovery from a damaged journal file: move it aside, never delete it, and
//! copy whatever is still intact into the fresh journal.
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
use std::time::SystemTime;

use redb::ReadableTable;

use super::capacity::WhenFull;
use super::record::{self, Frame};
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

/// Copies every intact reading of the damaged file at `moved_to` into
/// `journal`, and counts the quarantine and what was saved in the journal's
/// counters.
pub fn salvage(
    journal: &Journal,
    moved_to: PathBuf,
    reason: String,
) -> Result<Report, JournalError> {
    let io_err = |source: io::Error| JournalError::Quarantine {
        path: moved_to.clone(),
        source,
    };
    // Pass 1: the boot ids, so readings keep the boot they were taken in.
    let mut boots: HashMap<u32, u32> = HashMap::new();
    // Meta values only grow, so the largest copy of each is the latest.
    let mut meta: HashMap<String, u64> = HashMap::new();
    scan_file(&*journal.disk, &moved_to, |frame| {
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
    })
    .map_err(|e| e.into_journal(&io_err))?;
    let unknown_boot = journal.import_boot("unknown (salvaged)")?;
    // Pass 2: the readings.
    let before = journal.stats()?.records;
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut unparsable = 0;
    let dropped_before = journal.counters().dropped_oldest;
    let (mut lowest, mut highest) = (u64::MAX, 0);
    scan_file(&*journal.disk, &moved_to, |frame| {
        if let Frame::Reading(r) = frame {
            lowest = lowest.min(r.seq);
            highest = highest.max(r.seq);
            if telemetry::line_protocol::parse_line(r.line, 0).is_err() {
                unparsable += 1;
                return Ok(());
            }
            let boot = boots.get(&r.boot).copied().unwrap_or(unknown_boot);
            batch.push((r.seq, boot, r.key.to_owned(), r.line.to_owned(), r.taken));
            if batch.len() >= IMPORT_BATCH {
                journal.import(&batch, Counters::default())?;
                batch.clear();
            }
        }
        Ok(())
    })
    .map_err(|e| e.into_journal(&io_err))?;
    journal.import(&batch, Counters::default())?;
    let dropped = journal.counters().dropped_oldest - dropped_before;
    let salvaged = journal.stats()?.records - before + dropped;
    // The damaged journal's own high-water mark, if found. (Numbers past
    // even that may have gone with the damage: opening raises the fresh
    // journal to the reservation's limit too.)
    journal.raise_next_seq(meta.get(NEXT_SEQ).copied().unwrap_or(0))?;
    // The damaged journal's counters carry over, plus this quarantine.
    let mut carried =
        Counters::from_values(Counters::KEYS.map(|k| meta.get(k).copied().unwrap_or(0)));
    carried.add(&Counters {
        quarantined: 1,
        salvaged,
        ..Counters::default()
    });
    journal.import(&[], carried)?;
    let missing = if highest >= lowest {
        (highest - lowest + 1).saturating_sub(salvaged)
    } else {
        0
    };
    Ok(Report {
        moved_to,
        reason,
        salvaged,
        unparsable,
        missing,
    })
}

impl Journal {
    /// Inserts salvaged readings with their own sequence numbers (keeping
    /// `next_seq` above all of them), making room first as the policy says;
    /// under `reject_new` a full journal refuses them, counted.
    pub(super) fn import(
        &self,
        mut records: &[Salvaged],
        mut counters: Counters,
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
                self.make_room(batch)?;
            }
        }
        let change = self.with_db(|db| {
            let tx = begin(db)?;
            let change = {
                let mut table = tx.open_table(READINGS)?;
                let mut meta = tx.open_table(META)?;
                let mut change = 0;
                let mut next = next_seq(&table, &meta)?;
                let mut value = Vec::new();
                for (seq, boot, key, line, taken) in records {
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
        })?;
        self.stored_changed(change);
        self.counters.lock().expect("counters lock").add(&counters);
        Ok(())
    }

    /// Makes sure new readings are numbered from at least `next_seq`.
    pub(super) fn raise_next_seq(&self, next_seq: u64) -> Result<(), JournalError> {
        self.with_db(|db| {
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
    pub(super) fn import_boot(&self, boot_id: &str) -> Result<u32, JournalError> {
        if let Some((&i, _)) = self.boots.iter().find(|(_, v)| &***v == boot_id) {
            return Ok(i);
        }
        self.with_db(|db| {
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
        })
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
