//! The Ornstein–Uhlenbeck process behind every simulated quantity.

/// A mean-reverting random walk: `dx = (mean - x) dt / tau + noise`, with the
/// noise scaled so that the long-run standard deviation is `std`.
#[derive(Debug, Clone)]
pub struct OrnsteinUhlenbeck {
    pub mean: f64,
    pub std: f64,
    /// Time constant in seconds: how long the walk takes to forget its state.
    pub tau: f64,
    pub value: f64,
}

impl OrnsteinUhlenbeck {
    /// A process starting at `start`.
    pub fn new(mean: f64, std: f64, tau: f64, start: f64) -> Self {
        OrnsteinUhlenbeck {
            mean,
            std,
            tau,
            value: start,
        }
    }

    /// Advances the process by `dt` seconds, given one standard normal draw.
    /// This is the exact discretisation, so it is right for any `dt`.
    pub fn step(&mut self, dt: f64, normal: f64) -> f64 {
        let decay = (-dt.max(0.0) / self.tau).exp();
        let spread = self.std * (1.0 - decay * decay).sqrt();
        self.value = self.mean + (self.value - self.mean) * decay + spread * normal;
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::SmallRng};
    use rand_distr::StandardNormal;

    fn walk(dt: f64, n: usize) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut p = OrnsteinUhlenbeck::new(10.0, 2.0, 60.0, 10.0);
        (0..n)
            .map(|_| p.step(dt, rng.sample(StandardNormal)))
            .collect()
    }

    fn mean_std(xs: &[f64]) -> (f64, f64) {
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn settles_at_its_mean_and_spread() {
        // Steps of one time constant are nearly independent: 20k samples give
        // the mean and spread to within a few percent.
        let (mean, std) = mean_std(&walk(60.0, 20_000));
        assert!((mean - 10.0).abs() < 0.1, "mean {mean}");
        assert!((std - 2.0).abs() < 0.1, "std {std}");
    }

    #[test]
    fn short_steps_are_correlated_not_noise() {
        let xs = walk(1.0, 5_000);
        let (mean, std) = mean_std(&xs);
        let lag1 = xs
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / ((xs.len() - 1) as f64 * std * std);
        // exp(-1/60) ≈ 0.98 for steps of 1 s with tau = 60 s.
        assert!(lag1 > 0.9, "lag-1 autocorrelation {lag1}");
        let biggest_jump = xs
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f64::max);
        assert!(biggest_jump < 2.0, "a 1 s step jumped {biggest_jump}");
    }
}
