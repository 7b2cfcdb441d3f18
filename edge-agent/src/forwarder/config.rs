//! `[kafka]` and `[forward]`: the forwarder's sections of the agent's
//! config, their defaults and their checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::Problem;
use telemetry::record::{Format, broker_problems, check_topic_name, reserved_property_problems};
use telemetry::units::ByteSize;

use super::schedule::SendWindow;
use super::security::{self, KafkaSecurity};

/// What the forwarder is given of the agent's config: its two sections,
/// and the device id (the producer's client id).
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderConfig {
    pub device_id: String,
    pub kafka: KafkaConfig,
    pub forward: ForwardConfig,
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

impl KafkaConfig {
    /// Everything wrong with `[kafka]`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        p.extend(broker_problems("kafka.brokers", &self.brokers));
        if let Err(e) = check_topic_name(&self.topic) {
            p.push(Problem::new("kafka.topic", e));
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            p.push(Problem::new(
                "kafka.delivery_timeout",
                "must be at least 1s",
            ));
        }
        p.extend(reserved_property_problems(
            "kafka.properties",
            self.properties.keys(),
            RESERVED_PROPERTIES,
        ));
        p.extend(reserved_property_problems(
            "kafka.properties",
            self.properties.keys(),
            security::RESERVED_PROPERTIES,
        ));
        p.extend(self.security.problems("kafka.security"));
        p
    }
}

impl ForwardConfig {
    /// Everything wrong with `[forward]`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.live_exempt && self.order != Order::LiveFirst {
            p.push(Problem::new(
                "forward.live_exempt",
                "only applies to order = \"live_first\" (fifo has no live readings apart from the backlog)",
            ));
        }
        if self.live_horizon < Duration::from_millis(100)
            || self.live_horizon > Duration::from_secs(3600)
        {
            p.push(Problem::new(
                "forward.live_horizon",
                "must be between 100ms and 1h",
            ));
        }
        let budget = self.max_bytes_per_sec.bytes();
        if budget != 0 && budget < 100 {
            p.push(Problem::new(
                "forward.max_bytes_per_sec",
                "must be 0 (unlimited) or at least 100 bytes per second",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_in_flight) {
            p.push(Problem::new(
                "forward.max_in_flight",
                "must be between 1 and 1000000",
            ));
        }
        if !self.renew_after.is_zero() && self.renew_after < Duration::from_secs(5) {
            p.push(Problem::new(
                "forward.renew_after",
                "must be 0s (only renew on refusals and lost connections) or at least 5s",
            ));
        }
        if self.max_retry_delay < Duration::from_millis(100) {
            p.push(Problem::new(
                "forward.max_retry_delay",
                "must be at least 100ms",
            ));
        }
        p
    }
}
