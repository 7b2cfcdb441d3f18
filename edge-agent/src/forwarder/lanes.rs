//! The forwarder's bookkeeping, with no I/O: which ranges of the journal are
//! being sent (lanes), what is in flight, what Kafka acknowledged, and where
//! each lane resumes after a failure.
//!
//! A lane is a range of sequence numbers sent in order, with its own cursor.
//! The *live* lane is open-ended: it takes every newly committed reading. In
//! `fifo` order it is the only lane, starting at the oldest reading. In
//! `live_first` order, whatever the live lane has fallen behind on (the
//! backlog at start-up, the readings taken during an outage) is cut off into a
//! *backlog* lane, and the live lane jumps to the newest committed reading.
//! Backlog lanes are drained oldest first, with what the live lane leaves.
//!
//! Rules:
//! 1. Within a lane, records are handed over in sequence order.
//! 2. When a delivery fails, nothing more is handed over in any lane; once
//!    every outstanding record has resolved, each lane goes back to just
//!    before its oldest failure and sending resumes from the journal.
//! 3. At most `MAX_BACKLOG_LANES` backlog lanes exist. Beyond that the two
//!    youngest merge into one, which may send a few records twice (harmless:
//!    a reading's series and timestamp make it the same point).
//! 4. Acknowledged (and skipped) sequence numbers are collected for the
//!    journal writer, which deletes them.

/// Most backlog lanes kept apart.
pub const MAX_BACKLOG_LANES: usize = 8;

/// Which kind of lane a range belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneKind {
    Live,
    Backlog,
}

#[derive(Debug, Clone, PartialEq)]
struct Lane {
    /// Sequence numbers above this belong to the lane.
    start: u64,
    /// The last sequence number of a backlog lane; `None` for the live lane.
    end: Option<u64>,
    /// The highest sequence number handed over (or skipped).
    cursor: u64,
    in_flight: usize,
    /// Oldest failed sequence number not yet resent.
    rewind_to: Option<u64>,
}

impl Lane {
    fn new(start: u64, end: Option<u64>) -> Lane {
        Lane {
            start,
            end,
            cursor: start,
            in_flight: 0,
            rewind_to: None,
        }
    }

    fn contains(&self, seq: u64) -> bool {
        seq > self.start && self.end.is_none_or(|end| seq <= end)
    }

    /// The last sequence number this lane may send now.
    fn limit(&self, committed: u64) -> u64 {
        self.end.map_or(committed, |end| end.min(committed))
    }

    fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.cursor >= end)
            && self.in_flight == 0
            && self.rewind_to.is_none()
    }
}

/// What to read from the journal and hand over next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub lane: LaneKind,
    /// Read records with a sequence number above this...
    pub after: u64,
    /// ...up to and including this one...
    pub up_to: u64,
    /// ...and at most this many.
    pub limit: usize,
}

/// Which lanes may send now (the bandwidth budget and send windows decide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub live: bool,
    pub backlog: bool,
    /// Most backlog records in flight (keeps librdkafka's queue short, so a
    /// live reading never waits behind much backlog).
    pub backlog_in_flight: usize,
}

/// Every lane and what is in flight in each.
#[derive(Debug, Clone)]
pub struct Lanes {
    /// Oldest first; disjoint, and all below the live lane.
    backlog: Vec<Lane>,
    live: Lane,
    max_in_flight: usize,
    acked: Vec<u64>,
}

impl Lanes {
    /// Lanes for a journal whose newest committed reading is `head`. With
    /// `live_first`, everything up to `head` is backlog and the live lane
    /// starts after it.
    pub fn new(max_in_flight: usize, head: u64, live_first: bool) -> Self {
        let mut lanes = Lanes {
            backlog: Vec::new(),
            live: Lane::new(0, None),
            max_in_flight: max_in_flight.max(1),
            acked: Vec::new(),
        };
        if live_first {
            lanes.jump_live(head);
        }
        lanes
    }

    pub fn in_flight(&self) -> usize {
        self.live.in_flight + self.backlog_in_flight()
    }

    fn backlog_in_flight(&self) -> usize {
        self.backlog.iter().map(|l| l.in_flight).sum()
    }

    pub fn backlog_lanes(&self) -> usize {
        self.backlog.len()
    }

    /// The live lane's cursor.
    pub fn live_cursor(&self) -> u64 {
        self.live.cursor
    }

    /// Whether a failure waits to be resent (nothing is handed over then).
    pub fn failure_pending(&self) -> bool {
        self.lanes().any(|l| l.rewind_to.is_some())
    }

    fn lanes(&self) -> impl Iterator<Item = &Lane> {
        self.backlog.iter().chain(std::iter::once(&self.live))
    }

    fn lane_of(&mut self, seq: u64) -> Option<&mut Lane> {
        if self.live.contains(seq) {
            return Some(&mut self.live);
        }
        self.backlog.iter_mut().find(|l| l.contains(seq))
    }

    /// The next range to hand over, live lane first. `None` when nothing may
    /// be sent: the window is full, a failure is pending, or every allowed
    /// lane has sent everything committed.
    pub fn next(&self, committed: u64, allowed: Allowed) -> Option<Next> {
        if self.failure_pending() {
            return None;
        }
        let room = self.max_in_flight.saturating_sub(self.in_flight());
        if room == 0 {
            return None;
        }
        if allowed.live && self.live.cursor < committed {
            return Some(Next {
                lane: LaneKind::Live,
                after: self.live.cursor,
                up_to: committed,
                limit: room,
            });
        }
        if !allowed.backlog {
            return None;
        }
        // The live lane always keeps a tenth of the window.
        let cap = allowed
            .backlog_in_flight
            .min(self.max_in_flight - self.max_in_flight / 10)
            .max(1);
        let backlog_room = cap.saturating_sub(self.backlog_in_flight()).min(room);
        if backlog_room == 0 {
            return None;
        }
        self.backlog.iter().find_map(|l| {
            let up_to = l.limit(committed);
            (l.cursor < up_to).then_some(Next {
                lane: LaneKind::Backlog,
                after: l.cursor,
                up_to,
                limit: backlog_room,
            })
        })
    }

    /// `seq` was handed to librdkafka.
    pub fn sent(&mut self, seq: u64) {
        let lane = self.lane_of(seq).expect("a sent record belongs to a lane");
        debug_assert!(seq > lane.cursor, "records are sent in order");
        lane.cursor = seq;
        lane.in_flight += 1;
    }

    /// `seq` cannot be sent at all (unreadable); it is passed over and
    /// deleted.
    pub fn skipped(&mut self, seq: u64) {
        if let Some(lane) = self.lane_of(seq) {
            lane.cursor = lane.cursor.max(seq);
        }
        self.acked.push(seq);
        self.tidy();
    }

    /// The journal holds nothing more up to `up_to` for the lane that reaches
    /// it: everything there was acknowledged and deleted already.
    pub fn skipped_to(&mut self, up_to: u64) {
        if let Some(lane) = self.lane_of(up_to) {
            lane.cursor = lane.cursor.max(up_to);
        }
        self.tidy();
    }

    /// Kafka acknowledged `seq`.
    pub fn delivered(&mut self, seq: u64) {
        if let Some(lane) = self.lane_of(seq) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
        }
        self.acked.push(seq);
        self.tidy();
    }

    /// Delivery of `seq` failed; it will be sent again.
    pub fn failed(&mut self, seq: u64) {
        if let Some(lane) = self.lane_of(seq) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            lane.rewind_to = Some(lane.rewind_to.map_or(seq, |r| r.min(seq)));
        }
    }

    /// The acknowledged sequence numbers collected since the last call.
    pub fn take_acked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.acked)
    }

    /// A failure is waiting and nothing is outstanding any more.
    pub fn ready_to_rewind(&self) -> bool {
        self.failure_pending() && self.in_flight() == 0
    }

    /// Moves each lane with a failure back to just before its oldest one;
    /// returns the oldest sequence number that will be sent again. Records
    /// after it that were acknowledged may be sent twice, which is harmless.
    pub fn rewind(&mut self) -> u64 {
        let mut oldest = u64::MAX;
        for lane in self
            .backlog
            .iter_mut()
            .chain(std::iter::once(&mut self.live))
        {
            if let Some(seq) = lane.rewind_to.take() {
                lane.cursor = lane.cursor.min(seq - 1);
                oldest = oldest.min(seq);
            }
        }
        oldest
    }

    /// Makes everything the live lane has not sent up to `head` a backlog
    /// lane, and starts the live lane after `head`.
    pub fn jump_live(&mut self, head: u64) {
        if head <= self.live.cursor {
            return;
        }
        let mut old = std::mem::replace(&mut self.live, Lane::new(head, None));
        old.end = Some(head);
        self.backlog.push(old);
        if self.backlog.len() > MAX_BACKLOG_LANES {
            let young = self.backlog.pop().expect("two lanes");
            let older = self.backlog.last_mut().expect("two lanes");
            older.end = young.end;
            older.in_flight += young.in_flight;
            older.rewind_to = match (older.rewind_to, young.rewind_to) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.tidy();
    }

    /// How many records the live lane has not handed over yet.
    pub fn live_pending(&self, committed: u64) -> u64 {
        committed.saturating_sub(self.live.cursor)
    }

    /// Nothing is left to send up to `committed` and nothing is in flight.
    pub fn drained(&self, committed: u64) -> bool {
        !self.failure_pending()
            && self.in_flight() == 0
            && self.lanes().all(|l| l.cursor >= l.limit(committed))
    }

    /// Roughly how many records up to `committed` are not yet acknowledged
    /// (counting ones already deleted in ranges being resent).
    pub fn unsent(&self, committed: u64) -> u64 {
        self.lanes()
            .map(|l| l.limit(committed).saturating_sub(l.cursor) + l.in_flight as u64)
            .sum()
    }

    fn tidy(&mut self) {
        self.backlog.retain(|l| !l.finished());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Allowed = Allowed {
        live: true,
        backlog: true,
        backlog_in_flight: usize::MAX,
    };

    /// Hands over every record `next` offers (as the forwarder would) and
    /// returns the sequence numbers in the order sent.
    fn send_all(lanes: &mut Lanes, committed: u64, allowed: Allowed) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(next) = lanes.next(committed, allowed) {
            let to = next.up_to.min(next.after + next.limit as u64);
            for seq in next.after + 1..=to {
                lanes.sent(seq);
                out.push(seq);
            }
        }
        out
    }

    #[test]
    fn fifo_sends_in_order_and_bounds_what_is_in_flight() {
        let mut l = Lanes::new(3, 10, false);
        assert_eq!(send_all(&mut l, 10, ALL), [1, 2, 3]);
        l.delivered(1);
        assert_eq!(send_all(&mut l, 10, ALL), [4]);
        assert_eq!(l.take_acked(), [1]);
        assert!(l.take_acked().is_empty());
        assert_eq!(l.backlog_lanes(), 0);
    }

    #[test]
    fn live_first_sends_new_readings_before_the_backlog() {
        let mut l = Lanes::new(100, 10, true);
        // Two new readings arrive after start-up: they go first.
        let order = send_all(&mut l, 12, ALL);
        assert_eq!(order, [11, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        for seq in order {
            l.delivered(seq);
        }
        assert_eq!(l.backlog_lanes(), 0, "a drained backlog lane is dropped");
        assert!(l.drained(12));
    }

    #[test]
    fn the_backlog_leaves_room_for_live_readings() {
        let mut l = Lanes::new(10, 100, true);
        let sent = send_all(&mut l, 100, ALL);
        assert_eq!(
            sent.len(),
            9,
            "the backlog takes at most 9/10 of the window"
        );
        assert_eq!(send_all(&mut l, 101, ALL), [101]);
        let limited = Allowed {
            backlog_in_flight: 2,
            ..ALL
        };
        let mut l = Lanes::new(10, 100, true);
        assert_eq!(send_all(&mut l, 100, limited), [1, 2]);
    }

    #[test]
    fn a_lane_that_may_not_send_waits() {
        let mut l = Lanes::new(100, 5, true);
        let live_only = Allowed {
            backlog: false,
            ..ALL
        };
        assert_eq!(send_all(&mut l, 7, live_only), [6, 7]);
        assert!(!l.drained(7));
        assert_eq!(send_all(&mut l, 7, ALL), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_failure_stops_every_lane_until_everything_resolves_then_each_rewinds() {
        let mut l = Lanes::new(100, 5, true);
        assert_eq!(send_all(&mut l, 8, ALL), [6, 7, 8, 1, 2, 3, 4, 5]);
        l.delivered(6);
        l.failed(7);
        l.delivered(1);
        l.failed(3);
        assert!(l.next(9, ALL).is_none(), "nothing goes out after a failure");
        for seq in [8, 2, 4, 5] {
            l.failed(seq);
        }
        assert!(l.ready_to_rewind());
        assert_eq!(l.rewind(), 2);
        assert_eq!(l.take_acked(), [6, 1]);
        // The live lane resends from 7, the backlog from 2; 3 is resent even
        // though it failed after 2: everything after the oldest failure is.
        assert_eq!(send_all(&mut l, 9, ALL), [7, 8, 9, 2, 3, 4, 5]);
    }

    #[test]
    fn a_jump_leaves_what_the_live_lane_had_not_sent_to_the_backlog() {
        let mut l = Lanes::new(100, 0, true);
        assert_eq!(l.backlog_lanes(), 0, "nothing to catch up on");
        assert_eq!(send_all(&mut l, 3, ALL), [1, 2, 3]);
        // An outage: 4..=20 were never sent when the live lane jumps.
        l.jump_live(20);
        assert_eq!(l.live_cursor(), 20);
        assert_eq!(
            send_all(&mut l, 22, ALL),
            [
                21, 22, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
            ]
        );
        // 1..=3 still in flight belong to the old lane, now backlog.
        l.failed(2);
        for seq in (1..=22).filter(|&s| s != 2) {
            l.delivered(seq);
        }
        assert!(l.ready_to_rewind());
        assert_eq!(l.rewind(), 2);
        assert_eq!(send_all(&mut l, 22, ALL), (2..=20).collect::<Vec<_>>());
    }

    #[test]
    fn backlog_lanes_are_bounded_by_merging_the_youngest() {
        let mut l = Lanes::new(1000, 0, true);
        let mut head = 0;
        for _ in 0..(MAX_BACKLOG_LANES + 5) {
            head += 10;
            // The live lane sends one reading, then falls behind and jumps.
            let one_more = l.live_cursor() + 1;
            send_all(
                &mut l,
                one_more,
                Allowed {
                    backlog: false,
                    ..ALL
                },
            );
            l.jump_live(head);
        }
        assert_eq!(l.backlog_lanes(), MAX_BACKLOG_LANES);
        // Every unsent reading is still in some lane, oldest lane first.
        let sent = send_all(&mut l, head, ALL);
        let unsent: Vec<u64> = (1..=head).filter(|s| (s - 1) % 10 != 0).collect();
        for seq in &unsent {
            assert!(sent.contains(seq), "{seq} was never sent: {sent:?}");
        }
        assert!(sent.windows(2).take(8).all(|w| w[0] < w[1]));
    }

    #[test]
    fn skipped_records_are_passed_over_and_deleted() {
        let mut l = Lanes::new(10, 0, false);
        l.sent(1);
        l.skipped(2);
        l.sent(3);
        assert_eq!(l.take_acked(), [2]);
        assert_eq!(l.in_flight(), 2);
        assert_eq!(l.next(3, ALL), None);
        l.skipped_to(5);
        assert_eq!(l.next(5, ALL), None);
    }
}
