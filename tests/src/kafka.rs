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
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer as _};

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

/// A Tansu broker owned by the test. When the test fails, its log is kept
/// (under `target/tmp/kept-logs/`) and its tail printed.
pub struct Kafka {
    pub service: Service,
    /// The port clients bootstrap from (the advertised one).
    pub port: u16,
    /// The port Tansu listens on (the advertised one unless a proxy sits
    /// between).
    listen: u16,
    dir: PathBuf,
    storage: Storage,
    /// Restarts by [`Kafka::heal_once`].
    healed: u32,
}

/// How Tansu is doing, as far as a client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Answering,
    /// The process exited, its storage task panicked (every request then
    /// fails until it restarts: pitfalls.md), or it does not answer metadata.
    Wedged(String),
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
            listen: port,
            dir: dir.to_owned(),
            storage,
            healed: 0,
        }
    }

    /// Kills the broker (SIGKILL) and starts it again on the same ports and
    /// directory; with `Storage::Sqlite` it finds its data again.
    pub fn restart(&mut self) {
        self.service.kill();
        if self.storage == Storage::Sqlite {
            index_tansu_headers(&self.dir);
        }
        let healed = self.healed;
        *self = Kafka::start_advertising(self.listen, self.port, &self.dir, self.storage);
        self.healed = healed;
    }

    /// Whether Tansu answers: the process runs, its log shows no panic (a
    /// panicked storage task fails every later request), and a fresh client
    /// gets metadata within 10 s.
    pub fn health(&mut self) -> Health {
        if let Some(status) = self.service.exited() {
            return Health::Wedged(format!("Tansu exited ({status})"));
        }
        // Tansu reports a dead storage task only by the panic message on its
        // stderr; there is nothing else to ask.
        if let Some(line) = self
            .service
            .log()
            .lines()
            .find(|l| l.contains("panicked at"))
        {
            return Health::Wedged(format!("Tansu panicked: {line}"));
        }
        let client: BaseProducer = match ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
        {
            Ok(c) => c,
            Err(e) => return Health::Wedged(format!("no client for Tansu: {e}")),
        };
        match client
            .client()
            .fetch_metadata(None, Duration::from_secs(10))
        {
            Ok(_) => Health::Answering,
            Err(e) => Health::Wedged(format!("Tansu does not answer metadata: {e}")),
        }
    }

    /// When the agent makes no progress in `stage`, tells the broker's fault
    /// from the agent's: if Tansu (sqlite storage) is wedged, it is
    /// restarted, once per test, and that is logged; a second wedge, or a
    /// wedge with memory storage (a restart would lose the topic), fails the
    /// test plainly as the broker's fault. Returns whether it restarted the broker (the caller
    /// then waits again); `false` means Tansu answers, so the stall is the
    /// agent's.
    pub fn heal_once(&mut self, stage: &str) -> bool {
        let Health::Wedged(why) = self.health() else {
            return false;
        };
        assert_eq!(
            self.storage,
            Storage::Sqlite,
            "Tansu is wedged during \"{stage}\" ({why}): the broker failed, not the agent; with memory storage a \
             restart would lose the topic, so the harness does not restart it. Its log ends:\n{}",
            self.service.log_tail(40)
        );
        assert_eq!(
            self.healed,
            0,
            "Tansu is wedged again during \"{stage}\" ({why}), after the harness already restarted it once: \
             the broker failed, not the agent. Its log ends:\n{}",
            self.service.log_tail(40)
        );
        eprintln!(
            "harness: Tansu is wedged during \"{stage}\" ({why}); restarting it once (the agent's readings wait in its journal). Its log ended:\n{}",
            self.service.log_tail(20)
        );
        self.healed += 1;
        self.restart();
        true
    }

    /// How often [`Kafka::heal_once`] restarted the broker.
    pub fn restarts_by_harness(&self) -> u32 {
        self.healed
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

impl Drop for Kafka {
    /// A failing test keeps the broker's log and prints its tail, so a
    /// failure can be told apart from a broker that died.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // The test runs from target/<profile>/deps/.
        let kept = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.ancestors().nth(3)?.join("tmp/kept-logs")))
            .unwrap_or_else(std::env::temp_dir);
        let name = format!(
            "tansu-{}-{}-{}",
            std::process::id(),
            self.port,
            self.service
                .log_path()
                .file_name()
                .map_or("tansu.log".into(), |n| n.to_string_lossy())
        );
        let copied = std::fs::create_dir_all(&kept)
            .and_then(|()| std::fs::copy(self.service.log_path(), kept.join(&name)));
        eprintln!(
            "Tansu's log (kept: {}) ends:\n{}",
            match copied {
                Ok(_) => kept.join(&name).display().to_string(),
                Err(e) => format!("not kept: {e}"),
            },
            self.service.log_tail(30)
        );
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
