//! # hardware: where readings come from
//!
//! A [`Sensor`] produces [`Observation`]s: a measurement name, the fields it
//! measured (named with their unit, e.g. `pressure_hpa`), and any tags of its
//! own (a fan's name). The edge agent's sampler adds the device and sensor
//! tags and the timestamp, which turns an observation into a reading.
//!
//! ## Layout
//! - [`sensor`]: the [`Sensor`] trait, [`Observation`], [`SensorError`] (the
//!   faults a driver reports), and [`SensorKind`].
//! - [`config`]: one `[[sensor]]` table ([`SensorConfig`]) and its checks.
//! - [`supervisor`]: opens a sensor, checks its values against their
//!   plausible ranges, re-opens it with backoff after a fault, and keeps its
//!   [`SensorHealth`].
//! - [`bme280`]: Bosch BME280/BMP280 over embedded-hal 1.0 I²C.
//! - [`pwd`]: Vaisala PWD present-weather sensors over a serial port.
//! - [`host`]: CPU temperature and fans from sysfs (and sysinfo).
//! - [`simulated`]: simulated sensors for every quantity Buoy knows (the
//!   default, so everything runs on a laptop). Their values follow
//!   mean-reverting random walks with realistic time constants.
//!
//! ## Invariants
//! - Physical quantities are always `f64` fields, so a time-series database
//!   never sees an int/float conflict. Codes and status values (a PWD's
//!   present weather code, its hardware status) are always `i64`.
//! - `read` never blocks the async runtime: blocking I/O (I²C ioctls) runs
//!   on tokio's blocking threads.
//! - A fault fails one reading of one sensor; it never stops the caller.

pub mod bme280;
pub mod config;
pub mod host;
pub mod pwd;
pub mod sensor;
pub mod simulated;
pub mod supervisor;

pub use config::SensorConfig;
pub use sensor::{Observation, Sensor, SensorError, SensorKind};
pub use supervisor::{HealthState, Outcome, SensorHealth, Supervisor};

/// Opens the sensor a `[[sensor]]` table describes.
pub async fn open(config: &SensorConfig) -> Result<Box<dyn Sensor>, SensorError> {
    let seed = config.seed;
    Ok(match config.kind {
        SensorKind::Bme280 => Box::new(bme280::Bme280Sensor::open(config).await?),
        SensorKind::Pwd => Box::new(pwd::PwdSensor::open(config)?),
        SensorKind::CpuTemperature => Box::new(host::CpuTemperature::open(config)?),
        SensorKind::Fan => Box::new(host::Fans::open(config)?),
        SensorKind::SimulatedWeather => Box::new(simulated::Weather::new(seed)),
        SensorKind::SimulatedVisibility => Box::new(simulated::Visibility::new(seed)),
        SensorKind::SimulatedCpuTemperature => Box::new(simulated::CpuTemperature::new(seed)),
        SensorKind::SimulatedFan => Box::new(simulated::Fan::new(seed)),
    })
}
