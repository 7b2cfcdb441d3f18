//! Bosch BME280 (pressure, temperature, humidity) and BMP280 (no humidity)
//! on I²C.
//!
//! - [`compensation`]: Bosch's integer formulas, pure.
//! - [`driver`]: the chip protocol over any embedded-hal 1.0 `I2c`.
//! - this module: the [`Sensor`] on Linux's `/dev/i2c-N` (linux-embedded-hal
//!   `I2cdev`), whose blocking calls run on tokio's blocking threads.

pub mod compensation;
pub mod driver;

use std::path::Path;

use embedded_hal::i2c::ErrorKind;
use linux_embedded_hal::{Delay, I2cdev};
use telemetry::FieldValue;

use crate::config::SensorConfig;
use crate::sensor::{Observation, Sensor, SensorError, SensorKind, blocking, with_device};
pub use driver::{Bme280, Chip, Measurement};

type LinuxBme280 = Bme280<I2cdev, Delay>;

/// A BME280/BMP280 on a Linux I²C bus.
pub struct Bme280Sensor {
    /// `None` only while a measurement runs on a blocking thread; if that
    /// read is abandoned (timeout) the device is dropped and re-opened.
    device: Option<LinuxBme280>,
}

impl Bme280Sensor {
    /// Opens the bus, checks the chip and reads its calibration.
    pub async fn open(config: &SensorConfig) -> Result<Self, SensorError> {
        let bus = config.bus();
        let address = config.address();
        let device = blocking(move || open_blocking(&bus, address)).await??;
        Ok(Bme280Sensor {
            device: Some(device),
        })
    }
}

fn open_blocking(bus: &Path, address: u8) -> Result<LinuxBme280, SensorError> {
    let i2c = I2cdev::new(bus).map_err(|e| SensorError::Open {
        device: bus.display().to_string(),
        source: e.into(),
    })?;
    Bme280::new(i2c, Delay, address).map_err(to_sensor_error)
}

#[async_trait::async_trait]
impl Sensor for Bme280Sensor {
    fn kind(&self) -> SensorKind {
        SensorKind::Bme280
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        let result = with_device(&mut self.device, |device| device.measure()).await?;
        Ok(vec![observation(result.map_err(to_sensor_error)?)])
    }
}

/// The `weather` observation of one measurement.
pub fn observation(m: Measurement) -> Observation {
    let mut fields = vec![
        ("pressure_hpa", FieldValue::Float(m.pressure_hpa)),
        ("temperature_c", FieldValue::Float(m.temperature_c)),
    ];
    if let Some(h) = m.humidity_pct {
        fields.push(("humidity_pct", FieldValue::Float(h)));
    }
    Observation {
        measurement: "weather",
        tags: Vec::new(),
        fields,
    }
}

/// Sorts a driver error into the faults the supervisor knows.
pub fn to_sensor_error<E: std::fmt::Debug>(e: driver::Error<E>) -> SensorError {
    use driver::Error;
    let text = e.to_string();
    match e {
        Error::Bus {
            kind: ErrorKind::NoAcknowledge(_),
            ..
        } => SensorError::Nack(text),
        Error::Bus { .. } => SensorError::Bus(text),
        Error::WrongChip(_) => SensorError::WrongDevice(text),
        Error::NotReady(ms) => SensorError::Timeout(std::time::Duration::from_millis(ms.into())),
        Error::BadCalibration(_) | Error::Skipped(_) => SensorError::Garbage(text),
    }
}

#[cfg(test)]
mod tests;
