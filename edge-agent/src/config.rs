//! The edge agent's configuration: one typed struct, parsed and validated here.
//!
//! The file is TOML (default `/etc/buoy/edge-agent.toml`); every key has a
//! default, so the agent runs without any file at all: simulated sensors, a
//! local journal, Kafka at `localhost:9092`. Scalar keys can be overridden by
//! `BUOY_<SECTION>_<KEY>` environment variables (see `telemetry::config_file`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use hardware::SensorConfig;
use hardware::SensorKind;
use serde::{Deserialize, Serialize};
use telemetry::config_file::{self, ConfigError, Loaded, Problem};
use telemetry::record::{Format, broker_problems, check_topic_name, reserved_property_problems};
use telemetry::units::ByteSize;

use crate::forwarder::schedule::SendWindow;
use crate::forwarder::security::{self, KafkaSecurity};
use crate::journal::{JournalOptions, WhenFull, WriterSettings};
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

/// `[journal]`: the durable store on the device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// The redb file. Default: `$STATE_DIRECTORY/journal.redb`, else
    /// `./buoy-data/journal.redb`.
    pub path: PathBuf,
    /// Readings are committed (fsync'd) at least this often; at most this
    /// window of readings is lost on power loss. `0s` commits every reading.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Memory redb may use for its page cache. The journal is written and
    /// read sequentially, so a small cache costs little.
    pub cache_size: ByteSize,
    /// Most readings written in one commit.
    pub max_batch: usize,
    /// The journal file never grows past this. The file grows by doubling,
    /// so it fills at least half of it; `edge-agent journal stats` shows the
    /// real size.
    pub max_bytes: ByteSize,
    /// What happens when the journal is full (the limit, or a full disk):
    /// `drop_oldest` deletes the oldest readings, `reject_new` refuses new
    /// ones until Kafka takes some, `downsample` replaces the oldest raw
    /// readings by per-series aggregates (`<measurement>_agg` with
    /// `<field>_min`, `_max`, `_mean` and `count`) and drops only when nothing
    /// raw is left. Every reading dropped, refused or aggregated is counted.
    pub when_full: WhenFull,
    /// The window `downsample` aggregates over.
    #[serde(with = "humantime_serde")]
    pub downsample_window: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: default_state_dir().join("journal.redb"),
            commit_interval: Duration::from_secs(1),
            cache_size: ByteSize::mib(4),
            max_batch: 10_000,
            max_bytes: ByteSize::mib(256),
            when_full: WhenFull::DropOldest,
            downsample_window: Duration::from_secs(300),
        }
    }
}

impl JournalConfig {
    /// How the journal is opened and bounded.
    pub fn options(&self) -> JournalOptions {
        JournalOptions {
            cache_bytes: usize::try_from(self.cache_size.bytes()).unwrap_or(usize::MAX),
            max_bytes: self.max_bytes.bytes(),
            when_full: self.when_full,
            downsample_window: self.downsample_window,
        }
    }

    /// What the running writer is told: how it commits and the policy.
    pub fn writer_settings(&self) -> WriterSettings {
        WriterSettings {
            commit_interval: self.commit_interval,
            max_batch: self.max_batch,
            max_bytes: self.max_bytes.bytes(),
            when_full: self.when_full,
            downsample_window: self.downsample_window,
        }
    }
}

/// Message compression on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `[kafka]`: where readings go.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic readings are produced to. It must exist: the agent does not
    /// create topics.
    pub topic: String,
    /// Encoding of each record's value: `influx` (line protocol) or `json`
    /// (Telegraf JSON).
    pub format: Format,
    pub compression: Compression,
    /// How long librdkafka keeps trying one record before handing it back; the
    /// agent then sends it again from the journal.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Extra librdkafka producer properties, passed through as they are
    /// (security settings, socket tuning). Keys that Buoy sets itself for
    /// correctness are refused, and so are security settings, which go in
    /// `[kafka.security]`.
    pub properties: BTreeMap<String, String>,
    /// TLS and SASL; secrets are read from files.
    pub security: KafkaSecurity,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["localhost:9092".into()],
            topic: "telemetry".into(),
            format: Format::Influx,
            compression: Compression::Zstd,
            delivery_timeout: Duration::from_secs(60),
            properties: BTreeMap::new(),
            security: KafkaSecurity::default(),
        }
    }
}

/// Producer properties the agent owns; each maps to the key to use instead.
const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("acks", "nothing: Buoy always uses acks=all"),
    (
        "request.required.acks",
        "nothing: Buoy always uses acks=all",
    ),
    (
        "enable.idempotence",
        "nothing: Buoy always uses the idempotent producer",
    ),
    ("compression.type", "kafka.compression"),
    ("compression.codec", "kafka.compression"),
    ("message.timeout.ms", "kafka.delivery_timeout"),
    ("delivery.timeout.ms", "kafka.delivery_timeout"),
    ("queue.buffering.max.messages", "forward.max_in_flight"),
];

/// The order in which journaled readings are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Fresh readings first; the backlog drains behind them.
    LiveFirst,
    /// Strictly in sampling order.
    Fifo,
}

/// `[forward]`: how the journal is drained into Kafka.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// `live_first`: readings are sent as soon as they are committed, and the
    /// backlog (readings taken while the link was down, or before a restart)
    /// drains behind them with the capacity left. `fifo`: strictly in
    /// sampling order, the backlog first. Within each, one device's readings
    /// keep their order.
    pub order: Order,
    /// In `live_first` order, a reading not sent this long after it was
    /// committed is left to the backlog, so live readings stay fresh.
    #[serde(with = "humantime_serde")]
    pub live_horizon: Duration,
    /// Bandwidth budget in bytes per second on the wire (after compression,
    /// with protocol overhead, as librdkafka counts them). `0`: unlimited.
    pub max_bytes_per_sec: ByteSize,
    /// Local times of day when readings may be sent, e.g. `["01:00-05:00"]`
    /// for a cheap night tariff. Empty: always.
    pub send_windows: Vec<SendWindow>,
    /// In `live_first` order, live readings ignore `max_bytes_per_sec` and
    /// `send_windows` (their bytes still count against the budget, so the
    /// backlog gets what they leave).
    pub live_exempt: bool,
    /// Most readings handed to librdkafka and not yet acknowledged. The
    /// journal, not memory, is the buffer; this bounds what sits in RAM.
    pub max_in_flight: usize,
    /// Longest wait between retries while Kafka is unreachable.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// On shutdown, how long to wait for records already sent to be
    /// acknowledged. Unacknowledged ones stay in the journal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Readings taken while the system clock is not synchronised (a
    /// Raspberry Pi before NTP) wait in the journal this long for it to be
    /// set, so they can be sent with corrected timestamps; after that they
    /// are sent tagged `clock="unsynced"`. `0s`: never wait.
    #[serde(with = "humantime_serde")]
    pub hold_unsynced: Duration,
    /// A producer session whose deliveries have been failing this long with
    /// nothing acknowledged, while Kafka answers (it refuses readings, or
    /// the topic exists and readings time out), is replaced by a fresh one.
    /// Refusals three times in a row replace it sooner, and so does a lost
    /// connection. `0s`: only those.
    #[serde(with = "humantime_serde")]
    pub renew_after: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            order: Order::LiveFirst,
            live_horizon: Duration::from_secs(5),
            max_bytes_per_sec: ByteSize(0),
            send_windows: Vec::new(),
            live_exempt: false,
            max_in_flight: 20_000,
            max_retry_delay: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            hold_unsynced: Duration::from_secs(15 * 60),
            renew_after: Duration::from_secs(60),
        }
    }
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
        self.status.socket.clone().unwrap_or_else(|| {
            self.journal
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join("edge-agent.sock")
        })
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

/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`), else `./buoy-data`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .unwrap_or_else(|| PathBuf::from("buoy-data"))
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
        config_file::load(source_name, text, env, ENV_PREFIX, AgentConfig::problems)
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
        }
        if self.journal.commit_interval > Duration::from_secs(3600) {
            p.push(Problem::new(
                "journal.commit_interval",
                "must be at most 1h: readings not yet committed are lost on power loss",
            ));
        }
        if self.journal.cache_size < ByteSize::kib(256) {
            p.push(Problem::new(
                "journal.cache_size",
                "must be at least 256KiB",
            ));
        }
        if self.journal.max_batch == 0 {
            p.push(Problem::new("journal.max_batch", "must be at least 1"));
        }
        if self.journal.max_bytes < ByteSize::mib(4) {
            p.push(Problem::new(
                "journal.max_bytes",
                "must be at least 4MiB (an empty journal file takes about 1MiB)",
            ));
        }
        if self.journal.downsample_window < Duration::from_secs(1)
            || self.journal.downsample_window > Duration::from_secs(86_400)
        {
            p.push(Problem::new(
                "journal.downsample_window",
                "must be between 1s and 24h",
            ));
        }
        p.extend(broker_problems("kafka.brokers", &self.kafka.brokers));
        if let Err(e) = check_topic_name(&self.kafka.topic) {
            p.push(Problem::new("kafka.topic", e));
        }
        if self.kafka.delivery_timeout < Duration::from_secs(1) {
            p.push(Problem::new(
                "kafka.delivery_timeout",
                "must be at least 1s",
            ));
        }
        p.extend(reserved_property_problems(
            "kafka.properties",
            self.kafka.properties.keys(),
            RESERVED_PROPERTIES,
        ));
        p.extend(reserved_property_problems(
            "kafka.properties",
            self.kafka.properties.keys(),
            security::RESERVED_PROPERTIES,
        ));
        p.extend(self.kafka.security.problems("kafka.security"));
        if self.forward.live_exempt && self.forward.order != Order::LiveFirst {
            p.push(Problem::new(
                "forward.live_exempt",
                "only applies to order = \"live_first\" (fifo has no live readings apart from the backlog)",
            ));
        }
        if self.forward.live_horizon < Duration::from_millis(100)
            || self.forward.live_horizon > Duration::from_secs(3600)
        {
            p.push(Problem::new(
                "forward.live_horizon",
                "must be between 100ms and 1h",
            ));
        }
        let budget = self.forward.max_bytes_per_sec.bytes();
        if budget != 0 && budget < 100 {
            p.push(Problem::new(
                "forward.max_bytes_per_sec",
                "must be 0 (unlimited) or at least 100 bytes per second",
            ));
        }
        if !(1..=1_000_000).contains(&self.forward.max_in_flight) {
            p.push(Problem::new(
                "forward.max_in_flight",
                "must be between 1 and 1000000",
            ));
        }
        if !self.forward.renew_after.is_zero() && self.forward.renew_after < Duration::from_secs(5)
        {
            p.push(Problem::new(
                "forward.renew_after",
                "must be 0s (only renew on refusals and lost connections) or at least 5s",
            ));
        }
        if self.forward.max_retry_delay < Duration::from_millis(100) {
            p.push(Problem::new(
                "forward.max_retry_delay",
                "must be at least 100ms",
            ));
        }
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
