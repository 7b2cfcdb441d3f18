//! Layered remote config against a real mosquitto and Tansu: the fleet
//! layer, one layer per label and the device's own merge in that order; a
//! bad layer is refused whole; a label the device does not carry is not its
//! business; the layers come back from disk after a restart.

use std::time::Duration;

use base64::Engine as _;
use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage, read_topic};
use buoy_tests::mqtt::{Access, Mosquitto, Watcher};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use telemetry::record::Format;

use crate::common::*;

const FLEET: &str = "buoy/fleet/config";
const SITE: &str = "buoy/group/site/north-sea/config";
const HW: &str = "buoy/group/hw/pi5/config";
const OTHER_SITE: &str = "buoy/group/site/south/config";
const DEVICE: &str = "buoy/e2e-device/config";

/// The layer's applied version in a state's config part.
fn applied(config: &Value, layer: &str) -> Value {
    config["layers"][layer]["applied_version"].clone()
}

/// Whether readings arrive on `topic` within a few seconds.
fn readings_on(bootstrap: &str, topic: &str) -> bool {
    !read_topic(bootstrap, topic, Duration::from_secs(3), Some(1)).is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_merge_fleet_then_groups_then_device_and_a_bad_layer_is_refused_whole() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    let topics = ["telemetry", "fleet", "site", "hw", "south", "device"];
    kafka.create_topics(&topics).await;
    let bootstrap = kafka.bootstrap();
    let watcher = Watcher::connect(broker.port, None, "buoy/#").await;
    let key = SigningKey::from_bytes(&[11; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());

    // Every layer is published before the agent starts: the broker hands
    // them over retained, in whatever order.
    let fleet = json!({"version": 1, "kafka": {"topic": "fleet"},
                       "journal": {"max_bytes": "64MiB"}, "forward": {"order": "fifo"}});
    watcher.publish(FLEET, signed(&key, fleet), true).await;
    let site = json!({"version": 1, "kafka": {"topic": "site"}});
    watcher.publish(SITE, signed(&key, site), true).await;
    let device = json!({"version": 1, "journal": {"max_bytes": "96MiB"}});
    watcher.publish(DEVICE, signed(&key, device), true).await;
    // A label this device does not carry.
    let south = json!({"version": 1, "kafka": {"topic": "south"}});
    watcher.publish(OTHER_SITE, signed(&key, south), true).await;

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
interval = "2s"
"#,
        url = broker.url(),
    );
    let config = format!(
        "labels = {{ site = \"north-sea\", hw = \"pi5\" }}\n{}",
        agent_config_head(dir.path(), &bootstrap, Format::Influx, "", &tables)
    );
    let mut agent = binaries::start("edge-agent", dir.path(), &config);

    // All three layers it takes run; the fourth is not its business.
    let state = config_state_where(&watcher, "fleet, site and device layers applied", |c| {
        applied(c, "fleet") == 1
            && applied(c, "group/site/north-sea") == 1
            && applied(c, "device") == 1
    })
    .await;
    assert_eq!(
        state["labels"],
        json!({"site": "north-sea", "hw": "pi5"}),
        "{state}"
    );
    let layers: Vec<&String> = state["config"]["layers"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        layers,
        ["device", "fleet", "group/hw/pi5", "group/site/north-sea"],
        "every layer it takes, and only those: {state}"
    );
    assert_eq!(applied(&state["config"], "group/hw/pi5"), 0);
    // The device's max_bytes beat the fleet's; the site's topic beat the
    // fleet's.
    assert_eq!(state["journal"]["max_bytes"], 96 << 20, "{state}");
    wait_for_async(
        "readings on the site layer's topic",
        Duration::from_secs(30),
        || async { readings_on(&bootstrap, "site").then_some(()) },
        || agent.log(),
    )
    .await;
    assert!(
        !readings_on(&bootstrap, "south"),
        "a group the device is not in"
    );

    // A bad layer: one good key and one bad one. Refused whole, the running
    // layers untouched.
    let hw = json!({"version": 1, "kafka": {"topic": "hw"}, "forward": {"order": "random"}});
    watcher.publish(HW, signed(&key, hw), true).await;
    let state = config_state_where(&watcher, "the hw layer rejected", |c| {
        c["layers"]["group/hw/pi5"]["last"]["result"] == "rejected"
    })
    .await;
    let reason = state["config"]["layers"]["group/hw/pi5"]["last"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("unknown variant `random`"), "{reason}");
    assert_eq!(applied(&state["config"], "group/hw/pi5"), 0);
    assert_eq!(applied(&state["config"], "fleet"), 1);
    assert_eq!(state["config"]["rejected"], 1);
    // A layer may not reach local-only keys either.
    let brokers = json!({"version": 2, "kafka": {"brokers": ["evil:9092"]}});
    watcher.publish(HW, signed(&key, brokers), true).await;
    let state = config_state_where(&watcher, "brokers refused", |c| c["rejected"] == 2).await;
    let reason = state["config"]["last"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("kafka.brokers cannot be set remotely"),
        "{reason}"
    );
    // An unsigned layer is refused as well.
    watcher
        .publish(
            HW,
            json!({"version": 3, "kafka": {"topic": "hw"}}).to_string(),
            true,
        )
        .await;
    let state = config_state_where(&watcher, "unsigned refused", |c| c["rejected"] == 3).await;
    assert!(
        state["config"]["last"]["reason"]
            .as_str()
            .unwrap()
            .contains("unsigned")
    );
    assert!(
        !readings_on(&bootstrap, "hw"),
        "nothing of the refused layer ran"
    );

    // A good hw layer: merged between fleet and site (hw < site by key), so
    // its topic loses to the site's but its order wins over the fleet's.
    let hw = json!({"version": 4, "kafka": {"topic": "hw"}, "forward": {"order": "live_first"}});
    watcher.publish(HW, signed(&key, hw), true).await;
    config_state_where(&watcher, "the hw layer applied", |c| {
        applied(c, "group/hw/pi5") == 4
    })
    .await;
    assert!(
        !readings_on(&bootstrap, "hw"),
        "the site layer comes after the hw layer"
    );
    // The fleet withdraws its topic: a newer version without it.
    let fleet = json!({"version": 2, "journal": {"max_bytes": "64MiB"}});
    watcher.publish(FLEET, signed(&key, fleet), true).await;
    config_state_where(&watcher, "fleet v2 applied", |c| applied(c, "fleet") == 2).await;

    // Restart with the broker gone: the layers come back from disk.
    agent.stop(Duration::from_secs(20));
    broker.stop();
    let stored: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("remote-config.json")).unwrap())
            .unwrap();
    let stored: Vec<&String> = stored["layers"].as_object().unwrap().keys().collect();
    assert_eq!(
        stored,
        ["device", "fleet", "group/hw/pi5", "group/site/north-sea"]
    );
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    let state = binaries::state_now(&agent);
    for (layer, version) in [
        ("fleet", 2),
        ("group/hw/pi5", 4),
        ("group/site/north-sea", 1),
        ("device", 1),
    ] {
        assert_eq!(
            applied(&state["config"], layer),
            version,
            "{layer}: {state}"
        );
    }
    assert_eq!(state["journal"]["max_bytes"], 96 << 20, "{state}");
    agent.stop(Duration::from_secs(20));
}
