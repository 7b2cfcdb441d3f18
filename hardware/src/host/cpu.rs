//! CPU temperature: sysinfo's component list on the real `/sys`, else (and
//! for fixture roots, which sysinfo cannot be pointed at) the same list read
//! from hwmon; then the thermal zones.
//!
//! Components are labelled as sysinfo labels them (`<hwmon name> <label>`,
//! or `<hwmon name> tempN` without a label file), so a `component` setting
//! means the same thing on both routes.

use std::path::{Path, PathBuf};

use telemetry::FieldValue;

use super::sysfs;
use crate::config::SensorConfig;
use crate::sensor::{Observation, Sensor, SensorError, SensorKind, with_device};

/// CPU temperature components, most specific first: Intel's package sensor,
/// AMD's control temperature, the Raspberry Pi's SoC sensor.
const CPU_COMPONENTS: &[&str] = &[
    "coretemp Package id 0",
    "k10temp Tctl",
    "k10temp Tdie",
    "cpu_thermal temp1",
    "soc_thermal temp1",
    "cpu-thermal temp1",
];

/// Thermal zone types that measure the CPU.
const CPU_ZONES: &[&str] = &[
    "x86_pkg_temp",
    "cpu-thermal",
    "cpu_thermal",
    "soc-thermal",
    "soc_thermal",
    "cpu0-thermal",
];

/// Where the CPU temperature comes from.
enum Route {
    /// sysinfo's component, by label.
    Sysinfo(Box<sysinfo::Components>, String),
    /// An hwmon `tempN_input` or thermal zone `temp` file.
    File(PathBuf),
}

pub struct CpuTemperature {
    /// `None` only while a read runs on a blocking thread.
    route: Option<Route>,
}

impl CpuTemperature {
    /// Finds the CPU's temperature sensor.
    pub fn open(config: &SensorConfig) -> Result<Self, SensorError> {
        let root = config.sysfs_root();
        let wanted = config.component.as_deref();
        if root == Path::new("/sys")
            && let Ok(components) = sysinfo::Components::new_with_refreshed_list()
        {
            let labels: Vec<&str> = components.iter().map(|c| c.label()).collect();
            if let Some(label) = pick(&labels, wanted, CPU_COMPONENTS) {
                let label = label.to_owned();
                return Ok(CpuTemperature {
                    route: Some(Route::Sysinfo(Box::new(components), label)),
                });
            }
        }
        let components = hwmon_temperatures(&root);
        let labels: Vec<&str> = components.iter().map(|(l, _)| l.as_str()).collect();
        if let Some(label) = pick(&labels, wanted, CPU_COMPONENTS) {
            let file = components
                .iter()
                .find(|(l, _)| l == label)
                .expect("picked from it");
            return Ok(CpuTemperature {
                route: Some(Route::File(file.1.clone())),
            });
        }
        let zones = sysfs::thermal(&root, "thermal_zone");
        let types: Vec<&str> = zones.iter().map(|z| z.kind.as_str()).collect();
        if let Some(kind) = pick(&types, wanted, CPU_ZONES) {
            let zone = zones
                .iter()
                .find(|z| z.kind == kind)
                .expect("picked from it");
            return Ok(CpuTemperature {
                route: Some(Route::File(zone.dir.join("temp"))),
            });
        }
        Err(SensorError::NotFound(format!(
            "no CPU temperature {}under {}; components: [{}]; thermal zones: [{}]; name one with `component`",
            wanted.map_or(String::new(), |w| format!("called {w:?} ")),
            root.display(),
            labels.join(", "),
            types.join(", ")
        )))
    }
}

/// The `wanted` entry if given, else the first of `known` that is present.
fn pick<'a>(present: &[&'a str], wanted: Option<&str>, known: &[&str]) -> Option<&'a str> {
    match wanted {
        Some(w) => present.iter().find(|p| **p == w).copied(),
        None => known
            .iter()
            .find_map(|k| present.iter().find(|p| *p == k).copied()),
    }
}

/// Every hwmon temperature, labelled as sysinfo labels it.
fn hwmon_temperatures(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for dev in sysfs::hwmon_devices(root) {
        for n in sysfs::channels(&dev.dir, "temp", "_input") {
            let label = sysfs::read_text(&dev.dir.join(format!("temp{n}_label")))
                .unwrap_or_else(|_| format!("temp{n}"));
            found.push((
                format!("{} {label}", dev.name),
                dev.dir.join(format!("temp{n}_input")),
            ));
        }
    }
    found
}

#[async_trait::async_trait]
impl Sensor for CpuTemperature {
    fn kind(&self) -> SensorKind {
        SensorKind::CpuTemperature
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        // Reading an hwmon attribute may talk to a chip; keep it off the
        // runtime's worker threads.
        let celsius = with_device(&mut self.route, read_celsius).await?;
        Ok(vec![Observation {
            measurement: "host",
            tags: Vec::new(),
            fields: vec![("cpu_temperature_c", FieldValue::Float(celsius?))],
        }])
    }
}

fn read_celsius(route: &mut Route) -> Result<f64, SensorError> {
    match route {
        Route::Sysinfo(components, label) => {
            components.refresh(false);
            let c = components
                .iter()
                .find(|c| c.label() == label.as_str())
                .ok_or_else(|| SensorError::NotFound(format!("component {label:?} is gone")))?;
            let t = c.temperature().ok_or_else(|| {
                SensorError::Garbage(format!("component {label:?} has no temperature"))
            })?;
            // sysinfo keeps an f32; the kernel's unit is 0.001 °C.
            Ok((f64::from(t) * 1000.0).round() / 1000.0)
        }
        Route::File(path) => Ok(sysfs::millidegrees(sysfs::read_integer(path)?)),
    }
}
