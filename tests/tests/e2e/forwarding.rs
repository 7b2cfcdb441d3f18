//! The forwarder against the real Tansu broker: a broker killed while the
//! agent samples fast, live readings overtaking a large backlog, and the
//! bandwidth budget measured on the wire by a proxy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage, index_tansu_headers, read_topic};
use buoy_tests::process::free_port;
use buoy_tests::proxy::Proxy;
use edge_agent::journal::{Journal, JournalOptions};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use telemetry::Reading;
use telemetry::record::Format;

use crate::common::*;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Writes `n` readings into a fresh journal at `path`, as if the agent had
/// sampled them an hour ago with the link down.
fn journal_with_backlog(path: &Path, n: u64) {
    let boot = edge_agent::journal::current_boot_id();
    let (journal, _) = Journal::open(path, JournalOptions::for_inspection(), &boot).unwrap();
    let start = now_ns() - 3_600_000_000_000;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        batch.push(
            Reading::new("weather", start + i as i64 * 10_000_000)
                .with_tag("device_id", DEVICE)
                .with_tag("sensor", "backlog")
                .with_field("pressure_hpa", 1000.0 + (i % 50) as f64 / 10.0)
                .with_field("temperature_c", 15.0 + (i % 30) as f64 / 10.0),
        );
        if batch.len() == 10_000 || i + 1 == n {
            journal.commit(&batch, &[]).unwrap();
            batch.clear();
        }
    }
    assert_eq!(journal.stats().unwrap().records, n);
}

/// An agent config over an existing journal with one live sensor.
fn agent_over_backlog(dir: &Path, bootstrap: &str, forward: &str) -> String {
    let head = agent_config_head(dir, bootstrap, Format::Influx, forward, "");
    format!(
        "{head}[[sensor]]\nname = \"live\"\nkind = \"simulated_weather\"\ninterval = \"100ms\"\nseed = 7\n"
    )
}

/// One record as a consumer tailing the topic saw it.
struct Seen {
    offset: i64,
    seq: u64,
    /// When the reading was sampled.
    sampled_ns: i64,
    /// When the consumer received it.
    received_ns: i64,
}

/// Tails `telemetry` from the beginning with an ordinary librdkafka consumer
/// until `stop`, noting when each record arrived.
fn tail_topic(bootstrap: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Seen>> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "tail")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("telemetry", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut seen = Vec::new();
        while !stop.load(Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let received_ns = now_ns();
            let seq = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "buoy-seq"))
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
                .expect("buoy-seq");
            let line = std::str::from_utf8(m.payload().unwrap()).unwrap();
            let sampled_ns = line.rsplit(' ').next().unwrap().parse().unwrap();
            seen.push(Seen {
                offset: m.offset(),
                seq,
                sampled_ns,
                received_ns,
            });
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_readings_overtake_a_backlog_of_200_000() {
    const BACKLOG: u64 = 200_000;
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    journal_with_backlog(&dir.path().join("journal.redb"), BACKLOG);
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tail = tail_topic(kafka.bootstrap(), stop.clone());

    // The link is restored: the agent starts with the backlog journaled.
    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_over_backlog(dir.path(), &kafka.bootstrap(), ""),
    );
    wait_for_status(&agent, "forwarded", BACKLOG + 30, Duration::from_secs(180));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    stop.store(true, Relaxed);
    let seen = tail.join().unwrap();

    let last_backlog = seen
        .iter()
        .filter(|s| s.seq <= BACKLOG)
        .map(|s| s.offset)
        .max()
        .expect("backlog records");
    // Live readings that reached the topic while the backlog was draining:
    // some backlog record came after them.
    let overtaking: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.seq > BACKLOG && s.offset < last_backlog)
        .collect();
    let latencies: Vec<f64> = overtaking
        .iter()
        .map(|s| (s.received_ns - s.sampled_ns) as f64 / 1e9)
        .collect();
    let backlog_took = {
        let first = seen.iter().map(|s| s.received_ns).min().unwrap();
        let last = seen
            .iter()
            .filter(|s| s.offset == last_backlog)
            .map(|s| s.received_ns)
            .next()
            .unwrap();
        (last - first) as f64 / 1e9
    };
    eprintln!(
        "backlog drained in {backlog_took:.1} s; {} live readings arrived meanwhile, \
         sampled-to-received {:?} s",
        overtaking.len(),
        latencies
    );
    assert!(
        overtaking.len() >= 3,
        "live readings must arrive while the backlog drains ({} did; the drain took {backlog_took:.1} s)",
        overtaking.len()
    );
    let worst = latencies.iter().cloned().fold(0.0, f64::max);
    assert!(
        worst <= 2.0,
        "a live reading took {worst:.2} s from sampling to the topic"
    );
    // And nothing was lost on the way.
    let mut seqs: Vec<u64> = seen.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, journaled);
    assert_eq!(seqs.last(), Some(&journaled));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bandwidth_budget_holds_on_the_wire() {
    const BUDGET: u64 = 20_000;
    const MEASURE: Duration = Duration::from_secs(30);
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    journal_with_backlog(&dir.path().join("journal.redb"), 300_000);
    let (listen, advertised) = (free_port(), free_port());
    let proxy = Proxy::start(advertised, listen).await;
    let kafka = Kafka::start_advertising(
        listen,
        advertised,
        &dir.path().join("kafka"),
        Storage::Memory,
    );
    kafka.create_topics(&["telemetry"]).await;

    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_over_backlog(
            dir.path(),
            &kafka.bootstrap(),
            &format!("max_bytes_per_sec = {BUDGET}"),
        ),
    );
    wait_for_status(&agent, "forwarded", 1, Duration::from_secs(60));
    // Let the budget learn the compression ratio.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (start, before) = (Instant::now(), proxy.bytes_sent());
    tokio::time::sleep(MEASURE).await;
    let sent = proxy.bytes_sent() - before;
    let secs = start.elapsed().as_secs_f64();
    let forwarded = binaries::status_number(&agent.log(), "forwarded").unwrap();
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{}", agent.log());

    let allowed = BUDGET as f64 * secs;
    eprintln!(
        "{sent} bytes on the wire in {secs:.1} s = {:.3} of the budget; {forwarded} readings forwarded",
        sent as f64 / allowed
    );
    assert!(
        forwarded < 300_000,
        "the backlog must outlast the test for the budget to bind"
    );
    assert!(
        (sent as f64 - allowed).abs() <= 0.1 * allowed,
        "{sent} bytes on the wire in {secs:.1} s; the budget allows {allowed:.0} (±10%)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reading_arrives_when_the_broker_is_killed_while_sampling_fast() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker_dir = dir.path().join("kafka");
    let mut kafka = Kafka::start_on(port, &broker_dir, Storage::Sqlite);
    kafka.create_topics(&["telemetry"]).await;
    // 1,600 readings/s, hundreds of times a field rate.
    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_config(dir.path(), &kafka.bootstrap(), Format::Influx, 2, "5ms"),
    );
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    kafka.service.kill();
    let at_kill = binaries::status_number(&agent.log(), "forwarded").unwrap();
    index_tansu_headers(&broker_dir);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(agent.is_running());
    let link = binaries::last_status(&agent.log(), "link").unwrap();
    assert_eq!(link["link"], "down", "{link:?}");
    kafka = Kafka::start_on(port, &broker_dir, Storage::Sqlite);
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(start.elapsed())).await;
    let forwarded = binaries::status_number(&agent.log(), "forwarded").unwrap();
    assert!(forwarded > at_kill, "forwarding resumed after the restart");
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    eprintln!("{journaled} readings in two minutes, {at_kill} forwarded before the kill");

    // Tansu's sqlite storage is slow to fetch from (pitfalls.md), so the
    // reader waits longer than usual.
    let started = Instant::now();
    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(120),
        Some(journaled as usize),
    );
    eprintln!(
        "kafka-python read {} records in {:?}",
        records.len(),
        started.elapsed()
    );
    let readings: BTreeMap<u64, Reading> = readings_by_seq(&records, Format::Influx);
    assert_all_sequence_numbers(&readings, journaled);
}
