//! The uplink's configuration: one typed struct, parsed and validated here.
//!
//! TOML (default `/etc/buoy/uplink.toml`); every key has a default, so the
//! uplink runs without a file: Kafka at `localhost:9092`, topic `telemetry`,
//! VictoriaMetrics at `localhost:8428`. Scalar keys can be overridden by
//! `BUOY_<SECTION>_<KEY>` environment variables.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::{ConfigError, Loaded, Problem};
use telemetry::record::{broker_problems, check_topic_name, reserved_property_problems};
use telemetry::telegraf_json::TimestampUnit;
use telemetry::units::ByteSize;

pub use crate::sinks::config::{Precision, SinkConfig, SinkKind};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/buoy/uplink.toml";
pub const ENV_PREFIX: &str = "BUOY_";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where points are written, as `[[sink]]` tables. Every batch goes to
    /// every sink; offsets are committed once all of them accepted it.
    #[serde(default = "default_sinks", rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

/// Where a consumer group the uplink has never used starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest record still in the topic (Telegraf's `offset = "oldest"`).
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// `[kafka]`: what to consume.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    /// Consumer group; uplinks sharing it share the partitions.
    pub group: String,
    /// This uplink's static membership in the group (`group.instance.id`):
    /// restarted after a crash, it takes its partitions back at once instead
    /// of waiting for the group to give up on its previous life. Default: the
    /// host name. Every uplink in a group needs its own, so set it when two
    /// run on one host. Empty turns static membership off.
    pub instance_id: String,
    /// Records that can never be written (not UTF-8, bad line protocol,
    /// rejected by the database) go here, with headers saying why and where
    /// they came from. Empty: such records are logged and skipped.
    pub dead_letter_topic: String,
    pub start_from: StartFrom,
    /// Unit of timestamps in JSON records without Buoy headers: `auto`
    /// (inferred from the magnitude), `s`, `ms`, `us` or `ns`. Telegraf
    /// writes seconds unless told otherwise.
    pub json_timestamp_unit: TimestampUnit,
    /// Records larger than this go to the dead-letter topic.
    pub max_record_size: ByteSize,
    /// Integer fields (`3i`, `3u`) from other producers: `float` (default)
    /// writes them as floats, so a field can never conflict with itself
    /// between integer and float in the database; `keep` writes them as sent.
    pub integer_fields: IntegerFields,
    /// Extra librdkafka consumer properties (security, tuning). Keys the
    /// uplink sets itself for correctness are refused.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["localhost:9092".into()],
            topics: vec!["telemetry".into()],
            group: "buoy-uplink".into(),
            instance_id: gethostname::gethostname().to_string_lossy().into_owned(),
            dead_letter_topic: "telemetry.dlq".into(),
            start_from: StartFrom::Earliest,
            json_timestamp_unit: TimestampUnit::Auto,
            max_record_size: ByteSize::mib(1),
            integer_fields: IntegerFields::Float,
            properties: BTreeMap::new(),
        }
    }
}

const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("group.id", "kafka.group"),
    ("group.instance.id", "kafka.instance_id"),
    (
        "enable.auto.commit",
        "nothing: offsets are committed only after the database accepted the data",
    ),
    (
        "enable.auto.offset.store",
        "nothing: offsets are committed only after the database accepted the data",
    ),
    ("auto.offset.reset", "kafka.start_from"),
];

/// What becomes of integer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegerFields {
    Float,
    Keep,
}

/// `[batch]`: how lines are grouped into one database write.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_lines: usize,
    pub max_bytes: ByteSize,
    /// A batch is written at the latest this long after its first line.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Batches written or being retried at once. When all are taken the
    /// partitions are paused, so memory stays at about
    /// `max_in_flight × max_bytes` however long the database is away.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_lines: 5_000,
            max_bytes: ByteSize::mib(4),
            max_wait: Duration::from_secs(1),
            max_in_flight: 4,
        }
    }
}

/// `[retry]`: what happens while the database is unavailable.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Longest wait between attempts. Writes are retried for ever; offsets
    /// are not committed meanwhile.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// On shutdown, how long the batch in hand may still take to write.
    /// If it does not make it, it is abandoned uncommitted and re-read from
    /// Kafka on the next start.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_delay: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `[status]`: what the uplink reports about itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// How often a status line (records, lines written, dead-lettered,
    /// retries) is logged. `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            log_interval: Duration::from_secs(60),
        }
    }
}

fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::new(
        SinkKind::Victoriametrics,
        "http://localhost:8428",
    )]
}

/// `[metrics]`: Prometheus metrics over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics` (Prometheus text format): consumer lag
    /// per partition, lines written, batch latency, retries, dead letters.
    /// Empty (the default) turns it off; e.g. `127.0.0.1:9274`.
    pub listen: String,
}

impl MetricsConfig {
    /// The address to listen on, or `None` when metrics are off.
    pub fn listen_addr(
        &self,
    ) -> Result<Option<std::net::SocketAddr>, telemetry::metrics_http::BadListenAddr> {
        telemetry::metrics_http::listen_addr(&self.listen)
    }
}

impl UplinkConfig {
    pub fn load(
        source_name: &str,
        text: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Loaded<UplinkConfig>, ConfigError> {
        let resolve = |c: &mut UplinkConfig, credentials: Option<&std::ffi::OsStr>| {
            for sink in &mut c.sinks {
                sink.resolve_files(credentials);
            }
        };
        telemetry::secret::load_resolving_files(
            source_name,
            text,
            env,
            ENV_PREFIX,
            resolve,
            UplinkConfig::problems,
        )
    }

    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        p.extend(self.kafka.problems());
        if self.batch.max_lines == 0 {
            p.push(Problem::new("batch.max_lines", "must be at least 1"));
        }
        if self.batch.max_bytes < ByteSize::kib(1) {
            p.push(Problem::new("batch.max_bytes", "must be at least 1KiB"));
        }
        if self.batch.max_wait.is_zero() {
            p.push(Problem::new("batch.max_wait", "must be more than 0s"));
        }
        if self.retry.max_delay < Duration::from_millis(100) {
            p.push(Problem::new("retry.max_delay", "must be at least 100ms"));
        }
        if self.sinks.is_empty() {
            p.push(Problem::new("sink", "needs at least one [[sink]]"));
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            p.extend(sink.problems(i));
        }
        if self.batch.max_in_flight == 0 {
            p.push(Problem::new("batch.max_in_flight", "must be at least 1"));
        }
        if let Err(e) = self.metrics.listen_addr() {
            p.push(Problem::new("metrics.listen", e));
        }
        p
    }
}

impl KafkaConfig {
    /// Everything wrong with `[kafka]`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let k = self;
        p.extend(broker_problems("kafka.brokers", &k.brokers));
        if k.topics.is_empty() {
            p.push(Problem::new("kafka.topics", "needs at least one topic"));
        }
        for (i, t) in k.topics.iter().enumerate() {
            if let Err(e) = check_topic_name(t) {
                p.push(Problem::new(format!("kafka.topics[{i}]"), e));
            }
        }
        if k.group.trim().is_empty() {
            p.push(Problem::new("kafka.group", "must not be empty"));
        }
        if !k.dead_letter_topic.is_empty() {
            if let Err(e) = check_topic_name(&k.dead_letter_topic) {
                p.push(Problem::new("kafka.dead_letter_topic", e));
            } else if k.topics.contains(&k.dead_letter_topic) {
                p.push(Problem::new(
                    "kafka.dead_letter_topic",
                    "must not be one of kafka.topics, or bad records would loop",
                ));
            }
        }
        if k.max_record_size < ByteSize::kib(1) {
            p.push(Problem::new(
                "kafka.max_record_size",
                "must be at least 1KiB",
            ));
        }
        p.extend(reserved_property_problems(
            "kafka.properties",
            k.properties.keys(),
            RESERVED_PROPERTIES,
        ));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn load(text: &str) -> Result<UplinkConfig, ConfigError> {
        UplinkConfig::load("uplink.toml", Some(text), &[]).map(|l| l.config)
    }

    #[test]
    fn runs_without_a_file() {
        let c = UplinkConfig::load("none", None, &[]).unwrap().config;
        assert_eq!(c.kafka.topics, ["telemetry"]);
        assert_eq!(c.kafka.group, "buoy-uplink");
        assert_eq!(c.kafka.start_from, StartFrom::Earliest);
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].kind, SinkKind::Victoriametrics);
    }

    #[test]
    fn relative_token_files_are_found_among_systemd_credentials() {
        let text = "[[sink]]\nkind = \"influxdb_v2\"\nurl = \"http://db:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"influx-token\"\n";
        let env = [(
            "CREDENTIALS_DIRECTORY".to_owned(),
            "/run/credentials/buoy-uplink.service".to_owned(),
        )];
        let c = UplinkConfig::load("uplink.toml", Some(text), &env)
            .unwrap()
            .config;
        assert_eq!(
            c.sinks[0].token_file.as_deref(),
            Some(Path::new(
                "/run/credentials/buoy-uplink.service/influx-token"
            ))
        );
        let without = load(text).unwrap();
        assert_eq!(
            without.sinks[0].token_file.as_deref(),
            Some(Path::new("influx-token"))
        );
    }

    #[test]
    fn reads_the_design_example_and_an_influx_sink() {
        let c = load(
            r#"
[kafka]
brokers = ["localhost:9092"]
topics = ["telemetry"]
group = "buoy-uplink"
dead_letter_topic = "telemetry.dlq"
[[sink]]
kind = "victoriametrics"
url = "http://localhost:8428"
[[sink]]
kind = "influxdb_v1"
url = "http://localhost:8086"
database = "buoy"
"#,
        )
        .unwrap();
        assert_eq!(c.sinks.len(), 2);
        assert_eq!(c.sinks[1].kind, SinkKind::InfluxdbV1);
        assert_eq!(c.sinks[1].database, "buoy");
    }

    #[test]
    fn rejects_unknown_sink_kinds_and_keys() {
        let err = load("[[sink]]\nkind = \"graphite\"\nurl = \"http://x\"\n").unwrap_err();
        assert!(err.to_string().contains("victoriametrics"), "{err}");
        let err =
            load("[[sink]]\nkind = \"victoriametrics\"\nurl = \"http://x\"\ndatabase = \"d\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("database"), "{err}");
    }

    #[test]
    fn points_at_semantic_problems() {
        let text = "[kafka]\ntopics = [\"telemetry\"]\ndead_letter_topic = \"telemetry\"\n\n[[sink]]\nkind = \"influxdb_v1\"\nurl = \"localhost:8086\"\ndatabase = \"\"\n";
        let err = load(text).unwrap_err();
        assert_eq!(err.lines(), vec![3, 7, 8], "{err}");
    }

    #[test]
    fn environment_overrides() {
        let env = [("BUOY_KAFKA_TOPICS".to_string(), "a,b".to_string())];
        let c = UplinkConfig::load("f", None, &env).unwrap().config;
        assert_eq!(c.kafka.topics, ["a", "b"]);
    }
}
