//! # buoy-tests: end-to-end tests against real services
//!
//! The harness starts real brokers and databases (Tansu, VictoriaMetrics,
//! InfluxDB 1.x, Redis) on free loopback ports, each in its own temporary
//! directory, runs the real `edge-agent` and `uplink` binaries against them,
//! and stops everything when the test ends (every process is owned by a
//! guard that kills it on drop). A required program that is missing fails
//! the test with the command that installs it; nothing is skipped silently.
//!
//! ## Layout
//! - [`process`]: process guards, free ports, finding programs.
//! - [`binaries`]: building and running `edge-agent` and `uplink`.
//! - [`kafka`]: Tansu, topic creation, and the independent kafka-python reader.
//! - [`victoria`], [`influx`], [`redis`]: the databases and what they hold.
//! - [`http_fake`]: a recording HTTP server for the databases not installed
//!   here (InfluxDB 2 and 3, CnosDB, QuestDB).
//! - [`load`]: a producer of numbered line-protocol records at a steady rate.
//! - [`fs`]: a size-limited tmpfs for full-disk tests.
//! - [`certs`]: a test CA and certificates (openssl).
//! - [`mqtt`]: mosquitto (plain or TLS with passwords) and a watching client.
//! - [`proxy`]: a TCP proxy that counts the bytes a client sends.
//! - [`points`]: readings as databases return them, for exact comparisons.

pub mod binaries;
pub mod certs;
pub mod chromium;
pub mod fs;
pub mod http_fake;
pub mod influx;
pub mod kafka;
pub mod load;
pub mod mqtt;
pub mod points;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod victoria;

use tokio::sync::{Mutex, MutexGuard};

/// End-to-end tests run one at a time: each starts several services and a
/// high-rate agent, and on a two-core machine they would starve each other.
/// (A tokio mutex: each test has its own runtime, and the guard is held
/// across awaits.)
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}
