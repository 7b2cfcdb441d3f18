//! The forwarder against the real Tansu broker: a broker killed while the
//! agent samples fast, live readings overtaking a large backlog, and the
//! bandwidth budget measured on the wire by a proxy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buoy_tests::binaries;
use buoy_tests::kafka::{Health, Kafka, Storage, read_topic};
use buoy_tests::process::{free_port, wait_for};
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
    let (mut journal, _) = Journal::open(path, JournalOptions::for_inspection(), &boot).unwrap();
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
    let forwarded = binaries::state_number(&binaries::state_now(&agent), "forwarded");
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
    // Readings journaled in each stage (about 25 s each at full speed).
    const PER_STAGE: u64 = 40_000;
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("kafka");
    let mut kafka = Kafka::start(&broker_dir, Storage::Sqlite);
    kafka.create_topics(&["telemetry"]).await;
    // 1,600 readings/s, hundreds of times a field rate. A Tansu stall longer
    // than the delivery timeout makes librdkafka bump its session's epoch,
    // which kills Tansu's sqlite storage (pitfalls.md); on a loaded machine
    // its commits stall for seconds, so the timeout is nearer production's
    // (60 s) than the other tests' 5 s.
    let config = agent_config(dir.path(), &kafka.bootstrap(), Format::Influx, 2, "5ms")
        .replace("delivery_timeout = \"5s\"", "delivery_timeout = \"30s\"");
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    let number = binaries::state_number;
    let journaled = |s: &serde_json::Value| number(s, "journaled");
    let forwarded = |s: &serde_json::Value| number(s, "forwarded");
    let before = agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "sampling and forwarding with the broker up",
        |s| journaled(s) >= PER_STAGE && forwarded(s) > 0,
        journaled,
    );

    kafka.service.kill();
    let at_kill = forwarded(&before);
    let outage_from = journaled(&before);
    let during = agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "sampling on with the broker dead",
        |s| journaled(s) >= outage_from + PER_STAGE && s["link"]["state"] == "down",
        journaled,
    );
    assert!(agent.is_running());
    eprintln!("broker dead: {during}");

    kafka.restart();
    let restarted = Instant::now();
    let outage_to = journaled(&during);
    let after = agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "draining the outage's backlog after the restart",
        // Every reading journaled before the restart has left the journal:
        // the oldest one waiting is younger than the restart.
        |s| {
            let oldest = s["journal"]["oldest_unsent_age_s"].as_f64().unwrap_or(0.0);
            oldest < restarted.elapsed().as_secs_f64() && journaled(s) >= outage_to + PER_STAGE / 4
        },
        forwarded,
    );
    assert!(
        forwarded(&after) > at_kill,
        "forwarding resumed after the restart"
    );
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    eprintln!(
        "{journaled} readings, {at_kill} forwarded before the kill; the harness restarted a wedged Tansu {} times",
        kafka.restarts_by_harness()
    );

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

/// Issue 17: after a restart the broker answered the agent's old producer
/// session with errors and acknowledged nothing more, and the agent stayed
/// stuck. Here a restarted Tansu (memory storage) does not know the old
/// session and answers its every request with `UnknownProducerId`, which
/// librdkafka retries until the readings time out; the agent must start a
/// fresh session by itself (`forward.renew_after`) and drain the journal.
/// Then the broker is frozen for longer than the delivery timeout:
/// librdkafka bumps the session's epoch and Tansu refuses it
/// (`ProducerFenced`); the journal must drain again.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_broker_refuses_after_a_restart_is_renewed_and_the_journal_drains() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry"]).await;
    let head = agent_config_head(
        dir.path(),
        &kafka.bootstrap(),
        Format::Influx,
        "renew_after = \"10s\"",
        "",
    );
    let mut config = head;
    for (i, kind) in ["simulated_weather", "simulated_fan"].iter().enumerate() {
        config.push_str(&format!(
            "[[sensor]]\nname = \"s{i}\"\nkind = \"{kind}\"\ninterval = \"5ms\"\nseed = {i}\n"
        ));
    }
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    let number = binaries::state_number;
    let forwarded = |s: &serde_json::Value| number(s, "forwarded");
    let renewals = |s: &serde_json::Value| number(s, "link/producer_renewals");
    agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "forwarding to the first broker",
        |s| forwarded(s) >= 2_000,
        forwarded,
    );

    // The restart: memory storage comes back empty, so the topic is made
    // again. Readings journaled from now on were never in the old broker.
    kafka.service.kill();
    let first_unseen = binaries::agent_state(dir.path()).map_or(0, |s| number(&s, "journaled")) + 1;
    kafka.restart();
    kafka.create_topics(&["telemetry"]).await;
    let back = agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "forwarding again after the restart",
        |s| forwarded(s) > first_unseen + 2_000,
        |s| forwarded(s) + renewals(s),
    );
    assert!(
        renewals(&back) >= 1,
        "the old session was unknown to the restarted broker, so only a fresh one gets through: {back}"
    );

    // Frozen longer than the delivery timeout (5 s): queued readings time
    // out, librdkafka bumps the epoch, and the broker refuses the session.
    kafka.service.pause();
    std::thread::sleep(Duration::from_secs(9));
    kafka.service.resume();
    let forwarded_back = forwarded(&back);
    let healed = agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "forwarding again after the broker refused the session",
        |s| forwarded(s) >= forwarded_back + 4_000,
        // Sampling goes on regardless: progress is what reaches Kafka, or a
        // renewal.
        |s| forwarded(s) + renewals(s),
    );
    eprintln!("after the restart: {back}\nafter the freeze: {healed}");
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    assert_eq!(kafka.restarts_by_harness(), 0, "Tansu stayed up");

    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(30),
        Some((journaled + 1 - first_unseen) as usize),
    );
    let readings = readings_by_seq(&records, Format::Influx);
    let missing: Vec<u64> = (first_unseen..=journaled)
        .filter(|s| !readings.contains_key(s))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "readings journaled after the restart missing from the topic: {missing:?}..."
    );
    assert!(readings.keys().all(|&s| s <= journaled));
}

/// Issue 17, which side failed: a Tansu stall longer than the delivery
/// timeout makes librdkafka bump its idempotent session's epoch, and Tansu's
/// sqlite storage panics on the next produce ("more or less than one row",
/// lite.rs:503); every later request fails until it restarts. The harness
/// must say so instead of blaming the agent, restart the broker once, and
/// the agent must then drain its journal into it with nothing lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_wedged_broker_is_told_apart_from_the_agent_and_restarted_once() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mut kafka = Kafka::start(&dir.path().join("kafka"), Storage::Sqlite);
    kafka.create_topics(&["telemetry"]).await;
    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_config(dir.path(), &kafka.bootstrap(), Format::Influx, 1, "10ms"),
    );
    let forwarded = |s: &serde_json::Value| binaries::state_number(s, "forwarded");
    agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "forwarding before the stall",
        |s| forwarded(s) >= 2_000,
        forwarded,
    );
    assert_eq!(kafka.health(), Health::Answering);

    // Longer than the agent's delivery timeout (5 s).
    kafka.service.pause();
    std::thread::sleep(Duration::from_secs(9));
    kafka.service.resume();
    let log = kafka.service.log_path().to_owned();
    let why = wait_for(
        "Tansu to wedge after the epoch bump",
        Duration::from_secs(60),
        || match kafka.health() {
            Health::Wedged(why) => Some(why),
            Health::Answering => None,
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    eprintln!("Tansu wedged: {why}");
    // The agent's stalled session would panic a restarted sqlite Tansu again
    // (pitfalls.md): the broker comes back only once the agent has noticed it
    // gone and started a fresh session.
    let renewed = binaries::agent_state(dir.path())
        .map_or(0, |s| binaries::state_number(&s, "link/producer_renewals"));
    kafka.service.kill();
    wait_for(
        "the agent to renew its session while the broker is dead",
        Duration::from_secs(120),
        || {
            binaries::agent_state(dir.path())
                .filter(|s| binaries::state_number(s, "link/producer_renewals") > renewed)
        },
        || "no renewal".into(),
    );
    assert!(kafka.heal_once("after the stall"), "{why}");
    assert_eq!(kafka.health(), Health::Answering);
    let at_heal = binaries::agent_state(dir.path()).map_or(0, |s| forwarded(&s));
    agent_stage(
        &mut kafka,
        &agent,
        dir.path(),
        "forwarding to the restarted broker",
        |s| forwarded(s) >= at_heal + 2_000,
        forwarded,
    );
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    assert_eq!(kafka.restarts_by_harness(), 1);
    // A fresh broker over the same data, so the reader is not refused.
    kafka.restart();
    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(60),
        Some(journaled as usize),
    );
    assert_all_sequence_numbers(&readings_by_seq(&records, Format::Influx), journaled);
}
