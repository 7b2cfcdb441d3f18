//! The journal's benchmark: `cargo bench -p edge-agent --bench journal`, or
//! `scripts/bench`, which writes the tables into docs/performance.md.
//!
//! Every figure stands next to a baseline measured in the same run, since
//! these two-core machines are noisy:
//! 1. Append throughput through the real path (a channel into the group-
//!    commit writer, line protocol encoding, framing, fsync'd commits) at
//!    `commit_interval` 0, 10 ms, 100 ms and 1 s, next to raw redb inserts of
//!    the same bytes in commits of the same size.
//! 2. Bytes written to disk (`write_bytes` of /proc/self/io) per reading: at
//!    full speed, and at a field rate of 5 readings/s in steady state (every
//!    commit also deletes the readings Kafka acknowledged), as bytes per day:
//!    the SD-card wear figure. Baseline: the readings' own bytes.
//! 3. Peak RSS of the real `edge-agent` binary holding a backlog of 1 and 5
//!    million readings with Kafka unreachable, next to the same agent with an
//!    empty journal.
//!
//! `BUOY_BENCH_SCALE=0.1` shrinks every count, for a quick look; naming
//! sections (`append`, `wear`, `memory`) after `--` runs only those.

/// The allocator the agent's binary uses (edge-agent/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_agent::journal::{
    Journal, JournalOptions, JournalWriter, WhenFull, WriterSettings, record,
};
use edge_agent::stats::Stats;
use redb::{Durability, TableDefinition};
use telemetry::Reading;

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
const GIB: u64 = 1 << 30;
const T0: i64 = 1_780_000_000_000_000_000;

fn scale(n: u64) -> u64 {
    let s: f64 = std::env::var("BUOY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as u64).max(1)
}

/// Readings shaped like the built-in sensors' (weather, visibility, host,
/// fan), one sensor of each kind per device.
fn reading(i: u64) -> Reading {
    let t = T0 + i as i64 * 250_000_000;
    let base = Reading::new("", t).with_tag("device_id", "pi-0001");
    let x = (i % 1000) as f64 / 7.0;
    match i % 4 {
        0 => Reading {
            measurement: "weather".into(),
            ..base
        }
        .with_tag("sensor", "env")
        .with_field("pressure_hpa", 1000.0 + x)
        .with_field("temperature_c", 10.0 + x / 10.0)
        .with_field("humidity_pct", 40.0 + x / 20.0),
        1 => Reading {
            measurement: "visibility".into(),
            ..base
        }
        .with_tag("sensor", "visibility")
        .with_field("visibility_m", 8000.0 + x),
        2 => Reading {
            measurement: "host".into(),
            ..base
        }
        .with_tag("sensor", "cpu")
        .with_field("cpu_temperature_c", 45.0 + x / 100.0),
        _ => Reading {
            measurement: "fan".into(),
            ..base
        }
        .with_tag("sensor", "fan")
        .with_tag("fan", "fan0")
        .with_field("fan_rpm", 3000.0 + x)
        .with_field("fan_duty_pct", 40.0),
    }
}

/// The bytes the journal stores for reading `i` as sequence number `seq`.
fn frame(i: u64, seq: u64) -> Vec<u8> {
    let r = reading(i);
    let line = telemetry::line_protocol::encode(&r).expect("encodable");
    let mut out = Vec::new();
    record::encode_reading(
        &mut out,
        seq,
        0,
        r.tag("device_id").unwrap(),
        &line,
        Some(record::Taken {
            mono_ns: i,
            synced: true,
        }),
    );
    out
}

fn options() -> JournalOptions {
    JournalOptions {
        cache_bytes: 4 << 20,
        max_bytes: 4 * GIB,
        when_full: WhenFull::DropOldest,
        downsample_window: Duration::from_secs(300),
    }
}

/// Bytes this process has caused to be written to storage.
fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Append {
    rate: f64,
    commits: u64,
    written: u64,
}

/// `n` readings through the group-commit writer, as fast as it takes them.
fn append_through_writer(dir: &Path, interval: Duration, n: u64) -> Append {
    let path = dir.join(format!("writer-{}.redb", interval.as_millis()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (journal, _) = Journal::open(&path, options(), "bench").unwrap();
        let stats = Arc::new(Stats::default());
        let settings = WriterSettings::for_journal(&journal, interval, 10_000);
        let (writer, handles) = JournalWriter::new(journal, settings, stats.clone())
            .map_err(|e| e.0)
            .unwrap();
        let readings: Vec<Reading> = (0..n).map(reading).collect();
        let before = write_bytes();
        let start = Instant::now();
        let task = tokio::spawn(writer.run());
        let sender = handles.readings.clone();
        let feeder = tokio::spawn(async move {
            for r in readings {
                sender.send(r.into()).await.unwrap();
            }
        });
        let mut committed = handles.committed.clone();
        committed.wait_for(|p| p.last_seq >= n).await.unwrap();
        let elapsed = start.elapsed();
        let written = write_bytes() - before;
        feeder.await.unwrap();
        drop(handles);
        drop(committed);
        task.await.unwrap().unwrap();
        Append {
            rate: n as f64 / elapsed.as_secs_f64(),
            commits: stats.snapshot().commits,
            written,
        }
    })
}

/// The same bytes straight into redb, `batch` per fsync'd commit.
fn append_raw(dir: &Path, frames: &[Vec<u8>], batch: usize) -> Append {
    let path = dir.join(format!("raw-{batch}.redb"));
    let db = redb::Builder::new()
        .set_cache_size(4 << 20)
        .create(&path)
        .unwrap();
    let before = write_bytes();
    let start = Instant::now();
    let mut commits = 0;
    for (c, chunk) in frames.chunks(batch).enumerate() {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        {
            let mut t = tx.open_table(RAW).unwrap();
            for (i, f) in chunk.iter().enumerate() {
                t.insert((c * batch + i) as u64, f.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
        commits += 1;
    }
    let elapsed = start.elapsed();
    Append {
        rate: frames.len() as f64 / elapsed.as_secs_f64(),
        commits,
        written: write_bytes() - before,
    }
}

/// The same bytes appended to a plain file, `batch` per write and
/// `fdatasync`: what a log with no index at all costs.
fn append_file(dir: &Path, frames: &[Vec<u8>], batch: usize) -> Append {
    use std::io::Write;
    let path = dir.join(format!("raw-{batch}.log"));
    let mut file = std::fs::File::create(&path).unwrap();
    let before = write_bytes();
    let start = Instant::now();
    let mut commits = 0;
    let mut buf = Vec::new();
    for chunk in frames.chunks(batch) {
        buf.clear();
        for f in chunk {
            buf.extend_from_slice(f);
        }
        file.write_all(&buf).unwrap();
        file.sync_data().unwrap();
        commits += 1;
    }
    let elapsed = start.elapsed();
    Append {
        rate: frames.len() as f64 / elapsed.as_secs_f64(),
        commits,
        written: write_bytes() - before,
    }
}

fn append_table(dir: &Path) -> String {
    let mut out = String::from(
        "| commit_interval | readings | commits | journal (readings/s) | raw redb, same bytes and commits (readings/s) | raw append + fdatasync, same bytes and commits (readings/s) | journal / raw redb | journal / raw append | bytes written per reading | write amplification |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (label, interval, n) in [
        ("0 (every reading)", Duration::ZERO, scale(5_000)),
        ("10 ms", Duration::from_millis(10), scale(300_000)),
        ("100 ms", Duration::from_millis(100), scale(500_000)),
        ("1 s", Duration::from_secs(1), scale(500_000)),
    ] {
        let journal = append_through_writer(dir, interval, n);
        let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(i, i + 1)).collect();
        let frame_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
        let batch = (n / journal.commits.max(1)).max(1) as usize;
        let raw = append_raw(dir, &frames, batch);
        let log = append_file(dir, &frames, batch);
        eprintln!(
            "{label}: journal {:.0}/s in {} commits, raw {:.0}/s in {} commits, append {:.0}/s",
            journal.rate, journal.commits, raw.rate, raw.commits, log.rate
        );
        out.push_str(&format!(
            "| {label} | {n} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2}× |\n",
            journal.commits,
            journal.rate,
            raw.rate,
            log.rate,
            journal.rate / raw.rate,
            journal.rate / log.rate,
            journal.written as f64 / n as f64,
            journal.written as f64 / frame_bytes as f64,
        ));
    }
    out
}

/// Steady state at 5 readings/s: each commit appends the readings that
/// arrived in one interval and deletes those of the previous commit (by then
/// acknowledged by Kafka).
fn wear_table(dir: &Path) -> String {
    const RATE: f64 = 5.0;
    let mut out = String::from(
        "| commit_interval | readings per commit | commits per day | bytes written per commit | written per day | readings' own bytes per day | write amplification |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (label, secs) in [
        ("0", 0.0),
        ("10 ms", 0.01),
        ("100 ms", 0.1),
        ("1 s", 1.0),
        ("5 s", 5.0),
        ("10 s", 10.0),
    ] {
        // Readings come 200 ms apart: a commit interval shorter than that
        // still commits them one by one.
        let per_commit = ((RATE * secs) as u64).max(1);
        let path = dir.join(format!("wear-{label}.redb").replace(' ', ""));
        let (mut journal, _) = Journal::open(&path, options(), "bench").unwrap();
        let commits = scale(400).max(50);
        let mut i = 0;
        let mut previous: Vec<u64> = Vec::new();
        // Warm up to the steady state (tree and file at size).
        for _ in 0..20 {
            let rs: Vec<Reading> = (i..i + per_commit).map(reading).collect();
            i += per_commit;
            previous = journal.commit(&rs, &previous).unwrap().seqs.collect();
        }
        let before = write_bytes();
        for _ in 0..commits {
            let rs: Vec<Reading> = (i..i + per_commit).map(reading).collect();
            i += per_commit;
            previous = journal.commit(&rs, &previous).unwrap().seqs.collect();
        }
        let per_commit_bytes = (write_bytes() - before) as f64 / commits as f64;
        let commits_per_day = RATE * 86_400.0 / per_commit as f64;
        let written_per_day = per_commit_bytes * commits_per_day;
        let own = frame(0, 1).len() as f64 * RATE * 86_400.0;
        out.push_str(&format!(
            "| {label} | {per_commit} | {commits_per_day:.0} | {per_commit_bytes:.0} | {:.1} MB | {:.1} MB | {:.0}× |\n",
            written_per_day / 1e6,
            own / 1e6,
            written_per_day / own
        ));
    }
    out
}

/// Fills a journal with `n` readings (fsync'd commits of 10,000).
fn fill(path: &Path, n: u64) {
    let (mut journal, _) = Journal::open(path, options(), "bench").unwrap();
    let mut i = 0;
    while i < n {
        let batch: Vec<Reading> = (i..(i + 10_000).min(n)).map(reading).collect();
        i += batch.len() as u64;
        journal.commit(&batch, &[]).unwrap();
    }
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
}

#[derive(Clone, Copy)]
struct Held {
    peak_kib: u64,
    startup: Duration,
    file_bytes: u64,
}

/// Runs the real agent on a journal holding `n` readings, with Kafka
/// unreachable and the default sensors sampling, and records its peak RSS.
fn hold_backlog(dir: &Path, n: u64, run_for: Duration) -> Held {
    let path = dir.join(format!("backlog-{n}.redb"));
    fill(&path, n);
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join(format!("agent-{n}.toml"));
    std::fs::write(
        &config,
        format!(
            "device_id = \"pi-0001\"\n[journal]\npath = \"{}\"\nmax_bytes = \"4GiB\"\n\
             [kafka]\nbrokers = [\"127.0.0.1:{nobody}\"]\n[status]\nlog_interval = \"1s\"\n",
            path.display()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edge-agent");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("edge agent starting") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(600))
        .expect("the agent started");
    let startup = start.elapsed();
    let deadline = Instant::now() + run_for;
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(status_kib(pid, "VmHWM:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    peak = peak.max(status_kib(pid, "VmHWM:").unwrap_or(0));
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the agent exited with {status}");
    let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    std::fs::remove_file(&path).ok();
    Held {
        peak_kib: peak,
        startup,
        file_bytes,
    }
}

fn rss_table(dir: &Path) -> String {
    let run_for = Duration::from_secs(20);
    let mut out = String::from(
        "| readings waiting | journal file | agent start-up (open + integrity check) | peak RSS | vs. empty journal |\n\
         |---|---|---|---|---|\n",
    );
    let empty = hold_backlog(dir, 0, run_for);
    for n in [0, scale(1_000_000), scale(5_000_000)] {
        let held = if n == 0 {
            empty
        } else {
            hold_backlog(dir, n, run_for)
        };
        eprintln!(
            "backlog {n}: peak RSS {} KiB, start-up {:?}",
            held.peak_kib, held.startup
        );
        out.push_str(&format!(
            "| {n} | {:.0} MiB | {:.1} s | {:.1} MiB | {:.2}× |\n",
            held.file_bytes as f64 / (1 << 20) as f64,
            held.startup.as_secs_f64(),
            held.peak_kib as f64 / 1024.0,
            held.peak_kib as f64 / empty.peak_kib as f64,
        ));
    }
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it as a test.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("buoy-bench-")
        .tempdir_in(std::env::var_os("BUOY_BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
        .expect("bench directory");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Journal benchmark: {cores} cores, journal in {}\n",
        dir.path().display()
    );
    // `cargo bench --bench journal -- append` runs only the sections named.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |section: &str| named.is_empty() || named.iter().any(|n| n == section);
    if wanted("append") {
        println!("### Append throughput and write amplification at full speed\n");
        println!("{}", append_table(dir.path()));
    }
    if wanted("wear") {
        println!(
            "### Flash wear at a field rate of 5 readings/s (steady state, acknowledged readings deleted)\n"
        );
        println!("{}", wear_table(dir.path()));
    }
    if wanted("memory") {
        println!(
            "### Memory with a backlog (real agent, Kafka unreachable, default sensors, 20 s)\n"
        );
        println!("{}", rss_table(dir.path()));
    }
}
