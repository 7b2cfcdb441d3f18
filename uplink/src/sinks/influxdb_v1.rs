//! InfluxDB 1.x: `POST /write?db=<database>&rp=<policy>&precision=<p>`,
//! basic auth.
//!
//! The database must exist. A partial write answers 400 and quotes each line
//! it could not parse (`unable to parse '<line>': ...`); its valid points are
//! written anyway, and writing them again only overwrites them.

use async_trait::async_trait;

use super::config::{Precision, SinkConfig};
use super::http::{self, Auth, HttpWriter};
use super::{BuildError, Sink, WriteError};
use crate::batcher::Line;

pub struct InfluxDbV1 {
    name: String,
    http: HttpWriter,
}

/// InfluxDB 1.x's spelling of a precision.
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "ns",
        Precision::Us => "u",
        Precision::Ms => "ms",
        Precision::S => "s",
    }
}

impl InfluxDbV1 {
    pub fn new(config: &SinkConfig) -> Result<Self, BuildError> {
        let mut query = vec![
            ("db", config.database.clone()),
            ("precision", precision_param(config.precision()).to_owned()),
        ];
        if !config.retention_policy.is_empty() {
            query.push(("rp", config.retention_policy.clone()));
        }
        let http = HttpWriter::new(
            config,
            "/write",
            query,
            Auth::basic(config)?,
            http::find_quoted_lines,
        )?;
        Ok(InfluxDbV1 {
            name: format!("influxdb_v1 {} db={}", http.url(), config.database),
            http,
        })
    }
}

#[async_trait]
impl Sink for InfluxDbV1 {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, lines: &[&Line]) -> Result<(), WriteError> {
        self.http.post(lines).await
    }
}
