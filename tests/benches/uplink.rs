//! The uplink's benchmark: `cargo bench -p buoy-tests --bench uplink`, or
//! `scripts/bench`, which writes the table into docs/performance.md.
//!
//! A topic of 1 million agent-format readings (Tansu, memory storage,
//! loopback) is drained by the real uplink binary into a fresh
//! VictoriaMetrics, timed from the uplink's start until VictoriaMetrics has
//! accepted every line (the uplink's `uplink_lines_written_total`: the
//! database answered 204), and until VictoriaMetrics counts every row
//! (`vm_rows_inserted_total`, which lags about a second behind the answers).
//! Next to it, in the same run:
//! - a bare rdkafka consumer joining a group with the uplink's fetch
//!   settings (`uplink::kafka::PREFETCH`), reading the topic and doing
//!   nothing else: what Tansu and librdkafka allow, the target;
//! - the same bare consumer with librdkafka's defaults, for reference;
//! - `curl` posting the very lines the uplink sends (millisecond precision,
//!   no gzip on either side), in the same batch size, one connection,
//!   straight to a fresh VictoriaMetrics: the database's own ceiling here.
//!
//! The same million readings spread over 12 partitions show that the
//! uplink's memory does not grow with the partitions it is assigned. Rounds
//! alternate; the best of each side is compared. The uplink's peak RSS is
//! read from /proc.
//!
//! `BUOY_BENCH_SCALE=0.1` shrinks the topic, for a quick look.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage, create_partitioned_topics};
use buoy_tests::process::require;
use buoy_tests::victoria::Victoria;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use telemetry::Reading;

const ROUNDS: usize = 2;
const BATCH: usize = 5_000;
const T0_MS: i64 = 1_790_000_000_000;

fn scale(n: u64) -> u64 {
    let s: f64 = std::env::var("BUOY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as u64).max(BATCH as u64)
}

/// Reading `i`, shaped like the simulated weather sensor's, from one of 20
/// devices, a millisecond apart.
fn reading(i: u64) -> Reading {
    let x = (i % 1000) as f64 / 7.0;
    Reading::new("weather", (T0_MS + i as i64) * 1_000_000)
        .with_tag("device_id", format!("pi-{:04}", i % 20))
        .with_tag("sensor", "env")
        .with_field("pressure_hpa", 1000.0 + x)
        .with_field("temperature_c", 10.0 + x / 10.0)
        .with_field("humidity_pct", 50.0 + x / 20.0)
}

/// Produces readings 0..n to `topic`, round-robin over its `partitions`,
/// in multi-record batches as the agent's producer makes them.
fn produce(bootstrap: &str, topic: &str, n: u64, partitions: i32) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    for i in 0..n {
        let line = telemetry::line_protocol::encode(&reading(i)).expect("encode");
        let key = format!("pi-{:04}", i % 20);
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&line)
            .partition((i % partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
}

/// Waits until `count` reaches `n`; returns when it did. Fails if that
/// takes five minutes: something was lost.
fn wait_for(what: &str, n: u64, mut count: impl FnMut() -> u64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = count();
        if got >= n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {got} of {n} after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `vm` has taken in `n` rows.
fn wait_rows(rt: &tokio::runtime::Runtime, vm: &Victoria, n: u64) -> Instant {
    wait_for("rows VictoriaMetrics counted", n, || {
        rt.block_on(vm.rows_inserted())
    })
}

fn fresh_vm(dir: &Path, round: usize, side: &str) -> Victoria {
    let d = dir.join(format!("{side}-{round}"));
    std::fs::create_dir_all(&d).unwrap();
    Victoria::start(&d)
}

/// One timed drain into VictoriaMetrics.
#[derive(Clone, Copy)]
struct Drain {
    /// Until the database had answered every write with success.
    accepted: Duration,
    /// Until VictoriaMetrics counted every row.
    counted: Duration,
}

/// curl posting the lines in batches over one connection.
fn curl_round(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    round: usize,
    files: &[std::path::PathBuf],
    rows: u64,
) -> Drain {
    let curl = require("curl", "sudo apt-get install curl");
    let vm = fresh_vm(dir, round, "curl");
    let url = format!("{}/write?precision=ms", vm.url());
    let mut c = Command::new(curl);
    c.args(["-s", "-f", "-o", "/dev/null"]);
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            c.arg("--next").args(["-s", "-f", "-o", "/dev/null"]);
        }
        c.arg("--data-binary")
            .arg(format!("@{}", f.display()))
            .arg(&url);
    }
    let started = Instant::now();
    let status = c.status().expect("run curl");
    assert!(status.success(), "curl failed: {status}");
    let accepted = started.elapsed();
    Drain {
        accepted,
        counted: wait_rows(rt, &vm, rows) - started,
    }
}

/// How the bare consumer fetches.
#[derive(Clone, Copy, PartialEq)]
enum Fetching {
    /// With the uplink's settings: the target.
    AsTheUplink,
    /// With librdkafka's defaults.
    Defaults,
}

/// A bare consumer reading the whole topic, from its creation.
fn consumer_round(
    rt: &tokio::runtime::Runtime,
    round: usize,
    bootstrap: &str,
    topic: &str,
    n: u64,
    fetching: Fetching,
) -> Duration {
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    let _runtime = rt.enter();
    let started = Instant::now();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("bare-{topic}-{round}-{}", fetching as u8),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    if fetching == Fetching::AsTheUplink {
        for (key, value) in uplink::kafka::PREFETCH {
            config.set(key, value);
        }
    }
    let consumer: StreamConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    rt.block_on(async {
        let mut seen = 0;
        while seen < n {
            consumer.recv().await.expect("record");
            seen += 1;
        }
    });
    started.elapsed()
}

/// The lines the uplink's sinks have had accepted, from its /metrics.
async fn lines_written(metrics: &str) -> u64 {
    let Ok(response) = reqwest::get(metrics).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("uplink_lines_written_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the uplink says its database accepted `n` lines.
fn wait_accepted(rt: &tokio::runtime::Runtime, metrics: &str, n: u64) -> Instant {
    wait_for("lines the uplink wrote", n, || {
        rt.block_on(lines_written(metrics))
    })
}

/// The uplink draining the topic; returns its times and peak RSS in KiB.
fn uplink_round(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    round: usize,
    bootstrap: &str,
    topic: &str,
    n: u64,
) -> (Drain, u64) {
    let vm = fresh_vm(dir, round, &format!("uplink-{topic}"));
    let port = buoy_tests::process::free_port();
    let d = dir.join(format!("uplink-run-{topic}-{round}"));
    std::fs::create_dir_all(&d).unwrap();
    let config = format!(
        r#"[kafka]
brokers = ["{bootstrap}"]
topics = ["{topic}"]
group = "bench-{topic}-{round}"
# Dynamic membership, as the bare consumer's: with a group.instance.id,
# joining a group on Tansu 0.6 takes 6 s, which is not draining.
instance_id = ""
dead_letter_topic = ""
[metrics]
listen = "127.0.0.1:{port}"
[status]
log_interval = "0s"
[[sink]]
kind = "victoriametrics"
url = "{}"
gzip = false
"#,
        vm.url()
    );
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let started = Instant::now();
    let mut uplink = binaries::start("uplink", &d, &config);
    let accepted = wait_accepted(rt, &metrics, n) - started;
    // Each reading is three fields: three rows in VictoriaMetrics.
    let counted = wait_rows(rt, &vm, n * 3) - started;
    let (_, hwm) = uplink.memory_kib();
    uplink.stop(Duration::from_secs(30));
    (Drain { accepted, counted }, hwm)
}

/// One side's rounds: times, and the uplink's peak RSS in KiB.
#[derive(Default)]
struct Side {
    curl: Vec<Drain>,
    bare: Vec<Duration>,
    bare_defaults: Vec<Duration>,
    uplink: Vec<(Drain, u64)>,
}

impl Side {
    fn best_bare(&self) -> Duration {
        self.bare.iter().min().copied().unwrap()
    }
    fn best_uplink(&self) -> Duration {
        self.uplink.iter().map(|u| u.0.accepted).min().unwrap()
    }
    fn peak_rss_mib(&self) -> f64 {
        self.uplink.iter().map(|u| u.1).max().unwrap() as f64 / 1024.0
    }
}

/// The lines the uplink sends (its own encoding, in milliseconds), in
/// files of `BATCH` lines, for curl.
fn curl_files(dir: &Path, n: u64) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut body = String::new();
    for i in 0..n {
        let line = telemetry::line_protocol::encode(&reading(i)).unwrap();
        let (head, ts) = line.rsplit_once(' ').unwrap();
        body.push_str(&format!(
            "{head} {}\n",
            ts.parse::<i64>().unwrap() / 1_000_000
        ));
        if (i + 1) % BATCH as u64 == 0 || i + 1 == n {
            let f = dir.join(format!("batch-{}.lp", files.len()));
            std::fs::write(&f, &body).unwrap();
            files.push(f);
            body.clear();
        }
    }
    files
}

fn print_tables(n: u64, one: &Side, twelve: &Side) {
    let per_s = |d: &Duration| n as f64 / d.as_secs_f64();
    let rate = |d: Option<&Duration>| d.map_or(String::new(), |d| format!("{:.0}/s", per_s(d)));
    println!("### Kafka topic → VictoriaMetrics ({n} readings, batches of {BATCH} lines)\n");
    println!(
        "| round | partitions | bare consumer, the uplink's fetch settings (the target) | uplink, until the database accepted every line | uplink / bare consumer | uplink, until VictoriaMetrics counted every row | uplink peak RSS | curl, accepted / counted (VictoriaMetrics' ceiling) | bare consumer, librdkafka's defaults |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (partitions, side) in [(1, one), (12, twelve)] {
        for (i, (b, u)) in side.bare.iter().zip(&side.uplink).enumerate() {
            let curl = side.curl.get(i).map_or(String::new(), |c| {
                format!("{} / {}", rate(Some(&c.accepted)), rate(Some(&c.counted)))
            });
            println!(
                "| {} | {partitions} | {} | {} | {:.2} | {} | {:.1} MiB | {curl} | {} |",
                i + 1,
                rate(Some(b)),
                rate(Some(&u.0.accepted)),
                b.as_secs_f64() / u.0.accepted.as_secs_f64(),
                rate(Some(&u.0.counted)),
                u.1 as f64 / 1024.0,
                rate(side.bare_defaults.get(i)),
            );
        }
    }
    let best_curl = one.curl.iter().map(|c| c.accepted).min().unwrap();
    let best_defaults = one.bare_defaults.iter().min().unwrap();
    println!(
        "\nBest of each, one partition: bare consumer {}, uplink {}, ratio **{:.2}** (target ≥ 0.9); uplink peak RSS **{:.1} MiB** (target ≤ 40); curl {}; bare consumer with librdkafka's defaults {}.",
        rate(Some(&one.best_bare())),
        rate(Some(&one.best_uplink())),
        one.best_bare().as_secs_f64() / one.best_uplink().as_secs_f64(),
        one.peak_rss_mib(),
        rate(Some(&best_curl)),
        rate(Some(best_defaults)),
    );
    println!(
        "Twelve partitions: ratio **{:.2}**, uplink peak RSS **{:.1} MiB**.",
        twelve.best_bare().as_secs_f64() / twelve.best_uplink().as_secs_f64(),
        twelve.peak_rss_mib(),
    );
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let n = scale(1_000_000);
    let base = std::env::var_os("BUOY_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    let bootstrap = kafka.bootstrap();
    rt.block_on(create_partitioned_topics(
        &bootstrap,
        &[("bench", 1), ("bench12", 12)],
    ));
    let t = Instant::now();
    produce(&bootstrap, "bench", n, 1);
    produce(&bootstrap, "bench12", n, 12);
    eprintln!("produced {n} readings twice in {:?}", t.elapsed());
    let files = curl_files(dir.path(), n);

    // Build the binaries before anything is timed.
    let _ = binaries::path("uplink");
    let (mut one, mut twelve) = (Side::default(), Side::default());
    for round in 0..ROUNDS {
        // Each reading is three fields: three rows in VictoriaMetrics.
        one.curl
            .push(curl_round(&rt, dir.path(), round, &files, n * 3));
        one.bare_defaults.push(consumer_round(
            &rt,
            round,
            &bootstrap,
            "bench",
            n,
            Fetching::Defaults,
        ));
        for (topic, side) in [("bench", &mut one), ("bench12", &mut twelve)] {
            side.bare.push(consumer_round(
                &rt,
                round,
                &bootstrap,
                topic,
                n,
                Fetching::AsTheUplink,
            ));
            let u = uplink_round(&rt, dir.path(), round, &bootstrap, topic, n);
            eprintln!(
                "round {round} {topic}: bare consumer {:?}, uplink accepted {:?}, counted {:?} (peak RSS {} KiB)",
                side.bare.last().unwrap(),
                u.0.accepted,
                u.0.counted,
                u.1
            );
            side.uplink.push(u);
        }
    }
    print_tables(n, &one, &twelve);
}
