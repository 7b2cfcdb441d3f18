//! [`Journal`]: the journal's files, opened; the write handle and the read
//! handle.
//!
//! - Open: the redb file is checked page by page (redb's integrity check); a
//!   damaged file is quarantined and salvaged ([`super::salvage`]); then the
//!   hot segment is replayed ([`Journal::open_segment`]).
//! - [`Journal`] is owned by the writer task and changes the journal with
//!   `&mut self`, taking no lock. [`JournalReader`]s share the redb
//!   database with it (redb's read transactions never wait for a write) and
//!   see the segment as the writer last published it: after each commit the
//!   writer swaps in a new [`View`] (an `ArcSwap`, no lock either way).
//! - Commit: [`super::commit`]; reading back: `super::read`.
//! - Space and the full-journal policy: [`super::policy`].
//! - Salvaged readings come in through [`super::salvage`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use redb::Database;

use super::capacity::WhenFull;
use super::open::{OpenFailure, Registered, open_db, register_boot};
use super::policy::SpaceState;
use super::reservation::Reservation;
use super::salvage;
use super::segment::{Contents, Segment};
use super::{Counters, JournalError};
use crate::disk::{self, Disk};

/// How long the writer waits for readers to let go of the file before
/// reopening it, and readers wait for it to be open again.
const READERS_LET_GO: Duration = Duration::from_secs(30);

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

/// The journal's write handle, owned by the writer task: every commit, the
/// full-journal policy and salvage go through it, with `&mut self` and no
/// locks. Readers (the forwarder, stats, export) use a [`JournalReader`],
/// which it derefs to and hands out with [`Journal::reader`].
pub struct Journal {
    /// What readers see; the writer publishes to it after each commit.
    reader: JournalReader,
    /// Changed at run time by [`Journal::set_policy`].
    options: JournalOptions,
    /// The file layer's size limit, shared with [`super::file::LimitedFile`].
    pub(super) size_limit: Arc<AtomicU64>,
    pub(super) boot_index: u32,
    /// Shared with the published views: replaced when a boot is imported.
    pub(super) boots: Arc<HashMap<u32, Arc<str>>>,
    pub(super) space: SpaceState,
    pub(super) counters: Counters,
    /// Sequence numbers reserved outside the file.
    pub(super) reservation: Reservation,
    /// Where small commits go ([`super::commit`]); `None` while a fresh
    /// journal is built by salvage, or after the segment failed.
    pub(super) segment: Option<Segment>,
}

/// A read handle on the journal: cheap to clone, never waits for a commit.
/// It reads redb (its own read transactions) and the hot segment as the
/// writer last published it.
#[derive(Clone)]
pub struct JournalReader {
    shared: Arc<Shared>,
}

/// What the write handle shares with readers.
struct Shared {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    /// `None` only for the moment the writer reopens the file after a
    /// refused growth.
    db: ArcSwapOption<Database>,
    view: ArcSwap<View>,
}

/// What the writer published after its last commit.
pub(super) struct View {
    /// The hot segment's readings and acknowledgements.
    pub(super) hot: Option<Arc<Contents>>,
    pub(super) counters: Counters,
    pub(super) max_bytes: u64,
    pub(super) boots: Arc<HashMap<u32, Arc<str>>>,
    pub(super) boot_id: Arc<str>,
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

    /// The write handle and its first published view, on an open database.
    fn assemble(
        disk: Arc<dyn Disk>,
        path: &Path,
        options: JournalOptions,
        size_limit: Arc<AtomicU64>,
        db: Database,
        registered: Registered,
    ) -> Journal {
        let Registered {
            boot_index,
            boots,
            counters,
        } = registered;
        let boots = Arc::new(boots);
        let view = View {
            hot: None,
            counters,
            max_bytes: options.max_bytes,
            boot_id: boot_id_of(&boots, boot_index),
            boots: boots.clone(),
        };
        Journal {
            reader: JournalReader {
                shared: Arc::new(Shared {
                    disk: disk.clone(),
                    path: path.to_owned(),
                    db: ArcSwapOption::from_pointee(db),
                    view: ArcSwap::from_pointee(view),
                }),
            },
            reservation: Reservation::load(disk, path),
            options,
            size_limit,
            boot_index,
            boots,
            space: SpaceState::default(),
            counters,
            segment: None,
        }
    }

    /// A read handle: for the forwarder, stats and export.
    pub fn reader(&self) -> JournalReader {
        self.reader.clone()
    }

    /// The options in force now.
    pub fn options(&self) -> &JournalOptions {
        &self.options
    }

    /// Changes the size limit and the full-journal policy of the open
    /// journal (a remote config did). The page cache keeps its size. A limit
    /// below what the file already holds makes the next commit free space
    /// by the policy; the file itself does not shrink.
    pub fn set_policy(&mut self, max_bytes: u64, when_full: WhenFull, downsample_window: Duration) {
        self.options.max_bytes = max_bytes;
        self.options.when_full = when_full;
        self.options.downsample_window = downsample_window;
        self.size_limit.store(max_bytes, Ordering::Relaxed);
        // Space estimates were made against the old limit.
        self.space.full_since = None;
        self.publish();
    }

    /// Shows readers what the last commit left: the segment's contents, the
    /// counters and the limit.
    pub(super) fn publish(&self) {
        self.reader.shared.view.store(Arc::new(View {
            hot: self.segment.as_ref().map(|s| Arc::new(s.contents())),
            counters: self.counters,
            max_bytes: self.options.max_bytes,
            boots: self.boots.clone(),
            boot_id: boot_id_of(&self.boots, self.boot_index),
        }));
    }

    /// Runs `f` with the open database (and the journal). A growth refused
    /// for want of space leaves redb answering nothing: the file is
    /// reopened before the error is returned, and the next write makes room
    /// first ([`Journal::after_refused_growth`]).
    pub(super) fn with_db<T>(
        &mut self,
        f: impl FnOnce(&mut Journal, &Database) -> Result<T, redb::Error>,
    ) -> Result<T, JournalError> {
        let db = self.reader.db()?;
        let result = f(self, &db).map_err(|e| self.reader.storage_err(e));
        drop(db);
        if let Err(e) = &result
            && e.is_no_space()
        {
            self.after_refused_growth()?;
        }
        result
    }

    /// Closes and opens the redb file again, once every reader has let go
    /// of it (a read takes milliseconds; readers wait meanwhile).
    pub(super) fn reopen_db(&mut self) -> Result<(), JournalError> {
        let shared = &self.reader.shared;
        if let Some(old) = shared.db.swap(None)
            && wait_for(|| (Arc::strong_count(&old) == 1).then_some(())).is_none()
        {
            shared.db.store(Some(old));
            return Err(JournalError::Full {
                path: self.path().to_owned(),
                reason: "reopening after a refused growth: a reader kept the file open".into(),
            });
        }
        let db =
            open_db(&*shared.disk, &shared.path, &self.options, &self.size_limit).map_err(|f| {
                match f {
                    OpenFailure::Other(e) => e,
                    OpenFailure::Damaged(reason) => JournalError::Full {
                        path: shared.path.clone(),
                        reason: format!("reopening after a refused growth failed: {reason}"),
                    },
                }
            })?;
        shared.db.store(Some(Arc::new(db)));
        Ok(())
    }

    /// The persisted counters, as of the last commit.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Journal {
    type Target = JournalReader;

    /// Everything a reader does, the writer does too.
    fn deref(&self) -> &JournalReader {
        &self.reader
    }
}

impl JournalReader {
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub(super) fn disk(&self) -> &Arc<dyn Disk> {
        &self.shared.disk
    }

    /// What the writer published last.
    pub(super) fn view(&self) -> Arc<View> {
        self.shared.view.load_full()
    }

    fn storage_err(&self, source: redb::Error) -> JournalError {
        JournalError::Storage {
            path: self.shared.path.clone(),
            source,
        }
    }

    /// The open database; waits while the writer reopens it.
    fn db(&self) -> Result<Arc<Database>, JournalError> {
        wait_for(|| self.shared.db.load_full())
            .ok_or_else(|| self.storage_err(redb::Error::DatabaseClosed))
    }

    /// Runs `f` (read transactions only) with the open database.
    pub(super) fn read_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, JournalError> {
        let db = self.db()?;
        f(&db).map_err(|e| self.storage_err(e))
    }

    /// The boot id this journal was opened in (what new readings are
    /// journaled under).
    pub fn boot_id(&self) -> Arc<str> {
        self.view().boot_id.clone()
    }

    /// The persisted counters, as of the last commit.
    pub fn counters(&self) -> Counters {
        self.view().counters
    }
}

fn boot_id_of(boots: &HashMap<u32, Arc<str>>, index: u32) -> Arc<str> {
    boots
        .get(&index)
        .cloned()
        .unwrap_or_else(|| Arc::from("unknown"))
}

/// Polls `f` every millisecond until it gives something, for at most
/// [`READERS_LET_GO`]: the writer and readers handing the redb file over.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + READERS_LET_GO;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
