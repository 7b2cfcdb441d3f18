//! The Kafka producer: librdkafka configured for no loss, and the callbacks
//! that feed delivery reports and connection errors back to the forwarder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use telemetry::throttle::Throttles;
use tokio::sync::mpsc;

use super::config::ForwarderConfig;
use super::security::SecretFileError;
use crate::stats::{Link, Stats};

/// librdkafka's own queue, in KiB. The journal is the buffer; this only
/// smooths batching, so it is small and explicit.
const QUEUE_KBYTES: usize = 16 * 1024;

/// The outcome of one record.
#[derive(Debug)]
pub struct Delivery {
    pub seq: u64,
    pub result: Result<(), KafkaError>,
}

/// What librdkafka tells the forwarder.
#[derive(Debug)]
pub enum Event {
    Delivery(Delivery),
    /// A broker connection failed or was lost.
    BrokerLost,
}

/// Receives librdkafka's callbacks.
pub struct ForwarderContext {
    deliveries: mpsc::UnboundedSender<Event>,
    stats: Arc<Stats>,
    /// One throttle per librdkafka log facility, so a broker that refuses
    /// connections is logged once a minute, not on every retry.
    throttles: Throttles,
    /// Bytes this producer has put on the wire, from librdkafka's statistics
    /// (only collected when a bandwidth budget is set).
    wire_bytes: AtomicU64,
}

impl ForwarderContext {
    /// Bytes sent to all brokers since this producer was created, as of
    /// librdkafka's last statistics.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Relaxed)
    }
}

impl ClientContext for ForwarderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        telemetry::kafka_log::log(&self.throttles, level, fac, message);
    }

    fn stats(&self, statistics: Statistics) {
        let sent: u64 = statistics.brokers.values().map(|b| b.txbytes).sum();
        self.wire_bytes.store(sent, Relaxed);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            let _ = self.deliveries.send(Event::BrokerLost);
        }
        let previous = self.stats.link_error(format!("{error}: {reason}"));
        if let Some(held_back) = self.throttles.allow("error") {
            if previous != Link::Down {
                tracing::warn!(
                    error = %error,
                    reason,
                    "cannot reach Kafka; readings stay in the journal and are sent when it returns"
                );
            } else {
                tracing::warn!(error = %error, reason, similar_not_logged = held_back, "Kafka still unreachable");
            }
        }
    }
}

impl ProducerContext for ForwarderContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<u64>) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        // The forwarder may already have stopped; then the record simply
        // stays in the journal.
        let _ = self
            .deliveries
            .send(Event::Delivery(Delivery { seq: *seq, result }));
    }
}

pub type Producer = ThreadedProducer<ForwarderContext>;

/// How often librdkafka reports the bytes it sent, when a budget is set.
pub const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// The librdkafka settings for the agent's producer, with the security
/// secrets read from their files. Never log the result: it holds them.
pub fn client_config(config: &ForwarderConfig) -> Result<ClientConfig, SecretFileError> {
    let mut c = ClientConfig::new();
    let kafka = &config.kafka;
    c.set("bootstrap.servers", kafka.brokers.join(","))
        .set("client.id", format!("buoy-edge-agent-{}", config.device_id))
        // No loss, no duplicates from retries, order kept per partition.
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", kafka.compression.as_librdkafka())
        .set(
            "message.timeout.ms",
            kafka.delivery_timeout.as_millis().to_string(),
        )
        // Bounded memory: the window never exceeds these.
        .set(
            "queue.buffering.max.messages",
            (config.forward.max_in_flight + 1000).to_string(),
        )
        .set("queue.buffering.max.kbytes", QUEUE_KBYTES.to_string())
        .set("linger.ms", "5")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "10000")
        // Notice a topic created after start-up within seconds.
        .set("topic.metadata.refresh.interval.ms", "10000");
    if config.forward.max_bytes_per_sec.bytes() > 0 {
        c.set(
            "statistics.interval.ms",
            STATS_INTERVAL.as_millis().to_string(),
        );
    }
    for (key, value) in &kafka.properties {
        c.set(key, value);
    }
    kafka.security.apply(&mut c)?;
    Ok(c)
}

/// Why a producer cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    #[error("librdkafka refused the producer settings: {0}")]
    Kafka(#[from] KafkaError),
}

/// Creates the producer. Fails on settings librdkafka refuses (a bad property
/// in `kafka.properties`) or a secret file that cannot be read, which
/// `check-config` reports too.
pub fn create(
    config: &ForwarderConfig,
    deliveries: mpsc::UnboundedSender<Event>,
    stats: Arc<Stats>,
) -> Result<Producer, CreateError> {
    let context = ForwarderContext {
        deliveries,
        stats,
        throttles: Throttles::default(),
        wire_bytes: AtomicU64::new(0),
    };
    Ok(client_config(config)?.create_with_context(context)?)
}
