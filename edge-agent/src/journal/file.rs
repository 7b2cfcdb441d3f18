//! The journal's file, as redb sees it: redb's own file backend, with two
//! guarantees added where the file grows.
//!
//! - The file never grows past `journal.max_bytes`: a growth beyond it is
//!   refused with [`LimitReached`] (an `ErrorKind::StorageFull` error), so the
//!   limit holds on the real file size, not on an estimate of it.
//! - Growth reserves its disk blocks at once (`fallocate`), so a full disk
//!   shows up as a refused growth (ENOSPC), never later as a failed write in
//!   the middle of a commit's pages.
//!
//! redb treats any I/O error as fatal for the open database (every later call
//! answers `PreviousIo`), so the journal reopens the file after a refused
//! growth; see [`super::store`].

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

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

/// redb's [`FileBackend`] with a size limit and preallocated growth.
#[derive(Debug)]
pub struct LimitedFile {
    inner: FileBackend,
    /// The same open file, for `fstat` and `fallocate`.
    file: File,
    /// Shared with the journal, which lowers or raises it when
    /// `journal.max_bytes` changes at run time.
    limit: Arc<AtomicU64>,
}

impl LimitedFile {
    pub fn new(file: File, limit: Arc<AtomicU64>) -> io::Result<LimitedFile> {
        let same = file.try_clone()?;
        let inner = FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(LimitedFile {
            inner,
            file: same,
            limit,
        })
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
        let current = self.file.metadata()?.len();
        if len <= current {
            return self.inner.set_len(len);
        }
        let limit = self.limit.load(Ordering::Relaxed);
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                LimitReached { wanted: len, limit },
            ));
        }
        // Reserve the blocks now; mode 0 also extends the file.
        let (start, extra) = (current as libc::off_t, (len - current) as libc::off_t);
        match unsafe { libc::fallocate(self.file.as_raw_fd(), 0, start, extra) } {
            0 => Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    // A filesystem without fallocate: plain growth.
                    self.inner.set_len(len)
                } else {
                    // Leave the file as it was, whatever part was reserved.
                    let _ = self.file.set_len(current);
                    Err(e)
                }
            }
        }
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
