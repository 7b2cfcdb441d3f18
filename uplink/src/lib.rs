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
//! - [`decode`]: record → readings (line protocol, Telegraf JSON, plain JSON).
//! - [`batcher`]: lines grouped by count, bytes and time, with the offsets
//!   they settle.
//! - [`sinks`]: one [`sinks::Sink`] per database kind, sharing [`sinks::http`].
//! - [`dead_letter`]: the dead-letter topic.
//! - [`pipeline`]: the loop that runs them in order.
//! - [`config`], [`cli`]: the typed config and the command line.
//!
//! ## Invariants
//! - An offset is committed only when every record below it is in every sink
//!   or in the dead-letter topic, acknowledged.
//! - A record is never dropped silently: it is written, dead-lettered, or
//!   (with no dead-letter topic configured) logged as skipped.
//! - Memory is bounded: one batch (`batch.max_lines`, `batch.max_bytes`) and
//!   librdkafka's prefetch queue, sized explicitly.

pub mod batcher;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod decode;
pub mod pipeline;
pub mod sinks;
