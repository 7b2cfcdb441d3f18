//! `buoy-fleet serve` seen in headless Chromium: every device listed with
//! the right state after agents go offline (a clean stop and a kill) and
//! come back; the device page; `/api/devices` and `/metrics`. The page's
//! screenshot in docs/ comes from this test.

use std::path::Path;
use std::time::Duration;

use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::mqtt::{Access, Mosquitto};
use buoy_tests::process::Service;
use buoy_tests::{binaries, chromium};
use ed25519_dalek::SigningKey;

use crate::common::wait_for_async;
use crate::fleet::{device_config, public_of, start_serve};

/// The broker sees a killed agent gone 7.5 s after its link died.
const KEEP_ALIVE: &str = "keep_alive = \"5s\"";

/// The `data-online` of each device row on the fleet page, by device.
fn page_rows(url: &str) -> Vec<(String, String, String)> {
    let dom = chromium::dump_dom(url);
    dom.split("<tr class=\"")
        .skip(1)
        .filter_map(|row| {
            let class = row.split('"').next()?.to_owned();
            let device = row
                .split("data-device=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_owned();
            let online = row
                .split("data-online=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_owned();
            Some((device, class, online))
        })
        .collect()
}

async fn page_shows(page: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(d, o)| (d.to_string(), o.to_string()))
        .collect();
    wait_for_async(
        &format!("the fleet page to show {want:?}"),
        Duration::from_secs(90),
        || async {
            let rows: Vec<(String, String)> = page_rows(page)
                .into_iter()
                .map(|(d, _, o)| (d, o))
                .collect();
            (rows == want).then_some(())
        },
        String::new,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_page_in_chromium_follows_agents_going_offline_and_coming_back() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry"]).await;
    let (bootstrap, url) = (kafka.bootstrap(), broker.url());
    let public = public_of(&SigningKey::from_bytes(&[31; 32]));
    let ids = ["buoy-north-1", "buoy-north-2", "buoy-south-1"];
    let configs: Vec<(std::path::PathBuf, String)> = ids
        .iter()
        .map(|id| {
            let agent_dir = dir.path().join(id);
            std::fs::create_dir_all(&agent_dir).unwrap();
            let site = if id.contains("north") {
                "north-sea"
            } else {
                "south"
            };
            let labels = format!("site = \"{site}\"");
            let config = device_config(
                &agent_dir, id, &labels, &bootstrap, &url, &public, KEEP_ALIVE,
            );
            (agent_dir, config)
        })
        .collect();
    let start = |i: usize| binaries::start("edge-agent", &configs[i].0, &configs[i].1);
    let mut agents: Vec<Service> = (0..3).map(start).collect();

    let (_serve, base) = start_serve(&url, dir.path());
    let page = format!("{base}/");

    page_shows(
        &page,
        &[
            ("buoy-north-1", "true"),
            ("buoy-north-2", "true"),
            ("buoy-south-1", "true"),
        ],
    )
    .await;
    // A clean stop says offline at once; a kill is found by the broker's
    // keep-alive and the Last Will.
    agents[1].stop(Duration::from_secs(20));
    agents[2].kill();
    page_shows(
        &page,
        &[
            ("buoy-north-1", "true"),
            ("buoy-north-2", "false"),
            ("buoy-south-1", "false"),
        ],
    )
    .await;
    let rows = page_rows(&page);
    assert_eq!(
        rows[1].1, "offline",
        "offline rows are coloured so: {rows:?}"
    );
    // The screenshot in docs/fleet-page.png.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet-page.png");
    chromium::screenshot(&page, &shot, 1800, 330);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let offline = page_rows(&format!("{page}?state=offline&sort=device"));
    assert_eq!(offline.len(), 2, "the offline filter: {offline:?}");
    let north = page_rows(&format!("{page}?label=site%3Dnorth-sea"));
    assert_eq!(north.len(), 2, "the label filter: {north:?}");
    let metrics = reqwest::get(format!("{page}metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("buoy_device_online{device=\"buoy-north-2\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("buoy_device_online{device=\"buoy-north-1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "buoy_device_config_version{device=\"buoy-north-1\",layer=\"group/site/north-sea\"} 0"
        ),
        "{metrics}"
    );

    agents[1] = start(1);
    agents[2] = start(2);
    page_shows(
        &page,
        &[
            ("buoy-north-1", "true"),
            ("buoy-north-2", "true"),
            ("buoy-south-1", "true"),
        ],
    )
    .await;
    let api: serde_json::Value = reqwest::get(format!("{page}api/devices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api.as_array().unwrap().len(), 3);
    let device = chromium::dump_dom(&format!("{page}device?id=buoy-south-1"));
    for part in [
        "<h1>buoy-south-1</h1>",
        "id=\"layers\"",
        "group/site/south",
        "id=\"history\"",
        "\"device_id\": \"buoy-south-1\"",
    ] {
        assert!(
            device.contains(&part.replace('"', "&quot;")) || device.contains(part),
            "{part} on the device page"
        );
    }

    for mut agent in agents {
        agent.stop(Duration::from_secs(20));
    }
}
