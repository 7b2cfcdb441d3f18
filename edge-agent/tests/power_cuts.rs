//! The journal and the agent's state files under power cuts, at the storage
//! level: every file goes through a [`PowerCutDisk`], which keeps what was
//! synced and keeps, drops or tears (at 512-byte boundaries) each write that
//! was not, at thousands of random points of a random workload. redb's own
//! fuzzer with injected crashes (`fuzz/fuzz_targets/fuzz_redb.rs` in
//! cberner/redb) is the model. A model of what the journal holds is kept
//! beside it, and after every cut the journal is opened again and checked
//! against the invariants of the `journal` module:
//! - 1: no sequence number is reused;
//! - 2: every commit that returned is intact;
//! - 3: a reading is gone only if acknowledged, or counted by the policy;
//! - 4: a commit's appends and deletes land together or not at all;
//! - 6: the journal opens (it is never quarantined after a mere power cut);
//! - and nothing that was never journaled appears.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_agent::disk::power_cut::{PowerCutDisk, Snapshot};
use edge_agent::disk::{Disk, Mode};
use edge_agent::journal::reservation::Reservation;
use edge_agent::journal::{Counters, Journal, JournalOptions, WhenFull};
use edge_agent::remote_config::store::Store;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use telemetry::Reading;

/// Cuts in all, over the workloads.
const CUTS: usize = 10_000;
/// Workloads (one seed each), run on as many threads as there are cores.
const WORKLOADS: u64 = 16;
/// Each snapshot is powered on this many times, each a different cut.
const VARIANTS: usize = 2;
const T0: i64 = 1_700_000_000_000_000_000;

fn journal_path() -> PathBuf {
    PathBuf::from("/state/journal.redb")
}

fn options(when_full: WhenFull) -> JournalOptions {
    JournalOptions {
        cache_bytes: 256 << 10,
        // Half the smallest a config allows: the policy acts after a couple
        // of thousand readings, and every cut reads them all back.
        max_bytes: 2 << 20,
        when_full,
        downsample_window: Duration::from_secs(2),
    }
}

/// What the journal holds, as far as the test knows.
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    live: BTreeMap<u64, String>,
    counters: Counters,
    /// The highest sequence number a returned commit handed out.
    issued: u64,
}

/// One commit: what it appended (known once it returned) and acknowledged.
#[derive(Debug, Default)]
struct Call {
    appended: BTreeMap<u64, String>,
    acked: BTreeSet<u64>,
}

fn read_state(j: &Journal, issued: u64) -> State {
    let live = j
        .read_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.map(|r| (r.seq, r.line)).expect("every record decodes"))
        .collect::<BTreeMap<_, _>>();
    let last = live.keys().next_back().copied().unwrap_or(0);
    State {
        counters: j.stats().unwrap().counters,
        issued: issued.max(last),
        live,
    }
}

fn removed_by_policy(before: &Counters, after: &Counters) -> (u64, u64) {
    let (b, a) = (before, after);
    assert!(
        a.dropped_oldest >= b.dropped_oldest
            && a.aggregated >= b.aggregated
            && a.aggregates >= b.aggregates
            && a.quarantined == b.quarantined,
        "counters went backwards or a quarantine happened: {b:?} -> {a:?}"
    );
    (
        a.dropped_oldest - b.dropped_oldest + a.aggregated - b.aggregated,
        a.aggregates - b.aggregates,
    )
}

/// Checks a state `s` found after `call` (cut short or not) against the
/// state before it.
fn check(before: &State, call: &Call, ever: &BTreeMap<u64, String>, s: &State, at: &str) {
    let (policy_removed, aggregates) = removed_by_policy(&before.counters, &s.counters);
    // Nothing that was never journaled appears.
    let mut new_aggregates = 0;
    for (seq, line) in &s.live {
        match ever.get(seq) {
            Some(l) => assert_eq!(l, line, "{at}: seq {seq} changed"),
            None if *seq > before.issued && !call.appended.contains_key(seq) => new_aggregates += 1,
            None => panic!("{at}: seq {seq} was never journaled: {line}"),
        }
    }
    assert!(
        new_aggregates <= aggregates,
        "{at}: {new_aggregates} readings nobody wrote"
    );
    // Invariant 4: a commit's appends land with its acknowledged deletes, or
    // after them (a commit too big for the file deletes first). An
    // acknowledged reading may go whether the appends landed or not.
    let landed = call.appended.keys().any(|k| s.live.contains_key(k));
    if landed {
        let kept_acked: Vec<_> = call
            .acked
            .iter()
            .filter(|k| s.live.contains_key(k))
            .collect();
        assert!(
            kept_acked.is_empty(),
            "{at}: appended but kept acknowledged {kept_acked:?}"
        );
    }
    // Invariants 2 and 3: a reading a returned commit held (or this one, if
    // it landed) is still there, or acknowledged by a commit that landed, or
    // counted by the policy.
    let held = before
        .live
        .keys()
        .chain(call.appended.keys().filter(|_| landed));
    let lost: BTreeSet<u64> = held.filter(|k| !s.live.contains_key(k)).copied().collect();
    let unexplained = lost.iter().filter(|k| !call.acked.contains(k)).count() as u64;
    let acked_gone = lost.len() as u64 - unexplained;
    assert!(
        unexplained <= policy_removed && policy_removed <= unexplained + acked_gone + aggregates,
        "{at}: {} readings gone, {unexplained} neither acknowledged nor counted \
         (the policy counted {policy_removed}): {:?}",
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
}

/// A reading of about 400 bytes, so that a few thousand fill the journal.
fn reading(i: u64) -> Reading {
    Reading::new("weather", T0 + i as i64 * 100_000_000)
        .with_tag("device_id", "pi-1")
        .with_tag("site", "north-sea-platform-".repeat(15))
        .with_tag("sensor", if i.is_multiple_of(2) { "a" } else { "b" })
        .with_field("pressure_hpa", 1000.0 + (i % 97) as f64)
        .with_field("temperature_c", 20.0 + (i % 13) as f64 / 4.0)
}

/// Opens the journal on `disk` after a cut; it must not need a quarantine.
fn reopen(disk: &PowerCutDisk, when_full: WhenFull, boot: usize, at: &str) -> Journal {
    let (j, opened) = Journal::open_on(
        Arc::new(disk.clone()),
        &journal_path(),
        options(when_full),
        &format!("boot-{boot}"),
    )
    .unwrap_or_else(|e| panic!("{at}: the journal does not open after a power cut: {e}"));
    assert_eq!(
        opened.quarantined, None,
        "{at}: quarantined after a power cut"
    );
    j
}

/// Opens the journal on `disk`, salvaging it if it must.
fn reopen_any(disk: &PowerCutDisk, when_full: WhenFull, boot: usize) -> Journal {
    let (j, _) = Journal::open_on(
        Arc::new(disk.clone()),
        &journal_path(),
        options(when_full),
        &format!("boot-{boot}"),
    )
    .unwrap();
    j
}

/// One workload: random commits on one disk, cut at random changes.
struct Workload {
    rng: SmallRng,
    disk: PowerCutDisk,
    journal: Journal,
    when_full: WhenFull,
    state: State,
    ever: BTreeMap<u64, String>,
    /// Every line ever written under each number, lost commits included.
    history: BTreeMap<u64, BTreeSet<String>>,
    next_reading: u64,
    boots: usize,
    cuts: usize,
    quarantines: usize,
    rollbacks: usize,
    link_up: bool,
    changes_per_commit: u64,
    /// Readings the policy had removed when the outage began.
    outage_from: u64,
    name: String,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        let disk = PowerCutDisk::new();
        let rng = SmallRng::seed_from_u64(seed);
        let when_full = if seed.is_multiple_of(2) {
            WhenFull::DropOldest
        } else {
            WhenFull::Downsample
        };
        let journal = reopen(&disk, when_full, 0, "first open");
        Workload {
            rng,
            disk,
            journal,
            when_full,
            state: State::default(),
            ever: BTreeMap::new(),
            history: BTreeMap::new(),
            next_reading: 0,
            boots: 0,
            cuts: 0,
            quarantines: 0,
            rollbacks: 0,
            // Half the workloads begin in an outage.
            link_up: seed % 4 >= 2,
            outage_from: 0,
            changes_per_commit: 0,
            name: format!("seed {seed}"),
        }
    }

    /// Plans cuts before about one change in `every` of the next `span`.
    fn plan_cuts(&mut self, every: u64, span: u64) {
        let now = self.disk.changes();
        let picks: Vec<u64> = (1..=span)
            .filter(|_| self.rng.random_range(0..every) == 0)
            .map(|i| now + i)
            .collect();
        self.disk.cut_before(picks);
    }

    /// One random commit, then every cut taken during it checked.
    fn step(&mut self) {
        let n = match self.rng.random_range(0..10) {
            0..3 if self.link_up => 0,
            3..8 => self.rng.random_range(1..20),
            _ => self.rng.random_range(50..250),
        };
        let readings: Vec<Reading> = (0..n).map(|i| reading(self.next_reading + i)).collect();
        self.next_reading += n;
        let mut call = Call::default();
        // The link comes and goes: while it is up, Kafka acknowledges some
        // of what is held, in any order; while it is down, the journal fills
        // and the policy makes room.
        // An outage lasts until the journal has filled and the policy has
        // made room a few times.
        let removed = self.state.counters.dropped_oldest + self.state.counters.aggregated;
        if self.link_up && self.rng.random_bool(0.03) {
            (self.link_up, self.outage_from) = (false, removed);
        } else if !self.link_up && removed > self.outage_from + 300 && self.rng.random_bool(0.1) {
            self.link_up = true;
        }
        if self.link_up {
            for &seq in self.state.live.keys() {
                if self.rng.random_bool(0.3) {
                    call.acked.insert(seq);
                }
            }
        }
        // About one cut per commit, wherever it falls among its changes
        // (a commit makes as many as the last one, roughly).
        let last = self.changes_per_commit.max(1);
        self.plan_cuts(last, 2 * last);
        let changes_before = self.disk.changes();
        let acks: Vec<u64> = call.acked.iter().copied().collect();
        // A growth refused at the limit fails the commit; the writer keeps
        // the readings and retries (the policy has made room): so does this.
        let mut tries = 0;
        let done = loop {
            match self.journal.commit(&readings, &acks) {
                Ok(done) => break done,
                Err(e) if e.is_no_space() && tries < 5 => tries += 1,
                Err(e) => panic!("{}: commit failed {tries} times: {e}", self.name),
            }
        };
        assert!(done.rejected.is_empty());
        self.changes_per_commit = self.disk.changes() - changes_before;
        // What the journal holds now: read back when the policy acted (its
        // aggregates are not known here) and every tenth commit; otherwise
        // what was there, less the acknowledged, plus the appended.
        // (The counters say so even when a refused try acted and its
        // report was lost with the error.)
        let policy_acted = self.journal.counters() != self.state.counters;
        let after_all = if policy_acted || self.rng.random_bool(0.1) {
            read_state(&self.journal, self.state.issued)
        } else {
            let mut live = self.state.live.clone();
            live.retain(|k, _| !call.acked.contains(k));
            for (seq, r) in done.seqs.clone().zip(&readings) {
                live.insert(seq, telemetry::line_protocol::encode(r).unwrap());
            }
            State {
                live,
                counters: self.state.counters,
                issued: self.state.issued.max(done.seqs.end.saturating_sub(1)),
            }
        };
        for (seq, r) in done.seqs.clone().zip(&readings) {
            let line = match after_all.live.get(&seq) {
                Some(line) => {
                    let back = telemetry::line_protocol::parse_line(line, 0).unwrap();
                    assert_eq!(
                        &back, r,
                        "{}: seq {seq} is not what was appended",
                        self.name
                    );
                    line.clone()
                }
                // Appended, then aggregated or dropped by the policy at once.
                None => telemetry::line_protocol::encode(r).unwrap(),
            };
            call.appended.insert(seq, line.clone());
            self.history.entry(seq).or_default().insert(line.clone());
            self.ever.insert(seq, line);
        }
        let after = State {
            issued: after_all.issued.max(done.seqs.end.saturating_sub(1)),
            ..after_all
        };
        check(
            &self.state,
            &call,
            &self.ever,
            &after,
            &format!("{}: returned", self.name),
        );
        for a in after.live.keys() {
            if !self.ever.contains_key(a) {
                // An aggregate: journaled by the policy from now on.
                self.ever.insert(*a, after.live[a].clone());
                self.history
                    .entry(*a)
                    .or_default()
                    .insert(after.live[a].clone());
            }
        }
        let snapshots = self.disk.take_snapshots();
        let mut survivor = None;
        for snap in &snapshots {
            for _ in 0..VARIANTS {
                survivor = Some(self.cut(snap, &call));
            }
        }
        let before = std::mem::replace(&mut self.state, after);
        // Now and then the machine really went down at one of those cuts, or
        // at a quiet moment, and the workload goes on after the reboot.
        if self.rng.random_bool(0.15) {
            let ((disk, s), mid_commit) = match survivor {
                Some(cut) if self.rng.random_bool(0.7) => (cut, true),
                _ => {
                    let quiet = self.disk.snapshot();
                    (self.cut(&quiet, &Call::default()), false)
                }
            };
            if mid_commit {
                // The commit never returned: the numbers it gave and lost
                // are owed to nobody and may be given again.
                self.state.issued = before.issued;
                let lost: Vec<u64> = self
                    .ever
                    .range(before.issued + 1..)
                    .map(|(k, _)| *k)
                    .filter(|k| !s.live.contains_key(k))
                    .collect();
                for seq in lost {
                    self.ever.remove(&seq);
                }
            }
            self.disk = disk;
            self.boots += 1;
            self.journal = reopen(&self.disk, self.when_full, self.boots, &self.name);
            self.state = State {
                issued: self.state.issued.max(s.issued),
                ..s
            };
        }
        if self.rng.random_bool(0.02) {
            self.damage();
        }
    }

    /// Bit rot, or a failing card, damages one page of the journal file.
    /// Opening it must quarantine and salvage it (or find the page unused),
    /// and a cut anywhere in that must leave either the damaged journal,
    /// salvaged again at the next boot, or the same finished result.
    fn damage(&mut self) {
        let disk = self.disk.snapshot().power_on(&mut self.rng);
        let file = disk.open(&journal_path(), Mode::Existing).unwrap();
        let pages = file.len().unwrap() / 4096;
        let at = self.rng.random_range(0..pages) * 4096;
        file.write(at, &[0xA5; 4096]).unwrap();
        file.sync_data().unwrap();
        drop(file);
        let start = disk.changes();
        let picks: Vec<u64> = (start + 1..start + 3000)
            .filter(|_| self.rng.random_range(0..40) == 0)
            .collect();
        disk.cut_before(picks);
        self.boots += 1;
        let at = format!("{}, damage at {at}", self.name);
        let (j, opened) = Journal::open_on(
            Arc::new(disk.clone()),
            &journal_path(),
            options(self.when_full),
            &format!("boot-{}", self.boots),
        )
        .unwrap_or_else(|e| panic!("{at}: a damaged journal does not open: {e}"));
        let result = read_state(&j, 0);
        let before = &self.state;
        // Nothing appears that was never written under its number (salvage
        // also finds stale copies: acknowledged readings, and commits a cut
        // took), and no reading held is replaced by another.
        for (seq, line) in &result.live {
            // (Aggregates the policy wrote and removed within one commit, or
            // that a cut took, are not all known here: any of the policy's.)
            let written = self.history.get(seq).is_some_and(|h| h.contains(line))
                || line.starts_with("weather_agg,");
            assert!(written, "{at}: seq {seq} was never written as {line:.60}");
            if let Some(held) = before.live.get(seq) {
                assert_eq!(held, line, "{at}: seq {seq} replaced by a stale copy");
            }
        }
        match &opened.quarantined {
            // The page was unused, or held the newest commit, which redb
            // cannot tell from a torn one and rolls back.
            None => {
                assert_eq!(result.counters, before.counters, "{at}");
                let rolled_back = before.live.keys().any(|k| !result.live.contains_key(k));
                if rolled_back {
                    // Its numbers are handed out again (noted in the docs).
                    self.rollbacks += 1;
                    let gone: Vec<u64> = before
                        .live
                        .keys()
                        .filter(|k| !result.live.contains_key(k))
                        .copied()
                        .collect();
                    for seq in gone {
                        self.ever.remove(&seq);
                    }
                    self.state.issued = result.issued;
                }
            }
            Some(report) => {
                self.quarantines += 1;
                let (b, a) = (&before.counters, &result.counters);
                assert_eq!(a.quarantined, b.quarantined + 1, "{at}");
                assert_eq!(a.salvaged, b.salvaged + report.salvaged, "{at}");
                let next = j.stats().unwrap().next_seq;
                assert!(
                    next > before.issued,
                    "{at}: seq {next} would be handed out again"
                );
            }
        }
        for (seq, line) in &result.live {
            self.ever.insert(*seq, line.clone());
        }
        for snap in disk.take_snapshots() {
            for _ in 0..VARIANTS {
                self.cuts += 1;
                let cut = reopen_any(&snap.power_on(&mut self.rng), self.when_full, self.boots);
                let s = read_state(&cut, 0);
                assert_eq!(
                    s.live, result.live,
                    "{at}: a cut in the salvage, before change {}",
                    snap.change
                );
                assert_eq!(
                    s.counters, result.counters,
                    "{at}: cut before change {}",
                    snap.change
                );
            }
        }
        self.disk = disk;
        self.journal = j;
        self.state = State {
            issued: self.state.issued.max(result.issued),
            ..result
        };
    }

    /// Powers `snap` on, opens the journal and checks it; returns the disk
    /// and what it holds.
    fn cut(&mut self, snap: &Snapshot, call: &Call) -> (PowerCutDisk, State) {
        self.cuts += 1;
        let at = format!(
            "{}, cut {} before change {}",
            self.name, self.cuts, snap.change
        );
        let disk = snap.power_on(&mut self.rng);
        // What the cut left, before the journal's own recovery writes.
        let booted = disk.snapshot();
        let j = reopen(&disk, self.when_full, self.boots + 1, &at);
        let s = read_state(&j, 0);
        check(&self.state, call, &self.ever, &s, &at);
        // Invariant 1: the next number is new, even after this cut.
        let next = j.stats().unwrap().next_seq;
        let owed = self.state.issued.max(s.issued);
        assert!(
            next > owed,
            "{at}: seq {next} handed out again (up to {owed} were)"
        );
        drop(j);
        // The check itself wrote to the disk: go on from what the cut left.
        (booted.power_on(&mut self.rng), s)
    }
}

/// What the workloads did, summed.
#[derive(Debug, Default)]
struct Tally {
    cuts: usize,
    reboots: usize,
    quarantines: usize,
    rollbacks: usize,
    dropped: u64,
    aggregated: u64,
}

#[test]
fn invariants_1_2_3_4_6_hold_across_10_000_power_cuts_at_random_points() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    for seed in (t..WORKLOADS).step_by(threads as usize) {
                        let mut w = Workload::new(seed);
                        while w.cuts < CUTS / WORKLOADS as usize {
                            w.step();
                        }
                        tally.cuts += w.cuts;
                        tally.reboots += w.boots;
                        tally.quarantines += w.quarantines;
                        tally.rollbacks += w.rollbacks;
                        tally.dropped += w.state.counters.dropped_oldest;
                        tally.aggregated += w.state.counters.aggregated;
                    }
                    tally
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cuts: usize = tallies.iter().map(|t| t.cuts).sum();
    assert!(cuts >= CUTS, "only {cuts} cuts");
    // The workload reached what it is meant to: journals that filled under
    // both policies, and machines that went on after a cut.
    assert!(
        tallies.iter().map(|t| t.dropped).sum::<u64>() > 1_000,
        "{tallies:?}"
    );
    assert!(
        tallies.iter().map(|t| t.aggregated).sum::<u64>() > 1_000,
        "{tallies:?}"
    );
    assert!(
        tallies.iter().map(|t| t.reboots).sum::<usize>() > 100,
        "{tallies:?}"
    );
}

/// The stored remote config is replaced by a temporary file, a rename and a
/// directory sync: after a cut at any change of a replace, it holds the old
/// payload or the new one, whole.
#[test]
fn the_stored_remote_config_is_old_or_new_after_a_power_cut_anywhere() {
    let mut rng = SmallRng::seed_from_u64(17);
    let dir = Path::new("/state");
    let mut cuts = 0;
    for round in 0..200u32 {
        let disk = PowerCutDisk::new();
        let store = Store::on(Arc::new(disk.clone()), dir);
        let old = format!("{{\"version\":{round},\"pad\":\"{}\"}}", "x".repeat(700));
        store.save(old.as_bytes()).unwrap();
        let start = disk.changes();
        // Every change of the next replace.
        disk.cut_before(start + 1..start + 10);
        let new = format!(
            "{{\"version\":{},\"pad\":\"{}\"}}",
            round + 1,
            "y".repeat(1300)
        );
        store.save(new.as_bytes()).unwrap();
        let snaps = disk.take_snapshots();
        assert!(snaps.len() >= 5, "a replace is at least 5 changes");
        for snap in snaps.iter().chain([&disk.snapshot()]) {
            for _ in 0..5 {
                let after = snap.power_on(&mut rng);
                let got = Store::on(Arc::new(after), dir).load().unwrap();
                let got = String::from_utf8(got.expect("a saved config is never lost")).unwrap();
                assert!(got == old || got == new, "round {round}: a mix: {got:.80}");
                cuts += 1;
            }
        }
    }
    assert!(cuts >= 1_000);
}

/// The sequence reservation is written the same way: after a cut at any
/// change of a move, it holds the old limit or the new one, never less.
#[test]
fn the_sequence_reservation_is_old_or_new_after_a_power_cut_anywhere() {
    let mut rng = SmallRng::seed_from_u64(29);
    let journal = journal_path();
    let mut cuts = 0;
    for round in 1..100u64 {
        let disk = PowerCutDisk::new();
        let mut r = Reservation::load(Arc::new(disk.clone()), &journal);
        r.cover(round);
        let old = r.limit();
        let start = disk.changes();
        disk.cut_before(start + 1..start + 10);
        r.cover(old + round);
        let new = r.limit();
        assert!(new > old);
        for snap in disk.take_snapshots().iter().chain([&disk.snapshot()]) {
            for _ in 0..5 {
                let after = Reservation::load(Arc::new(snap.power_on(&mut rng)), &journal);
                assert!(
                    [old, new].contains(&after.limit()),
                    "round {round}: limit {} after a cut (was {old}, then {new})",
                    after.limit()
                );
                cuts += 1;
            }
        }
    }
    assert!(cuts >= 500);
}
