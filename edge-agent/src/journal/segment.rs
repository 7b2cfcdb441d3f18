//! The hot segment: where small commits are made durable, in one block write
//! and one `fdatasync` each, instead of a redb transaction (flash wear).
//!
//! A redb commit rewrites a handful of pages (about 24 KiB) however few
//! readings it carries; at field rates that is 34 bytes written per byte of
//! reading. The segment is a file next to the journal, `<journal>.segment`,
//! written once in full when created (really written, not just allocated, so
//! that later writes change no filesystem metadata) and then only overwritten
//! in place:
//!
//! ```text
//! block 0      header: "BUOYSEG1", generation u64, next_seq u64,
//!              data blocks u64, CRC-32 of the 32 bytes before it (all LE)
//! block 1..    commits, one after the other (a commit that fits in one block
//!              but not in what is left of the current one starts at the next)
//! ```
//! A commit:
//! ```text
//! len u32 (the whole commit) | generation u64 | commit number u64 |
//! readings u32 | ack ranges u32 | boot id length u16, boot id (UTF-8) |
//! each reading: len u32, reading frame | each ack range: first u64,
//! last u64 | CRC-32 of everything before it
//! ```
//! The reading frames are the journal's own ([`super::record`]), so moving
//! them into redb copies bytes.
//!
//! Each commit writes the 512-byte sectors it touches, the earlier bytes of
//! its first sector unchanged, through [`Disk::open_sectors`] (`O_DIRECT`
//! where the filesystem allows it), so a commit of a few readings writes
//! one to three sectors, not the 4 KiB page around them. A sector is the
//! unit a power cut tears at, so a commit torn mid-way leaves the earlier
//! commits whole.
//!
//! Replay reads commits from the start of the data area while each carries
//! the header's generation and the next commit number and its checksum
//! holds, skipping once to the next block boundary when a commit is not
//! where the previous one ended. A commit cut short by a power cut fails its
//! checksum, so a commit is replayed whole or not at all (invariant 4), and
//! what follows it was never acknowledged to anyone. After a replay the
//! generation goes on where the last intact commit ended: whatever a commit
//! cut short left behind has a commit number already passed, so it is never
//! read as a later one. A new generation (a header write) makes everything
//! in the file stale at once.
//!
//! The boot id is kept per commit: the reading frames number their boot in
//! the journal's boots table, which a salvage renumbers.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, SECTOR, StorageBackend, dir_of};

/// A filesystem block and flash page: the segment's unit of size and of
/// placement (a small commit never straddles one). Writes are in sectors.
pub const BLOCK: u64 = 4096;
const MAGIC: &[u8; 8] = b"BUOYSEG1";
const HEADER_LEN: usize = 8 + 8 + 8 + 8;
/// The longest boot id kept (they are 36-character UUIDs).
const MAX_BOOT_ID: usize = 256;
/// A commit's fixed part: length, generation, number, two counts, the boot
/// id's length, CRC.
const COMMIT_OVERHEAD: usize = 4 + 8 + 8 + 4 + 4 + 2 + 4;

/// The segment file of the journal at `journal`.
pub fn path_for(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".segment");
    PathBuf::from(name)
}

/// Data blocks for a journal limited to `max_bytes`: a 64th of it, between
/// 32 KiB and 1 MiB. Moving a full segment into redb is then a transaction
/// well inside the slack the journal keeps free (a 16th,
/// [`super::capacity`]).
pub fn data_blocks_for(max_bytes: u64) -> u64 {
    (max_bytes / 64).clamp(32 << 10, 1 << 20) / BLOCK
}

/// Readings held: sequence number to reading frame. A persistent map: the
/// copy the writer publishes to readers after each commit shares all but
/// the few nodes a commit changes, so publishing costs no copy of it.
pub type Frames = imbl::OrdMap<u64, Arc<[u8]>>;
/// Sequence numbers (of acknowledged readings in redb), persistent too.
pub type Seqs = imbl::OrdSet<u64>;

/// What a segment held when it was opened, besides the readings and
/// acknowledgements it hands to the [`Segment`].
#[derive(Debug, Default, PartialEq)]
pub struct Replayed {
    /// The generation in its header (0: none, or a damaged header).
    pub generation: u64,
    /// Intact commits found.
    pub commits: u64,
    /// The boot of each reading held, by boot id: the readings' sequence
    /// numbers.
    pub boots: BTreeMap<String, Vec<u64>>,
}

/// Everything [`replay`] finds.
#[derive(Debug, Default, PartialEq)]
struct Found {
    replayed: Replayed,
    /// The number after every reading ever held (acknowledged or not), or
    /// the header's `next_seq`.
    next_seq: u64,
    readings: Frames,
    cold_acks: Seqs,
    /// Where the last intact commit ended, in the data area.
    end: u64,
}

/// The open segment. Owned by the journal's writer: every method but the
/// accessors writes.
#[derive(Debug)]
pub struct Segment {
    file: Box<dyn StorageBackend>,
    data_blocks: u64,
    generation: u64,
    next_commit: u64,
    /// Where the next commit may start, in the data area.
    pos: u64,
    /// The bytes of the block holding `pos`, before `pos`.
    tail: Vec<u8>,
    /// Readings held and not acknowledged: seq to reading frame.
    pub readings: Frames,
    /// Acknowledged readings that are in redb, not yet deleted there.
    pub cold_acks: Seqs,
    /// The number the next reading gets.
    pub next_seq: u64,
}

/// What a segment holds, as of one moment: what readers see (published by
/// the writer after each commit) and what a redb transaction moves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contents {
    pub readings: Frames,
    pub cold_acks: Seqs,
    pub generation: u64,
    pub next_seq: u64,
}

impl Contents {
    /// Whether anything would leave the segment (then it starts a new
    /// generation).
    pub fn moves(&self) -> bool {
        !self.readings.is_empty() || !self.cold_acks.is_empty()
    }
}

/// One commit to append: readings (seq, reading frame) and acknowledged
/// sequence numbers.
pub struct Commit<'a> {
    /// The boot the readings were taken in.
    pub boot_id: &'a str,
    pub readings: &'a [(u64, Vec<u8>)],
    pub acks: &'a [u64],
}

impl Segment {
    /// Opens the segment at `path`, positioned after the last intact
    /// commit of its generation, holding its readings and acknowledgements;
    /// or creates it with `data_blocks` blocks of data (also when it holds
    /// nothing and was made for another size). Says what it found.
    pub fn open(disk: &dyn Disk, path: &Path, data_blocks: u64) -> io::Result<(Segment, Replayed)> {
        let file = disk.open_sectors(path)?;
        let len = file.len()?;
        // Anything larger is not a segment this agent wrote.
        let mut bytes = vec![0; len.min(64 << 20) as usize];
        file.read(0, &mut bytes)?;
        let found = replay(&bytes);
        let mut data_blocks = data_blocks;
        let want = (1 + data_blocks) * BLOCK;
        if found.replayed.commits > 0 {
            // What it holds stays where it is: the size it was made with.
            data_blocks = (bytes.len() as u64 / BLOCK).saturating_sub(1);
        } else if len != want {
            // New, or made for another limit: written in full once, so that
            // commits only ever overwrite (no metadata change per commit).
            file.set_len(want)?;
            for at in (0..want).step_by(1 << 20) {
                let n = (want - at).min(1 << 20) as usize;
                file.write(at, &vec![0; n])?;
            }
            file.sync_data()?;
            disk.sync_dir(dir_of(path))?;
        }
        // What the read and the zeros left in the page cache may be large
        // folios: commits must dirty one 4 KiB page each, not a folio.
        disk.forget_cache(path);
        let block_start = (BLOCK + found.end / BLOCK * BLOCK) as usize;
        let tail = bytes
            .get(block_start..BLOCK as usize + found.end as usize)
            .unwrap_or_default()
            .to_vec();
        let segment = Segment {
            file,
            data_blocks,
            generation: found.replayed.generation,
            next_commit: found.replayed.commits,
            pos: found.end,
            tail,
            readings: found.readings,
            cold_acks: found.cold_acks,
            next_seq: found.next_seq,
        };
        Ok((segment, found.replayed))
    }

    /// The bytes the data area holds.
    pub fn capacity(&self) -> u64 {
        self.data_blocks * BLOCK
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A copy of what it holds (shared, not copied: see [`Frames`]).
    pub fn contents(&self) -> Contents {
        Contents {
            readings: self.readings.clone(),
            cold_acks: self.cold_acks.clone(),
            generation: self.generation,
            next_seq: self.next_seq,
        }
    }

    /// Starts a new generation numbering readings from `next_seq`: whatever
    /// the file held is stale from now on. The caller has made it durable
    /// elsewhere (redb) first.
    pub fn reset(&mut self, next_seq: u64) -> io::Result<()> {
        let generation = self.generation + 1;
        let mut block = vec![0; BLOCK as usize];
        block[..8].copy_from_slice(MAGIC);
        block[8..16].copy_from_slice(&generation.to_le_bytes());
        block[16..24].copy_from_slice(&next_seq.to_le_bytes());
        block[24..32].copy_from_slice(&self.data_blocks.to_le_bytes());
        let crc = crc32fast::hash(&block[..HEADER_LEN]);
        block[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&crc.to_le_bytes());
        self.file.write(0, &block)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.next_commit = 0;
        self.pos = 0;
        self.tail.clear();
        self.readings.clear();
        self.cold_acks.clear();
        self.next_seq = next_seq;
        Ok(())
    }

    /// Whether `commit` would fit in what is left.
    pub fn fits(&self, commit: &Commit<'_>) -> bool {
        let len = encoded_len(commit) as u64;
        place(self.pos, len) + len <= self.data_blocks * BLOCK
    }

    /// Appends `commit` durably (one write of the sectors it touches, one
    /// `fdatasync`). On an error nothing changed in memory, and the next
    /// append overwrites whatever of it reached the file.
    pub fn append(&mut self, commit: &Commit<'_>) -> io::Result<()> {
        let bytes = encode(self.generation, self.next_commit, commit);
        let start = place(self.pos, bytes.len() as u64);
        let end = start + bytes.len() as u64;
        assert!(end <= self.data_blocks * BLOCK, "checked by fits()");
        // Whole sectors: the first one's earlier bytes (the end of the last
        // commit, from the tail) are written again unchanged.
        let first = start / SECTOR * SECTOR;
        let before = (start - first) as usize;
        let mut buf = vec![0; (end.next_multiple_of(SECTOR) - first) as usize];
        buf[..before].copy_from_slice(&self.tail[self.tail.len() - before..]);
        buf[before..before + bytes.len()].copy_from_slice(&bytes);
        self.file.write(BLOCK + first, &buf)?;
        self.file.sync_data()?;
        // The tail: the bytes of the block holding `end`, before it.
        let block = end / BLOCK * BLOCK;
        if block > self.pos / BLOCK * BLOCK {
            self.tail.clear();
        }
        self.tail
            .extend_from_slice(&bytes[(block.max(start) - start) as usize..]);
        self.next_commit += 1;
        self.pos = end;
        for (seq, frame) in commit.readings {
            self.readings.insert(*seq, Arc::from(frame.as_slice()));
            self.next_seq = self.next_seq.max(seq + 1);
        }
        for seq in commit.acks {
            if self.readings.remove(seq).is_none() {
                self.cold_acks.insert(*seq);
            }
        }
        Ok(())
    }
}

/// Where a commit of `len` bytes goes when the last one ended at `pos`: at
/// `pos`, unless it would fit in one block but not in what is left of this
/// one (then at the next block, so it costs one block write, not two).
pub fn place(pos: u64, len: u64) -> u64 {
    let room = BLOCK - pos % BLOCK;
    if len <= room || len > BLOCK {
        pos
    } else {
        pos + room
    }
}

fn encoded_len(c: &Commit<'_>) -> usize {
    COMMIT_OVERHEAD
        + boot_bytes(c.boot_id).len()
        + c.readings.iter().map(|(_, f)| 4 + f.len()).sum::<usize>()
        + ranges(c.acks).len() * 16
}

/// Sorted sequence numbers as inclusive ranges.
fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn boot_bytes(boot_id: &str) -> &[u8] {
    &boot_id.as_bytes()[..boot_id.len().min(MAX_BOOT_ID)]
}

fn encode(generation: u64, number: u64, c: &Commit<'_>) -> Vec<u8> {
    let acks = ranges(c.acks);
    let boot = boot_bytes(c.boot_id);
    let mut out = Vec::with_capacity(encoded_len(c));
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&(c.readings.len() as u32).to_le_bytes());
    out.extend_from_slice(&(acks.len() as u32).to_le_bytes());
    out.extend_from_slice(&(boot.len() as u16).to_le_bytes());
    out.extend_from_slice(boot);
    for (_, frame) in c.readings {
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    for (first, last) in acks {
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&last.to_le_bytes());
    }
    let len = (out.len() + 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A commit read back.
struct Decoded {
    boot_id: String,
    /// (seq, reading frame)
    readings: Vec<(u64, Vec<u8>)>,
    /// Inclusive ranges.
    acks: Vec<(u64, u64)>,
    len: usize,
}

/// The commit at the start of `bytes`, if it is intact and the one expected.
fn decode(bytes: &[u8], generation: u64, number: u64) -> Option<Decoded> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let len = u32_at(0)? as usize;
    if len < COMMIT_OVERHEAD || len > bytes.len() {
        return None;
    }
    if u64_at(4)? != generation || u64_at(12)? != number {
        return None;
    }
    if crc32fast::hash(&bytes[..len - 4]) != u32_at(len - 4)? {
        return None;
    }
    let (count, acks) = (u32_at(20)?, u32_at(24)?);
    let boot_len = u16::from_le_bytes(bytes.get(28..30)?.try_into().ok()?) as usize;
    let boot_id = String::from_utf8(bytes.get(30..30 + boot_len)?.to_vec()).ok()?;
    let mut at = 30 + boot_len;
    let mut readings = Vec::new();
    for _ in 0..count {
        let n = u32_at(at)? as usize;
        let frame = bytes.get(at + 4..at + 4 + n)?;
        let seq = super::record::decode_reading(frame).ok()?.seq;
        readings.push((seq, frame.to_vec()));
        at += 4 + n;
    }
    let mut ranges = Vec::new();
    for _ in 0..acks {
        let (first, last) = (u64_at(at)?, u64_at(at + 8)?);
        // Ranges are what one commit acknowledged: a few thousand at most.
        if last < first || last - first > 1 << 24 {
            return None;
        }
        ranges.push((first, last));
        at += 16;
    }
    (at + 4 == len).then_some(Decoded {
        boot_id,
        readings,
        acks: ranges,
        len,
    })
}

/// What the segment file's `bytes` hold (see the module's format).
fn replay(bytes: &[u8]) -> Found {
    let mut out = Found::default();
    let Some((generation, next_seq)) = read_header(bytes) else {
        return out;
    };
    (out.replayed.generation, out.next_seq) = (generation, next_seq);
    let data = &bytes[BLOCK as usize..];
    let mut pos = 0usize;
    loop {
        let number = out.replayed.commits;
        let found = decode(&data[pos.min(data.len())..], generation, number).or_else(|| {
            let next = pos.next_multiple_of(BLOCK as usize);
            if next == pos || next >= data.len() {
                return None;
            }
            pos = next;
            decode(&data[pos..], generation, number)
        });
        let Some(commit) = found else {
            break;
        };
        let seqs = out.replayed.boots.entry(commit.boot_id).or_default();
        for (seq, frame) in commit.readings {
            // Numbers given stay given, even once acknowledged.
            out.next_seq = out.next_seq.max(seq + 1);
            seqs.push(seq);
            out.readings.insert(seq, frame.into());
        }
        for (first, last) in commit.acks {
            for seq in first..=last {
                if out.readings.remove(&seq).is_none() {
                    out.cold_acks.insert(seq);
                }
            }
        }
        pos += commit.len;
        out.replayed.commits += 1;
    }
    out.end = pos as u64;
    out
}

/// The header's generation and `next_seq`, if it is intact.
fn read_header(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < 2 * BLOCK as usize || bytes.get(..8)? != MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(
        bytes[HEADER_LEN..HEADER_LEN + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if crc32fast::hash(&bytes[..HEADER_LEN]) != crc {
        return None;
    }
    Some((u64_at(8), u64_at(16)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk;

    fn frame(seq: u64) -> (u64, Vec<u8>) {
        let mut f = Vec::new();
        super::super::record::encode_reading(&mut f, seq, 0, "pi", &format!("m v={seq}i 1"), None);
        (seq, f)
    }

    fn commit<'a>(readings: &'a [(u64, Vec<u8>)], acks: &'a [u64]) -> Commit<'a> {
        Commit {
            boot_id: "boot-a",
            readings,
            acks,
        }
    }

    fn open(dir: &Path) -> (Segment, Replayed) {
        Segment::open(&*disk::real(), &dir.join("j.segment"), 16).unwrap()
    }

    fn held(s: &Segment) -> Vec<u64> {
        s.readings.keys().copied().collect()
    }

    #[test]
    fn a_small_commit_goes_where_the_last_ended_or_to_the_next_block() {
        assert_eq!(place(0, 100), 0);
        assert_eq!(place(100, 200), 100);
        assert_eq!(place(4000, 96), 4000, "fits exactly");
        assert_eq!(place(4000, 97), 4096, "would straddle: next block");
        assert_eq!(place(4000, 5000), 4000, "bigger than a block: no padding");
    }

    #[test]
    fn acknowledgements_are_kept_as_ranges() {
        assert_eq!(ranges(&[5, 3, 4, 9, 10, 1]), [(1, 1), (3, 5), (9, 10)]);
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn commits_replay_with_their_acknowledgements_and_boot_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, replayed) = open(dir.path());
        assert_eq!(replayed, Replayed::default(), "a new file holds nothing");
        assert_eq!(
            std::fs::metadata(dir.path().join("j.segment"))
                .unwrap()
                .len(),
            17 * BLOCK
        );
        s.reset(10).unwrap();
        let batch: Vec<_> = (10..14).map(frame).collect();
        s.append(&commit(&batch, &[])).unwrap();
        // Acks of readings in the segment and in redb (3).
        s.append(&commit(&[frame(14)], &[11, 3, 12])).unwrap();
        drop(s);
        let (mut s, r) = open(dir.path());
        assert_eq!((r.generation, r.commits), (1, 2));
        assert_eq!(r.boots["boot-a"], [10, 11, 12, 13, 14]);
        assert_eq!(held(&s), [10, 13, 14]);
        assert_eq!(s.readings[&13][..], frame(13).1[..]);
        assert_eq!(s.cold_acks, Seqs::unit(3));
        assert_eq!(s.next_seq, 15, "numbers given stay given");
        // It goes on where it ended.
        s.append(&commit(&[frame(15)], &[10])).unwrap();
        drop(s);
        let (s, r) = open(dir.path());
        assert_eq!(r.commits, 3);
        assert_eq!(held(&s), [13, 14, 15]);
    }

    #[test]
    fn a_new_generation_makes_everything_before_it_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = open(dir.path());
        s.reset(1).unwrap();
        s.append(&commit(&[frame(1)], &[])).unwrap();
        s.reset(2).unwrap();
        drop(s);
        let (s, r) = open(dir.path());
        assert_eq!((r.generation, r.commits, s.next_seq), (2, 0, 2));
        assert!(s.readings.is_empty());
    }

    #[test]
    fn a_torn_commit_is_not_replayed_and_what_follows_it_never_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.segment");
        let (mut s, _) = open(dir.path());
        s.reset(1).unwrap();
        for seq in 1..=3 {
            s.append(&commit(&[frame(seq)], &[])).unwrap();
        }
        drop(s);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = BLOCK as usize + encode(1, 0, &commit(&[frame(1)], &[])).len();
        bytes[second + 40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (mut s, r) = open(dir.path());
        assert_eq!((r.commits, held(&s)), (1, vec![1]));
        // Going on after the cut: the torn commit's leftovers (commit 1,
        // and commit 2 behind it) are overwritten or passed, never read.
        s.append(&commit(&[frame(2)], &[])).unwrap();
        drop(s);
        let (s, r) = open(dir.path());
        assert_eq!((r.commits, held(&s)), (2, vec![1, 2]));
    }

    #[test]
    fn commits_fill_blocks_and_one_that_would_straddle_starts_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = open(dir.path());
        s.reset(1).unwrap();
        let mut seq = 1;
        // Commits of about 1.5 KiB: two per block, the third on the next.
        while s.pos < 3 * BLOCK {
            let batch: Vec<_> = (seq..seq + 30).map(frame).collect();
            s.append(&commit(&batch, &[])).unwrap();
            seq += 30;
        }
        assert_eq!(s.pos % BLOCK, s.pos - 3 * BLOCK, "ended inside block 3");
        drop(s);
        let (s, r) = open(dir.path());
        assert_eq!(s.readings.len() as u64, seq - 1, "every commit replayed");
        assert_eq!(r.commits, (seq - 1) / 30);
    }

    #[test]
    fn a_full_segment_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = open(dir.path());
        s.reset(1).unwrap();
        let big: Vec<_> = (1..2000).map(frame).collect();
        assert!(!s.fits(&commit(&big, &[])));
        assert!(s.fits(&commit(&big[..100], &[])));
    }
}
