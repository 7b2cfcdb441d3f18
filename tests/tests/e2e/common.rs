//! Helpers shared by the end-to-end tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::influx::Influx;
use buoy_tests::kafka::{Kafka, KafkaRecord, read_topic};
use buoy_tests::mqtt::Watcher;
use buoy_tests::points::{self, Point, PointKey, differences};
use buoy_tests::process::{Service, try_wait_while_progressing, wait_while_progressing};
use buoy_tests::victoria::Victoria;
use ed25519_dalek::SigningKey;
use edge_agent::remote_config::desired;
use serde_json::Value;
use telemetry::Reading;
use telemetry::record::Format;
use telemetry::telegraf_json::{self, JsonPayload, TimestampUnit};

pub const DEVICE: &str = "e2e-device";

/// An agent config sampling `sensors_per_kind` simulated sensors of each
/// kind every `interval`, with seeds so runs are reproducible.
pub fn agent_config(
    dir: &Path,
    bootstrap: &str,
    format: Format,
    sensors_per_kind: usize,
    interval: &str,
) -> String {
    let mut c = agent_config_head(dir, bootstrap, format, "", "");
    let kinds = [
        "simulated_weather",
        "simulated_visibility",
        "simulated_cpu_temperature",
        "simulated_fan",
    ];
    for (k, kind) in kinds.iter().enumerate() {
        for i in 0..sensors_per_kind {
            c.push_str(&format!(
                "[[sensor]]\nname = \"s{k}-{i}\"\nkind = \"{kind}\"\ninterval = \"{interval}\"\nseed = {}\n",
                k * 100 + i
            ));
        }
    }
    c
}

/// An agent config without sensors: the journal in `dir`, Kafka at
/// `bootstrap`, `forward` added to the `[forward]` table and `tables` (more
/// TOML tables) after the others.
pub fn agent_config_head(
    dir: &Path,
    bootstrap: &str,
    format: Format,
    forward: &str,
    tables: &str,
) -> String {
    let format = match format {
        Format::Influx => "influx",
        Format::Json => "json",
    };
    format!(
        r#"device_id = "{DEVICE}"
[journal]
path = "{journal}"
commit_interval = "100ms"
[kafka]
brokers = ["{bootstrap}"]
topic = "telemetry"
format = "{format}"
delivery_timeout = "5s"
[forward]
max_retry_delay = "2s"
shutdown_grace = "15s"
{forward}
[status]
log_interval = "500ms"
{tables}"#,
        journal = dir.join("journal.redb").display()
    )
}

/// The database a test writes to.
pub enum Database {
    Victoria(Victoria),
    /// InfluxDB 1.x with a database called `buoy`.
    Influx(Influx),
}

impl Database {
    pub fn victoria(dir: &Path) -> Database {
        Database::Victoria(Victoria::start(dir))
    }

    pub async fn influx(dir: &Path) -> Database {
        let influx = Influx::start(dir);
        influx.create_database("buoy").await;
        Database::Influx(influx)
    }

    /// The uplink's `[[sink]]` table for this database.
    pub fn sink(&self) -> String {
        match self {
            Database::Victoria(vm) => format!(
                "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
                vm.url()
            ),
            Database::Influx(db) => format!(
                "[[sink]]\nkind = \"influxdb_v1\"\nurl = \"{}\"\ndatabase = \"buoy\"\n",
                db.url()
            ),
        }
    }

    /// Nanoseconds per unit of the database's timestamps.
    pub fn time_unit_ns(&self) -> i64 {
        match self {
            Database::Victoria(_) => 1_000_000,
            Database::Influx(_) => 1,
        }
    }

    /// Every point the database holds.
    pub async fn points(&self, measurements: &[&str]) -> BTreeMap<PointKey, Point> {
        match self {
            Database::Victoria(vm) => points::from_victoria(&vm.export().await),
            Database::Influx(db) => {
                let mut held = BTreeMap::new();
                for m in measurements {
                    held.extend(db.points("buoy", m).await);
                }
                held
            }
        }
    }

    /// Asserts that the database holds exactly the points these readings
    /// become: none missing, none extra, none twice, values equal.
    /// VictoriaMetrics keeps at least 12 significant digits; InfluxDB stores
    /// float64 and prints it exactly.
    pub async fn assert_holds_exactly(&self, readings: &BTreeMap<u64, Reading>, uplink: &Service) {
        let expected = expected_points(readings, self.time_unit_ns());
        let measurements: BTreeSet<&str> =
            readings.values().map(|r| r.measurement.as_str()).collect();
        let measurements: Vec<&str> = measurements.into_iter().collect();
        let held = settled_points(expected.len() as u64, || self.points(&measurements)).await;
        let tolerance = match self {
            Database::Victoria(_) => 1e-11,
            Database::Influx(_) => 0.0,
        };
        let diff = differences(&expected, &held, tolerance);
        assert_eq!(
            held.len(),
            expected.len(),
            "points in the database != readings journaled; first differences:\n{}\nuplink log:\n{}",
            diff.join("\n"),
            uplink.log()
        );
        assert!(
            diff.is_empty(),
            "the database differs from what was sampled:\n{}",
            diff.join("\n")
        );
    }
}

/// Starts the uplink consuming `topic` into `db`.
pub fn start_uplink(dir: &Path, bootstrap: &str, topic: &str, db: &Database) -> Service {
    let config = uplink_config(bootstrap, topic, &format!("{topic}.dlq"), &db.sink());
    binaries::start("uplink", dir, &config)
}

/// Stops the uplink, checks that it exited cleanly and that it sent exactly
/// `dead_lettered` records to the dead-letter topic.
pub fn stop_uplink(mut uplink: Service, dead_lettered: u64) {
    let status = uplink.stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "uplink exited with {status}:\n{}",
        uplink.log()
    );
    assert_eq!(
        binaries::status_number(&uplink.log(), "dead_lettered"),
        Some(dead_lettered),
        "{}",
        uplink.log()
    );
}

pub fn uplink_config(bootstrap: &str, topic: &str, dead_letters: &str, sink: &str) -> String {
    let metrics = buoy_tests::process::free_port();
    uplink_config_with_metrics(bootstrap, topic, dead_letters, sink, metrics)
}

/// [`uplink_config`] serving its metrics on `metrics` (a port).
pub fn uplink_config_with_metrics(
    bootstrap: &str,
    topic: &str,
    dead_letters: &str,
    sink: &str,
    metrics: u16,
) -> String {
    format!(
        r#"[kafka]
brokers = ["{bootstrap}"]
topics = ["{topic}"]
group = "e2e"
dead_letter_topic = "{dead_letters}"
[batch]
max_wait = "200ms"
[retry]
max_delay = "1s"
[status]
log_interval = "1s"
[metrics]
listen = "127.0.0.1:{metrics}"
{sink}
"#
    )
}

/// Waits until the agent's reported state (asked over its status socket)
/// has the number at `path` (`journaled`, `dropped/dropped_oldest`, ...)
/// ≥ `at_least`, and returns it. The deadline is progress: it fails only
/// when the number has not moved for
/// `stall` (or after ten times that in all), so a loaded machine that is
/// slow but moving passes.
pub fn wait_for_status(agent: &Service, path: &str, at_least: u64, stall: Duration) -> u64 {
    wait_while_progressing(
        &format!("the agent to report {path} >= {at_least}"),
        stall,
        stall * 10,
        || {
            let n = binaries::agent_number(agent, path);
            (n.filter(|&n| n >= at_least), n)
        },
        || agent.log_tail(60),
    )
}

/// Failed sensor reads since start, all sensors together, in a reported
/// state.
pub fn sensor_errors(state: &Value) -> u64 {
    state["sensors"]
        .as_array()
        .expect("sensors in the state")
        .iter()
        .map(|s| binaries::state_number(s, "errors"))
        .sum()
}

/// Stops the agent with SIGTERM, checks that it exited cleanly with an empty
/// journal and that every reading it sampled was journaled, and returns how
/// many readings it journaled in all.
pub fn stop_agent_and_count(agent: &mut Service, journal: &Path) -> u64 {
    let status = agent.stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "agent exited with {status}; log:\n{}",
        agent.log()
    );
    let last = binaries::final_state(agent);
    assert_eq!(
        last["sampled"], last["journaled"],
        "every sampled reading is journaled: {last}"
    );
    for counter in [
        "dropped/queue_full",
        "dropped/unencodable",
        "dropped/unreadable",
    ] {
        assert_eq!(
            binaries::state_number(&last, counter),
            0,
            "{counter} in {last}"
        );
    }
    assert_eq!(sensor_errors(&last), 0, "sensor errors in {last}");
    let stats = binaries::journal_stats(journal);
    eprintln!("agent stopped: journal {stats:?}");
    assert_eq!(
        stats.records,
        0,
        "the journal should be drained on a clean stop with Kafka up: {stats:?}\n{}",
        agent.log()
    );
    stats.next_seq - 1
}

/// The readings on the topic, checked against the record contract, keyed by
/// `buoy-seq`. Fails on any record that breaks the contract.
pub fn readings_by_seq(records: &[KafkaRecord], format: Format) -> BTreeMap<u64, Reading> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_owned();
    let mut out = BTreeMap::new();
    for r in records {
        assert_eq!(r.key.as_deref(), Some(DEVICE), "key of {r:?}");
        let seq: u64 = r.headers["buoy-seq"]
            .parse()
            .unwrap_or_else(|_| panic!("buoy-seq is not decimal: {r:?}"));
        assert_eq!(r.headers["buoy-boot"], boot, "buoy-boot of {r:?}");
        assert_eq!(
            r.headers["content-type"],
            format.content_type(),
            "content-type of {r:?}"
        );
        let reading = match format {
            Format::Influx => {
                telemetry::line_protocol::parse_line(r.text(), 0).unwrap_or_else(|e| {
                    panic!(
                        "record {seq} is not valid line protocol: {e}: {:?}",
                        r.text()
                    )
                })
            }
            Format::Json => match telegraf_json::decode(r.text(), TimestampUnit::Nanoseconds, 0) {
                Ok(JsonPayload::Metrics(mut m)) if m.len() == 1 => m.remove(0),
                other => panic!("record {seq} is not one Telegraf JSON metric: {other:?}"),
            },
        };
        assert_eq!(reading.tag("device_id"), Some(DEVICE));
        if let Some(previous) = out.insert(seq, reading.clone()) {
            // A resend after a timeout: allowed, but it must be the same reading.
            assert_eq!(
                previous, reading,
                "two different readings with buoy-seq {seq}"
            );
        }
    }
    out
}

/// Reads the whole topic with kafka-python, checks every record against the
/// contract, and asserts that sequence numbers 1 to `journaled` are all there
/// and no others; returns the readings by sequence number.
pub fn every_reading_on_topic(
    bootstrap: &str,
    format: Format,
    journaled: u64,
) -> BTreeMap<u64, Reading> {
    let records = read_topic(
        bootstrap,
        "telemetry",
        Duration::from_secs(10),
        Some(journaled as usize),
    );
    let readings = readings_by_seq(&records, format);
    assert_all_sequence_numbers(&readings, journaled);
    readings
}

/// Asserts that every sequence number from 1 to `journaled` is present.
pub fn assert_all_sequence_numbers(readings: &BTreeMap<u64, Reading>, journaled: u64) {
    let seqs: BTreeSet<u64> = readings.keys().copied().collect();
    let missing: Vec<u64> = (1..=journaled)
        .filter(|s| !seqs.contains(s))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "readings missing from the topic: {missing:?}..."
    );
    assert_eq!(
        seqs.len() as u64,
        journaled,
        "the topic holds sequence numbers beyond those journaled"
    );
}

/// The points the readings should become, keyed in the database's time unit.
pub fn expected_points(
    readings: &BTreeMap<u64, Reading>,
    per_unit: i64,
) -> BTreeMap<PointKey, Point> {
    eprintln!("{} distinct readings on the topic", readings.len());
    let expected: BTreeMap<PointKey, Point> = readings
        .values()
        .map(|r| points::from_reading(r, per_unit))
        .collect();
    assert_eq!(
        expected.len(),
        readings.len(),
        "two readings share measurement, tags and timestamp; they would be one point"
    );
    expected
}

/// Like `buoy_tests::process::wait_for`, for checks that query a database.
pub async fn wait_for_async<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    context: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls `count_points` until it holds `expected` points, or until the
/// number has stopped changing for 15 s (the uplink has caught up), and
/// returns what it last saw. The caller asserts on it, so a shortfall is
/// reported as the points that are missing rather than as a timeout.
pub async fn settled_points<F, Fut>(expected: u64, mut count_points: F) -> BTreeMap<PointKey, Point>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BTreeMap<PointKey, Point>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut last_change = tokio::time::Instant::now();
    let mut last_len = 0;
    loop {
        let held = count_points().await;
        if held.len() as u64 >= expected || tokio::time::Instant::now() > deadline {
            return held;
        }
        if held.len() != last_len {
            last_len = held.len();
            last_change = tokio::time::Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(15) {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long an agent's stage may go without progress before the harness
/// asks whose fault it is. Progress, not a fixed time, sets the deadline,
/// so a loaded machine that is slow but moving passes.
pub const STALL: Duration = Duration::from_secs(60);
/// The last-resort limit of one stage, progress or not.
pub const STAGE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Waits through `stage` until `done` holds for the agent's reported state
/// (asked over its status socket), as long as `progress` of it moves. On a
/// stall, a wedged Tansu is restarted once ([`Kafka::heal_once`]) and the
/// wait goes on; if Tansu answers, the stall is the agent's and the test
/// fails naming the stage, with the tails of both logs.
pub fn agent_stage(
    kafka: &mut Kafka,
    agent: &Service,
    dir: &Path,
    stage: &str,
    done: impl Fn(&Value) -> bool,
    progress: impl Fn(&Value) -> u64,
) -> Value {
    loop {
        let waited = try_wait_while_progressing(stage, STALL, STAGE_LIMIT, || {
            match binaries::agent_state(dir) {
                Some(state) if done(&state) => (Some(state), None),
                Some(state) => (None, Some(progress(&state))),
                None => (None, None),
            }
        });
        match waited {
            Ok(state) => return state,
            Err(stalled) if !kafka.heal_once(stage) => panic!(
                "{stalled}\nTansu answers, so the agent is at fault. Its state: {}\nits log ends:\n{}",
                binaries::agent_state(dir).map_or("(no answer)".into(), |s| s.to_string()),
                agent.log_tail(40)
            ),
            Err(_) => {}
        }
    }
}

/// A signed layer, as `buoy-fleet push` and `edge-agent sign-config` make it.
pub fn signed(key: &SigningKey, layer: Value) -> String {
    desired::sign(layer.to_string().as_bytes(), key).unwrap()
}

/// The latest state of the e2e device (seen or to come) whose `config`
/// satisfies `matches`.
pub async fn config_state_where(
    watcher: &Watcher,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let topic = format!("buoy/{DEVICE}/state");
    watcher
        .wait_for(what, Duration::from_secs(90), |m| {
            m.topic == topic && matches(&m.json()["config"])
        })
        .await
        .json()
}
