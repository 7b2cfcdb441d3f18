//! A disk in memory that can lose power, for tests. It follows the model of
//! [`super`] ("What a power cut keeps") and nothing kinder.
//!
//! The disk records every change since the last sync: file writes and size
//! changes per file until its `sync_data`, names until a `sync_dir`. Before
//! any change it can take a [`Snapshot`] (the test asks for the change
//! numbers, [`PowerCutDisk::cut_before`]): the disk exactly as it was at
//! that instant, volatile state included, while the running code carries on
//! undisturbed. [`Snapshot::power_on`] then decides, with the test's random
//! numbers, what the cut kept:
//! - each unsynced write is kept, dropped, or torn at a 512-byte boundary
//!   (only the part before or after it lands), independently;
//! - each unsynced size change is kept or dropped;
//! - a random prefix of the unsynced name changes survives.
//!
//! and gives a fresh disk holding what survived, as a machine sees it when
//! it boots again.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, RngExt};
use redb::StorageBackend;

use super::{Disk, Mode};

pub use super::SECTOR;

/// An in-memory disk that can lose power.
#[derive(Debug, Clone, Default)]
pub struct PowerCutDisk {
    state: Arc<Mutex<State>>,
}

/// The disk at one instant, volatile state included.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The change it was taken before.
    pub change: u64,
    files: Vec<Inode>,
    /// The names as of the last directory sync.
    synced_names: BTreeMap<PathBuf, usize>,
    /// Name changes since, in order.
    pending_names: Vec<NameOp>,
}

#[derive(Debug, Default)]
struct State {
    now: Snapshot,
    /// The names the running system sees.
    names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    /// Changes made so far.
    changes: u64,
    /// Bytes written to files so far.
    written: u64,
    cut_before: BTreeSet<u64>,
    taken: Vec<Snapshot>,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    /// What a cut keeps for sure.
    synced: Pages,
    /// What the running system reads.
    now: Pages,
    /// Changes since the last `sync_data`, in order.
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
enum NameOp {
    Link(PathBuf, usize),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
}

impl PowerCutDisk {
    pub fn new() -> PowerCutDisk {
        PowerCutDisk::default()
    }

    /// Takes a snapshot before each of these changes (numbered from 1 by
    /// [`PowerCutDisk::changes`] order).
    pub fn cut_before(&self, changes: impl IntoIterator<Item = u64>) {
        self.lock().cut_before.extend(changes);
    }

    /// How many changes were made so far.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// How many bytes were written to files so far (what reaches the
    /// disk; flash wear).
    pub fn written(&self) -> u64 {
        self.lock().written
    }

    /// The snapshots taken since the last call.
    pub fn take_snapshots(&self) -> Vec<Snapshot> {
        std::mem::take(&mut self.lock().taken)
    }

    /// The disk now, as a cut at this instant would find it.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            change: s.changes + 1,
            ..s.now.clone()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("power-cut disk lock")
    }

    /// Counts a change, taking a snapshot first if one is due.
    fn change(&self) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        s.changes += 1;
        let n = s.changes;
        if s.cut_before.remove(&n) {
            let snap = Snapshot {
                change: n,
                ..s.now.clone()
            };
            s.taken.push(snap);
        }
        s
    }
}

impl Snapshot {
    /// Boots a fresh disk on what this cut kept.
    pub fn power_on(&self, rng: &mut impl Rng) -> PowerCutDisk {
        let files: Vec<Inode> = self
            .files
            .iter()
            .map(|f| {
                let mut bytes = f.synced.clone();
                for op in &f.pending {
                    land(&mut bytes, op, rng);
                }
                Inode {
                    synced: bytes.clone(),
                    now: bytes,
                    pending: Vec::new(),
                }
            })
            .collect();
        let mut names = self.synced_names.clone();
        let kept = rng.random_range(0..=self.pending_names.len());
        for op in &self.pending_names[..kept] {
            apply_name(&mut names, op);
        }
        let dirs = names
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        PowerCutDisk {
            state: Arc::new(Mutex::new(State {
                now: Snapshot {
                    change: 0,
                    files,
                    synced_names: names.clone(),
                    pending_names: Vec::new(),
                },
                names,
                dirs,
                ..State::default()
            })),
        }
    }
}

/// File content in shared pages, so that a snapshot copies pointers and a
/// write copies only the pages it touches.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pages {
    len: usize,
    pages: Vec<Arc<[u8; PAGE]>>,
}

const PAGE: usize = 4096;

impl Pages {
    fn resize(&mut self, len: usize) {
        if len < self.len {
            // Zero the tail of the last page kept: growth must read zeros.
            if !len.is_multiple_of(PAGE) {
                let last = Arc::make_mut(&mut self.pages[len / PAGE]);
                last[len % PAGE..].fill(0);
            }
            self.pages.truncate(len.div_ceil(PAGE));
        } else {
            self.pages.resize(len.div_ceil(PAGE), Arc::new([0; PAGE]));
        }
        self.len = len;
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        if self.len < offset + data.len() {
            self.resize(offset + data.len());
        }
        let mut done = 0;
        while done < data.len() {
            let at = offset + done;
            let n = (PAGE - at % PAGE).min(data.len() - done);
            let page = Arc::make_mut(&mut self.pages[at / PAGE]);
            page[at % PAGE..at % PAGE + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done;
            let n = (PAGE - at % PAGE).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.pages[at / PAGE][at % PAGE..at % PAGE + n]);
            done += n;
        }
    }
}

/// What a cut does to one unsynced change.
fn land(bytes: &mut Pages, op: &FileOp, rng: &mut impl Rng) {
    match op {
        FileOp::SetLen(len) => {
            if rng.random_bool(0.5) {
                bytes.resize(*len as usize);
            }
        }
        FileOp::Write { offset, data } => {
            let (start, end) = (*offset, *offset + data.len() as u64);
            // The sector boundaries strictly inside the write.
            let first = (start / SECTOR + 1) * SECTOR;
            let tearable = first < end;
            let (from, to) = match rng.random_range(0..if tearable { 4 } else { 2 }) {
                0 => return,
                1 => (start, end),
                torn => {
                    let sectors = (end - 1 - first) / SECTOR + 1;
                    let at = first + rng.random_range(0..sectors) * SECTOR;
                    if torn == 2 { (start, at) } else { (at, end) }
                }
            };
            bytes.write(
                from as usize,
                &data[(from - start) as usize..(to - start) as usize],
            );
        }
    }
}

fn apply_name(names: &mut BTreeMap<PathBuf, usize>, op: &NameOp) {
    match op {
        NameOp::Link(path, inode) => {
            names.insert(path.clone(), *inode);
        }
        NameOp::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        NameOp::Unlink(path) => {
            names.remove(path);
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Disk for PowerCutDisk {
    fn open(&self, path: &Path, mode: Mode) -> io::Result<Box<dyn StorageBackend>> {
        let existing = self.lock().names.get(path).copied();
        let inode = match (existing, mode) {
            (Some(inode), Mode::Existing | Mode::Create) => inode,
            (None, Mode::Existing) => return Err(not_found(path)),
            (Some(inode), Mode::Truncate) => {
                File {
                    disk: self.clone(),
                    inode,
                    sectors: false,
                }
                .set_len(0)?;
                inode
            }
            (None, Mode::Create | Mode::Truncate) => {
                let mut s = self.change();
                if !s.dirs.contains(super::dir_of(path)) {
                    return Err(not_found(super::dir_of(path)));
                }
                let inode = s.now.files.len();
                s.now.files.push(Inode::default());
                s.names.insert(path.to_owned(), inode);
                s.now
                    .pending_names
                    .push(NameOp::Link(path.to_owned(), inode));
                inode
            }
        };
        Ok(Box::new(File {
            disk: self.clone(),
            inode,
            sectors: false,
        }))
    }

    fn open_sectors(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>> {
        self.open(path, Mode::Create)?;
        let inode = self.lock().names[path];
        Ok(Box::new(File {
            disk: self.clone(),
            inode,
            sectors: true,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.change();
        let inode = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_owned(), inode);
        let op = NameOp::Rename(from.to_owned(), to.to_owned());
        s.now.pending_names.push(op);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.change();
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        s.now.pending_names.push(NameOp::Unlink(path.to_owned()));
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // A journalling filesystem commits every pending name change at once.
        let mut s = self.change();
        s.now.synced_names = s.names.clone();
        s.now.pending_names.clear();
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are made once, at setup: they are not modelled as lost.
        let mut s = self.lock();
        s.dirs.extend(dir.ancestors().map(Path::to_path_buf));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().names.contains_key(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let s = self.lock();
        let inode = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.now.files[*inode].now.len as u64)
    }

    fn available(&self, _path: &Path) -> u64 {
        1 << 40
    }
}

/// An open file of a [`PowerCutDisk`].
#[derive(Debug)]
struct File {
    disk: PowerCutDisk,
    inode: usize,
    /// Opened by [`Disk::open_sectors`]: it refuses a write that is not
    /// whole sectors, as `O_DIRECT` does.
    sectors: bool,
}

impl StorageBackend for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.disk.lock().now.files[self.inode].now.len as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.disk.lock();
        let bytes = &s.now.files[self.inode].now;
        let end = offset as usize + out.len();
        if end > bytes.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read to {end} past the end ({})", bytes.len),
            ));
        }
        bytes.read(offset as usize, out);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.disk.change();
        let f = &mut s.now.files[self.inode];
        f.now.resize(len as usize);
        f.pending.push(FileOp::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.disk.change();
        let f = &mut s.now.files[self.inode];
        f.pending.clear();
        f.synced = f.now.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.sectors && !super::whole_sectors(offset, data.len()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut s = self.disk.change();
        s.written += data.len() as u64;
        let f = &mut s.now.files[self.inode];
        f.now.write(offset as usize, data);
        f.pending.push(FileOp::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::disk;

    #[test]
    fn synced_data_survives_every_cut_and_unsynced_data_may_not() {
        let d = PowerCutDisk::new();
        d.create_dir_all(Path::new("/s")).unwrap();
        let f = d.open(Path::new("/s/f"), Mode::Create).unwrap();
        f.write(0, &[1; 2048]).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(Path::new("/s")).unwrap();
        f.write(0, &[2; 2048]).unwrap();
        let snap = d.snapshot();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let after = disk::read(&snap.power_on(&mut rng), Path::new("/s/f")).unwrap();
            assert_eq!(after.len(), 2048);
            // Each sector holds one write or the other, never a mix.
            for sector in after.chunks(SECTOR as usize) {
                assert!(sector.iter().all(|b| *b == sector[0]), "{sector:?}");
            }
            seen.insert(after.iter().map(|b| b - 1).collect::<Vec<_>>());
        }
        assert!(seen.contains(&vec![0; 2048]), "the write was never lost");
        assert!(seen.contains(&vec![1; 2048]), "the write was never kept");
        assert!(seen.len() > 2, "the write was never torn");
    }

    #[test]
    fn a_name_survives_only_once_its_directory_is_synced() {
        let d = PowerCutDisk::new();
        d.create_dir_all(Path::new("/s")).unwrap();
        let f = d.open(Path::new("/s/a"), Mode::Create).unwrap();
        f.write(0, b"x").unwrap();
        f.sync_data().unwrap();
        d.rename(Path::new("/s/a"), Path::new("/s/b")).unwrap();
        let snap = d.snapshot();
        let mut rng = SmallRng::seed_from_u64(1);
        let outcomes: BTreeSet<(bool, bool)> = (0..100)
            .map(|_| {
                let after = snap.power_on(&mut rng);
                (
                    after.exists(Path::new("/s/a")),
                    after.exists(Path::new("/s/b")),
                )
            })
            .collect();
        // Never created, or created and renamed: never both names, and the
        // creation may be lost too.
        assert!(outcomes.is_subset(&BTreeSet::from([
            (false, false),
            (true, false),
            (false, true)
        ])));
        assert!(outcomes.contains(&(false, true)));
        d.sync_dir(Path::new("/s")).unwrap();
        let after = d.snapshot().power_on(&mut rng);
        assert_eq!(disk::read(&after, Path::new("/s/b")).unwrap(), b"x");
    }

    #[test]
    fn snapshots_are_taken_before_the_chosen_changes() {
        let d = PowerCutDisk::new();
        d.create_dir_all(Path::new("/s")).unwrap();
        d.cut_before([2]);
        let f = d.open(Path::new("/s/f"), Mode::Create).unwrap(); // change 1
        f.write(0, b"abc").unwrap(); // change 2
        let snaps = d.take_snapshots();
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].change, 2);
        let mut rng = SmallRng::seed_from_u64(3);
        let after = snaps[0].power_on(&mut rng);
        // The write had not happened yet.
        if after.exists(Path::new("/s/f")) {
            assert_eq!(disk::read(&after, Path::new("/s/f")).unwrap(), b"");
        }
    }
}
