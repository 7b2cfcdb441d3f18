//! The sensor interface the edge agent samples through.

use telemetry::FieldValue;

use crate::simulated;

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

/// Why a read failed. The sampler counts it, logs it (rate-limited), and tries
/// again at the next interval; other sensors carry on.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("unreadable data: {0}")]
    Garbage(String),
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
    pub const ALL: [SensorKind; 4] = [
        SensorKind::SimulatedWeather,
        SensorKind::SimulatedVisibility,
        SensorKind::SimulatedCpuTemperature,
        SensorKind::SimulatedFan,
    ];

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            SensorKind::SimulatedWeather => "simulated_weather",
            SensorKind::SimulatedVisibility => "simulated_visibility",
            SensorKind::SimulatedCpuTemperature => "simulated_cpu_temperature",
            SensorKind::SimulatedFan => "simulated_fan",
        }
    }
}

/// Opens a sensor of the given kind. `seed` makes a simulated sensor's values
/// reproducible; without it they differ on every run.
pub fn open(kind: SensorKind, seed: Option<u64>) -> Result<Box<dyn Sensor>, SensorError> {
    Ok(match kind {
        SensorKind::SimulatedWeather => Box::new(simulated::Weather::new(seed)),
        SensorKind::SimulatedVisibility => Box::new(simulated::Visibility::new(seed)),
        SensorKind::SimulatedCpuTemperature => Box::new(simulated::CpuTemperature::new(seed)),
        SensorKind::SimulatedFan => Box::new(simulated::Fan::new(seed)),
    })
}
