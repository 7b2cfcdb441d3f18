//! # Sinks: where batches are written
//!
//! Each database is one small implementation of [`Sink`]; they share the
//! HTTP request and the reading of the answer in [`http`]. A write either
//! succeeds, or fails with a [`WriteError`] that says what to do about it.
//!
//! ## Layout
//! - [`http`]: POSTing line protocol and classifying the status.
//! - [`victoriametrics`]: the `/write` endpoint.
//! - [`influxdb_v1`]: `/write?db=&rp=&precision=ns`, basic auth.

pub mod http;
pub mod influxdb_v1;
pub mod victoriametrics;

use std::time::Duration;

use crate::config::SinkConfig;

/// Why a write failed, and so what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Try the same batch again later: the database is down, overloaded
    /// (429, 5xx) or did not answer.
    #[error("{reason}")]
    Retry {
        reason: String,
        /// The database asked for this delay (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The batch is too large for the database (413): split it.
    #[error("{reason}")]
    TooLarge { reason: String },
    /// The database refused (some of) the data (400, 422): find the bad
    /// lines and dead-letter them.
    #[error("{reason}")]
    Rejected { reason: String },
    /// Retrying will not help until an operator acts: wrong credentials,
    /// missing database, wrong URL (401, 403, 404).
    #[error("{reason}")]
    Misconfigured { reason: String },
}

/// A time-series database that accepts line protocol.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// A short name for logs: kind and URL.
    fn name(&self) -> &str;

    /// Writes `body`: lines of line protocol, nanosecond timestamps.
    async fn write(&self, body: String) -> Result<(), WriteError>;
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}: {source}")]
    Secret {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the sink a `[[sink]]` table describes.
pub fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, BuildError> {
    Ok(match config {
        SinkConfig::Victoriametrics(c) => Box::new(victoriametrics::VictoriaMetrics::new(c)?),
        SinkConfig::InfluxdbV1(c) => Box::new(influxdb_v1::InfluxDbV1::new(c)?),
    })
}
