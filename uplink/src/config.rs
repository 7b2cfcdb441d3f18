//! The uplink's configuration: one typed struct, parsed and validated here.
//!
//! TOML (default `/etc/buoy/uplink.toml`); every key has a default, so the
//! uplink runs without a file: Kafka at `localhost:9092`, topic `telemetry`,
//! VictoriaMetrics at `localhost:8428`. Scalar keys can be overridden by
//! `BUOY_<SECTION>_<KEY>` environment variables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::{self, ConfigError, Loaded, Problem};
use telemetry::record::{broker_problems, check_topic_name, reserved_property_problems};
use telemetry::telegraf_json::TimestampUnit;
use telemetry::units::ByteSize;

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
            dead_letter_topic: "telemetry.dlq".into(),
            start_from: StartFrom::Earliest,
            json_timestamp_unit: TimestampUnit::Auto,
            max_record_size: ByteSize::mib(1),
            properties: BTreeMap::new(),
        }
    }
}

const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("group.id", "kafka.group"),
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

/// `[batch]`: how lines are grouped into one database write.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_lines: usize,
    pub max_bytes: ByteSize,
    /// A batch is written at the latest this long after its first line.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_lines: 5_000,
            max_bytes: ByteSize::mib(4),
            max_wait: Duration::from_secs(1),
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

/// One `[[sink]]` table; `kind` selects the database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// VictoriaMetrics, through its InfluxDB line protocol endpoint `/write`.
    /// Run it with `-dedup.minScrapeInterval=1ms` so that a reading written
    /// twice stays one point.
    Victoriametrics(VictoriaMetricsConfig),
    /// InfluxDB 1.x, `/write?db=...`.
    InfluxdbV1(InfluxV1Config),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VictoriaMetricsConfig {
    /// Base URL, e.g. `http://localhost:8428`.
    pub url: String,
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxV1Config {
    /// Base URL, e.g. `http://localhost:8086`.
    pub url: String,
    /// The database; it must exist (`CREATE DATABASE`).
    pub database: String,
    /// Retention policy; empty for the database's default.
    #[serde(default)]
    pub retention_policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (read at start-up, never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::Victoriametrics(VictoriaMetricsConfig {
        url: "http://localhost:8428".into(),
        timeout: default_timeout(),
    })]
}

impl SinkConfig {
    pub fn url(&self) -> &str {
        match self {
            SinkConfig::Victoriametrics(c) => &c.url,
            SinkConfig::InfluxdbV1(c) => &c.url,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Victoriametrics(_) => "victoriametrics",
            SinkConfig::InfluxdbV1(_) => "influxdb_v1",
        }
    }
}

impl UplinkConfig {
    pub fn load(
        source_name: &str,
        text: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Loaded<UplinkConfig>, ConfigError> {
        config_file::load(source_name, text, env, ENV_PREFIX, UplinkConfig::problems)
    }

    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let k = &self.kafka;
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
            let url = sink.url();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push(Problem::new(
                    format!("sink[{i}].url"),
                    format!("{url:?} must start with http:// or https://"),
                ));
            }
            if let SinkConfig::InfluxdbV1(c) = sink {
                if c.database.is_empty() {
                    p.push(Problem::new(
                        format!("sink[{i}].database"),
                        "must name the database",
                    ));
                }
                if c.password_file.is_some() && c.username.is_none() {
                    p.push(Problem::new(
                        format!("sink[{i}].username"),
                        "is needed with password_file",
                    ));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.sinks[0].kind(), "victoriametrics");
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
        let SinkConfig::InfluxdbV1(influx) = &c.sinks[1] else {
            panic!()
        };
        assert_eq!(influx.database, "buoy");
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
