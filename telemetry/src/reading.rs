//! The reading: one timestamped set of field values from one source.
//!
//! A reading is what every stage of Buoy passes along: a sensor's values become
//! a reading in the sampler, the journal stores it, Kafka carries it and the
//! uplink writes it as a point to the time-series database.
//!
//! Tags and fields are kept in `BTreeMap`s, so they are always in byte order of
//! their keys. Line protocol wants tags sorted that way, and it makes encodings
//! deterministic.

use std::collections::BTreeMap;

/// The value of one field.
///
/// Physical quantities are always [`FieldValue::Float`], so a time-series
/// database never sees an int/float conflict on the same field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    /// Line protocol's unsigned integer (`12u`); kept so that records from other
    /// producers round-trip without loss.
    UInt(u64),
    Bool(bool),
    String(String),
}

impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}
impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::UInt(v)
    }
}
impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::String(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::String(v)
    }
}

impl FieldValue {
    /// The value as `f64` if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Float(v) => Some(v),
            FieldValue::Int(v) => Some(v as f64),
            FieldValue::UInt(v) => Some(v as f64),
            FieldValue::Bool(_) | FieldValue::String(_) => None,
        }
    }
}

/// One reading: measurement, tags, fields and a timestamp in nanoseconds since
/// the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub fields: BTreeMap<String, FieldValue>,
    pub timestamp_ns: i64,
}

/// Why a reading cannot be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidReading {
    #[error("{what} {name:?} is not allowed: {problem}")]
    BadName {
        what: &'static str,
        name: String,
        problem: &'static str,
    },
    #[error("reading of {measurement:?} has no fields; at least one is needed")]
    NoFields { measurement: String },
    #[error("field {key:?} is {value}, which line protocol and JSON cannot carry")]
    NonFinite { key: String, value: f64 },
}

impl Reading {
    /// A reading with no tags and no fields yet.
    pub fn new(measurement: impl Into<String>, timestamp_ns: i64) -> Self {
        Reading {
            measurement: measurement.into(),
            tags: BTreeMap::new(),
            fields: BTreeMap::new(),
            timestamp_ns,
        }
    }

    /// Adds or replaces a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Adds or replaces a field.
    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The value of a tag, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// Checks that the reading can be written in line protocol and JSON, so
    /// that every encoder can rely on it. The rules are those of InfluxData's
    /// reference encoder: names and keys are non-empty, printable, and do not
    /// end in a backslash (which could not be told apart from an escape).
    pub fn validate(&self) -> Result<(), InvalidReading> {
        check_name("measurement", &self.measurement)?;
        if self.measurement.starts_with('#') {
            return Err(InvalidReading::BadName {
                what: "measurement",
                name: self.measurement.clone(),
                problem: "a leading '#' makes the line a comment",
            });
        }
        for (key, value) in &self.tags {
            check_name("tag key", key)?;
            check_name("tag value", value)?;
        }
        if self.fields.is_empty() {
            return Err(InvalidReading::NoFields {
                measurement: self.measurement.clone(),
            });
        }
        for (key, value) in &self.fields {
            check_name("field key", key)?;
            if let FieldValue::Float(v) = value
                && !v.is_finite()
            {
                return Err(InvalidReading::NonFinite {
                    key: key.clone(),
                    value: *v,
                });
            }
        }
        Ok(())
    }
}

/// Checks a measurement name, tag key, tag value or field key: non-empty,
/// printable, and not ending in a backslash.
pub fn check_name(what: &'static str, name: &str) -> Result<(), InvalidReading> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.bytes().any(is_non_printable) {
        Some("it contains a control character")
    } else if name.ends_with('\\') {
        Some("it ends with a backslash")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(InvalidReading::BadName {
            what,
            name: name.to_owned(),
            problem,
        }),
    }
}

/// Control characters, which line protocol does not allow in names or keys.
pub fn is_non_printable(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_needs_fields() {
        let r = Reading::new("weather", 1);
        assert!(matches!(r.validate(), Err(InvalidReading::NoFields { .. })));
    }

    #[test]
    fn names_ending_in_backslash_are_rejected() {
        let r = Reading::new("weather", 1)
            .with_tag("site", "a\\")
            .with_field("x", 1.0);
        let err = r.validate().unwrap_err();
        assert!(err.to_string().contains("ends with a backslash"), "{err}");
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        let r = Reading::new("weather", 1).with_field("x", f64::NAN);
        assert!(matches!(
            r.validate(),
            Err(InvalidReading::NonFinite { .. })
        ));
    }

    #[test]
    fn control_characters_are_rejected_in_keys() {
        let r = Reading::new("weather", 1).with_field("a\nb", 1.0);
        assert!(r.validate().is_err());
    }
}
