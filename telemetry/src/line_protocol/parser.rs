//! The line protocol parser, following the reference decoder's character
//! classes: a backslash escapes only the characters its element needs
//! escaped, and stands for itself before anything else.
//!
//! The parser validates a line into a [`LineView`]: the line's own text,
//! borrowed, with where its parts are. Nothing is unescaped or allocated
//! until a caller asks for an owned [`Reading`].

use super::LineProtocolError;
use super::view::{self, KEY_ESCAPES, LineView, MEASUREMENT_ESCAPES, in_field_value};
use crate::reading::{Reading, is_non_printable};

/// Parses text holding exactly one reading (comments and blank lines allowed).
/// A line without a timestamp gets `default_timestamp_ns`.
pub fn parse_line(text: &str, default_timestamp_ns: i64) -> Result<Reading, LineProtocolError> {
    let mut parser = Parser::new(text);
    let first = parser.next_line().ok_or_else(|| LineProtocolError {
        line: 1,
        column: 1,
        message: "no line protocol found (the text is empty or only comments)".into(),
    })??;
    parser.skip_blank_and_comment_lines();
    let extra_line = parser.line;
    if parser.next_line().is_some() {
        return Err(LineProtocolError {
            line: extra_line,
            column: 1,
            message: "expected one line of line protocol, found more".into(),
        });
    }
    Ok(first.to_reading(default_timestamp_ns))
}

/// Parses every reading in `text`. A bad line yields an error and parsing
/// resumes at the next line.
pub fn parse_lines(
    text: &str,
    default_timestamp_ns: i64,
) -> impl Iterator<Item = Result<Reading, LineProtocolError>> + '_ {
    scan_lines(text).map(move |line| line.map(|l| l.to_reading(default_timestamp_ns)))
}

/// Validates every line in `text` without copying it: each valid line is a
/// [`LineView`] of its own text. A bad line yields an error and scanning
/// resumes at the next line. Accepts exactly what [`parse_lines`] accepts.
pub fn scan_lines(text: &str) -> impl Iterator<Item = Result<LineView<'_>, LineProtocolError>> {
    let mut parser = Parser::new(text);
    std::iter::from_fn(move || parser.next_line())
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

fn in_measurement(b: u8) -> bool {
    b != b',' && b != b' ' && !is_non_printable(b)
}

fn in_key(b: u8) -> bool {
    b != b',' && b != b'=' && b != b' ' && !is_non_printable(b)
}

/// What a field value is, as far as a reader of the raw text needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Other,
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

    fn next_line(&mut self) -> Option<Result<LineView<'a>, LineProtocolError>> {
        self.skip_blank_and_comment_lines();
        if self.pos >= self.bytes.len() {
            return None;
        }
        let result = self.view();
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
    /// of `escapes` stands for that byte, and returns it as written.
    fn take_escaped(&mut self, accept: fn(u8) -> bool, escapes: &[u8]) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b'\\' {
                match self.bytes.get(self.pos + 1) {
                    Some(next) if escapes.contains(next) => self.pos += 2,
                    // A backslash before anything else is itself.
                    _ => self.pos += 1,
                }
            } else if accept(b) {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.text[start..self.pos]
    }

    fn view(&mut self) -> Result<LineView<'a>, LineProtocolError> {
        let start = self.pos;
        self.measurement()?;
        let measurement_end = self.pos;
        self.tags(measurement_end)?;
        let series_end = self.pos;
        self.skip_to_fields()?;
        let fields_start = self.pos;
        let has_integers = self.fields()?;
        let fields_end = self.pos;
        let (timestamp, end) = self.timestamp()?;
        Ok(LineView::new(
            &self.text[start..end.unwrap_or(fields_end)],
            view::Spans {
                measurement_end: measurement_end - start,
                series_end: series_end - start,
                fields_start: fields_start - start,
                fields_end: fields_end - start,
            },
            timestamp,
            has_integers,
        ))
    }

    fn measurement(&mut self) -> Result<(), LineProtocolError> {
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
        Ok(())
    }

    /// The tag set: `,key=value` pairs after the measurement, which ends at
    /// `section_start`.
    fn tags(&mut self, section_start: usize) -> Result<(), LineProtocolError> {
        while self.peek() == Some(b',') {
            let before = &self.text[section_start..self.pos];
            self.pos += 1;
            let key_at = self.pos;
            let key = self.take_escaped(in_key, KEY_ESCAPES);
            if key.is_empty() {
                return Err(self.error(key_at, "expected a tag key after ','"));
            }
            let name = view::unescape(key, KEY_ESCAPES);
            if self.peek() != Some(b'=') {
                return Err(self.error(self.pos, format!("expected '=' after tag key {name:?}")));
            }
            self.pos += 1;
            let value_at = self.pos;
            if self.take_escaped(in_key, KEY_ESCAPES).is_empty() {
                return Err(self.error(value_at, format!("tag {name:?} has no value")));
            }
            if view::tags(before).any(|(k, _)| k == key) {
                return Err(self.error(key_at, format!("tag key {name:?} appears twice")));
            }
        }
        Ok(())
    }

    /// The spaces between the series and the field set.
    fn skip_to_fields(&mut self) -> Result<(), LineProtocolError> {
        match self.peek() {
            Some(b' ') => {
                self.skip_spaces();
                Ok(())
            }
            None | Some(b'\n') | Some(b'\r') => {
                Err(self.error(self.pos, "missing fields: a line needs at least one field"))
            }
            Some(b) => Err(self.error(
                self.pos,
                format!(
                    "unexpected character {:?} after measurement and tags",
                    b as char
                ),
            )),
        }
    }

    /// The field set; says whether any field is an integer.
    fn fields(&mut self) -> Result<bool, LineProtocolError> {
        let section_start = self.pos;
        let mut has_integers = false;
        loop {
            let before = &self.text[section_start..self.pos.saturating_sub(1).max(section_start)];
            let key_at = self.pos;
            let key = self.take_escaped(in_key, KEY_ESCAPES);
            if key.is_empty() {
                return Err(self.error(key_at, "expected a field key"));
            }
            let name = view::unescape(key, KEY_ESCAPES);
            if self.peek() != Some(b'=') {
                return Err(self.error(self.pos, format!("expected '=' after field key {name:?}")));
            }
            self.pos += 1;
            has_integers |= self.field_value(&name)? == Kind::Integer;
            if !before.is_empty() && view::fields(before).any(|(k, _)| k == key) {
                return Err(self.error(key_at, format!("field key {name:?} appears twice")));
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
                            "unexpected character {:?} after value of field {name:?}",
                            b as char
                        ),
                    ));
                }
            }
        }
        Ok(has_integers)
    }

    /// The optional timestamp, and the end of the line. Returns the
    /// timestamp and where its digits end.
    fn timestamp(&mut self) -> Result<(Option<i64>, Option<usize>), LineProtocolError> {
        self.skip_spaces();
        if self.take_eol() {
            return Ok((None, None));
        }
        let ts_at = self.pos;
        while matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            self.pos += 1;
        }
        let digits_end = self.pos;
        let digits = &self.text[ts_at..digits_end];
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
        Ok((Some(ts), Some(digits_end)))
    }

    fn field_value(&mut self, key: &str) -> Result<Kind, LineProtocolError> {
        let at = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                self.string_value(key, at).map(|()| Kind::Other)
            }
            Some(b't' | b'T' | b'f' | b'F') => {
                let token = self.take_token();
                match view::boolean(token) {
                    Some(_) => Ok(Kind::Other),
                    None => {
                        Err(self.error(at, format!("field {key:?}: invalid boolean {token:?}")))
                    }
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

    fn number(&self, key: &str, token: &str, at: usize) -> Result<Kind, LineProtocolError> {
        let bad = |what: &str| self.error(at, format!("field {key:?}: {what} {token:?}"));
        if let Some(digits) = token.strip_suffix('i') {
            return digits
                .parse::<i64>()
                .map(|_| Kind::Integer)
                .map_err(|_| bad("invalid or out-of-range integer"));
        }
        if let Some(digits) = token.strip_suffix('u') {
            return digits
                .parse::<u64>()
                .map(|_| Kind::Integer)
                .map_err(|_| bad("invalid or out-of-range unsigned integer"));
        }
        match view::float(token) {
            Ok(_) => Ok(Kind::Other),
            Err(view::BadFloat::OutOfRange) => Err(bad("out-of-range float")),
            Err(view::BadFloat::Invalid) => Err(bad("invalid number")),
        }
    }

    fn string_value(&mut self, key: &str, at: usize) -> Result<(), LineProtocolError> {
        loop {
            match self.peek() {
                None => {
                    return Err(self.error(
                        at,
                        format!("field {key:?}: string value has no closing quote"),
                    ));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let escaped = matches!(
                        self.bytes.get(self.pos + 1),
                        Some(b'"' | b'\\' | b'n' | b'r' | b't')
                    );
                    self.pos += if escaped { 2 } else { 1 };
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
