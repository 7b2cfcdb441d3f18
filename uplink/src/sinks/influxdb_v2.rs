//! InfluxDB 2.x: `POST /api/v2/write?org=&bucket=&precision=`, with
//! `Authorization: Token <token>`.
//!
//! A partial write answers 400 with `{"code":"invalid","message":"partial
//! write error (N written): unable to parse '<line>': ..."}`; a field type
//! conflict or a point outside retention answers 422 without naming the
//! line, which is then found by bisecting.

use super::BuildError;
use super::config::{Precision, SinkConfig};
use super::http::{self, Auth, HttpWriter};

/// InfluxDB 2.x's spelling of a precision.
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "ns",
        Precision::Us => "us",
        Precision::Ms => "ms",
        Precision::S => "s",
    }
}

/// The sink a `[[sink]]` table of this kind describes.
pub fn sink(config: &SinkConfig) -> Result<HttpWriter, BuildError> {
    let query = vec![
        ("org", config.org.clone()),
        ("bucket", config.bucket.clone()),
        ("precision", precision_param(config.precision()).to_owned()),
    ];
    HttpWriter::new(
        config,
        "/api/v2/write",
        query,
        Auth::token(config, "Token")?,
        http::find_quoted_lines,
        format!(" bucket={}", config.bucket),
    )
}
