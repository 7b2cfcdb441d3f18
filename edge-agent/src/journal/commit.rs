//! [`Journal::commit`]: the commit protocol, hot segment or redb.
//!
//! 1. The readings are encoded (line protocol in a reading frame).
//! 2. If the journal may be full, the full-journal policy makes room in
//!    redb first (numbering after the segment's readings, and deleting the
//!    acknowledged readings still waiting there).
//! 3. A small commit (what field rates give) goes to the hot segment: one
//!    block write and one `fdatasync` ([`super::segment`]), its
//!    acknowledgements recorded with it.
//! 4. Anything else (a commit over [`HOT_MAX_BYTES`], a full segment, a
//!    commit the policy acted on, too many acknowledgements of readings in
//!    redb waiting) is one redb transaction that also takes the segment's
//!    readings and deletes every acknowledged reading; then the segment
//!    starts a new generation.
//!
//! The redb transaction records the generation it moved
//! (`segment_generation` in `meta`), so that after a cut before the
//! segment's new header was written, opening does not take the old
//! generation's readings again (`Journal::open_segment`).
//!
//! Every commit ends by publishing what the segment holds to readers
//! (`Journal::publish`): the writer takes no lock, and readers never wait
//! for it.

use std::collections::BTreeSet;

use redb::ReadableDatabase;

use super::capacity::WhenFull;
use super::record;
use super::segment::{self, Commit, Contents, Segment};
use super::tables::{META, READINGS, add_counters, append, begin, keep_next_seq, next_seq, put};
use super::{Committed, Counters, Encoded, Journal, JournalError, Journaled};

/// The largest commit (in frame bytes) that goes to the segment: 16 blocks,
/// and at most a quarter of it. Bigger ones are catching up, where redb's
/// per-commit cost is small.
pub const HOT_MAX_BYTES: usize = 64 << 10;
/// Acknowledgements of readings in redb kept waiting before a redb
/// transaction deletes them (they are in memory).
const COLD_ACKS_MAX: usize = 20_000;
/// The last segment generation moved into redb.
pub(super) const SEGMENT_GENERATION: &str = "segment_generation";

impl Journal {
    /// Appends `readings` and deletes the acknowledged sequence numbers in
    /// `delete`, durably and atomically, after making room as
    /// `journal.when_full` says. Readings that cannot be encoded are left out
    /// and returned in [`Committed::rejected`]; readings refused because the
    /// journal is full (`reject_new`) are counted in [`Committed::policy`].
    pub fn commit<R: Journaled>(
        &mut self,
        readings: &[R],
        delete: &[u64],
    ) -> Result<Committed, JournalError> {
        let mut rejected = Vec::new();
        let mut lines = Vec::with_capacity(readings.len());
        for r in readings {
            match Encoded::new(r) {
                Ok(e) => lines.push(e),
                Err(e) => rejected.push(e),
            }
        }
        let mut committed = self.commit_encoded(&lines, delete)?;
        committed.rejected = rejected;
        Ok(committed)
    }

    /// [`Journal::commit`] of readings already encoded.
    pub fn commit_encoded(
        &mut self,
        lines: &[Encoded],
        delete: &[u64],
    ) -> Result<Committed, JournalError> {
        let result = self.commit_unpublished(lines, delete);
        // Also after a failure: what did happen (deletes in small steps, a
        // segment given up) is what readers must see.
        self.publish();
        result
    }

    fn commit_unpublished(
        &mut self,
        mut lines: &[Encoded],
        delete: &[u64],
    ) -> Result<Committed, JournalError> {
        let mut committed = Committed::default();
        let batch: u64 = lines
            .iter()
            .map(|e| record::reading_len(&e.key, &e.line) as u64)
            .sum();
        if !lines.is_empty() && self.when_full(lines.len(), batch, &mut committed)? {
            lines = &[];
        }
        // A commit the policy removed readings for goes to redb with them;
        // one it only refused readings of records the refusal on its own.
        let removed = Counters {
            rejected_new: 0,
            ..committed.policy
        };
        if removed == Counters::default()
            && let Some((seqs, deleted)) = self.commit_hot(lines, delete)?
        {
            committed.seqs = seqs;
            committed.deleted = deleted;
            self.count_rejected(committed.policy.rejected_new)?;
            return Ok(committed);
        }
        self.commit_cold(lines, delete, committed)
    }

    /// Step 2: if the journal may be full, deletes the acknowledged readings
    /// waiting in redb, and if that is not enough, applies the policy.
    /// Returns whether the `count` new readings (`batch` bytes) are refused
    /// (`reject_new`).
    fn when_full(
        &mut self,
        count: usize,
        batch: u64,
        committed: &mut Committed,
    ) -> Result<bool, JournalError> {
        // The redb transaction that follows may take the segment's readings.
        let batch = batch + self.segment.as_ref().map_or(0, held_bytes);
        if !self.may_be_full(batch)? || self.freed_acknowledged(batch)? {
            return Ok(false);
        }
        match self.options().when_full {
            WhenFull::RejectNew => {
                committed.policy.rejected_new = count as u64;
                return Ok(true);
            }
            WhenFull::DropOldest | WhenFull::Downsample => {
                let numbered = self.segment.as_ref().map_or(0, |s| s.next_seq);
                let done = self.make_room(batch, numbered)?;
                committed.policy.add(&done);
                // The numbers the policy gave aggregates are given.
                if self.segment.is_some() {
                    let redb = self.read_db(|db| {
                        let tx = db.begin_read()?;
                        next_seq(&tx.open_table(READINGS)?, &tx.open_table(META)?)
                    })?;
                    if let Some(s) = self.segment.as_mut() {
                        s.next_seq = s.next_seq.max(redb);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Persists the count of readings refused (`reject_new`) by a commit
    /// that went to the segment.
    fn count_rejected(&mut self, rejected_new: u64) -> Result<(), JournalError> {
        if rejected_new == 0 {
            return Ok(());
        }
        let counted = Counters {
            rejected_new,
            ..Counters::default()
        };
        self.with_db(|_, db| {
            let tx = begin(db)?;
            add_counters(&mut tx.open_table(META)?, &counted)?;
            tx.commit()?;
            Ok(())
        })?;
        self.counters.add(&counted);
        Ok(())
    }

    /// Step 3: the commit in the segment, if there is one and the commit is
    /// small and fits. Returns the numbers given and the acknowledged
    /// readings removed.
    fn commit_hot(
        &mut self,
        lines: &[Encoded],
        delete: &[u64],
    ) -> Result<Option<(std::ops::Range<u64>, u64)>, JournalError> {
        let Some(s) = self.segment.as_ref() else {
            return Ok(None);
        };
        let first = s.next_seq;
        if lines.is_empty() && delete.is_empty() {
            return Ok(Some((first..first, 0)));
        }
        let bytes: usize = lines
            .iter()
            .map(|e| record::reading_len(&e.key, &e.line))
            .sum();
        if bytes > HOT_MAX_BYTES.min(s.capacity() as usize / 4)
            || s.cold_acks.len() + delete.len() > COLD_ACKS_MAX
        {
            return Ok(None);
        }
        let frames: Vec<(u64, Vec<u8>)> = (first..)
            .zip(lines)
            .map(|(seq, e)| {
                let mut frame = Vec::with_capacity(record::reading_len(&e.key, &e.line));
                record::encode_reading(&mut frame, seq, self.boot_index, &e.key, &e.line, e.taken);
                (seq, frame)
            })
            .collect();
        let acks = self.held(s, delete)?;
        let boot_id = self.boot_id();
        let commit = Commit {
            boot_id: &boot_id,
            readings: &frames,
            acks: &acks,
        };
        if !s.fits(&commit) {
            return Ok(None);
        }
        let end = first + frames.len() as u64;
        self.reservation.cover(end);
        let s = self.segment.as_mut().expect("checked above");
        let (held, cold) = (s.readings.len() + frames.len(), s.cold_acks.len());
        let appended = s.append(&commit);
        let deleted = held - s.readings.len() + s.cold_acks.len() - cold;
        appended.map_err(|source| self.segment_err(source))?;
        Ok(Some((first..end, deleted as u64)))
    }

    /// Which of the acknowledged `delete` the journal holds (in the
    /// segment, or in redb and not already acknowledged): an
    /// acknowledgement of anything else changes nothing.
    fn held(&self, s: &Segment, delete: &[u64]) -> Result<Vec<u64>, JournalError> {
        let mut cold: Vec<u64> = delete
            .iter()
            .copied()
            .filter(|seq| !s.readings.contains_key(seq) && !s.cold_acks.contains(seq))
            .collect();
        if !cold.is_empty() {
            cold = self.read_db(|db| {
                let tx = db.begin_read()?;
                let table = tx.open_table(READINGS)?;
                let mut held = Vec::with_capacity(cold.len());
                for seq in cold {
                    if table.get(seq)?.is_some() {
                        held.push(seq);
                    }
                }
                Ok(held)
            })?;
        }
        let mut acks: Vec<u64> = delete
            .iter()
            .copied()
            .filter(|seq| s.readings.contains_key(seq))
            .collect();
        acks.extend(cold);
        Ok(acks)
    }

    /// Step 4: one redb transaction with the segment's readings, this
    /// commit and every acknowledged deletion; then a new generation.
    /// Readers go on meanwhile: they see what moves in the segment (as last
    /// published) or in redb or both (and take it once), never in neither.
    fn commit_cold(
        &mut self,
        lines: &[Encoded],
        delete: &[u64],
        mut committed: Committed,
    ) -> Result<Committed, JournalError> {
        let rejected_new = committed.policy.rejected_new;
        let moving = self.segment.as_ref().map(Segment::contents);
        let mut result = self.cold_tx(moving.as_ref(), lines, delete, rejected_new);
        let cold_acks = moving.as_ref().map_or(0, |m| m.cold_acks.len());
        if let Err(e) = &result
            && e.is_no_space()
            && delete.len() + cold_acks > 0
        {
            // Scattered deletes rewrite many pages at once: free the
            // acknowledged readings first, a few pages at a time (they make
            // the room), then append.
            let mut acked: Vec<u64> = delete.to_vec();
            acked.extend(moving.iter().flat_map(|m| m.cold_acks.iter().copied()));
            committed.deleted += self.delete_in_small_steps(&acked)?;
            result = self.cold_tx(moving.as_ref(), lines, delete, rejected_new);
        }
        let (seqs, deleted, change) = result?;
        committed.seqs = seqs;
        committed.deleted += deleted;
        self.counters.add(&Counters {
            rejected_new,
            ..Counters::default()
        });
        self.stored_changed(change);
        if moving.is_some_and(|m| m.moves()) {
            // Else the generation goes on: nothing in it is in redb.
            self.new_generation(committed.seqs.end);
        } else if let Some(s) = self.segment.as_mut() {
            s.next_seq = s.next_seq.max(committed.seqs.end);
        }
        Ok(committed)
    }

    /// The redb transaction of [`Journal::commit_cold`]: (numbers given,
    /// acknowledged readings deleted, stored bytes changed).
    fn cold_tx(
        &mut self,
        segment: Option<&Contents>,
        lines: &[Encoded],
        delete: &[u64],
        rejected_new: u64,
    ) -> Result<(std::ops::Range<u64>, u64, i64), JournalError> {
        let acked: BTreeSet<u64> = delete.iter().copied().collect();
        self.with_db(|j, db| {
            let tx = begin(db)?;
            let out = {
                let mut table = tx.open_table(READINGS)?;
                let mut meta = tx.open_table(META)?;
                let (mut change, mut deleted, mut floor) = (0i64, 0u64, 0);
                if let Some(s) = segment {
                    for (seq, frame) in &s.readings {
                        if acked.contains(seq) {
                            deleted += 1;
                        } else {
                            table.insert(*seq, &**frame)?;
                            change += frame.len() as i64;
                        }
                    }
                    for &seq in &s.cold_acks {
                        if let Some(old) = table.remove(seq)? {
                            change -= old.value().len() as i64;
                        }
                    }
                    if s.moves() {
                        put(&mut meta, SEGMENT_GENERATION, s.generation)?;
                    }
                    floor = s.next_seq;
                }
                let first = next_seq(&table, &meta)?.max(floor);
                let (seqs, added) = append(&mut table, j.boot_index, first, lines)?;
                change += added;
                for &seq in delete {
                    if let Some(old) = table.remove(seq)? {
                        change -= old.value().len() as i64;
                        deleted += 1;
                    }
                }
                keep_next_seq(&table, &mut meta, seqs.end)?;
                add_counters(
                    &mut meta,
                    &Counters {
                        rejected_new,
                        ..Counters::default()
                    },
                )?;
                (seqs, deleted, change)
            };
            j.reservation.cover(out.0.end);
            tx.commit()?;
            Ok(out)
        })
    }

    /// When the journal may be full: deletes the acknowledged readings
    /// still waiting in redb (they are not the policy's to drop or count);
    /// whether that made room for `batch`.
    fn freed_acknowledged(&mut self, batch: u64) -> Result<bool, JournalError> {
        let Some(acks) = self
            .segment
            .as_ref()
            .filter(|s| !s.cold_acks.is_empty())
            .map(|s| s.cold_acks.clone())
        else {
            return Ok(false);
        };
        // After a refused commit the policy must free room whatever the
        // estimate says: deleting these does not change that.
        let refused = self.space.refused_commit;
        let all = self.with_db(|_, db| {
            let tx = begin(db)?;
            let mut change = 0i64;
            {
                let mut table = tx.open_table(READINGS)?;
                for &seq in &acks {
                    if let Some(old) = table.remove(seq)? {
                        change -= old.value().len() as i64;
                    }
                }
            }
            tx.commit()?;
            Ok(change)
        });
        match all {
            Ok(change) => self.stored_changed(change),
            // Scattered deletes rewrite many pages: a few at a time.
            Err(e) if e.is_no_space() => {
                let acked: Vec<u64> = acks.into_iter().collect();
                self.delete_in_small_steps(&acked)?;
            }
            Err(e) => return Err(e),
        }
        // The segment's own records of these acknowledgements stay valid:
        // replayed, they delete nothing twice.
        if let Some(s) = self.segment.as_mut() {
            s.cold_acks.clear();
        }
        self.space.full_since = None;
        self.space.refused_commit = refused;
        Ok(!self.may_be_full(batch)?)
    }

    /// After the segment's content went into redb: a new generation from
    /// `next_seq`. If its header cannot be written the segment is given up
    /// for this run (every commit goes to redb): going on in the old
    /// generation would be skipped at the next open as already moved.
    fn new_generation(&mut self, next_seq: u64) {
        let Some(s) = self.segment.as_mut() else {
            return;
        };
        if let Err(e) = s.reset(next_seq) {
            tracing::error!(
                path = %segment::path_for(self.path()).display(),
                error = %e,
                "cannot start a new generation of the journal's segment; commits go to the \
                 journal file itself until the agent restarts (more flash wear, nothing lost)"
            );
            self.segment = None;
        }
    }

    pub(super) fn segment_err(&self, source: std::io::Error) -> JournalError {
        JournalError::Segment {
            path: segment::path_for(self.path()),
            source,
        }
    }
}

/// Bytes of readings the segment holds (what moving them to redb adds).
fn held_bytes(s: &Segment) -> u64 {
    s.readings.values().map(|f| f.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::disk::SECTOR;
    use crate::disk::power_cut::PowerCutDisk;
    use crate::journal::JournalOptions;

    fn reading(i: i64) -> telemetry::Reading {
        telemetry::Reading::new("weather", 1_700_000_000_000_000_000 + i)
            .with_tag("device_id", "pi-1")
            .with_field("pressure_hpa", 1000.0 + i as f64)
            .with_field("temperature_c", 20.5)
    }

    fn open(disk: &PowerCutDisk) -> Journal {
        let options = JournalOptions::for_inspection();
        Journal::open_on(Arc::new(disk.clone()), Path::new("/j/j.redb"), options, "b")
            .unwrap()
            .0
    }

    /// What one commit of five readings and five acknowledgements (one
    /// second at a field rate) writes.
    fn written_by_a_field_commit(j: &mut Journal, disk: &PowerCutDisk, i: i64) -> u64 {
        let before = disk.written();
        let readings: Vec<_> = (i..i + 5).map(reading).collect();
        let acked: Vec<u64> = (1..=5).map(|n| (i as u64).saturating_sub(5) + n).collect();
        j.commit(&readings, if i > 0 { &acked } else { &[] })
            .unwrap();
        disk.written() - before
    }

    #[test]
    fn a_commit_at_a_field_rate_writes_a_few_sectors_not_a_block() {
        let disk = PowerCutDisk::new();
        let mut j = open(&disk);
        // (The first also reserves sequence numbers ahead: a few bytes in
        // another file, once per 65,536 readings.)
        assert!(written_by_a_field_commit(&mut j, &disk, 0) < 4096 + 64);
        let mut total = 0;
        for i in (5..200).step_by(5) {
            let written = written_by_a_field_commit(&mut j, &disk, i);
            // About 700 bytes of readings and acknowledgements: the sectors
            // they touch, never the whole 4 KiB block.
            assert!(
                written.is_multiple_of(SECTOR) && (SECTOR..=3 * SECTOR).contains(&written),
                "commit {i} wrote {written} bytes"
            );
            total += written;
        }
        assert!(
            total < 39 * 2 * SECTOR + 39 * SECTOR / 2,
            "{total} bytes for 39 commits"
        );
        assert_eq!(j.stats().unwrap().records, 5, "the last five are held");
        // Read back after a restart, from the segment alone.
        drop(j);
        let j = open(&disk);
        let held: Vec<u64> = j
            .read_after(0, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().seq)
            .collect();
        assert_eq!(held, [196, 197, 198, 199, 200]);
    }

    #[test]
    fn a_reader_sees_every_commit_once_in_the_segment_or_after_it_moved_into_redb() {
        let disk = PowerCutDisk::new();
        let mut j = open(&disk);
        // Taken before any commit, as the forwarder's is.
        let reader = j.reader();
        let seqs = |r: &crate::journal::JournalReader| -> Vec<u64> {
            r.read_after(0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap().seq)
                .collect()
        };
        j.commit(&[reading(0), reading(1)], &[]).unwrap();
        assert_eq!(seqs(&reader), [1, 2], "held in the segment");
        // Too big for the segment: one redb transaction moves the segment's
        // readings (less the acknowledged one) with it.
        let big: Vec<_> = (2..2000).map(reading).collect();
        let before = disk.written();
        j.commit(&big, &[1]).unwrap();
        assert!(disk.written() - before > 64 << 10, "went to redb");
        assert_eq!(seqs(&reader), (2..=2000).collect::<Vec<_>>());
        let stats = reader.stats().unwrap();
        assert_eq!((stats.records, stats.next_seq), (1999, 2001));
    }

    #[test]
    fn a_full_segment_moves_into_redb_in_one_transaction() {
        let disk = PowerCutDisk::new();
        let mut j = open(&disk);
        // Nothing acknowledged: the segment fills, then its readings and
        // the next commit go to redb together.
        let mut redb_commits = 0;
        for i in (0..20_000).step_by(5) {
            let readings: Vec<_> = (i..i + 5).map(reading).collect();
            let before = disk.written();
            j.commit(&readings, &[]).unwrap();
            redb_commits += u64::from(disk.written() - before > 4096);
        }
        assert!(
            (1..=20).contains(&redb_commits),
            "{redb_commits} redb commits"
        );
        let stats = j.stats().unwrap();
        assert_eq!((stats.records, stats.next_seq), (20_000, 20_001));
        let all: Vec<u64> = j
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().seq)
            .collect();
        assert_eq!(all, (1..=20_000).collect::<Vec<_>>());
    }
}
