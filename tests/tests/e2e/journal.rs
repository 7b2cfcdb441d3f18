//! The journal under abuse, through the real agent binary: SIGKILLs at random
//! moments, a filesystem too small for the data, and damaged journal files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use buoy_tests::binaries;
use buoy_tests::fs::SmallFs;
use buoy_tests::kafka::{Kafka, Storage, read_topic};
use buoy_tests::process::{Service, free_port, wait_for};
use edge_agent::journal::{Journal, JournalOptions};
use telemetry::record::Format;

use crate::common::*;

const MIB: u64 = 1 << 20;

/// The highest sequence number `edge-agent run --report-commits FILE`
/// reported committed (a line is written only after the commit returned).
fn last_committed(report: &Path) -> u64 {
    std::fs::read_to_string(report)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .max()
        .unwrap_or(0)
}

fn corrupt_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".corrupt-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_committed_reading_is_lost_when_the_agent_is_killed_50_times() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry"]).await;
    let config = agent_config(dir.path(), &kafka.bootstrap(), Format::Influx, 2, "2ms");
    let journal = dir.path().join("journal.redb");

    let mut committed = 0;
    let mut runs_that_committed = 0;
    let started = Instant::now();
    for run in 0..50 {
        let report = dir.path().join(format!("commits-{run}"));
        let mut agent = binaries::start_with_args(
            "edge-agent",
            dir.path(),
            &config,
            &format!("agent-{run}.log"),
            &[],
            &["--report-commits".as_ref(), report.as_os_str()],
        );
        // Anywhere from start-up to well into sampling and forwarding.
        let millis = 150 + rand::random::<u64>() % 1_350;
        std::thread::sleep(Duration::from_millis(millis));
        agent.kill();
        let log = agent.log();
        assert!(
            !log.contains("damaged"),
            "run {run}: the journal was found damaged after a SIGKILL:\n{log}"
        );
        let last = last_committed(&report);
        if last > committed {
            runs_that_committed += 1;
        }
        committed = committed.max(last);
    }
    eprintln!(
        "50 kills in {:?}; {runs_that_committed} runs committed new readings; highest committed seq {committed}",
        started.elapsed()
    );
    assert!(
        runs_that_committed >= 25,
        "too few runs got as far as committing"
    );

    // One clean run drains what the killed ones left.
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for(
        "the backlog to drain",
        Duration::from_secs(120),
        || {
            let s = binaries::state_of(&agent)?;
            // At 4,000 readings/s a few hundred wait for the next commit.
            (binaries::state_number(&s, "forwarded") > 0
                && binaries::state_number(&s, "journal/records") < 2_000)
                .then_some(())
        },
        || agent.log(),
    );
    let journaled = stop_agent_and_count(&mut agent, &journal);
    assert!(journaled >= committed);
    assert!(
        corrupt_files(dir.path()).is_empty(),
        "no journal was quarantined"
    );

    // Every sequence number ever given is on the topic: contiguous, none
    // reused for a different reading, and every committed one present.
    every_reading_on_topic(&kafka.bootstrap(), Format::Influx, journaled);
}

/// Where the journal of a full-disk test lives: on a small tmpfs if this
/// machine can mount one, else under a `max_bytes` smaller than the data.
struct SmallJournal {
    fs: Option<SmallFs>,
    path: std::path::PathBuf,
    limit: u64,
}

fn small_journal(dir: &Path, bytes: u64) -> SmallJournal {
    match SmallFs::mount(&dir.join("small"), bytes) {
        Ok(fs) => SmallJournal {
            path: fs.path.join("journal.redb"),
            fs: Some(fs),
            limit: bytes,
        },
        Err(why) => {
            eprintln!(
                "cannot mount a tmpfs here ({why}); testing with journal.max_bytes = {bytes} instead of a full disk"
            );
            SmallJournal {
                path: dir.join("journal.redb"),
                fs: None,
                limit: bytes,
            }
        }
    }
}

/// An agent sampling fast with no broker, its journal at `journal`.
fn full_journal_config(dir: &Path, journal: &SmallJournal, policy: &str) -> String {
    let nobody = format!("127.0.0.1:{}", free_port());
    let mut c = agent_config(dir, &nobody, Format::Influx, 2, "1ms")
        .replace(
            &format!("path = \"{}\"", dir.join("journal.redb").display()),
            &format!("path = \"{}\"", journal.path.display()),
        )
        .replace("shutdown_grace = \"15s\"", "shutdown_grace = \"1s\"");
    let mut extra = format!("when_full = \"{policy}\"\ndownsample_window = \"2s\"\n");
    if journal.fs.is_none() {
        extra.push_str(&format!("max_bytes = {}\n", journal.limit));
    }
    c = c.replace("[journal]\n", &format!("[journal]\n{extra}"));
    c
}

/// Runs the agent until the policy (its counter at `counter`, a path in the
/// reported state) has acted, and acted again, checks it never stopped,
/// stops it, and returns its final state and the count when it first acted.
fn run_until_full(agent: &mut Service, counter: &str) -> (serde_json::Value, u64) {
    let acted = wait_for_status(agent, counter, 1, Duration::from_secs(120));
    // The policy keeps acting while sampling goes on. The counter may be
    // left over from an earlier full disk (space returned since): the disk
    // has to fill again first, however slowly this machine samples.
    wait_for_status(agent, counter, acted + 1, Duration::from_secs(120));
    assert!(agent.is_running(), "the agent exited:\n{}", agent.log());
    assert!(
        agent.log().contains("the journal is full"),
        "the policy is logged"
    );
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", agent.log());
    (binaries::final_state(agent), acted)
}

/// Runs an agent with `policy` on a 6 MiB journal until `counter` shows the
/// policy acting; returns the directory, the journal, the agent's last status
/// state and `journal stats --json`.
fn fill_a_small_journal(
    policy: &str,
    counter: &str,
) -> (
    tempfile::TempDir,
    SmallJournal,
    serde_json::Value,
    serde_json::Value,
) {
    let dir = tempfile::tempdir().unwrap();
    let small = small_journal(dir.path(), 6 * MIB);
    let config = full_journal_config(dir.path(), &small, policy);
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    let (last, _) = run_until_full(&mut agent, counter);
    let stats = binaries::journal_stats_json(dir.path());
    (dir, small, last, stats)
}

/// The number at `path` of a reported state; it must be there.
fn n(state: &serde_json::Value, path: &str) -> u64 {
    path.split('/')
        .fold(state, |v, key| &v[key])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} in {state}"))
}

fn j(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {stats}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_oldest_on_a_full_disk_drops_exactly_the_oldest_and_recovers_when_space_returns() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let small = small_journal(dir.path(), 16 * MIB);
    // Other files take most of the disk: 3 MiB are left for the journal.
    let ballast = small.fs.as_ref().map(|fs| fs.fill("ballast", 3 * MIB));
    let config = full_journal_config(dir.path(), &small, "drop_oldest");
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_status(
        &agent,
        "dropped/dropped_oldest",
        1,
        Duration::from_secs(120),
    );
    let cramped = wait_for_status(&agent, "journal/file_bytes", 0, Duration::from_secs(30));
    if let (Some(fs), Some(ballast)) = (&small.fs, ballast) {
        assert!(cramped <= 3 * MIB, "the journal grew to {cramped} bytes");
        // Space returns: the journal grows again, past what it had.
        std::fs::remove_file(ballast).unwrap();
        wait_for(
            "the journal to grow once the disk has room",
            Duration::from_secs(60),
            || (binaries::agent_number(&agent, "journal/file_bytes")? > 2 * cramped).then_some(()),
            || agent.log(),
        );
        assert!(fs.available() > 0);
    }
    let (last, _) = run_until_full(&mut agent, "dropped/dropped_oldest");
    let stats = binaries::journal_stats_json(dir.path());
    let journaled = j(&stats, "next_seq") - 1;
    let dropped = j(&stats, "dropped_oldest");
    assert!(j(&stats, "file_bytes") <= small.limit);
    // Exactly the oldest were dropped, every one of them counted.
    assert_eq!(j(&stats, "records") + dropped, journaled, "{stats}");
    assert_eq!(j(&stats, "first_seq"), dropped + 1, "{stats}");
    assert_eq!(
        n(&last, "dropped/dropped_oldest"),
        dropped,
        "reported state and journal agree"
    );
    assert_eq!(n(&last, "journaled"), journaled);
    assert_eq!(
        n(&last, "sampled"),
        journaled + n(&last, "dropped/queue_full"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_new_on_a_full_disk_keeps_the_oldest_and_counts_every_refused_reading() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let (_dir, small, last, stats) = fill_a_small_journal("reject_new", "dropped/rejected_new");
    let journaled = j(&stats, "next_seq") - 1;
    let rejected = j(&stats, "rejected_new");
    assert!(j(&stats, "file_bytes") <= small.limit);
    assert_eq!(j(&stats, "records"), journaled, "nothing was dropped");
    assert_eq!(
        (j(&stats, "first_seq"), j(&stats, "last_seq")),
        (1, journaled)
    );
    assert_eq!(j(&stats, "dropped_oldest"), 0);
    assert_eq!(n(&last, "dropped/rejected_new"), rejected);
    assert_eq!(
        n(&last, "sampled"),
        journaled + rejected + n(&last, "dropped/queue_full"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn downsample_on_a_full_disk_accounts_for_every_reading_in_its_aggregates() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let (dir, small, last, stats) = fill_a_small_journal("downsample", "dropped/aggregated");
    let aggregated = j(&stats, "aggregated");
    let aggregates = j(&stats, "aggregates_written");
    assert_eq!(j(&stats, "dropped_oldest"), 0, "aggregating made room");
    assert!(j(&stats, "file_bytes") <= small.limit);
    // The backlog as `journal export` streams it.
    let (ok, export, err) = binaries::journal_command(dir.path(), &["export"]);
    assert!(ok, "{err}");
    let (mut raw, mut counted, mut agg_lines) = (0u64, 0u64, 0u64);
    for line in export.lines() {
        let r = telemetry::line_protocol::parse_line(line, 0).expect("line protocol");
        if r.measurement.ends_with("_agg") {
            agg_lines += 1;
            counted += match r.fields["count"] {
                telemetry::FieldValue::Int(c) => c as u64,
                ref other => panic!("count is {other:?}"),
            };
            assert!(r.fields.keys().any(|k| k.ends_with("_mean")), "{line}");
        } else {
            raw += 1;
        }
    }
    assert_eq!(agg_lines, aggregates, "every aggregate written is waiting");
    assert_eq!(
        counted, aggregated,
        "the aggregates count what they replaced"
    );
    let journaled_raw = j(&stats, "next_seq") - 1 - aggregates;
    assert_eq!(
        raw + aggregated,
        journaled_raw,
        "no raw reading unaccounted"
    );
    assert_eq!(n(&last, "dropped/aggregated"), aggregated);
    assert_eq!(
        n(&last, "sampled"),
        journaled_raw + n(&last, "dropped/queue_full"),
        "{last}"
    );
}

/// Sequence number → line of everything in the journal (agent stopped).
fn snapshot(path: &Path) -> BTreeMap<u64, String> {
    let (journal, _) = Journal::open_for_inspection(path, JournalOptions::for_inspection())
        .expect("open the journal");
    journal
        .read_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            (r.seq, r.line)
        })
        .collect()
}

/// Offsets of every copy of `line` in the file: the live one, and stale
/// ones in pages redb has freed.
fn copies_of(bytes: &[u8], line: &str) -> Vec<usize> {
    let needle = line.as_bytes();
    let found: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!found.is_empty(), "{line:?} is not in the file");
    found
}

/// The lines of live records at these fractions of the journal.
fn live_lines(journal: &BTreeMap<u64, String>, at: &[usize]) -> Vec<String> {
    let lines: Vec<&String> = journal.values().collect();
    at.iter()
        .map(|&pct| lines[lines.len() * pct / 100].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_journal_is_quarantined_salvaged_and_forwarded_while_sampling_goes_on() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.redb");
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    // A small journal, so that its hot segment (a 64th of max_bytes) holds
    // only the newest few hundred readings and the backlog damaged here is
    // in the redb file.
    let config = agent_config(dir.path(), &bootstrap, Format::Influx, 1, "5ms")
        .replace("shutdown_grace = \"15s\"", "shutdown_grace = \"1s\"")
        .replace(
            "commit_interval = \"100ms\"",
            "commit_interval = \"100ms\"\nmax_bytes = \"4MiB\"",
        );
    // A journal with a few thousand readings, Kafka down.
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_status(&agent, "journaled", 3_000, Duration::from_secs(60));
    assert!(agent.stop(Duration::from_secs(30)).success());
    let before = snapshot(&journal);

    // Each damage hits live records (every copy of them, so a stale copy in
    // a freed page cannot stand in for the live one).
    type Damage = fn(&mut Vec<u8>, &BTreeMap<u64, String>);
    let damages: [(&str, Damage); 3] = [
        ("truncated", |b, _| b.truncate(b.len() * 3 / 5)),
        ("zero-filled", |b, live| {
            for line in live_lines(live, &[40]) {
                for at in copies_of(b, &line) {
                    let end = (at + 64 * 1024).min(b.len());
                    b[at..end].fill(0);
                }
            }
        }),
        ("bit-flipped", |b, live| {
            for line in live_lines(live, &[20, 50, 80]) {
                for at in copies_of(b, &line) {
                    b[at + 2] ^= 0x10;
                }
            }
        }),
    ];
    let mut kafka = None;
    let mut salvaged_total = 0;
    for (round, (what, damage)) in damages.into_iter().enumerate() {
        let live = snapshot(&journal);
        let mut bytes = std::fs::read(&journal).unwrap();
        damage(&mut bytes, &live);
        std::fs::write(&journal, &bytes).unwrap();
        if round == 2 {
            // The last time, Kafka is there to take what was salvaged.
            let k = Kafka::start_on(port, &dir.path().join("kafka"), Storage::Memory);
            k.create_topics(&["telemetry"]).await;
            kafka = Some(k);
        }
        let mut agent = binaries::start_with(
            "edge-agent",
            dir.path(),
            &config,
            &format!("agent-{what}.log"),
            &[],
        );
        let quarantined = wait_for_status(
            &agent,
            "journal/quarantined",
            round as u64 + 1,
            Duration::from_secs(60),
        );
        assert_eq!(quarantined, round as u64 + 1, "{what}");
        let log = agent.log();
        assert!(
            log.contains("moved aside") && log.contains("journal.redb.corrupt-"),
            "{what}: the operator is told where the damaged file went:\n{log}"
        );
        let salvaged = wait_for_status(&agent, "journal/salvaged", 0, Duration::from_secs(30));
        assert!(salvaged > salvaged_total, "{what}: something was salvaged");
        salvaged_total = salvaged;
        // Sampling goes on.
        let sampled = wait_for_status(&agent, "sampled", 0, Duration::from_secs(30));
        wait_for_status(&agent, "sampled", sampled + 500, Duration::from_secs(30));
        assert!(agent.is_running(), "{what}");
        assert_eq!(corrupt_files(dir.path()).len(), round + 1, "{what}: kept");
        if round < 2 {
            assert!(agent.stop(Duration::from_secs(30)).success());
        } else {
            let journaled = wait_for_status(&agent, "journaled", 1, Duration::from_secs(5));
            wait_for(
                "the salvaged backlog to reach Kafka",
                Duration::from_secs(120),
                || {
                    let s = binaries::state_of(&agent)?;
                    (binaries::state_number(&s, "forwarded") >= journaled
                        && binaries::state_number(&s, "journal/records") < 100)
                        .then_some(())
                },
                || agent.log(),
            );
            assert!(agent.stop(Duration::from_secs(30)).success());
        }
    }
    let kafka = kafka.unwrap();
    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(10),
        None,
    );
    let readings = readings_by_seq(&records, Format::Influx);
    // What was salvaged from the first journal is exactly what was in it.
    let mut from_first = 0;
    for (seq, reading) in &readings {
        if let Some(line) = before.get(seq) {
            let original = telemetry::line_protocol::parse_line(line, 0).unwrap();
            assert_eq!(
                reading, &original,
                "salvaged reading {seq} changed, or a new reading reused its number"
            );
            from_first += 1;
        }
    }
    assert!(
        from_first > 0,
        "readings of the first journal reached Kafka after three rounds of damage"
    );
    // Nothing of the last journal that was intact was lost: it all went.
    let stats = binaries::journal_stats_json(dir.path());
    assert_eq!(j(&stats, "records"), 0, "{stats}");
    assert_eq!(j(&stats, "quarantined"), 3);
}
