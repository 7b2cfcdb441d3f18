//! Property tests: whatever a Buoy encoder writes, the matching parser reads
//! back unchanged, including every character line protocol has to escape.

use proptest::prelude::*;
use telemetry::telegraf_json::{self, JsonPayload, TimestampUnit};
use telemetry::{FieldValue, Reading, line_protocol};

/// Names and keys that stress escaping: spaces, commas, equals signs, quotes,
/// backslashes (not trailing), `#`, and non-ASCII text.
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,=\"'\\\\#_.:/é漢-]{0,11}[a-zA-Z0-9 ,=\"'#_.é漢-]"
}

fn measurement() -> impl Strategy<Value = String> {
    name().prop_filter("a leading # makes a comment", |m| !m.starts_with('#'))
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Int),
        any::<u64>().prop_map(FieldValue::UInt),
        any::<bool>().prop_map(FieldValue::Bool),
        "(?s).{0,20}".prop_map(FieldValue::String),
    ]
}

prop_compose! {
    fn reading()(
        measurement in measurement(),
        tags in proptest::collection::btree_map(name(), name(), 0..4),
        fields in proptest::collection::btree_map(name(), field_value(), 1..5),
        timestamp_ns in any::<i64>(),
    ) -> Reading {
        Reading { measurement, tags, fields, timestamp_ns }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn line_protocol_round_trips(r in reading()) {
        let line = line_protocol::encode(&r).unwrap();
        prop_assert!(!line.contains('\n'), "one reading is one line: {line:?}");
        let back = line_protocol::parse_line(&line, 0).unwrap();
        prop_assert_eq!(back, r);
    }

    /// A line Buoy wrote is taken as it is: its view is the whole line, in
    /// the compact shape, with the series, field set and timestamp where
    /// the encoder put them, and it reads back as the same reading.
    #[test]
    fn a_scanned_line_is_the_encoded_line(r in reading()) {
        let mut line = String::new();
        let parts = line_protocol::encode_parts_into(&r, &mut line).unwrap();
        let view = line_protocol::scan_lines(&line).next().unwrap().unwrap();
        prop_assert_eq!(view.text(), line.as_str());
        prop_assert!(view.is_compact());
        prop_assert_eq!(view.series(), &line[..parts.series_end]);
        prop_assert_eq!(view.field_set(), &line[parts.series_end + 1..parts.timestamp_at - 1]);
        prop_assert_eq!(view.timestamp(), Some(r.timestamp_ns));
        let integers = r.fields.values().any(|v| matches!(v, FieldValue::Int(_) | FieldValue::UInt(_)));
        prop_assert_eq!(view.has_integers(), integers);
        prop_assert_eq!(view.to_reading(0), r);
    }

    #[test]
    fn json_round_trips(r in reading()) {
        let text = telegraf_json::encode(&r).unwrap();
        let back = telegraf_json::decode(&text, TimestampUnit::Nanoseconds, 0).unwrap();
        // JSON has no unsigned type: an unsigned value that fits i64 comes
        // back signed. Every other value must come back exactly.
        let mut expected = r;
        for v in expected.fields.values_mut() {
            if let FieldValue::UInt(u) = *v && let Ok(i) = i64::try_from(u) {
                *v = FieldValue::Int(i);
            }
        }
        prop_assert_eq!(back, JsonPayload::Metrics(vec![expected]));
    }

    #[test]
    fn many_lines_parse_back_in_order(rs in proptest::collection::vec(reading(), 1..20)) {
        let text: Vec<String> = rs.iter().map(|r| line_protocol::encode(r).unwrap()).collect();
        let back: Vec<Reading> = line_protocol::parse_lines(&text.join("\n"), 0)
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, rs);
    }

    /// The parser never panics, whatever it is given, and every error names a
    /// position inside the input.
    #[test]
    fn parser_survives_arbitrary_input(text in "(?s).{0,200}") {
        for result in line_protocol::parse_lines(&text, 0) {
            if let Err(e) = result {
                prop_assert!(e.line >= 1 && e.column >= 1);
                prop_assert!(e.line <= text.lines().count().max(1) + 1);
            }
        }
    }

    /// Mutating one byte of a valid line never panics the parser, and
    /// whatever still parses is a valid reading (the uplink passes such a
    /// line on as written) that encodes and parses back to itself.
    #[test]
    fn parser_survives_mutated_lines(r in reading(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = line_protocol::encode(&r).unwrap().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes)
            && let Ok(parsed) = line_protocol::parse_line(&text, 0)
        {
            let again = line_protocol::encode(&parsed);
            prop_assert!(again.is_ok(), "{:?} parses but is invalid: {:?}", text, again);
            prop_assert_eq!(line_protocol::parse_line(&again.unwrap(), 0).unwrap(), parsed);
        }
    }
}
