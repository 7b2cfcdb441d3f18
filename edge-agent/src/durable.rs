//! Small state files replaced atomically and durably: written to a temporary
//! file, synced, renamed over the old one, and the directory synced. A power
//! cut at any point leaves either the old content or the new, never a mix
//! (shown against [`crate::disk::power_cut`] in `tests/power_cuts.rs`).

use std::io;
use std::path::Path;

use crate::disk::{Disk, Mode, dir_of};

/// Replaces the content of `path` with `bytes` (creating its directory).
pub fn replace(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> io::Result<()> {
    disk.create_dir_all(dir_of(path))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    {
        let f = disk.open(tmp, Mode::Truncate)?;
        f.write(0, bytes)?;
        f.sync_data()?;
        f.close()?;
    }
    disk.rename(tmp, path)?;
    disk.sync_dir(dir_of(path))
}

/// Removes `path` durably; a missing file is not an error.
pub fn remove(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    match disk.remove(path) {
        Ok(()) => disk.sync_dir(dir_of(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
