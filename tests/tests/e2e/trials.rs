//! Trial configs against a real mosquitto and Tansu: a trial that points
//! `kafka.brokers` at a dead address reverts by itself, also when the agent
//! is killed in the middle of it, and readings flow again afterwards with
//! none lost; a trial that works is confirmed and stays.

use std::time::Duration;

use base64::Engine as _;
use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage, read_topic};
use buoy_tests::mqtt::{Access, Mosquitto, Watcher};
use buoy_tests::process::free_port;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use telemetry::record::Format;

use crate::common::*;

const DEVICE: &str = "buoy/e2e-device/config";

fn stored_file(dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("remote-config.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trial_with_dead_brokers_reverts_by_itself_even_across_a_kill_and_a_good_one_stays() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "good"]).await;
    let bootstrap = kafka.bootstrap();
    let watcher = Watcher::connect(broker.port, None, "buoy/#").await;
    let key = SigningKey::from_bytes(&[12; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let tables = format!(
        r#"[mqtt]
enabled = true
url = "{url}"
config_public_key = "{public}"
state_interval = "1s"
max_reconnect_delay = "1s"
[[sensor]]
name = "cpu"
kind = "simulated_cpu_temperature"
interval = "500ms"
"#,
        url = broker.url(),
    );
    let config = agent_config_head(dir.path(), &bootstrap, Format::Influx, "", &tables);
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_status(&agent, "forwarded", 1, Duration::from_secs(60));

    // Without a trial the brokers stay local.
    let dead = format!("127.0.0.1:{}", free_port());
    let plain = json!({"version": 1, "kafka": {"brokers": [dead]}});
    watcher.publish(DEVICE, signed(&key, plain), true).await;
    let state = config_state_where(&watcher, "plain brokers refused", |c| c["rejected"] == 1).await;
    let reason = state["config"]["last"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("set it in a layer with \"trial\""),
        "{reason}"
    );

    // On trial, they are taken, and the trial is reported with its end.
    let trial = json!({"version": 2, "trial": "15s", "kafka": {"brokers": [dead]}});
    watcher.publish(DEVICE, signed(&key, trial), true).await;
    let state = config_state_where(&watcher, "the trial running", |c| {
        c["trial"]["version"] == 2 && c["layers"]["device"]["applied_version"] == 2
    })
    .await;
    let ends_at = state["config"]["trial"]["ends_at_ms"].clone();
    assert_eq!(stored_file(dir.path())["trial"]["version"], 2);

    // A kill in the middle: the trial runs on after the start, to the same
    // end, and is not confirmed by the start itself.
    agent.kill();
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    let now = binaries::state_now(&agent);
    assert_eq!(now["config"]["trial"]["version"], 2, "{now}");
    assert_eq!(now["config"]["trial"]["ends_at_ms"], ends_at, "{now}");
    let state = config_state_where(&watcher, "the trial reverted", |c| {
        c["layers"]["device"]["last"]["result"] == "reverted"
    })
    .await;
    let config_part = &state["config"];
    assert_eq!(
        config_part["layers"]["device"]["applied_version"], 0,
        "{state}"
    );
    assert_eq!(config_part["reverted"], 1, "{state}");
    assert!(config_part.get("trial").is_none(), "{state}");
    let reason = config_part["layers"]["device"]["last"]["reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains(
            "trial of version 2 not confirmed within 15s: no reading was acknowledged by Kafka"
        ),
        "{reason}"
    );
    let reverted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        reverted_at >= ends_at.as_i64().unwrap(),
        "reverted only when its time was up"
    );
    assert!(stored_file(dir.path()).get("trial").is_none());

    // Readings flow again: Kafka acknowledges more than before.
    let forwarded = binaries::agent_number(&agent, "forwarded").unwrap();
    wait_for_status(&agent, "forwarded", forwarded + 5, Duration::from_secs(60));

    // After a restart the retained reverted version is not taken again.
    agent.stop(Duration::from_secs(20));
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_status(&agent, "forwarded", 5, Duration::from_secs(60));
    let now = binaries::state_now(&agent);
    assert_eq!(
        now["config"]["layers"]["device"]["applied_version"], 0,
        "{now}"
    );
    assert_eq!(now["config"]["rejected"], 0, "{now}");

    // A trial that works is confirmed at once, and stays.
    let good = json!({"version": 3, "trial": "1h",
                      "kafka": {"brokers": [bootstrap], "topic": "good"}});
    watcher.publish(DEVICE, signed(&key, good), true).await;
    let state = config_state_where(&watcher, "the good trial confirmed", |c| {
        c["layers"]["device"]["applied_version"] == 3 && c.get("trial").is_none()
    })
    .await;
    assert_eq!(
        state["config"]["layers"]["device"]["last"]["result"],
        "accepted"
    );
    assert!(stored_file(dir.path()).get("trial").is_none());
    let forwarded = binaries::agent_number(&agent, "forwarded").unwrap();
    wait_for_status(&agent, "forwarded", forwarded + 5, Duration::from_secs(60));

    // Not one journaled reading was lost on the way (the kill included).
    agent.stop(Duration::from_secs(20));
    let journaled = binaries::journal_stats(&dir.path().join("journal.redb")).next_seq - 1;
    let mut on_kafka = read_topic(&bootstrap, "telemetry", Duration::from_secs(10), None);
    let good = read_topic(&bootstrap, "good", Duration::from_secs(5), None);
    assert!(!good.is_empty(), "the confirmed trial's topic has readings");
    on_kafka.extend(good);
    let readings = readings_by_seq(&on_kafka, Format::Influx);
    assert_all_sequence_numbers(&readings, journaled);
}
