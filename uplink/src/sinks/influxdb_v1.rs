//! InfluxDB 1.x: `POST /write?db=<database>&rp=<policy>&precision=<p>`,
//! basic auth.
//!
//! The database must exist. A partial write answers 400 and quotes each line
//! it could not parse (`unable to parse '<line>': ...`); its valid points are
//! written anyway, and writing them again only overwrites them.

use super::BuildError;
use super::config::{Precision, SinkConfig};
use super::http::{self, Auth, HttpWriter};

/// InfluxDB 1.x's spelling of a precision.
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "ns",
        Precision::Us => "u",
        Precision::Ms => "ms",
        Precision::S => "s",
    }
}

/// The sink a `[[sink]]` table of this kind describes.
pub fn sink(config: &SinkConfig) -> Result<HttpWriter, BuildError> {
    let mut query = vec![
        ("db", config.database.clone()),
        ("precision", precision_param(config.precision()).to_owned()),
    ];
    if !config.retention_policy.is_empty() {
        query.push(("rp", config.retention_policy.clone()));
    }
    HttpWriter::new(
        config,
        "/write",
        query,
        Auth::basic(config)?,
        http::find_quoted_lines,
        format!(" db={}", config.database),
    )
}
