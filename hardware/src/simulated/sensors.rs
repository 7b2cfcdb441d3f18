//! The simulated sensors: one struct per kind, each a small model advanced by
//! the real time elapsed between reads.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use telemetry::FieldValue;

use super::OrnsteinUhlenbeck;
use crate::sensor::{Observation, Sensor, SensorError, SensorKind};

/// Random numbers and the time of the previous read, shared by every model.
struct Driver {
    rng: SmallRng,
    last: Option<Instant>,
}

impl Driver {
    fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Driver { rng, last: None }
    }

    /// Seconds since the previous read (0 for the first).
    fn elapsed(&mut self) -> f64 {
        let now = Instant::now();
        let dt = self.last.map_or(0.0, |last| (now - last).as_secs_f64());
        self.last = Some(now);
        dt
    }

    fn normal(&mut self) -> f64 {
        self.rng.sample(StandardNormal)
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Pressure, air temperature and relative humidity at a coastal station.
pub struct Weather {
    driver: Driver,
    pressure: OrnsteinUhlenbeck,
    temperature_anomaly: OrnsteinUhlenbeck,
    humidity_anomaly: OrnsteinUhlenbeck,
}

impl Weather {
    pub fn new(seed: Option<u64>) -> Self {
        Weather {
            driver: Driver::new(seed),
            // Synoptic systems: ±6 hPa around standard pressure over hours.
            pressure: OrnsteinUhlenbeck::new(1013.25, 6.0, 6.0 * 3600.0, 1013.25),
            temperature_anomaly: OrnsteinUhlenbeck::new(0.0, 1.5, 3600.0, 0.0),
            humidity_anomaly: OrnsteinUhlenbeck::new(0.0, 6.0, 1800.0, 0.0),
        }
    }

    /// Advances the model by `dt` seconds to wall-clock time `unix_secs`, and
    /// returns (pressure hPa, temperature °C, relative humidity %).
    pub fn step(&mut self, dt: f64, unix_secs: f64) -> (f64, f64, f64) {
        let pressure = self.pressure.step(dt, self.driver.normal());
        // Warmest mid-afternoon (15:00 UTC), coolest before dawn.
        let hour = unix_secs.rem_euclid(86_400.0) / 3600.0;
        let diurnal = 12.0 + 5.0 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
        let temperature = diurnal + self.temperature_anomaly.step(dt, self.driver.normal());
        // Relative humidity falls as the air warms.
        let humidity = (70.0 - 3.0 * (temperature - 12.0)
            + self.humidity_anomaly.step(dt, self.driver.normal()))
        .clamp(5.0, 100.0);
        (pressure, temperature, humidity)
    }
}

#[async_trait::async_trait]
impl Sensor for Weather {
    fn kind(&self) -> SensorKind {
        SensorKind::SimulatedWeather
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        let dt = self.driver.elapsed();
        let (pressure, temperature, humidity) = self.step(dt, unix_seconds());
        Ok(vec![Observation {
            measurement: "weather",
            tags: vec![],
            fields: vec![
                ("pressure_hpa", FieldValue::Float(pressure)),
                ("temperature_c", FieldValue::Float(temperature)),
                ("humidity_pct", FieldValue::Float(humidity)),
            ],
        }])
    }
}

/// Meteorological optical range, as a forward-scatter sensor reports it.
pub struct Visibility {
    driver: Driver,
    /// Natural log of the extinction coefficient in 1/km.
    log_extinction: OrnsteinUhlenbeck,
}

impl Visibility {
    /// Shortest and longest visibility a present-weather sensor reports.
    pub const RANGE_M: (f64, f64) = (10.0, 20_000.0);

    pub fn new(seed: Option<u64>) -> Self {
        let clear = (0.3f64).ln(); // σ = 0.3/km: about 10 km visibility
        Visibility {
            driver: Driver::new(seed),
            log_extinction: OrnsteinUhlenbeck::new(clear, 0.8, 1800.0, clear),
        }
    }

    /// Advances by `dt` seconds and returns the visibility in metres.
    pub fn step(&mut self, dt: f64) -> f64 {
        let sigma_per_km = self.log_extinction.step(dt, self.driver.normal()).exp();
        // Koschmieder with the WMO 5 % contrast threshold: MOR = 3 / σ.
        (3000.0 / sigma_per_km).clamp(Self::RANGE_M.0, Self::RANGE_M.1)
    }
}

#[async_trait::async_trait]
impl Sensor for Visibility {
    fn kind(&self) -> SensorKind {
        SensorKind::SimulatedVisibility
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        let dt = self.driver.elapsed();
        Ok(vec![Observation {
            measurement: "visibility",
            tags: vec![],
            fields: vec![("visibility_m", FieldValue::Float(self.step(dt)))],
        }])
    }
}

/// The gateway's own CPU temperature.
pub struct CpuTemperature {
    driver: Driver,
    temperature: OrnsteinUhlenbeck,
}

impl CpuTemperature {
    pub fn new(seed: Option<u64>) -> Self {
        CpuTemperature {
            driver: Driver::new(seed),
            temperature: OrnsteinUhlenbeck::new(48.0, 4.0, 60.0, 48.0),
        }
    }

    /// Advances by `dt` seconds and returns °C.
    pub fn step(&mut self, dt: f64) -> f64 {
        self.temperature
            .step(dt, self.driver.normal())
            .clamp(25.0, 95.0)
    }
}

#[async_trait::async_trait]
impl Sensor for CpuTemperature {
    fn kind(&self) -> SensorKind {
        SensorKind::SimulatedCpuTemperature
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        let dt = self.driver.elapsed();
        Ok(vec![Observation {
            measurement: "host",
            tags: vec![],
            fields: vec![("cpu_temperature_c", FieldValue::Float(self.step(dt)))],
        }])
    }
}

/// A temperature-controlled cooling fan.
pub struct Fan {
    driver: Driver,
    heat: OrnsteinUhlenbeck,
    rpm_noise: OrnsteinUhlenbeck,
}

impl Fan {
    /// Speed at 100 % duty.
    pub const MAX_RPM: f64 = 5000.0;

    pub fn new(seed: Option<u64>) -> Self {
        Fan {
            driver: Driver::new(seed),
            heat: OrnsteinUhlenbeck::new(55.0, 5.0, 120.0, 55.0),
            rpm_noise: OrnsteinUhlenbeck::new(0.0, 40.0, 5.0, 0.0),
        }
    }

    /// Advances by `dt` seconds and returns (speed rpm, duty %). The fan
    /// controller ramps duty from 20 % at 45 °C to 100 % at 65 °C.
    pub fn step(&mut self, dt: f64) -> (f64, f64) {
        let temperature = self.heat.step(dt, self.driver.normal());
        let duty = ((temperature - 45.0) * 4.0 + 20.0).clamp(20.0, 100.0);
        let rpm =
            (duty / 100.0 * Self::MAX_RPM + self.rpm_noise.step(dt, self.driver.normal())).max(0.0);
        (rpm, duty)
    }
}

#[async_trait::async_trait]
impl Sensor for Fan {
    fn kind(&self) -> SensorKind {
        SensorKind::SimulatedFan
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        let dt = self.driver.elapsed();
        let (rpm, duty) = self.step(dt);
        Ok(vec![Observation {
            measurement: "fan",
            tags: vec![("fan".into(), "fan0".into())],
            fields: vec![
                ("fan_rpm", FieldValue::Float(rpm)),
                ("fan_duty_pct", FieldValue::Float(duty)),
            ],
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86_400.0;

    #[test]
    fn weather_stays_in_a_realistic_band_over_a_simulated_month() {
        let mut w = Weather::new(Some(1));
        let t0 = 1_700_000_000.0;
        for minute in 0..(31 * 24 * 60) {
            let (p, t, h) = w.step(60.0, t0 + minute as f64 * 60.0);
            assert!((960.0..1060.0).contains(&p), "pressure {p}");
            assert!((-10.0..35.0).contains(&t), "temperature {t}");
            assert!((5.0..=100.0).contains(&h), "humidity {h}");
        }
    }

    #[test]
    fn afternoons_are_warmer_than_nights() {
        let mut w = Weather::new(Some(2));
        let (mut afternoon, mut night) = (0.0, 0.0);
        for day in 0..60 {
            let midnight = 1_700_006_400.0 - 1_700_006_400f64.rem_euclid(DAY) + day as f64 * DAY;
            afternoon += w.step(3600.0, midnight + 15.0 * 3600.0).1;
            night += w.step(3600.0, midnight + 3.0 * 3600.0).1;
        }
        assert!(
            afternoon / 60.0 > night / 60.0 + 5.0,
            "{afternoon} vs {night}"
        );
    }

    #[test]
    fn visibility_wanders_within_the_sensor_range() {
        let mut v = Visibility::new(Some(3));
        let xs: Vec<f64> = (0..10_000).map(|_| v.step(60.0)).collect();
        assert!(xs.iter().all(|x| (10.0..=20_000.0).contains(x)));
        let fog = xs.iter().filter(|&&x| x < 10_000.0).count();
        assert!(
            fog > 0 && fog < xs.len(),
            "visibility should vary, got {fog} low of {}",
            xs.len()
        );
    }

    #[test]
    fn fan_speed_follows_its_duty() {
        let mut f = Fan::new(Some(4));
        for _ in 0..1000 {
            let (rpm, duty) = f.step(10.0);
            assert!((20.0..=100.0).contains(&duty));
            assert!(
                (rpm - duty / 100.0 * Fan::MAX_RPM).abs() < 400.0,
                "{rpm} rpm at {duty}%"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_values() {
        let a: Vec<f64> = {
            let mut c = CpuTemperature::new(Some(9));
            (0..10).map(|_| c.step(1.0)).collect()
        };
        let mut c = CpuTemperature::new(Some(9));
        let b: Vec<f64> = (0..10).map(|_| c.step(1.0)).collect();
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn every_kind_opens_and_reads_float_fields() {
        for kind in SensorKind::ALL.into_iter().filter(|k| k.is_simulated()) {
            let mut config = crate::SensorConfig::new("s", kind, std::time::Duration::from_secs(1));
            config.seed = Some(5);
            let mut s = crate::open(&config).await.unwrap();
            assert_eq!(s.kind(), kind);
            let obs = s.read().await.unwrap();
            assert!(!obs.is_empty());
            for o in obs {
                for (name, value) in o.fields {
                    assert!(
                        matches!(value, FieldValue::Float(v) if v.is_finite()),
                        "{kind:?} {name}"
                    );
                }
            }
        }
    }
}
