//! `buoy-fleet` against twelve real agents, a real mosquitto and Tansu:
//! `status` sees them all; a canary rollout stops at the canaries when one
//! rejects and when one turns unhealthy, and leaves the rest untouched; it
//! completes when they stay healthy; `rollback` republishes the previous
//! content; `push` reports a bad file by line.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::mqtt::{Access, Mosquitto};
use buoy_tests::process::Service;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use serde_json::Value;

use crate::common::wait_for_async;

/// The agent's config for device `id` with `labels`, trusting `public`
/// `mqtt_extra`: more `[mqtt]` keys (a login, a shorter keep-alive).
pub fn device_config(
    dir: &Path,
    id: &str,
    labels: &str,
    bootstrap: &str,
    url: &str,
    public: &str,
    mqtt_extra: &str,
) -> String {
    format!(
        r#"device_id = "{id}"
labels = {{ {labels} }}
[journal]
path = "{journal}"
commit_interval = "100ms"
[kafka]
brokers = ["{bootstrap}"]
topic = "telemetry"
delivery_timeout = "5s"
[forward]
max_retry_delay = "1s"
[status]
log_interval = "10s"
[mqtt]
enabled = true
url = "{url}"
config_public_key = "{public}"
state_interval = "1s"
max_reconnect_delay = "1s"
{mqtt_extra}
[[sensor]]
name = "cpu"
kind = "simulated_cpu_temperature"
interval = "1s"
"#,
        journal = dir.join("journal.redb").display(),
    )
}

/// `buoy-fleet serve` on a free port, following the broker at `url`; its
/// base URL (`http://127.0.0.1:<port>`).
pub fn start_serve(url: &str, dir: &Path) -> (Service, String) {
    let port = buoy_tests::process::free_port();
    let mut command = binaries::command("buoy-fleet");
    command.args([
        "--mqtt",
        url,
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let serve = Service::spawn("buoy-fleet", command, &dir.join("buoy-fleet-serve.log"));
    buoy_tests::process::wait_for_port(port, Duration::from_secs(60), &serve);
    (serve, format!("http://127.0.0.1:{port}"))
}

pub fn public_of(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

/// Runs `buoy-fleet` with `args` against the broker at `url`.
pub fn fleet(url: &str, args: &[&str]) -> Output {
    let out = binaries::command("buoy-fleet")
        .arg("--mqtt")
        .arg(url)
        .args(args)
        .output()
        .expect("run buoy-fleet");
    eprintln!(
        "buoy-fleet {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `status --json`, parsed.
pub fn status_rows(url: &str) -> Vec<Value> {
    let out = fleet(url, &["status", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", stdout(&out)))
        .as_array()
        .expect("an array")
        .clone()
}

/// Waits until `status --json` (with `filter`) shows `n` devices online,
/// without problems.
async fn all_healthy(url: &str, filter: &[&str], n: usize) {
    wait_for_async(
        &format!("{n} healthy devices in buoy-fleet status"),
        Duration::from_secs(120),
        || async {
            let out = fleet(url, &[&["status", "--json"], filter].concat());
            let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
            let healthy = rows
                .iter()
                .filter(|r| {
                    r["online"] == true && r["problems"].as_array().is_some_and(|p| p.is_empty())
                })
                .count();
            (healthy == n).then_some(())
        },
        String::new,
    )
    .await;
}

/// The applied version of `layer` on `device`, from `status --json`.
fn applied(rows: &[Value], device: &str, layer: &str) -> u64 {
    let row = rows
        .iter()
        .find(|r| r["device"] == device)
        .expect("the device");
    row["layers"][layer]["applied_version"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_rollout_to_twelve_agents_stops_on_a_rejection_or_bad_health_and_completes_when_healthy()
 {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("mosquitto"), Access::default());
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry"]).await;
    let (bootstrap, url) = (kafka.bootstrap(), broker.url());
    let key = SigningKey::from_bytes(&[21; 32]);
    let other_key = SigningKey::from_bytes(&[22; 32]);
    let pem = dir.path().join("signing.pem");
    std::fs::write(
        &pem,
        key.to_pkcs8_pem(Default::default()).unwrap().as_bytes(),
    )
    .unwrap();
    let pem = pem.to_str().unwrap();

    // pi-00 trusts another key (it will refuse), and is the only pi4.
    let mut agents: Vec<Service> = Vec::new();
    for i in 0..12 {
        let id = format!("pi-{i:02}");
        let agent_dir = dir.path().join(&id);
        std::fs::create_dir_all(&agent_dir).unwrap();
        let (trusted, hw) = if i == 0 {
            (&other_key, "pi4")
        } else {
            (&key, "pi5")
        };
        let labels = format!("site = \"north-sea\", hw = \"{hw}\"");
        let config = device_config(
            &agent_dir,
            &id,
            &labels,
            &bootstrap,
            &url,
            &public_of(trusted),
            "",
        );
        agents.push(binaries::start("edge-agent", &agent_dir, &config));
    }
    all_healthy(&url, &[], 12).await;
    let out = fleet(&url, &["status"]);
    assert!(out.status.success(), "no problems: exit 0");
    assert!(stdout(&out).contains("12 devices, 12 online, 0 with problems"));
    let out = fleet(&url, &["status", "--label", "hw=pi4", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["device"], "pi-00");

    // A bad file: refused before anything is published, with its line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[forward]\norder = \"fifo\"\n[kafka]\nbrokers = [\"evil:9092\"]\n",
    )
    .unwrap();
    let out = fleet(
        &url,
        &["push", bad.to_str().unwrap(), "--to", "all", "--key", pem],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:") && err.contains("kafka.brokers cannot be set remotely"),
        "{err}"
    );

    // 1. The canaries are pi-00 and pi-01; pi-00 rejects: stop there.
    let fifo = dir.path().join("fifo.toml");
    std::fs::write(&fifo, "[forward]\norder = \"fifo\"\n").unwrap();
    let fifo = fifo.to_str().unwrap();
    let args = [
        "push",
        fifo,
        "--to",
        "site=north-sea",
        "--key",
        pem,
        "--canary",
        "2",
        "--soak",
        "3s",
        "--timeout",
        "60s",
    ];
    let out = fleet(&url, &args);
    assert_eq!(out.status.code(), Some(1), "a stopped rollout fails");
    let text = stdout(&out);
    assert!(
        text.contains("STOPPED at the canaries: pi-00: rejected"),
        "{text}"
    );
    assert!(
        text.contains("the other 10 devices were left untouched"),
        "{text}"
    );
    let rows = status_rows(&url);
    for i in 2..12 {
        let id = format!("pi-{i:02}");
        assert_eq!(
            applied(&rows, &id, "group/site/north-sea"),
            0,
            "{id} untouched"
        );
        assert_eq!(applied(&rows, &id, "device"), 0, "{id} untouched");
    }

    // 2. To the pi5 group, canaries pi-01 and pi-02: one turns unhealthy (a
    // topic that does not exist: its link goes down): stop.
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "[kafka]\ntopic = \"no-such-topic\"\n").unwrap();
    let args = [
        "push",
        missing.to_str().unwrap(),
        "--to",
        "hw=pi5",
        "--key",
        pem,
        "--canary",
        "2",
        "--soak",
        "40s",
        "--timeout",
        "60s",
    ];
    let out = fleet(&url, &args);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("pi-01: accepted (canary)"), "{text}");
    assert!(
        text.contains("during the soak (canary)") && text.contains("STOPPED at the canaries"),
        "{text}"
    );
    // The canaries are put back: their links come up again. (pi-00 keeps
    // refusing what is signed with the key it does not trust: a problem.)
    all_healthy(&url, &["--label", "hw=pi5"], 11).await;
    let out = fleet(&url, &["status", "--label", "hw=pi4"]);
    assert_eq!(out.status.code(), Some(1), "pi-00 has a problem: exit 1");
    assert!(
        stdout(&out).contains("pi-00: config device"),
        "{}",
        stdout(&out)
    );

    // 3. A good config: the canaries stay healthy, then the whole group.
    let args = [
        "push",
        fifo,
        "--to",
        "hw=pi5",
        "--key",
        pem,
        "--canary",
        "2",
        "--soak",
        "5s",
        "--timeout",
        "90s",
    ];
    let out = fleet(&url, &args);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("11 accepted, 0 refused, 0 did not answer"),
        "{text}"
    );
    let rows = status_rows(&url);
    let version = applied(&rows, "pi-11", "group/hw/pi5");
    assert!(version >= 1);
    for i in 1..12 {
        assert_eq!(
            applied(&rows, &format!("pi-{i:02}"), "group/hw/pi5"),
            version
        );
    }

    // 4. Another push, then a rollback to the content before it.
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "[journal]\nmax_bytes = \"96MiB\"\n").unwrap();
    let out = fleet(
        &url,
        &[
            "push",
            big.to_str().unwrap(),
            "--to",
            "hw=pi5",
            "--key",
            pem,
            "--timeout",
            "90s",
        ],
    );
    assert!(out.status.success());
    let out = fleet(
        &url,
        &[
            "rollback",
            "--to",
            "hw=pi5",
            "--key",
            pem,
            "--timeout",
            "90s",
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("rolling back to the content of version {version}")));
    let rows = status_rows(&url);
    assert_eq!(applied(&rows, "pi-05", "group/hw/pi5"), version + 2);
    let state = binaries::state_now(&agents[5]);
    assert_eq!(
        state["journal"]["max_bytes"].as_u64(),
        Some(256 << 20),
        "the 96MiB push is undone: {state}"
    );
    assert_eq!(
        state["config"]["layers"]["group/hw/pi5"]["applied_version"],
        version + 2
    );
    for mut agent in agents {
        agent.stop(Duration::from_secs(20));
    }
}

#[test]
fn every_command_explains_itself_in_help() {
    let help = |args: &[&str]| {
        let out = binaries::command("buoy-fleet").args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        stdout(&out)
    };
    let top = help(&["--help"]);
    for part in [
        "status",
        "push",
        "rollback",
        "serve",
        "--mqtt",
        "Exit status",
        "mosquitto-acl.conf",
    ] {
        assert!(top.contains(part), "--help lacks {part}:\n{top}");
    }
    for (command, parts) in [
        (
            "status",
            &["--json", "--watch", "--label", "--state", "Exit 0"][..],
        ),
        (
            "push",
            &[
                "--to",
                "--key",
                "--canary",
                "--soak",
                "--timeout",
                "--trial",
                "line",
            ][..],
        ),
        ("rollback", &["--to", "previous content"][..]),
        (
            "serve",
            &["/api/devices", "/metrics", "buoy_device_online"][..],
        ),
    ] {
        let text = help(&[command, "--help"]);
        for part in parts {
            assert!(
                text.contains(part),
                "{command} --help lacks {part}:\n{text}"
            );
        }
    }
}
