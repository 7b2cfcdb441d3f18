//! Readings as databases hold them, so tests can compare exactly.

use std::collections::BTreeMap;

use telemetry::{FieldValue, Reading};

use crate::victoria::Series;

/// What identifies a point: measurement, tags, timestamp (in the database's
/// unit: milliseconds for VictoriaMetrics, nanoseconds for InfluxDB).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PointKey {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub timestamp: i64,
}

/// A point's numeric fields.
pub type Point = BTreeMap<String, f64>;

/// The key and numeric fields of a reading, with its timestamp divided by
/// `per_unit` nanoseconds.
pub fn from_reading(r: &Reading, per_unit: i64) -> (PointKey, Point) {
    let key = PointKey {
        measurement: r.measurement.clone(),
        tags: r.tags.clone(),
        timestamp: r.timestamp_ns.div_euclid(per_unit),
    };
    let fields = r
        .fields
        .iter()
        .filter_map(|(k, v)| match v {
            FieldValue::String(_) => None,
            FieldValue::Bool(b) => Some((k.clone(), f64::from(u8::from(*b)))),
            v => v.as_f64().map(|f| (k.clone(), f)),
        })
        .collect();
    (key, fields)
}

/// VictoriaMetrics stores `<measurement>_<field>` series. Buoy's measurement
/// names contain no underscore, so the first one separates the two.
pub fn from_victoria(series: &[Series]) -> BTreeMap<PointKey, Point> {
    let mut out: BTreeMap<PointKey, Point> = BTreeMap::new();
    for s in series {
        let name = &s.labels["__name__"];
        let (measurement, field) = name.split_once('_').unwrap_or((name, "value"));
        let tags: BTreeMap<String, String> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (ts, v) in s.timestamps_ms.iter().zip(&s.values) {
            let key = PointKey {
                measurement: measurement.to_owned(),
                tags: tags.clone(),
                timestamp: *ts,
            };
            let point = out.entry(key).or_default();
            assert!(
                point.insert(field.to_owned(), *v).is_none(),
                "VictoriaMetrics holds two samples of {name} {:?} at {ts}",
                s.labels
            );
        }
    }
    out
}

/// Compares every expected point with what the database holds: same keys,
/// same fields, values equal to `relative` precision. Returns a description
/// of the first few differences.
pub fn differences(
    expected: &BTreeMap<PointKey, Point>,
    actual: &BTreeMap<PointKey, Point>,
    relative: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, fields) in expected {
        match actual.get(key) {
            None => out.push(format!("missing {key:?}")),
            Some(got) => {
                if got.keys().ne(fields.keys()) {
                    out.push(format!(
                        "{key:?}: fields {:?} != {:?}",
                        got.keys(),
                        fields.keys()
                    ));
                }
                for (name, want) in fields {
                    if let Some(have) = got.get(name) {
                        let tolerance = relative * want.abs().max(1e-300);
                        if (have - want).abs() > tolerance {
                            out.push(format!("{key:?} {name}: {have} != {want}"));
                        }
                    }
                }
            }
        }
        if out.len() >= 10 {
            return out;
        }
    }
    for key in actual.keys() {
        if !expected.contains_key(key) {
            out.push(format!("unexpected {key:?}"));
            if out.len() >= 10 {
                break;
            }
        }
    }
    out
}
