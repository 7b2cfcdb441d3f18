//! The journal's file, as redb sees it: the file the [`crate::disk::Disk`]
//! opened (on the real disk, growth reserves its blocks at once, so a full
//! disk shows up as a refused growth), with one guarantee added where the
//! file grows.
//!
//! - The file never grows past `journal.max_bytes`: a growth beyond it is
//!   refused with [`LimitReached`] (an `ErrorKind::StorageFull` error), so the
//!   limit holds on the real file size, not on an estimate of it.
//!
//! redb treats any I/O error as fatal for the open database (every later call
//! answers `PreviousIo`), so the journal reopens the file after a refused
//! growth; see [`super::policy`].

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::StorageBackend;

use crate::disk::forward_locks;

/// The error a growth past `journal.max_bytes` gets.
#[derive(Debug, thiserror::Error)]
#[error("the journal file may not grow to {wanted} bytes: journal.max_bytes is {limit}")]
pub struct LimitReached {
    pub wanted: u64,
    pub limit: u64,
}

/// Whether an I/O error means "no room": the limit, a full disk or a quota.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.get_ref().is_some_and(|inner| inner.is::<LimitReached>())
}

/// A file with a size limit.
#[derive(Debug)]
pub struct LimitedFile {
    inner: Box<dyn StorageBackend>,
    /// Shared with the journal, which lowers or raises it when
    /// `journal.max_bytes` changes at run time.
    limit: Arc<AtomicU64>,
}

impl LimitedFile {
    pub fn new(inner: Box<dyn StorageBackend>, limit: Arc<AtomicU64>) -> LimitedFile {
        LimitedFile { inner, limit }
    }
}

impl StorageBackend for LimitedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let limit = self.limit.load(Ordering::Relaxed);
        if len > limit && len > self.inner.len()? {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                LimitReached { wanted: len, limit },
            ));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    forward_locks!(inner);
}
