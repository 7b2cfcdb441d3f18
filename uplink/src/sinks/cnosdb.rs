//! CnosDB: `POST /api/v1/write?db=&tenant=&precision=`, basic auth. Success
//! is 200 (not 204). Errors are JSON (`error_code`, `error_message`) that
//! name no line, so refused lines are found by bisecting.

use super::BuildError;
use super::config::{Precision, SinkConfig};
use super::http::{Auth, HttpWriter};

/// CnosDB's spelling of a precision; it has no seconds (refused in config).
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "ns",
        Precision::Us => "us",
        Precision::Ms | Precision::S => "ms",
    }
}

/// The sink a `[[sink]]` table of this kind describes.
pub fn sink(config: &SinkConfig) -> Result<HttpWriter, BuildError> {
    let database = if config.database.is_empty() {
        "public"
    } else {
        &config.database
    };
    let tenant = if config.tenant.is_empty() {
        "cnosdb"
    } else {
        &config.tenant
    };
    let query = vec![
        ("db", database.to_owned()),
        ("tenant", tenant.to_owned()),
        ("precision", precision_param(config.precision()).to_owned()),
    ];
    HttpWriter::new(
        config,
        "/api/v1/write",
        query,
        Auth::basic(config)?,
        |_, _, _| Vec::new(),
        format!(" db={database}"),
    )
}
