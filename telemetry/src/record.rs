//! The Kafka record contract between the edge agent and the uplink.
//!
//! | part | value |
//! |---|---|
//! | key | the device id, so each device's readings stay ordered in one partition |
//! | value | one reading, as line protocol or Telegraf JSON |
//! | headers | `buoy-seq`, `buoy-boot`, `content-type` |

/// Header holding the journal sequence number, in decimal.
pub const HEADER_SEQ: &str = "buoy-seq";
/// Header holding the boot id the reading was taken in.
pub const HEADER_BOOT: &str = "buoy-boot";
/// Header naming the value's encoding.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Kafka header: nanoseconds since boot when the reading was taken (with
/// `buoy-boot`, a timestamp independent of the wall clock).
pub const HEADER_MONO: &str = "buoy-mono";
/// Kafka header: `synced` (the wall clock was synchronised when the reading
/// was taken), `corrected` (it was not; the timestamp was recomputed from the
/// time since boot once it was) or `unsynced` (it never was in that boot; the
/// reading is tagged `clock=unsynced`).
pub const HEADER_CLOCK: &str = "buoy-clock";

use crate::config_file::Problem;

/// The encoding of a record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Influx line protocol.
    #[default]
    Influx,
    /// Telegraf's JSON metric format, timestamps in nanoseconds.
    Json,
}

impl Format {
    /// The `content-type` header value for this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Influx => "text/plain; format=influx",
            Format::Json => "application/json",
        }
    }

    /// The format a `content-type` header names, if it is one of Buoy's.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let value = value.trim();
        if value.starts_with("application/json") {
            Some(Format::Json)
        } else if value.starts_with("text/plain") {
            Some(Format::Influx)
        } else {
            None
        }
    }

    /// Encodes one reading in this format.
    pub fn encode(self, reading: &crate::Reading) -> Result<String, crate::InvalidReading> {
        match self {
            Format::Influx => crate::line_protocol::encode(reading),
            Format::Json => crate::telegraf_json::encode(reading),
        }
    }
}

/// Why a topic name or a broker address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("topic name {0:?} must be 1 to 249 characters long")]
    TopicLength(String),
    #[error("{0:?} is not a valid topic name")]
    TopicDots(String),
    #[error("topic name {0:?} contains {1:?}; use only letters, digits, '.', '_' and '-'")]
    TopicCharacter(String, char),
    #[error("broker address {0:?} must be host:port, e.g. \"localhost:9092\"")]
    Broker(String),
}

/// Checks a Kafka topic name: 1 to 249 characters from `[a-zA-Z0-9._-]`, and
/// not `.` or `..`, as the broker requires.
pub fn check_topic_name(name: &str) -> Result<(), AddressError> {
    if name.is_empty() || name.len() > 249 {
        return Err(AddressError::TopicLength(name.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(AddressError::TopicDots(name.to_owned()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(AddressError::TopicCharacter(name.to_owned(), c));
    }
    Ok(())
}

/// Problems with the bootstrap broker list at `key` (e.g. `kafka.brokers`).
pub fn broker_problems(key: &str, brokers: &[String]) -> Vec<Problem> {
    if brokers.is_empty() {
        return vec![Problem::new(
            key,
            "needs at least one broker, e.g. [\"localhost:9092\"]",
        )];
    }
    brokers
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            check_broker_address(b)
                .err()
                .map(|e| Problem::new(format!("{key}[{i}]"), e))
        })
        .collect()
}

/// Problems with librdkafka properties at `key` that Buoy sets itself for
/// correctness; `reserved` maps each such property to what to use instead.
pub fn reserved_property_problems<'a>(
    key: &str,
    properties: impl IntoIterator<Item = &'a String>,
    reserved: &[(&str, &str)],
) -> Vec<Problem> {
    properties
        .into_iter()
        .filter_map(|p| {
            reserved.iter().find(|(r, _)| r == p).map(|(_, instead)| {
                Problem::new(
                    format!("{key}.{p}"),
                    format!("is set by Buoy; use {instead}"),
                )
            })
        })
        .collect()
}

/// Checks a bootstrap broker address: `host:port`.
pub fn check_broker_address(address: &str) -> Result<(), AddressError> {
    let port_ok = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| p > 0);
    if port_ok {
        Ok(())
    } else {
        Err(AddressError::Broker(address.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(check_topic_name("telemetry.dlq-1_a").is_ok());
        assert!(check_topic_name("").is_err());
        assert!(check_topic_name("..").is_err());
        assert!(
            check_topic_name("a b")
                .unwrap_err()
                .to_string()
                .contains("' '")
        );
        assert!(check_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn broker_addresses_need_a_port() {
        assert!(check_broker_address("localhost:9092").is_ok());
        assert!(check_broker_address("[::1]:9092").is_ok());
        assert!(check_broker_address("localhost").is_err());
        assert!(check_broker_address(":9092").is_err());
        assert!(check_broker_address("h:0").is_err());
    }

    #[test]
    fn content_types_round_trip() {
        for f in [Format::Influx, Format::Json] {
            assert_eq!(Format::from_content_type(f.content_type()), Some(f));
        }
        assert_eq!(Format::from_content_type("application/octet-stream"), None);
    }
}
