//! The real filesystem. Files are redb's own [`FileBackend`] (positioned
//! reads and writes, `fdatasync`, the byte-range locks that keep a second
//! agent off an open journal), with one change: growth reserves its disk
//! blocks at once (`fallocate`), so a full disk shows up as a refused growth
//! (ENOSPC), never later as a failed write in the middle of a commit.
//!
//! [`Disk::open_sectors`] files write with `O_DIRECT` through a second
//! descriptor (reads, size and sync go through the ordinary one): the
//! kernel sends the sectors written and nothing else. Where the filesystem
//! or device refuses (no `O_DIRECT`, a disk of 4 KiB sectors), writes fall
//! back to the page cache: the same bytes, more of them at the device.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;

use super::{Disk, Mode, dir_of, whole_sectors};

/// The filesystem the agent runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn open(&self, path: &Path, mode: Mode) -> io::Result<Box<dyn StorageBackend>> {
        Ok(Box::new(RealFile::new(open(path, mode)?)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn open_sectors(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>> {
        let buffered = RealFile::new(open(path, Mode::Create)?)?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .inspect_err(|e| refused_direct(path, e))
            .ok();
        Ok(Box::new(SectorFile {
            buffered,
            refused: AtomicBool::new(direct.is_none()),
            direct,
            path: path.to_owned(),
        }))
    }

    fn forget_cache(&self, path: &Path) {
        if let Ok(file) = File::open(path) {
            // SAFETY: a valid descriptor; the call only advises the kernel.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }

    fn available(&self, path: &Path) -> u64 {
        let Ok(c) = std::ffi::CString::new(dir_of(path).as_os_str().as_encoded_bytes()) else {
            return u64::MAX;
        };
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        match unsafe { libc::statvfs(c.as_ptr(), &mut s) } {
            0 => (s.f_bavail as u64).saturating_mul(s.f_frsize as u64),
            // Unknown: the configured limit alone decides.
            _ => u64::MAX,
        }
    }
}

fn open(path: &Path, mode: Mode) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(mode != Mode::Existing)
        .truncate(mode == Mode::Truncate)
        .open(path)
}

fn refused_direct(path: &Path, error: &io::Error) {
    tracing::info!(
        path = %path.display(),
        %error,
        "direct writes refused here: this file is written through the page cache (whole 4 KiB pages)"
    );
}

/// redb's [`FileBackend`] with preallocated growth.
#[derive(Debug)]
struct RealFile {
    inner: FileBackend,
    /// The same open file, for `fstat` and `fallocate`.
    file: File,
}

impl RealFile {
    fn new(file: File) -> io::Result<RealFile> {
        let same = file.try_clone()?;
        let inner = FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(RealFile { inner, file: same })
    }
}

impl StorageBackend for RealFile {
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

    forward_locks!(inner);
}

/// A file written in whole sectors, with `O_DIRECT` while the kernel takes
/// it.
#[derive(Debug)]
struct SectorFile {
    buffered: RealFile,
    direct: Option<File>,
    /// A direct write was refused (or the open): the page cache from now on.
    refused: AtomicBool,
    path: std::path::PathBuf,
}

impl SectorFile {
    /// Writes `data` with `O_DIRECT`, from a buffer aligned for any device.
    /// `Ok(false)`: the kernel refused the alignment (nothing written).
    fn write_direct(&self, file: &File, offset: u64, data: &[u8]) -> io::Result<bool> {
        const ALIGN: usize = 4096;
        let mut raw = vec![0; data.len() + ALIGN];
        let skip = raw.as_ptr().align_offset(ALIGN);
        let buf = &mut raw[skip..skip + data.len()];
        buf.copy_from_slice(data);
        match file.write_all_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                refused_direct(&self.path, &e);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl StorageBackend for SectorFile {
    fn len(&self) -> io::Result<u64> {
        self.buffered.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.buffered.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.buffered.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        // The same file: this flushes the device's cache of direct writes
        // too (and any page-cache writes after a fallback).
        self.buffered.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !whole_sectors(offset, data.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a write of {} bytes at {offset}: not whole sectors",
                    data.len()
                ),
            ));
        }
        if let Some(file) = self
            .direct
            .as_ref()
            .filter(|_| !self.refused.load(Ordering::Relaxed))
        {
            if self.write_direct(file, offset, data)? {
                return Ok(());
            }
            self.refused.store(true, Ordering::Relaxed);
        }
        self.buffered.write(offset, data)
    }

    forward_locks!(buffered);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sector_file_takes_whole_sectors_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let f = RealDisk.open_sectors(&path).unwrap();
        f.set_len(4096).unwrap();
        f.write(0, &[0; 4096]).unwrap();
        f.write(512, &[7; 1024]).unwrap();
        f.sync_data().unwrap();
        let mut back = vec![1; 4096];
        f.read(0, &mut back).unwrap();
        assert!(back[..512].iter().all(|b| *b == 0));
        assert!(back[512..1536].iter().all(|b| *b == 7));
        assert!(back[1536..].iter().all(|b| *b == 0));
        // A partial sector is a caller's mistake, refused whatever the
        // filesystem, and nothing is written.
        let e = f.write(100, &[9; 512]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read(&path).unwrap(), back);
    }
}
