//! Keeps one sensor working: opens it, reads it, checks its values against
//! their plausible ranges, and after a fault closes it and opens it again
//! with backoff. It also keeps the sensor's health, which the agent reports.
//!
//! Rules:
//! 1. A failed read or open skips that reading and is counted; the caller
//!    logs it (rate-limited) and carries on with its other sensors.
//! 2. After any fault except an implausible value, the device is closed and
//!    opened again no sooner than the backoff, which starts at one second
//!    and doubles up to `max_reopen_delay`; a good reading resets it.
//! 3. While waiting for the backoff, reads are skipped without counting
//!    another error.

use std::time::Duration;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::SensorConfig;
use crate::sensor::{Observation, Sensor, SensorError};

/// The first wait before a failed device is opened again.
const FIRST_REOPEN_DELAY: Duration = Duration::from_secs(1);

/// How a sensor is doing, as reported in the agent's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorHealth {
    pub name: String,
    pub kind: Cow<'static, str>,
    /// `ok` after a good reading, `failing` after a fault, `starting` before
    /// the first read.
    pub state: HealthState,
    /// Good readings since start.
    pub readings: u64,
    /// Failed reads and opens since start.
    pub errors: u64,
    /// Faults since the last good reading.
    pub consecutive_errors: u64,
    /// How often the device was opened again after a fault.
    pub reopens: u64,
    /// The most recent fault.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Starting,
    Ok,
    Failing,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Ok => "ok",
            HealthState::Failing => "failing",
        }
    }
}

/// What one [`Supervisor::read`] came to.
#[derive(Debug)]
pub enum Outcome {
    Read(Vec<Observation>),
    /// The reading is skipped (counted in the health).
    Failed(SensorError),
    /// The device failed earlier and its backoff has not run out: nothing was
    /// tried.
    Waiting,
}

/// Opens, reads and re-opens one sensor.
pub struct Supervisor {
    config: SensorConfig,
    limits: Vec<(&'static str, f64, f64)>,
    sensor: Option<Box<dyn Sensor>>,
    /// When the device may be opened again, after a fault.
    reopen_at: Option<Instant>,
    backoff: Duration,
    opened_before: bool,
    health: SensorHealth,
}

impl Supervisor {
    pub fn new(config: SensorConfig) -> Self {
        Supervisor {
            limits: config.effective_limits(),
            health: SensorHealth {
                name: config.name.clone(),
                kind: Cow::Borrowed(config.kind.name()),
                state: HealthState::Starting,
                readings: 0,
                errors: 0,
                consecutive_errors: 0,
                reopens: 0,
                last_error: None,
            },
            config,
            sensor: None,
            reopen_at: None,
            backoff: FIRST_REOPEN_DELAY,
            opened_before: false,
        }
    }

    /// Uses `sensor` as the already opened device (tests, and sensors built
    /// outside [`crate::open`]).
    pub fn with_sensor(mut self, sensor: Box<dyn Sensor>) -> Self {
        self.sensor = Some(sensor);
        self.opened_before = true;
        self
    }

    pub fn config(&self) -> &SensorConfig {
        &self.config
    }

    pub fn health(&self) -> &SensorHealth {
        &self.health
    }

    /// Takes one reading, opening the device first if needed. `timeout`
    /// bounds the open and the read together.
    pub async fn read(&mut self, timeout: Duration) -> Outcome {
        let now = Instant::now();
        if self.sensor.is_none() && self.reopen_at.is_some_and(|at| now < at) {
            return Outcome::Waiting;
        }
        let attempt = tokio::time::timeout(timeout, self.open_and_read()).await;
        let result = attempt.unwrap_or(Err(SensorError::Timeout(timeout)));
        match result.and_then(|obs| self.check(obs)) {
            Ok(observations) => {
                self.backoff = FIRST_REOPEN_DELAY;
                self.reopen_at = None;
                self.health.state = HealthState::Ok;
                self.health.readings += 1;
                self.health.consecutive_errors = 0;
                Outcome::Read(observations)
            }
            Err(error) => {
                if error.needs_reopen() {
                    self.sensor = None;
                    self.reopen_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(self.config.max_reopen_delay);
                }
                self.health.state = HealthState::Failing;
                self.health.errors += 1;
                self.health.consecutive_errors += 1;
                self.health.last_error = Some(error.to_string());
                Outcome::Failed(error)
            }
        }
    }

    async fn open_and_read(&mut self) -> Result<Vec<Observation>, SensorError> {
        if self.sensor.is_none() {
            let sensor = crate::open(&self.config).await?;
            if self.opened_before {
                self.health.reopens += 1;
                tracing::info!(sensor = %self.config.name, device = %self.config.device(), "sensor opened again");
            }
            self.opened_before = true;
            self.sensor = Some(sensor);
        }
        let sensor = self.sensor.as_mut().expect("opened above");
        sensor.read().await
    }

    /// Refuses the whole reading if any limited field is out of its range or
    /// not a number.
    fn check(&self, observations: Vec<Observation>) -> Result<Vec<Observation>, SensorError> {
        for obs in &observations {
            for &(field, min, max) in &self.limits {
                if let Some(value) = obs.float(field)
                    && !(min..=max).contains(&value)
                {
                    return Err(SensorError::Implausible {
                        field: field.into(),
                        value,
                        min,
                        max,
                    });
                }
            }
        }
        Ok(observations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SensorKind;
    use std::sync::{Arc, Mutex};
    use telemetry::FieldValue;

    /// Plays back a script of results, one per read.
    struct Scripted(Arc<Mutex<Vec<Result<f64, &'static str>>>>);

    #[async_trait::async_trait]
    impl Sensor for Scripted {
        fn kind(&self) -> SensorKind {
            SensorKind::SimulatedCpuTemperature
        }
        async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
            match self.0.lock().unwrap().remove(0) {
                Ok(v) => Ok(vec![Observation {
                    measurement: "host",
                    tags: vec![],
                    fields: vec![("cpu_temperature_c", FieldValue::Float(v))],
                }]),
                Err(e) => Err(SensorError::Garbage(e.into())),
            }
        }
    }

    fn supervisor(script: Vec<Result<f64, &'static str>>) -> Supervisor {
        let config = SensorConfig::new(
            "cpu",
            SensorKind::SimulatedCpuTemperature,
            Duration::from_secs(1),
        );
        Supervisor::new(config).with_sensor(Box::new(Scripted(Arc::new(Mutex::new(script)))))
    }

    #[tokio::test(start_paused = true)]
    async fn implausible_values_are_skipped_and_counted_but_keep_the_device_open() {
        let mut s = supervisor(vec![Ok(40.0), Ok(400.0), Ok(f64::NAN), Ok(41.0)]);
        let t = Duration::from_secs(5);
        assert!(matches!(s.read(t).await, Outcome::Read(_)));
        match s.read(t).await {
            Outcome::Failed(SensorError::Implausible { field, value, .. }) => {
                assert_eq!((field.as_str(), value), ("cpu_temperature_c", 400.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.read(t).await,
            Outcome::Failed(SensorError::Implausible { .. })
        ));
        assert_eq!(s.health().state, HealthState::Failing);
        assert!(
            matches!(s.read(t).await, Outcome::Read(o) if o[0].float("cpu_temperature_c") == Some(41.0))
        );
        let h = s.health();
        assert_eq!(
            (h.readings, h.errors, h.consecutive_errors, h.reopens),
            (2, 2, 0, 0)
        );
        assert_eq!(h.state, HealthState::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_closes_the_device_and_it_is_opened_again_after_its_backoff() {
        // The scripted device fails once; the re-opened one is the simulated
        // sensor `crate::open` builds for this kind.
        let mut s = supervisor(vec![Err("noise")]);
        let t = Duration::from_secs(5);
        assert!(matches!(
            s.read(t).await,
            Outcome::Failed(SensorError::Garbage(_))
        ));
        // Within the first second nothing is tried.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(matches!(s.read(t).await, Outcome::Waiting));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(matches!(s.read(t).await, Outcome::Read(_)));
        let h = s.health();
        assert_eq!((h.readings, h.errors, h.reopens), (1, 1, 1));
        assert_eq!(h.last_error.as_deref(), Some("unreadable data: noise"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_that_will_not_open_is_tried_at_1_2_4_then_every_max_reopen_delay() {
        let mut config = SensorConfig::new("vis", SensorKind::Pwd, Duration::from_secs(1));
        config.port = Some("/dev/ttyGONE9".into());
        config.max_reopen_delay = Duration::from_secs(5);
        let mut s = Supervisor::new(config);
        let t = Duration::from_secs(5);
        let mut tried_at = Vec::new();
        let start = Instant::now();
        for _ in 0..160 {
            match s.read(t).await {
                Outcome::Failed(SensorError::Open { .. }) => {
                    tried_at.push((Instant::now() - start).as_millis() as u64 / 100);
                }
                Outcome::Waiting => {}
                other => panic!("{other:?}"),
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // In tenths of a second: at once, then 1, 2, 4 s later, then every 5 s.
        assert_eq!(tried_at, [0, 10, 30, 70, 120]);
        let h = s.health();
        assert_eq!((h.errors, h.readings, h.reopens), (5, 0, 0));
        assert!(h.last_error.as_deref().unwrap().contains("/dev/ttyGONE9"));
    }
}
