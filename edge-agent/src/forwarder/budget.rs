//! The bandwidth budget (`forward.max_bytes_per_sec`), with no I/O: a token
//! bucket over the bytes the producer puts on the wire.
//!
//! librdkafka compresses whole batches, so what one record will cost on the
//! wire is not known when it is handed over. The bucket therefore charges an
//! estimate (the record's size times the wire/raw ratio seen so far) and,
//! each time librdkafka's statistics report how many bytes really went out
//! (`txbytes`, every request to every broker, protocol overhead included),
//! charges the difference. Over any stretch longer than a couple of
//! statistics intervals, the bytes on the wire follow the budget, whatever
//! the compression ratio.

use std::time::{Duration, Instant};

/// The ratio assumed before librdkafka has reported anything: no compression.
const INITIAL_RATIO: f64 = 1.0;
/// The smallest bucket, so a single large record can always go.
const MIN_BURST: f64 = 4096.0;

#[derive(Debug, Clone)]
pub struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_refill: Instant,
    /// Wire bytes per byte handed over, learned from the statistics.
    ratio: f64,
    /// Raw bytes handed over and bytes charged since the last statistics.
    raw_since: u64,
    charged_since: f64,
    /// The producer's `txbytes` at the last statistics.
    last_tx: Option<u64>,
}

impl Budget {
    /// A budget of `bytes_per_sec`, allowing bursts of half a second.
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        let rate = bytes_per_sec as f64;
        let burst = (rate / 2.0).max(MIN_BURST);
        Budget {
            rate,
            burst,
            tokens: burst,
            last_refill: now,
            ratio: INITIAL_RATIO,
            raw_since: 0,
            charged_since: 0.0,
            last_tx: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last_refill = now;
    }

    /// Whether a record may be handed over now. A record may overdraw the
    /// bucket; the next ones wait until it is paid back.
    pub fn allows(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    /// How many records of `raw_bytes` each the bucket holds now (at least 1
    /// while it is positive).
    pub fn records_allowed(&mut self, raw_bytes: usize, now: Instant) -> usize {
        if !self.allows(now) {
            return 0;
        }
        let cost = (raw_bytes.max(1) as f64 * self.ratio).max(1.0);
        ((self.tokens / cost).ceil() as usize).max(1)
    }

    /// Charges a record of `raw_bytes` handed to the producer. Live readings
    /// exempt from the budget are charged too, so the backlog gets only what
    /// they leave.
    pub fn charge(&mut self, raw_bytes: usize) {
        let cost = raw_bytes as f64 * self.ratio;
        self.tokens -= cost;
        self.raw_since += raw_bytes as u64;
        self.charged_since += cost;
    }

    /// The producer has put `tx_total` bytes on the wire since it was
    /// created: charge (or refund) the difference from the estimates, and
    /// learn the ratio. Call it as often as convenient: only a new report changes anything.
    pub fn observe_wire(&mut self, tx_total: u64, now: Instant) {
        if self.last_tx == Some(tx_total) {
            return;
        }
        self.refill(now);
        let sent = match self.last_tx {
            Some(last) if tx_total >= last => tx_total - last,
            // The first report, or a new producer counting from zero.
            _ => tx_total,
        };
        self.last_tx = Some(tx_total);
        self.tokens = (self.tokens - (sent as f64 - self.charged_since)).min(self.burst);
        if self.raw_since >= 1024 && sent > 0 {
            let seen = sent as f64 / self.raw_since as f64;
            self.ratio = (0.7 * self.ratio + 0.3 * seen).clamp(0.01, 4.0);
        }
        self.raw_since = 0;
        self.charged_since = 0.0;
    }

    /// How long until the bucket is positive again.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens > 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-self.tokens + 1.0) / self.rate).max(Duration::from_millis(5))
        }
    }

    /// The wire/raw ratio learned so far.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated link: the producer compresses at `ratio`, and statistics
    /// arrive every `stats` interval. Returns the bytes on the wire after
    /// `secs` of sending as fast as the budget allows.
    fn simulate(rate: u64, ratio: f64, secs: u64, stats: Duration) -> f64 {
        let start = Instant::now();
        let mut b = Budget::new(rate, start);
        let record = 200;
        let step = Duration::from_millis(1);
        let mut now = start;
        let mut wire = 0.0;
        let mut next_stats = start + stats;
        let mut reported = 0;
        while now < start + Duration::from_secs(secs) {
            while b.allows(now) {
                b.charge(record);
                wire += record as f64 * ratio;
            }
            if now >= next_stats {
                reported = wire as u64;
                next_stats += stats;
            }
            // The forwarder looks far more often than librdkafka reports.
            b.observe_wire(reported, now);
            now += step;
        }
        wire
    }

    #[test]
    fn the_wire_follows_the_budget_whatever_the_compression() {
        for ratio in [0.1, 0.3, 1.0, 1.5] {
            let wire = simulate(10_000, ratio, 30, Duration::from_millis(500));
            let share = wire / (10_000.0 * 30.0);
            assert!(
                (0.95..=1.05).contains(&share),
                "ratio {ratio}: {wire} bytes on the wire is {share:.3} of the budget"
            );
        }
    }

    #[test]
    fn the_ratio_is_learned() {
        let start = Instant::now();
        let mut b = Budget::new(1_000_000, start);
        b.observe_wire(0, start);
        let mut tx = 0;
        for i in 1..20 {
            b.charge(10_000);
            tx += 2_500;
            b.observe_wire(tx, start + Duration::from_millis(100 * i));
        }
        assert!((b.ratio() - 0.25).abs() < 0.01, "{}", b.ratio());
    }

    #[test]
    fn an_overdrawn_bucket_says_how_long_to_wait() {
        let start = Instant::now();
        let mut b = Budget::new(1000, start);
        assert!(b.allows(start));
        b.charge(6096);
        assert!(!b.allows(start));
        let wait = b.wait(start);
        assert!(
            wait >= Duration::from_millis(2000) && wait <= Duration::from_millis(2100),
            "{wait:?}"
        );
        assert!(b.allows(start + wait));
        assert_eq!(b.records_allowed(100, start + wait), 1);
    }
}
