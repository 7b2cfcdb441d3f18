//! # Decoding Kafka records into lines
//!
//! Pure: a record's bytes and headers in, lines appended to the open
//! batch's [`Lines`] (or the reason it can never be written) out.
//!
//! The format comes from the `content-type` header when the record has one
//! (Buoy's agent always sets it), else from the payload: a leading `{` is
//! JSON, anything else line protocol. JSON is a Telegraf metric, a Telegraf
//! batch, or a plain object of fields (whose measurement is the topic name and
//! whose time is the Kafka record's timestamp).
//!
//! Line protocol is parsed once, into borrowed views. A line that is already
//! in the shape the databases get (series, fields and timestamp one space
//! apart, and no integer to pin) is copied as it is; otherwise it is put
//! together from its parts, with the record's timestamp if it has none and
//! integers pinned to float ([`IntegerFields`]). JSON becomes readings, which
//! are encoded straight into the buffer.
//!
//! Timestamps: line protocol without a timestamp gets the record's timestamp.
//! JSON from Buoy is in nanoseconds; other JSON uses `kafka.json_timestamp_unit`.

use telemetry::line_protocol::{self, LineProtocolError, LineView};
use telemetry::record::Format;
use telemetry::telegraf_json::{self, JsonError, JsonPayload, TimestampUnit};
use telemetry::{FieldValue, InvalidReading, Reading};

use crate::config::IntegerFields;
use crate::record::Lines;

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
    pub integers: IntegerFields,
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
    #[error(transparent)]
    Invalid(#[from] InvalidReading),
    #[error("the record has no timestamp of its own and its data has none either")]
    NoTimestamp,
}

/// Decodes one record, appending its lines to `out`. A record of only
/// comments adds none, which is not an error. On error nothing is added.
pub fn decode(
    record: &RecordView<'_>,
    settings: &DecodeSettings,
    out: &mut Lines,
) -> Result<(), DecodeError> {
    let mark = out.mark();
    let result = decode_into(record, settings, out);
    if result.is_err() {
        out.rollback(mark);
    }
    result
}

fn decode_into(
    record: &RecordView<'_>,
    settings: &DecodeSettings,
    out: &mut Lines,
) -> Result<(), DecodeError> {
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
            let pin = settings.integers == IntegerFields::Float;
            for view in line_protocol::scan_lines(text) {
                push_line(&view?, record_time_ns, pin, out)?;
            }
            Ok(())
        }
        Format::Json => {
            for mut reading in decode_json(record, text, declared, record_time_ns, settings)? {
                if settings.integers == IntegerFields::Float {
                    pin_integers(&mut reading);
                }
                out.push_reading(&reading)?;
            }
            Ok(())
        }
    }
}

/// One line of line protocol: as written if it can be, else from its parts.
fn push_line(
    view: &LineView<'_>,
    record_time_ns: Option<i64>,
    pin: bool,
    out: &mut Lines,
) -> Result<(), DecodeError> {
    let pin = pin && view.has_integers();
    if view.is_compact() && !pin {
        out.push_view(view);
        return Ok(());
    }
    let time = view
        .timestamp()
        .or(record_time_ns)
        .ok_or(DecodeError::NoTimestamp)?;
    out.push_parts(view.series(), time, |text| {
        if !pin {
            text.push_str(view.field_set());
            return;
        }
        for (i, (key, raw)) in view.fields().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(key);
            text.push('=');
            match line_protocol::view::field_value(raw) {
                FieldValue::Int(v) => {
                    line_protocol::encode_value(text, &FieldValue::Float(v as f64))
                }
                FieldValue::UInt(v) => {
                    line_protocol::encode_value(text, &FieldValue::Float(v as f64))
                }
                _ => text.push_str(raw),
            }
        }
    });
    Ok(())
}

/// Integer fields become floats.
fn pin_integers(reading: &mut Reading) {
    for value in reading.fields.values_mut() {
        match *value {
            FieldValue::Int(i) => *value = FieldValue::Float(i as f64),
            FieldValue::UInt(u) => *value = FieldValue::Float(u as f64),
            _ => {}
        }
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
    use std::sync::Arc;

    use super::*;
    use crate::record::Origin;

    const SETTINGS: DecodeSettings = DecodeSettings {
        json_timestamp_unit: TimestampUnit::Auto,
        max_record_size: 1024,
        integers: IntegerFields::Float,
    };

    fn view<'a>(payload: &'a [u8], content_type: Option<&'a str>) -> RecordView<'a> {
        RecordView {
            topic: "oceanic",
            payload: Some(payload),
            content_type,
            timestamp_ms: Some(1_700_000_000_000),
        }
    }

    /// The lines a record decodes to, as text.
    fn lines_of(
        record: &RecordView<'_>,
        settings: &DecodeSettings,
    ) -> Result<Vec<String>, DecodeError> {
        let mut lines = Lines::default();
        let mark = lines.mark();
        decode(record, settings, &mut lines)?;
        let origin = Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
        };
        lines.close_record(mark, origin);
        Ok(lines.iter().map(|l| l.text().to_owned()).collect())
    }

    #[test]
    fn buoys_line_protocol_is_taken_as_written() {
        let line = "weather,device_id=pi-1 pressure_hpa=1013.20,t=T 1700000000000000001";
        let got = lines_of(
            &view(line.as_bytes(), Some("text/plain; format=influx")),
            &SETTINGS,
        )
        .unwrap();
        assert_eq!(got, [line]);
    }

    #[test]
    fn integers_become_floats_unless_kept() {
        let record = view(b"m a=3i,b=4u,c=true,s=\"7i\" 5", None);
        assert_eq!(
            lines_of(&record, &SETTINGS).unwrap(),
            ["m a=3.0,b=4.0,c=true,s=\"7i\" 5"]
        );
        let keep = DecodeSettings {
            integers: IntegerFields::Keep,
            ..SETTINGS
        };
        assert_eq!(
            lines_of(&record, &keep).unwrap(),
            ["m a=3i,b=4u,c=true,s=\"7i\" 5"]
        );
        let json = br#"{"fields":{"a":3,"b":1.5},"name":"m","tags":{},"timestamp":5}"#;
        assert_eq!(
            lines_of(&view(json, Some("application/json")), &SETTINGS).unwrap(),
            ["m a=3.0,b=1.5 5"]
        );
    }

    #[test]
    fn extra_spaces_and_line_endings_are_normalised() {
        let got = lines_of(
            &view(b"# c\n  m,t=a  v=1   5  \r\nm v=2 6\n", None),
            &SETTINGS,
        )
        .unwrap();
        assert_eq!(got, ["m,t=a v=1 5", "m v=2 6"]);
    }

    #[test]
    fn decodes_buoys_json_in_nanoseconds() {
        let json = br#"{"fields":{"a":1.5},"name":"m","tags":{},"timestamp":1700000000000000001}"#;
        let got = lines_of(&view(json, Some("application/json")), &SETTINGS).unwrap();
        assert_eq!(got, ["m a=1.5 1700000000000000001"]);
    }

    #[test]
    fn detects_headerless_telegraf_json_in_seconds() {
        let json = br#"{"fields":{"a":1.5},"name":"m","tags":{"host":"h"},"timestamp":1700000000}"#;
        let got = lines_of(&view(json, None), &SETTINGS).unwrap();
        assert_eq!(got, ["m,host=h a=1.5 1700000000000000000"]);
    }

    #[test]
    fn plain_json_fields_take_the_topic_and_record_time() {
        let json = br#"{"pressure": 3.2, "temperature": 22.5, "visibility": 80.1}"#;
        let got = lines_of(&view(json, None), &SETTINGS).unwrap();
        assert_eq!(
            got,
            ["oceanic pressure=3.2,temperature=22.5,visibility=80.1 1700000000000000000"]
        );
    }

    #[test]
    fn line_protocol_without_timestamp_takes_the_record_time() {
        let got = lines_of(&view(b"m v=1\nm v=2 5", None), &SETTINGS).unwrap();
        assert_eq!(got, ["m v=1 1700000000000000000", "m v=2 5"]);
    }

    #[test]
    fn malformed_records_say_why_and_add_nothing() {
        let bad: &[(&[u8], &str)] = &[
            (b"", "no value"),
            (&[0x66, 0xff, 0x20], "not UTF-8"),
            (b"weather pressure=", "has no value"),
            (b"m v=1 1\nweather pressure=", "has no value"),
            (b"{\"a\":", "invalid JSON"),
            (&[b'x'; 2000], "more than kafka.max_record_size"),
        ];
        for (payload, expected) in bad {
            let mut lines = Lines::default();
            let err = decode(&view(payload, None), &SETTINGS, &mut lines)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
            assert_eq!((lines.len(), lines.bytes()), (0, 0), "{err}");
        }
    }

    #[test]
    fn a_record_without_any_timestamp_is_refused() {
        let mut v = view(b"m v=1", None);
        v.timestamp_ms = None;
        assert_eq!(lines_of(&v, &SETTINGS), Err(DecodeError::NoTimestamp));
    }
}
