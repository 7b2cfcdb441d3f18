//! # The sampler: sensors → readings → journal writer
//!
//! One task per enabled sensor reads it on its interval, turns each
//! observation into a [`Reading`] (adding the `device_id` and `sensor` tags
//! and the sampling time), and hands it to the journal writer.
//!
//! A failing read is counted, logged (rate-limited) and retried at the next
//! interval; other sensors carry on. If the journal writer cannot keep up and
//! its queue is full, the reading is dropped and counted rather than letting
//! memory grow.

use std::sync::Arc;
use std::time::Duration;

use hardware::{Observation, Sensor};
use telemetry::Reading;
use telemetry::throttle::Throttle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::status::Status;

/// How long one read may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples one sensor.
pub struct Sampler {
    pub device_id: String,
    pub name: String,
    pub interval: Duration,
    pub sensor: Box<dyn Sensor>,
    pub clock: Arc<dyn Clock>,
    pub out: mpsc::Sender<Reading>,
    pub status: Arc<Status>,
}

impl Sampler {
    /// Samples until `shutdown`. Dropping `out` on return is what tells the
    /// journal writer this sampler is done.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        // After a stall, carry on at the normal pace instead of catching up
        // with a burst of readings stamped a few microseconds apart.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut errors = Throttle::new(Duration::from_secs(60));
        let mut full = Throttle::new(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let taken_at = self.clock.now_ns();
            let result = match tokio::time::timeout(READ_TIMEOUT, self.sensor.read()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no reading within {READ_TIMEOUT:?}")),
            };
            match result {
                Ok(observations) => {
                    errors.reset();
                    for obs in observations {
                        let reading = self.to_reading(obs, taken_at);
                        self.status.sampled(1);
                        match self.out.try_send(reading) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                self.status.dropped_queue_full();
                                if let Some(held_back) = full.allow(std::time::Instant::now()) {
                                    tracing::warn!(
                                        sensor = %self.name,
                                        similar_not_logged = held_back,
                                        "journal writer is behind; reading dropped"
                                    );
                                }
                            }
                            Err(TrySendError::Closed(_)) => return,
                        }
                    }
                }
                Err(error) => {
                    self.status.sensor_error();
                    if let Some(held_back) = errors.allow(std::time::Instant::now()) {
                        tracing::warn!(
                            sensor = %self.name,
                            kind = self.sensor.kind().name(),
                            %error,
                            similar_not_logged = held_back,
                            "sensor read failed; retrying at the next interval"
                        );
                    }
                }
            }
        }
    }

    fn to_reading(&self, obs: Observation, timestamp_ns: i64) -> Reading {
        let mut reading = Reading::new(obs.measurement, timestamp_ns)
            .with_tag("device_id", self.device_id.as_str())
            .with_tag("sensor", self.name.as_str());
        for (k, v) in obs.tags {
            reading.tags.insert(k, v);
        }
        for (k, v) in obs.fields {
            reading.fields.insert(k.to_owned(), v);
        }
        reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use hardware::{SensorError, SensorKind};
    use telemetry::FieldValue;

    /// A sensor that fails every other read.
    struct Flaky(u32);

    #[async_trait::async_trait]
    impl Sensor for Flaky {
        fn kind(&self) -> SensorKind {
            SensorKind::SimulatedFan
        }
        async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
            self.0 += 1;
            if self.0.is_multiple_of(2) {
                return Err(SensorError::Garbage("noise".into()));
            }
            Ok(vec![Observation {
                measurement: "fan",
                tags: vec![("fan".into(), "fan0".into())],
                fields: vec![("fan_rpm", FieldValue::Float(self.0 as f64))],
            }])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn samples_on_its_interval_tags_readings_and_survives_errors() {
        let (tx, mut rx) = mpsc::channel(100);
        let status = Arc::new(Status::default());
        let shutdown = CancellationToken::new();
        let sampler = Sampler {
            device_id: "pi-1".into(),
            name: "cooling".into(),
            interval: Duration::from_secs(1),
            sensor: Box::new(Flaky(0)),
            clock: Arc::new(SystemClock),
            out: tx,
            status: status.clone(),
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
        assert_eq!(status.snapshot().sensor_errors, 5);
        let r = &got[0];
        assert_eq!(r.measurement, "fan");
        assert_eq!(r.tag("device_id"), Some("pi-1"));
        assert_eq!(r.tag("sensor"), Some("cooling"));
        assert_eq!(r.tag("fan"), Some("fan0"));
        assert!(r.validate().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_journal_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = mpsc::channel(2);
        let status = Arc::new(Status::default());
        let shutdown = CancellationToken::new();
        let sampler = Sampler {
            device_id: "pi-1".into(),
            name: "env".into(),
            interval: Duration::from_secs(1),
            sensor: hardware::open(SensorKind::SimulatedWeather, Some(1)).unwrap(),
            clock: Arc::new(SystemClock),
            out: tx,
            status: status.clone(),
        };
        let task = tokio::spawn(sampler.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        shutdown.cancel();
        task.await.unwrap();
        let s = status.snapshot();
        assert_eq!((s.sampled, s.dropped_queue_full), (5, 3));
    }
}
