//! The forwarder's benchmark: `cargo bench -p buoy-tests --bench drain`, or
//! `scripts/bench`, which writes the table into docs/performance.md.
//!
//! A backlog of 1 million journaled readings is drained into Tansu on
//! loopback by the real agent (journal reads, lanes, encoding, delivery
//! reports, deletions committed to the journal), next to a bare rdkafka
//! producer sending the same pre-encoded lines, keys and headers from memory
//! with the same producer settings (the agent's own `client_config`) and no
//! journal: librdkafka's own ceiling here. Rounds alternate, each to a fresh
//! topic, and the best of each side is compared.
//!
//! `BUOY_BENCH_SCALE=0.1` shrinks the backlog, for a quick look.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use buoy_tests::kafka::{Kafka, Storage};
use edge_agent::config::AgentConfig;
use edge_agent::journal::{Journal, JournalOptions};
use edge_agent::stats::Stats;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use telemetry::Reading;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 2;
const T0: i64 = 1_780_000_000_000_000_000;
const DEVICE: &str = "pi-0001";

fn scale(n: u64) -> u64 {
    let s: f64 = std::env::var("BUOY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as u64).max(1)
}

/// Readings shaped like the simulated weather sensor's.
fn reading(i: u64) -> Reading {
    let x = (i % 1000) as f64 / 7.0;
    Reading::new("weather", T0 + i as i64 * 250_000_000)
        .with_tag("device_id", DEVICE)
        .with_tag("sensor", "env")
        .with_field("pressure_hpa", 1000.0 + x)
        .with_field("temperature_c", 10.0 + x / 10.0)
        .with_field("humidity_pct", 50.0 + x / 20.0)
}

fn agent_config(journal: &std::path::Path, bootstrap: &str, topic: &str) -> AgentConfig {
    let text = format!(
        r#"device_id = "{DEVICE}"
sensor = []
[journal]
path = "{}"
commit_interval = "100ms"
[kafka]
brokers = ["{bootstrap}"]
topic = "{topic}"
[status]
log_interval = "0s"
"#,
        journal.display()
    );
    AgentConfig::load("bench", Some(&text), &[])
        .expect("bench config")
        .config
}

/// Counts delivery reports.
#[derive(Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
    }
}

/// The ceiling: the same records from memory, same settings, no journal.
fn bare_producer(config: &AgentConfig, lines: &[String], boot: &str) -> Duration {
    let producer: ThreadedProducer<Counting> =
        edge_agent::forwarder::producer::client_config(&config.forwarder())
            .expect("producer settings")
            .create_with_context(Counting::default())
            .expect("producer");
    let topic = &config.kafka.topic;
    let start = Instant::now();
    for (i, line) in lines.iter().enumerate() {
        let seq = (i + 1).to_string();
        loop {
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "buoy-seq",
                    value: Some(seq.as_str()),
                })
                .insert(Header {
                    key: "buoy-boot",
                    value: Some(boot),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("text/plain; format=influx"),
                });
            let record = BaseRecord::to(topic)
                .key(DEVICE)
                .payload(line.as_str())
                .headers(headers);
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => panic!("bare producer: {e}"),
            }
        }
    }
    let n = lines.len() as u64;
    while producer.context().delivered.load(Relaxed) < n {
        assert_eq!(
            producer.context().failed.load(Relaxed),
            0,
            "deliveries failed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

/// The real agent draining a journal of `n` readings.
fn agent_drain(runtime: &tokio::runtime::Runtime, config: AgentConfig, n: u64) -> Duration {
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let agent = runtime.spawn(edge_agent::agent::run_with_status(
        config,
        shutdown.clone(),
        stats.clone(),
    ));
    while stats.snapshot().forwarded < n {
        assert!(!agent.is_finished(), "the agent stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    shutdown.cancel();
    runtime.block_on(agent).unwrap().expect("agent");
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = scale(1_000_000);
    let dir = tempfile::tempdir_in(std::env::var("BUOY_BENCH_DIR").unwrap_or("/var/tmp".into()))
        .expect("bench dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    let boot = edge_agent::journal::current_boot_id();
    let readings: Vec<Reading> = (0..n).map(reading).collect();
    let lines: Vec<String> = readings
        .iter()
        .map(|r| telemetry::line_protocol::encode(r).unwrap())
        .collect();

    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let topics = [format!("bare-{round}"), format!("agent-{round}")];
        runtime.block_on(kafka.create_topics(&[&topics[0], &topics[1]]));

        let bare_config = agent_config(
            &dir.path().join("unused.redb"),
            &kafka.bootstrap(),
            &topics[0],
        );
        let bare = bare_producer(&bare_config, &lines, &boot);

        let journal_path = dir.path().join(format!("journal-{round}.redb"));
        {
            let (mut journal, _) =
                Journal::open(&journal_path, JournalOptions::for_inspection(), &boot).unwrap();
            for chunk in readings.chunks(10_000) {
                journal.commit(chunk, &[]).unwrap();
            }
        }
        let agent = agent_drain(
            &runtime,
            agent_config(&journal_path, &kafka.bootstrap(), &topics[1]),
            n,
        );
        eprintln!("round {round}: bare producer {bare:?}, agent {agent:?}");
        rows.push((bare, agent));
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let best_bare = rows.iter().map(|r| r.0).min().unwrap();
    let best_agent = rows.iter().map(|r| r.1).min().unwrap();

    println!("### Backlog drain into Tansu on loopback (acks=all, idempotent, zstd)\n");
    println!(
        "| round | readings | bare rdkafka producer from memory (readings/s) | agent draining its journal (readings/s) | agent / bare |"
    );
    println!("|---|---|---|---|---|");
    for (i, (bare, agent)) in rows.iter().enumerate() {
        println!(
            "| {} | {n} | {:.0} | {:.0} | {:.2} |",
            i + 1,
            rate(*bare),
            rate(*agent),
            bare.as_secs_f64() / agent.as_secs_f64()
        );
    }
    println!(
        "| best of each | {n} | {:.0} | {:.0} | {:.2} |",
        rate(best_bare),
        rate(best_agent),
        best_bare.as_secs_f64() / best_agent.as_secs_f64()
    );
}
