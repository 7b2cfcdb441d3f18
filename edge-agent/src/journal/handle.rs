//! The write handle ([`Journal`]) and the read handle ([`JournalReader`]),
//! and their access to the redb file.
//!
//! - Opening them: [`super::open`].
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

use super::capacity::{Space, SpaceState, WhenFull};
use super::config::JournalOptions;
use super::db::{OpenFailure, Registered, open_db};
use super::reservation::Reservation;
use super::segment::{Contents, Segment};
use super::{Counters, JournalError};
use crate::disk::Disk;

/// How long the writer waits for readers to let go of the file before
/// reopening it, and readers wait for it to be open again.
const READERS_LET_GO: Duration = Duration::from_secs(30);

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
    /// The write handle and its first published view, on an open database.
    pub(super) fn assemble(
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

    /// Counts the pages in use, the file's size and the disk's free space.
    pub fn measure(&mut self) -> Result<Space, JournalError> {
        let used = self.with_db(|_, db| {
            let tx = db.begin_write()?;
            let stats = tx.stats()?;
            tx.abort()?;
            Ok(stats.allocated_pages() * stats.page_size() as u64)
        })?;
        let file_len = self.disk().file_len(self.path()).unwrap_or(0);
        let disk_available = self.disk().available(self.path());
        let limit = self.options().max_bytes;
        let s = &mut self.space;
        s.measured_used = used;
        s.changed = 0;
        s.file_len = file_len;
        if s.blocked_at_disk.is_some_and(|d| disk_available > d) {
            s.blocked_at_disk = None;
        }
        s.disk_available = disk_available;
        Ok(s.estimate(limit))
    }

    /// After redb hit a refused growth: reopen it (it answers nothing else
    /// until then) and assume the file cannot grow until the disk gains space.
    pub(super) fn after_refused_growth(&mut self) -> Result<(), JournalError> {
        self.reopen_db()?;
        self.space.blocked_at_disk = Some(self.disk().available(self.path()));
        self.space.refused_commit = true;
        self.measure()?;
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
