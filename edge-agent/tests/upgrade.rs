//! A journal written by an earlier release opens and drains after an
//! upgrade: the real agent, started on a copy of
//! `tests/fixtures/journal-a84134c` (see its README), forwards every reading
//! that was waiting to the topic its stored remote config names, and numbers
//! new readings after the old ones.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::journal::{Journal, JournalOptions};
use edge_agent::stats::Stats;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// The topic the fixture's `remote-config.json` sets.
const TOPIC: &str = "remote";

fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-a84134c");
    for name in [
        "journal.redb",
        "journal.redb.seq-limit",
        "remote-config.json",
    ] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

fn config(dir: &Path, bootstrap: &str) -> edge_agent::config::AgentConfig {
    let text = format!(
        r#"device_id = "pi-fixture"
[journal]
path = "{journal}"
[kafka]
brokers = ["{bootstrap}"]
topic = "local-topic-overridden-by-the-stored-remote-config"
[mqtt]
enabled = true
url = "mqtt://127.0.0.1:1"
[status]
log_interval = "0s"
[[sensor]]
name = "env"
kind = "simulated_weather"
interval = "100ms"
"#,
        journal = dir.join("journal.redb").display()
    );
    edge_agent::config::AgentConfig::load("test", Some(&text), &[])
        .unwrap()
        .config
}

/// Every record on the topic: `buoy-seq` to the line.
fn on_topic(bootstrap: &str, at_least: u64) -> BTreeMap<u64, String> {
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
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as u64) < at_least && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let seq = m
                .headers()
                .unwrap()
                .iter()
                .find(|h| h.key == "buoy-seq")
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
                .expect("a buoy-seq header");
            let line = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            out.insert(seq, line);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_from_release_a84134c_opens_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();

    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(edge_agent::agent::run_with_status(
        config(dir.path(), &bootstrap),
        shutdown.clone(),
        stats.clone(),
    ));
    // The 700 old readings, and some new ones after them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.snapshot().forwarded < 720 {
        assert!(
            Instant::now() < deadline,
            "not drained: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    let s = stats.snapshot();

    let topic = on_topic(&bootstrap, s.forwarded);
    // Every reading that waited in the old journal, with its number and its
    // content intact.
    for seq in 301..=1000u64 {
        let line = topic
            .get(&seq)
            .unwrap_or_else(|| panic!("seq {seq} never reached the topic"));
        let i = seq - 1;
        assert!(
            line.starts_with("weather,device_id=pi-fixture,sensor=bme280 ")
                && line.contains(&format!("samples={i}i"))
                && line.ends_with(&format!(
                    " {}",
                    1_764_000_000_000_000_000u64 + i * 1_000_000_000
                )),
            "seq {seq}: {line}"
        );
    }
    // Nothing acknowledged before the upgrade came back.
    assert!(
        topic.range(..=300).next().is_none(),
        "acknowledged readings resent"
    );
    // New readings are numbered after the old ones, without a gap.
    let new: Vec<u64> = topic.range(1001..).map(|(s, _)| *s).collect();
    assert!(new.len() >= 20, "{} new readings", new.len());
    assert_eq!(new[0], 1001);
    assert!(new.windows(2).all(|w| w[1] == w[0] + 1), "a gap in {new:?}");

    // The journal is empty afterwards (all acknowledged), and its numbering
    // goes on.
    let (journal, _) = Journal::open(
        &dir.path().join("journal.redb"),
        JournalOptions::for_inspection(),
        "check",
    )
    .unwrap();
    let stats = journal.stats().unwrap();
    assert_eq!(stats.records, 0, "{stats:?}");
    assert_eq!(stats.next_seq, s.journaled + 1001, "{stats:?}");
    assert_eq!(stats.counters, Default::default());
}
