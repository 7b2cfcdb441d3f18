//! # Offsets: what may be committed
//!
//! Pure bookkeeping, no I/O. Batches are written concurrently and may finish
//! in any order; a partition's offset may only move past a record once every
//! record before it is in every sink or in the dead-letter topic.
//!
//! ## Invariants
//! 1. Per partition, batches are registered in the order their records were
//!    consumed, so each batch's range starts where the previous one ended.
//! 2. The offset returned for a partition is the end of the longest prefix
//!    of its batches that are all done: never past a batch still in flight.
//! 3. Revoking a partition forgets its batches. A batch of that partition
//!    finishing later changes nothing: the partition's new owner reads those
//!    records again from the last commit, which only rewrites the same points.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;

/// A topic and partition.
pub use crate::record::Partition;

#[derive(Debug)]
struct Pending {
    batch: u64,
    /// The offset to commit once this batch and all before it are done.
    next: i64,
    done: bool,
}

#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<Partition, VecDeque<Pending>>,
}

impl Offsets {
    /// Registers batch `batch`, which settles each partition in `ends` up to
    /// (not including) the offset given.
    pub fn sealed(&mut self, batch: u64, ends: &BTreeMap<Partition, i64>) {
        for (partition, &next) in ends {
            let queue = self.partitions.entry(partition.clone()).or_default();
            debug_assert!(
                queue
                    .back()
                    .is_none_or(|p| p.next <= next && p.batch < batch),
                "invariant 1: batches registered in consumption order"
            );
            queue.push_back(Pending {
                batch,
                next,
                done: false,
            });
        }
    }

    /// Marks batch `batch` done. Returns, per partition whose committable
    /// offset moved, the new offset.
    pub fn completed(
        &mut self,
        batch: u64,
        ends: &BTreeMap<Partition, i64>,
    ) -> Vec<(Partition, i64)> {
        let mut moved = Vec::new();
        for partition in ends.keys() {
            let Some(queue) = self.partitions.get_mut(partition) else {
                continue; // revoked meanwhile (invariant 3)
            };
            let Some(p) = queue.iter_mut().find(|p| p.batch == batch) else {
                continue;
            };
            p.done = true;
            let mut commit = None;
            while queue.front().is_some_and(|p| p.done) {
                commit = queue.pop_front().map(|p| p.next);
            }
            if let Some(next) = commit {
                moved.push((partition.clone(), next));
            }
            if queue.is_empty() {
                self.partitions.remove(partition);
            }
        }
        moved
    }

    /// Forgets `partitions` (invariant 3).
    pub fn revoked(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    /// Batches not yet done, per partition.
    pub fn pending(&self, partition: &Partition) -> usize {
        self.partitions
            .get(partition)
            .map_or(0, |q| q.iter().filter(|p| !p.done).count())
    }
}

/// Where consumption of each partition stands: the offset of the record
/// expected next. Tells when the broker skipped offsets.
#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<Partition, i64>,
}

impl Positions {
    /// `partition` is assigned and starts at `start`, its committed offset
    /// (none: unknown, the group never committed there).
    pub fn assigned(&mut self, partition: Partition, start: Option<i64>) {
        match start {
            Some(offset) => self.next.insert(partition, offset),
            None => self.next.remove(&partition),
        };
    }

    pub fn revoked(&mut self, partition: &Partition) {
        self.next.remove(partition);
    }

    /// A record of `partition` at `offset` arrived. Returns the offsets
    /// skipped before it: none if it is the one expected (or an earlier
    /// one, read again), or if where the partition stood is not known.
    pub fn read(&mut self, partition: &Partition, offset: i64) -> Option<Range<i64>> {
        match self.next.get_mut(partition) {
            Some(next) => {
                let skipped = (offset > *next).then_some(*next..offset);
                *next = offset + 1;
                skipped
            }
            None => {
                self.next.insert(partition.clone(), offset + 1);
                None
            }
        }
    }

    /// Each partition and the offset expected next.
    pub fn iter(&self) -> impl Iterator<Item = (&Partition, i64)> {
        self.next.iter().map(|(p, n)| (p, *n))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("t"), n)
    }

    fn ends(list: &[(i32, i64)]) -> BTreeMap<Partition, i64> {
        list.iter().map(|&(n, o)| (p(n), o)).collect()
    }

    #[test]
    fn a_record_beyond_the_expected_offset_is_a_gap() {
        let mut at = Positions::default();
        at.assigned(p(0), Some(15));
        assert_eq!(at.read(&p(0), 100), Some(15..100));
        assert_eq!(at.read(&p(0), 101), None);
        assert_eq!(at.read(&p(0), 3), None, "read again after a seek back");
        assert_eq!(at.read(&p(0), 4), None);
        at.assigned(p(1), None);
        assert_eq!(at.read(&p(1), 100), None, "no commit to start from");
        at.revoked(&p(0));
        assert_eq!(at.read(&p(0), 500), None, "forgotten when revoked");
        let mut now: Vec<_> = at.iter().map(|(p, n)| (p.1, n)).collect();
        now.sort();
        assert_eq!(now, [(0, 501), (1, 101)]);
    }

    #[test]
    fn out_of_order_completion_commits_only_the_contiguous_prefix() {
        let mut o = Offsets::default();
        o.sealed(1, &ends(&[(0, 100)]));
        o.sealed(2, &ends(&[(0, 200), (1, 50)]));
        o.sealed(3, &ends(&[(0, 300)]));
        // Batch 3 first: batches 1 and 2 still hold partition 0 back.
        assert!(o.completed(3, &ends(&[(0, 300)])).is_empty());
        // Batch 2: partition 1 had nothing before it; partition 0 waits.
        assert_eq!(
            o.completed(2, &ends(&[(0, 200), (1, 50)])),
            vec![(p(1), 50)]
        );
        assert_eq!(o.pending(&p(0)), 1);
        // Batch 1 releases everything up to batch 3's end.
        assert_eq!(o.completed(1, &ends(&[(0, 100)])), vec![(p(0), 300)]);
        assert_eq!(o.pending(&p(0)), 0);
    }

    #[test]
    fn a_revoked_partition_ignores_batches_from_before() {
        let mut o = Offsets::default();
        o.sealed(1, &ends(&[(0, 100), (1, 10)]));
        o.revoked(&[p(0)]);
        // Reassigned: consumption restarts at the last commit.
        o.sealed(2, &ends(&[(0, 60)]));
        // The old batch finishing moves only the partition still held.
        assert_eq!(
            o.completed(1, &ends(&[(0, 100), (1, 10)])),
            vec![(p(1), 10)]
        );
        assert_eq!(o.completed(2, &ends(&[(0, 60)])), vec![(p(0), 60)]);
    }

    #[test]
    fn model_check_against_random_completion_orders() {
        // Whatever the order, the committed offset never passes a batch that
        // is not done, and ends at the last batch's end.
        for seed in 0..200u64 {
            let mut rng = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut next = || {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) as usize
            };
            let mut o = Offsets::default();
            let n = 1 + next() % 12;
            let batches: Vec<(u64, BTreeMap<Partition, i64>)> = (0..n)
                .map(|i| (i as u64, ends(&[(0, 10 * (i as i64 + 1))])))
                .collect();
            for (id, e) in &batches {
                o.sealed(*id, e);
            }
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, next() % (i + 1));
            }
            let mut done = vec![false; n];
            let mut committed = 0;
            for &i in &order {
                done[i] = true;
                for (_, off) in o.completed(batches[i].0, &batches[i].1) {
                    assert!(off > committed);
                    committed = off;
                }
                let prefix = done.iter().take_while(|d| **d).count();
                assert_eq!(committed, 10 * prefix as i64, "seed {seed}");
            }
            assert_eq!(committed, 10 * n as i64);
        }
    }
}
