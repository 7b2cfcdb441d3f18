//! QuestDB: InfluxDB line protocol over HTTP, `POST /write?precision=`.
//! Success is 204. A request is one transaction: when a line is bad nothing
//! of it is written, and the answer is 400 with
//! `{"code":"invalid","message":"...","line":N,"errorId":"..."}`, `line`
//! counted from 1.

use super::BuildError;
use super::config::{Precision, SinkConfig};
use super::http::{Auth, HttpWriter};
use crate::record::Line;

/// QuestDB's spelling of a precision.
pub fn precision_param(p: Precision) -> &'static str {
    match p {
        Precision::Ns => "n",
        Precision::Us => "u",
        Precision::Ms => "ms",
        Precision::S => "s",
    }
}

/// The line named in the body's `line`.
pub fn find_numbered_line(body: &str, lines: &[Line<'_>], _: Precision) -> Vec<usize> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("line").and_then(|n| n.as_u64()))
        .and_then(|n| (n as usize).checked_sub(1))
        .filter(|&i| i < lines.len())
        .into_iter()
        .collect()
}

/// The sink a `[[sink]]` table of this kind describes.
pub fn sink(config: &SinkConfig) -> Result<HttpWriter, BuildError> {
    let query = vec![("precision", precision_param(config.precision()).to_owned())];
    let auth = if config.token_file.is_some() {
        Auth::token(config, "Bearer")?
    } else {
        Auth::basic(config)?
    };
    HttpWriter::new(
        config,
        "/write",
        query,
        auth,
        find_numbered_line,
        String::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::http::tests::lines;

    #[test]
    fn finds_the_line_by_number() {
        let buffer = lines(&["a v=1 1", "b v= 2"]);
        let ls: Vec<_> = buffer.iter().collect();
        let body = r#"{"code":"invalid","message":"failed to parse line protocol:errors encountered on line(s):\nerror in line 2: table: b; invalid field value","line":2,"errorId":"9f-1"}"#;
        assert_eq!(find_numbered_line(body, &ls, Precision::Ns), vec![1]);
        assert!(find_numbered_line(r#"{"line":7}"#, &ls, Precision::Ns).is_empty());
    }
}
