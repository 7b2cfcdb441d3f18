//! # Metrics: Prometheus text on a local port
//!
//! `GET /metrics` on `metrics.listen` (off by default; e.g. `127.0.0.1:9274`):
//!
//! | metric | what |
//! |---|---|
//! | `uplink_consumer_lag{topic,partition}` | records between the partition's end (its high watermark, asked of the broker every 5 s, or what the uplink has read if further) and the offset the uplink last stored as written |
//! | `uplink_records_total` | records consumed |
//! | `uplink_lines_written_total{sink}` | lines the sink accepted |
//! | `uplink_lines_per_second` | lines accepted by all sinks per second, over the last 5 s |
//! | `uplink_batch_seconds` | histogram: from a batch being sealed to every sink and the dead-letter topic holding it |
//! | `uplink_write_retries_total{sink}` | failed writes that will be retried |
//! | `uplink_dead_lettered_total{reason}` | records sent to the dead-letter topic (`malformed` or `rejected`) |
//! | `uplink_batches_in_flight` | batches being written or retried |
//! | `uplink_consuming_paused` | 1 while consumption is paused because every batch slot is taken |
//! | `uplink_sink_misconfigured{sink}` | 1 while the sink answers 401, 403 or 404 |
//! | `uplink_offsets_skipped_total{topic,partition}` | offsets the broker never delivered: a record arrived beyond the offset the uplink was at (compaction, or Tansu answering a fetch from inside a record batch) |
//! | `uplink_partitions_assigned` | partitions this uplink consumes now |
//! | `uplink_partitions_revoked_total` | partitions rebalances took away from this uplink |

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetterReason;

/// Label pairs of a metric family.
pub type Labels = Vec<(&'static str, String)>;

/// Where a partition stands, as offsets.
#[derive(Debug, Default, Clone, Copy)]
struct Position {
    written: Option<i64>,
    consumed: Option<i64>,
    high: Option<i64>,
}

pub struct Metrics {
    registry: Registry,
    /// Per partition, where things stand; lag is measured from them.
    positions: Mutex<HashMap<(String, i32), Position>>,
    pub consumer_lag: Family<Labels, Gauge>,
    pub records: Counter,
    pub lines_written: Family<Labels, Counter>,
    pub lines_per_second: Gauge<f64, AtomicU64>,
    pub batch_seconds: Histogram,
    pub write_retries: Family<Labels, Counter>,
    pub dead_lettered: Family<Labels, Counter>,
    pub batches_in_flight: Gauge,
    pub paused: Gauge,
    pub misconfigured: Family<Labels, Gauge>,
    pub offsets_skipped: Family<Labels, Counter>,
    pub partitions_assigned: Gauge,
    pub partitions_revoked: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("uplink");
        let m = Metrics {
            consumer_lag: Family::default(),
            records: Counter::default(),
            lines_written: Family::default(),
            lines_per_second: Gauge::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            write_retries: Family::default(),
            dead_lettered: Family::default(),
            batches_in_flight: Gauge::default(),
            paused: Gauge::default(),
            misconfigured: Family::default(),
            offsets_skipped: Family::default(),
            partitions_assigned: Gauge::default(),
            partitions_revoked: Counter::default(),
            registry: Registry::default(),
            positions: Mutex::new(HashMap::new()),
        };
        m.register_consumer(&mut registry);
        m.register_writers(&mut registry);
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The consumer's metrics, with their help text, in `registry`.
    fn register_consumer(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "consumer_lag",
            "Records behind the partition's end (approximate where the broker's high watermark lags)",
            m.consumer_lag.clone(),
        );
        registry.register("records", "Kafka records consumed", m.records.clone());
        registry.register(
            "offsets_skipped",
            "Offsets the broker never delivered: a record arrived beyond the offset the uplink was at",
            m.offsets_skipped.clone(),
        );
        registry.register(
            "partitions_assigned",
            "Partitions this uplink consumes now",
            m.partitions_assigned.clone(),
        );
        registry.register(
            "partitions_revoked",
            "Partitions rebalances took away from this uplink",
            m.partitions_revoked.clone(),
        );
        registry.register(
            "consuming_paused",
            "1 while consumption is paused because every batch slot is taken",
            m.paused.clone(),
        );
    }

    /// The writers' metrics, with their help text, in `registry`.
    fn register_writers(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "lines_written",
            "Lines the sink accepted",
            m.lines_written.clone(),
        );
        registry.register(
            "lines_per_second",
            "Lines accepted by all sinks per second, over the last 5 s",
            m.lines_per_second.clone(),
        );
        registry.register(
            "batch_seconds",
            "From a batch being sealed to every sink and the dead-letter topic holding it",
            m.batch_seconds.clone(),
        );
        registry.register(
            "write_retries",
            "Failed writes that will be retried",
            m.write_retries.clone(),
        );
        registry.register(
            "dead_lettered",
            "Records sent to the dead-letter topic",
            m.dead_lettered.clone(),
        );
        registry.register(
            "batches_in_flight",
            "Batches being written or retried",
            m.batches_in_flight.clone(),
        );
        registry.register(
            "sink_misconfigured",
            "1 while the sink answers 401, 403 or 404",
            m.misconfigured.clone(),
        );
    }
}

/// Labels naming one sink.
pub fn sink(name: &str) -> Labels {
    vec![("sink", name.to_owned())]
}

/// Labels naming one partition.
pub fn partition(topic: &str, partition: i32) -> Labels {
    vec![
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

/// Labels naming why records were dead-lettered.
pub fn reason(reason: DeadLetterReason) -> Labels {
    vec![("reason", reason.as_str().to_owned())]
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Makes every per-sink and per-reason series exist, at 0, before
    /// anything happened: a dashboard or an alert on retries or dead
    /// letters then has data from the start (a series that appears only
    /// at the first failure looks, until then, like a renamed metric).
    pub fn announce<'a>(&self, sinks: impl IntoIterator<Item = &'a str>) {
        for name in sinks {
            let labels = sink(name);
            drop(self.lines_written.get_or_create(&labels));
            drop(self.write_retries.get_or_create(&labels));
            drop(self.misconfigured.get_or_create(&labels));
        }
        for r in DeadLetterReason::ALL {
            drop(self.dead_lettered.get_or_create(&reason(r)));
        }
    }

    /// Notes that everything below `offset` in a partition is written.
    pub fn written(&self, topic: &str, partition: i32, offset: i64) {
        self.update(topic, partition, |p| p.written = Some(offset));
    }

    /// Notes that the uplink has read a partition up to (not including)
    /// `offset`.
    pub fn consumed(&self, topic: &str, partition: i32, offset: i64) {
        self.update(topic, partition, |p| p.consumed = Some(offset));
    }

    /// Notes a partition's high watermark, as the broker reported it.
    pub fn high_watermark(&self, topic: &str, partition: i32, offset: i64) {
        self.update(topic, partition, |p| p.high = Some(offset));
    }

    /// Changes a partition's position and sets its lag: from what is written
    /// to the furthest end known (the broker's high watermark, or what was
    /// read if that is further: Tansu's watermark can trail its log).
    fn update(&self, topic: &str, partition: i32, change: impl FnOnce(&mut Position)) {
        let mut positions = self.positions.lock().expect("positions lock");
        let p = positions.entry((topic.to_owned(), partition)).or_default();
        change(p);
        if let Some(written) = p.written {
            let end = p.high.max(p.consumed).unwrap_or(written);
            self.consumer_lag
                .get_or_create(&self::partition(topic, partition))
                .set((end - written).max(0));
        }
    }

    /// Forgets a partition that is no longer assigned here.
    pub fn forget(&self, topic: &str, partition: i32) {
        self.positions
            .lock()
            .expect("positions lock")
            .remove(&(topic.to_owned(), partition));
        self.consumer_lag.remove(&self::partition(topic, partition));
    }

    /// Partitions known here, for the lag watcher.
    fn partitions(&self) -> Vec<(String, i32)> {
        self.positions
            .lock()
            .expect("positions lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Every 5 s until `stop`, asks the broker for the high watermark of each
    /// partition written to, with a client of its own (no group), so the
    /// pipeline never waits on it. librdkafka's statistics were tried first:
    /// on Tansu they reported no lag while partitions were paused.
    pub fn watch_lag(
        self: Arc<Self>,
        client: rdkafka::consumer::BaseConsumer,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        use rdkafka::consumer::Consumer as _;
        tokio::spawn(async move {
            let client = Arc::new(client);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
                let metrics = self.clone();
                let client = client.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for (topic, partition) in metrics.partitions() {
                        if let Ok((_, high)) = client.fetch_watermarks(
                            &topic,
                            partition,
                            std::time::Duration::from_secs(2),
                        ) {
                            metrics.high_watermark(&topic, partition, high);
                        }
                    }
                })
                .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_runs_from_what_is_written_to_the_furthest_end_known() {
        let m = Metrics::default();
        m.consumed("t", 0, 500);
        assert!(
            !m.render().contains("uplink_consumer_lag{"),
            "nothing written yet"
        );
        m.written("t", 0, 100);
        assert!(
            m.render()
                .contains("uplink_consumer_lag{topic=\"t\",partition=\"0\"} 400"),
            "{}",
            m.render()
        );
        m.high_watermark("t", 0, 900);
        assert!(
            m.render()
                .contains("uplink_consumer_lag{topic=\"t\",partition=\"0\"} 800")
        );
        m.forget("t", 0);
        assert!(!m.render().contains("uplink_consumer_lag{"));
    }

    #[test]
    fn renders_every_metric_with_its_labels() {
        let m = Metrics::default();
        m.records.inc_by(3);
        m.lines_written
            .get_or_create(&sink("victoriametrics x"))
            .inc_by(5);
        m.consumer_lag
            .get_or_create(&vec![("topic", "t".into()), ("partition", "2".into())])
            .set(17);
        m.batch_seconds.observe(0.02);
        let text = m.render();
        for expected in [
            "uplink_records_total 3",
            "uplink_lines_written_total{sink=\"victoriametrics x\"} 5",
            "uplink_consumer_lag{topic=\"t\",partition=\"2\"} 17",
            "uplink_batch_seconds_count 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn every_sink_and_reason_has_a_series_at_zero_from_the_start() {
        let m = Metrics::default();
        m.announce(["victoriametrics[0]"]);
        let text = m.render();
        for expected in [
            "uplink_write_retries_total{sink=\"victoriametrics[0]\"} 0",
            "uplink_lines_written_total{sink=\"victoriametrics[0]\"} 0",
            "uplink_sink_misconfigured{sink=\"victoriametrics[0]\"} 0",
            "uplink_dead_lettered_total{reason=\"malformed\"} 0",
            "uplink_dead_lettered_total{reason=\"rejected\"} 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
