//! # edge-agent: sensors → journal → Kafka, on the device
//!
//! The agent samples the configured sensors, writes every reading to a local
//! durable journal (redb), and forwards journaled readings to Kafka whenever
//! the link allows. A reading leaves the journal only after Kafka has
//! acknowledged it, so a link that is down for weeks, a broker that is
//! missing a topic, or a power cut loses nothing that was committed.
//!
//! ## Layout (the path of a reading)
//! - [`sampler`]: one task per sensor; observations become readings.
//! - [`journal`]: the redb journal (its module doc is the storage spec) and
//!   [`journal::writer`], the group-commit task that owns every write.
//! - [`forwarder`]: journal → Kafka, deleting only what Kafka acknowledged.
//! - [`stats`]: counters, link state, sensor health and the periodic
//!   status line.
//! - [`pipeline`]: the running stages, moved to a new config in place.
//! - [`remote_config`]: desired config over MQTT, reported state.
//! - [`sensor_check`]: `edge-agent sensors`, one read of every sensor.
//! - [`config`]: the one typed config, parsed and validated in one place.
//! - [`agent`]: wires the stages and shuts them down in order.
//! - [`local_status`]: `edge-agent status` over a Unix socket;
//!   [`metrics`]: Prometheus text; [`service_manager`]: systemd readiness
//!   and watchdog.
//! - [`clock`]: wall time, time since boot, and whether the clock is set.
//! - [`cli`]: the command line; [`disk`]: the one way to the filesystem
//!   (real, or one that fills up or loses power in tests); [`durable`]:
//!   small state files replaced atomically.
//!
//! ## Invariants
//! - Every sampled reading is either committed to the journal, or counted as
//!   dropped (journal writer queue full, unencodable, refused by a full
//!   journal) and logged; a journaled reading leaves it only acknowledged by
//!   Kafka, or counted as dropped or aggregated by the full-journal policy.
//! - The journal file never grows past `journal.max_bytes`, and a damaged one
//!   is moved aside and salvaged, never deleted.
//! - A journal record is deleted only after its Kafka delivery report.
//! - Memory is bounded: the writer's queue, the forwarder's in-flight window,
//!   librdkafka's queue and redb's cache all have explicit sizes; RSS does
//!   not grow with the backlog (docs/performance.md).

pub mod agent;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disk;
pub mod durable;
pub mod forwarder;
pub mod journal;
pub mod local_status;
pub mod metrics;
pub mod pipeline;
pub mod remote_config;
pub mod sampler;
pub mod sensor_check;
pub mod service_manager;
pub mod stats;
