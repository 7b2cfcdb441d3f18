//! Small state files replaced atomically and durably: written to a temporary
//! file, fsync'd, renamed over the old one, and the directory fsync'd. A
//! crash at any point leaves either the old content or the new, never a mix.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Replaces the content of `path` with `bytes` (creating its directory).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir_of(path))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir_of(path)
}

/// Makes a rename or creation of `path` durable: fsyncs its directory.
pub fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    File::open(dir_of(path))?.sync_all()
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
