//! VictoriaMetrics through its InfluxDB line protocol endpoint: `/write` on a
//! single node, `/insert/<tenant>/influx/write` on a cluster's vminsert.
//!
//! VictoriaMetrics stores `<measurement>_<field>` series with the tags as
//! labels, in milliseconds. Run it with `-dedup.minScrapeInterval=1ms` so a
//! reading written twice (after a retry) stays one point. It names no line
//! in its error answers, so refused lines are found by bisecting.

use async_trait::async_trait;

use super::config::SinkConfig;
use super::http::{Auth, HttpWriter};
use super::{BuildError, Sink, WriteError, influxdb_v1};
use crate::batcher::Line;

pub struct VictoriaMetrics {
    name: String,
    http: HttpWriter,
}

impl VictoriaMetrics {
    pub fn new(config: &SinkConfig) -> Result<Self, BuildError> {
        let path = if config.tenant.is_empty() {
            "/write".to_owned()
        } else {
            format!("/insert/{}/influx/write", config.tenant)
        };
        // The same precision spelling as InfluxDB 1.x.
        let query = vec![(
            "precision",
            influxdb_v1::precision_param(config.precision()).to_owned(),
        )];
        let http = HttpWriter::new(config, &path, query, Auth::None, |_, _, _| Vec::new())?;
        Ok(VictoriaMetrics {
            name: format!("victoriametrics {}", http.url()),
            http,
        })
    }
}

#[async_trait]
impl Sink for VictoriaMetrics {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, lines: &[&Line]) -> Result<(), WriteError> {
        self.http.post(lines).await
    }
}
