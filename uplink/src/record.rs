//! What every stage of the path shares, so that none of them imports another
//! for it: where a record came from, and the lines decoded from records.
//!
//! [`Lines`] holds a batch's lines in one buffer. The decoder appends to it
//! (a valid line Buoy wrote is copied as it is), the batcher owns it, and
//! each sink reads [`Line`]s, views that know where the series, the fields
//! and the timestamp are, so nothing parses a line twice.

use std::sync::Arc;

use telemetry::Reading;
use telemetry::line_protocol::{self, LineView};

/// A topic's partition.
pub type Partition = (Arc<str>, i32);

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// One line of line protocol ready for a database, in a [`Lines`] buffer:
/// series, a space, the field set, a space, the timestamp in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    text: &'a str,
    series_end: usize,
    timestamp_at: usize,
    timestamp_ns: i64,
    origin: &'a Origin,
}

impl<'a> Line<'a> {
    /// The whole line, with its timestamp in nanoseconds.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The measurement and tags, as written.
    pub fn series(&self) -> &'a str {
        &self.text[..self.series_end]
    }

    /// The field set, as written.
    pub fn field_set(&self) -> &'a str {
        &self.text[self.series_end + 1..self.timestamp_at - 1]
    }

    /// Everything before the timestamp, up to and including the space.
    pub fn head(&self) -> &'a str {
        &self.text[..self.timestamp_at]
    }

    pub fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }

    /// The record the line came from.
    pub fn origin(&self) -> &'a Origin {
        self.origin
    }
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    series_end: usize,
    timestamp_at: usize,
    end: usize,
    timestamp_ns: i64,
}

/// A position in [`Lines`], to roll back to or to close a record at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    text: usize,
    spans: usize,
}

/// Lines decoded from records, in one buffer, each with its record.
#[derive(Debug, Default)]
pub struct Lines {
    /// Every line, each followed by a newline.
    text: String,
    spans: Vec<Span>,
    /// Records with lines here: the index of their first line, and where
    /// they came from. In order.
    records: Vec<(usize, Origin)>,
}

impl Lines {
    /// Empty, with room for about as much as `previous` held: batches are
    /// mostly alike, so the next one fills its buffers without growing them
    /// by doubling (which would leave up to half of each unused).
    pub fn sized_like(previous: &Lines) -> Lines {
        let room = |n: usize| n + n / 16;
        Lines {
            text: String::with_capacity(room(previous.text.len())),
            spans: Vec::with_capacity(room(previous.spans.len())),
            records: Vec::with_capacity(room(previous.records.len())),
        }
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes the lines take, newlines included.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// The end, for [`Lines::rollback`] and [`Lines::close_record`].
    pub fn mark(&self) -> Mark {
        Mark {
            text: self.text.len(),
            spans: self.spans.len(),
        }
    }

    /// Forgets the lines added since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.text.truncate(mark.text);
        self.spans.truncate(mark.spans);
    }

    /// The lines added since `mark` came from `origin`.
    pub fn close_record(&mut self, mark: Mark, origin: Origin) {
        if self.spans.len() > mark.spans {
            self.records.push((mark.spans, origin));
        }
    }

    /// Appends a line as written. It must be compact
    /// ([`LineView::is_compact`]): series, fields and timestamp, one space
    /// apart.
    pub fn push_view(&mut self, view: &LineView<'_>) {
        debug_assert!(view.is_compact());
        let start = self.text.len();
        self.text.push_str(view.text());
        let timestamp_at = start + view.text().rfind(' ').expect("a compact line has a space");
        self.end_line(Span {
            start,
            series_end: start + view.series().len(),
            timestamp_at: timestamp_at + 1,
            end: 0,
            timestamp_ns: view.timestamp().expect("a compact line has a timestamp"),
        });
    }

    /// Appends a line from its series, the field set that `fields` writes,
    /// and its timestamp.
    pub fn push_parts(
        &mut self,
        series: &str,
        timestamp_ns: i64,
        fields: impl FnOnce(&mut String),
    ) {
        let start = self.text.len();
        self.text.push_str(series);
        self.text.push(' ');
        fields(&mut self.text);
        self.text.push(' ');
        let timestamp_at = self.text.len();
        self.text.push_str(itoa::Buffer::new().format(timestamp_ns));
        self.end_line(Span {
            start,
            series_end: start + series.len(),
            timestamp_at,
            end: 0,
            timestamp_ns,
        });
    }

    /// Appends a reading, encoded. On error nothing is appended.
    pub fn push_reading(&mut self, reading: &Reading) -> Result<(), telemetry::InvalidReading> {
        let parts = line_protocol::encode_parts_into(reading, &mut self.text)?;
        self.end_line(Span {
            start: parts.start,
            series_end: parts.series_end,
            timestamp_at: parts.timestamp_at,
            end: 0,
            timestamp_ns: reading.timestamp_ns,
        });
        Ok(())
    }

    fn end_line(&mut self, mut span: Span) {
        span.end = self.text.len();
        self.text.push('\n');
        self.spans.push(span);
    }

    /// Every line, in order.
    pub fn iter(&self) -> impl Iterator<Item = Line<'_>> {
        let mut records = self.records.iter().peekable();
        let mut origin = None;
        self.spans.iter().enumerate().map(move |(i, span)| {
            while let Some((_, o)) = records.next_if(|(first, _)| *first <= i) {
                origin = Some(o);
            }
            Line {
                text: &self.text[span.start..span.end],
                series_end: span.series_end - span.start,
                timestamp_at: span.timestamp_at - span.start,
                timestamp_ns: span.timestamp_ns,
                origin: origin.expect("every line belongs to a closed record"),
            }
        })
    }

    /// Keeps only the lines of records for which `keep` holds.
    pub fn retain_records(&mut self, keep: impl Fn(&Origin) -> bool) {
        let old = std::mem::take(self);
        let mut ends = old.records.iter().map(|(first, _)| *first).skip(1);
        for (first, origin) in &old.records {
            let end = ends.next().unwrap_or(old.spans.len());
            if !keep(origin) {
                continue;
            }
            let mark = self.mark();
            for span in &old.spans[*first..end] {
                let shift = |at: usize| at - span.start + self.text.len();
                let moved = Span {
                    start: shift(span.start),
                    series_end: shift(span.series_end),
                    timestamp_at: shift(span.timestamp_at),
                    end: 0,
                    timestamp_ns: span.timestamp_ns,
                };
                self.text.push_str(&old.text[span.start..span.end]);
                self.end_line(moved);
            }
            self.close_record(mark, origin.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(offset: i64) -> Origin {
        Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset,
        }
    }

    fn push(lines: &mut Lines, text: &str, offset: i64) {
        let mark = lines.mark();
        for view in line_protocol::scan_lines(text) {
            lines.push_view(&view.unwrap());
        }
        lines.close_record(mark, origin(offset));
    }

    #[test]
    fn each_line_knows_its_parts_and_record() {
        let mut lines = Lines::default();
        push(&mut lines, "a,t=1 v=1 10\nb w=2 20", 5);
        lines.close_record(lines.mark(), origin(6)); // a record of no lines
        let mark = lines.mark();
        lines.push_parts("c,t=3", 30, |out| out.push_str("x=3.0"));
        lines.close_record(mark, origin(7));
        let got: Vec<Line<'_>> = lines.iter().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].series(), "a,t=1");
        assert_eq!(got[0].field_set(), "v=1");
        assert_eq!(got[0].head(), "a,t=1 v=1 ");
        assert_eq!(got[1].timestamp_ns(), 20);
        assert_eq!(got[1].origin().offset, 5);
        assert_eq!(got[2].text(), "c,t=3 x=3.0 30");
        assert_eq!(got[2].origin().offset, 7);
        assert_eq!(
            lines.bytes(),
            "a,t=1 v=1 10\nb w=2 20\nc,t=3 x=3.0 30\n".len()
        );
    }

    #[test]
    fn rollback_forgets_a_record_half_decoded() {
        let mut lines = Lines::default();
        push(&mut lines, "a v=1 1", 0);
        let mark = lines.mark();
        lines.push_parts("b", 2, |out| out.push_str("v=2"));
        lines.rollback(mark);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines.bytes(), "a v=1 1\n".len());
    }

    #[test]
    fn records_can_be_dropped_and_the_rest_keep_their_parts() {
        let mut lines = Lines::default();
        push(&mut lines, "a v=1 1\na v=2 2", 0);
        push(&mut lines, "b,t=x v=3 3", 1);
        push(&mut lines, "c v=4 4", 2);
        lines.retain_records(|o| o.offset != 0);
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.series(), l.origin().offset))
            .collect();
        assert_eq!(got, [("b,t=x", 1), ("c", 2)]);
        assert_eq!(lines.iter().nth(1).unwrap().text(), "c v=4 4");
    }

    #[test]
    fn the_next_batch_has_room_for_one_like_the_last() {
        let mut lines = Lines::default();
        for offset in 0..100 {
            push(&mut lines, "weather,device_id=pi-0001 t=1.5 1000", offset);
        }
        let next = Lines::sized_like(&lines);
        assert!(next.is_empty());
        assert!(next.text.capacity() >= lines.bytes());
        assert!(next.text.capacity() < 2 * lines.bytes());
        assert!(next.spans.capacity() >= 100 && next.records.capacity() >= 100);
    }
}
