//! Rate limiting for log lines about faults that repeat.
//!
//! A broker that is down fails every reconnect attempt; logging each one would
//! bury everything else in the journal. A [`Throttle`] lets the first
//! occurrence through, then at most one per period, and says how many were
//! held back in between. Time is passed in, so it is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence. Returns `Some(n)` when it should be logged, where
    /// `n` is how many occurrences were held back since the last one logged.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the history, so the next occurrence is logged at once. Call it
    /// when the fault has cleared.
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

/// One [`Throttle`] per kind of fault (a librdkafka facility, a sink's
/// error kind), shared between threads. The kinds are a small fixed set
/// named by the code, so the map stays small.
#[derive(Debug)]
pub struct Throttles {
    period: Duration,
    kinds: Mutex<HashMap<String, Throttle>>,
}

impl Throttles {
    pub fn new(period: Duration) -> Self {
        Throttles {
            period,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// [`Throttle::allow`] for `kind`, now.
    pub fn allow(&self, kind: &str) -> Option<u64> {
        self.allow_at(kind, Instant::now())
    }

    pub fn allow_at(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.get_mut(kind) {
            Some(t) => t.allow(now),
            None => {
                let mut t = Throttle::new(self.period);
                let allowed = t.allow(now);
                kinds.insert(kind.to_owned(), t);
                allowed
            }
        }
    }
}

/// Once a minute per kind.
impl Default for Throttles {
    fn default() -> Self {
        Throttles::new(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow(t0), Some(0));
        for s in 1..10 {
            assert_eq!(t.allow(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(60)), Some(9));
        assert_eq!(t.allow(t0 + Duration::from_secs(61)), None);
        t.reset();
        assert_eq!(t.allow(t0 + Duration::from_secs(62)), Some(0));
    }

    #[test]
    fn each_kind_has_its_own_period() {
        let t0 = Instant::now();
        let t = Throttles::new(Duration::from_secs(60));
        assert_eq!(t.allow_at("FAIL", t0), Some(0));
        assert_eq!(t.allow_at("FAIL", t0), None);
        assert_eq!(t.allow_at("error", t0), Some(0));
        assert_eq!(t.allow_at("FAIL", t0 + Duration::from_secs(60)), Some(1));
    }
}
