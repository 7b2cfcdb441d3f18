//! A device without a real-time clock: readings taken before NTP sets the
//! clock are held in the journal, then reach Kafka with timestamps
//! corrected from the time since boot; readings of a boot that never synced
//! are tagged. The agent runs in-process with a fake clock: the monotonic
//! time is the machine's, the wall time and "synchronised" are the test's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::time::Duration;

use buoy_tests::kafka::{Kafka, KafkaRecord, Storage, create_topics, read_topic};
use buoy_tests::process::free_port;
use edge_agent::agent::{self, Setup};
use edge_agent::clock::{self, Clock, Stamp};
use edge_agent::config::AgentConfig;
use edge_agent::stats::Stats;
use telemetry::line_protocol;
use telemetry::record::Format;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// The wall clock is the time since boot plus `offset`.
struct FakeClock {
    offset_ns: AtomicI64,
    synced: AtomicBool,
}

impl FakeClock {
    /// A Pi that booted without a clock: 1970 plus the time since boot.
    fn unset() -> Arc<FakeClock> {
        Arc::new(FakeClock {
            offset_ns: AtomicI64::new(0),
            synced: AtomicBool::new(false),
        })
    }

    /// NTP sets the clock: it jumps to the real time, synchronised.
    fn set(&self) {
        let offset = clock::wall_now_ns() - clock::boottime_ns() as i64;
        self.offset_ns.store(offset, SeqCst);
        self.synced.store(true, SeqCst);
    }
}

impl Clock for FakeClock {
    fn stamp(&self) -> Stamp {
        let mono_ns = clock::boottime_ns();
        Stamp {
            wall_ns: mono_ns as i64 + self.offset_ns.load(SeqCst),
            mono_ns,
            synced: self.synced.load(SeqCst),
        }
    }
}

fn config(text: &str) -> AgentConfig {
    let text = text.replace("shutdown_grace = \"15s\"", "shutdown_grace = \"1s\"");
    AgentConfig::load("test.toml", Some(&text), &[])
        .expect("a valid config")
        .config
}

/// Runs the agent in-process until the token is cancelled; the task says
/// whether it stopped cleanly.
async fn run_agent(
    config: AgentConfig,
    clock: Arc<FakeClock>,
    boot_id: &str,
    stats: Arc<Stats>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let shutdown = CancellationToken::new();
    let setup = Setup {
        stats,
        clock,
        boot_id: boot_id.into(),
        report_commits: None,
        report_state: None,
        stall_main_loop_after: None,
    };
    let run = agent::run_with(config, shutdown.clone(), setup);
    let task = tokio::spawn(async move { run.await.map_err(|e| format!("{e:#}")) });
    (shutdown, task)
}

async fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the agent cleanly; returns what kafka-python finds on the topic
/// and how many readings the agent saw acknowledged.
async fn stop_and_read(
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
    stats: &Stats,
    kafka: &Kafka,
) -> (Vec<KafkaRecord>, usize) {
    shutdown.cancel();
    task.await.unwrap().expect("a clean stop");
    let forwarded = stats.snapshot().forwarded as usize;
    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(20),
        Some(forwarded),
    );
    (records, forwarded)
}

fn header<'a>(r: &'a KafkaRecord, key: &str) -> &'a str {
    r.headers.get(key).map(String::as_str).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_taken_before_the_clock_is_set_arrive_with_corrected_monotonic_timestamps() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(dir.path(), Storage::Memory);
    create_topics(&kafka.bootstrap(), &["telemetry"]).await;
    let config = config(&agent_config(
        dir.path(),
        &kafka.bootstrap(),
        Format::Influx,
        1,
        "100ms",
    ));
    let fake = FakeClock::unset();
    let stats = Arc::new(Stats::default());
    let test_start = clock::wall_now_ns();
    let (shutdown, task) = run_agent(config, fake.clone(), "boot-a", stats.clone()).await;

    // Unsynchronised: sampled and journaled, but nothing leaves.
    wait_until("80 readings journaled", Duration::from_secs(30), || {
        stats.snapshot().journaled >= 80
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stats.snapshot().forwarded,
        0,
        "readings with an unset clock wait for it"
    );

    fake.set();
    let held = stats.snapshot().journaled;
    wait_until(
        "the held readings and newer ones forwarded",
        Duration::from_secs(60),
        || stats.snapshot().forwarded >= held + 40,
    )
    .await;
    let (records, forwarded) = stop_and_read(shutdown, task, &stats, &kafka).await;
    let test_end = clock::wall_now_ns();
    assert!(
        records.len() >= forwarded,
        "{} of {forwarded}",
        records.len()
    );
    let mut corrected = 0;
    let mut synced = 0;
    // sensor -> (seq, timestamp, mono)
    let mut by_sensor: BTreeMap<String, Vec<(u64, i64, u64)>> = BTreeMap::new();
    for r in &records {
        let reading = line_protocol::parse_line(r.text(), 0).expect("line protocol");
        assert_eq!(
            reading.tag("clock"),
            None,
            "nothing is tagged unsynced: {}",
            r.text()
        );
        match header(r, "buoy-clock") {
            "corrected" => corrected += 1,
            "synced" => synced += 1,
            other => panic!("buoy-clock {other:?} on {}", r.text()),
        }
        assert_eq!(header(r, "buoy-boot"), "boot-a");
        let mono: u64 = header(r, "buoy-mono").parse().expect("buoy-mono");
        let ts = reading.timestamp_ns;
        assert!(
            ts >= test_start - 1_000_000_000 && ts <= test_end,
            "{} is not a time during the test ({test_start}..{test_end})",
            r.text()
        );
        by_sensor
            .entry(reading.tag("sensor").unwrap().to_owned())
            .or_default()
            .push((header(r, "buoy-seq").parse().unwrap(), ts, mono));
    }
    assert!(
        corrected as u64 >= held / 2,
        "the readings held before the sync were corrected: {corrected} of {held}"
    );
    assert!(synced > 0, "readings after the sync go as they are");
    let offset = fake.offset_ns.load(SeqCst);
    for (sensor, mut readings) in by_sensor {
        readings.sort();
        readings.dedup();
        for pair in readings.windows(2) {
            assert!(
                pair[1].1 > pair[0].1,
                "{sensor}: timestamps go forward in sampling order: {pair:?}"
            );
        }
        for (seq, ts, mono) in readings {
            // Corrected or not, each timestamp is the time since boot
            // on the clock as set: one consistent timeline.
            assert_eq!(ts - mono as i64, offset, "{sensor} seq {seq}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_of_a_boot_that_never_synced_are_tagged() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let text = agent_config(dir.path(), &bootstrap, Format::Influx, 1, "100ms");

    // Boot A: no clock, no broker. Readings are journaled and wait.
    let stats = Arc::new(Stats::default());
    let (shutdown, task) =
        run_agent(config(&text), FakeClock::unset(), "boot-a", stats.clone()).await;
    wait_until("40 readings journaled", Duration::from_secs(30), || {
        stats.snapshot().journaled >= 40
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().expect("a clean stop");
    let journaled_a = stats.snapshot().journaled;

    // Boot B: the clock is set and the broker is there.
    let kafka = Kafka::start_on(port, dir.path(), Storage::Memory);
    create_topics(&bootstrap, &["telemetry"]).await;
    let fake = FakeClock::unset();
    fake.set();
    let stats = Arc::new(Stats::default());
    let (shutdown, task) = run_agent(config(&text), fake, "boot-b", stats.clone()).await;
    wait_until(
        "boot A's readings forwarded",
        Duration::from_secs(60),
        || stats.snapshot().forwarded >= journaled_a + 20,
    )
    .await;
    let (records, _) = stop_and_read(shutdown, task, &stats, &kafka).await;

    let (a, b): (Vec<&KafkaRecord>, Vec<&KafkaRecord>) = records
        .iter()
        .partition(|r| header(r, "buoy-boot") == "boot-a");
    assert_eq!(
        a.len() as u64,
        journaled_a,
        "every reading of boot A arrives"
    );
    for r in a {
        let reading = line_protocol::parse_line(r.text(), 0).unwrap();
        assert_eq!(reading.tag("clock"), Some("unsynced"), "{}", r.text());
        assert_eq!(header(r, "buoy-clock"), "unsynced");
        // Its timestamp could not be corrected: it is what the unset clock said.
        assert!(
            reading.timestamp_ns < clock::PLAUSIBLE_AFTER_NS,
            "{}",
            r.text()
        );
    }
    assert!(!b.is_empty());
    for r in b {
        let reading = line_protocol::parse_line(r.text(), 0).unwrap();
        assert_eq!(reading.tag("clock"), None, "{}", r.text());
        assert_eq!(header(r, "buoy-clock"), "synced");
    }
}
