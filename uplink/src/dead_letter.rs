//! # The dead-letter topic
//!
//! Records that can never be written (not UTF-8, malformed, refused by the
//! database) are produced here instead of stalling their partition. Each
//! keeps its key, value and headers, and gains headers saying why and where
//! it came from:
//!
//! | header | value |
//! |---|---|
//! | `buoy-error` | what was wrong |
//! | `buoy-source-topic`, `buoy-source-partition`, `buoy-source-offset` | where it was |
//! | `buoy-sink` | the database that refused it, if one did |
//!
//! A record counts as dealt with only once Kafka has acknowledged its dead
//! letter; until then its offset is not committed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use telemetry::backoff::Backoff;
use telemetry::throttle::Throttle;
use tokio_util::sync::CancellationToken;

use crate::config::UplinkConfig;
use crate::kafka::{self, KafkaLog};
use crate::record::Origin;

pub const HEADER_ERROR: &str = "buoy-error";
pub const HEADER_SOURCE_TOPIC: &str = "buoy-source-topic";
pub const HEADER_SOURCE_PARTITION: &str = "buoy-source-partition";
pub const HEADER_SOURCE_OFFSET: &str = "buoy-source-offset";
pub const HEADER_SINK: &str = "buoy-sink";

/// Why a record was dead-lettered: the `reason` label of
/// `uplink_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The record could not be decoded.
    Malformed,
    /// A database refused the line.
    Rejected,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 2] =
        [DeadLetterReason::Malformed, DeadLetterReason::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Rejected => "rejected",
        }
    }
}

/// One record to dead-letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The original record's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    pub reason: DeadLetterReason,
    pub error: String,
    pub origin: Origin,
    /// The sink that refused it, if one did.
    pub sink: Option<String>,
}

impl DeadLetter {
    /// A record that could not be decoded: its key, payload and headers as
    /// they came, and why.
    pub fn of_record(m: &impl Message, error: String, origin: Origin) -> DeadLetter {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            reason: DeadLetterReason::Malformed,
            error,
            origin,
            sink: None,
        }
    }
}

/// The dead-letter producer; clones share it.
#[derive(Clone)]
pub struct DeadLetters {
    topic: Arc<str>,
    producer: Option<FutureProducer<KafkaLog>>,
    retry_max: Duration,
    log: Arc<Mutex<Throttle>>,
    sent_log: Arc<Mutex<Throttle>>,
}

impl DeadLetters {
    pub fn new(config: &UplinkConfig) -> Result<Self, KafkaError> {
        let topic: Arc<str> = Arc::from(config.kafka.dead_letter_topic.as_str());
        let producer = if topic.is_empty() {
            None
        } else {
            Some(kafka::dead_letter_config(config).create_with_context(KafkaLog::default())?)
        };
        Ok(DeadLetters {
            topic,
            producer,
            retry_max: config.retry.max_delay,
            log: Arc::new(Mutex::new(Throttle::new(Duration::from_secs(60)))),
            sent_log: Arc::new(Mutex::new(Throttle::new(Duration::from_secs(10)))),
        })
    }

    /// Logs a letter sent (at most once a minute).
    fn log_sent(&self, letter: &DeadLetter) {
        let allowed = self
            .sent_log
            .lock()
            .expect("log throttle")
            .allow(std::time::Instant::now());
        if let Some(held_back) = allowed {
            tracing::warn!(
                similar_not_logged = held_back,
                dead_letter_topic = %self.topic,
                source_topic = %letter.origin.topic,
                partition = letter.origin.partition,
                offset = letter.origin.offset,
                error = %letter.error,
                "record sent to the dead-letter topic"
            );
        }
    }

    /// Logs a failed send (at most once a minute), with a hint when the
    /// topic may be missing.
    fn log_failure(&self, error: &KafkaError) {
        let allowed = self
            .log
            .lock()
            .expect("log throttle")
            .allow(std::time::Instant::now());
        if let Some(held_back) = allowed {
            let hint = match error.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::MessageTimedOut,
                ) => " (does the dead-letter topic exist? the uplink does not create topics)",
                _ => "",
            };
            tracing::error!(
                dead_letter_topic = %self.topic,
                error = %error,
                retries_not_logged = held_back,
                "cannot write to the dead-letter topic{hint}; the partition waits and nothing past this record is committed"
            );
        }
    }

    /// Sends `letter` and waits for Kafka's acknowledgement, retrying until it
    /// succeeds. Returns false if `stop` fired first: the record is then not
    /// dealt with and must not be committed.
    pub async fn send(&self, letter: &DeadLetter, stop: &CancellationToken) -> bool {
        let Some(producer) = &self.producer else {
            tracing::error!(
                topic = %letter.origin.topic,
                partition = letter.origin.partition,
                offset = letter.origin.offset,
                error = %letter.error,
                "record can never be written and no dead-letter topic is configured; skipping it"
            );
            return true;
        };
        let mut backoff = Backoff::new(Duration::from_millis(500), self.retry_max);
        loop {
            let mut record = FutureRecord::to(&self.topic)
                .payload(letter.payload.as_slice())
                .headers(headers_of(letter));
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            match producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => {
                    self.log_sent(letter);
                    return true;
                }
                Err((error, _)) => self.log_failure(&error),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay(rand::random())) => {}
                _ = stop.cancelled() => return false,
            }
        }
    }
}
/// The record's own headers, then where it came from and why it is here.
fn headers_of(letter: &DeadLetter) -> OwnedHeaders {
    let partition = letter.origin.partition.to_string();
    let offset = letter.origin.offset.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len() + 5);
    for (key, value) in &letter.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_slice()),
        });
    }
    headers = headers
        .insert(Header {
            key: HEADER_ERROR,
            value: Some(letter.error.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE_TOPIC,
            value: Some(&*letter.origin.topic),
        })
        .insert(Header {
            key: HEADER_SOURCE_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE_OFFSET,
            value: Some(offset.as_str()),
        });
    if let Some(sink) = &letter.sink {
        headers = headers.insert(Header {
            key: HEADER_SINK,
            value: Some(sink.as_str()),
        });
    }
    headers
}
