//! `buoy-fleet` with 5,000 devices: their retained states and statuses on a
//! real mosquitto (as 5,000 agents would leave them). `status --json` lists
//! every one; `serve` holds them, with the page and the metrics rendered,
//! in at most 64 MiB. The times and memory are printed for
//! docs/performance.md.

use std::time::{Duration, Instant};

use buoy_tests::binaries;
use buoy_tests::mqtt::{Access, Mosquitto, Watcher};
use serde_json::{Value, json};

use crate::common::wait_for_async;
use crate::fleet::start_serve;

pub const DEVICES: usize = 5_000;
/// What `serve` may hold them in.
const SERVE_MAX_KIB: u64 = 64 * 1024;

/// A device's state as an agent with three sensors and four layers reports
/// it (about 1.5 KB).
fn state(i: usize) -> Value {
    let id = format!("gw-{i:05}");
    let sensors: Vec<Value> = ["env", "vis", "cpu"]
        .iter()
        .map(|n| {
            json!({"name": n, "kind": "bme280", "state": "ok", "readings": 86_400,
                   "errors": 0, "consecutive_errors": 0, "reopens": 0, "last_error": null})
        })
        .collect();
    let layer = |v: u64| json!({"applied_version": v, "last": {"layer": "fleet", "version": v, "result": "accepted"}});
    json!({
        "device_id": id, "labels": {"site": format!("site-{}", i % 40), "hw": "pi5"},
        "agent_version": "0.1.0", "uptime_s": 86_400 + i,
        "config": {"applied_version": 3, "layers": {"fleet": layer(7), "group/hw/pi5": layer(2),
                   "group/site/x": layer(1), "device": layer(3)},
                   "last": null, "accepted": 4, "rejected": 0, "reverted": 0},
        "link": {"state": if i.is_multiple_of(50) { "down" } else { "up" }, "producer_renewals": 0},
        "journal": {"records": i % 300, "file_bytes": 1_589_248, "max_bytes": 268_435_456,
                    "oldest_unsent_age_s": 1.5, "quarantined": 0, "salvaged": 0},
        "dropped": {"queue_full": 0, "unencodable": 0, "dropped_oldest": 0, "rejected_new": 0, "aggregated": 0, "unreadable": 0},
        "sensors": sensors,
        "clock": {"synced": true},
        "sampled": 259_200, "journaled": 259_200, "forwarded": 259_100, "time_ns": 1_764_950_000_000_000_000i64
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_devices_are_listed_and_served_in_bounded_memory() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let url = broker.url();
    let publisher = Watcher::connect(broker.port, None, "buoy/+/status").await;
    for i in 0..DEVICES {
        let id = format!("gw-{i:05}");
        publisher
            .publish(&format!("buoy/{id}/state"), state(i).to_string(), true)
            .await;
        let status = if i % 100 == 7 { "offline" } else { "online" };
        publisher
            .publish(&format!("buoy/{id}/status"), status, true)
            .await;
    }
    // The statuses come back to the publisher: every message is retained.
    wait_for_async(
        "the broker to hold every device",
        Duration::from_secs(120),
        || async { (publisher.messages().len() >= DEVICES).then_some(()) },
        String::new,
    )
    .await;

    let mut status = binaries::command("buoy-fleet");
    let started = Instant::now();
    let out = status
        .args(["--mqtt", &url, "status", "--json"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON rows");
    assert_eq!(rows.len(), DEVICES);
    assert_eq!(out.status.code(), Some(1), "some devices have problems");
    let offline = rows.iter().filter(|r| r["online"] == false).count();
    assert_eq!(offline, DEVICES / 100);
    eprintln!("fleet scale: status --json over {DEVICES} devices took {took:?} (debug build)");

    let (serve, base) = start_serve(&url, dir.path());
    let (loaded, _) = serve.memory_kib();
    let api: Vec<Value> = reqwest::get(format!("{base}/api/devices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api.len(), DEVICES);
    let page = reqwest::get(format!("{base}/?sort=backlog"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("<tr class=").count(), DEVICES);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metrics.matches("buoy_device_online{").count(), DEVICES);
    let (rss, peak) = serve.memory_kib();
    eprintln!(
        "fleet scale: serve holds {DEVICES} devices in {loaded} KiB; after the page, the API and the metrics {rss} KiB, peak {peak} KiB (debug build)"
    );
    assert!(
        peak <= SERVE_MAX_KIB,
        "serve peaked at {peak} KiB with {DEVICES} devices"
    );
}
