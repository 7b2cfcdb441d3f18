//! # The batcher: lines grouped into one database write
//!
//! Pure bookkeeping. The decoder appends a record's lines to the open batch
//! ([`Batcher::lines`]), and the record is then closed with where it came
//! from ([`Batcher::took`]); a batch is ready when it reaches `max_lines` or
//! `max_bytes`, or when its first record has waited `max_wait`. Records that
//! produced no line (nothing in them) are still recorded, and so are records
//! bound for the dead-letter topic, with their letter: their offsets may be
//! committed only together with the lines before them, once the letter is
//! acknowledged.
//!
//! Records are consumed and settled in order, one at a time, so within a
//! batch each partition's offsets are contiguous: committing the highest one
//! + 1 never skips a record that has not reached the database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::dead_letter::DeadLetter;
use crate::record::{Lines, Mark, Origin, Partition};

/// A batch ready to write.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: Lines,
    /// Records that can never be written, to go to the dead-letter topic.
    pub letters: Vec<DeadLetter>,
    /// Per (topic, partition), the offset to commit once the batch is
    /// written: the highest offset it settles, plus one.
    pub commit: BTreeMap<Partition, i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_lines: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    batch: Batch,
    letter_bytes: usize,
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Batcher {
            limits,
            batch: Batch::default(),
            letter_bytes: 0,
            opened: None,
        }
    }

    /// The open batch's lines, for the decoder to append a record's lines
    /// to. Take a [`Lines::mark`] first and pass it to [`Batcher::took`].
    pub fn lines(&mut self) -> &mut Lines {
        &mut self.batch.lines
    }

    /// The lines added since `mark` (none, for a record with nothing in it)
    /// came from `origin`, which is now dealt with.
    pub fn took(&mut self, mark: Mark, origin: Origin, now: Instant) {
        self.settle(&origin, now);
        self.batch.lines.close_record(mark, origin);
    }

    /// Adds a record that goes to the dead-letter topic instead.
    pub fn push_letter(&mut self, letter: DeadLetter, now: Instant) {
        self.letter_bytes += letter.payload.len();
        self.settle(&letter.origin, now);
        self.batch.letters.push(letter);
    }

    /// Forgets everything from `partitions`, which were revoked: their new
    /// owner reads those records again.
    pub fn drop_partitions(&mut self, partitions: &[Partition]) {
        let gone = |o: &Origin| {
            partitions
                .iter()
                .any(|(t, p)| *p == o.partition && **t == *o.topic)
        };
        self.batch.lines.retain_records(|o| !gone(o));
        self.batch.letters.retain(|l| !gone(&l.origin));
        self.batch.commit.retain(|k, _| !partitions.contains(k));
        self.letter_bytes = self.batch.letters.iter().map(|l| l.payload.len()).sum();
        if self.batch.commit.is_empty() {
            self.opened = None;
        }
    }

    /// Records that `origin` is dealt with.
    fn settle(&mut self, origin: &Origin, now: Instant) {
        self.opened.get_or_insert(now);
        let next = origin.offset + 1;
        let slot = self
            .batch
            .commit
            .entry((origin.topic.clone(), origin.partition))
            .or_insert(next);
        *slot = (*slot).max(next);
    }

    /// The batch is full and should be written now.
    pub fn is_full(&self) -> bool {
        self.batch.lines.len() >= self.limits.max_lines
            || self.batch.lines.bytes() + self.letter_bytes >= self.limits.max_bytes
    }

    /// When the batch must be written at the latest, if it holds anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.max_wait)
    }

    pub fn is_empty(&self) -> bool {
        self.opened.is_none()
    }

    /// Takes the batch, leaving an empty one sized like it.
    pub fn take(&mut self) -> Batch {
        self.letter_bytes = 0;
        self.opened = None;
        let next = Batch {
            lines: Lines::sized_like(&self.batch.lines),
            ..Batch::default()
        };
        std::mem::replace(&mut self.batch, next)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn origin(partition: i32, offset: i64) -> Origin {
        Origin {
            topic: Arc::from("t"),
            partition,
            offset,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_lines: 3,
            max_bytes: 1000,
            max_wait: Duration::from_secs(1),
        }
    }

    /// Adds a record of one line with `fields`.
    fn push(b: &mut Batcher, fields: &str, origin: Origin, now: Instant) {
        let mark = b.lines().mark();
        b.lines().push_parts("m", 1, |out| out.push_str(fields));
        b.took(mark, origin, now);
    }

    /// Adds a record that had nothing in it.
    fn settle(b: &mut Batcher, origin: Origin, now: Instant) {
        let mark = b.lines().mark();
        b.took(mark, origin, now);
    }

    #[test]
    fn is_full_by_lines_or_bytes() {
        let now = Instant::now();
        let mut b = Batcher::new(limits());
        push(&mut b, "a=1", origin(0, 0), now);
        push(&mut b, "b=1", origin(0, 1), now);
        assert!(!b.is_full());
        push(&mut b, "c=1", origin(0, 2), now);
        assert!(b.is_full());
        b.take();
        push(
            &mut b,
            &format!("x=\"{}\"", "x".repeat(1000)),
            origin(0, 3),
            now,
        );
        assert!(b.is_full());
    }

    #[test]
    fn the_deadline_runs_from_the_first_record() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits());
        assert_eq!(b.deadline(), None);
        push(&mut b, "a=1", origin(0, 0), t0);
        push(&mut b, "b=1", origin(0, 1), t0 + Duration::from_millis(500));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(1)));
        b.take();
        assert!(b.is_empty());
    }

    #[test]
    fn commits_the_highest_settled_offset_plus_one_per_partition() {
        let now = Instant::now();
        let mut b = Batcher::new(limits());
        push(&mut b, "a=1", origin(0, 10), now);
        settle(&mut b, origin(0, 11), now); // nothing in it
        push(&mut b, "b=1", origin(1, 4), now);
        let batch = b.take();
        assert_eq!(batch.lines.len(), 2);
        assert_eq!(batch.commit[&(Arc::from("t"), 0)], 12);
        assert_eq!(batch.commit[&(Arc::from("t"), 1)], 5);
    }

    #[test]
    fn revoked_partitions_leave_the_batch() {
        let now = Instant::now();
        let mut b = Batcher::new(limits());
        push(&mut b, "a=1", origin(0, 10), now);
        push(&mut b, "b=1", origin(1, 4), now);
        b.drop_partitions(&[(Arc::from("t"), 0)]);
        let batch = b.take();
        assert_eq!(batch.lines.len(), 1);
        assert_eq!(batch.lines.iter().next().unwrap().origin().partition, 1);
        assert_eq!(batch.commit.len(), 1);
        push(&mut b, "c=1", origin(0, 11), now);
        b.drop_partitions(&[(Arc::from("t"), 0)]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_of_only_settled_records_still_commits() {
        let now = Instant::now();
        let mut b = Batcher::new(limits());
        settle(&mut b, origin(0, 7), now);
        assert!(!b.is_empty());
        let batch = b.take();
        assert!(batch.lines.is_empty());
        assert_eq!(batch.commit.len(), 1);
    }
}
