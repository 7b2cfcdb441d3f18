//! # Kafka clients: every librdkafka setting the uplink uses, in one place
//!
//! Three clients, built from the same `[kafka]` section:
//! - the consumer ([`consumer_config`]), a group member that stores offsets
//!   only after the database accepted the data;
//! - the watermark client ([`watermark_client`]), which only asks for high
//!   watermarks, for the lag metric;
//! - the dead-letter producer ([`dead_letter_config`]).
//!
//! `kafka.properties` go to the consumer; the other two take only the
//! security settings among them (their other keys are consumer-only).
//!
//! ## Memory and pace
//! What librdkafka holds is bounded explicitly ([`PREFETCH`]), and none of
//! it grows with the number of partitions assigned: one fetch response is at
//! most 512 KiB of (compressed) records however many partitions it covers,
//! and the consumer queue of prefetched records (one queue for all
//! partitions) takes another fetch only while it holds less than 3 MiB and
//! 30,000 records. Each record queued costs librdkafka about 140 bytes of
//! bookkeeping besides its payload, so the record count matters as much as
//! the bytes. Measured on 1 million agent readings (docs/performance.md):
//! peak RSS 34-39 MiB on 1 or 12 partitions, against 104-128 MiB with
//! 16 MiB fetches and an 8 MiB queue.
//!
//! Two settings keep the pace up with such a small queue:
//! - `fetch.queue.backoff.ms`: when the queue is full librdkafka waits this
//!   long before it looks again; its default, 1 s, idles the fetcher for a
//!   second at every full queue.
//! - `fetch.wait.max.ms`: Tansu 0.6 holds every fetch for about this long
//!   even when records are waiting (real Kafka answers at once), so the
//!   default 500 ms caps one consumer at about 120,000 records/s there.
//!   50 ms costs an idle uplink 20 empty fetches a second per broker.

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use telemetry::throttle::Throttles;

use crate::config::{StartFrom, UplinkConfig};

/// How much the consumer fetches ahead, and how fast (see "Memory and
/// pace" above). `kafka.properties` may override any of them.
pub const PREFETCH: [(&str, &str); 7] = [
    // One fetch response, at most. A record batch larger than this still
    // comes, alone (Kafka's and Tansu's rule), so nothing gets stuck.
    ("fetch.max.bytes", "524288"),
    ("max.partition.fetch.bytes", "524288"),
    // librdkafka refuses a fetch.max.bytes below message.max.bytes; the
    // consumer sends no records, so this limits nothing else.
    ("message.max.bytes", "524288"),
    // The queue of prefetched records, for all partitions together: in KiB,
    // and in records (the default, 100,000, would hold 14 MiB of
    // bookkeeping alone).
    ("queued.max.messages.kbytes", "3072"),
    ("queued.min.messages", "30000"),
    ("fetch.queue.backoff.ms", "10"),
    ("fetch.wait.max.ms", "50"),
];

/// Logs librdkafka's lines and errors the way the agent does
/// ([`telemetry::kafka_log`]), rate-limited per kind.
#[derive(Default)]
pub struct KafkaLog {
    pub(crate) throttles: Throttles,
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

/// The librdkafka settings for the uplink's consumer.
pub fn consumer_config(config: &UplinkConfig) -> ClientConfig {
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
        // A member joining or leaving moves only the partitions that change
        // hands; the others keep their batches in flight.
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A member that died (SIGKILL, power cut) holds its partitions until
        // the group gives up on it; a restarted uplink waits that long before
        // it consumes again. The uplink polls all the time, even while paused,
        // so the limits can be short. kafka.properties may override them.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        .set("max.poll.interval.ms", "30000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    for (key, value) in PREFETCH {
        c.set(key, value);
    }
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
    with_security(&mut c, config);
    c.create()
}

/// The librdkafka settings for the dead-letter producer: every letter
/// acknowledged by all in-sync replicas, never duplicated by a retry.
pub fn dead_letter_config(config: &UplinkConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.kafka.brokers.join(","))
        .set("client.id", "buoy-uplink-dead-letters")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000");
    with_security(&mut c, config);
    c
}

/// Adds the `kafka.properties` that every client needs (security, SASL,
/// TLS); consumer-only properties would be refused by the others.
fn with_security(c: &mut ClientConfig, config: &UplinkConfig) {
    let security = config.kafka.properties.iter().filter(|(key, _)| {
        key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
    });
    for (key, value) in security {
        c.set(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_security_properties_reach_the_other_clients() {
        let mut config: UplinkConfig = toml::from_str("").unwrap();
        config
            .kafka
            .properties
            .insert("security.protocol".into(), "ssl".into());
        config
            .kafka
            .properties
            .insert("fetch.wait.max.ms".into(), "50".into());
        let consumer = consumer_config(&config);
        assert_eq!(consumer.get("security.protocol"), Some("ssl"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("50"));
        let producer = dead_letter_config(&config);
        assert_eq!(producer.get("security.protocol"), Some("ssl"));
        assert_eq!(producer.get("fetch.wait.max.ms"), None);
    }

    #[test]
    fn the_consumer_is_bounded_and_cooperative() {
        let c = consumer_config(&toml::from_str("").unwrap());
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        for key in [
            "queued.max.messages.kbytes",
            "queued.min.messages",
            "fetch.max.bytes",
            "max.partition.fetch.bytes",
            "fetch.wait.max.ms",
        ] {
            assert!(c.get(key).is_some(), "{key} is set explicitly");
        }
        // librdkafka refuses the whole configuration otherwise.
        let number = |key| c.get(key).unwrap().parse::<u64>().unwrap();
        assert!(number("fetch.max.bytes") >= number("message.max.bytes"));
        c.create::<BaseConsumer>()
            .expect("librdkafka takes the settings");
    }
}
