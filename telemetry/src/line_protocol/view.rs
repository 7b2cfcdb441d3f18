//! A validated line of line protocol, borrowed: the text as written and
//! where its parts are. Readers that pass lines on (the uplink) take the text
//! as it is; readers that need values walk [`LineView::tags`] and
//! [`LineView::fields`], which unescape nothing until asked.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::reading::{FieldValue, Reading};

/// Escapes understood in measurement names.
pub(super) const MEASUREMENT_ESCAPES: &[u8] = b", ";
/// Escapes understood in tag keys, tag values and field keys.
pub(super) const KEY_ESCAPES: &[u8] = b",= ";

/// The bytes an unquoted field value may hold.
pub(super) fn in_field_value(b: u8) -> bool {
    b != b',' && b != b' ' && b != b'\r' && b != b'\n'
}

/// Where a line's parts end, as byte offsets into its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spans {
    pub measurement_end: usize,
    pub series_end: usize,
    pub fields_start: usize,
    pub fields_end: usize,
}

/// One valid line, as written: `text` runs from the measurement to the end
/// of the timestamp (or of the fields, when it has none), without the line
/// ending. Made by [`super::scan_lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineView<'a> {
    text: &'a str,
    spans: Spans,
    timestamp: Option<i64>,
    has_integers: bool,
}

impl<'a> LineView<'a> {
    pub(super) fn new(
        text: &'a str,
        spans: Spans,
        timestamp: Option<i64>,
        has_integers: bool,
    ) -> Self {
        LineView {
            text,
            spans,
            timestamp,
            has_integers,
        }
    }

    /// The whole line as written.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The measurement and tags as written (`weather,device_id=pi-1`): the
    /// series a point belongs to.
    pub fn series(&self) -> &'a str {
        &self.text[..self.spans.series_end]
    }

    /// The measurement as written (escaped).
    pub fn measurement(&self) -> &'a str {
        &self.text[..self.spans.measurement_end]
    }

    /// The field set as written (`a=1,b="x"`).
    pub fn field_set(&self) -> &'a str {
        &self.text[self.spans.fields_start..self.spans.fields_end]
    }

    /// The line's own timestamp, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Whether any field is an integer (`3i`) or unsigned integer (`3u`).
    pub fn has_integers(&self) -> bool {
        self.has_integers
    }

    /// Whether the text is series, one space, fields, one space and a
    /// timestamp: the shape Buoy's encoder writes, which any database takes.
    pub fn is_compact(&self) -> bool {
        self.timestamp.is_some()
            && self.spans.fields_start == self.spans.series_end + 1
            && self.text.as_bytes().get(self.spans.fields_end + 1) != Some(&b' ')
    }

    /// The tags: raw (escaped) keys and values.
    pub fn tags(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        tags(&self.text[self.spans.measurement_end..self.spans.series_end])
    }

    /// The fields: raw (escaped) keys and raw values (see [`field_value`]).
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        fields(self.field_set())
    }

    /// The line as an owned reading, with `default_timestamp_ns` if it has
    /// no timestamp of its own.
    pub fn to_reading(&self, default_timestamp_ns: i64) -> Reading {
        let mut reading = Reading::new(
            unescape(self.measurement(), MEASUREMENT_ESCAPES),
            self.timestamp.unwrap_or(default_timestamp_ns),
        );
        reading.tags = self
            .tags()
            .map(|(k, v)| {
                (
                    unescape(k, KEY_ESCAPES).into_owned(),
                    unescape(v, KEY_ESCAPES).into_owned(),
                )
            })
            .collect::<BTreeMap<_, _>>();
        reading.fields = self
            .fields()
            .map(|(k, v)| (unescape(k, KEY_ESCAPES).into_owned(), field_value(v)))
            .collect();
        reading
    }
}

/// The fields of a field set that [`LineView::field_set`] gave (or that
/// was copied from one): unescaped keys and their values.
pub fn field_values(field_set: &str) -> impl Iterator<Item = (Cow<'_, str>, FieldValue)> {
    fields(field_set).map(|(k, v)| (unescape(k, KEY_ESCAPES), field_value(v)))
}

/// The tags of a validated tag section (`,k=v,k2=v2`), raw.
pub(super) fn tags(section: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = section;
    std::iter::from_fn(move || {
        rest = rest.strip_prefix(',')?;
        let key_len = escaped_len(rest, KEY_ESCAPES, |b| b == b'=');
        let key = &rest[..key_len];
        let after = &rest[key_len + 1..];
        let value_len = escaped_len(after, KEY_ESCAPES, |b| b == b',');
        rest = &after[value_len..];
        Some((key, &after[..value_len]))
    })
}

/// The fields of a validated field set (`a=1,b="x"`), raw.
pub(super) fn fields(section: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = section;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let key_len = escaped_len(rest, KEY_ESCAPES, |b| b == b'=');
        let key = &rest[..key_len];
        let after = &rest[key_len + 1..];
        let value_len = value_len(after);
        rest = after[value_len..].strip_prefix(',').unwrap_or("");
        Some((key, &after[..value_len]))
    })
}

/// The length of an element that ends at the first unescaped byte for
/// which `end` holds (or at the end of `text`).
fn escaped_len(text: &str, escapes: &[u8], end: fn(u8) -> bool) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1).is_some_and(|n| escapes.contains(n)) => i += 2,
            b if end(b) => return i,
            _ => i += 1,
        }
    }
    i
}

/// The length of a raw field value at the start of `text`.
fn value_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return bytes
            .iter()
            .position(|&b| !in_field_value(b))
            .unwrap_or(bytes.len());
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return i + 1,
            b'\\' if matches!(bytes.get(i + 1), Some(b'"' | b'\\' | b'n' | b'r' | b't')) => i += 2,
            _ => i += 1,
        }
    }
    i
}

/// An element with its escapes resolved; borrowed when it has none.
pub fn unescape<'a>(raw: &'a str, escapes: &[u8]) -> Cow<'a, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c == '\\'
            && let Some(&(_, next)) = chars.peek()
            && next.is_ascii()
            && escapes.contains(&(next as u8))
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A validated raw field value (`1.5`, `3i`, `7u`, `t`, `"text"`) as a value.
pub fn field_value(raw: &str) -> FieldValue {
    if let Some(body) = raw.strip_prefix('"') {
        return FieldValue::String(unescape_string(body.strip_suffix('"').unwrap_or(body)));
    }
    if let Some(b) = boolean(raw) {
        return FieldValue::Bool(b);
    }
    if let Some(digits) = raw.strip_suffix('i') {
        return FieldValue::Int(digits.parse().unwrap_or_default());
    }
    if let Some(digits) = raw.strip_suffix('u') {
        return FieldValue::UInt(digits.parse().unwrap_or_default());
    }
    FieldValue::Float(float(raw).unwrap_or_default())
}

fn unescape_string(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        let unescaped = match (c, chars.peek()) {
            ('\\', Some('"')) => Some('"'),
            ('\\', Some('\\')) => Some('\\'),
            ('\\', Some('n')) => Some('\n'),
            ('\\', Some('r')) => Some('\r'),
            ('\\', Some('t')) => Some('\t'),
            _ => None,
        };
        match unescaped {
            Some(u) => {
                out.push(u);
                chars.next();
            }
            None => out.push(c),
        }
    }
    out
}

/// A boolean token, in any of line protocol's spellings.
pub fn boolean(token: &str) -> Option<bool> {
    match token {
        "t" | "T" | "true" | "True" | "TRUE" => Some(true),
        "f" | "F" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Why a token is not a line-protocol float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFloat {
    Invalid,
    OutOfRange,
}

/// A float token. Rust's float syntax is wider than line protocol's (it
/// accepts "inf", "nan" and a leading '+'), so the characters are checked
/// first.
pub fn float(token: &str) -> Result<f64, BadFloat> {
    let float_chars = token
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'));
    match token.parse::<f64>() {
        Ok(v) if float_chars && v.is_finite() => Ok(v),
        Ok(_) if float_chars => Err(BadFloat::OutOfRange),
        _ => Err(BadFloat::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::super::scan_lines;
    use super::*;

    fn view(text: &str) -> LineView<'_> {
        scan_lines(text).next().unwrap().unwrap()
    }

    #[test]
    fn a_view_borrows_the_parts_of_the_line() {
        let v = view(r#"  weather,device_id=pi\ 1,s=env p=1013.2,n=3i,s="a b,c" 17  "#);
        assert_eq!(v.series(), r"weather,device_id=pi\ 1,s=env");
        assert_eq!(v.measurement(), "weather");
        assert_eq!(v.field_set(), r#"p=1013.2,n=3i,s="a b,c""#);
        assert_eq!(
            v.text(),
            r#"weather,device_id=pi\ 1,s=env p=1013.2,n=3i,s="a b,c" 17"#
        );
        assert_eq!(v.timestamp(), Some(17));
        assert!(v.has_integers());
        assert!(v.is_compact());
        let tags: Vec<_> = v.tags().collect();
        assert_eq!(tags, [("device_id", r"pi\ 1"), ("s", "env")]);
        let fields: Vec<_> = v.fields().collect();
        assert_eq!(fields, [("p", "1013.2"), ("n", "3i"), ("s", r#""a b,c""#)]);
    }

    #[test]
    fn a_line_with_extra_spaces_or_no_timestamp_is_not_compact() {
        assert!(!view("m v=1  5").is_compact());
        assert!(!view("m  v=1 5").is_compact());
        let v = view("m v=1.5\r\n");
        assert!(!v.is_compact());
        assert_eq!(v.text(), "m v=1.5");
        assert!(!v.has_integers());
    }

    #[test]
    fn raw_values_become_values() {
        assert_eq!(field_value("1.5"), FieldValue::Float(1.5));
        assert_eq!(field_value("-3i"), FieldValue::Int(-3));
        assert_eq!(field_value("7u"), FieldValue::UInt(7));
        assert_eq!(field_value("F"), FieldValue::Bool(false));
        assert_eq!(
            field_value(r#""say \"hi\"\n""#),
            FieldValue::String("say \"hi\"\n".into())
        );
    }
}
