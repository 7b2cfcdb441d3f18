//! The line protocol parser, following the reference decoder's character
//! classes: a backslash escapes only the characters its element needs
//! escaped, and stands for itself before anything else.

use std::collections::BTreeMap;

use super::LineProtocolError;
use crate::reading::{FieldValue, Reading, is_non_printable};

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
        let measurement = self.measurement()?;
        let mut reading = Reading::new(measurement, default_ts);
        self.tags(&mut reading.tags)?;
        reading.fields = self.fields()?;
        if let Some(ts) = self.timestamp()? {
            reading.timestamp_ns = ts;
        }
        Ok(reading)
    }

    fn measurement(&mut self) -> Result<String, LineProtocolError> {
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
        Ok(measurement)
    }

    /// The tag set: `,key=value` pairs after the measurement.
    fn tags(&mut self, tags: &mut BTreeMap<String, String>) -> Result<(), LineProtocolError> {
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
            if tags.insert(key.clone(), value).is_some() {
                return Err(self.error(key_at, format!("tag key {key:?} appears twice")));
            }
        }

        Ok(())
    }

    /// The field set, after one or more spaces.
    fn fields(&mut self) -> Result<BTreeMap<String, FieldValue>, LineProtocolError> {
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
        Ok(fields)
    }

    /// The optional timestamp, and the end of the line.
    fn timestamp(&mut self) -> Result<Option<i64>, LineProtocolError> {
        // Optional timestamp.
        self.skip_spaces();
        if self.take_eol() {
            return Ok(None);
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
        let ts = digits.parse::<i64>().map_err(|_| {
            self.error(
                ts_at,
                format!("timestamp {digits:?} is not a 64-bit integer"),
            )
        })?;
        Ok(Some(ts))
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
