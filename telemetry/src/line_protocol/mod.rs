//! Influx line protocol: encoder and parser.
//!
//! ```text
//! <measurement>[,<tag_key>=<tag_value>...] <field_key>=<field_value>[,...] [<timestamp>]
//! ```
//!
//! The rules follow InfluxData's reference implementation
//! (`github.com/influxdata/line-protocol/v2/lineprotocol`):
//!
//! | element | characters escaped with `\` |
//! |---|---|
//! | measurement | comma, space |
//! | tag key, tag value, field key | comma, equals sign, space |
//! | string field value | `"` and `\`; newline and carriage return as `\n`, `\r` |
//!
//! A backslash before any other character is a literal backslash. Field values
//! are floats (`1.5`, `-2e-3`), integers (`3i`), unsigned integers (`3u`),
//! booleans (`t`, `true`, `F`, ...) or double-quoted strings. The timestamp is
//! optional; the parser substitutes a caller-supplied default. Empty lines and
//! lines starting with `#` are skipped.

mod parser;
pub mod view;

use std::fmt::Write as _;

use crate::reading::{FieldValue, InvalidReading, Reading};

pub use parser::{parse_line, parse_lines, scan_lines};
pub use view::LineView;

/// A line that is not valid line protocol, with the position of the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid line protocol at line {line}, column {column}: {message}")]
pub struct LineProtocolError {
    /// 1-based line number within the parsed text.
    pub line: usize,
    /// 1-based byte column within that line.
    pub column: usize,
    pub message: String,
}

/// Encodes one reading as one line, without a trailing newline.
pub fn encode(reading: &Reading) -> Result<String, InvalidReading> {
    let mut out = String::with_capacity(128);
    encode_into(reading, &mut out)?;
    Ok(out)
}

/// Appends one reading as one line (without a trailing newline) to `out`.
/// On error nothing is appended.
pub fn encode_into(reading: &Reading, out: &mut String) -> Result<(), InvalidReading> {
    encode_parts_into(reading, out).map(|_| ())
}

/// Where the parts of a line [`encode_parts_into`] wrote are, as byte
/// offsets into the text it appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Where the line starts.
    pub start: usize,
    /// Where the series (measurement and tags) ends: the space before the
    /// fields.
    pub series_end: usize,
    /// Where the timestamp starts.
    pub timestamp_at: usize,
}

/// [`encode_into`], saying where the parts of the line are.
pub fn encode_parts_into(reading: &Reading, out: &mut String) -> Result<Parts, InvalidReading> {
    reading.validate()?;
    let start = out.len();
    escape_into(out, &reading.measurement, b", ");
    for (key, value) in &reading.tags {
        out.push(',');
        escape_into(out, key, b",= ");
        out.push('=');
        escape_into(out, value, b",= ");
    }
    let series_end = out.len();
    let mut separator = ' ';
    for (key, value) in &reading.fields {
        out.push(separator);
        separator = ',';
        escape_into(out, key, b",= ");
        out.push('=');
        encode_value(out, value);
    }
    out.push(' ');
    let timestamp_at = out.len();
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", reading.timestamp_ns);
    Ok(Parts {
        start,
        series_end,
        timestamp_at,
    })
}

/// Appends a field value as line protocol writes it.
pub fn encode_value(out: &mut String, value: &FieldValue) {
    match value {
        // `{:?}` prints the shortest text that parses back to the same f64,
        // switching to exponent notation for very large or small magnitudes.
        FieldValue::Float(v) => {
            let _ = write!(out, "{v:?}");
        }
        FieldValue::Int(v) => {
            let _ = write!(out, "{v}i");
        }
        FieldValue::UInt(v) => {
            let _ = write!(out, "{v}u");
        }
        FieldValue::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
        FieldValue::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
    }
}

fn escape_into(out: &mut String, s: &str, special: &[u8]) {
    if !s.bytes().any(|b| special.contains(&b)) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if c.is_ascii() && special.contains(&(c as u8)) {
            out.push('\\');
        }
        out.push(c);
    }
}

impl std::fmt::Display for Reading {
    /// Shows the reading as line protocol, or as a debug dump if it is invalid.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match encode(self) {
            Ok(line) => f.write_str(&line),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Reading, LineProtocolError> {
        parse_line(s, 42)
    }

    #[test]
    fn encodes_the_design_example() {
        let r = Reading::new("weather", 1_700_000_000_000_000_000)
            .with_tag("sensor", "env")
            .with_tag("device_id", "pi-0001")
            .with_field("pressure_hpa", 1013.25)
            .with_field("temperature_c", 21.5);
        assert_eq!(
            encode(&r).unwrap(),
            "weather,device_id=pi-0001,sensor=env pressure_hpa=1013.25,temperature_c=21.5 1700000000000000000"
        );
    }

    #[test]
    fn escapes_spaces_commas_equals_and_quotes() {
        let r = Reading::new("my meas,ure=ment", 5)
            .with_tag("tag key,=", "tag value,= ")
            .with_field("field key", "a \"quoted\" \\ string\nnext")
            .with_field("n", 3i64)
            .with_field("u", 4u64)
            .with_field("b", true);
        let line = encode(&r).unwrap();
        assert_eq!(
            line,
            r#"my\ meas\,ure=ment,tag\ key\,\==tag\ value\,\=\  b=true,field\ key="a \"quoted\" \\ string\nnext",n=3i,u=4u 5"#
        );
        assert_eq!(parse(&line).unwrap(), r);
    }

    #[test]
    fn parses_every_value_type_and_missing_timestamp() {
        let r = parse("m f=1.5,i=-3i,u=7u,t=t,T=TRUE,f2=False,s=\"x\"").unwrap();
        assert_eq!(r.timestamp_ns, 42);
        assert_eq!(r.fields["f"], FieldValue::Float(1.5));
        assert_eq!(r.fields["i"], FieldValue::Int(-3));
        assert_eq!(r.fields["u"], FieldValue::UInt(7));
        assert_eq!(r.fields["t"], FieldValue::Bool(true));
        assert_eq!(r.fields["T"], FieldValue::Bool(true));
        assert_eq!(r.fields["f2"], FieldValue::Bool(false));
        assert_eq!(r.fields["s"], FieldValue::String("x".into()));
    }

    #[test]
    fn a_bare_integer_is_a_float() {
        assert_eq!(
            parse("m v=1 1").unwrap().fields["v"],
            FieldValue::Float(1.0)
        );
    }

    #[test]
    fn backslash_before_other_characters_is_literal() {
        let r = parse(r"m\x,t=a\b v=1 1").unwrap();
        assert_eq!(r.measurement, r"m\x");
        assert_eq!(r.tag("t"), Some(r"a\b"));
    }

    #[test]
    fn equals_sign_is_allowed_unescaped_in_measurement() {
        assert_eq!(parse("a=b v=1 1").unwrap().measurement, "a=b");
    }

    #[test]
    fn tolerates_extra_spaces_crlf_comments_and_blank_lines() {
        let text = "# header\n\n  m v=1   2  \r\nm v=2 3\n";
        let got: Vec<_> = parse_lines(text, 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].timestamp_ns, 2);
        assert_eq!(got[1].timestamp_ns, 3);
    }

    #[test]
    fn a_bad_line_does_not_stop_the_next_one() {
        let text = "m v=1 1\nbroken\nm v=3 3";
        let got: Vec<_> = parse_lines(text, 0).collect();
        assert!(got[0].is_ok());
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(got[2].is_ok());
        assert_eq!(got.len(), 3);
    }

    fn error_of(line: &str) -> String {
        parse(line).unwrap_err().to_string()
    }

    #[test]
    fn rejects_malformed_lines_with_a_clear_error() {
        let cases = [
            ("", "no line protocol found"),
            ("m", "missing fields"),
            ("m ", "expected a field key"),
            ("m v=", "has no value"),
            ("m v=1,", "expected a field key"),
            ("m,t v=1", "expected '=' after tag key \"t\""),
            ("m,t= v=1", "tag \"t\" has no value"),
            ("m, v=1", "expected a tag key"),
            ("m v=abc", "not a number, boolean or double-quoted string"),
            ("m v=tru", "invalid boolean"),
            ("m v=1.2.3", "invalid number"),
            ("m v=1e999", "out-of-range float"),
            ("m v=-inf", "invalid number"),
            ("m v=99999999999999999999i", "out-of-range integer"),
            ("m v=-1u", "unsigned integer"),
            ("m v=\"open", "no closing quote"),
            ("m v=1 12ab", "invalid timestamp \"12ab\""),
            ("m v=1 1 2", "invalid timestamp"),
            ("m v=1 99999999999999999999", "not a 64-bit integer"),
            ("m v=1,v=2", "appears twice"),
            ("m,t=1,t=2 v=1", "appears twice"),
            ("m\tx v=1", "unexpected character"),
            (",t=1 v=1", "start of measurement name"),
            ("m v=1x", "invalid number"),
        ];
        for (line, expected) in cases {
            let err = error_of(line);
            assert!(
                err.contains(expected),
                "{line:?}: got {err:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn errors_give_line_and_column() {
        let err = parse_lines("m v=1 1\nm v=oops 2", 0)
            .nth(1)
            .unwrap()
            .unwrap_err();
        assert_eq!((err.line, err.column), (2, 5), "{err}");
    }

    #[test]
    fn parse_line_rejects_two_readings() {
        assert!(error_of("m v=1 1\nm v=2 2").contains("found more"));
    }

    #[test]
    fn encoder_rejects_what_it_cannot_write() {
        let r = Reading::new("m", 1).with_field("v", f64::INFINITY);
        assert!(encode(&r).is_err());
    }

    #[test]
    fn floats_use_shortest_exact_form() {
        let r = Reading::new("m", 1)
            .with_field("a", 0.1)
            .with_field("b", 1e300)
            .with_field("c", -2.5e-9)
            .with_field("d", 3.0);
        let line = encode(&r).unwrap();
        assert_eq!(line, "m a=0.1,b=1e300,c=-2.5e-9,d=3.0 1");
        assert_eq!(parse(&line).unwrap(), r);
    }
}
