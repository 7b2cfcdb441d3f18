//! # The disk: every file the agent writes goes through here
//!
//! The journal (its redb file, its sequence reservation) and the stored
//! remote config reach the filesystem only through a [`Disk`], so that tests
//! can put a disk under them that fills up ([`full`]) or loses power
//! ([`power_cut`]) without a line of test code in the production paths.
//! Production uses [`real()`].
//!
//! A file is opened as a redb [`StorageBackend`]: offset reads and writes,
//! `set_len` and `sync_data`. That is all redb needs, and all the small
//! state files need ([`crate::durable`]).
//!
//! ## What a power cut keeps (the contract every writer relies on)
//! - Data written to a file survives a cut only once `sync_data` on it has
//!   returned. Until then each write may be kept, lost, or torn at a 512-byte
//!   sector boundary, independently of the others.
//! - A name created, renamed or removed survives only once the directory has
//!   been synced ([`Disk::sync_dir`]). Until then a prefix of those changes
//!   survives, in order (a journalling filesystem commits metadata in order),
//!   and a rename is all or nothing.

/// Forwards redb's byte-range locks and `close` of a backend that wraps
/// another (`self.$inner`): the journal's "in use by another process" check
/// depends on them reaching the real file.
macro_rules! forward_locks {
    ($inner:ident) => {
        fn close(&self) -> std::io::Result<()> {
            self.$inner.close()
        }
        fn try_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.$inner.try_lock_range(start, end)
        }
        fn try_lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.$inner.try_lock_shared_range(start, end)
        }
        fn lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.$inner.lock_range(start, end)
        }
        fn lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.$inner.lock_shared_range(start, end)
        }
        fn unlock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.$inner.unlock_range(start, end)
        }
        fn query_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.$inner.query_lock_range(start, end)
        }
    };
}
pub(crate) use forward_locks;

pub mod full;
pub mod mount;
pub mod power_cut;
mod real;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use real::RealDisk;
pub use redb::StorageBackend;

/// The unit of a device write: a disk sector. Writes tear only at its
/// boundaries (the power-cut contract above), and [`Disk::open_sectors`]
/// files take writes in whole sectors.
pub const SECTOR: u64 = 512;

/// Whether a write of `len` bytes at `offset` is whole sectors.
pub fn whole_sectors(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(SECTOR) && (len as u64).is_multiple_of(SECTOR)
}

/// How [`Disk::open`] treats a file that exists or does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The file must exist (`NotFound` otherwise).
    Existing,
    /// Open it, or create it empty.
    Create,
    /// Create it empty, or empty it.
    Truncate,
}

/// A filesystem: the real one, or one a test controls.
pub trait Disk: Debug + Send + Sync + 'static {
    /// Opens `path` for reading and writing.
    fn open(&self, path: &Path, mode: Mode) -> io::Result<Box<dyn StorageBackend>>;
    /// Renames `from` to `to`, replacing `to` (atomically).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the names created, renamed and removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` names a file.
    fn exists(&self, path: &Path) -> bool;
    /// The size of the file `path`.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Bytes free for unprivileged writers on the filesystem holding `path`.
    fn available(&self, path: &Path) -> u64;
    /// Drops what the page cache holds of `path` (written and synced data
    /// only): later small writes then dirty small pages, not the large
    /// folios a big write or a read-ahead left (newer kernels give ext4
    /// files folios of up to several MiB, and a 4 KiB write into one dirties
    /// and writes back all of it). A hint: failures are ignored.
    fn forget_cache(&self, path: &Path) {
        let _ = path;
    }
    /// Opens `path` (created if missing) for writes of whole sectors at
    /// sector offsets ([`SECTOR`]) that go to the device as they are, past
    /// the page cache (`O_DIRECT`) where the filesystem allows it: a write
    /// of one sector then writes one sector, not the 4 KiB page around it
    /// (flash wear). Durable, as any write, only once `sync_data` returned.
    fn open_sectors(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>> {
        self.open(path, Mode::Create)
    }
}

/// The filesystem the agent runs on.
pub fn real() -> Arc<dyn Disk> {
    Arc::new(RealDisk)
}

/// The whole content of the file `path`.
pub fn read(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let file = disk.open(path, Mode::Existing)?;
    let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
    let mut bytes = vec![0; len];
    file.read(0, &mut bytes)?;
    file.close()?;
    Ok(bytes)
}

/// The directory `path` is in (`.` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
