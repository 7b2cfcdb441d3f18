//! The sensor interface the edge agent samples through.

use std::time::Duration;

use telemetry::FieldValue;

/// What one sensor read returns for one measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The measurement name (`weather`, `visibility`, `host`, `fan`).
    pub measurement: &'static str,
    /// Tags of the sensor's own, such as `fan=<name>`.
    pub tags: Vec<(String, String)>,
    /// Field names carry their unit: `pressure_hpa`, `temperature_c`, ...
    pub fields: Vec<(&'static str, FieldValue)>,
}

impl Observation {
    /// The value of a float field.
    pub fn float(&self, field: &str) -> Option<f64> {
        self.fields.iter().find_map(|(k, v)| match v {
            FieldValue::Float(f) if *k == field => Some(*f),
            _ => None,
        })
    }

    /// The value of a tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v.as_str()))
    }
}

/// Why a read failed. The reading is skipped; the [`Supervisor`] counts it,
/// and closes and re-opens the device with backoff unless the device answered
/// properly ([`SensorError::Implausible`]).
///
/// [`Supervisor`]: crate::supervisor::Supervisor
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The device file or directory cannot be opened (unplugged, wrong path,
    /// no permission).
    #[error("cannot open {device}: {source}")]
    Open {
        device: String,
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An I²C device did not acknowledge its address or data.
    #[error("no acknowledge on the I²C bus ({0}): is the device connected, at this address?")]
    Nack(String),
    /// Any other bus fault (arbitration lost, bus error).
    #[error("bus error: {0}")]
    Bus(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The device answered, but not in its protocol (noise, a broken frame).
    #[error("unreadable data: {0}")]
    Garbage(String),
    /// Something else answers where the sensor should be.
    #[error("wrong device: {0}")]
    WrongDevice(String),
    /// Nothing of this kind exists (no fan, no CPU temperature sensor).
    #[error("not found: {0}")]
    NotFound(String),
    /// A value outside the configured plausible range.
    #[error("{field} = {value} is outside the plausible range {min} to {max} (sensor.limits)")]
    Implausible {
        field: String,
        value: f64,
        min: f64,
        max: f64,
    },
}

impl SensorError {
    /// Whether the device should be closed and opened again: every fault but
    /// an implausible value from a device that answered in its protocol.
    pub fn needs_reopen(&self) -> bool {
        !matches!(self, SensorError::Implausible { .. })
    }

    /// A short hint for an installer, for `edge-agent sensors`.
    pub fn hint(&self, kind: SensorKind) -> Option<&'static str> {
        use std::io::ErrorKind::{PermissionDenied, WouldBlock};
        Some(match (self, kind) {
            (SensorError::Open { source, .. }, SensorKind::Bme280)
                if source.kind() == PermissionDenied =>
            {
                "the agent's user needs to be in group i2c"
            }
            (SensorError::Open { source, .. }, SensorKind::Pwd)
                if source.kind() == PermissionDenied =>
            {
                "the agent's user needs to be in group dialout"
            }
            (SensorError::Open { source, .. }, SensorKind::Pwd) if source.kind() == WouldBlock => {
                "another program holds the port (a running edge-agent? stop it first)"
            }
            (SensorError::Open { .. }, SensorKind::Bme280) => {
                "is I²C enabled (dtparam=i2c_arm=on in config.txt) and the bus number right?"
            }
            (SensorError::Open { .. }, SensorKind::Pwd) => {
                "is the adapter plugged in? ls /dev/serial/by-id/ shows stable names"
            }
            (SensorError::Open { .. } | SensorError::NotFound(_), _) => {
                "check sysfs_root, or name the device to use"
            }
            (SensorError::Nack(_), _) => "check wiring, power and the address (0x76 or 0x77)",
            (SensorError::Timeout(_), SensorKind::Pwd) => {
                "check the port, baud rate, unit id, power, and that the PWD is in polled mode (AMES 2 0)"
            }
            (SensorError::Garbage(_), SensorKind::Pwd) => {
                "check the baud rate (the PWD's BAUD command) and the wiring"
            }
            (SensorError::WrongDevice(_), _) => "another chip answers at this address",
            (SensorError::Implausible { .. }, _) => {
                "a faulty or badly placed sensor, or set sensor.limits if the value is real"
            }
            _ => return None,
        })
    }
}

/// Runs blocking device I/O (I²C ioctls, sysfs attributes that talk to a
/// chip) on tokio's blocking threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SensorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SensorError::Io(std::io::Error::other(e)))
}

/// Runs `f` on the device in `slot` on a blocking thread, and puts the
/// device back. If the caller gives up waiting (a timeout), the slot stays
/// empty and the next call fails, so the supervisor opens the device again.
pub async fn with_device<D: Send + 'static, T: Send + 'static>(
    slot: &mut Option<D>,
    f: impl FnOnce(&mut D) -> T + Send + 'static,
) -> Result<T, SensorError> {
    let mut device = slot
        .take()
        .ok_or_else(|| SensorError::Garbage("an earlier read was abandoned".into()))?;
    let (device, out) = blocking(move || {
        let out = f(&mut device);
        (device, out)
    })
    .await?;
    *slot = Some(device);
    Ok(out)
}

/// A source of observations.
#[async_trait::async_trait]
pub trait Sensor: Send {
    /// The kind, as written in config.
    fn kind(&self) -> SensorKind;

    /// Takes one reading. A sensor may return several observations (one per
    /// fan, say). Drivers doing blocking I/O must move it off the async
    /// runtime's worker threads.
    async fn read(&mut self) -> Result<Vec<Observation>, SensorError>;
}

/// The sensor kinds a config can name in `[[sensor]] kind = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Bosch BME280 (pressure, temperature, humidity) or BMP280 (no humidity)
    /// on I²C (`weather`).
    Bme280,
    /// Vaisala PWD present-weather sensor on a serial port (`visibility`).
    Pwd,
    /// The host's CPU temperature (`host`).
    CpuTemperature,
    /// The host's fans from hwmon and thermal cooling devices (`fan`).
    Fan,
    /// Pressure, temperature and humidity (`weather`).
    SimulatedWeather,
    /// Visibility (`visibility`).
    SimulatedVisibility,
    /// CPU temperature (`host`).
    SimulatedCpuTemperature,
    /// Speed and duty of one fan (`fan`, tagged `fan=fan0`).
    SimulatedFan,
}

impl SensorKind {
    pub const ALL: [SensorKind; 8] = [
        SensorKind::Bme280,
        SensorKind::Pwd,
        SensorKind::CpuTemperature,
        SensorKind::Fan,
        SensorKind::SimulatedWeather,
        SensorKind::SimulatedVisibility,
        SensorKind::SimulatedCpuTemperature,
        SensorKind::SimulatedFan,
    ];

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            SensorKind::Bme280 => "bme280",
            SensorKind::Pwd => "pwd",
            SensorKind::CpuTemperature => "cpu_temperature",
            SensorKind::Fan => "fan",
            SensorKind::SimulatedWeather => "simulated_weather",
            SensorKind::SimulatedVisibility => "simulated_visibility",
            SensorKind::SimulatedCpuTemperature => "simulated_cpu_temperature",
            SensorKind::SimulatedFan => "simulated_fan",
        }
    }

    /// Whether this kind reads simulated values.
    pub fn is_simulated(self) -> bool {
        matches!(
            self,
            SensorKind::SimulatedWeather
                | SensorKind::SimulatedVisibility
                | SensorKind::SimulatedCpuTemperature
                | SensorKind::SimulatedFan
        )
    }

    /// The float fields this kind produces that have plausibility limits,
    /// with their default range: the instrument's specified range, or what
    /// is physically possible at the surface of the Earth.
    pub fn default_limits(self) -> &'static [(&'static str, f64, f64)] {
        match self {
            // BME280 datasheet operating range.
            SensorKind::Bme280 | SensorKind::SimulatedWeather => &[
                ("pressure_hpa", 300.0, 1100.0),
                ("temperature_c", -40.0, 85.0),
                ("humidity_pct", 0.0, 100.0),
            ],
            // PWD: 10 m to 20 km (PWD22), 50 km for the long-range models.
            SensorKind::Pwd | SensorKind::SimulatedVisibility => &[
                ("visibility_m", 0.0, 100_000.0),
                ("visibility_10min_m", 0.0, 100_000.0),
                ("precipitation_mm_h", 0.0, 1_000.0),
            ],
            SensorKind::CpuTemperature | SensorKind::SimulatedCpuTemperature => {
                &[("cpu_temperature_c", -55.0, 150.0)]
            }
            SensorKind::Fan | SensorKind::SimulatedFan => {
                &[("fan_rpm", 0.0, 50_000.0), ("fan_duty_pct", 0.0, 100.0)]
            }
        }
    }
}
