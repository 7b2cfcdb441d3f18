//! Writing line protocol over HTTP, and what each answer means.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::WriteError;

/// An HTTP client for one sink.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("buoy-uplink/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `body` and classifies the answer. `request` is the request with
/// URL and authentication set.
pub async fn post(request: reqwest::RequestBuilder, body: String) -> Result<(), WriteError> {
    let response = request
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
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
    Err(classify(status, &headers, &body))
}

/// What a non-success answer means. Pure, so every case is tested.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> WriteError {
    // InfluxDB puts the reason in a header and a JSON body; VictoriaMetrics
    // in plain text.
    let detail = headers
        .get("x-influxdb-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| body.trim().chars().take(500).collect());
    let reason = format!("HTTP {status}: {detail}");
    match status.as_u16() {
        400 | 422 => WriteError::Rejected { reason },
        413 => WriteError::TooLarge { reason },
        401 | 403 => WriteError::Misconfigured {
            reason: format!("{reason} (check the sink's credentials)"),
        },
        404 => WriteError::Misconfigured {
            reason: format!("{reason} (check the sink's URL and that the database exists)"),
        },
        _ => WriteError::Retry {
            reason,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
    }
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
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn classify_simple(code: u16, body: &str) -> WriteError {
        classify(StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), body)
    }

    #[test]
    fn each_status_maps_to_an_action() {
        assert!(matches!(
            classify_simple(400, "bad"),
            WriteError::Rejected { .. }
        ));
        assert!(matches!(
            classify_simple(422, "bad"),
            WriteError::Rejected { .. }
        ));
        assert!(matches!(
            classify_simple(413, "big"),
            WriteError::TooLarge { .. }
        ));
        assert!(matches!(
            classify_simple(401, ""),
            WriteError::Misconfigured { .. }
        ));
        assert!(matches!(
            classify_simple(403, ""),
            WriteError::Misconfigured { .. }
        ));
        assert!(matches!(
            classify_simple(404, ""),
            WriteError::Misconfigured { .. }
        ));
        assert!(matches!(classify_simple(429, ""), WriteError::Retry { .. }));
        assert!(matches!(classify_simple(500, ""), WriteError::Retry { .. }));
        assert!(matches!(classify_simple(503, ""), WriteError::Retry { .. }));
    }

    #[test]
    fn honours_retry_after_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, "");
        assert_eq!(
            e,
            WriteError::Retry {
                reason: "HTTP 429 Too Many Requests: ".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn takes_influxdbs_reason_from_its_json_body() {
        let e = classify_simple(400, r#"{"error":"partial write: field type conflict"}"#);
        assert!(
            e.to_string().contains("partial write: field type conflict"),
            "{e}"
        );
        let e = classify_simple(404, r#"{"error":"database not found: \"buoy\""}"#);
        assert!(e.to_string().contains("database exists"), "{e}");
    }
}
