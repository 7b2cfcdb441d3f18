//! # The Kafka consumer
//!
//! A consumer group member that never commits past what the database has
//! accepted: automatic offset *storing* is off, so librdkafka's periodic
//! auto-commit only ever commits offsets the pipeline stored explicitly after
//! a successful write (or a dead-letter delivery). Offsets stored are also
//! committed when partitions are revoked and on close.
//!
//! The consumer's context ([`Events`]) tells the pipeline which partitions
//! were revoked or assigned (with the committed offset each starts from) and
//! pauses partitions assigned while consumption is paused. Partitions move
//! cooperatively (`cooperative-sticky`): a rebalance revokes only the
//! partitions that change hands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::UplinkConfig;
use crate::kafka::{self, KafkaLog};
use crate::record::Partition;

/// A partition that came or went in a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Revoked(Partition),
    /// Assigned, with the committed offset consumption starts from (none
    /// for a group that never committed there).
    Assigned(Partition, Option<i64>),
}

/// The consumer's context: logging and rebalances.
#[derive(Default)]
pub struct Events {
    log: KafkaLog,
    changes: Mutex<Vec<Change>>,
    paused: AtomicBool,
}

impl Events {
    /// The partitions revoked and assigned since the last call, in order.
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.lock().expect("changes lock"))
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
            self.changes.lock().expect("changes lock").extend(
                tpl.elements()
                    .iter()
                    .map(|e| Change::Revoked((Arc::from(e.topic()), e.partition()))),
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
                let starts = starts(consumer, tpl);
                self.changes.lock().expect("changes lock").extend(starts);
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

/// The partitions in `tpl`, with the offsets committed for them.
fn starts(consumer: &BaseConsumer<Events>, tpl: &TopicPartitionList) -> Vec<Change> {
    let committed = consumer
        .committed_offsets(tpl.clone(), Duration::from_secs(5))
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the committed offsets of the partitions assigned; skipped offsets at their start go uncounted");
            tpl.clone()
        });
    committed
        .elements()
        .iter()
        .map(|e| {
            let start = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            Change::Assigned((Arc::from(e.topic()), e.partition()), start)
        })
        .collect()
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub type Consumer = StreamConsumer<Events>;

/// Creates the consumer and subscribes it to the configured topics.
pub fn create(config: &UplinkConfig) -> KafkaResult<Consumer> {
    let consumer: Consumer =
        kafka::consumer_config(config).create_with_context(Events::default())?;
    let topics: Vec<&str> = config.kafka.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}
