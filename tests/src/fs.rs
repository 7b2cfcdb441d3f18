//! Small filesystems for full-disk tests: a size-limited tmpfs, unmounted
//! when the guard drops.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs. Unmounted (lazily, so a leftover process cannot keep it)
/// on drop.
pub struct SmallFs {
    pub path: PathBuf,
    pub bytes: u64,
}

impl SmallFs {
    /// Mounts a tmpfs of `bytes` at `path`, or returns why it could not
    /// (mounting needs root or CAP_SYS_ADMIN).
    pub fn mount(path: &Path, bytes: u64) -> Result<SmallFs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0755"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(SmallFs {
            path: path.to_owned(),
            bytes,
        })
    }

    /// Bytes still free.
    pub fn available(&self) -> u64 {
        available(&self.path)
    }

    /// Fills the filesystem with a file at `name` until only about `leave`
    /// bytes are free.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path.join(name);
        let mut f = std::fs::File::create(&path).expect("ballast file");
        let chunk = vec![0xA5u8; 64 * 1024];
        while self.available() > leave + chunk.len() as u64 {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        f.sync_all().expect("sync ballast");
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bytes free for an unprivileged process on the filesystem holding `path`.
pub fn available(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs");
    (s.f_bavail as u64) * (s.f_frsize as u64)
}
