//! The shipped mosquitto ACL (docs/mosquitto-acl.conf) with real agents:
//! devices take their own config and their groups' and report their state;
//! a device's attempt to publish another device's config, its own, the
//! fleet's, or another device's state is dropped by the broker, and it
//! cannot read other devices' topics.

use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::mqtt::{Access, Mosquitto, Watcher};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use crate::common::signed;
use crate::fleet::{device_config, public_of};

const PASSWORD: &str = "secret";

/// The latest state of `device` the fleet sees that satisfies `matches`.
async fn state_where(
    fleet: &Watcher,
    device: &str,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let topic = format!("buoy/{device}/state");
    fleet
        .wait_for(what, Duration::from_secs(60), |m| {
            m.topic == topic && matches(&m.json())
        })
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread")]
async fn under_the_shipped_acl_a_device_cannot_publish_another_devices_config() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/mosquitto-acl.conf"
    ))
    .unwrap();
    let acl = dir.path().join("acl.conf");
    // The shipped file has pi-0001's block; pi-0002 is in one group.
    std::fs::write(
        &acl,
        format!("{shipped}\nuser pi-0002\ntopic read buoy/group/site/north-sea/config\n"),
    )
    .unwrap();
    let users = ["pi-0001", "pi-0002", "fleet"].map(|u| (u.to_owned(), PASSWORD.to_owned()));
    let access = Access {
        users: users.to_vec(),
        tls_certs: None,
        acl_file: Some(acl),
    };
    let broker = Mosquitto::start(&dir.path().join("mosquitto"), access);
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "site"]).await;
    let key = SigningKey::from_bytes(&[41; 32]);
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let mut agents = Vec::new();
    for (id, labels) in [
        ("pi-0001", "site = \"north-sea\", hw = \"pi5\""),
        ("pi-0002", "site = \"north-sea\""),
    ] {
        let agent_dir = dir.path().join(id);
        std::fs::create_dir_all(&agent_dir).unwrap();
        let login = format!(
            "username = \"{id}\"\npassword_file = \"{}\"",
            password_file.display()
        );
        let config = device_config(
            &agent_dir,
            id,
            labels,
            &kafka.bootstrap(),
            &broker.url(),
            &public_of(&key),
            &login,
        );
        agents.push(binaries::start("edge-agent", &agent_dir, &config));
    }
    let fleet = Watcher::connect(broker.port, Some(("fleet", PASSWORD)), "buoy/#").await;
    let rogue = Watcher::connect(broker.port, Some(("pi-0001", PASSWORD)), "buoy/#").await;

    // Devices report, and take what the fleet publishes: their own layer
    // and their group's.
    fleet
        .publish(
            "buoy/pi-0002/config",
            signed(&key, json!({"version": 1, "forward": {"order": "fifo"}})),
            true,
        )
        .await;
    fleet
        .publish(
            "buoy/group/site/north-sea/config",
            signed(&key, json!({"version": 1, "kafka": {"topic": "site"}})),
            true,
        )
        .await;
    for id in ["pi-0001", "pi-0002"] {
        state_where(&fleet, id, "the group layer applied", |s| {
            s["config"]["layers"]["group/site/north-sea"]["applied_version"] == 1
        })
        .await;
    }
    let before = state_where(&fleet, "pi-0002", "its own layer applied", |s| {
        s["config"]["layers"]["device"]["applied_version"] == 1
    })
    .await;

    // pi-0001 tries to configure pi-0002, itself and the fleet (signed with
    // the right key even), and to speak for pi-0002.
    let evil = |v: u64| signed(&key, json!({"version": v, "kafka": {"topic": "evil"}}));
    rogue.publish("buoy/pi-0002/config", evil(2), true).await;
    rogue.publish("buoy/pi-0001/config", evil(2), true).await;
    rogue.publish("buoy/fleet/config", evil(2), true).await;
    rogue
        .publish("buoy/group/site/north-sea/config", evil(2), true)
        .await;
    rogue
        .publish("buoy/pi-0002/state", "{\"forged\": true}", true)
        .await;
    rogue
        .publish("buoy/pi-0002/status", "forged offline", true)
        .await;
    // Five more states from each device later, nothing of it arrived.
    let uptime = before["uptime_s"].as_u64().unwrap();
    for id in ["pi-0001", "pi-0002"] {
        let later = state_where(&fleet, id, "five more seconds of states", |s| {
            s["uptime_s"].as_u64() > Some(uptime + 5)
        })
        .await;
        assert_eq!(
            later["config"]["rejected"], 0,
            "{id} saw no forged config: {later}"
        );
        assert!(
            later["config"]["accepted"].as_u64().unwrap() <= 2,
            "{later}"
        );
    }
    let forged: Vec<String> = fleet
        .messages()
        .iter()
        .filter(|m| m.text().contains("evil") || m.text().contains("forged"))
        .map(|m| m.topic.clone())
        .collect();
    assert!(forged.is_empty(), "the broker passed on: {forged:?}");
    // And pi-0001 reads nothing of pi-0002's.
    let peeked: Vec<String> = rogue
        .messages()
        .iter()
        .filter(|m| m.topic.starts_with("buoy/pi-0002/"))
        .map(|m| m.topic.clone())
        .collect();
    assert!(peeked.is_empty(), "pi-0001 read {peeked:?}");
    assert!(
        rogue
            .messages()
            .iter()
            .any(|m| m.topic == "buoy/group/site/north-sea/config"),
        "it reads its group"
    );
    for mut agent in agents {
        agent.stop(Duration::from_secs(20));
    }
}
