//! # Sinks: where batches are written
//!
//! Two implementations of [`Sink`]: [`http::HttpWriter`] for the
//! line-protocol databases, and [`redis::Redis`]. The HTTP request
//! (precision, gzip, auth) and the reading of the answer are shared in
//! [`http`]; each database's module only builds its writer: its endpoint,
//! query, auth, and how its error bodies name the lines it refused. A write either succeeds, or fails with a
//! [`WriteError`] that says what to do about it.
//!
//! ## Layout
//! - [`config`]: the `[[sink]]` table.
//! - [`http`]: POSTing line protocol and classifying the answer.
//! - [`influxdb_v1`], [`influxdb_v2`], [`influxdb_v3`], [`victoriametrics`],
//!   [`cnosdb`], [`questdb`]: one endpoint each.
//! - [`redis`]: the latest value of each series, in a hash.

pub mod cnosdb;
pub mod config;
pub mod http;
pub mod influxdb_v1;
pub mod influxdb_v2;
pub mod influxdb_v3;
pub mod questdb;
pub mod redis;
pub mod victoriametrics;

use std::path::Path;
use std::time::Duration;

use crate::record::Line;
use config::{SinkConfig, SinkKind};

/// Why a write failed, and so what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Try the same lines again later: the database is down, overloaded
    /// (429, 5xx) or did not answer.
    #[error("{reason}")]
    Retry {
        reason: String,
        /// The database asked for this delay (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The lines are too many for one request (413): split them.
    #[error("{reason}")]
    TooLarge { reason: String },
    /// The database refused (some of) the lines (400, 422). `lines` holds
    /// the indices of those it named; empty when it did not say, and the
    /// refused lines must be found by bisecting.
    #[error("{reason}")]
    Rejected { reason: String, lines: Vec<usize> },
    /// Retrying will not help until an operator acts: wrong credentials,
    /// missing database, wrong URL (401, 403, 404).
    #[error("{reason}")]
    Misconfigured { reason: String },
}

/// A database that takes readings as line protocol.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// A short name for logs and metrics: kind and URL.
    fn name(&self) -> &str;

    /// Writes `lines` (line protocol, nanosecond timestamps) at once.
    async fn write(&self, lines: &[Line<'_>]) -> Result<(), WriteError>;
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Secret(#[from] telemetry::secret::SecretError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
}

/// Builds the sink a `[[sink]]` table describes.
pub async fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, BuildError> {
    Ok(match config.kind {
        SinkKind::InfluxdbV1 => Box::new(influxdb_v1::sink(config)?),
        SinkKind::InfluxdbV2 => Box::new(influxdb_v2::sink(config)?),
        SinkKind::InfluxdbV3 => Box::new(influxdb_v3::sink(config)?),
        SinkKind::Victoriametrics => Box::new(victoriametrics::sink(config)?),
        SinkKind::Cnosdb => Box::new(cnosdb::sink(config)?),
        SinkKind::Questdb => Box::new(questdb::sink(config)?),
        SinkKind::Redis => Box::new(redis::Redis::new(config).await?),
    })
}

/// The password or token in `path` (see [`telemetry::secret`]).
pub fn read_secret(path: &Path) -> Result<String, BuildError> {
    Ok(telemetry::secret::read(path)?.expose().to_owned())
}
