//! A steady stream of numbered line-protocol records, as a fleet of devices
//! would send them, for tests that break things while data flows.
//!
//! Record `i` is `load,device_id=d<i % devices> v=<i>.0 <t0 + i ms>` (the
//! uplink's own encoding of it, so lines compare as text), keyed by
//! its device, each in a record batch of its own. Every record is a distinct
//! point (distinct millisecond), so a database holding exactly `n` points of
//! `load_v` holds each record once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

/// Counts what Kafka acknowledged, and what it refused.
#[derive(Default)]
struct Acks {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.0.failed.fetch_add(1, Ordering::SeqCst),
        };
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

/// The line of record `i`.
pub fn line(i: u64, devices: u64, t0_ms: i64) -> String {
    format!(
        "load,device_id=d{} v={i}.0 {}",
        i % devices,
        (t0_ms + i as i64) * 1_000_000
    )
}

/// A start time an hour ago, in milliseconds: recent enough for any
/// database's retention, early enough that a long run stays in the past.
pub fn recent_t0_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
        - 3_600_000
}

impl Load {
    /// Produces `per_second` records a second to `topic` until stopped.
    pub fn start(bootstrap: &str, topic: &str, per_second: u64, devices: u64, t0_ms: i64) -> Load {
        let acks = Arc::new(Acks::default());
        let producer: ThreadedProducer<Counting> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("linger.ms", "5")
            // One record per record batch: Tansu 0.6 answers a fetch from an
            // offset inside a batch with the batch after it, so a consumer
            // resuming mid-batch (after a pause, or from a commit) would
            // never see the rest of that batch (pitfalls in the issue 5 note).
            .set("batch.num.messages", "1")
            .set("message.timeout.ms", "300000")
            .create_with_context(Counting(acks.clone()))
            .expect("load producer");
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_owned();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let due = (started.elapsed().as_secs_f64() * per_second as f64) as u64;
                    while i < due {
                        let key = format!("d{}", i % devices);
                        let value = line(i, devices, t0_ms);
                        let mut record = BaseRecord::to(&topic).key(&key).payload(&value);
                        loop {
                            match producer.send(record) {
                                Ok(()) => break,
                                Err((_, back)) => {
                                    // Queue full: wait for deliveries.
                                    record = back;
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                            }
                        }
                        i += 1;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                producer
                    .flush(Duration::from_secs(120))
                    .expect("every load record delivered");
                let delivered = acks.delivered.load(Ordering::SeqCst);
                let failed = acks.failed.load(Ordering::SeqCst);
                assert_eq!(
                    (delivered, failed),
                    (i, 0),
                    "every load record acknowledged by Kafka"
                );
                i
            })
        };
        Load {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops, waits until Kafka acknowledged every record, and returns how
    /// many were produced.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
