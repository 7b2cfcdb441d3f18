//! Reading Linux sysfs under a configurable root, so tests run against
//! fixture trees. Devices are found by what they are (`name`, `type`), never
//! by their `hwmonN` or `cooling_deviceN` number, which changes between
//! boots.

use std::path::{Path, PathBuf};

use crate::sensor::SensorError;

/// An hwmon device: `<root>/class/hwmon/hwmonN`.
#[derive(Debug, Clone)]
pub struct Hwmon {
    pub dir: PathBuf,
    /// The driver's `name` (`coretemp`, `pwmfan`, `nct6798`).
    pub name: String,
}

/// A thermal zone or cooling device: `<root>/class/thermal/<prefix>N`.
#[derive(Debug, Clone)]
pub struct Thermal {
    pub dir: PathBuf,
    /// Its `type` (`cpu-thermal`, `x86_pkg_temp`, `pwm-fan`, `Fan`).
    pub kind: String,
}

/// A file's contents without the trailing newline.
pub fn read_text(path: &Path) -> Result<String, SensorError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| SensorError::Open {
            device: path.display().to_string(),
            source,
        })
}

/// A file holding one integer, as sysfs attributes do.
pub fn read_integer(path: &Path) -> Result<i64, SensorError> {
    let text = read_text(path)?;
    text.parse().map_err(|_| {
        SensorError::Garbage(format!("{} holds {text:?}, not an integer", path.display()))
    })
}

/// Entries of `dir` whose name is `prefix` followed by a number, in numeric
/// order.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Every hwmon device, ordered by name (then path), so the order does not
/// depend on the boot's numbering.
pub fn hwmon_devices(root: &Path) -> Vec<Hwmon> {
    let mut devices: Vec<Hwmon> = numbered(&root.join("class/hwmon"), "hwmon")
        .into_iter()
        .filter_map(|dir| {
            let name = read_text(&dir.join("name")).ok()?;
            Some(Hwmon { dir, name })
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// Thermal zones (`prefix = "thermal_zone"`) or cooling devices
/// (`"cooling_device"`), in numeric order.
pub fn thermal(root: &Path, prefix: &str) -> Vec<Thermal> {
    numbered(&root.join("class/thermal"), prefix)
        .into_iter()
        .filter_map(|dir| {
            let kind = read_text(&dir.join("type")).ok()?;
            Some(Thermal { dir, kind })
        })
        .collect()
}

/// The channel numbers N for which `<dir>/<prefix>N<suffix>` exists.
pub fn channels(dir: &Path, prefix: &str, suffix: &str) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        })
        .collect();
    found.sort();
    found
}

/// The physical device behind a class entry (its `device` link), to tell
/// when an hwmon and a cooling device are the same fan.
pub fn device_of(dir: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(dir.join("device")).ok()
}

/// Millidegrees Celsius to degrees.
pub fn millidegrees(m: i64) -> f64 {
    m as f64 / 1000.0
}
