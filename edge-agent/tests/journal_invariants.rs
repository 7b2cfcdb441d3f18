//! The journal's invariants (see the `journal` module doc), one test or more
//! each, against real files; each test's name starts with the numbers of the
//! invariants it shows. Power cuts: `power_cuts.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge_agent::disk::full::FullDisk;
use edge_agent::journal::{Journal, JournalOptions, JournalRecord, WhenFull};
use telemetry::{FieldValue, Reading};

const MIB: u64 = 1 << 20;
const T0: i64 = 1_700_000_000_000_000_000;

fn reading(i: i64) -> Reading {
    Reading::new("weather", T0 + i * 100_000_000)
        .with_tag("device_id", "pi-1")
        .with_tag("sensor", if i % 2 == 0 { "a" } else { "b" })
        .with_field("pressure_hpa", 1000.0 + (i % 97) as f64)
        .with_field("temperature_c", 20.0 + (i % 13) as f64 / 4.0)
}

fn options(max_bytes: u64, when_full: WhenFull) -> JournalOptions {
    JournalOptions {
        cache_bytes: 1 << 20,
        max_bytes,
        when_full,
        downsample_window: Duration::from_secs(60),
    }
}

fn open(path: &Path, options: JournalOptions, boot: &str) -> Journal {
    let (journal, opened) = Journal::open(path, options, boot).unwrap();
    assert_eq!(opened.quarantined, None);
    journal
}

fn all(journal: &Journal) -> Vec<JournalRecord> {
    journal
        .read_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

// Invariant 1: contiguous, never reused.
#[test]
fn invariant_1_sequence_numbers_are_contiguous_and_survive_emptying_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-a");
    let a = j.commit(&[reading(1), reading(2)], &[]).unwrap();
    assert_eq!(a.seqs, 1..3);
    let b = j.commit(&[reading(3)], &[1, 2]).unwrap();
    assert_eq!((b.seqs.clone(), b.deleted), (3..4, 2));
    assert_eq!(
        j.commit::<telemetry::Reading>(&[], &[3]).unwrap().deleted,
        1
    );
    assert_eq!(j.stats().unwrap().records, 0);
    drop(j);
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-b");
    assert_eq!(j.commit(&[reading(4)], &[]).unwrap().seqs, 4..5);
    assert_eq!(j.stats().unwrap().next_seq, 5);
}

#[test]
fn invariant_1_a_deleted_journal_does_not_hand_out_its_numbers_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-a");
    let readings: Vec<Reading> = (0..5_000).map(reading).collect();
    let used = j.commit(&readings, &[]).unwrap().seqs;
    drop(j);
    // The operator deletes the journal (say, to throw a backlog away).
    std::fs::remove_file(&path).unwrap();
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-b");
    let next = j.commit(&[reading(1)], &[]).unwrap().seqs;
    assert!(
        next.start >= used.end,
        "{next:?} reuses numbers of the deleted journal ({used:?})"
    );
    // From there on, contiguous again, also across a reopen.
    drop(j);
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-c");
    assert_eq!(
        j.commit(&[reading(2)], &[]).unwrap().seqs,
        next.end..next.end + 1
    );
}

#[test]
fn invariant_2_committed_records_read_back_in_order_with_their_boot_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-a");
    j.commit(&[reading(1), reading(2)], &[]).unwrap();
    drop(j);
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-b");
    j.commit(&[reading(3)], &[]).unwrap();
    let records = all(&j);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(&*records[0].boot_id, "boot-a");
    assert_eq!(&*records[2].boot_id, "boot-b");
    assert_eq!(records[0].key, "pi-1");
    assert_eq!(records[1].reading().unwrap(), reading(2));
    let window = j.read_after(1, 1).unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].as_ref().unwrap().seq, 2);
}

#[test]
fn invariant_3_unencodable_readings_are_rejected_without_losing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(
        &dir.path().join("j.redb"),
        JournalOptions::for_inspection(),
        "b",
    );
    let bad = Reading::new("weather", 1).with_field("x", f64::NAN);
    let c = j.commit(&[reading(1), bad, reading(2)], &[]).unwrap();
    assert_eq!(c.seqs, 1..3);
    assert_eq!(c.rejected.len(), 1);
    assert_eq!(j.stats().unwrap().records, 2);
    assert_eq!(
        j.commit::<telemetry::Reading>(&[], &[7, 8])
            .unwrap()
            .deleted,
        0
    );
}

/// Appends `n` readings in commits of `batch`, checking the file size after
/// each; returns the readings by sequence number.
fn fill(j: &mut Journal, path: &Path, n: i64, batch: i64, limit: u64) -> BTreeMap<u64, Reading> {
    let mut appended = BTreeMap::new();
    let mut i = 0;
    while i < n {
        let readings: Vec<Reading> = (i..(i + batch).min(n)).map(reading).collect();
        let done = j.commit(&readings, &[]).unwrap();
        let refused = done.policy.rejected_new as usize;
        assert!(refused == 0 || refused == readings.len());
        for (seq, r) in done.seqs.zip(readings) {
            appended.insert(seq, r);
        }
        assert!(
            file_len(path) <= limit,
            "the file grew to {} bytes, past max_bytes {limit}",
            file_len(path)
        );
        i += batch;
    }
    appended
}

// Invariants 3 and 5 under drop_oldest.
#[test]
fn invariants_3_5_the_file_never_passes_max_bytes_and_drop_oldest_counts_every_dropped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let limit = 4 * MIB;
    let mut j = open(&path, options(limit, WhenFull::DropOldest), "b");
    let appended = fill(&mut j, &path, 80_000, 500, limit);
    let stats = j.stats().unwrap();
    let dropped = stats.counters.dropped_oldest;
    assert!(dropped > 0, "80,000 readings do not fit in 4 MiB");
    assert_eq!(stats.records + dropped, appended.len() as u64);
    // Exactly the oldest went, and what is left is intact.
    assert_eq!(stats.first_seq, Some(dropped + 1));
    for r in all(&j) {
        assert_eq!(r.reading().unwrap(), appended[&r.seq]);
    }
    // The journal keeps working at its limit, and the counters persist.
    drop(j);
    let mut j = open(&path, options(limit, WhenFull::DropOldest), "b");
    assert_eq!(j.counters().dropped_oldest, dropped);
    fill(&mut j, &path, 20_000, 500, limit);
    assert!(j.counters().dropped_oldest > dropped);
}

// Invariants 3 and 5 under reject_new.
#[test]
fn invariants_3_5_reject_new_keeps_what_is_journaled_and_counts_every_refused_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let limit = 4 * MIB;
    let mut j = open(&path, options(limit, WhenFull::RejectNew), "b");
    let appended = fill(&mut j, &path, 80_000, 500, limit);
    let stats = j.stats().unwrap();
    let kept = appended.len() as u64;
    assert_eq!(stats.counters.rejected_new + kept, 80_000);
    assert!(stats.counters.rejected_new > 0);
    assert_eq!((stats.first_seq, stats.last_seq), (Some(1), Some(kept)));
    assert_eq!(stats.counters.dropped_oldest, 0);
    // Kafka takes the oldest half: new readings are accepted again.
    let acked: Vec<u64> = (1..=kept / 2).collect();
    j.commit::<telemetry::Reading>(&[], &acked).unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    let done = j.commit(&[reading(1), reading(2)], &[]).unwrap();
    assert_eq!(done.policy.rejected_new, 0);
    assert_eq!(done.seqs, kept + 1..kept + 3);
}

// Invariant 3 under downsample: every raw reading is either still there,
// or accounted for by an aggregate, or counted as dropped.
#[test]
fn invariant_3_downsample_replaces_the_oldest_raw_readings_by_aggregates_that_account_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let limit = 4 * MIB;
    let mut j = open(&path, options(limit, WhenFull::Downsample), "b");
    let appended = fill(&mut j, &path, 80_000, 500, limit);
    let stats = j.stats().unwrap();
    let c = stats.counters;
    assert!(c.aggregated > 0, "{c:?}");
    assert_eq!(c.dropped_oldest, 0, "aggregating freed enough: {c:?}");
    let (mut raw, mut aggregates) = (BTreeMap::new(), Vec::new());
    for r in all(&j) {
        let reading = r.reading().unwrap();
        if reading.measurement == "weather_agg" {
            aggregates.push(reading);
        } else {
            assert_eq!(reading, appended[&r.seq]);
            raw.insert(r.seq, reading);
        }
    }
    assert_eq!(aggregates.len() as u64, c.aggregates);
    let counted: i64 = aggregates
        .iter()
        .map(|a| match a.fields["count"] {
            FieldValue::Int(n) => n,
            ref other => panic!("count is {other:?}"),
        })
        .sum();
    assert_eq!(counted as u64, c.aggregated);
    // Every reading journaled is either still there or aggregated
    // (aggregates took sequence numbers of their own).
    assert_eq!(raw.len() as u64 + c.aggregated, appended.len() as u64);
    assert_eq!(stats.next_seq - 1, appended.len() as u64 + c.aggregates);
    // The values of one aggregate are those of the readings it replaced.
    let first = &aggregates[0];
    let sensor = first.tag("sensor").unwrap();
    let replaced: Vec<&Reading> = appended
        .values()
        .filter(|r| {
            r.measurement == "weather"
                && r.tag("sensor") == Some(sensor)
                && r.timestamp_ns >= first.timestamp_ns
                && r.timestamp_ns < first.timestamp_ns + 60_000_000_000
        })
        .collect();
    let p: Vec<f64> = replaced
        .iter()
        .map(|r| r.fields["pressure_hpa"].as_f64().unwrap())
        .collect();
    assert_eq!(first.fields["count"], FieldValue::Int(p.len() as i64));
    assert_eq!(
        first.fields["pressure_hpa_min"],
        FieldValue::Float(p.iter().copied().fold(f64::INFINITY, f64::min))
    );
    assert_eq!(
        first.fields["pressure_hpa_max"],
        FieldValue::Float(p.iter().copied().fold(f64::NEG_INFINITY, f64::max))
    );
    let mean = first.fields["pressure_hpa_mean"].as_f64().unwrap();
    assert!((mean - p.iter().sum::<f64>() / p.len() as f64).abs() < 1e-9);
}

// Invariant 5, when the disk fills between two checks: a growth that the
// space arithmetic allowed is refused. The journal reopens redb (which
// refuses everything after an I/O error), applies the policy, and goes on.
#[test]
fn invariant_5_a_refused_growth_is_survived_and_the_policy_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    // The disk fills up at 3 MiB, far below `max_bytes`.
    let disk = Arc::new(FullDisk::new(3 * MIB));
    let (mut j, _) =
        Journal::open_on(disk, &path, options(64 * MIB, WhenFull::DropOldest), "b").unwrap();
    let mut appended = 0u64;
    let mut failures = 0;
    for i in 0..100 {
        let readings: Vec<Reading> = (i * 500..(i + 1) * 500).map(reading).collect();
        match j.commit(&readings, &[]) {
            Ok(done) => appended += done.seqs.end - done.seqs.start,
            Err(e) => {
                assert!(e.is_no_space(), "{e}");
                failures += 1;
                // The writer keeps the readings and retries: so does this.
                let done = j.commit(&readings, &[]).unwrap();
                appended += done.seqs.end - done.seqs.start;
            }
        }
        assert!(file_len(&path) <= 3 * MIB);
    }
    assert!(failures >= 1, "the file layer never refused a growth");
    let stats = j.stats().unwrap();
    assert_eq!(appended, 50_000);
    assert!(stats.counters.dropped_oldest > 0);
    assert_eq!(stats.records + stats.counters.dropped_oldest, appended);
    assert_eq!(stats.first_seq, Some(stats.counters.dropped_oldest + 1));
}

/// Damages `path` with `damage`, reopens it, and checks that it was moved
/// aside, that every salvaged reading is one that was journaled, unchanged
/// and under its own sequence number, and that the fresh journal works.
fn damaged_file_is_quarantined_and_salvaged(damage: impl FnOnce(&mut Vec<u8>)) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let mut j = open(&path, JournalOptions::for_inspection(), "boot-a");
    let readings: Vec<Reading> = (0..20_000).map(reading).collect();
    for chunk in readings.chunks(1_000) {
        j.commit(chunk, &[]).unwrap();
    }
    drop(j);
    let mut bytes = std::fs::read(&path).unwrap();
    let original = bytes.clone();
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();

    let (mut j, opened) = Journal::open(&path, JournalOptions::for_inspection(), "boot-b").unwrap();
    let q = opened.quarantined.expect("the damage was noticed");
    assert!(
        q.moved_to.is_file(),
        "the damaged file is kept at {}",
        q.moved_to.display()
    );
    assert_eq!(std::fs::read(&q.moved_to).unwrap(), bytes, "and unchanged");
    assert!(
        q.moved_to
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("j.redb.corrupt-")
    );
    let salvaged = all(&j);
    assert_eq!(salvaged.len() as u64, q.salvaged);
    // The loss reported covers what is really missing of the range found.
    let (lo, hi) = (salvaged[0].seq, salvaged.last().unwrap().seq);
    assert_eq!(q.missing, hi - lo + 1 - q.salvaged);
    for r in &salvaged {
        assert_eq!(r.reading().unwrap(), readings[r.seq as usize - 1]);
        assert_eq!(&*r.boot_id, "boot-a");
    }
    let stats = j.stats().unwrap();
    assert_eq!(stats.counters.quarantined, 1);
    assert_eq!(stats.counters.salvaged, q.salvaged);
    // New readings are numbered after every number the damaged journal
    // handed out, including the newest, which the damage may have taken.
    let next = j.commit(&[reading(99)], &[]).unwrap().seqs;
    assert!(
        next.start > readings.len() as u64,
        "new readings start at {} and would reuse numbers of lost ones",
        next.start
    );
    assert_ne!(original, bytes);
    q.salvaged
}

// Invariant 6.
#[test]
fn invariant_6_a_truncated_journal_is_quarantined_and_its_intact_readings_salvaged() {
    let n = damaged_file_is_quarantined_and_salvaged(|b| b.truncate(b.len() / 2));
    assert!(n > 1_000, "only {n} salvaged");
}

#[test]
fn invariant_6_a_zero_filled_journal_header_is_quarantined_and_its_readings_salvaged() {
    let n = damaged_file_is_quarantined_and_salvaged(|b| b[..8192].fill(0));
    assert_eq!(n, 20_000, "only the header was damaged");
}

#[test]
fn invariant_6_bit_flips_in_journaled_readings_are_caught_and_the_rest_salvaged() {
    let n = damaged_file_is_quarantined_and_salvaged(|b| {
        // Flip one bit inside three readings' text, far apart.
        let needle = b"weather,device_id=pi-1";
        let hits: Vec<usize> = b
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| w == needle)
            .map(|(i, _)| i)
            .collect();
        for k in [hits.len() / 4, hits.len() / 2, 3 * hits.len() / 4] {
            b[hits[k] + 3] ^= 0x04;
        }
    });
    // A stale copy of a damaged record in a page redb freed may bring it back.
    assert!((19_997..=20_000).contains(&n), "{n} salvaged");
}

#[test]
fn invariant_6_a_zero_filled_middle_region_loses_only_what_was_there() {
    let n = damaged_file_is_quarantined_and_salvaged(|b| {
        let needle = b"weather,device_id=pi-1";
        let mid = b
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| w == needle)
            .map(|(i, _)| i)
            .nth(10_000)
            .unwrap();
        b[mid..mid + 256 * 1024].fill(0);
    });
    assert!((15_000..20_000).contains(&n), "{n} salvaged");
}
