//! Tansu, the Kafka-compatible broker, and independent views of its topics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::process::{Service, free_port, require, wait_for, wait_for_port};

pub const TANSU_INSTALL: &str =
    "cargo install tansu --locked --version 0.6.0 --features dynostore,libsql";

/// Where Tansu keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Lost when the broker stops.
    Memory,
    /// `broker.db` in the broker's directory; survives kill -9 and restart.
    Sqlite,
}

pub struct Kafka {
    pub service: Service,
    /// The port clients bootstrap from (the advertised one).
    pub port: u16,
}

impl Kafka {
    /// Starts a broker on a free port in `dir`.
    pub fn start(dir: &Path, storage: Storage) -> Kafka {
        Kafka::start_on(free_port(), dir, storage)
    }

    /// Starts a broker on `port` in `dir` (a later broker on the same port
    /// and directory with `Storage::Sqlite` finds the earlier one's data).
    pub fn start_on(port: u16, dir: &Path, storage: Storage) -> Kafka {
        Kafka::start_advertising(port, port, dir, storage)
    }

    /// Starts a broker listening on `port` that tells clients to connect to
    /// `advertised` (where a [`crate::proxy::Proxy`] forwards to `port`).
    pub fn start_advertising(port: u16, advertised: u16, dir: &Path, storage: Storage) -> Kafka {
        let tansu = require("tansu", TANSU_INSTALL);
        std::fs::create_dir_all(dir).expect("broker dir");
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let engine = match storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Sqlite => "sqlite://broker.db".to_owned(),
        };
        let mut c = Command::new(tansu);
        c.current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", &engine])
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("CLUSTER_ID")
            .env("RUST_LOG", "warn");
        let log = unique_log(dir, "tansu");
        let service = Service::spawn("tansu", c, &log);
        wait_for_port(port, Duration::from_secs(30), &service);
        Kafka {
            service,
            port: advertised,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates topics with one partition each (Tansu does not create topics
    /// on first use) and waits until they are visible.
    pub async fn create_topics(&self, topics: &[&str]) {
        create_topics(&self.bootstrap(), topics).await;
    }
}

/// Indexes the header table of a stopped Tansu's `sqlite://broker.db` in
/// `dir`. Tansu 0.6 has no index there, so it scans every header of the
/// partition for each record it fetches: fetching is quadratic, and a
/// consumer's first fetch of some 50,000 records with headers never finishes
/// (pitfalls.md). Only the broker's speed changes, not what it returns.
pub fn index_tansu_headers(dir: &Path) {
    let db = dir.join("broker.db");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.execute('create index if not exists buoy_header_by_record on header (topition, offset_id)'); \
             c.commit()",
        )
        .arg(&db)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "cannot index {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique_log(dir: &Path, name: &str) -> PathBuf {
    (0..)
        .map(|i| dir.join(format!("{name}.{i}.log")))
        .find(|p| !p.exists())
        .expect("a log file name")
}

pub async fn create_topics(bootstrap: &str, topics: &[&str]) {
    let one: Vec<(&str, i32)> = topics.iter().map(|t| (*t, 1)).collect();
    create_partitioned_topics(bootstrap, &one).await;
}

/// Creates topics with the given partition counts and waits until they are
/// visible with all their partitions.
pub async fn create_partitioned_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .expect("create topics");
    for r in results {
        if let Err((topic, code)) = r {
            panic!("cannot create topic {topic}: {code:?}");
        }
    }
    let names: Vec<(String, usize)> = topics
        .iter()
        .map(|(t, n)| (t.to_string(), *n as usize))
        .collect();
    wait_for(
        "the new topics to appear in metadata",
        Duration::from_secs(20),
        || {
            let md = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .ok()?;
            names
                .iter()
                .all(|(n, count)| {
                    md.topics()
                        .iter()
                        .any(|t| t.name() == n && t.partitions().len() == *count)
                })
                .then_some(())
        },
        String::new,
    );
}

/// A record as kafka-python saw it.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: HashMap<String, String>,
    pub value: Vec<u8>,
}

impl KafkaRecord {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.value).expect("UTF-8 value")
    }
}

/// Reads every record of `topic` with kafka-python, independently of
/// librdkafka. Stops after `idle` without records, or once `expected`
/// records have arrived.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    idle: Duration,
    expected: Option<usize>,
) -> Vec<KafkaRecord> {
    require_kafka_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_topic.py");
    let mut c = Command::new("python3");
    c.arg(script)
        .arg(bootstrap)
        .arg(topic)
        .arg(idle.as_secs_f64().to_string());
    if let Some(n) = expected {
        c.arg(n.to_string());
    }
    let out = c.output().expect("run read_topic.py");
    assert!(
        out.status.success(),
        "kafka-python could not read {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("JSON lines")
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
            KafkaRecord {
                partition: v["partition"].as_i64().expect("partition") as i32,
                offset: v["offset"].as_i64().expect("offset"),
                key: v["key"].as_str().map(str::to_owned),
                headers: v["headers"]
                    .as_object()
                    .expect("headers")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                value: base64::engine::general_purpose::STANDARD
                    .decode(v["value_b64"].as_str().expect("value"))
                    .expect("base64"),
            }
        })
        .collect()
}

fn require_kafka_python() {
    let ok = Command::new("python3")
        .args(["-c", "import kafka, zstandard"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the independent Kafka checks need kafka-python and zstandard; install them with: pip install kafka-python zstandard"
    );
}

/// A record to produce: its value and headers.
pub struct Outgoing<'a> {
    pub payload: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
}

/// Produces records as an ordinary client would (no Buoy involved).
pub async fn produce(bootstrap: &str, topic: &str, records: &[Outgoing<'_>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    for Outgoing { payload, headers } in records {
        let mut h = OwnedHeaders::new();
        for (k, v) in *headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        producer
            .send(
                FutureRecord::<(), [u8]>::to(topic)
                    .payload(payload)
                    .headers(h),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}
