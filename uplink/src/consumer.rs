//! # The Kafka consumer
//!
//! A consumer group member that never commits past what the database has
//! accepted: automatic offset *storing* is off, so librdkafka's periodic
//! auto-commit only ever commits offsets the pipeline stored explicitly after
//! a successful write (or a dead-letter delivery). Offsets stored are also
//! committed when partitions are revoked and on close.
//!
//! The consumer's context ([`Events`]) tells the pipeline which partitions
//! were revoked and pauses partitions assigned while consumption is paused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::TopicPartitionList;
use telemetry::throttle::Throttles;

use crate::config::{StartFrom, UplinkConfig};
use crate::offsets::Partition;

/// librdkafka's prefetch queue per partition, in KiB: bounded memory.
const QUEUED_KBYTES: usize = 8 * 1024;

/// Logs librdkafka's lines and errors the way the agent does
/// ([`telemetry::kafka_log`]), rate-limited per kind.
#[derive(Default)]
pub struct KafkaLog {
    throttles: Throttles,
}

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        telemetry::kafka_log::log(&self.throttles, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(held_back) = self.throttles.allow("error") {
            tracing::warn!(error = %error, reason, similar_not_logged = held_back, "Kafka client error; retrying");
        }
    }
}

/// The consumer's context: logging and rebalances.
#[derive(Default)]
pub struct Events {
    log: KafkaLog,
    revoked: Mutex<Vec<Partition>>,
    paused: AtomicBool,
}

impl Events {
    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<Partition> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked lock"))
    }

    /// While set, newly assigned partitions are paused too.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

impl ClientContext for Events {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for Events {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = %describe(tpl), "partitions revoked; committing what was written");
            self.revoked.lock().expect("revoked lock").extend(
                tpl.elements()
                    .iter()
                    .map(|e| (Arc::from(e.topic()), e.partition())),
            );
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "commit before revocation failed; the new owner re-reads from the last commit")
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned");
                if self.paused.load(Ordering::SeqCst)
                    && let Err(e) = consumer.pause(tpl)
                {
                    tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe(offsets), "offsets committed"),
            // Nothing new was stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                if let Some(held_back) = self.log.throttles.allow("commit") {
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

pub type Consumer = StreamConsumer<Events>;

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
        // A member that died (SIGKILL, power cut) holds its partitions until
        // the group gives up on it; a restarted uplink waits that long before
        // it consumes again. The uplink polls all the time, even while paused,
        // so the limits can be short. kafka.properties may override them.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        .set("max.poll.interval.ms", "30000")
        .set("queued.max.messages.kbytes", QUEUED_KBYTES.to_string())
        .set("topic.metadata.refresh.interval.ms", "10000");
    if !k.instance_id.is_empty() {
        c.set("group.instance.id", &k.instance_id);
    }
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// A client that only asks for watermarks (for the lag metric): the same
/// brokers and security settings, no group.
pub fn watermark_client(config: &UplinkConfig) -> KafkaResult<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.kafka.brokers.join(","))
        .set("client.id", "buoy-uplink-lag")
        .set("group.id", format!("{}-lag", config.kafka.group))
        .set("enable.auto.commit", "false");
    for (key, value) in security_properties(config) {
        c.set(key, value);
    }
    c.create()
}

/// The `kafka.properties` that every client of the uplink needs (security,
/// SASL, TLS); consumer-only properties would be refused by the others.
pub fn security_properties(config: &UplinkConfig) -> impl Iterator<Item = (&String, &String)> {
    config.kafka.properties.iter().filter(|(key, _)| {
        key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
    })
}

/// Creates the consumer and subscribes it to the configured topics.
pub fn create(config: &UplinkConfig) -> KafkaResult<Consumer> {
    let consumer: Consumer = client_config(config).create_with_context(Events::default())?;
    let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
