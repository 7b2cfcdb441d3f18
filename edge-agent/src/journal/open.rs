//! Opening the journal: the redb file (quarantined and salvaged when
//! damaged, [`super::salvage`]), then the hot segment replayed into the
//! write handle ([`Journal::open_segment`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use redb::ReadableDatabase;

use super::commit::SEGMENT_GENERATION;
use super::config::JournalOptions;
use super::db::{OpenFailure, open_db, register_boot};
use super::record;
use super::salvage;
use super::segment::{self, Segment};
use super::tables::{META, get};
use super::{Journal, JournalError};
use crate::disk::{self, Disk};

/// What opening found.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The file was damaged: where it went and what was saved from it.
    pub quarantined: Option<salvage::Report>,
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
        let (mut journal, opened) = Journal::open_redb(disk, path, options, boot_id)?;
        journal.open_segment()?;
        journal.publish();
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
                let staging = salvage::staging_path(path);
                let (staged, _) =
                    Journal::open_redb(disk.clone(), &staging, options.clone(), boot_id)?;
                let report = salvage::recover(staged, path, reason)?;
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
        let registered = register_boot(&db, boot_id).map_err(open_err)?;
        let mut journal = Journal::assemble(disk, path, options, size_limit, db, registered);
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

    /// At open: the segment goes on where its last intact commit ended,
    /// holding what it held; a generation already moved into redb (a cut
    /// came before its successor's header was written) starts anew.
    pub(super) fn open_segment(&mut self) -> Result<(), JournalError> {
        let path = segment::path_for(self.path());
        let blocks = segment::data_blocks_for(self.options().max_bytes);
        let (mut s, replayed) =
            Segment::open(&**self.disk(), &path, blocks).map_err(|e| self.segment_err(e))?;
        let moved = self.read_db(|db| {
            let tx = db.begin_read()?;
            get(&tx.open_table(META)?, SEGMENT_GENERATION)
        })?;
        let next = self.stats()?.next_seq;
        if replayed.generation == 0 || replayed.generation <= moved {
            s.reset(next.max(s.next_seq))
                .map_err(|e| self.segment_err(e))?;
        } else {
            s.next_seq = s.next_seq.max(next);
            self.renumber_boots(&mut s, replayed.boots)?;
            if !s.readings.is_empty() || !s.cold_acks.is_empty() {
                tracing::info!(
                    path = %path.display(),
                    readings = s.readings.len(),
                    acknowledged = s.cold_acks.len(),
                    "readings committed in the journal's segment found again"
                );
            }
        }
        self.segment = Some(s);
        Ok(())
    }

    /// Points the segment's readings at their boot in this journal's boots
    /// table (a salvage may have numbered the boots anew).
    fn renumber_boots(
        &mut self,
        s: &mut Segment,
        boots: std::collections::BTreeMap<String, Vec<u64>>,
    ) -> Result<(), JournalError> {
        for (boot_id, seqs) in boots {
            let index = self.import_boot(&boot_id)?;
            for seq in seqs {
                if let Some(frame) = s.readings.get_mut(&seq) {
                    *frame = with_boot(frame, index).into();
                }
            }
        }
        Ok(())
    }
}

/// A reading frame with its boot index replaced (the segment's readings
/// were numbered against the journal's boots table as it was; after a
/// salvage it may number them differently).
fn with_boot(frame: &[u8], boot: u32) -> Vec<u8> {
    match record::decode_reading(frame) {
        Ok(r) if r.boot != boot => {
            let mut out = Vec::with_capacity(frame.len());
            record::encode_reading(&mut out, r.seq, boot, r.key, r.line, r.taken);
            out
        }
        _ => frame.to_vec(),
    }
}
