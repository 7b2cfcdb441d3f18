//! Downsampling: raw readings replaced by per-series aggregates, so that a
//! journal that fills up during a long outage keeps a coarse record of the
//! oldest period instead of a hole. Pure: no I/O.
//!
//! Readings are grouped by series (measurement and tags) and by window
//! (timestamps floored to a multiple of `journal.downsample_window`). Each
//! group becomes one reading of measurement `<measurement>_agg` with the same
//! tags, stamped with the start of its window, holding for every float field
//! `<field>_min`, `<field>_max` and `<field>_mean` (floats), and `count`, the
//! number of readings it replaces (an integer). Any other field (integer
//! codes such as a present-weather code, strings, booleans) keeps its latest
//! value under its own name: the mean of two weather codes means nothing.
//! Aggregates are never aggregated again.
//!
//! Visibility (fields named `visibility*_m`) is averaged on the extinction
//! coefficient σ = 3 / V, as meteorological practice requires (the mean of
//! visibilities overstates it when fog comes and goes); the mean visibility
//! is then 3 / mean(σ), the harmonic mean.

use std::collections::BTreeMap;

use telemetry::{FieldValue, Reading};

/// The suffix of an aggregate's measurement.
pub const AGG_SUFFIX: &str = "_agg";

/// Whether a line of line protocol is an aggregate (its measurement ends in
/// `_agg`). Cheap: only looks at the measurement.
pub fn is_aggregate_line(line: &str) -> bool {
    // The measurement ends at the first unescaped comma or space.
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' | b' ' => break,
            _ => i += 1,
        }
    }
    line[..i.min(line.len())].ends_with(AGG_SUFFIX)
}

#[derive(Debug)]
struct Stats {
    min: f64,
    max: f64,
    /// The sum of the values, or of the extinction coefficients for a
    /// visibility.
    sum: f64,
    n: u64,
}

/// Whether a field is a visibility, averaged on its extinction coefficient.
fn is_visibility(field: &str) -> bool {
    field.starts_with("visibility") && field.ends_with("_m")
}

/// One series in one window.
#[derive(Debug, Default)]
struct Group {
    count: i64,
    numeric: BTreeMap<String, Stats>,
    /// Latest non-numeric values, with the timestamp they were seen at.
    other: BTreeMap<String, (i64, FieldValue)>,
}

impl Group {
    fn add(&mut self, timestamp_ns: i64, fields: BTreeMap<String, FieldValue>) {
        self.count += 1;
        for (name, value) in fields {
            match value {
                FieldValue::Float(v) => {
                    let visibility = is_visibility(&name);
                    let s = self.numeric.entry(name).or_insert(Stats {
                        min: v,
                        max: v,
                        sum: 0.0,
                        n: 0,
                    });
                    s.min = s.min.min(v);
                    s.max = s.max.max(v);
                    // A visibility of 0 m is infinite extinction: the mean
                    // visibility of the window is then 0.
                    s.sum += if visibility { 3.0 / v } else { v };
                    s.n += 1;
                }
                value => {
                    let latest = self
                        .other
                        .entry(name)
                        .or_insert((timestamp_ns, value.clone()));
                    if timestamp_ns >= latest.0 {
                        *latest = (timestamp_ns, value);
                    }
                }
            }
        }
    }

    /// The aggregate reading, stamped with the window's start.
    fn into_reading(self, start: i64, measurement: &str, tags: Vec<(String, String)>) -> Reading {
        let mut agg = Reading::new(format!("{measurement}{AGG_SUFFIX}"), start);
        agg.tags = tags.into_iter().collect();
        for (name, s) in self.numeric {
            agg.fields
                .insert(format!("{name}_min"), FieldValue::Float(s.min));
            agg.fields
                .insert(format!("{name}_max"), FieldValue::Float(s.max));
            let mean = s.sum / s.n as f64;
            let mean = if is_visibility(&name) {
                3.0 / mean
            } else {
                mean
            };
            agg.fields
                .insert(format!("{name}_mean"), FieldValue::Float(mean));
        }
        for (name, (_, v)) in self.other {
            agg.fields.insert(name, v);
        }
        agg.fields
            .insert("count".into(), FieldValue::Int(self.count));
        agg
    }
}

/// Aggregates `readings` over windows of `window_ns`. The result is ordered by
/// window, then series.
pub fn aggregate(readings: impl IntoIterator<Item = Reading>, window_ns: i64) -> Vec<Reading> {
    let window_ns = window_ns.max(1);
    type Key = (i64, String, Vec<(String, String)>);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for r in readings {
        let start = r.timestamp_ns.div_euclid(window_ns) * window_ns;
        let tags: Vec<(String, String)> = r.tags.into_iter().collect();
        groups
            .entry((start, r.measurement, tags))
            .or_default()
            .add(r.timestamp_ns, r.fields);
    }
    groups
        .into_iter()
        .map(|((start, measurement, tags), g)| g.into_reading(start, &measurement, tags))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    fn weather(sensor: &str, t: i64, p: f64) -> Reading {
        Reading::new("weather", t)
            .with_tag("device_id", "pi-1")
            .with_tag("sensor", sensor)
            .with_field("pressure_hpa", p)
    }

    #[test]
    fn one_aggregate_per_series_and_window_with_min_max_mean_count() {
        let readings = vec![
            weather("a", 10 * MIN + 1, 1000.0),
            weather("a", 10 * MIN + 2, 1004.0),
            weather("a", 10 * MIN + 3, 1002.0),
            weather("b", 10 * MIN + 1, 990.0),
            weather("a", 11 * MIN, 1010.0),
        ];
        let aggs = aggregate(readings, MIN);
        assert_eq!(aggs.len(), 3);
        let a = &aggs[0];
        assert_eq!(a.measurement, "weather_agg");
        assert_eq!(a.timestamp_ns, 10 * MIN);
        assert_eq!(a.tag("sensor"), Some("a"));
        assert_eq!(a.tag("device_id"), Some("pi-1"));
        assert_eq!(a.fields["pressure_hpa_min"], FieldValue::Float(1000.0));
        assert_eq!(a.fields["pressure_hpa_max"], FieldValue::Float(1004.0));
        assert_eq!(a.fields["pressure_hpa_mean"], FieldValue::Float(1002.0));
        assert_eq!(a.fields["count"], FieldValue::Int(3));
        assert_eq!(aggs[1].tag("sensor"), Some("b"));
        assert_eq!(aggs[1].fields["count"], FieldValue::Int(1));
        assert_eq!(aggs[2].timestamp_ns, 11 * MIN);
        for agg in &aggs {
            assert!(agg.validate().is_ok());
            assert!(is_aggregate_line(
                &telemetry::line_protocol::encode(agg).unwrap()
            ));
        }
    }

    #[test]
    fn non_numeric_fields_keep_their_latest_value() {
        let r = |t, code: &str| {
            Reading::new("visibility", t)
                .with_tag("sensor", "pwd")
                .with_field("visibility_m", 800.0)
                .with_field("wmo_code", code)
        };
        let aggs = aggregate(vec![r(3, "late"), r(1, "early")], MIN);
        assert_eq!(aggs[0].fields["wmo_code"], FieldValue::from("late"));
        assert_eq!(
            aggs[0].fields["visibility_m_mean"],
            FieldValue::Float(800.0)
        );
    }

    #[test]
    fn visibility_is_averaged_on_the_extinction_coefficient_and_codes_keep_their_latest() {
        let r = |t, v: f64, code: i64| {
            Reading::new("visibility", t)
                .with_tag("sensor", "pwd")
                .with_field("visibility_m", v)
                .with_field("visibility_10min_m", v)
                .with_field("present_weather", FieldValue::Int(code))
                .with_field("precipitation_mm_h", v / 1000.0)
        };
        // Fog patches: 200 m and 10 km. The mean extinction is that of 392 m,
        // not the 5.1 km an average of the visibilities would claim.
        let aggs = aggregate(vec![r(1, 200.0, 45), r(2, 10_000.0, 0)], MIN);
        let f = &aggs[0].fields;
        let expected = 3.0 / ((3.0 / 200.0 + 3.0 / 10_000.0) / 2.0);
        assert_eq!(f["visibility_m_mean"], FieldValue::Float(expected));
        assert!((expected - 392.157).abs() < 0.001);
        assert_eq!(f["visibility_10min_m_mean"], FieldValue::Float(expected));
        assert_eq!(f["visibility_m_min"], FieldValue::Float(200.0));
        assert_eq!(f["precipitation_mm_h_mean"], FieldValue::Float(5.1));
        assert_eq!(f["present_weather"], FieldValue::Int(0));
        assert!(!f.contains_key("present_weather_mean"));
        let zero = aggregate(vec![r(1, 0.0, 45), r(2, 500.0, 45)], MIN);
        assert_eq!(zero[0].fields["visibility_m_mean"], FieldValue::Float(0.0));
    }

    #[test]
    fn recognises_aggregates_by_measurement_only() {
        assert!(is_aggregate_line("weather_agg,sensor=a count=3i 1"));
        assert!(is_aggregate_line("weather_agg count=3i 1"));
        assert!(!is_aggregate_line("weather,sensor=x_agg v=1 1"));
        assert!(!is_aggregate_line("weather v_agg=1 1"));
        assert!(is_aggregate_line("we\\ ather_agg v=1 1"));
        assert!(!is_aggregate_line("weather_agg\\ x v=1 1"));
    }
}
