//! librdkafka's log lines, said the same way by the agent and the uplink.
//!
//! librdkafka logs through its client context. Both binaries pass those
//! lines to [`log`]: warnings and worse are logged as warnings, at most once
//! a minute per facility with a count of those held back; the rest, and
//! connection failures (facilities `FAIL` and `ERROR`, which also arrive
//! through the context's `error` callback that says what they mean for the
//! data), go to debug under the target `librdkafka`.

use rdkafka::config::RDKafkaLogLevel;

use crate::throttle::Throttles;

/// Whether a line at `level` is worth an operator's attention.
pub fn is_serious(level: RDKafkaLogLevel) -> bool {
    matches!(
        level,
        RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
    )
}

/// Whether a line is logged as a warning (rather than at debug), throttled
/// per facility.
pub fn is_warning(level: RDKafkaLogLevel, facility: &str) -> bool {
    is_serious(level) && !matches!(facility, "FAIL" | "ERROR")
}

/// Logs one of librdkafka's lines (the body of `ClientContext::log`).
pub fn log(throttles: &Throttles, level: RDKafkaLogLevel, facility: &str, message: &str) {
    if !is_warning(level, facility) {
        tracing::debug!(target: "librdkafka", facility, "{message}");
    } else if let Some(held_back) = throttles.allow(facility) {
        tracing::warn!(target: "librdkafka", facility, similar_not_logged = held_back, "{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_worse_are_warnings_except_connection_failures() {
        assert!(is_warning(RDKafkaLogLevel::Warning, "METADATA"));
        assert!(is_warning(RDKafkaLogLevel::Error, "SSL"));
        assert!(!is_warning(RDKafkaLogLevel::Notice, "METADATA"));
        assert!(!is_warning(RDKafkaLogLevel::Debug, "SSL"));
        // Said once, with their meaning, by the `error` callback.
        assert!(!is_warning(RDKafkaLogLevel::Error, "FAIL"));
        assert!(!is_warning(RDKafkaLogLevel::Warning, "ERROR"));
    }
}
