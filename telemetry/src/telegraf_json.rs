//! Telegraf's JSON metric format, and plain JSON objects of fields.
//!
//! A Telegraf metric is
//! `{"fields":{"pressure_hpa":1013.2},"name":"weather","tags":{"device_id":"pi-1"},"timestamp":1700000000}`.
//! Telegraf's batch form wraps several in `{"metrics":[...]}`; both decode.
//!
//! The timestamp carries no unit. Telegraf writes seconds unless configured
//! otherwise, so the caller says which unit to assume ([`TimestampUnit`]), and
//! [`TimestampUnit::Auto`] infers it from the magnitude: for every date after
//! 2001 the four units give non-overlapping ranges. Buoy's own encoder writes
//! nanoseconds.
//!
//! Numbers keep the type their syntax shows: `2` is an integer, `2.0` a float.
//! Buoy's encoder always writes floats with a fraction or exponent, so its own
//! readings round-trip exactly, with one exception JSON imposes: it has no
//! unsigned type, so an unsigned integer that fits `i64` comes back as `Int`.
//!
//! Anything else that is a JSON object of scalars (`{"pressure": 3.2}`) decodes
//! as [`JsonPayload::Fields`]: the caller supplies measurement, tags and time.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::reading::{FieldValue, InvalidReading, Reading};

/// The unit of a JSON timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Inferred from the magnitude (s, ms, µs or ns).
    #[default]
    Auto,
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Milliseconds,
    #[serde(rename = "us")]
    Microseconds,
    #[serde(rename = "ns")]
    Nanoseconds,
}

impl TimestampUnit {
    fn nanos_per_unit(self, magnitude: f64) -> i64 {
        let unit = match self {
            TimestampUnit::Auto if magnitude < 1e11 => TimestampUnit::Seconds,
            TimestampUnit::Auto if magnitude < 1e14 => TimestampUnit::Milliseconds,
            TimestampUnit::Auto if magnitude < 1e17 => TimestampUnit::Microseconds,
            TimestampUnit::Auto => TimestampUnit::Nanoseconds,
            unit => unit,
        };
        match unit {
            TimestampUnit::Seconds => 1_000_000_000,
            TimestampUnit::Milliseconds => 1_000_000,
            TimestampUnit::Microseconds => 1_000,
            TimestampUnit::Nanoseconds | TimestampUnit::Auto => 1,
        }
    }

    /// Converts a JSON timestamp in this unit to nanoseconds since the epoch.
    pub fn to_nanos(self, ts: &Number) -> Option<i64> {
        if let Some(v) = ts.as_i64() {
            return v.checked_mul(self.nanos_per_unit(v.unsigned_abs() as f64));
        }
        if let Some(v) = ts.as_u64() {
            let factor = self.nanos_per_unit(v as f64);
            return i64::try_from(v).ok()?.checked_mul(factor);
        }
        let v = ts.as_f64()?;
        let ns = (v * self.nanos_per_unit(v.abs()) as f64).round();
        (ns.is_finite() && ns.abs() < i64::MAX as f64).then_some(ns as i64)
    }
}

/// Why a JSON record could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Shape(String),
    #[error(transparent)]
    Invalid(#[from] InvalidReading),
}

/// What a JSON record held.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonPayload {
    /// One or more Telegraf metrics.
    Metrics(Vec<Reading>),
    /// A plain object of fields; the caller supplies the rest.
    Fields(BTreeMap<String, FieldValue>),
}

#[derive(Serialize)]
struct MetricOut<'a> {
    fields: &'a BTreeMap<String, FieldValue>,
    name: &'a str,
    tags: &'a BTreeMap<String, String>,
    timestamp: i64,
}

impl Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Float(v) => s.serialize_f64(*v),
            FieldValue::Int(v) => s.serialize_i64(*v),
            FieldValue::UInt(v) => s.serialize_u64(*v),
            FieldValue::Bool(v) => s.serialize_bool(*v),
            FieldValue::String(v) => s.serialize_str(v),
        }
    }
}

/// Encodes a reading as one Telegraf JSON metric with a nanosecond timestamp.
pub fn encode(reading: &Reading) -> Result<String, InvalidReading> {
    reading.validate()?;
    let out = MetricOut {
        fields: &reading.fields,
        name: &reading.measurement,
        tags: &reading.tags,
        timestamp: reading.timestamp_ns,
    };
    Ok(serde_json::to_string(&out).expect("a validated reading serialises"))
}

/// Decodes a JSON record: a Telegraf metric, a `{"metrics":[...]}` batch, or a
/// plain object of fields. A metric without a timestamp gets
/// `default_timestamp_ns`.
pub fn decode(
    text: &str,
    unit: TimestampUnit,
    default_timestamp_ns: i64,
) -> Result<JsonPayload, JsonError> {
    let value: Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(JsonError::Shape("expected a JSON object".into()));
    };
    if let Some(metrics) = object.get("metrics") {
        let Value::Array(items) = metrics else {
            return Err(JsonError::Shape("\"metrics\" must be an array".into()));
        };
        let readings = items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(m) => metric(m, unit, default_timestamp_ns),
                _ => Err(JsonError::Shape(format!("metrics[{i}] is not an object"))),
            })
            .collect::<Result<_, _>>()?;
        return Ok(JsonPayload::Metrics(readings));
    }
    if object.contains_key("name") && object.contains_key("fields") {
        return Ok(JsonPayload::Metrics(vec![metric(
            &object,
            unit,
            default_timestamp_ns,
        )?]));
    }
    let fields = object
        .iter()
        .map(|(k, v)| Ok((k.clone(), field_value(k, v)?)))
        .collect::<Result<BTreeMap<_, _>, JsonError>>()?;
    if fields.is_empty() {
        return Err(JsonError::Shape("the object has no fields".into()));
    }
    Ok(JsonPayload::Fields(fields))
}

fn metric(
    m: &Map<String, Value>,
    unit: TimestampUnit,
    default_timestamp_ns: i64,
) -> Result<Reading, JsonError> {
    let Some(Value::String(name)) = m.get("name") else {
        return Err(JsonError::Shape("metric has no string \"name\"".into()));
    };
    let Some(Value::Object(fields)) = m.get("fields") else {
        return Err(JsonError::Shape(format!(
            "metric {name:?} has no \"fields\" object"
        )));
    };
    let timestamp_ns = match m.get("timestamp") {
        None | Some(Value::Null) => default_timestamp_ns,
        Some(Value::Number(n)) => unit.to_nanos(n).ok_or_else(|| {
            JsonError::Shape(format!("metric {name:?}: timestamp {n} is out of range"))
        })?,
        Some(other) => {
            return Err(JsonError::Shape(format!(
                "metric {name:?}: timestamp must be a number, got {other}"
            )));
        }
    };
    let mut reading = Reading::new(name.clone(), timestamp_ns);
    if let Some(tags) = m.get("tags") {
        let Value::Object(tags) = tags else {
            return Err(JsonError::Shape(format!(
                "metric {name:?}: \"tags\" must be an object"
            )));
        };
        for (key, value) in tags {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(JsonError::Shape(format!(
                        "metric {name:?}: tag {key:?} must be a string"
                    )));
                }
            };
            // Line protocol cannot carry an empty tag value; InfluxDB treats
            // it as absent, and so does Buoy.
            if !value.is_empty() {
                reading.tags.insert(key.clone(), value);
            }
        }
    }
    for (key, value) in fields {
        reading.fields.insert(key.clone(), field_value(key, value)?);
    }
    reading.validate()?;
    Ok(reading)
}

fn field_value(key: &str, value: &Value) -> Result<FieldValue, JsonError> {
    Ok(match value {
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::String(s) => FieldValue::String(s.clone()),
        Value::Number(n) => {
            if let Some(v) = n.as_i64() {
                FieldValue::Int(v)
            } else if let Some(v) = n.as_u64() {
                FieldValue::UInt(v)
            } else {
                FieldValue::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => {
            return Err(JsonError::Shape(format!(
                "field {key:?} must be a number, boolean or string"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_telegrafs_shape_with_nanoseconds() {
        let r = Reading::new("weather", 1_700_000_000_123_456_789)
            .with_tag("device_id", "pi-1")
            .with_field("pressure_hpa", 1013.0)
            .with_field("count", 3i64);
        assert_eq!(
            encode(&r).unwrap(),
            r#"{"fields":{"count":3,"pressure_hpa":1013.0},"name":"weather","tags":{"device_id":"pi-1"},"timestamp":1700000000123456789}"#
        );
    }

    #[test]
    fn decodes_a_telegraf_metric_in_seconds() {
        let text = r#"{"fields":{"field_1":30,"load":0.5},"name":"docker","tags":{"host":"raynor"},"timestamp":1458229140}"#;
        let JsonPayload::Metrics(m) = decode(text, TimestampUnit::Auto, 0).unwrap() else {
            panic!("expected metrics")
        };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].measurement, "docker");
        assert_eq!(m[0].tag("host"), Some("raynor"));
        assert_eq!(m[0].timestamp_ns, 1_458_229_140_000_000_000);
        assert_eq!(m[0].fields["field_1"], FieldValue::Int(30));
        assert_eq!(m[0].fields["load"], FieldValue::Float(0.5));
    }

    #[test]
    fn infers_each_timestamp_unit_from_magnitude() {
        let expected = 1_700_000_000_000_000_000i64;
        for ts in [
            "1700000000",
            "1700000000000",
            "1700000000000000",
            "1700000000000000000",
        ] {
            let n: Number = serde_json::from_str(ts).unwrap();
            assert_eq!(TimestampUnit::Auto.to_nanos(&n), Some(expected), "{ts}");
        }
        let n: Number = serde_json::from_str("1700000000.5").unwrap();
        assert_eq!(
            TimestampUnit::Auto.to_nanos(&n),
            Some(expected + 500_000_000)
        );
    }

    #[test]
    fn an_explicit_unit_is_not_guessed() {
        let n: Number = serde_json::from_str("1700000000").unwrap();
        assert_eq!(
            TimestampUnit::Milliseconds.to_nanos(&n),
            Some(1_700_000_000_000_000)
        );
        let huge: Number = serde_json::from_str("1700000000000000000").unwrap();
        assert_eq!(TimestampUnit::Seconds.to_nanos(&huge), None);
    }

    #[test]
    fn decodes_a_batch() {
        let text = r#"{"metrics":[{"fields":{"a":1.0},"name":"m","timestamp":1},{"fields":{"b":true},"name":"n","tags":{},"timestamp":2}]}"#;
        let JsonPayload::Metrics(m) = decode(text, TimestampUnit::Nanoseconds, 0).unwrap() else {
            panic!("expected metrics")
        };
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].fields["b"], FieldValue::Bool(true));
    }

    #[test]
    fn decodes_a_plain_object_of_fields() {
        let text = r#"{"pressure": 3.2, "temperature": 22.5, "visibility": 80.1}"#;
        let JsonPayload::Fields(f) = decode(text, TimestampUnit::Auto, 0).unwrap() else {
            panic!("expected fields")
        };
        assert_eq!(f.len(), 3);
        assert_eq!(f["visibility"], FieldValue::Float(80.1));
    }

    #[test]
    fn rejects_bad_json_with_a_clear_error() {
        let cases = [
            ("{", "invalid JSON"),
            ("[1]", "expected a JSON object"),
            ("{}", "no fields"),
            (r#"{"a":[1]}"#, "field \"a\" must be a number"),
            (r#"{"name":"m","fields":{}}"#, "no fields"),
            (
                r#"{"name":"m","fields":{"a":1},"timestamp":"x"}"#,
                "timestamp must be a number",
            ),
            (
                r#"{"name":"m","fields":{"a":1},"tags":{"t":[]}}"#,
                "tag \"t\" must be a string",
            ),
            (r#"{"metrics":{}}"#, "must be an array"),
            (r#"{"name":"","fields":{"a":1}}"#, "measurement"),
        ];
        for (text, expected) in cases {
            let err = decode(text, TimestampUnit::Auto, 0)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{text}: got {err:?}, want {expected:?}"
            );
        }
    }
}
