//! Exponential backoff with jitter, for retrying a broker or a database.
//!
//! Each failure doubles the base delay up to a maximum; the delay returned is
//! drawn from the upper half of the base ("equal jitter"), so a fleet of
//! devices coming back after an outage does not retry in lockstep. The random
//! draw is passed in, so the arithmetic is tested deterministically.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            base: initial,
        }
    }

    /// The delay before the next attempt. `jitter` is a random number in
    /// `[0, 1)`: the delay is `base/2 + jitter * base/2`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.base;
        self.base = (self.base * 2).min(self.max);
        base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// Starts again from the initial delay; call it after a success.
    pub fn reset(&mut self) {
        self.base = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let top: Vec<_> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(top, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }
}
