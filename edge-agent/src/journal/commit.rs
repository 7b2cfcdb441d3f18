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
//! At open, whatever the segment holds of a generation not yet moved is
//! moved into redb in one transaction, which records the generation
//! (`segment_generation` in `meta`), so that a cut before the segment's new
//! header is written does not move it twice.

use std::collections::BTreeSet;
use std::sync::MutexGuard;

use redb::ReadableDatabase;
use telemetry::line_protocol;

use super::capacity::WhenFull;
use super::record::{self, Taken};
use super::segment::{self, Commit, Segment};
use super::tables::{
    META, READINGS, add_counters, append, begin, get, keep_next_seq, next_seq, put,
};
use super::{Committed, Counters, Journal, JournalError, Journaled};

/// The largest commit (in frame bytes) that goes to the segment: 16 blocks,
/// and at most a quarter of it. Bigger ones are catching up, where redb's
/// per-commit cost is small.
pub const HOT_MAX_BYTES: usize = 64 << 10;
/// Acknowledgements of readings in redb kept waiting before a redb
/// transaction deletes them (they are in memory).
const COLD_ACKS_MAX: usize = 20_000;
/// The last segment generation moved into redb.
pub(super) const SEGMENT_GENERATION: &str = "segment_generation";

/// Encoded readings: Kafka key, line protocol, when taken.
type Lines = Vec<(String, String, Option<Taken>)>;

impl Journal {
    /// Appends `readings` and deletes the acknowledged sequence numbers in
    /// `delete`, durably and atomically, after making room as
    /// `journal.when_full` says. Readings that cannot be encoded are left out
    /// and returned in [`Committed::rejected`]; readings refused because the
    /// journal is full (`reject_new`) are counted in [`Committed::policy`].
    pub fn commit<R: Journaled>(
        &self,
        readings: &[R],
        delete: &[u64],
    ) -> Result<Committed, JournalError> {
        let mut committed = Committed::default();
        let mut lines = Lines::with_capacity(readings.len());
        for r in readings {
            let reading = r.reading();
            match line_protocol::encode(reading) {
                Ok(line) => lines.push((
                    reading.tag("device_id").unwrap_or_default().to_owned(),
                    line,
                    r.taken(),
                )),
                Err(e) => committed.rejected.push(e),
            }
        }
        let batch: u64 = lines
            .iter()
            .map(|(key, line, _)| record::reading_len(key, line) as u64)
            .sum();
        // One commit at a time (the writer's); readers take only `segment`.
        let _one = self.commit_lock.lock().expect("commit lock");
        let mut segment = self.segment.lock().expect("segment lock");
        if !lines.is_empty() {
            self.when_full(segment.as_mut(), &mut lines, batch, &mut committed)?;
        }
        // A commit the policy removed readings for goes to redb with them;
        // one it only refused readings of records the refusal on its own.
        let removed = Counters {
            rejected_new: 0,
            ..committed.policy
        };
        if removed == Counters::default()
            && let Some(s) = segment.as_mut()
            && let Some((seqs, deleted)) = self.commit_hot(s, &lines, delete)?
        {
            committed.seqs = seqs;
            committed.deleted = deleted;
            self.count_rejected(committed.policy.rejected_new)?;
            return Ok(committed);
        }
        self.commit_cold(segment, &lines, delete, committed)
    }

    /// Step 2: if the journal may be full, deletes the acknowledged readings
    /// waiting in redb, and if that is not enough, applies the policy.
    fn when_full(
        &self,
        mut segment: Option<&mut Segment>,
        lines: &mut Lines,
        batch: u64,
        committed: &mut Committed,
    ) -> Result<(), JournalError> {
        // The redb transaction that follows may take the segment's readings.
        let batch = batch + segment.as_deref().map_or(0, held_bytes);
        if !self.may_be_full(batch)? || self.freed_acknowledged(segment.as_deref_mut(), batch)? {
            return Ok(());
        }
        match self.options().when_full {
            WhenFull::RejectNew => {
                committed.policy.rejected_new = lines.len() as u64;
                lines.clear();
            }
            WhenFull::DropOldest | WhenFull::Downsample => {
                let numbered = segment.as_deref().map_or(0, |s| s.next_seq);
                committed.policy.add(&self.make_room(batch, numbered)?);
                // The numbers the policy gave aggregates are given.
                if let Some(s) = segment {
                    let redb = self.with_db(|db| {
                        let tx = db.begin_read()?;
                        next_seq(&tx.open_table(READINGS)?, &tx.open_table(META)?)
                    })?;
                    s.next_seq = s.next_seq.max(redb);
                }
            }
        }
        Ok(())
    }

    /// Persists the count of readings refused (`reject_new`) by a commit
    /// that went to the segment.
    fn count_rejected(&self, rejected_new: u64) -> Result<(), JournalError> {
        if rejected_new == 0 {
            return Ok(());
        }
        let counted = Counters {
            rejected_new,
            ..Counters::default()
        };
        self.with_db(|db| {
            let tx = begin(db)?;
            add_counters(&mut tx.open_table(META)?, &counted)?;
            tx.commit()?;
            Ok(())
        })?;
        self.counters.lock().expect("counters lock").add(&counted);
        Ok(())
    }

    /// Step 3: the commit in the segment, if it is small and fits. Returns
    /// the numbers given and the acknowledged readings removed.
    fn commit_hot(
        &self,
        s: &mut Segment,
        lines: &Lines,
        delete: &[u64],
    ) -> Result<Option<(std::ops::Range<u64>, u64)>, JournalError> {
        let first = s.next_seq;
        if lines.is_empty() && delete.is_empty() {
            return Ok(Some((first..first, 0)));
        }
        let bytes: usize = lines
            .iter()
            .map(|(k, l, _)| record::reading_len(k, l))
            .sum();
        if bytes > HOT_MAX_BYTES.min(s.capacity() as usize / 4)
            || s.cold_acks.len() + delete.len() > COLD_ACKS_MAX
        {
            return Ok(None);
        }
        let frames: Vec<(u64, Vec<u8>)> = (first..)
            .zip(lines)
            .map(|(seq, (key, line, taken))| {
                let mut frame = Vec::with_capacity(record::reading_len(key, line));
                record::encode_reading(&mut frame, seq, self.boot_index, key, line, *taken);
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
        let (held, cold) = (s.readings.len() + frames.len(), s.cold_acks.len());
        s.append(&commit)
            .map_err(|source| self.segment_err(source))?;
        let deleted = held - s.readings.len() + s.cold_acks.len() - cold;
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
            cold = self.with_db(|db| {
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
    fn commit_cold(
        &self,
        segment: MutexGuard<'_, Option<Segment>>,
        lines: &Lines,
        delete: &[u64],
        mut committed: Committed,
    ) -> Result<Committed, JournalError> {
        let rejected_new = committed.policy.rejected_new;
        let moving = segment.as_ref().map(Moving::of);
        // Readers go on while redb commits: they see what moves in the
        // segment or in redb or both (and take it once), never in neither.
        drop(segment);
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
        self.counters.lock().expect("counters lock").add(&Counters {
            rejected_new,
            ..Counters::default()
        });
        self.stored_changed(change);
        let mut segment = self.segment.lock().expect("segment lock");
        if moving.is_some_and(|m| m.moves()) {
            // Else the generation goes on: nothing in it is in redb.
            self.new_generation(&mut segment, committed.seqs.end);
        } else if let Some(s) = segment.as_mut() {
            s.next_seq = s.next_seq.max(committed.seqs.end);
        }
        Ok(committed)
    }

    /// The redb transaction of [`Journal::commit_cold`]: (numbers given,
    /// acknowledged readings deleted, stored bytes changed).
    fn cold_tx(
        &self,
        segment: Option<&Moving>,
        lines: &Lines,
        delete: &[u64],
        rejected_new: u64,
    ) -> Result<(std::ops::Range<u64>, u64, i64), JournalError> {
        let acked: BTreeSet<u64> = delete.iter().copied().collect();
        self.with_db(|db| {
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
                            table.insert(*seq, frame.as_slice())?;
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
                let (seqs, added) = append(&mut table, self.boot_index, first, lines)?;
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
            self.reservation.cover(out.0.end);
            tx.commit()?;
            Ok(out)
        })
    }

    /// When the journal may be full: deletes the acknowledged readings
    /// still waiting in redb (they are not the policy's to drop or count);
    /// whether that made room for `batch`.
    fn freed_acknowledged(
        &self,
        segment: Option<&mut Segment>,
        batch: u64,
    ) -> Result<bool, JournalError> {
        let Some(s) = segment.filter(|s| !s.cold_acks.is_empty()) else {
            return Ok(false);
        };
        // After a refused commit the policy must free room whatever the
        // estimate says: deleting these does not change that.
        let refused = self.space.lock().expect("space lock").refused_commit;
        let all = || {
            self.with_db(|db| {
                let tx = begin(db)?;
                let mut change = 0i64;
                {
                    let mut table = tx.open_table(READINGS)?;
                    for &seq in &s.cold_acks {
                        if let Some(old) = table.remove(seq)? {
                            change -= old.value().len() as i64;
                        }
                    }
                }
                tx.commit()?;
                Ok(change)
            })
        };
        match all() {
            Ok(change) => self.stored_changed(change),
            // Scattered deletes rewrite many pages: a few at a time.
            Err(e) if e.is_no_space() => {
                let acked: Vec<u64> = s.cold_acks.iter().copied().collect();
                self.delete_in_small_steps(&acked)?;
            }
            Err(e) => return Err(e),
        }
        // The segment's own records of these acknowledgements stay valid:
        // replayed, they delete nothing twice.
        s.cold_acks.clear();
        {
            let mut space = self.space.lock().expect("space lock");
            space.full_since = None;
            space.refused_commit = refused;
        }
        Ok(!self.may_be_full(batch)?)
    }

    /// After the segment's content went into redb: a new generation from
    /// `next_seq`. If its header cannot be written the segment is given up
    /// for this run (every commit goes to redb): going on in the old
    /// generation would be skipped at the next open as already moved.
    fn new_generation(&self, segment: &mut Option<Segment>, next_seq: u64) {
        let Some(s) = segment.as_mut() else {
            return;
        };
        if let Err(e) = s.reset(next_seq) {
            tracing::error!(
                path = %segment::path_for(&self.path).display(),
                error = %e,
                "cannot start a new generation of the journal's segment; commits go to the \
                 journal file itself until the agent restarts (more flash wear, nothing lost)"
            );
            *segment = None;
        }
    }

    /// At open: the segment goes on where its last intact commit ended,
    /// holding what it held; a generation already moved into redb (a cut
    /// came before its successor's header was written) starts anew.
    pub(super) fn open_segment(&self) -> Result<(), JournalError> {
        let path = segment::path_for(&self.path);
        let blocks = segment::data_blocks_for(self.options().max_bytes);
        let (mut s, replayed) =
            Segment::open(&*self.disk, &path, blocks).map_err(|e| self.segment_err(e))?;
        let moved = self.with_db(|db| {
            let tx = db.begin_read()?;
            get(&tx.open_table(META)?, SEGMENT_GENERATION)
        })?;
        let next = self.stats()?.next_seq;
        if replayed.generation == 0 || replayed.generation <= moved {
            s.reset(next.max(s.next_seq))
                .map_err(|e| self.segment_err(e))?;
        } else {
            s.next_seq = s.next_seq.max(next);
            self.renumber_boots(&mut s, replayed.boots)?;
            if !s.readings.is_empty() || !s.cold_acks.is_empty() {
                tracing::info!(
                    path = %path.display(),
                    readings = s.readings.len(),
                    acknowledged = s.cold_acks.len(),
                    "readings committed in the journal's segment found again"
                );
            }
        }
        *self.segment.lock().expect("segment lock") = Some(s);
        Ok(())
    }

    /// Points the segment's readings at their boot in this journal's boots
    /// table (a salvage may have numbered the boots anew).
    fn renumber_boots(
        &self,
        s: &mut Segment,
        boots: std::collections::BTreeMap<String, Vec<u64>>,
    ) -> Result<(), JournalError> {
        for (boot_id, seqs) in boots {
            let index = self.import_boot(&boot_id)?;
            for seq in seqs {
                if let Some(frame) = s.readings.get_mut(&seq) {
                    *frame = with_boot(frame, index);
                }
            }
        }
        Ok(())
    }

    fn segment_err(&self, source: std::io::Error) -> JournalError {
        JournalError::Segment {
            path: segment::path_for(&self.path),
            source,
        }
    }
}

/// What a redb transaction takes from the segment (a copy: the segment's
/// lock is not held while redb commits).
struct Moving {
    readings: std::collections::BTreeMap<u64, Vec<u8>>,
    cold_acks: BTreeSet<u64>,
    generation: u64,
    next_seq: u64,
}

impl Moving {
    fn of(s: &Segment) -> Moving {
        Moving {
            readings: s.readings.clone(),
            cold_acks: s.cold_acks.clone(),
            generation: s.generation(),
            next_seq: s.next_seq,
        }
    }

    /// Whether anything leaves the segment (then it starts a new
    /// generation).
    fn moves(&self) -> bool {
        !self.readings.is_empty() || !self.cold_acks.is_empty()
    }
}

/// Bytes of readings the segment holds (what moving them to redb adds).
fn held_bytes(s: &Segment) -> u64 {
    s.readings.values().map(|f| f.len() as u64).sum()
}

/// A reading frame with its boot index replaced (the segment's readings
/// were numbered against the journal's boots table as it was; after a
/// salvage it may number them differently).
fn with_boot(frame: &[u8], boot: u32) -> Vec<u8> {
    match record::decode_reading(frame) {
        Ok(r) if r.boot != boot => {
            let mut out = Vec::with_capacity(frame.len());
            record::encode_reading(&mut out, r.seq, boot, r.key, r.line, r.taken);
            out
        }
        _ => frame.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
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
    fn written_by_a_field_commit(j: &Journal, disk: &PowerCutDisk, i: i64) -> u64 {
        let before = disk.written();
        let readings: Vec<_> = (i..i + 5).map(reading).collect();
        let acked: Vec<u64> = (1..=5).map(|n| (i as u64).saturating_sub(5) + n).collect();
        j.commit(&readings, if i > 0 { &acked } else { &[] })
            .unwrap();
        disk.written() - before
    }

    #[test]
    fn a_commit_at_a_field_rate_writes_one_block() {
        let disk = PowerCutDisk::new();
        let j = open(&disk);
        // (The first also reserves sequence numbers ahead: a few bytes in
        // another file, once per 65,536 readings.)
        assert!(written_by_a_field_commit(&j, &disk, 0) < 4096 + 64);
        for i in (5..200).step_by(5) {
            assert_eq!(written_by_a_field_commit(&j, &disk, i), 4096, "commit {i}");
        }
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
    fn a_full_segment_moves_into_redb_in_one_transaction() {
        let disk = PowerCutDisk::new();
        let j = open(&disk);
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
