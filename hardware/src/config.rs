//! One `[[sensor]]` table of the edge agent's config, and its validation.
//!
//! The table is flat: the keys that apply depend on `kind`, and a key given
//! for a kind it does not apply to is refused, so a typo cannot silently
//! leave a driver at its default.
//!
//! ```toml
//! [[sensor]]
//! name = "env"
//! kind = "bme280"
//! bus = "/dev/i2c-1"
//! address = 0x76
//! limits = { temperature_c = [-30, 50] }
//!
//! [[sensor]]
//! name = "vis"
//! kind = "pwd"
//! port = "/dev/ttyUSB0"
//! baud = 9600
//! interval = "15s"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::Problem;

use crate::sensor::SensorKind;

/// One `[[sensor]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Unique name; becomes the `sensor` tag of its readings.
    pub name: String,
    /// `bme280`, `pwd`, `cpu_temperature`, `fan`, or one of the simulated
    /// kinds: `simulated_weather`, `simulated_visibility`,
    /// `simulated_cpu_temperature`, `simulated_fan`.
    pub kind: SensorKind,
    /// Time between readings.
    #[serde(with = "humantime_serde", default = "one_second")]
    pub interval: Duration,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Plausible range per field, e.g. `{ temperature_c = [-30, 50] }`. A
    /// value outside it is skipped and counted. Fields not named keep their
    /// default range (the instrument's specified range).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, [f64; 2]>,
    /// Longest wait before a failed device is opened again; the wait doubles
    /// from one second up to this.
    #[serde(with = "humantime_serde", default = "one_minute")]
    pub max_reopen_delay: Duration,
    /// Simulated kinds: a seed for reproducible values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `bme280`: the I²C bus device (default `/dev/i2c-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<PathBuf>,
    /// `bme280`: the chip's address, `0x76` (SDO to ground, the default) or
    /// `0x77`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u8>,
    /// `pwd`: the serial port, e.g. `/dev/ttyUSB0` (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PathBuf>,
    /// `pwd`: baud rate (default 9600, the PWD's factory setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud: Option<u32>,
    /// `pwd`: the unit id set with the sensor's CONF command (default `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<String>,
    /// `pwd`: how long to wait for the answer to a poll (default 2s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub answer_timeout: Option<Duration>,
    /// `cpu_temperature`, `fan`: where sysfs is mounted (default `/sys`).
    /// With the default, the CPU temperature comes from sysinfo's component
    /// list first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysfs_root: Option<PathBuf>,
    /// `cpu_temperature`: the component label (as sysinfo shows it, e.g.
    /// `coretemp Package id 0`) or thermal zone type (e.g. `cpu-thermal`) to
    /// read. Default: the first CPU sensor Buoy knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// `fan`: only read hwmon devices with this `name` (e.g. `pwmfan`).
    /// Default: every fan found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwmon: Option<String>,
}

/// An optional key's name, whether a table gives it, and which kinds take it.
type OptionalKey = (&'static str, bool, fn(SensorKind) -> bool);

fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn one_minute() -> Duration {
    Duration::from_secs(60)
}
fn yes() -> bool {
    true
}

impl SensorConfig {
    /// A sensor of `kind` with every optional key at its default.
    pub fn new(name: &str, kind: SensorKind, interval: Duration) -> Self {
        SensorConfig {
            name: name.into(),
            kind,
            interval,
            enabled: true,
            limits: BTreeMap::new(),
            max_reopen_delay: one_minute(),
            seed: None,
            bus: None,
            address: None,
            port: None,
            baud: None,
            unit_id: None,
            answer_timeout: None,
            sysfs_root: None,
            component: None,
            hwmon: None,
        }
    }

    pub fn bus(&self) -> PathBuf {
        self.bus
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/i2c-1"))
    }
    pub fn address(&self) -> u8 {
        self.address.unwrap_or(0x76)
    }
    pub fn baud(&self) -> u32 {
        self.baud.unwrap_or(9600)
    }
    pub fn unit_id(&self) -> &str {
        self.unit_id.as_deref().unwrap_or("1")
    }
    pub fn answer_timeout(&self) -> Duration {
        self.answer_timeout.unwrap_or(Duration::from_secs(2))
    }
    pub fn sysfs_root(&self) -> PathBuf {
        self.sysfs_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys"))
    }

    /// The plausible range of each limited field: the configured one, else
    /// the kind's default.
    pub fn effective_limits(&self) -> Vec<(&'static str, f64, f64)> {
        self.kind
            .default_limits()
            .iter()
            .map(|&(field, min, max)| match self.limits.get(field) {
                Some(&[min, max]) => (field, min, max),
                None => (field, min, max),
            })
            .collect()
    }

    /// Where the device is, for messages: `/dev/i2c-1 at 0x76`.
    pub fn device(&self) -> String {
        match self.kind {
            SensorKind::Bme280 => format!("{} at {:#04x}", self.bus().display(), self.address()),
            SensorKind::Pwd => format!(
                "{} at {} baud, unit {}",
                self.port
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display(),
                self.baud(),
                self.unit_id()
            ),
            SensorKind::CpuTemperature | SensorKind::Fan => self.sysfs_root().display().to_string(),
            _ => "simulated".into(),
        }
    }

    /// Each optional key: its name, whether this table gives it, and which
    /// kinds take it.
    fn optional_keys(&self) -> [OptionalKey; 10] {
        use SensorKind::{Bme280, CpuTemperature, Fan, Pwd};
        [
            ("seed", self.seed.is_some(), SensorKind::is_simulated),
            ("bus", self.bus.is_some(), |k| k == Bme280),
            ("address", self.address.is_some(), |k| k == Bme280),
            ("port", self.port.is_some(), |k| k == Pwd),
            ("baud", self.baud.is_some(), |k| k == Pwd),
            ("unit_id", self.unit_id.is_some(), |k| k == Pwd),
            ("answer_timeout", self.answer_timeout.is_some(), |k| {
                k == Pwd
            }),
            ("sysfs_root", self.sysfs_root.is_some(), |k| {
                matches!(k, CpuTemperature | Fan)
            }),
            ("component", self.component.is_some(), |k| {
                k == CpuTemperature
            }),
            ("hwmon", self.hwmon.is_some(), |k| k == Fan),
        ]
    }

    /// Everything wrong with this table; `at` is its path in the file, e.g.
    /// `sensor[2]`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let key = |k: &str| format!("{at}.{k}");
        if let Err(e) = telemetry::reading::check_name("sensor name", &self.name) {
            p.push(Problem::new(key("name"), e.to_string()));
        }
        if self.interval < Duration::from_millis(1) || self.interval > Duration::from_secs(86_400) {
            p.push(Problem::new(key("interval"), "must be between 1ms and 24h"));
        }
        if self.max_reopen_delay < Duration::from_secs(1) {
            p.push(Problem::new(key("max_reopen_delay"), "must be at least 1s"));
        }
        p.extend(self.device_problems(at));
        for (name, is_given, applies) in self.optional_keys() {
            if is_given && !applies(self.kind) {
                let takes: Vec<&str> = SensorKind::ALL
                    .into_iter()
                    .filter(|k| applies(*k))
                    .map(|k| k.name())
                    .collect();
                p.push(Problem::new(
                    key(name),
                    format!(
                        "does not apply to kind = {:?} (only to {})",
                        self.kind.name(),
                        takes.join(", ")
                    ),
                ));
            }
        }
        p.extend(self.limit_problems(at));
        p
    }

    /// The device keys: an I²C address, a serial port and its settings.
    fn device_problems(&self, at: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let key = |k: &str| format!("{at}.{k}");
        if let Some(address) = self.address
            && address != 0x76
            && address != 0x77
        {
            p.push(Problem::new(
                key("address"),
                format!("{address:#04x} is not a BME280/BMP280 address: use 0x76 or 0x77"),
            ));
        }
        if self.kind == SensorKind::Pwd && self.port.is_none() {
            p.push(Problem::new(
                key("port"),
                "kind = \"pwd\" needs the serial port, e.g. port = \"/dev/ttyUSB0\"",
            ));
        }
        if let Some(baud) = self.baud
            && ![300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&baud)
        {
            p.push(Problem::new(
                key("baud"),
                format!("{baud} is not a rate the PWD supports (300 to 57600; 9600 by default)"),
            ));
        }
        if let Some(id) = &self.unit_id
            && (id.is_empty() || id.len() > 2 || !id.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            p.push(Problem::new(
                key("unit_id"),
                "must be one or two letters or digits, as set with the sensor's CONF command",
            ));
        }
        if let Some(t) = self.answer_timeout
            && (t < Duration::from_millis(100) || t > Duration::from_secs(60))
        {
            p.push(Problem::new(
                key("answer_timeout"),
                "must be between 100ms and 60s",
            ));
        }
        p
    }

    /// `limits`: fields the kind has, each `[min, max]` with min < max.
    fn limit_problems(&self, at: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let limited = self.kind.default_limits();
        for (field, [min, max]) in &self.limits {
            if !limited.iter().any(|(f, _, _)| f == field) {
                let known: Vec<&str> = limited.iter().map(|(f, _, _)| *f).collect();
                p.push(Problem::new(
                    format!("{at}.limits.{field}"),
                    format!(
                        "kind = {:?} has no field {field:?} with limits; it has {}",
                        self.kind.name(),
                        known.join(", ")
                    ),
                ));
            } else if !(min.is_finite() && max.is_finite() && min < max) {
                p.push(Problem::new(
                    format!("{at}.limits.{field}"),
                    "must be [min, max] with min < max",
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SensorConfig {
        toml::from_str(text).unwrap()
    }

    fn messages(c: &SensorConfig) -> Vec<String> {
        c.problems("sensor[0]")
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn keys_of_another_kind_are_refused_by_name() {
        let c =
            parse("name = \"env\"\nkind = \"bme280\"\nport = \"/dev/ttyUSB0\"\naddress = 0x77\n");
        assert_eq!(c.address(), 0x77);
        assert_eq!(
            messages(&c),
            ["sensor[0].port: does not apply to kind = \"bme280\" (only to pwd)"]
        );
    }

    #[test]
    fn a_pwd_needs_its_port_and_a_real_baud_rate() {
        let c = parse("name = \"vis\"\nkind = \"pwd\"\nbaud = 9601\nunit_id = \"ABC\"\n");
        let m = messages(&c);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m[0].starts_with("sensor[0].port: kind = \"pwd\" needs"),
            "{m:?}"
        );
        assert!(m[1].contains("9601"), "{m:?}");
        assert!(m[2].starts_with("sensor[0].unit_id"), "{m:?}");
    }

    #[test]
    fn limits_override_the_defaults_and_unknown_fields_are_named() {
        let c = parse(
            "name = \"env\"\nkind = \"bme280\"\naddress = 0x50\nlimits = { temperature_c = [-30, 50], visibility_m = [0, 1], humidity_pct = [5, 5] }\n",
        );
        let m = messages(&c);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("0x50 is not a BME280"), "{m:?}");
        assert!(
            m[1].starts_with("sensor[0].limits.humidity_pct: must be"),
            "{m:?}"
        );
        assert!(
            m[2].contains("has pressure_hpa, temperature_c, humidity_pct"),
            "{m:?}"
        );
        let limits = c.effective_limits();
        assert_eq!(limits[0], ("pressure_hpa", 300.0, 1100.0));
        assert_eq!(limits[1], ("temperature_c", -30.0, 50.0));
    }
}
