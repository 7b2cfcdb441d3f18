//! Decode → batch, per core: `cargo bench -p uplink --bench decode`, or
//! `scripts/bench decode`, which writes the table into docs/performance.md.
//!
//! Records as they arrive from Kafka (the agent's line protocol with its
//! `content-type` header, a Telegraf JSON metric, a plain JSON object of
//! fields) go through the uplink's decoder into an open batch, which is
//! sealed and dropped whenever it is full, on one thread. Next to each:
//! - the ceiling: `memchr` scanning the same bytes for a byte that is not
//!   there, record by record, which is as fast as anything can read them;
//! - the path before issue 20: each line parsed into an owned `Reading`
//!   and encoded again.
//!
//! Each figure is the best of five rounds. `BUOY_BENCH_SCALE=0.1` shrinks
//! the record count.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry::line_protocol;
use telemetry::telegraf_json::{self, TimestampUnit};
use telemetry::{FieldValue, Reading};
use uplink::batcher::{Batcher, Limits};
use uplink::config::IntegerFields;
use uplink::decode::{self, DecodeSettings, RecordView};
use uplink::record::Origin;

const ROUNDS: usize = 5;
const T0_NS: i64 = 1_790_000_000_000_000_000;

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("BUOY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * s) as usize).max(1_000)
}

/// A reading shaped like the simulated weather sensor's.
fn reading(i: usize) -> Reading {
    let x = (i % 1000) as f64 / 7.0;
    Reading::new("weather", T0_NS + i as i64 * 1_000_000)
        .with_tag("device_id", format!("pi-{:04}", i % 20))
        .with_tag("sensor", "env")
        .with_field("pressure_hpa", 1000.0 + x)
        .with_field("temperature_c", 10.0 + x / 10.0)
        .with_field("humidity_pct", 50.0 + x / 20.0)
}

/// A kind of record: its payloads and `content-type` header.
struct Kind {
    name: &'static str,
    content_type: Option<&'static str>,
    payloads: Vec<Vec<u8>>,
}

fn kinds(n: usize) -> Vec<Kind> {
    let readings: Vec<Reading> = (0..n).map(reading).collect();
    let plain = |r: &Reading| {
        let fields: serde_json::Map<String, serde_json::Value> = r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v.as_f64())))
            .collect();
        serde_json::to_vec(&fields).expect("json")
    };
    vec![
        Kind {
            name: "agent line protocol",
            content_type: Some("text/plain; format=influx"),
            payloads: readings
                .iter()
                .map(|r| line_protocol::encode(r).expect("encode").into_bytes())
                .collect(),
        },
        Kind {
            name: "Telegraf JSON",
            content_type: None,
            payloads: readings
                .iter()
                .map(|r| telegraf_json::encode(r).expect("encode").into_bytes())
                .collect(),
        },
        Kind {
            name: "plain JSON fields",
            content_type: None,
            payloads: readings.iter().map(plain).collect(),
        },
    ]
}

fn view<'a>(kind: &'a Kind, payload: &'a [u8]) -> RecordView<'a> {
    RecordView {
        topic: "telemetry",
        payload: Some(payload),
        content_type: kind.content_type,
        timestamp_ms: Some(T0_NS / 1_000_000),
    }
}

const SETTINGS: DecodeSettings = DecodeSettings {
    json_timestamp_unit: TimestampUnit::Auto,
    max_record_size: 1 << 20,
    integers: IntegerFields::Float,
};

/// The uplink's decoder into a batcher of the default size.
fn decode_to_batches(kind: &Kind) {
    let mut batcher = Batcher::new(Limits {
        max_lines: 5_000,
        max_bytes: 4 << 20,
        max_wait: Duration::from_secs(1),
    });
    let topic: Arc<str> = Arc::from("telemetry");
    let now = Instant::now();
    for (offset, payload) in kind.payloads.iter().enumerate() {
        let origin = Origin {
            topic: topic.clone(),
            partition: 0,
            offset: offset as i64,
        };
        let mark = batcher.lines().mark();
        decode::decode(&view(kind, payload), &SETTINGS, batcher.lines()).expect("decodes");
        batcher.took(mark, origin, now);
        if batcher.is_full() {
            black_box(batcher.take());
        }
    }
    black_box(batcher.take());
}

/// Before issue 20: owned readings, integers pinned, encoded again.
fn parse_and_encode(kind: &Kind) {
    let mut lines = Vec::with_capacity(5_000);
    for payload in &kind.payloads {
        let text = std::str::from_utf8(payload).expect("UTF-8");
        let readings: Vec<Reading> = if text.starts_with('{') {
            match telegraf_json::decode(text, TimestampUnit::Auto, T0_NS).expect("decodes") {
                telegraf_json::JsonPayload::Metrics(r) => r,
                telegraf_json::JsonPayload::Fields(fields) => {
                    let mut r = Reading::new("telemetry", T0_NS);
                    r.fields = fields;
                    vec![r]
                }
            }
        } else {
            line_protocol::parse_lines(text, T0_NS)
                .collect::<Result<_, _>>()
                .expect("parses")
        };
        for mut r in readings {
            for v in r.fields.values_mut() {
                if let FieldValue::Int(i) = *v {
                    *v = FieldValue::Float(i as f64);
                }
            }
            lines.push(line_protocol::encode(&r).expect("encodes"));
        }
        if lines.len() >= 5_000 {
            black_box(std::mem::take(&mut lines));
        }
    }
    black_box(lines);
}

/// The ceiling: every byte looked at once, as fast as `memchr` can.
fn scan(kind: &Kind) {
    for payload in &kind.payloads {
        black_box(memchr::memchr(0, black_box(payload)));
    }
}

/// Bytes per second of `run` over `kind`, best of the rounds.
fn rate(kind: &Kind, run: fn(&Kind)) -> f64 {
    let bytes: usize = kind.payloads.iter().map(Vec::len).sum();
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            run(kind);
            bytes as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn mb(rate: f64) -> String {
    format!("{:.0} MB/s", rate / 1e6)
}

fn main() {
    let n = scale(500_000);
    println!("### Decode → batch, one core\n");
    println!("{n} records of each kind, best of {ROUNDS} rounds.\n");
    println!(
        "| records | size | `memchr` scan (ceiling) | uplink: decode → batch | share of ceiling | before (parse, re-encode) | decode → batch ÷ before |"
    );
    println!("|---|---|---|---|---|---|---|");
    for kind in kinds(n) {
        let size = kind.payloads.iter().map(Vec::len).sum::<usize>() / n;
        let ceiling = rate(&kind, scan);
        let now = rate(&kind, decode_to_batches);
        let before = rate(&kind, parse_and_encode);
        println!(
            "| {} | {size} B | {} | {} ({:.2}M records/s) | {:.3} | {} | {:.2} |",
            kind.name,
            mb(ceiling),
            mb(now),
            now / size as f64 / 1e6,
            now / ceiling,
            mb(before),
            now / before
        );
    }
}
