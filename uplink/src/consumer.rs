//! # The Kafka consumer
//!
//! A consumer group member that never commits past what the database has
//! accepted: automatic offset *storing* is off, so librdkafka's periodic
//! auto-commit only ever commits offsets the pipeline stored explicitly after
//! a successful write (or a dead-letter delivery). Offsets stored are also
//! committed on rebalance and on close.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::TopicPartitionList;
use telemetry::throttle::Throttle;

use crate::config::{StartFrom, UplinkConfig};

/// librdkafka's prefetch queue per partition, in KiB: bounded memory.
const QUEUED_KBYTES: usize = 8 * 1024;

/// Logs librdkafka's events, rate-limited per kind, and rebalances.
#[derive(Default)]
pub struct KafkaLog {
    throttles: Mutex<HashMap<String, Throttle>>,
}

impl KafkaLog {
    fn allow(&self, kind: &str) -> Option<u64> {
        self.throttles
            .lock()
            .expect("throttle lock")
            .entry(kind.to_owned())
            .or_insert_with(|| Throttle::new(Duration::from_secs(60)))
            .allow(Instant::now())
    }
}

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        // Connection failures also arrive through `error`, said once.
        if !serious || matches!(fac, "FAIL" | "ERROR") {
            tracing::debug!(target: "librdkafka", facility = fac, "{message}");
        } else if let Some(held_back) = self.allow(fac) {
            tracing::warn!(target: "librdkafka", facility = fac, similar_not_logged = held_back, "{message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(held_back) = self.allow("error") {
            tracing::warn!(error = %error, reason, similar_not_logged = held_back, "Kafka client error; retrying");
        }
    }
}

impl ConsumerContext for KafkaLog {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe(offsets), "offsets committed"),
            // Nothing new was stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                if let Some(held_back) = self.allow("commit") {
                    tracing::warn!(error = %e, similar_not_logged = held_back, "offset commit failed; it is retried with the next one");
                }
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub type Consumer = StreamConsumer<KafkaLog>;

/// The librdkafka settings for the uplink's consumer.
pub fn client_config(config: &UplinkConfig) -> ClientConfig {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.join(","))
        .set("group.id", &k.group)
        .set("client.id", "buoy-uplink")
        // Offsets are stored only after the database accepted the data; the
        // auto-commit then commits only what was stored.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set(
            "auto.offset.reset",
            match k.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        )
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", QUEUED_KBYTES.to_string())
        .set("topic.metadata.refresh.interval.ms", "10000");
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// Creates the consumer and subscribes it to the configured topics.
pub fn create(config: &UplinkConfig) -> KafkaResult<Consumer> {
    let consumer: Consumer = client_config(config).create_with_context(KafkaLog::default())?;
    let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
