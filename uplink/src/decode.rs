//! # Decoding Kafka records into readings
//!
//! Pure: a record's bytes and headers in, readings (or the reason it can
//! never be written) out.
//!
//! The format comes from the `content-type` header when the record has one
//! (Buoy's agent always sets it), else from the payload: a leading `{` is
//! JSON, anything else line protocol. JSON is a Telegraf metric, a Telegraf
//! batch, or a plain object of fields (whose measurement is the topic name and
//! whose time is the Kafka record's timestamp).
//!
//! Timestamps: line protocol without a timestamp gets the record's timestamp.
//! JSON from Buoy is in nanoseconds; other JSON uses `kafka.json_timestamp_unit`.

use telemetry::Reading;
use telemetry::line_protocol::{self, LineProtocolError};
use telemetry::record::Format;
use telemetry::telegraf_json::{self, JsonError, JsonPayload, TimestampUnit};

/// What the decoder needs from a record.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub payload: Option<&'a [u8]>,
    /// The `content-type` header, if present.
    pub content_type: Option<&'a str>,
    /// The record's own timestamp, in milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// Decoding settings from the config.
#[derive(Debug, Clone, Copy)]
pub struct DecodeSettings {
    pub json_timestamp_unit: TimestampUnit,
    pub max_record_size: usize,
}

/// Why a record can never be written. It goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record has no value")]
    Empty,
    #[error("the record is {size} bytes, more than kafka.max_record_size ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("the record is not UTF-8 (invalid byte at position {0})")]
    NotUtf8(usize),
    #[error(transparent)]
    LineProtocol(#[from] LineProtocolError),
    #[error("{0}")]
    Json(#[from] JsonError),
    #[error("the record has no timestamp of its own and its data has none either")]
    NoTimestamp,
}

/// Decodes one record into readings. A record of only comments decodes to
/// none, which is not an error.
pub fn decode(
    record: &RecordView<'_>,
    settings: &DecodeSettings,
) -> Result<Vec<Reading>, DecodeError> {
    let payload = record
        .payload
        .filter(|p| !p.is_empty())
        .ok_or(DecodeError::Empty)?;
    if payload.len() > settings.max_record_size {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
            max: settings.max_record_size,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError::NotUtf8(e.valid_up_to()))?;
    let declared = record.content_type.and_then(Format::from_content_type);
    let format = declared.unwrap_or_else(|| {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Influx
        }
    });
    let record_time_ns = record.timestamp_ms.map(|ms| ms.saturating_mul(1_000_000));
    match format {
        Format::Influx => {
            // A line without its own timestamp takes the record's; a line
            // that has one never sees this default.
            let default = record_time_ns.unwrap_or(i64::MIN);
            let readings =
                line_protocol::parse_lines(text, default).collect::<Result<Vec<_>, _>>()?;
            if readings.iter().any(|r| r.timestamp_ns == i64::MIN) {
                return Err(DecodeError::NoTimestamp);
            }
            Ok(readings)
        }
        Format::Json => decode_json(record, text, declared, record_time_ns, settings),
    }
}

/// A JSON record: Telegraf metrics, or a plain object of fields named
/// after the topic.
fn decode_json(
    record: &RecordView<'_>,
    text: &str,
    declared: Option<Format>,
    record_time_ns: Option<i64>,
    settings: &DecodeSettings,
) -> Result<Vec<Reading>, DecodeError> {
    // Buoy's own JSON says so in its header and is in nanoseconds.
    let unit = if declared == Some(Format::Json) {
        TimestampUnit::Nanoseconds
    } else {
        settings.json_timestamp_unit
    };
    let default = record_time_ns.unwrap_or(i64::MIN);
    match telegraf_json::decode(text, unit, default)? {
        JsonPayload::Metrics(readings) => {
            if readings.iter().any(|r| r.timestamp_ns == i64::MIN) {
                return Err(DecodeError::NoTimestamp);
            }
            Ok(readings)
        }
        JsonPayload::Fields(fields) => {
            let time = record_time_ns.ok_or(DecodeError::NoTimestamp)?;
            let mut reading = Reading::new(record.topic, time);
            reading.fields = fields;
            reading.validate().map_err(JsonError::from)?;
            Ok(vec![reading])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry::FieldValue;

    const SETTINGS: DecodeSettings = DecodeSettings {
        json_timestamp_unit: TimestampUnit::Auto,
        max_record_size: 1024,
    };

    fn view<'a>(payload: &'a [u8], content_type: Option<&'a str>) -> RecordView<'a> {
        RecordView {
            topic: "oceanic",
            payload: Some(payload),
            content_type,
            timestamp_ms: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn decodes_buoys_line_protocol() {
        let line = b"weather,device_id=pi-1 pressure_hpa=1013.2 1700000000000000001";
        let r = decode(&view(line, Some("text/plain; format=influx")), &SETTINGS).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].timestamp_ns, 1_700_000_000_000_000_001);
    }

    #[test]
    fn decodes_buoys_json_in_nanoseconds() {
        let json = br#"{"fields":{"a":1.5},"name":"m","tags":{},"timestamp":1700000000000000001}"#;
        let r = decode(&view(json, Some("application/json")), &SETTINGS).unwrap();
        assert_eq!(r[0].timestamp_ns, 1_700_000_000_000_000_001);
    }

    #[test]
    fn detects_headerless_telegraf_json_in_seconds() {
        let json = br#"{"fields":{"a":1.5},"name":"m","tags":{"host":"h"},"timestamp":1700000000}"#;
        let r = decode(&view(json, None), &SETTINGS).unwrap();
        assert_eq!(r[0].timestamp_ns, 1_700_000_000_000_000_000);
    }

    #[test]
    fn plain_json_fields_take_the_topic_and_record_time() {
        let json = br#"{"pressure": 3.2, "temperature": 22.5, "visibility": 80.1}"#;
        let r = decode(&view(json, None), &SETTINGS).unwrap();
        assert_eq!(r[0].measurement, "oceanic");
        assert_eq!(r[0].timestamp_ns, 1_700_000_000_000_000_000);
        assert_eq!(r[0].fields["visibility"], FieldValue::Float(80.1));
    }

    #[test]
    fn line_protocol_without_timestamp_takes_the_record_time() {
        let r = decode(&view(b"m v=1\nm v=2 5", None), &SETTINGS).unwrap();
        assert_eq!(r[0].timestamp_ns, 1_700_000_000_000_000_000);
        assert_eq!(r[1].timestamp_ns, 5);
    }

    #[test]
    fn malformed_records_say_why() {
        let bad: &[(&[u8], &str)] = &[
            (b"", "no value"),
            (&[0x66, 0xff, 0x20], "not UTF-8"),
            (b"weather pressure=", "has no value"),
            (b"{\"a\":", "invalid JSON"),
            (&[b'x'; 2000], "more than kafka.max_record_size"),
        ];
        for (payload, expected) in bad {
            let err = decode(&view(payload, None), &SETTINGS)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn a_record_without_any_timestamp_is_refused() {
        let mut v = view(b"m v=1", None);
        v.timestamp_ms = None;
        assert_eq!(decode(&v, &SETTINGS), Err(DecodeError::NoTimestamp));
    }
}
