//! # Prometheus metrics on a local port (off by default)
//!
//! With `[metrics] listen = "127.0.0.1:9275"`, `GET /metrics` answers in the
//! Prometheus text format, made at each scrape from the reported state
//! ([`crate::remote_config::state`]):
//!
//! | metric | what |
//! |---|---|
//! | `edge_agent_sampled_total`, `_journaled_total`, `_forwarded_total` | readings since start |
//! | `edge_agent_journal_commits_total` | journal commits since start (each one an fsync) |
//! | `edge_agent_dropped_total{cause}` | readings dropped since start, by cause |
//! | `edge_agent_backlog_readings` | readings in the journal not yet acknowledged by Kafka |
//! | `edge_agent_oldest_unsent_age_seconds` | how old the oldest of them is |
//! | `edge_agent_journal_bytes`, `_journal_max_bytes` | the journal file against its limit |
//! | `edge_agent_link_up` | 1 while Kafka acknowledges readings |
//! | `edge_agent_producer_renewals_total` | fresh Kafka producer sessions since start |
//! | `edge_agent_sensor_ok{sensor}`, `_sensor_errors_total{sensor}` | each sensor's health |
//! | `edge_agent_clock_synced` | 1 while the wall clock is believed |
//! | `edge_agent_config_version` | the remote config version running (0: local) |
//! | `edge_agent_problems` | what `edge-agent status` would list |

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::remote_config::state::{JournalReport, ReportedState};

type Labels = Vec<(&'static str, String)>;

/// The metrics text for `state`.
pub fn render(s: &ReportedState) -> String {
    let mut r = Registry::with_prefix("edge_agent");
    readings(&mut r, s);
    if let Some(j) = &s.journal {
        journal(&mut r, j);
    }
    link_and_sensors(&mut r, s);
    gauge(
        &mut r,
        "clock_synced",
        "1 while the wall clock is believed",
        f64::from(u8::from(s.clock.synced)),
    );
    gauge(
        &mut r,
        "config_version",
        "The remote config version running (0: the local file only)",
        s.config.applied_version as f64,
    );
    gauge(
        &mut r,
        "problems",
        "Problems edge-agent status would list",
        s.problems().len() as f64,
    );
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String");
    out
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

/// Sampled, journaled, forwarded, and dropped by cause.
fn readings(r: &mut Registry, s: &ReportedState) {
    counter(r, "sampled", "Readings sampled since start", s.sampled);
    counter(
        r,
        "journaled",
        "Readings journaled since start",
        s.journaled,
    );
    counter(
        r,
        "forwarded",
        "Readings acknowledged by Kafka since start",
        s.forwarded,
    );
    counter(
        r,
        "journal_commits",
        "Journal commits since start (each one an fsync)",
        s.commits,
    );
    let dropped = Family::<Labels, Counter>::default();
    let d = &s.dropped;
    for (cause, n) in [
        ("queue_full", d.queue_full),
        ("unencodable", d.unencodable),
        ("dropped_oldest", d.dropped_oldest),
        ("rejected_new", d.rejected_new),
        ("aggregated", d.aggregated),
        ("unreadable", d.unreadable),
    ] {
        dropped
            .get_or_create(&vec![("cause", cause.to_owned())])
            .inc_by(n);
    }
    r.register("dropped", "Readings dropped since start, by cause", dropped);
}

fn journal(r: &mut Registry, j: &JournalReport) {
    gauge(
        r,
        "backlog_readings",
        "Readings in the journal not yet acknowledged by Kafka",
        j.records as f64,
    );
    gauge(
        r,
        "oldest_unsent_age_seconds",
        "How old the oldest unacknowledged reading is",
        j.oldest_unsent_age_s.unwrap_or(0.0),
    );
    gauge(r, "journal_bytes", "Journal file size", j.file_bytes as f64);
    gauge(
        r,
        "journal_max_bytes",
        "journal.max_bytes",
        j.max_bytes as f64,
    );
}

fn link_and_sensors(r: &mut Registry, s: &ReportedState) {
    gauge(
        r,
        "link_up",
        "1 while Kafka acknowledges readings",
        f64::from(u8::from(s.link.state == "up")),
    );
    counter(
        r,
        "producer_renewals",
        "Fresh Kafka producer sessions started since start (lost brokers, fatal error, no progress)",
        s.link.producer_renewals,
    );
    let ok = Family::<Labels, Gauge>::default();
    let errors = Family::<Labels, Counter>::default();
    for sensor in &s.sensors {
        let labels = vec![("sensor", sensor.name.clone())];
        ok.get_or_create(&labels)
            .set(i64::from(sensor.state != hardware::HealthState::Failing));
        errors.get_or_create(&labels).inc_by(sensor.errors);
    }
    r.register("sensor_ok", "1 unless the sensor is failing", ok);
    r.register("sensor_errors", "Failed reads since start", errors);
}
