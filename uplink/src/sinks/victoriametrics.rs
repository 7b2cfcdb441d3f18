//! VictoriaMetrics through its InfluxDB line protocol endpoint.
//!
//! VictoriaMetrics stores `<measurement>_<field>` series with the tags as
//! labels, in milliseconds. Run it with `-dedup.minScrapeInterval=1ms` so a
//! reading written twice (after a retry) stays one point.

use async_trait::async_trait;

use super::{BuildError, Sink, WriteError, http};
use crate::config::VictoriaMetricsConfig;

pub struct VictoriaMetrics {
    name: String,
    url: String,
    client: reqwest::Client,
}

impl VictoriaMetrics {
    pub fn new(config: &VictoriaMetricsConfig) -> Result<Self, BuildError> {
        let base = config.url.trim_end_matches('/');
        Ok(VictoriaMetrics {
            name: format!("victoriametrics {base}"),
            url: format!("{base}/write"),
            client: http::client(config.timeout)?,
        })
    }
}

#[async_trait]
impl Sink for VictoriaMetrics {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&self, body: String) -> Result<(), WriteError> {
        http::post(self.client.post(&self.url), body).await
    }
}
