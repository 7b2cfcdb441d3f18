//! Writing line protocol over HTTP, and what each answer means.
//!
//! The body is built here: each line's timestamp converted to the sink's
//! precision (rounding down, so a point's time never moves forward), then
//! gzip if configured. Answers are classified by status; a dialect supplies
//! the function that finds the refused lines in its error body.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::config::{Precision, SinkConfig};
use super::{BuildError, Sink, WriteError};
use crate::record::Line;

/// How a request authenticates.
pub enum Auth {
    None,
    Basic {
        user: String,
        password: String,
    },
    /// `Authorization: <scheme> <token>`: `Token` for InfluxDB 2, `Bearer`
    /// for InfluxDB 3 and QuestDB.
    Header {
        scheme: &'static str,
        token: String,
    },
}

impl Auth {
    /// Basic auth from `username` and `password_file`, if configured.
    pub fn basic(config: &SinkConfig) -> Result<Auth, BuildError> {
        Ok(match (&config.username, &config.password_file) {
            (Some(user), Some(path)) => Auth::Basic {
                user: user.clone(),
                password: super::read_secret(path)?,
            },
            (Some(user), None) => Auth::Basic {
                user: user.clone(),
                password: String::new(),
            },
            _ => Auth::None,
        })
    }

    /// A token header from `token_file`, if configured.
    pub fn token(config: &SinkConfig, scheme: &'static str) -> Result<Auth, BuildError> {
        Ok(match &config.token_file {
            Some(path) => Auth::Header {
                scheme,
                token: super::read_secret(path)?,
            },
            None => Auth::None,
        })
    }
}

/// Finds the indices of the lines a database named in its error body.
/// Gets the body, the lines and the precision they were sent in.
pub type FindRejected = fn(&str, &[Line<'_>], Precision) -> Vec<usize>;

/// A line-protocol database over HTTP: everything needed to POST lines to
/// one endpoint. Each dialect module builds one with its path, query, auth
/// and way of naming refused lines.
pub struct HttpWriter {
    name: String,
    client: reqwest::Client,
    url: String,
    query: Vec<(&'static str, String)>,
    auth: Auth,
    precision: Precision,
    gzip: bool,
    find_rejected: FindRejected,
}

impl HttpWriter {
    /// `path` is appended to the configured URL; `query` includes the
    /// precision parameter in the dialect's spelling. The sink's name is its
    /// kind, its URL and `detail`.
    pub fn new(
        config: &SinkConfig,
        path: &str,
        query: Vec<(&'static str, String)>,
        auth: Auth,
        find_rejected: FindRejected,
        detail: String,
    ) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("buoy-uplink/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let url = format!("{}{path}", config.url.trim_end_matches('/'));
        Ok(HttpWriter {
            name: format!("{} {url}{detail}", config.kind.as_str()),
            client,
            url,
            query,
            auth,
            precision: config.precision(),
            gzip: config.gzip(),
            find_rejected,
        })
    }

    /// The request body for `lines`.
    pub fn body(&self, lines: &[Line<'_>]) -> Vec<u8> {
        let size: usize = lines.iter().map(|l| l.text().len() + 1).sum();
        let mut plain = Vec::with_capacity(size);
        for line in lines {
            push_sent(&mut plain, line, self.precision);
        }
        if !self.gzip {
            return plain;
        }
        let mut gz = GzEncoder::new(Vec::with_capacity(size / 4), Compression::fast());
        gz.write_all(&plain).expect("writing to memory");
        gz.finish().expect("writing to memory")
    }
}

#[async_trait::async_trait]
impl Sink for HttpWriter {
    fn name(&self) -> &str {
        &self.name
    }

    /// POSTs `lines` and classifies the answer.
    async fn write(&self, lines: &[Line<'_>]) -> Result<(), WriteError> {
        let mut request = self
            .client
            .post(&self.url)
            .query(&self.query)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::Header { scheme, token } => {
                request.header(AUTHORIZATION, format!("{scheme} {token}"))
            }
        };
        let response =
            request
                .body(self.body(lines))
                .send()
                .await
                .map_err(|e| WriteError::Retry {
                    reason: format!("no answer: {}", error_chain(&e)),
                    retry_after: None,
                })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        let named = if matches!(status.as_u16(), 400 | 422) {
            (self.find_rejected)(&body, lines, self.precision)
        } else {
            Vec::new()
        };
        Err(classify(status, &headers, &body, named))
    }
}

/// Appends the line as sent at `precision`, and a newline, to `out`: its
/// timestamp divided down, the rest as it is.
fn push_sent(out: &mut Vec<u8>, line: &Line<'_>, precision: Precision) {
    let unit = precision.unit_ns();
    if unit == 1 {
        out.extend_from_slice(line.text().as_bytes());
    } else {
        out.extend_from_slice(line.head().as_bytes());
        let time = line.timestamp_ns().div_euclid(unit);
        out.extend_from_slice(itoa::Buffer::new().format(time).as_bytes());
    }
    out.push(b'\n');
}

/// The line as sent at `precision` (as [`push_sent`] writes it, without
/// the newline).
pub fn sent_text(line: &Line<'_>, precision: Precision) -> String {
    let mut out = Vec::with_capacity(line.text().len() + 1);
    push_sent(&mut out, line, precision);
    out.pop();
    String::from_utf8(out).expect("lines are UTF-8")
}

/// InfluxDB 1.x and 2.x quote each line they could not parse:
/// `unable to parse '<line>': <reason>`. Returns the indices of those lines.
pub fn find_quoted_lines(body: &str, lines: &[Line<'_>], precision: Precision) -> Vec<usize> {
    const MARKER: &str = "unable to parse '";
    // Error bodies are JSON; the quoted line is JSON-escaped inside them.
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "message"]
                .iter()
                .find_map(|k| v.get(k).and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| body.to_owned());
    let mut found = Vec::new();
    for (start, _) in text.match_indices(MARKER) {
        let rest = &text[start + MARKER.len()..];
        if let Some(i) = lines.iter().position(|l| {
            let sent = sent_text(l, precision);
            rest.starts_with(sent.as_str()) && rest[sent.len()..].starts_with('\'')
        }) && !found.contains(&i)
        {
            found.push(i);
        }
    }
    found
}

/// What a non-success answer means. Pure, so every case is tested.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    named: Vec<usize>,
) -> WriteError {
    let reason = format!("HTTP {status}: {}", detail(headers, body));
    match status.as_u16() {
        400 | 422 => WriteError::Rejected {
            reason,
            lines: named,
        },
        413 => WriteError::TooLarge { reason },
        401 | 403 => WriteError::Misconfigured {
            reason: format!("{reason} (check the sink's credentials)"),
        },
        404 => WriteError::Misconfigured {
            reason: format!(
                "{reason} (check the sink's URL, and that its database, bucket or org exists)"
            ),
        },
        _ => WriteError::Retry {
            reason,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now())),
        },
    }
}

/// The reason in an error answer: InfluxDB's `X-Influxdb-Error` header, a
/// JSON body's `error`, `message` or `error_message` (with InfluxDB 3's
/// per-line `data[].error_message`), else the text.
fn detail(headers: &HeaderMap, body: &str) -> String {
    headers
        .get("x-influxdb-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let v = serde_json::from_str::<serde_json::Value>(body).ok()?;
            let mut text = ["error", "message", "error_message"]
                .iter()
                .find_map(|k| v.get(k).and_then(|e| e.as_str()).map(str::to_owned))?;
            for line in v
                .get("data")
                .and_then(|d| d.as_array())
                .into_iter()
                .flatten()
            {
                if let (Some(n), Some(e)) = (line.get("line_number"), line.get("error_message")) {
                    text.push_str(&format!("; line {n}: {}", e.as_str().unwrap_or_default()));
                }
            }
            Some(text)
        })
        .unwrap_or_else(|| body.trim().to_owned())
        .chars()
        .take(500)
        .collect()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::{Lines, Origin};
    use reqwest::header::HeaderValue;
    use telemetry::line_protocol;

    /// `texts` as lines, each from its own record (offset = index). A text
    /// that is not valid line protocol is split at its first and last space.
    pub fn lines(texts: &[&str]) -> Lines {
        let mut lines = Lines::default();
        for (i, text) in texts.iter().enumerate() {
            let mark = lines.mark();
            match line_protocol::scan_lines(text).next() {
                Some(Ok(view)) if view.is_compact() => lines.push_view(&view),
                _ => {
                    let (series, rest) = text.split_once(' ').expect("a space");
                    let (fields, time) = rest.rsplit_once(' ').expect("a timestamp");
                    let time = time.parse().expect("a timestamp");
                    lines.push_parts(series, time, |out| out.push_str(fields));
                }
            }
            let origin = Origin {
                topic: Arc::from("t"),
                partition: 0,
                offset: i as i64,
            };
            lines.close_record(mark, origin);
        }
        lines
    }

    /// The one line of `text`, as sent at `precision`.
    fn sent(text: &str, precision: Precision) -> String {
        let buffer = lines(&[text]);
        sent_text(&buffer.iter().next().unwrap(), precision)
    }

    fn classify_simple(code: u16, body: &str) -> WriteError {
        classify(
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            body,
            Vec::new(),
        )
    }

    #[test]
    fn each_status_maps_to_an_action() {
        for code in [400, 422] {
            assert!(matches!(
                classify_simple(code, "bad"),
                WriteError::Rejected { .. }
            ));
        }
        assert!(matches!(
            classify_simple(413, "big"),
            WriteError::TooLarge { .. }
        ));
        for code in [401, 403, 404] {
            assert!(matches!(
                classify_simple(code, ""),
                WriteError::Misconfigured { .. }
            ));
        }
        for code in [429, 500, 502, 503] {
            assert!(matches!(
                classify_simple(code, ""),
                WriteError::Retry { .. }
            ));
        }
    }

    #[test]
    fn honours_retry_after_in_seconds_and_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, "", Vec::new());
        assert!(
            matches!(e, WriteError::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn takes_the_reason_from_header_or_json_body() {
        let e = classify_simple(400, r#"{"error":"partial write: field type conflict"}"#);
        assert!(
            e.to_string().contains("partial write: field type conflict"),
            "{e}"
        );
        let e = classify_simple(400, r#"{"code":"invalid","message":"no org"}"#);
        assert!(e.to_string().ends_with("no org"), "{e}");
        let e = classify_simple(404, r#"{"error":"database not found: \"buoy\""}"#);
        assert!(
            e.to_string().contains("database, bucket or org exists"),
            "{e}"
        );
    }

    #[test]
    fn timestamps_are_divided_down_to_the_precision() {
        let line = "m,t=a\\ b v=1.5 1700000000123456789";
        assert_eq!(sent(line, Precision::Ns), line);
        assert_eq!(
            sent(line, Precision::Us),
            "m,t=a\\ b v=1.5 1700000000123456"
        );
        assert_eq!(sent(line, Precision::Ms), "m,t=a\\ b v=1.5 1700000000123");
        assert_eq!(sent(line, Precision::S), "m,t=a\\ b v=1.5 1700000000");
        // Before 1970 the time still rounds down, not towards zero.
        assert_eq!(sent("m v=1 -1500000", Precision::Ms), "m v=1 -2");
    }

    #[test]
    fn finds_the_lines_influxdb_quotes() {
        let buffer = lines(&["m v=1 1000000", "m v=\"x 2000000", "m v=3 3000000"]);
        let ls: Vec<_> = buffer.iter().collect();
        let body = r#"{"error":"unable to parse 'm v=\"x 2000': unbalanced quotes"}"#;
        assert_eq!(find_quoted_lines(body, &ls, Precision::Us), vec![1]);
        assert_eq!(
            find_quoted_lines(body, &ls, Precision::Ns),
            Vec::<usize>::new()
        );
        let v2 = r#"{"code":"invalid","message":"partial write error (2 written): unable to parse 'm v=\"x 2000000': unbalanced quotes"}"#;
        assert_eq!(find_quoted_lines(v2, &ls, Precision::Ns), vec![1]);
    }
}
