//! # telemetry: Buoy's reading model and wire codecs
//!
//! Every stage of Buoy passes [`Reading`]s along: a sensor's values become a
//! reading in the edge agent's sampler, the journal stores it, Kafka carries it,
//! and the uplink writes it as a point to a time-series database. This crate
//! defines that model and its two wire encodings, plus the few pure helpers
//! both binaries share. It does no I/O, except reading a config file
//! ([`config_file::read_file`]) and secret files ([`secret`]), serving
//! metrics ([`metrics_http`]), and the process shell ([`process`]).
//!
//! ## Layout
//! - [`reading`]: the model ([`Reading`], [`FieldValue`]) and the rules a reading
//!   must meet to be encodable.
//! - [`line_protocol`]: Influx line protocol, encoder and parser, escaping as in
//!   InfluxData's reference implementation.
//! - [`telegraf_json`]: Telegraf's JSON metric format (and plain JSON objects
//!   of fields), with explicit timestamp units.
//! - [`record`]: the Kafka record contract shared by the agent and the uplink
//!   (header names, content types).
//! - [`config_file`]: TOML config loading with `BUOY_*` environment overrides
//!   and problems reported by line.
//! - [`units`], [`backoff`], [`throttle`]: byte sizes in configs, retry delays,
//!   and rate limits for repeated log lines.
//! - [`metrics_http`]: `GET /metrics` for both binaries.
//! - [`process`], [`secret`] and (feature `kafka`) `kafka_log`: the process
//!   shell both binaries share: logging, signals, config loading, secret
//!   files and librdkafka's log lines.
//!
//! ## Invariants
//! - Anything an encoder accepts, the matching parser returns unchanged
//!   (property-tested in `tests/round_trip.rs`).
//! - Encoders refuse readings they cannot write faithfully (NaN, names ending
//!   in a backslash, control characters) instead of writing something else.

#[cfg(feature = "allocator")]
pub mod allocator;
pub mod backoff;
pub mod config_file;
#[cfg(feature = "kafka")]
pub mod kafka_log;
pub mod line_protocol;
pub mod metrics_http;
pub mod process;
pub mod reading;
pub mod record;
pub mod secret;
pub mod telegraf_json;
pub mod throttle;
pub mod units;

pub use reading::{FieldValue, InvalidReading, Reading};
