//! InfluxDB 2.x: `POST /api/v2/write?org=&bucket=&precision=`, with
//! `Authorization: Token <token>`.
//!
//! A partial write answers 400 with `{"code":"invalid","message":"partial
//! write error (N written): unable to parse '<line>': ..."}`; a field type
//! conflict or a point outside retention answers 422 without naming the
//! line, which is then found by bisecting.

use async_trait::async_trait;

use super::config::{Precision, SinkConfig};
use super::http::{self, Auth, HttpWriter};
use super::{BuildError, Sink, WriteError};
use crate::batcher::Line;

pub struct InfluxDbV2 {
    name: String,
    http: HttpWriter,
}

/// InfluxDB 2.x's spelling of a precision.
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "ns",
        Precision::Us => "us",
        Precision::Ms => "ms",
        Precision::S => "s",
    }
}

impl InfluxDbV2 {
    pub fn new(config: &SinkConfig) -> Result<Self, BuildError> {
        let query = vec![
            ("org", config.org.clone()),
            ("bucket", config.bucket.clone()),
            ("precision", precision_param(config.precision()).to_owned()),
        ];
        let http = HttpWriter::new(
            config,
            "/api/v2/write",
            query,
            Auth::token(config, "Token")?,
            http::find_quoted_lines,
        )?;
        Ok(InfluxDbV2 {
            name: format!("influxdb_v2 {} bucket={}", http.url(), config.bucket),
            http,
        })
    }
}

#[async_trait]
impl Sink for InfluxDbV2 {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, lines: &[&Line]) -> Result<(), WriteError> {
        self.http.post(lines).await
    }
}
