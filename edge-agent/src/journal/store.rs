//! [`Journal`]: the journal's files, opened.
//!
//! - Open: the redb file is checked page by page (redb's integrity check); a
//!   damaged file is quarantined and salvaged ([`super::salvage`]); then the
//!   hot segment is replayed ([`super::commit`]).
//! - Commit: [`super::commit`]; reading back: `super::read`.
//! - Space and the full-journal policy: [`super::policy`].
//! - Salvaged readings come in through [`super::salvage`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redb::Database;

use super::capacity::WhenFull;
use super::open::{OpenFailure, Registered, open_db, register_boot};
use super::policy::SpaceState;
use super::reservation::Reservation;
use super::salvage;
use super::segment::Segment;
use super::{Counters, JournalError};
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
}
