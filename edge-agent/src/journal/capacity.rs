//! How full the journal is, and what the full-journal policy frees
//! ([`plan`]): pure arithmetic on measured sizes, unit-tested without a
//! file. [`super::policy`] measures and carries the plan out.
//!
//! The journal file grows the way redb grows a file below 4 GiB: by doubling
//! (at most). So the file can reach the largest doubling of its current size
//! that stays within `journal.max_bytes` and whose extra bytes fit on the disk;
//! that is its [`Space::capacity`]. What is in use is redb's count of
//! allocated pages. The journal counts as full when what is in use, plus a
//! headroom, exceeds the capacity: the headroom keeps room for the next group
//! commit and for the copy-on-write pages that freeing space itself needs, so
//! the file never wedges at 100%.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What to do when the journal is full (`journal.when_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest readings to make room (the default).
    #[default]
    DropOldest,
    /// Keep what is journaled; refuse new readings until Kafka takes some.
    RejectNew,
    /// Replace the oldest raw readings by per-series aggregates; drop only
    /// when nothing raw is left.
    Downsample,
}

impl WhenFull {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::RejectNew => "reject_new",
            WhenFull::Downsample => "downsample",
        }
    }
}

/// Never keep less free than this, whatever the size.
const MIN_SLACK: u64 = 256 * 1024;

/// The journal's space, as last measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// The file's size now.
    pub file_len: u64,
    /// Bytes of the file in use (redb's allocated pages), plus an upper
    /// estimate of what was appended since they were counted.
    pub used: u64,
    /// `journal.max_bytes`.
    pub limit: u64,
    /// Bytes the filesystem can still give this process.
    pub disk_available: u64,
    /// A growth of the file was refused (disk full) and the disk has not
    /// gained space since: assume it cannot grow.
    pub growth_blocked: bool,
}

impl Space {
    /// The largest the file can become.
    pub fn capacity(&self) -> u64 {
        if self.file_len >= self.limit {
            return self.limit;
        }
        if self.growth_blocked {
            return self.file_len;
        }
        let mut cap = self.file_len.max(1);
        let mut available = self.disk_available;
        loop {
            let next = cap.saturating_mul(2);
            let extra = next - cap;
            if next > self.limit || extra > available || next == cap {
                return cap;
            }
            available -= extra;
            cap = next;
        }
    }

    /// What must stay free: the next commit (`batch`, in file bytes) and a
    /// slack of 1/16 of the capacity.
    pub fn headroom(&self, batch: u64) -> u64 {
        batch + (self.capacity() / 16).max(MIN_SLACK)
    }

    /// Whether a commit of `batch` more bytes would leave too little room.
    pub fn is_full(&self, batch: u64) -> bool {
        self.used + self.headroom(batch) > self.capacity()
    }

    /// How many bytes in use to free so that `batch` fits with headroom, and
    /// a further 1/16 of the capacity, so that freeing does not run on every
    /// commit. Zero when not full.
    pub fn to_free(&self, batch: u64) -> u64 {
        if !self.is_full(batch) {
            return 0;
        }
        (self.used + self.headroom(batch) + self.capacity() / 16).saturating_sub(self.capacity())
    }
}

/// File bytes per stored byte: redb packs appended records densely (1.05
/// measured here); a little more, to err towards measuring and freeing.
pub const RATIO: f64 = 1.1;

/// One step of the full-journal policy, as [`plan`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Stored bytes (reading frames) to free.
    pub stored: u64,
    /// Replace them by aggregates (`downsample`) rather than drop them;
    /// the policy drops anyway when nothing raw is left or aggregating
    /// would not pay ([`worth_aggregating`]).
    pub aggregate: bool,
}

/// What the full-journal policy frees before a commit of `batch` more file
/// bytes, from the space as measured: `None` when the commit fits with
/// headroom. `forced` (file bytes) is freed whatever the space says: a
/// commit was refused for want of space, which proves the estimate wrong.
/// `reject_new` frees nothing: the commit's readings are refused instead.
pub fn plan(space: &Space, batch: u64, when_full: WhenFull, forced: u64) -> Option<Step> {
    if when_full == WhenFull::RejectNew {
        return None;
    }
    let to_free = space.to_free(batch).max(forced);
    (to_free > 0).then(|| Step {
        stored: (to_free as f64 / RATIO) as u64 + 1,
        aggregate: when_full == WhenFull::Downsample,
    })
}

/// Whether replacing `raw` stored bytes of readings by `aggregates` bytes of
/// aggregates frees enough to be worth it: at least half.
pub fn worth_aggregating(raw: u64, aggregates: u64) -> bool {
    aggregates * 2 <= raw
}

/// The last measurement of space, and what changed since.
#[derive(Debug, Default)]
pub(super) struct SpaceState {
    pub(super) measured_used: u64,
    /// Stored bytes appended minus deleted since the measurement.
    pub(super) changed: i64,
    pub(super) file_len: u64,
    pub(super) disk_available: u64,
    /// A growth was refused; with the disk space available then.
    pub(super) blocked_at_disk: Option<u64>,
    /// When a measurement last found the journal full.
    pub(super) full_since: Option<Instant>,
    /// A commit was refused for want of space since the last one that
    /// worked: whatever the estimate says, the next makes room first.
    pub(super) refused_commit: bool,
}

impl SpaceState {
    pub(super) fn estimate(&self, limit: u64) -> Space {
        let used = (self.measured_used as f64 + self.changed as f64 * RATIO).max(0.0) as u64;
        Space {
            file_len: self.file_len,
            used,
            limit,
            disk_available: self.disk_available,
            growth_blocked: self.blocked_at_disk.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn space(file_len: u64, used: u64, limit: u64, disk: u64) -> Space {
        Space {
            file_len,
            used,
            limit,
            disk_available: disk,
            growth_blocked: false,
        }
    }

    #[test]
    fn the_file_can_double_while_it_stays_within_the_limit_and_the_disk() {
        assert_eq!(space(MIB, 0, 256 * MIB, u64::MAX).capacity(), 256 * MIB);
        // redb's layout makes the file a little larger than a power of two:
        // the doubling that would pass 256 MiB is not counted on.
        let odd = MIB + 8192;
        assert_eq!(
            space(odd, 0, 256 * MIB, u64::MAX).capacity(),
            odd * 128,
            "the last doubling is the one below the limit"
        );
        assert_eq!(space(MIB, 0, 200 * MIB, u64::MAX).capacity(), 128 * MIB);
        // 3 MiB free on the disk: 1 → 2 (1 more) → 4 (2 more) fits, 8 does not.
        assert_eq!(space(MIB, 0, 256 * MIB, 3 * MIB).capacity(), 4 * MIB);
        let mut blocked = space(4 * MIB, 0, 256 * MIB, u64::MAX);
        blocked.growth_blocked = true;
        assert_eq!(blocked.capacity(), 4 * MIB);
        // A limit lowered below the file's size: the limit counts.
        assert_eq!(space(64 * MIB, 0, 32 * MIB, u64::MAX).capacity(), 32 * MIB);
    }

    #[test]
    fn full_means_the_next_commit_and_the_slack_would_not_fit() {
        let s = space(64 * MIB, 58 * MIB, 64 * MIB, 0);
        // slack = 4 MiB; 58 + 4 + 1 > 64 is false...
        assert!(!s.is_full(MIB));
        // ...but 58 + 4 + 3 > 64.
        assert!(s.is_full(3 * MIB));
        // Freeing goes 1/16 below the line: 58 + 4 + 3 + 4 - 64 = 5 MiB.
        assert_eq!(s.to_free(3 * MIB), 5 * MIB);
        assert_eq!(s.to_free(MIB), 0);
    }

    #[test]
    fn small_journals_keep_a_minimum_slack() {
        let s = space(MIB, MIB - 200 * 1024, 4 * MIB, 0);
        assert_eq!(s.capacity(), MIB);
        assert_eq!(s.headroom(0), MIN_SLACK);
        assert!(s.is_full(0));
    }

    #[test]
    fn the_policy_frees_what_the_space_says_in_stored_bytes_and_refusing_frees_nothing() {
        let s = space(64 * MIB, 58 * MIB, 64 * MIB, 0);
        // Fits: nothing to free, whatever the policy.
        assert_eq!(plan(&s, MIB, WhenFull::DropOldest, 0), None);
        // 5 MiB of file to free is 5 MiB / 1.1 of readings.
        let step = plan(&s, 3 * MIB, WhenFull::DropOldest, 0).unwrap();
        assert_eq!(step.stored, (5.0 * MIB as f64 / RATIO) as u64 + 1);
        assert!(!step.aggregate);
        assert!(
            plan(&s, 3 * MIB, WhenFull::Downsample, 0)
                .unwrap()
                .aggregate
        );
        assert_eq!(plan(&s, 3 * MIB, WhenFull::RejectNew, 0), None);
        // After a refused commit, at least what it needed, even if the
        // estimate says it fits.
        let forced = plan(&s, MIB, WhenFull::DropOldest, MIB).unwrap();
        assert_eq!(forced.stored, (MIB as f64 / RATIO) as u64 + 1);
    }

    #[test]
    fn aggregating_is_worth_it_when_it_halves_the_bytes() {
        assert!(worth_aggregating(1000, 500));
        assert!(!worth_aggregating(1000, 501));
        assert!(!worth_aggregating(0, 1));
    }
}
