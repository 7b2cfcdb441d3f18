//! VictoriaMetrics through its InfluxDB line protocol endpoint: `/write` on a
//! single node, `/insert/<tenant>/influx/write` on a cluster's vminsert.
//!
//! VictoriaMetrics stores `<measurement>_<field>` series with the tags as
//! labels, in milliseconds. Run it with `-dedup.minScrapeInterval=1ms` so a
//! reading written twice (after a retry) stays one point. It names no line
//! in its error answers, so refused lines are found by bisecting.

use super::config::SinkConfig;
use super::http::{Auth, HttpWriter};
use super::{BuildError, influxdb_v1};

/// The sink a `[[sink]]` table of this kind describes.
pub fn sink(config: &SinkConfig) -> Result<HttpWriter, BuildError> {
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
    HttpWriter::new(
        config,
        &path,
        query,
        Auth::None,
        |_, _, _| Vec::new(),
        String::new(),
    )
}
