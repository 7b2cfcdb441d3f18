//! The uplink and the broker: offsets the broker never delivers are counted,
//! and a member joining the group moves only the partitions it takes.

use std::time::{Duration, Instant};

use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::load::{self, Load};
use buoy_tests::process::Service;
use buoy_tests::victoria::Victoria;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::common::*;
use crate::uplink::{assert_exactly, metric, metrics_url, start, start_member};

/// Produces `batches` record batches of `per_batch` records each (records
/// numbered from 0, as [`load::line`] writes them) to partition 0, the way
/// the agent's producer packs its backlog into multi-record batches.
fn produce_batches(bootstrap: &str, topic: &str, batches: u64, per_batch: u64, t0_ms: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2000")
        .set("batch.num.messages", per_batch.to_string())
        .create()
        .expect("producer");
    for b in 0..batches {
        for i in b * per_batch..(b + 1) * per_batch {
            let line = load::line(i, 4, t0_ms);
            producer
                .send(BaseRecord::<(), str>::to(topic).partition(0).payload(&line))
                .expect("queued");
        }
        producer.flush(Duration::from_secs(30)).expect("delivered");
    }
}

/// Commits `offset` for `group` on partition 0 of `topic`, as an uplink
/// stopped there would have.
fn commit(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("offset");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(offset),
        "the commit took"
    );
}

/// Waits until the uplink's metric `name` is `value`.
async fn wait_for_metric(uplink: &Service, name: &str, value: f64, timeout: Duration) {
    let url = metrics_url(uplink);
    let deadline = Instant::now() + timeout;
    loop {
        let now = metric(&url, name).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {now}, not {value}, after {timeout:?}:\n{}",
            uplink.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Tansu 0.6 answers a fetch from an offset inside a record batch with the
/// batch after it. An uplink resuming from a commit inside a batch of 100
/// never gets offsets 15..99: it says so, and counts exactly those 85.
#[tokio::test(flavor = "multi_thread")]
async fn offsets_the_broker_skips_when_resuming_inside_a_batch_are_counted() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["gaps", "gaps.dlq"]).await;
    let t0 = load::recent_t0_ms();
    produce_batches(&kafka.bootstrap(), "gaps", 2, 100, t0);
    commit(&kafka.bootstrap(), "e2e", "gaps", 15);
    let vm = Victoria::start(dir.path());
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    let uplink = start(dir.path(), &kafka, "gaps", &sink, "");
    // Only the second batch arrives; the records skipped are counted.
    assert_exactly(&vm, 100, Duration::from_secs(60), || uplink.log()).await;
    let m = metrics_url(&uplink);
    assert_eq!(metric(&m, "uplink_offsets_skipped_total").await, 85.0);
    assert_eq!(metric(&m, "uplink_records_total").await, 100.0);
    stop_uplink(uplink, 0);
}

/// With cooperative rebalancing, a second uplink joining takes three of
/// the first one's six partitions, and only those three are revoked from it:
/// it keeps writing the others, without dropping and re-reading their
/// batches. Against librdkafka's mock cluster (real loopback ports).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_uplink_joining_moves_only_the_partitions_it_takes() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    mock.create_topic("coop", 6, 1).expect("topic");
    mock.create_topic("coop.dlq", 1, 1).expect("topic");
    let bootstrap = mock.bootstrap_servers();
    let vm = Victoria::start(dir.path());
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    let load = Load::start(&bootstrap, "coop", 1_500, 24, load::recent_t0_ms());
    let a = start_member(dir.path(), &bootstrap, "coop", &sink, "a", "");
    wait_for_metric(
        &a,
        "uplink_partitions_assigned",
        6.0,
        Duration::from_secs(60),
    )
    .await;
    let a_url = metrics_url(&a);
    let b = start_member(dir.path(), &bootstrap, "coop", &sink, "b", "");
    wait_for_metric(
        &b,
        "uplink_partitions_assigned",
        3.0,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(metric(&a_url, "uplink_partitions_assigned").await, 3.0);
    assert_eq!(
        metric(&a_url, "uplink_partitions_revoked_total").await,
        3.0,
        "only the partitions that moved were revoked:\n{}",
        a.log()
    );
    let written = metric(&a_url, "uplink_lines_written_total").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        metric(&a_url, "uplink_lines_written_total").await > written,
        "the first uplink goes on writing the partitions it kept"
    );
    let produced = load.finish() as usize;
    assert_exactly(&vm, produced, Duration::from_secs(120), || {
        format!("uplink A:\n{}\nuplink B:\n{}", a.log(), b.log())
    })
    .await;
    stop_uplink(a, 0);
    stop_uplink(b, 0);
}
