//! # uplink: Kafka → time-series database, in the datacentre
//!
//! The uplink drains Kafka topics into a time-series database over Influx
//! line protocol. It commits a Kafka offset only after the database accepted
//! every record up to it, and sends records that can never be written to a
//! dead-letter topic instead of stalling their partition.
//!
//! ## Layout (the path of a record)
//! - [`consumer`]: the Kafka consumer group member; offsets are stored by
//!   hand, never automatically.
//! - [`decode`]: record → lines (line protocol, Telegraf JSON, plain JSON),
//!   parsed once and appended to the open batch.
//! - [`batcher`]: lines grouped by count, bytes and time, with the offsets
//!   they settle and the letters of records that can never be written.
//! - [`writer`]: one sealed batch into every sink, several batches at once,
//!   splitting, bisecting and retrying as each database answers.
//! - [`sinks`]: the [`sinks::Sink`] trait: one HTTP writer for the
//!   line-protocol databases (a module per dialect builds it) and Redis.
//! - [`dead_letter`]: the dead-letter topic.
//! - [`offsets`]: which offsets may be committed when batches finish out of
//!   order.
//! - [`pipeline`]: the loop that runs them, pausing when the writers fall
//!   behind.
//! - [`metrics`]: Prometheus text on a local port; [`status`]: the status
//!   line and the rate gauge.
//! - [`record`]: where a record came from (topic, partition, offset), and
//!   the decoded lines in one buffer, shared by every stage.
//! - [`kafka`]: the settings of every Kafka client (consumer, watermark
//!   client, dead-letter producer), memory bounds included.
//! - [`config`], [`cli`]: the typed config and the command line.
//!
//! ## Invariants
//! - An offset is committed only when every record below it is in every sink
//!   or in the dead-letter topic, acknowledged.
//! - A record is never dropped silently: it is written, dead-lettered, or
//!   (with no dead-letter topic configured) logged as skipped.
//! - Per partition, the committed offset never passes a record that is not
//!   yet written or dead-lettered, whatever order batches finish in.
//! - Memory is bounded: `batch.max_in_flight` batches of at most
//!   `batch.max_lines` / `batch.max_bytes`, plus librdkafka's prefetch queue,
//!   sized explicitly. When the batches in flight cannot drain, consumption
//!   pauses.

pub mod batcher;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod decode;
pub mod kafka;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod record;
pub mod sinks;
pub mod status;
pub mod writer;
