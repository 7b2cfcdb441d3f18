//! # The sampler: sensors → readings → journal writer
//!
//! One task per enabled sensor reads it on its interval through its
//! [`Supervisor`] (which opens it, checks its values against their plausible
//! ranges and re-opens it with backoff after a fault), turns each
//! observation into a [`Reading`] (adding the `device_id` and `sensor` tags
//! and the sampling time), and hands it to the journal writer.
//!
//! A failing read is counted, logged (rate-limited) and retried at the next
//! interval; other sensors carry on. The sensor's health goes to [`Stats`]
//! after every read. If the journal writer cannot keep up and its queue is
//! full, the reading is dropped and counted rather than letting memory grow.

use std::sync::Arc;
use std::time::Duration;

use hardware::{HealthState, Observation, Outcome, Supervisor};
use telemetry::Reading;
use telemetry::throttle::Throttle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::journal::Sampled;
use crate::journal::record::Taken;
use crate::stats::Stats;

/// How long one read (with opening the device) may take before it counts
/// as failed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples one sensor.
pub struct Sampler {
    pub device_id: String,
    pub sensor: Supervisor,
    pub clock: Arc<dyn Clock>,
    pub out: mpsc::Sender<Sampled>,
    pub stats: Arc<Stats>,
}

impl Sampler {
    /// Counts a failed read, and logs it (at most once a minute).
    fn read_failed(&self, error: &hardware::SensorError, log: &mut Throttle) {
        self.stats.sensor_error();
        if let Some(held_back) = log.allow(std::time::Instant::now()) {
            let config = self.sensor.config();
            tracing::warn!(
                sensor = %config.name,
                kind = config.kind.name(),
                device = %config.device(),
                %error,
                similar_not_logged = held_back,
                "sensor read failed; reading skipped, retrying"
            );
        }
    }

    /// Hands each observation to the journal writer as a reading (dropped,
    /// and counted, while the writer is behind); `false` once the writer is
    /// gone.
    fn hand_over(
        &self,
        name: &str,
        observations: Vec<Observation>,
        wall_ns: i64,
        taken: Taken,
        full: &mut Throttle,
    ) -> bool {
        for obs in observations {
            let reading = to_reading(&self.device_id, name, obs, wall_ns);
            self.stats.sampled(1);
            let sampled = Sampled {
                reading,
                taken: Some(taken),
            };
            match self.out.try_send(sampled) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.stats.dropped_queue_full();
                    if let Some(held_back) = full.allow(std::time::Instant::now()) {
                        tracing::warn!(
                            sensor = %name,
                            similar_not_logged = held_back,
                            "journal writer is behind; reading dropped"
                        );
                    }
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// Samples until `shutdown`. Dropping `out` on return is what tells the
    /// journal writer this sampler is done.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = self.sensor.config().name.clone();
        let kind = self.sensor.config().kind.name();
        let period = self.sensor.config().interval;
        let mut ticker = tokio::time::interval(period);
        // After a stall, carry on at the normal pace instead of catching up
        // with a burst of readings stamped a few microseconds apart.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_tick: Option<tokio::time::Instant> = None;
        let mut errors = Throttle::new(Duration::from_secs(60));
        let mut full = Throttle::new(Duration::from_secs(60));
        self.stats.sensor_health(self.sensor.health());
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            // tokio keeps to its schedule for a tick up to 5 ms late, so the
            // next can follow at once: at most one reading per half interval
            // (two within a millisecond would be one point in most databases).
            let now = tokio::time::Instant::now();
            if last_tick.is_some_and(|t| now - t < period / 2) {
                continue;
            }
            last_tick = Some(now);
            let stamp = self.clock.stamp();
            let taken = Taken {
                mono_ns: stamp.mono_ns,
                synced: stamp.synced,
            };
            let was_failing = self.sensor.health().state == HealthState::Failing;
            let outcome = tokio::select! {
                outcome = self.sensor.read(READ_TIMEOUT) => outcome,
                _ = shutdown.cancelled() => return,
            };
            self.stats.sensor_health(self.sensor.health());
            match outcome {
                Outcome::Read(observations) => {
                    errors.reset();
                    if was_failing {
                        tracing::info!(sensor = %name, kind, "sensor reads again");
                    }
                    if !self.hand_over(&name, observations, stamp.wall_ns, taken, &mut full) {
                        return;
                    }
                }
                Outcome::Failed(error) => self.read_failed(&error, &mut errors),
                Outcome::Waiting => {}
            }
        }
    }
}

/// The reading an observation of sensor `name` becomes: its measurement,
/// fields and tags, plus the `device_id` and `sensor` tags and the time.
pub fn to_reading(device_id: &str, name: &str, obs: Observation, timestamp_ns: i64) -> Reading {
    let mut reading = Reading::new(obs.measurement, timestamp_ns)
        .with_tag("device_id", device_id)
        .with_tag("sensor", name);
    for (k, v) in obs.tags {
        reading.tags.insert(k, v);
    }
    for (k, v) in obs.fields {
        reading.fields.insert(k.to_owned(), v);
    }
    reading
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use hardware::{Sensor, SensorConfig, SensorError, SensorKind};
    use telemetry::FieldValue;

    /// A sensor whose every other reading is implausible (a negative fan
    /// speed).
    struct Flaky(u32);

    #[async_trait::async_trait]
    impl Sensor for Flaky {
        fn kind(&self) -> SensorKind {
            SensorKind::SimulatedFan
        }
        async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
            self.0 += 1;
            let rpm = if self.0.is_multiple_of(2) {
                -1.0
            } else {
                f64::from(self.0)
            };
            Ok(vec![Observation {
                measurement: "fan",
                tags: vec![("fan".into(), "fan0".into())],
                fields: vec![("fan_rpm", FieldValue::Float(rpm))],
            }])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn samples_on_its_interval_tags_readings_and_survives_errors() {
        let (tx, mut rx) = mpsc::channel(100);
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let config = SensorConfig::new("cooling", SensorKind::Fan, Duration::from_secs(1));
        let sampler = Sampler {
            device_id: "pi-1".into(),
            sensor: Supervisor::new(config).with_sensor(Box::new(Flaky(0))),
            clock: Arc::new(SystemClock::default()),
            out: tx,
            stats: stats.clone(),
        };
        let task = tokio::spawn(sampler.run(shutdown.clone()));
        // Ticks at 0, 1, ..., 9 s: ten reads, every other one failing.
        tokio::time::sleep(Duration::from_millis(9_500)).await;
        shutdown.cancel();
        task.await.unwrap();
        let mut got = Vec::new();
        while let Ok(r) = rx.try_recv() {
            got.push(r);
        }
        assert_eq!(got.len(), 5);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.sensor_errors, 5);
        let health = &snapshot.sensors[0];
        assert_eq!(
            (health.name.as_str(), health.readings, health.errors),
            ("cooling", 5, 5)
        );
        assert_eq!(
            health.reopens, 0,
            "an implausible value keeps the device open"
        );
        assert!(
            health
                .last_error
                .as_deref()
                .unwrap()
                .contains("fan_rpm = -1")
        );
        let taken = got[0].taken.expect("the sampler stamps every reading");
        assert!(taken.mono_ns > 0);
        let r = &got[0].reading;
        assert_eq!(r.measurement, "fan");
        assert_eq!(r.tag("device_id"), Some("pi-1"));
        assert_eq!(r.tag("sensor"), Some("cooling"));
        assert_eq!(r.tag("fan"), Some("fan0"));
        assert!(r.validate().is_ok());
    }

    /// Records when it is read; every other read takes almost two
    /// intervals, so that the next tick is late and the one after due at once.
    struct Uneven(Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>);

    #[async_trait::async_trait]
    impl Sensor for Uneven {
        fn kind(&self) -> SensorKind {
            SensorKind::SimulatedFan
        }
        async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
            let slow = {
                let mut reads = self.0.lock().unwrap();
                reads.push(tokio::time::Instant::now());
                reads.len() % 2 == 1
            };
            if slow {
                tokio::time::sleep(Duration::from_micros(9_900)).await;
            }
            Ok(vec![Observation {
                measurement: "fan",
                tags: Vec::new(),
                fields: vec![("fan_rpm", FieldValue::Float(1.0))],
            }])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_tick_is_not_followed_by_a_second_reading_at_once() {
        let (tx, mut rx) = mpsc::channel(1_000);
        let shutdown = CancellationToken::new();
        let reads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let config = SensorConfig::new("fan", SensorKind::Fan, Duration::from_millis(5));
        let sampler = Sampler {
            device_id: "pi-1".into(),
            sensor: Supervisor::new(config).with_sensor(Box::new(Uneven(reads.clone()))),
            clock: Arc::new(SystemClock::default()),
            out: tx,
            stats: Arc::new(Stats::default()),
        };
        let task = tokio::spawn(sampler.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.cancel();
        task.await.unwrap();
        let reads = reads.lock().unwrap();
        assert!(reads.len() >= 20, "{} reads", reads.len());
        let closest = reads.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(
            closest >= Duration::from_micros(2_500),
            "two reads {closest:?} apart, on a 5 ms interval"
        );
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_journal_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = mpsc::channel(2);
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let mut config =
            SensorConfig::new("env", SensorKind::SimulatedWeather, Duration::from_secs(1));
        config.seed = Some(1);
        let sampler = Sampler {
            device_id: "pi-1".into(),
            sensor: Supervisor::new(config),
            clock: Arc::new(SystemClock::default()),
            out: tx,
            stats: stats.clone(),
        };
        let task = tokio::spawn(sampler.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        shutdown.cancel();
        task.await.unwrap();
        let s = stats.snapshot();
        assert_eq!((s.sampled, s.dropped_queue_full), (5, 3));
    }
}
