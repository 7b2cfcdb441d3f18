//! When the journal is full: measuring its space, and carrying out what the
//! policy (`journal.when_full`) decided ([`super::capacity::plan`]): deleting
//! the oldest readings, or replacing them by aggregates.
//!
//! What is in use is redb's count of allocated pages, which walks the tree
//! (about 2 ms per MB), so it is measured only when an estimate (the last
//! count plus the bytes stored since, times the file-to-data ratio then
//! seen) says the journal may be full. redb packs appended records densely:
//! about 1.05 file bytes per stored byte were measured here.
//!
//! A refused growth (the limit, or a full disk) leaves redb unusable until it
//! is reopened (it latches I/O errors), so the journal reopens it and from
//! then on assumes the file cannot grow until the disk has gained space.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use telemetry::{Reading, line_protocol};

use super::capacity::{self, RATIO};
use super::downsample::{self, is_aggregate_line};
use super::record;
use super::tables::{META, READINGS, add_counters, append, begin, keep_next_seq, next_seq};
use super::{Counters, Encoded, Journal, JournalError};

/// Most records one step of the policy removes, so that a step is a
/// bounded transaction.
const POLICY_STEP: usize = 50_000;
/// Acknowledged readings deleted per transaction when one commit holding
/// them all did not fit ([`Journal::delete_in_small_steps`]).
const DELETE_STEP: usize = 32;
/// How long a measurement that found the journal full is trusted before
/// measuring again (under `reject_new`, every commit asks).
const FULL_MEASUREMENT_TTL: Duration = Duration::from_secs(2);

/// New records a policy step appends (aggregates): Kafka key and line
/// (aggregates carry no [`record::Taken`]: they are made, not sampled).
type Appended = Vec<Encoded>;

/// What [`Journal::oldest_raw`] picked.
type Picked = (Vec<u64>, Vec<(String, Reading)>, u64);

/// Per Kafka key (one device per journal in practice, but keys are kept
/// apart anyway), the aggregates of `readings` over windows of `window` ns,
/// as records to append.
fn aggregates_of(readings: Vec<(String, Reading)>, window: i64) -> Appended {
    let mut by_key: HashMap<String, Vec<Reading>> = HashMap::new();
    for (key, reading) in readings {
        by_key.entry(key).or_default().push(reading);
    }
    let mut aggregates = Vec::new();
    for (key, readings) in by_key {
        for agg in downsample::aggregate(readings, window) {
            if let Ok(line) = line_protocol::encode(&agg) {
                aggregates.push(Encoded {
                    key: key.clone(),
                    line,
                    taken: None,
                });
            }
        }
    }
    aggregates
}

impl Journal {
    /// Whether `batch` more bytes may not fit: first by the estimate, then,
    /// if that says full, by a measurement.
    pub(super) fn may_be_full(&mut self, batch: u64) -> Result<bool, JournalError> {
        if self.space.refused_commit {
            return Ok(true);
        }
        let limit = self.options().max_bytes;
        let (mut estimate, full_since) = (self.space.estimate(limit), self.space.full_since);
        let batch = (batch as f64 * RATIO) as u64;
        if estimate.used + estimate.headroom(batch) > estimate.file_len {
            // The file may have to grow for this commit. A growth that fails
            // leaves no free page to free space with, so check now, cheaply,
            // that the disk can take it: the policy then acts while there is
            // still headroom.
            self.space.file_len = self.disk().file_len(self.path()).unwrap_or(0);
            self.space.disk_available = self.disk().available(self.path());
            estimate = self.space.estimate(limit);
        }
        if !estimate.is_full(batch) {
            return Ok(false);
        }
        if full_since.is_some_and(|t| t.elapsed() < FULL_MEASUREMENT_TTL) {
            return Ok(true);
        }
        let measured = self.measure()?;
        let full = measured.is_full(batch);
        self.space.full_since = full.then(Instant::now);
        Ok(full)
    }

    /// Deletes acknowledged readings in transactions of [`DELETE_STEP`]:
    /// when one commit holding them all could not grow the file. Each
    /// deletion dirties at most one leaf page, so each step fits in the
    /// headroom. Returns how many were deleted.
    pub(super) fn delete_in_small_steps(&mut self, delete: &[u64]) -> Result<u64, JournalError> {
        let mut deleted = 0;
        for chunk in delete.chunks(DELETE_STEP) {
            let (n, removed) = self.with_db(|_, db| {
                let tx = begin(db)?;
                let (mut n, mut removed) = (0, 0);
                {
                    let mut table = tx.open_table(READINGS)?;
                    let mut meta = tx.open_table(META)?;
                    let next = next_seq(&table, &meta)?;
                    for &seq in chunk {
                        if let Some(old) = table.remove(seq)? {
                            removed += old.value().len() as i64;
                            n += 1;
                        }
                    }
                    // Invariant 1, should the newest go.
                    keep_next_seq(&table, &mut meta, next)?;
                }
                tx.commit()?;
                Ok((n, removed))
            })?;
            self.stored_changed(-removed);
            deleted += n;
        }
        Ok(deleted)
    }

    /// Applies the full-journal policy until `batch` fits with headroom.
    /// Aggregates are numbered from `next_seq` at least (the numbers before
    /// it are given, in the hot segment).
    pub(super) fn make_room(
        &mut self,
        batch: u64,
        next_seq: u64,
    ) -> Result<Counters, JournalError> {
        let mut done = Counters::default();
        // A refused commit proves the estimate wrong (redb needed more fresh
        // pages than it allows for): free at least the batch once more.
        let mut forced = std::mem::take(&mut self.space.refused_commit).then_some(batch.max(1));
        let when_full = self.options().when_full;
        loop {
            let space = self.measure()?;
            let forced = forced.take().unwrap_or(0);
            let Some(plan) = capacity::plan(&space, batch, when_full, forced) else {
                self.space.full_since = None;
                return Ok(done);
            };
            let aggregated = match plan.aggregate {
                true => self.downsample_step(plan.stored, next_seq)?,
                false => None,
            };
            let step = match aggregated {
                Some(step) => step,
                None => self.drop_step(plan.stored, next_seq)?,
            };
            if step == Counters::default() {
                return Err(JournalError::Full {
                    path: self.path().to_owned(),
                    reason: format!(
                        "nothing left to remove; {} of {} bytes in use",
                        space.used,
                        space.capacity()
                    ),
                });
            }
            self.counters.add(&step);
            done.add(&step);
        }
    }

    /// Deletes the oldest records holding at least `stored_to_free` bytes.
    fn drop_step(&mut self, stored_to_free: u64, next_seq: u64) -> Result<Counters, JournalError> {
        self.policy_tx(next_seq, |tx| {
            let mut table = tx.open_table(READINGS)?;
            let (mut freed, mut dropped) = (0, 0);
            while freed < stored_to_free && dropped < POLICY_STEP as u64 {
                let Some((_, value)) = table.pop_first()? else {
                    break;
                };
                freed += value.value().len() as u64;
                dropped += 1;
            }
            let done = Counters {
                dropped_oldest: dropped,
                ..Counters::default()
            };
            Ok((freed, Vec::new(), done))
        })
    }

    /// Replaces the oldest raw readings holding at least `stored_to_free`
    /// bytes by aggregates. `None` when there is nothing raw to aggregate, or
    /// when aggregating would not save at least half the bytes (one reading
    /// per series and window): then the caller drops instead.
    fn downsample_step(
        &mut self,
        stored_to_free: u64,
        next_seq: u64,
    ) -> Result<Option<Counters>, JournalError> {
        let window = self
            .options()
            .downsample_window
            .as_nanos()
            .min(i64::MAX as u128) as i64;
        let (seqs, readings, raw_bytes) = self.oldest_raw(stored_to_free)?;
        if seqs.is_empty() {
            return Ok(None);
        }
        let mut aggregates = aggregates_of(readings, window);
        let agg_bytes: u64 = aggregates
            .iter()
            .map(|e| record::reading_len(&e.key, &e.line) as u64)
            .sum();
        if !capacity::worth_aggregating(raw_bytes, agg_bytes) {
            return Ok(None);
        }
        let replaced = seqs.len() as u64;
        self.policy_tx(next_seq, |tx| {
            let mut table = tx.open_table(READINGS)?;
            let mut freed = 0;
            for seq in &seqs {
                if let Some(old) = table.remove(*seq)? {
                    freed += old.value().len() as u64;
                }
            }
            let done = Counters {
                aggregated: replaced,
                aggregates: aggregates.len() as u64,
                ..Counters::default()
            };
            Ok((freed, std::mem::take(&mut aggregates), done))
        })
        .map(Some)
    }

    /// The oldest raw readings (aggregates are passed over) holding about
    /// twice `stored_to_free` bytes, at most [`POLICY_STEP`]: their sequence
    /// numbers, Kafka keys and readings, and the bytes they take.
    fn oldest_raw(&self, stored_to_free: u64) -> Result<Picked, JournalError> {
        self.read_db(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(READINGS)?;
            let (mut seqs, mut readings, mut bytes) = (Vec::new(), Vec::new(), 0u64);
            for entry in table.iter()? {
                let (seq, value) = entry?;
                let value = value.value();
                let Ok(r) = record::decode_reading(value) else {
                    continue;
                };
                if is_aggregate_line(r.line) {
                    continue;
                }
                let Ok(reading) = line_protocol::parse_line(r.line, 0) else {
                    continue;
                };
                seqs.push(seq.value());
                readings.push((r.key.to_owned(), reading));
                bytes += value.len() as u64;
                if (bytes >= stored_to_free * 2 && seqs.len() >= 1000) || seqs.len() >= POLICY_STEP
                {
                    break;
                }
            }
            Ok((seqs, readings, bytes))
        })
    }

    /// One transaction of the full-journal policy: `f` removes what it
    /// removes and returns (stored bytes freed, aggregates to append with
    /// fresh sequence numbers, counters); the counters are updated in the
    /// same transaction.
    fn policy_tx(
        &mut self,
        floor: u64,
        f: impl FnOnce(&WriteTransaction) -> Result<(u64, Appended, Counters), redb::Error>,
    ) -> Result<Counters, JournalError> {
        let result = self.with_db(|j, db| {
            let tx = begin(db)?;
            // Numbered before `f` removes anything: with the newest readings
            // gone, the table alone would hand their numbers out again.
            let first = next_seq(&tx.open_table(READINGS)?, &tx.open_table(META)?)?.max(floor);
            let (freed, aggregates, done) = f(&tx)?;
            let change = {
                let mut table = tx.open_table(READINGS)?;
                let mut meta = tx.open_table(META)?;
                let (seqs, added) = append(&mut table, j.boot_index, first, &aggregates)?;
                keep_next_seq(&table, &mut meta, seqs.end)?;
                add_counters(&mut meta, &done)?;
                added - freed as i64
            };
            tx.commit()?;
            Ok((done, change))
        });
        let (done, change) = result?;
        self.stored_changed(change);
        Ok(done)
    }

    /// After a write transaction committed: notes the stored bytes it
    /// appended (positive) or deleted since the last measurement; a refused
    /// commit before it is made up for.
    pub(super) fn stored_changed(&mut self, change: i64) {
        self.space.changed += change;
        self.space.refused_commit = false;
    }
}
