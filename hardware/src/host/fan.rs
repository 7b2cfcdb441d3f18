//! Fans: speed from hwmon `fanN_input` (rpm) and duty from `pwmN` (0 to 255),
//! plus thermal cooling devices that are fans (`cur_state` of `max_state`),
//! such as the Raspberry Pi 5's cooling fan or an ACPI fan.
//!
//! One observation per fan, tagged `fan=<hwmon name>/fanN` (or the cooling
//! device's type when it has no hwmon). A cooling device that is the same
//! physical device as an hwmon fan (the Pi 5's `pwm-fan`) adds `fan_state`
//! to that fan's observation instead of reporting it twice. A `pwm-fan`
//! without a tachometer has no `fanN_input` and reports duty only.

use std::path::{Path, PathBuf};

use telemetry::FieldValue;

use super::sysfs;
use crate::config::SensorConfig;
use crate::sensor::{Observation, Sensor, SensorError, SensorKind, blocking};

/// Where one fan's values are read from.
#[derive(Debug, Clone)]
struct FanFiles {
    name: String,
    rpm: Option<PathBuf>,
    pwm: Option<PathBuf>,
    /// A cooling device's `cur_state`, and its `max_state`.
    state: Option<(PathBuf, PathBuf)>,
}

pub struct Fans {
    fans: std::sync::Arc<Vec<FanFiles>>,
}

impl Fans {
    /// Finds every fan (or the hwmon devices named `config.hwmon`).
    pub fn open(config: &SensorConfig) -> Result<Self, SensorError> {
        let root = config.sysfs_root();
        let fans = discover(&root, config.hwmon.as_deref());
        if fans.is_empty() {
            return Err(SensorError::NotFound(format!(
                "no fan under {}{}: no hwmon fanN_input or pwmN, and no cooling device of a fan type",
                root.display(),
                config
                    .hwmon
                    .as_deref()
                    .map_or(String::new(), |h| format!(" with hwmon name {h:?}"))
            )));
        }
        Ok(Fans {
            fans: std::sync::Arc::new(fans),
        })
    }
}

fn discover(root: &Path, only: Option<&str>) -> Vec<FanFiles> {
    let mut fans = Vec::new();
    let mut devices = Vec::new();
    for dev in sysfs::hwmon_devices(root) {
        if only.is_some_and(|o| o != dev.name) {
            continue;
        }
        let mut ns = sysfs::channels(&dev.dir, "fan", "_input");
        ns.extend(sysfs::channels(&dev.dir, "pwm", ""));
        ns.sort();
        ns.dedup();
        for n in ns {
            let file = |name: String| Some(dev.dir.join(name)).filter(|p| p.exists());
            devices.push((sysfs::device_of(&dev.dir), fans.len()));
            fans.push(FanFiles {
                name: format!("{}/fan{n}", dev.name),
                rpm: file(format!("fan{n}_input")),
                pwm: file(format!("pwm{n}")),
                state: None,
            });
        }
    }
    for cooling in sysfs::thermal(root, "cooling_device") {
        if !cooling.kind.to_ascii_lowercase().contains("fan") {
            continue;
        }
        let state = Some((cooling.dir.join("cur_state"), cooling.dir.join("max_state")));
        let device = sysfs::device_of(&cooling.dir);
        let same = device
            .is_some()
            .then(|| devices.iter().find(|(d, _)| *d == device))
            .flatten();
        match same {
            Some(&(_, i)) => fans[i].state = state,
            None if only.is_none() => fans.push(FanFiles {
                name: cooling.kind.clone(),
                rpm: None,
                pwm: None,
                state,
            }),
            None => {}
        }
    }
    fans
}

#[async_trait::async_trait]
impl Sensor for Fans {
    fn kind(&self) -> SensorKind {
        SensorKind::Fan
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        // hwmon attributes of I²C chips are read from the chip on access.
        let fans = self.fans.clone();
        blocking(move || fans.iter().map(read_fan).collect()).await?
    }
}

fn read_fan(fan: &FanFiles) -> Result<Observation, SensorError> {
    let mut fields = Vec::new();
    if let Some(rpm) = &fan.rpm {
        fields.push((
            "fan_rpm",
            FieldValue::Float(sysfs::read_integer(rpm)? as f64),
        ));
    }
    let mut duty = None;
    if let Some(pwm) = &fan.pwm {
        duty = Some(sysfs::read_integer(pwm)? as f64 / 255.0 * 100.0);
    }
    if let Some((cur, max)) = &fan.state {
        let cur = sysfs::read_integer(cur)?;
        let max = sysfs::read_integer(max)?;
        fields.push(("fan_state", FieldValue::Float(cur as f64)));
        if duty.is_none() && max > 0 {
            duty = Some(cur as f64 / max as f64 * 100.0);
        }
    }
    if let Some(duty) = duty {
        fields.push(("fan_duty_pct", FieldValue::Float(duty)));
    }
    Ok(Observation {
        measurement: "fan",
        tags: vec![("fan".into(), fan.name.clone())],
        fields,
    })
}
