//! InfluxDB 3: `POST /api/v3/write_lp?db=&precision=`, with
//! `Authorization: Bearer <token>`.
//!
//! Partial writes are accepted (the default): the valid lines are written
//! and the answer is 400 with
//! `{"error":"...","data":[{"original_line":"...","line_number":2,"error_message":"..."}]}`,
//! line numbers counted from 1.

use super::BuildError;
use super::config::{Precision, SinkConfig};
use super::http::{Auth, HttpWriter};
use crate::record::Line;

/// InfluxDB 3's spelling of a precision (never `auto`: Buoy never lets a
/// database guess).
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "nanosecond",
        Precision::Us => "microsecond",
        Precision::Ms => "millisecond",
        Precision::S => "second",
    }
}

/// The lines named in the body's `data[].line_number`.
pub fn find_numbered_lines(body: &str, lines: &[Line<'_>], _: Precision) -> Vec<usize> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut found: Vec<usize> = v
        .get("data")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("line_number").and_then(|n| n.as_u64()))
        .filter_map(|n| (n as usize).checked_sub(1))
        .filter(|&i| i < lines.len())
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The sink a `[[sink]]` table of this kind describes.
pub fn sink(config: &SinkConfig) -> Result<HttpWriter, BuildError> {
    let query = vec![
        ("db", config.database.clone()),
        ("precision", precision_param(config.precision()).to_owned()),
        ("accept_partial", "true".to_owned()),
    ];
    HttpWriter::new(
        config,
        "/api/v3/write_lp",
        query,
        Auth::token(config, "Bearer")?,
        find_numbered_lines,
        format!(" db={}", config.database),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::http::tests::lines;

    #[test]
    fn finds_the_lines_by_number() {
        let buffer = lines(&["a v=1 1", "b v= 2", "c v=3 3", "d v=x 4"]);
        let ls: Vec<_> = buffer.iter().collect();
        let body = r#"{"error":"partial write of line protocol occurred","data":[
            {"original_line":"b v= 2","line_number":2,"error_message":"no value"},
            {"original_line":"d v=x 4","line_number":4,"error_message":"bad"},
            {"original_line":"?","line_number":99,"error_message":"out of range"}]}"#;
        assert_eq!(find_numbered_lines(body, &ls, Precision::Ns), vec![1, 3]);
        assert!(find_numbered_lines("oops", &ls, Precision::Ns).is_empty());
    }
}
