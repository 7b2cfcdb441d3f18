//! The forwarder's bookkeeping, with no I/O: what has been handed to
//! librdkafka, what Kafka acknowledged, and where to resume after a failure.
//!
//! Records are handed over in sequence order. When a delivery fails, nothing
//! newer is sent; once every outstanding record has resolved, the cursor goes
//! back to just before the oldest failure, and sending resumes from the
//! journal. Acknowledged sequence numbers are collected for the journal
//! writer, which deletes them.

/// The in-flight window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Highest sequence number handed over (or skipped).
    cursor: u64,
    in_flight: usize,
    max_in_flight: usize,
    /// Oldest failed sequence number not yet resent.
    rewind_to: Option<u64>,
    acked: Vec<u64>,
}

impl Window {
    pub fn new(max_in_flight: usize) -> Self {
        Window {
            cursor: 0,
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            rewind_to: None,
            acked: Vec::new(),
        }
    }

    /// The highest sequence number handed over; the next read starts after it.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many more records may be handed over now. None while a failure
    /// waits to be resent.
    pub fn room(&self) -> usize {
        if self.rewind_to.is_some() {
            0
        } else {
            self.max_in_flight - self.in_flight
        }
    }

    /// `seq` was handed to librdkafka.
    pub fn sent(&mut self, seq: u64) {
        debug_assert!(seq > self.cursor, "records are sent in order");
        self.cursor = seq;
        self.in_flight += 1;
    }

    /// `seq` cannot be sent at all (unreadable); it is passed over and
    /// deleted.
    pub fn skipped(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
        self.acked.push(seq);
    }

    /// Nothing is left to send up to `seq`: everything there was
    /// acknowledged and deleted already (possible after a rewind).
    pub fn skipped_to(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// Kafka acknowledged `seq`.
    pub fn delivered(&mut self, seq: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.acked.push(seq);
    }

    /// Delivery of `seq` failed; it will be sent again.
    pub fn failed(&mut self, seq: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.rewind_to = Some(self.rewind_to.map_or(seq, |r| r.min(seq)));
    }

    /// The acknowledged sequence numbers collected since the last call.
    pub fn take_acked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acked)
    }

    /// A failure is waiting and nothing is outstanding any more.
    pub fn ready_to_rewind(&self) -> bool {
        self.rewind_to.is_some() && self.in_flight == 0
    }

    /// Moves the cursor back to just before the oldest failure. Records after
    /// it that were acknowledged may be sent again; duplicates are harmless,
    /// since a reading's series and timestamp make it the same point.
    pub fn rewind(&mut self) -> u64 {
        if let Some(seq) = self.rewind_to.take() {
            self.cursor = self.cursor.min(seq - 1);
        }
        self.cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_what_is_in_flight() {
        let mut w = Window::new(3);
        for seq in 1..=3 {
            w.sent(seq);
        }
        assert_eq!(w.room(), 0);
        w.delivered(1);
        assert_eq!(w.room(), 1);
        assert_eq!(w.take_acked(), [1]);
        assert!(w.take_acked().is_empty());
    }

    #[test]
    fn a_failure_stops_sending_until_everything_resolves_then_rewinds() {
        let mut w = Window::new(10);
        for seq in 1..=5 {
            w.sent(seq);
        }
        w.delivered(1);
        w.failed(3);
        assert_eq!(w.room(), 0, "nothing newer goes out after a failure");
        w.failed(2);
        w.delivered(4);
        assert!(!w.ready_to_rewind(), "5 is still outstanding");
        w.failed(5);
        assert!(w.ready_to_rewind());
        assert_eq!(
            w.rewind(),
            1,
            "resume after the last record before the oldest failure"
        );
        assert_eq!(w.room(), 10);
        assert_eq!(w.take_acked(), [1, 4]);
    }

    #[test]
    fn skipped_records_are_passed_over_and_deleted() {
        let mut w = Window::new(10);
        w.sent(1);
        w.skipped(2);
        w.sent(3);
        assert_eq!(w.cursor(), 3);
        assert_eq!(w.take_acked(), [2]);
        assert_eq!(w.in_flight(), 2);
    }
}
