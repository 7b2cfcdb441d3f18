//! The uplink against what breaks it: malformed records and a database
//! refusing lines, the uplink killed mid-batch, the database away for a
//! minute, a consumer group losing a member. Every test ends with exact
//! point counts. (The dialects of the databases not installed here are in
//! `dialects.rs`.)

use std::path::Path;
use std::time::{Duration, Instant};

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Outgoing, Storage, produce, read_topic};
use buoy_tests::load::{self, Load};
use buoy_tests::process::Service;
use buoy_tests::redis::Redis;
use buoy_tests::victoria::Victoria;

use crate::common::*;

/// Starts the uplink with `sinks` (TOML tables) and `extra` (more tables).
pub fn start(dir: &Path, kafka: &Kafka, topic: &str, sinks: &str, extra: &str) -> Service {
    let config = format!(
        "{}{extra}",
        uplink_config(&kafka.bootstrap(), topic, &format!("{topic}.dlq"), sinks)
    );
    binaries::start("uplink", dir, &config)
}

/// Starts uplink `name` of a group consuming `topic` (dead letters to
/// `<topic>.dlq`) in a directory of its own, statically a member as `name`;
/// `properties` (a `[kafka.properties]` table, or nothing) go into its config.
pub fn start_member(
    dir: &Path,
    bootstrap: &str,
    topic: &str,
    sink: &str,
    name: &str,
    properties: &str,
) -> Service {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let c = uplink_config(bootstrap, topic, &format!("{topic}.dlq"), sink)
        .replace("group = ", &format!("instance_id = \"{name}\"\ngroup = "))
        .replace("[retry]", &format!("{properties}[retry]"));
    binaries::start("uplink", &d, &c)
}

/// The uplink's metrics endpoint, from its log.
pub fn metrics_url(uplink: &Service) -> String {
    let log = buoy_tests::process::wait_for(
        "the uplink to announce its metrics address",
        Duration::from_secs(20),
        || Some(uplink.log()).filter(|l| l.contains("metrics at http://")),
        || uplink.log(),
    );
    let start = log.find("metrics at http://").expect("the address") + 11;
    let end = start + log[start..].find("/metrics").expect("/metrics");
    format!("{}/metrics", &log[start..end])
}

/// One metric's value, summed over its labels.
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(url)
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until VictoriaMetrics holds `n` points of `load_v`, then checks it
/// stays at exactly `n`.
pub async fn assert_exactly(vm: &Victoria, n: usize, timeout: Duration, log: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    let mut held = 0;
    while Instant::now() < deadline {
        held = vm.count("load_v").await;
        if held >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    held = held.max(vm.count("load_v").await);
    assert_eq!(
        held,
        n,
        "points of load_v in VictoriaMetrics != records produced\n{}",
        log()
    );
}

/// Like [`assert_exactly`]; on a shortfall, also says how many records an
/// independent client (kafka-python) finds on the topic.
async fn assert_exactly_on(
    vm: &Victoria,
    n: usize,
    bootstrap: &str,
    topic: &str,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && vm.count("load_v").await < n {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let held = vm.count("load_v").await;
    if held != n {
        let on_topic = read_topic(bootstrap, topic, Duration::from_secs(20), Some(n)).len();
        panic!(
            "VictoriaMetrics holds {held} of {n} records produced; kafka-python reads {on_topic} on the topic\n{}",
            log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_records_land_exactly_in_victoria_influxdb_and_redis() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["mixed", "mixed.dlq"]).await;
    let vm = Victoria::start(dir.path());
    let influx = Database::influx(dir.path()).await;
    let redis = Redis::start(dir.path());

    let t0 = load::recent_t0_ms();
    let n = 300u64;
    let mut payloads: Vec<Vec<u8>> = (0..n).map(|i| load::line(i, 3, t0).into_bytes()).collect();
    // Malformed: never reach a database.
    let malformed: Vec<(usize, Vec<u8>)> = vec![
        (10, vec![b'l', 0xff, b' ', b'v', b'=', b'1']),
        (20, b"load,device_id=d1 v= 17".to_vec()),
        (30, br#"{"name":"load","fields":{"v":"#.to_vec()),
    ];
    for (at, payload) in &malformed {
        payloads.insert(*at, payload.clone());
    }
    // A float field, then the same field as a string: InfluxDB refuses the
    // second (field type conflict) and keeps the first. The string is the
    // older of the two, so Redis keeps the float too.
    let conflict_float = format!("conflict,device_id=d0 v=1.5 {}", (t0 + 5_000) * 1_000_000);
    let conflict_string = format!(
        "conflict,device_id=d0 v=\"oops\" {}",
        (t0 + 4_000) * 1_000_000
    );
    payloads.push(conflict_float.clone().into_bytes());
    payloads.push(conflict_string.clone().into_bytes());
    let records: Vec<Outgoing<'_>> = payloads
        .iter()
        .map(|p| Outgoing {
            payload: p,
            headers: &[],
        })
        .collect();
    produce(&kafka.bootstrap(), "mixed", &records).await;

    let Database::Influx(db) = &influx else {
        unreachable!()
    };
    let sinks = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n[[sink]]\nkind = \"influxdb_v1\"\nurl = \"{}\"\ndatabase = \"buoy\"\n[[sink]]\nkind = \"redis\"\nurl = \"{}\"\n",
        vm.url(),
        db.url(),
        redis.url()
    );
    let uplink = start(dir.path(), &kafka, "mixed", &sinks, "");

    let dead = read_topic(
        &kafka.bootstrap(),
        "mixed.dlq",
        Duration::from_secs(30),
        Some(4),
    );
    assert_eq!(dead.len(), 4, "{dead:?}\n{}", uplink.log());
    let mut sources: Vec<(String, Option<String>)> = dead
        .iter()
        .map(|r| {
            (
                r.headers["buoy-source-offset"].clone(),
                r.headers.get("buoy-sink").cloned(),
            )
        })
        .collect();
    sources.sort();
    let conflict_offset = (n + 4).to_string();
    let expected_sources: Vec<(String, Option<String>)> = vec![
        ("10".into(), None),
        ("20".into(), None),
        ("30".into(), None),
        (
            conflict_offset,
            Some(format!("influxdb_v1 {}/write db=buoy", db.url())),
        ),
    ];
    let mut expected_sources = expected_sources;
    expected_sources.sort();
    assert_eq!(sources, expected_sources);
    assert_eq!(dead.iter().filter(|r| r.value == malformed[0].1).count(), 1);

    assert_exactly(&vm, n as usize, Duration::from_secs(60), || uplink.log()).await;
    let load_points = wait_for_async(
        "every load point in InfluxDB",
        Duration::from_secs(30),
        || async {
            let held = db.points("buoy", "load").await;
            (held.len() >= n as usize).then_some(held)
        },
        || uplink.log(),
    )
    .await;
    assert_eq!(load_points.len(), n as usize);
    let conflict = db.points("buoy", "conflict").await;
    assert_eq!(conflict.len(), 1, "{conflict:?}");

    // Redis: the newest reading of each device.
    let hashes = redis.hashes("buoy:latest:").await;
    assert_eq!(hashes.len(), 4, "{hashes:?}");
    for device in 0..3u64 {
        let last = (0..n).rev().find(|i| i % 3 == device).unwrap();
        let h = &hashes[&format!("buoy:latest:load,device_id=d{device}")];
        assert_eq!(h["v"], last.to_string());
        assert_eq!(h["_time"], ((t0 + last as i64) * 1_000_000).to_string());
    }
    assert_eq!(hashes["buoy:latest:conflict,device_id=d0"]["v"], "1.5");

    let m = metrics_url(&uplink);
    assert_eq!(metric(&m, "uplink_dead_lettered_total").await, 4.0);
    assert_eq!(metric(&m, "uplink_records_total").await, (n + 5) as f64);
    stop_uplink(uplink, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_batch_again_and_again_the_database_ends_with_every_point_once() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["killed", "killed.dlq"]).await;
    let vm = Victoria::start(dir.path());
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    // Small batches, so that several are always in flight when it dies.
    let batch = "[batch]\nmax_lines = 400\nmax_wait = \"200ms\"\nmax_in_flight = 4\n";
    let t0 = load::recent_t0_ms();
    let load = Load::start(&kafka.bootstrap(), "killed", 2_000, 5, t0);
    let start_one = || {
        let config = uplink_config(&kafka.bootstrap(), "killed", "killed.dlq", &sink)
            .replace("[batch]\nmax_wait = \"200ms\"\n", batch)
            .replace("group = ", "instance_id = \"uplink-1\"\ngroup = ");
        binaries::start("uplink", dir.path(), &config)
    };
    let mut uplink = start_one();
    let mut kills = 0;
    let mut in_flight_at_kill = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let m = metrics_url(&uplink);
        in_flight_at_kill.push(metric(&m, "uplink_batches_in_flight").await);
        uplink.kill();
        kills += 1;
        uplink = start_one();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let produced = load.finish() as usize;
    eprintln!(
        "{kills} SIGKILLs; {produced} records; batches in flight at each kill: {in_flight_at_kill:?}"
    );
    assert!(produced > 50_000, "{produced}");
    assert_exactly(&vm, produced, Duration::from_secs(120), || uplink.log()).await;
    stop_uplink(uplink, 0);
}

/// With the broker gone, SIGTERM still stops the uplink within seconds: its
/// last offset commit waits a few seconds for Kafka, not for ever (it used
/// to wait until systemd's SIGKILL, 60 s later; found by `scripts/demo`).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_uplink_promptly_while_the_broker_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["gone", "gone.dlq"]).await;
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let vm = Victoria::start(&vm_dir);
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    let load = Load::start(&kafka.bootstrap(), "gone", 200, 1, load::recent_t0_ms());
    let mut uplink = start(dir.path(), &kafka, "gone", &sink, "");
    let m = metrics_url(&uplink);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&m, "uplink_lines_written_total").await < 100.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        metric(&m, "uplink_lines_written_total").await >= 100.0,
        "{}",
        uplink.log()
    );
    load.finish();
    kafka.service.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let asked = Instant::now();
    let status = uplink.stop(Duration::from_secs(45));
    let took = asked.elapsed();
    eprintln!("the uplink stopped {took:?} after SIGTERM, the broker gone");
    assert!(
        status.success(),
        "uplink exited with {status}:\n{}",
        uplink.log()
    );
    assert!(
        took < Duration::from_secs(15),
        "SIGTERM took {took:?} to stop the uplink with the broker gone:\n{}",
        uplink.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_stopped_for_a_minute_loses_nothing_and_memory_stays_bounded() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["outage", "outage.dlq"]).await;
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut vm = Victoria::start(&vm_dir);
    let port = vm.port;
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    let t0 = load::recent_t0_ms();
    let load = Load::start(&kafka.bootstrap(), "outage", 1_500, 5, t0);
    let uplink = start(dir.path(), &kafka, "outage", &sink, "");
    let m = metrics_url(&uplink);

    // Flowing first: the group joined and lines written.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&m, "uplink_lines_written_total").await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss_before, _) = uplink.memory_kib();
    let lag_before = metric(&m, "uplink_consumer_lag").await;
    vm.service.stop(Duration::from_secs(30));
    let down_at = Instant::now();
    let mut paused = false;
    let mut peak_lag = 0f64;
    let mut peak_rss = 0;
    while down_at.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        paused |= metric(&m, "uplink_consuming_paused").await == 1.0;
        peak_lag = peak_lag.max(metric(&m, "uplink_consumer_lag").await);
        peak_rss = peak_rss.max(uplink.memory_kib().0);
    }
    let retries = metric(&m, "uplink_write_retries_total").await;
    vm = Victoria::start_on(&vm_dir, port);
    let up_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let produced = load.finish() as usize;
    assert_exactly_on(&vm, produced, &kafka.bootstrap(), "outage", || uplink.log()).await;
    let caught_up = up_at.elapsed();
    let lag_after = metric(&m, "uplink_consumer_lag").await;
    let (_, hwm) = uplink.memory_kib();
    eprintln!(
        "outage: {produced} records; lag before {lag_before}, peak {peak_lag}, after {lag_after}; \
         caught up {caught_up:?} after the restart; RSS before {rss_before} KiB, peak during {peak_rss} KiB, \
         high-water {hwm} KiB; {retries} retries; paused: {paused}"
    );
    assert!(paused, "consumption paused while every batch slot waited");
    assert!(retries > 0.0);
    assert!(
        peak_lag > 10_000.0,
        "the lag grew during the outage: {peak_lag}"
    );
    assert!(
        lag_after < peak_lag / 10.0,
        "the lag recovered: {lag_after} after a peak of {peak_lag}"
    );
    // Bounded: 4 batches of 5,000 short lines and librdkafka's 8 MiB queue,
    // not the 90,000 records that arrived during the outage.
    assert!(hwm < 150 * 1024, "peak RSS {hwm} KiB");
    stop_uplink(uplink, 0);
}

/// Against librdkafka's mock cluster, which (unlike Tansu 0.6) evicts a
/// group member whose session lapsed, so a member killed for good hands its
/// partitions on. It listens on real loopback ports, so the uplink binaries
/// connect to it like to any broker.
#[tokio::test(flavor = "multi_thread")]
async fn two_uplinks_share_six_partitions_and_one_killed_halfway_loses_nothing() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    mock.create_topic("shared", 6, 1).expect("topic");
    mock.create_topic("shared.dlq", 1, 1).expect("topic");
    let bootstrap = mock.bootstrap_servers();
    let vm = Victoria::start(dir.path());
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    // A member that vanishes is noticed after the session timeout.
    let group = "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n";
    let t0 = load::recent_t0_ms();
    let load = Load::start(&bootstrap, "shared", 1_500, 24, t0);
    let mut a = start_member(dir.path(), &bootstrap, "shared", &sink, "a", group);
    let b = start_member(dir.path(), &bootstrap, "shared", &sink, "b", group);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let a_log = a.log();
    assert!(
        a_log.contains("partitions assigned partitions=shared"),
        "{a_log}"
    );
    a.kill();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let produced = load.finish() as usize;
    assert_exactly(&vm, produced, Duration::from_secs(120), || {
        format!("uplink A:\n{a_log}\nuplink B:\n{}", b.log())
    })
    .await;
    assert_eq!(
        metric(&metrics_url(&b), "uplink_partitions_assigned").await,
        6.0,
        "B holds all six partitions after A died:\n{}",
        b.log()
    );
    eprintln!("two uplinks: {produced} records, A killed at 20 s");
    stop_uplink(b, 0);
}
