//! The forwarder through broker outages, with librdkafka's mock cluster in
//! this process: the leader down for 30 s, then every broker down while the
//! agent keeps sampling, then request errors, then added latency. Afterwards
//! every journaled reading is on the topic, the journal is empty, and
//! nothing was dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::config::AgentConfig;
use edge_agent::journal::{Journal, JournalOptions};
use edge_agent::stats::Stats;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "telemetry";
const LEADER: i32 = 1;

fn config(dir: &std::path::Path, bootstrap: &str) -> AgentConfig {
    let text = format!(
        r#"device_id = "mock-device"
[journal]
path = "{journal}"
commit_interval = "100ms"
[kafka]
brokers = ["{bootstrap}"]
topic = "{TOPIC}"
delivery_timeout = "3s"
[forward]
max_retry_delay = "2s"
shutdown_grace = "60s"
[status]
log_interval = "0s"
[[sensor]]
name = "env"
kind = "simulated_weather"
interval = "5ms"
[[sensor]]
name = "vis"
kind = "simulated_visibility"
interval = "5ms"
[[sensor]]
name = "fan"
kind = "simulated_fan"
interval = "5ms"
"#,
        journal = dir.join("journal.redb").display()
    );
    AgentConfig::load("test", Some(&text), &[]).unwrap().config
}

/// Waits until the agent has journaled `more` readings beyond what it had.
async fn keep_sampling(stats: &Stats, more: u64) {
    let target = stats.snapshot().journaled + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.snapshot().journaled < target {
        assert!(Instant::now() < deadline, "the agent stopped sampling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every `buoy-seq` on the topic, read back with an ordinary consumer.
fn sequence_numbers_on_topic(bootstrap: &str, expected: usize) -> BTreeSet<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut seqs = BTreeSet::new();
    let mut idle_since = Instant::now();
    while seqs.len() < expected && idle_since.elapsed() < Duration::from_secs(20) {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let headers = m.headers().expect("buoy headers");
                let seq = headers
                    .iter()
                    .find(|h| h.key == "buoy-seq")
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
                    .expect("a buoy-seq header");
                seqs.insert(seq);
            }
            Some(Err(e)) => panic!("consumer: {e}"),
            None => {}
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_through_broker_outages_request_errors_and_latency() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "edge_agent=info".into()),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, 1, 3).unwrap();
    mock.partition_leader(TOPIC, 0, Some(LEADER)).unwrap();
    let bootstrap = mock.bootstrap_servers();

    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(edge_agent::agent::run_with_status(
        config(dir.path(), &bootstrap),
        shutdown.clone(),
        stats.clone(),
    ));
    keep_sampling(&stats, 1_000).await;
    assert!(
        stats.snapshot().forwarded > 0,
        "forwarding before any fault"
    );

    // 1. The partition leader is down for 30 s.
    mock.broker_down(LEADER).unwrap();
    let forwarded = stats.snapshot().forwarded;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = stats.snapshot();
    assert!(
        during.forwarded <= forwarded + 20_000,
        "nothing beyond what was in flight can be acknowledged"
    );
    mock.broker_up(LEADER).unwrap();
    keep_sampling(&stats, 500).await;

    // 2. Every broker is down while sampling goes on.
    for broker in 1..=3 {
        mock.broker_down(broker).unwrap();
    }
    keep_sampling(&stats, 3_000).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for broker in 1..=3 {
        mock.broker_up(broker).unwrap();
    }
    keep_sampling(&stats, 500).await;

    // 3. Produce requests fail: retriable errors, and one librdkafka gives
    //    up on at once.
    use RDKafkaRespErr::*;
    let errors = [
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_POLICY_VIOLATION,
    ];
    let many: Vec<RDKafkaRespErr> = errors.iter().cycle().take(60).copied().collect();
    mock.request_errors(RDKafkaApiKey::Produce, &many);
    keep_sampling(&stats, 3_000).await;
    mock.clear_request_errors(RDKafkaApiKey::Produce);

    // 4. Every round trip to the leader takes 500 ms longer.
    mock.broker_round_trip_time(LEADER, Duration::from_millis(500))
        .unwrap();
    keep_sampling(&stats, 3_000).await;
    mock.broker_round_trip_time(LEADER, Duration::ZERO).unwrap();

    // Stop: the agent drains what it can within its grace period.
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    let s = stats.snapshot();
    assert!(s.delivery_errors > 0, "the faults were felt: {s:?}");
    assert_eq!(
        s.sampled, s.journaled,
        "nothing dropped before the journal: {s:?}"
    );
    assert_eq!(s.dropped_queue_full + s.rejected + s.unreadable, 0, "{s:?}");

    let (journal, _) = Journal::open(
        &dir.path().join("journal.redb"),
        JournalOptions::for_inspection(),
        "check",
    )
    .unwrap();
    let stats = journal.stats().unwrap();
    assert_eq!(stats.records, 0, "the journal is empty: {stats:?}");
    assert_eq!(
        stats.counters,
        Default::default(),
        "nothing dropped: {stats:?}"
    );
    let journaled = stats.next_seq - 1;
    assert_eq!(journaled, s.journaled);

    let seqs = sequence_numbers_on_topic(&bootstrap, journaled as usize);
    let missing: Vec<u64> = (1..=journaled)
        .filter(|s| !seqs.contains(s))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing from the topic: {missing:?}…");
    assert_eq!(
        seqs.len() as u64,
        journaled,
        "nothing beyond what was journaled"
    );
    eprintln!("{journaled} readings through the outages; {s:?}");
}
