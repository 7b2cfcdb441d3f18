//! Remote configuration over MQTT against a real mosquitto: desired configs
//! applied in place, refused whole with a reason, signed, stored across
//! restarts; the session surviving broker restarts; and ten thousand
//! hostile payloads that change nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use buoy_tests::kafka::{Kafka, Storage, read_topic};
use buoy_tests::mqtt::{Access, Message, Mosquitto, Watcher};
use buoy_tests::process::{free_port, wait_for};
use buoy_tests::{binaries, certs};
use edge_agent::remote_config::{desired, layers, store};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use telemetry::record::Format;

use crate::common::*;

const STATE: &str = "buoy/e2e-device/state";
const STATUS: &str = "buoy/e2e-device/status";
const CONFIG: &str = "buoy/e2e-device/config";

/// An ed25519 key pair: `<name>.pem` (private, PKCS#8) and `<name>.pub`.
fn signing_key(dir: &Path, name: &str) -> String {
    let (private, public) = (format!("{name}.pem"), format!("{name}.pub"));
    certs::openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", &private]);
    certs::openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    std::fs::read_to_string(dir.join(public)).unwrap()
}

/// `edge-agent sign-config --key <key> <file>`, as an operator runs it.
fn sign_with_cli(dir: &Path, key: &str, config: &Value) -> String {
    let file = dir.join("desired.json");
    std::fs::write(&file, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let out = binaries::command("edge-agent")
        .arg("sign-config")
        .arg("--key")
        .arg(dir.join(key))
        .arg(&file)
        .output()
        .expect("run edge-agent sign-config");
    assert!(
        out.status.success(),
        "sign-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn is_state(m: &Message) -> bool {
    m.topic == STATE
}

/// The latest reported state whose config part satisfies `matches`.
async fn wait_for_state(watcher: &Watcher, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    watcher
        .wait_for(what, Duration::from_secs(60), |m| {
            is_state(m) && matches(&m.json()["config"])
        })
        .await
        .json()
}

/// Waits for the `n`th rejection and returns its reason.
async fn rejection(watcher: &Watcher, n: u64) -> (Value, String) {
    let state = wait_for_state(watcher, &format!("rejection #{n}"), |c| c["rejected"] == n).await;
    assert_eq!(state["config"]["last"]["result"], "rejected", "{state}");
    let reason = state["config"]["last"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    (state, reason)
}

/// The `sensor` tag of the first `n` JSON readings on `topic` (fewer if
/// no more come within 3 s; readings keep coming, so never "all").
fn sensors_on(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    read_topic(bootstrap, topic, Duration::from_secs(3), Some(n))
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.text())
                .unwrap_or_else(|e| panic!("{topic}: not Telegraf JSON ({e}): {}", r.text()));
            v["tags"]["sensor"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn desired_configs_are_applied_in_place_or_refused_whole_and_must_be_signed() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir_all(&certs_dir).unwrap();
    certs::ca_and_server(&certs_dir);
    let public_key = signing_key(&certs_dir, "signing");
    signing_key(&certs_dir, "stranger");
    std::fs::write(dir.path().join("mqtt-password"), "device secret\n").unwrap();
    let broker = Mosquitto::start(
        &dir.path().join("mosquitto"),
        Access {
            users: vec![
                ("e2e-device".into(), "device secret".into()),
                ("operator".into(), "operator secret".into()),
            ],
            tls_certs: Some(certs_dir.clone()),
            acl_file: None,
        },
    );
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "remote"]).await;
    let bootstrap = kafka.bootstrap();
    let watcher = Watcher::connect(
        broker.port,
        Some(("operator", "operator secret")),
        "buoy/e2e-device/#",
    )
    .await;

    // linger.ms is local; a remote delivery_timeout below it passes every
    // check but makes librdkafka refuse the producer: a failure half-way
    // through applying.
    let tables = format!(
        r#"[mqtt]
enabled = true
url = "{url}"
username = "e2e-device"
password_file = "{password}"
ca_file = "{ca}"
config_public_key = """
{public_key}"""
state_interval = "1s"
max_reconnect_delay = "1s"
[kafka.properties]
"linger.ms" = "1500"
[[sensor]]
name = "cpu"
kind = "simulated_cpu_temperature"
interval = "200ms"
"#,
        url = broker.tls_url(),
        password = dir.path().join("mqtt-password").display(),
        ca = certs_dir.join("ca.pem").display(),
    );
    let config = agent_config_head(dir.path(), &bootstrap, Format::Influx, "", &tables);
    let mut agent = binaries::start("edge-agent", dir.path(), &config);

    watcher
        .wait_for("status online", Duration::from_secs(30), |m| {
            m.topic == STATUS && m.text() == "online"
        })
        .await;
    let state = wait_for_state(&watcher, "the first state", |c| c["applied_version"] == 0).await;
    assert_eq!(state["device_id"], "e2e-device");
    assert!(state["agent_version"].is_string(), "{state}");

    // The local config is in force: its readings reach its topic. (Waited
    // for, not assumed: v1 published before the first delivery would send
    // the local readings to v1's topic, which is right but proves nothing.)
    wait_for_async(
        "the local config's readings on its topic",
        Duration::from_secs(30),
        || async {
            read_topic(&bootstrap, "telemetry", Duration::from_secs(3), Some(1))
                .iter()
                .any(|r| r.text().contains("sensor=cpu"))
                .then_some(())
        },
        || agent.log(),
    )
    .await;

    // A change: topic, format, sensors and journal policy.
    let v1 = sign_with_cli(
        &certs_dir,
        "signing.pem",
        &json!({
            "version": 1,
            "kafka": {"topic": "remote", "format": "json"},
            "journal": {"when_full": "reject_new", "max_bytes": "64MiB"},
            "sensor": [{"name": "fan", "kind": "simulated_fan", "interval": "200ms", "seed": 7}]
        }),
    );
    watcher.publish(CONFIG, v1.clone(), true).await;
    let state = wait_for_state(&watcher, "v1 accepted", |c| c["applied_version"] == 1).await;
    assert_eq!(state["config"]["last"]["result"], "accepted", "{state}");
    assert_eq!(state["config"]["accepted"], 1);
    assert_eq!(state["journal"]["max_bytes"], 64 << 20, "{state}");
    // The new sensor, topic and format are in force without a restart.
    wait_for_async(
        "fan readings on the remote topic",
        Duration::from_secs(30),
        || async {
            sensors_on(&bootstrap, "remote", 1)
                .iter()
                .any(|s| s == "fan")
                .then_some(())
        },
        || agent.log(),
    )
    .await;
    let sensors_reported: Vec<&str> = state["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(sensors_reported, ["fan"], "{state}");
    assert!(agent.is_running());
    let pid = agent.pid();

    // Invalid: refused with the reason, nothing changes.
    let invalid = sign_with_cli(
        &certs_dir,
        "signing.pem",
        &json!({"version": 2, "journal": {"max_bytes": "1MiB"}}),
    );
    watcher.publish(CONFIG, invalid, true).await;
    let (state, reason) = rejection(&watcher, 1).await;
    assert!(
        reason.contains("journal.max_bytes: must be at least 4MiB"),
        "{reason}"
    );
    assert_eq!(state["config"]["applied_version"], 1);
    assert_eq!(state["journal"]["max_bytes"], 64 << 20, "{state}");

    // Valid, but the producer cannot be created: rolled back.
    let half_way = sign_with_cli(
        &certs_dir,
        "signing.pem",
        &json!({
            "version": 3,
            "kafka": {"topic": "telemetry", "delivery_timeout": "1s"},
            "journal": {"max_bytes": "32MiB"},
            "sensor": [{"name": "cpu2", "kind": "simulated_cpu_temperature", "interval": "200ms"}]
        }),
    );
    watcher.publish(CONFIG, half_way, true).await;
    let (state, reason) = rejection(&watcher, 2).await;
    assert!(
        reason.contains("applying failed")
            && reason.contains("linger.ms")
            && reason.contains("rolled back to the previous config"),
        "{reason}"
    );
    assert_eq!(state["config"]["applied_version"], 1);
    let stored = std::fs::read(dir.path().join("remote-config.json")).unwrap();
    let stored = store::StoredSet::decode(&stored).unwrap();
    assert_eq!(
        desired::parse(&stored.layers[&layers::Layer::Device])
            .unwrap()
            .version,
        1,
        "the stored config was put back"
    );
    // The rollback restored the sensors, the journal limit and the topic.
    let state = watcher
        .wait_for("a state after the rollback", Duration::from_secs(10), |m| {
            is_state(m)
                && m.json()["config"]["rejected"] == 2
                && m.json()["sensors"][0]["name"] == "fan"
        })
        .await
        .json();
    assert_eq!(state["journal"]["max_bytes"], 64 << 20, "{state}");
    assert_eq!(state["sensors"].as_array().unwrap().len(), 1, "{state}");
    // Forwarding goes on, to the remote topic: nothing went to the topic
    // of the rolled-back config.
    let forwarded = binaries::state_number(&binaries::state_now(&agent), "forwarded");
    wait_for(
        "more readings forwarded",
        Duration::from_secs(30),
        || binaries::agent_number(&agent, "forwarded").filter(|n| *n > forwarded + 5),
        || agent.log(),
    );
    let on_telemetry = read_topic(&bootstrap, "telemetry", Duration::from_secs(3), None);
    assert!(
        on_telemetry
            .iter()
            .all(|r| !r.text().contains("sensor=cpu2")),
        "no reading of the rolled-back config's sensor"
    );

    // The same version with other content is stale.
    let stale = sign_with_cli(
        &certs_dir,
        "signing.pem",
        &json!({"version": 1, "kafka": {"topic": "telemetry"}}),
    );
    watcher.publish(CONFIG, stale, true).await;
    let (_, reason) = rejection(&watcher, 3).await;
    assert!(
        reason.contains("version 1 is not newer than the applied version 1"),
        "{reason}"
    );

    // Move on to v4, then replay the old signed v1.
    let v4 = sign_with_cli(
        &certs_dir,
        "signing.pem",
        &json!({
            "version": 4,
            "kafka": {"topic": "remote", "format": "json"},
            "sensor": [{"name": "fan", "kind": "simulated_fan", "interval": "300ms", "seed": 7}]
        }),
    );
    watcher.publish(CONFIG, v4, true).await;
    wait_for_state(&watcher, "v4 accepted", |c| c["applied_version"] == 4).await;
    watcher.publish(CONFIG, v1, true).await;
    let (_, reason) = rejection(&watcher, 4).await;
    assert!(
        reason.contains("version 1 is not newer than the applied version 4"),
        "{reason}"
    );

    // Unsigned, signed by another key, and changed after signing.
    let v5 = json!({"version": 5, "kafka": {"topic": "telemetry"}});
    watcher
        .publish(CONFIG, serde_json::to_vec(&v5).unwrap(), true)
        .await;
    let (_, reason) = rejection(&watcher, 5).await;
    assert!(reason.contains("unsigned"), "{reason}");
    let stranger = sign_with_cli(&certs_dir, "stranger.pem", &v5);
    watcher.publish(CONFIG, stranger, true).await;
    let (_, reason) = rejection(&watcher, 6).await;
    assert!(reason.contains("signature does not match"), "{reason}");
    let tampered = sign_with_cli(&certs_dir, "signing.pem", &v5).replace("telemetry", "remote");
    watcher.publish(CONFIG, tampered, true).await;
    let (state, reason) = rejection(&watcher, 7).await;
    assert!(reason.contains("signature does not match"), "{reason}");
    assert_eq!(state["config"]["applied_version"], 4);

    // One process all along.
    assert!(agent.is_running());
    assert_eq!(agent.pid(), pid);
    let log = agent.log();
    assert!(
        !log.contains("device secret"),
        "the MQTT password was logged"
    );
    agent.stop(Duration::from_secs(60));
    watcher
        .wait_for("status offline", Duration::from_secs(10), |m| {
            m.topic == STATUS && m.text() == "offline"
        })
        .await;
}

/// Readings in the journal with `sensor`, taken after `since_ns`.
fn journaled_from(dir: &Path, sensor: &str, since_ns: i64) -> Vec<i64> {
    let (ok, out, err) = binaries::journal_command(dir, &["export"]);
    assert!(ok, "journal export: {err}");
    out.lines()
        .filter(|l| l.contains(&format!("sensor={sensor}")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .filter(|t| *t > since_ns)
        .collect()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// An agent with no Kafka (it journals) and MQTT at `url`.
fn offline_agent_config(dir: &Path, url: &str, mqtt_extra: &str) -> String {
    let tables = format!(
        r#"[mqtt]
enabled = true
url = "{url}"
keep_alive = "5s"
state_interval = "1s"
max_reconnect_delay = "1s"
{mqtt_extra}
[[sensor]]
name = "cpu"
kind = "simulated_cpu_temperature"
interval = "100ms"
"#
    );
    let unreachable = format!("127.0.0.1:{}", free_port());
    agent_config_head(dir, &unreachable, Format::Influx, "", &tables)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_accepted_config_survives_restarts_and_broker_outages() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let watcher = Watcher::connect(broker.port, None, "buoy/e2e-device/#").await;
    let config = offline_agent_config(dir.path(), &broker.url(), "");
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_state(&watcher, "the first state", |c| c["applied_version"] == 0).await;
    let v7 = json!({
        "version": 7,
        "sensor": [{"name": "remote-fan", "kind": "simulated_fan", "interval": "100ms"}]
    });
    watcher
        .publish(CONFIG, serde_json::to_vec(&v7).unwrap(), true)
        .await;
    wait_for_state(&watcher, "v7 accepted", |c| c["applied_version"] == 7).await;

    // The broker restarts under the running agent.
    let before_restart = watcher.messages().len();
    broker.stop();
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let after: Vec<Message> = {
        watcher
            .wait_for("status online again", Duration::from_secs(30), |m| {
                m.topic == STATUS && m.text() == "online"
            })
            .await;
        // Only what arrived since the restart.
        tokio::time::sleep(Duration::from_secs(2)).await;
        watcher.messages().split_off(before_restart)
    };
    let statuses: Vec<String> = after
        .iter()
        .filter(|m| m.topic == STATUS)
        .map(Message::text)
        .collect();
    let offline = statuses.iter().position(|s| s == "offline");
    let online = statuses.iter().rposition(|s| s == "online");
    assert!(
        matches!((offline, online), (Some(off), Some(on)) if off < on),
        "the Last Will said offline, then the agent online: {statuses:?}"
    );
    let state = after
        .iter()
        .rev()
        .find(|m| is_state(m))
        .expect("the state was published again")
        .json();
    assert_eq!(state["config"]["applied_version"], 7);
    assert_eq!(
        state["config"]["rejected"], 0,
        "the retained v7 delivered again is not news"
    );
    assert!(
        state["uptime_s"].as_u64().unwrap() >= outage.elapsed().as_secs().saturating_sub(1),
        "{state}"
    );
    assert!(agent.log().contains("MQTT broker unreachable"));

    // Agent stopped, broker stopped, agent started alone: it runs v7.
    agent.stop(Duration::from_secs(60));
    broker.stop();
    let restarted_at = now_ns();
    let mut agent = binaries::start_with("edge-agent", dir.path(), &config, "agent-2.log", &[]);
    wait_for(
        "the agent sampling again",
        Duration::from_secs(30),
        || binaries::agent_number(&agent, "sampled").filter(|n| *n >= 20),
        || agent.log(),
    );
    let log = agent.log();
    assert!(log.contains("running the stored remote config"), "{log}");
    assert!(log.contains("MQTT broker unreachable"), "{log}");
    agent.stop(Duration::from_secs(60));
    let fan = journaled_from(dir.path(), "remote-fan", restarted_at);
    let cpu = journaled_from(dir.path(), "cpu", restarted_at);
    assert!(
        fan.len() >= 10,
        "v7's sensor sampled after the restart: {}",
        fan.len()
    );
    assert!(
        cpu.is_empty(),
        "the local sensor stayed off: {} readings",
        cpu.len()
    );
    drop(agent);
}

/// A payload that must never apply: random bytes, random JSON, mutated
/// copies of a good signed config, stale replays, other keys, and
/// correctly signed configs with an unknown key.
fn hostile(
    rng: &mut SmallRng,
    good: &Value,
    signed: &str,
    key: &ed25519_dalek::SigningKey,
    other: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
    let sign = |v: &Value, k: &ed25519_dalek::SigningKey| {
        desired::sign(&serde_json::to_vec(v).unwrap(), k)
            .unwrap()
            .into_bytes()
    };
    match rng.random_range(0..9) {
        0 => (0..rng.random_range(0..512))
            .map(|_| rng.random())
            .collect(),
        1 => {
            // Bytes of the signed config flipped, dropped or cut.
            let mut b = signed.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..4) {
                if b.is_empty() {
                    break;
                }
                let i = rng.random_range(0..b.len());
                match rng.random_range(0..3) {
                    0 => b[i] ^= 1 << rng.random_range(0..8),
                    1 => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
            }
            b
        }
        2 => {
            // A value of the signed config replaced.
            let mut v: Value = serde_json::from_str(signed).unwrap();
            let replacement = match rng.random_range(0..5) {
                0 => json!(null),
                1 => json!(rng.random::<i64>()),
                2 => json!("x".repeat(rng.random_range(0..50))),
                3 => json!([1, {"a": []}]),
                _ => json!({"version": u64::MAX}),
            };
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            let k = &keys[rng.random_range(0..keys.len())];
            v[k] = replacement;
            serde_json::to_vec(&v).unwrap()
        }
        3 => {
            // Unsigned, with a huge version.
            let mut v = good.clone();
            v["version"] = json!(rng.random_range(2..u64::MAX));
            serde_json::to_vec(&v).unwrap()
        }
        4 => {
            let mut v = good.clone();
            v["version"] = json!(rng.random_range(2..1_000_000u64));
            sign(&v, other)
        }
        5 => {
            // Correctly signed, but with a key no config has.
            let mut v = good.clone();
            v["version"] = json!(rng.random_range(2..1_000_000u64));
            let section = ["journal", "kafka", "forward", "status"][rng.random_range(0..4)];
            v[section] = json!({format!("x_{}", rng.random::<u32>()): rng.random::<u8>()});
            sign(&v, key)
        }
        6 => {
            // Random JSON shapes.
            let depth = rng.random_range(0..30);
            let mut s = String::new();
            for _ in 0..depth {
                s.push(['[', '{'][rng.random_range(0..2)]);
            }
            s.into_bytes()
        }
        7 => json!([{"version": 3}, "sensor", 1.5e300])
            .to_string()
            .into_bytes(),
        _ => {
            // Too large.
            if rng.random_range(0..200) == 0 {
                vec![b' '; 300 * 1024]
            } else {
                format!(
                    "{{\"version\": {}, \"sensor\": \"{}\"}}",
                    rng.random::<i32>(),
                    "é".repeat(rng.random_range(0..100))
                )
                .into_bytes()
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_hostile_payloads_change_nothing_and_sampling_goes_on() {
    const PAYLOADS: u64 = 10_000;
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let public_key = signing_key(&keys, "signing");
    signing_key(&keys, "stranger");
    let key =
        desired::parse_private_key(&std::fs::read_to_string(keys.join("signing.pem")).unwrap())
            .unwrap();
    let other =
        desired::parse_private_key(&std::fs::read_to_string(keys.join("stranger.pem")).unwrap())
            .unwrap();
    let broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let watcher = Watcher::connect(broker.port, None, "buoy/e2e-device/#").await;
    let config = offline_agent_config(
        dir.path(),
        &broker.url(),
        &format!("config_public_key = \"\"\"\n{public_key}\"\"\""),
    );
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_state(&watcher, "the first state", |c| c["applied_version"] == 0).await;
    let started = now_ns();

    let good = json!({
        "version": 1,
        "kafka": {"topic": "elsewhere"},
        "sensor": [{"name": "other", "kind": "simulated_fan", "interval": "1s"}]
    });
    // Compact: every byte matters, so a mutation changes what is signed
    // (pretty-printed, dropping a space would give the same config back).
    let signed: Value =
        serde_json::from_str(&desired::sign(&serde_json::to_vec(&good).unwrap(), &key).unwrap())
            .unwrap();
    let signed = signed.to_string();
    let good_canonical = desired::parse(signed.as_bytes()).unwrap().canonical;
    let mut rng = SmallRng::seed_from_u64(7);
    let started_flood = Instant::now();
    for _ in 0..PAYLOADS {
        // A mutation that happens to give back the signed config itself
        // (flipping the same bit twice) is not hostile: draw again.
        let payload = loop {
            let p = hostile(&mut rng, &good, &signed, &key, &other);
            if desired::parse(&p).map_or(true, |d| d.canonical != good_canonical) {
                break p;
            }
        };
        watcher.publish(CONFIG, payload, false).await;
    }
    let state = watcher
        .wait_for("every payload decided", Duration::from_secs(300), |m| {
            is_state(m) && m.json()["config"]["rejected"] == PAYLOADS
        })
        .await
        .json();
    // The window checked for gaps spans at least two seconds (20 readings
    // of the 100 ms sensor), however fast a flood was decided.
    let window = Duration::from_nanos((now_ns() - started).max(0) as u64);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(window));
    let fuzzed_until = now_ns();
    eprintln!(
        "{PAYLOADS} hostile payloads published and rejected in {:?}",
        started_flood.elapsed()
    );
    assert_eq!(state["config"]["applied_version"], 0, "{state}");
    assert_eq!(state["config"]["accepted"], 0, "{state}");
    assert!(agent.is_running(), "the agent survived");
    assert!(
        !dir.path().join("remote-config.json").exists(),
        "nothing was stored"
    );
    // The good config itself still applies: the rejections were earned.
    watcher.publish(CONFIG, signed.into_bytes(), false).await;
    wait_for_state(&watcher, "the good config accepted", |c| {
        c["applied_version"] == 1
    })
    .await;
    let log = agent.log();
    agent.stop(Duration::from_secs(60));
    assert!(!log.contains("panicked"), "{log}");
    // Sampling went on through the flood: no gap of a second or more.
    let mut cpu = journaled_from(dir.path(), "cpu", started);
    cpu.retain(|t| *t < fuzzed_until);
    cpu.sort();
    assert!(cpu.len() >= 10, "{} readings", cpu.len());
    let gap = cpu.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap < 1_000_000_000, "a {gap} ns gap in sampling");
}
