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

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::reading::{FieldValue, InvalidReading, Reading, is_non_printable};

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

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Encodes one reading as one line, without a trailing newline.
pub fn encode(reading: &Reading) -> Result<String, InvalidReading> {
    let mut out = String::with_capacity(128);
    encode_into(reading, &mut out)?;
    Ok(out)
}

/// Appends one reading as one line (without a trailing newline) to `out`.
/// On error nothing is appended.
pub fn encode_into(reading: &Reading, out: &mut String) -> Result<(), InvalidReading> {
    reading.validate()?;
    escape_into(out, &reading.measurement, b", ");
    for (key, value) in &reading.tags {
        out.push(',');
        escape_into(out, key, b",= ");
        out.push('=');
        escape_into(out, value, b",= ");
    }
    let mut separator = ' ';
    for (key, value) in &reading.fields {
        out.push(separator);
        separator = ',';
        escape_into(out, key, b",= ");
        out.push('=');
        encode_value(out, value);
    }
    // Writing to a String cannot fail.
    let _ = write!(out, " {}", reading.timestamp_ns);
    Ok(())
}

fn encode_value(out: &mut String, value: &FieldValue) {
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

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parses text holding exactly one reading (comments and blank lines allowed).
/// A line without a timestamp gets `default_timestamp_ns`.
pub fn parse_line(text: &str, default_timestamp_ns: i64) -> Result<Reading, LineProtocolError> {
    let mut parser = Parser::new(text);
    let first = parser
        .next_reading(default_timestamp_ns)
        .ok_or_else(|| LineProtocolError {
            line: 1,
            column: 1,
            message: "no line protocol found (the text is empty or only comments)".into(),
        })??;
    parser.skip_blank_and_comment_lines();
    let extra_line = parser.line;
    if parser.next_reading(default_timestamp_ns).is_some() {
        return Err(LineProtocolError {
            line: extra_line,
            column: 1,
            message: "expected one line of line protocol, found more".into(),
        });
    }
    Ok(first)
}

/// Parses every reading in `text`. A bad line yields an error and parsing
/// resumes at the next line.
pub fn parse_lines(
    text: &str,
    default_timestamp_ns: i64,
) -> impl Iterator<Item = Result<Reading, LineProtocolError>> + '_ {
    let mut parser = Parser::new(text);
    std::iter::from_fn(move || parser.next_reading(default_timestamp_ns))
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// 1-based number of the line `pos` is on.
    line: usize,
    /// Byte offset where the current line starts.
    line_start: usize,
}

/// Escapes understood in measurement names.
const MEASUREMENT_ESCAPES: &[u8] = b", ";
/// Escapes understood in tag keys, tag values and field keys.
const KEY_ESCAPES: &[u8] = b",= ";

fn in_measurement(b: u8) -> bool {
    b != b',' && b != b' ' && !is_non_printable(b)
}

fn in_key(b: u8) -> bool {
    b != b',' && b != b'=' && b != b' ' && !is_non_printable(b)
}

fn in_field_value(b: u8) -> bool {
    b != b',' && b != b' ' && b != b'\r' && b != b'\n'
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, at: usize, message: impl Into<String>) -> LineProtocolError {
        LineProtocolError {
            line: self.line,
            column: at.saturating_sub(self.line_start) + 1,
            message: message.into(),
        }
    }

    fn next_reading(&mut self, default_ts: i64) -> Option<Result<Reading, LineProtocolError>> {
        self.skip_blank_and_comment_lines();
        if self.pos >= self.bytes.len() {
            return None;
        }
        let result = self.reading(default_ts);
        if result.is_err() {
            self.skip_rest_of_line();
        }
        Some(result)
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Consumes a line ending if one is next, and reports whether the line
    /// ended (also true at the end of the input).
    fn take_eol(&mut self) -> bool {
        match self.peek() {
            None => true,
            Some(b'\n') => {
                self.pos += 1;
                self.new_line();
                true
            }
            Some(b'\r') if self.bytes.get(self.pos + 1) == Some(&b'\n') => {
                self.pos += 2;
                self.new_line();
                true
            }
            Some(b'\r') if self.pos + 1 == self.bytes.len() => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn new_line(&mut self) {
        self.line += 1;
        self.line_start = self.pos;
    }

    fn skip_blank_and_comment_lines(&mut self) {
        loop {
            self.skip_spaces();
            if self.peek() == Some(b'#') {
                while !matches!(self.peek(), None | Some(b'\n')) {
                    self.pos += 1;
                }
            }
            if self.pos >= self.bytes.len() || !self.take_eol() {
                return;
            }
        }
    }

    fn skip_rest_of_line(&mut self) {
        while let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'\n' {
                self.new_line();
                return;
            }
        }
    }

    /// Takes a run of bytes accepted by `accept`, where a backslash before one
    /// of `escapes` stands for that byte, and returns it unescaped.
    fn take_escaped(&mut self, accept: fn(u8) -> bool, escapes: &[u8]) -> String {
        let start = self.pos;
        let mut out = String::new();
        let mut copied_to = start;
        while let Some(b) = self.peek() {
            if b == b'\\' {
                match self.bytes.get(self.pos + 1) {
                    Some(next) if escapes.contains(next) => {
                        out.push_str(&self.text[copied_to..self.pos]);
                        out.push(*next as char);
                        self.pos += 2;
                        copied_to = self.pos;
                    }
                    // A backslash before anything else is itself.
                    _ => self.pos += 1,
                }
            } else if accept(b) {
                self.pos += 1;
            } else {
                break;
            }
        }
        out.push_str(&self.text[copied_to..self.pos]);
        out
    }

    fn reading(&mut self, default_ts: i64) -> Result<Reading, LineProtocolError> {
        let start = self.pos;
        let measurement = self.take_escaped(in_measurement, MEASUREMENT_ESCAPES);
        if measurement.is_empty() {
            let what = match self.peek() {
                Some(b) => format!(
                    "invalid character {:?} at start of measurement name",
                    b as char
                ),
                None => "no measurement name found".into(),
            };
            return Err(self.error(start, what));
        }
        let mut reading = Reading::new(measurement, default_ts);

        // Tag set.
        while self.peek() == Some(b',') {
            self.pos += 1;
            let key_at = self.pos;
            let key = self.take_escaped(in_key, KEY_ESCAPES);
            if key.is_empty() {
                return Err(self.error(key_at, "expected a tag key after ','"));
            }
            if self.peek() != Some(b'=') {
                return Err(self.error(self.pos, format!("expected '=' after tag key {key:?}")));
            }
            self.pos += 1;
            let value_at = self.pos;
            let value = self.take_escaped(in_key, KEY_ESCAPES);
            if value.is_empty() {
                return Err(self.error(value_at, format!("tag {key:?} has no value")));
            }
            if reading.tags.insert(key.clone(), value).is_some() {
                return Err(self.error(key_at, format!("tag key {key:?} appears twice")));
            }
        }

        // Field set.
        match self.peek() {
            Some(b' ') => self.skip_spaces(),
            None | Some(b'\n') | Some(b'\r') => {
                return Err(self.error(self.pos, "missing fields: a line needs at least one field"));
            }
            Some(b) => {
                return Err(self.error(
                    self.pos,
                    format!(
                        "unexpected character {:?} after measurement and tags",
                        b as char
                    ),
                ));
            }
        }
        let mut fields = BTreeMap::new();
        loop {
            let key_at = self.pos;
            let key = self.take_escaped(in_key, KEY_ESCAPES);
            if key.is_empty() {
                return Err(self.error(key_at, "expected a field key"));
            }
            if self.peek() != Some(b'=') {
                return Err(self.error(self.pos, format!("expected '=' after field key {key:?}")));
            }
            self.pos += 1;
            let value = self.field_value(&key)?;
            if fields.insert(key.clone(), value).is_some() {
                return Err(self.error(key_at, format!("field key {key:?} appears twice")));
            }
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                None | Some(b' ') | Some(b'\n') | Some(b'\r') => break,
                Some(b) => {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "unexpected character {:?} after value of field {key:?}",
                            b as char
                        ),
                    ));
                }
            }
        }
        reading.fields = fields;

        // Optional timestamp.
        self.skip_spaces();
        if self.take_eol() {
            return Ok(reading);
        }
        let ts_at = self.pos;
        while matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            self.pos += 1;
        }
        let digits = &self.text[ts_at..self.pos];
        self.skip_spaces();
        let ended = self.take_eol();
        if digits.is_empty() || !ended {
            let end = self.bytes[ts_at..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .map_or(self.bytes.len(), |n| ts_at + n);
            return Err(self.error(
                ts_at,
                format!("invalid timestamp {:?}", &self.text[ts_at..end]),
            ));
        }
        reading.timestamp_ns = digits.parse::<i64>().map_err(|_| {
            self.error(
                ts_at,
                format!("timestamp {digits:?} is not a 64-bit integer"),
            )
        })?;
        Ok(reading)
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue, LineProtocolError> {
        let at = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                self.string_value(key, at)
            }
            Some(b't' | b'T' | b'f' | b'F') => {
                let token = self.take_token();
                match token {
                    "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Bool(true)),
                    "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Bool(false)),
                    _ => Err(self.error(at, format!("field {key:?}: invalid boolean {token:?}"))),
                }
            }
            Some(b'-' | b'0'..=b'9' | b'.') => {
                let token = self.take_token();
                self.number(key, token, at)
            }
            None | Some(b' ' | b',' | b'\n' | b'\r') => {
                Err(self.error(at, format!("field {key:?} has no value")))
            }
            Some(_) => Err(self.error(
                at,
                format!("field {key:?}: value is not a number, boolean or double-quoted string"),
            )),
        }
    }

    fn take_token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(in_field_value) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn number(&self, key: &str, token: &str, at: usize) -> Result<FieldValue, LineProtocolError> {
        let bad = |what: &str| self.error(at, format!("field {key:?}: {what} {token:?}"));
        if let Some(digits) = token.strip_suffix('i') {
            return digits
                .parse::<i64>()
                .map(FieldValue::Int)
                .map_err(|_| bad("invalid or out-of-range integer"));
        }
        if let Some(digits) = token.strip_suffix('u') {
            return digits
                .parse::<u64>()
                .map(FieldValue::UInt)
                .map_err(|_| bad("invalid or out-of-range unsigned integer"));
        }
        // Rust's float syntax is wider than line protocol's (it accepts "inf",
        // "nan" and a leading '+'), so check the characters first.
        let float_chars = token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'));
        match token.parse::<f64>() {
            Ok(v) if float_chars && v.is_finite() => Ok(FieldValue::Float(v)),
            Ok(_) if float_chars => Err(bad("out-of-range float")),
            _ => Err(bad("invalid number")),
        }
    }

    fn string_value(&mut self, key: &str, at: usize) -> Result<FieldValue, LineProtocolError> {
        let mut out = String::new();
        let mut copied_to = self.pos;
        loop {
            match self.peek() {
                None => {
                    return Err(self.error(
                        at,
                        format!("field {key:?}: string value has no closing quote"),
                    ));
                }
                Some(b'"') => {
                    out.push_str(&self.text[copied_to..self.pos]);
                    self.pos += 1;
                    return Ok(FieldValue::String(out));
                }
                Some(b'\\') => {
                    let unescaped = match self.bytes.get(self.pos + 1) {
                        Some(b'"') => Some('"'),
                        Some(b'\\') => Some('\\'),
                        Some(b'n') => Some('\n'),
                        Some(b'r') => Some('\r'),
                        Some(b't') => Some('\t'),
                        _ => None,
                    };
                    match unescaped {
                        Some(c) => {
                            out.push_str(&self.text[copied_to..self.pos]);
                            out.push(c);
                            self.pos += 2;
                            copied_to = self.pos;
                        }
                        None => self.pos += 1,
                    }
                }
                Some(b'\n') => {
                    // Raw newlines are allowed inside strings.
                    self.pos += 1;
                    self.new_line();
                }
                Some(_) => self.pos += 1,
            }
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
