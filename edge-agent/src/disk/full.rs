//! A disk that fills up behind the agent's back, for tests: the real
//! filesystem, but a file may not grow past `cap` bytes. Until the first
//! refused growth it reports the real disk's free space (another process
//! filled the disk between two checks); from then on it reports what is
//! left under `cap`, and never gains space.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::StorageBackend;

use super::{Disk, Mode, RealDisk};

/// The real disk with files capped at `cap` bytes.
#[derive(Debug, Clone)]
pub struct FullDisk {
    cap: u64,
    refused: Arc<AtomicBool>,
}

impl FullDisk {
    pub fn new(cap: u64) -> FullDisk {
        FullDisk {
            cap,
            refused: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Disk for FullDisk {
    fn open(&self, path: &Path, mode: Mode) -> io::Result<Box<dyn StorageBackend>> {
        Ok(Box::new(Capped {
            inner: RealDisk.open(path, mode)?,
            cap: self.cap,
            refused: self.refused.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealDisk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealDisk.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        RealDisk.exists(path)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        RealDisk.file_len(path)
    }
    fn available(&self, path: &Path) -> u64 {
        if self.refused.load(Ordering::Relaxed) {
            self.cap.saturating_sub(self.file_len(path).unwrap_or(0))
        } else {
            RealDisk.available(path)
        }
    }
}

#[derive(Debug)]
struct Capped {
    inner: Box<dyn StorageBackend>,
    cap: u64,
    refused: Arc<AtomicBool>,
}

impl StorageBackend for Capped {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.cap && len > self.inner.len()? {
            self.refused.store(true, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)
    }
    forward_locks!(inner);
}
