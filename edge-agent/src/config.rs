//! The edge agent's configuration: one typed struct, parsed and validated here.
//!
//! The file is TOML (default `/etc/buoy/edge-agent.toml`); every key has a
//! default, so the agent runs without any file at all: simulated sensors, a
//! local journal, Kafka at `localhost:9092`. Scalar keys can be overridden by
//! `BUOY_<SECTION>_<KEY>` environment variables (see `telemetry::config_file`).

use std::path::PathBuf;
use std::time::Duration;

pub use hardware::SensorConfig;
use hardware::SensorKind;
use serde::{Deserialize, Serialize};
use telemetry::config_file::{ConfigError, Loaded, Problem};

pub use crate::forwarder::config::{
    Compression, ForwardConfig, ForwarderConfig, KafkaConfig, Order,
};
pub use crate::journal::config::{JournalConfig, default_state_dir};
pub use crate::remote_config::layers::Labels;
use crate::remote_config::layers::{RESERVED_DEVICE_IDS, label_problems};
pub use crate::remote_config::settings::MqttConfig;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/buoy/edge-agent.toml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "BUOY_";

/// The whole edge agent configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This device's id: the Kafka key and the `device_id` tag of every
    /// reading. Default: the hostname.
    #[serde(default = "default_device_id")]
    pub device_id: String,
    /// `labels = { site = "north-sea", hw = "pi5" }`: reported in the state;
    /// each label subscribes the device to one group layer of remote config
    /// (`buoy/group/<key>/<value>/config`). Local only.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The sensors to sample, as `[[sensor]]` tables. Default: one simulated
    /// sensor of each kind.
    #[serde(default = "default_sensors", rename = "sensor")]
    pub sensors: Vec<SensorConfig>,
}

/// `[status]`: what the agent reports about itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// How often a status line (sampled, journaled, backlog, forwarded, link
    /// state) is logged. `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
    /// The Unix socket `edge-agent status` asks (mode 0660). Default:
    /// `edge-agent.sock` next to the journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            log_interval: Duration::from_secs(60),
            socket: None,
        }
    }
}

/// `[metrics]`: Prometheus metrics over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics` (Prometheus text format): readings
    /// sampled, journaled and forwarded, backlog and its age, journal size,
    /// drops, link, sensor health, clock. Empty (the default) turns it off;
    /// e.g. `127.0.0.1:9275`. Keep it on loopback.
    pub listen: String,
}

impl AgentConfig {
    /// Where the status socket is.
    pub fn status_socket(&self) -> PathBuf {
        self.status
            .socket
            .clone()
            .unwrap_or_else(|| self.journal.state_dir().join("edge-agent.sock"))
    }
}

fn default_device_id() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .split('.')
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or("buoy")
        .to_owned()
}

fn default_sensors() -> Vec<SensorConfig> {
    let sensor = |name, kind, secs| SensorConfig::new(name, kind, Duration::from_secs(secs));
    vec![
        sensor("env", SensorKind::SimulatedWeather, 1),
        sensor("visibility", SensorKind::SimulatedVisibility, 1),
        sensor("cpu", SensorKind::SimulatedCpuTemperature, 5),
        sensor("fan", SensorKind::SimulatedFan, 5),
    ]
}

impl AgentConfig {
    /// Loads the config from a file's text (`None`: no file) and the
    /// environment, and validates it.
    pub fn load(
        source_name: &str,
        text: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Loaded<AgentConfig>, ConfigError> {
        telemetry::secret::load_resolving_files(
            source_name,
            text,
            env,
            ENV_PREFIX,
            AgentConfig::resolve_files,
            AgentConfig::problems,
        )
    }

    /// Relative secret and certificate files made absolute in
    /// `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`), when set.
    fn resolve_files(&mut self, credentials: Option<&std::ffi::OsStr>) {
        self.kafka.security.resolve_files(credentials);
        self.mqtt.resolve_files(credentials);
    }

    /// The forwarder's sections.
    pub fn forwarder(&self) -> ForwarderConfig {
        ForwarderConfig {
            device_id: self.device_id.clone(),
            kafka: self.kafka.clone(),
            forward: self.forward.clone(),
        }
    }

    /// The sensors that are enabled.
    pub fn enabled_sensors(&self) -> impl Iterator<Item = &SensorConfig> {
        self.sensors.iter().filter(|s| s.enabled)
    }

    /// Everything semantically wrong with this config.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if let Err(e) = telemetry::metrics_http::listen_addr(&self.metrics.listen) {
            p.push(Problem::new("metrics.listen", e));
        }
        if let Some(socket) = &self.status.socket
            && socket.as_os_str().len() > 100
        {
            p.push(Problem::new(
                "status.socket",
                "a Unix socket path may be at most about 100 bytes long",
            ));
        }
        if let Err(e) = telemetry::reading::check_name("device id", &self.device_id) {
            p.push(Problem::new("device_id", e.to_string()));
        } else if let Some(c) = self
            .device_id
            .chars()
            .find(|c| matches!(c, '/' | '+' | '#' | ' '))
        {
            p.push(Problem::new(
                "device_id",
                format!("must not contain {c:?}: it is part of MQTT topic names"),
            ));
        } else if RESERVED_DEVICE_IDS.contains(&self.device_id.as_str()) {
            p.push(Problem::new(
                "device_id",
                format!(
                    "{:?} is taken: buoy/{}/… are the fleet's config topics",
                    self.device_id, self.device_id
                ),
            ));
        }
        p.extend(label_problems(&self.labels));
        p.extend(self.journal.problems());
        p.extend(self.kafka.problems());
        p.extend(self.forward.problems());
        p.extend(self.mqtt.problems());
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.sensors.iter().enumerate() {
            let at = format!("sensor[{i}]");
            if !seen.insert(s.name.as_str()) {
                p.push(Problem::new(
                    format!("{at}.name"),
                    format!("another sensor is already called {:?}", s.name),
                ));
            }
            p.extend(s.problems(&at));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::WhenFull;
    use telemetry::units::ByteSize;

    fn load(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load("edge-agent.toml", Some(text), &[]).map(|l| l.config)
    }

    #[test]
    fn runs_without_a_file() {
        let c = AgentConfig::load("none", None, &[]).unwrap().config;
        assert_eq!(c.kafka.brokers, ["localhost:9092"]);
        assert_eq!(c.kafka.topic, "telemetry");
        assert_eq!(c.journal.commit_interval, Duration::from_secs(1));
        assert_eq!(c.enabled_sensors().count(), 4);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn reads_the_design_example() {
        let c = load(
            r#"
device_id = "pi-0001"
[journal]
path = "/var/lib/buoy/journal.redb"
commit_interval = "1s"
max_bytes = "256MiB"
when_full = "drop_oldest"
[kafka]
brokers = ["localhost:9092"]
topic = "telemetry"
format = "influx"
[[sensor]]
name = "env"
kind = "simulated_weather"
interval = "1s"
"#,
        )
        .unwrap();
        assert_eq!(c.device_id, "pi-0001");
        assert_eq!(c.sensors.len(), 1);
        assert_eq!(c.sensors[0].kind, SensorKind::SimulatedWeather);
        assert_eq!(c.journal.max_bytes, ByteSize::mib(256));
        assert_eq!(c.journal.when_full, WhenFull::DropOldest);
    }

    #[test]
    fn journal_limits_and_policies_are_checked() {
        let c = load("[journal]\nwhen_full = \"downsample\"\ndownsample_window = \"10m\"\nmax_bytes = \"64MiB\"\n")
            .unwrap();
        assert_eq!(c.journal.when_full, WhenFull::Downsample);
        assert_eq!(c.journal.options().max_bytes, 64 << 20);
        assert_eq!(c.journal.downsample_window, Duration::from_secs(600));
        let err =
            load("[journal]\nmax_bytes = \"1MiB\"\nwhen_full = \"drop_newest\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("drop_oldest"), "{shown}");
        let err = load("[journal]\nmax_bytes = \"1MiB\"\n").unwrap_err();
        assert!(err.to_string().contains("at least 4MiB"), "{err}");
        assert_eq!(err.lines(), vec![2]);
    }

    #[test]
    fn labels_are_local_words_and_fleet_topics_are_not_device_ids() {
        let c = load("device_id = \"pi-7\"\nlabels = { site = \"north-sea\", hw = \"pi5\" }\n")
            .unwrap();
        assert_eq!(c.labels["site"], "north-sea");
        assert_eq!(c.labels.len(), 2);
        let err = load("labels = { site = \"north/sea\" }\n").unwrap_err();
        assert!(err.to_string().contains("labels.site"), "{err}");
        assert_eq!(err.lines(), vec![1]);
        for taken in ["fleet", "group"] {
            let err = load(&format!("device_id = \"{taken}\"\n")).unwrap_err();
            assert!(err.to_string().contains("is taken"), "{err}");
        }
    }

    #[test]
    fn names_each_problem_with_its_line() {
        let text = r#"device_id = "pi/1"
[kafka]
topic = "bad topic"
brokers = ["nohost"]
[[sensor]]
name = "a"
kind = "simulated_fan"
[[sensor]]
name = "a"
kind = "simulated_fan"
interval = "0s"
"#;
        let err = load(text).unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.lines(), vec![1, 4, 3, 9, 11], "{shown}");
        assert!(shown.contains("already called \"a\""), "{shown}");
        assert!(shown.contains("MQTT"), "{shown}");
    }

    #[test]
    fn unknown_sensor_kinds_list_the_known_ones() {
        let err = load("[[sensor]]\nname = \"x\"\nkind = \"thermometer\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("simulated_weather"), "{shown}");
        assert_eq!(err.lines(), vec![3]);
    }

    #[test]
    fn real_sensors_are_checked_by_kind_with_their_lines() {
        let text = r#"[[sensor]]
name = "env"
kind = "bme280"
address = 0x77
limits = { temperature_c = [-30, 50] }
[[sensor]]
name = "vis"
kind = "pwd"
baud = 9601
hwmon = "pwmfan"
"#;
        let err = load(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("needs the serial port"), "{shown}");
        assert!(shown.contains("9601 is not a rate"), "{shown}");
        assert!(
            shown.contains("does not apply to kind = \"pwd\" (only to fan)"),
            "{shown}"
        );
        assert_eq!(err.lines(), vec![6, 9, 10], "{shown}");
        let c = load(&text.replace(
            "baud = 9601\nhwmon = \"pwmfan\"\n",
            "port = \"/dev/ttyUSB0\"\n",
        ))
        .unwrap();
        assert_eq!(c.sensors[0].address(), 0x77);
        assert_eq!(
            c.sensors[0].effective_limits()[1],
            ("temperature_c", -30.0, 50.0)
        );
        assert_eq!(c.sensors[1].baud(), 9600);
    }

    #[test]
    fn reserved_librdkafka_properties_are_refused() {
        let err = load("[kafka.properties]\nacks = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("acks=all"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("BUOY_DEVICE_ID".to_string(), "pi-9".to_string()),
            ("BUOY_KAFKA_BROKERS".to_string(), "a:1,b:2".to_string()),
            (
                "BUOY_JOURNAL_COMMIT_INTERVAL".to_string(),
                "250ms".to_string(),
            ),
            ("BUOY_JOURNAL_PATH".to_string(), "/tmp/j.redb".to_string()),
        ];
        let c = AgentConfig::load("f", Some("device_id = \"x\"\n"), &env)
            .unwrap()
            .config;
        assert_eq!(c.device_id, "pi-9");
        assert_eq!(c.kafka.brokers, ["a:1", "b:2"]);
        assert_eq!(c.journal.commit_interval, Duration::from_millis(250));
        assert_eq!(c.journal.path, PathBuf::from("/tmp/j.redb"));
    }
}
