//! What an operator on site relies on: `edge-agent status` against a running
//! agent and against none, the metrics endpoint, and systemd's watchdog
//! seeing a stalled main loop through a fake `NOTIFY_SOCKET`.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage, create_topics};
use buoy_tests::process::{free_port, wait_for};
use telemetry::record::Format;

use crate::common::*;

fn status(dir: &Path, json: bool) -> Output {
    let mut c = binaries::command("edge-agent");
    c.arg("--config")
        .arg(dir.join("edge-agent.toml"))
        .arg("status");
    if json {
        c.arg("--json");
    }
    c.output().expect("run edge-agent status")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_the_running_agent_and_fails_when_there_is_none_or_it_is_unhealthy() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(dir.path(), Storage::Memory);
    create_topics(&kafka.bootstrap(), &["telemetry"]).await;
    let metrics_port = free_port();
    let mut config = agent_config(dir.path(), &kafka.bootstrap(), Format::Influx, 1, "200ms");
    config.push_str(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    ));
    std::fs::write(dir.path().join("edge-agent.toml"), &config).unwrap();

    // No agent yet: exit 3, and says so.
    let none = status(dir.path(), false);
    assert_eq!(none.status.code(), Some(3), "{none:?}");
    assert!(
        text(&none.stderr).contains("no edge agent is running"),
        "{}",
        text(&none.stderr)
    );

    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for_status(&agent, "forwarded", 20, Duration::from_secs(60));
    let socket = dir.path().join("edge-agent.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o660,
        "the status socket is for root and the agent's group"
    );

    let healthy = status(dir.path(), false);
    let out = text(&healthy.stdout);
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{out}\n{}",
        text(&healthy.stderr)
    );
    for expected in [
        &format!("edge agent {DEVICE}"),
        "link       up",
        "readings not yet acknowledged by Kafka",
        "journal    ",
        "dropped    0 oldest",
        "sensor     s0-0 (simulated_weather) ok",
        "config     local file only",
        "clock      synchronised",
        "healthy",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&status(dir.path(), true).stdout).expect("status --json");
    assert_eq!(json["link"]["state"], "up");
    assert!(json["forwarded"].as_u64().unwrap() >= 20);
    assert_eq!(json["sensors"].as_array().unwrap().len(), 4);
    assert_eq!(json["problems"], serde_json::json!([]));

    let scraped = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .unwrap();
    for expected in [
        "edge_agent_forwarded_total ",
        "edge_agent_link_up 1",
        "edge_agent_sensor_ok{sensor=\"s1-0\"} 1",
        "edge_agent_backlog_readings ",
        "edge_agent_dropped_total{cause=\"dropped_oldest\"} 0",
        "edge_agent_clock_synced 1",
    ] {
        assert!(
            scraped.contains(expected),
            "`{expected}` missing from:\n{scraped}"
        );
    }
    agent.stop(Duration::from_secs(30));
    assert!(!socket.exists(), "a clean stop removes the socket");
    let stopped = status(dir.path(), false);
    assert_eq!(stopped.status.code(), Some(3));

    // A sensor on a bus that does not exist: the agent runs, status says
    // what is wrong and exits 1.
    let broken = format!(
        "{config}[[sensor]]\nname = \"env\"\nkind = \"bme280\"\nbus = \"/dev/i2c-99\"\ninterval = \"200ms\"\n"
    );
    let mut agent = binaries::start("edge-agent", dir.path(), &broken);
    let unhealthy = wait_for(
        "status to report the failing sensor",
        Duration::from_secs(30),
        || {
            let out = status(dir.path(), false);
            (out.status.code() == Some(1)).then_some(out)
        },
        || agent.log(),
    );
    let out = text(&unhealthy.stdout);
    assert!(
        out.contains("PROBLEM: sensor env failing") && out.contains("/dev/i2c-99"),
        "{out}"
    );
    assert!(
        out.contains("sensor     s0-0 (simulated_weather) ok"),
        "{out}"
    );
    agent.stop(Duration::from_secs(30));
}

/// Reads what the agent sends to the fake `NOTIFY_SOCKET` until `until`.
fn notifications(socket: &UnixDatagram, until: Instant) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        socket
            .set_read_timeout(Some(
                until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_main_loop_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    // Nothing listens on the broker port: the agent journals regardless.
    let bootstrap = format!("127.0.0.1:{}", free_port());
    let config = agent_config(dir.path(), &bootstrap, Format::Influx, 1, "200ms");
    let notify = notify_path.to_str().unwrap();
    let mut agent = binaries::start_with(
        "edge-agent",
        dir.path(),
        &config,
        "edge-agent.log",
        &[
            ("NOTIFY_SOCKET", notify),
            // A 1 s watchdog: pings every 500 ms.
            ("WATCHDOG_USEC", "1000000"),
            ("BUOY_TEST_STALL_MAIN_LOOP_AFTER", "4s"),
        ],
    );
    let started = Instant::now();
    let got = notifications(&socket, started + Duration::from_secs(9));
    let first_ping = got
        .iter()
        .position(|(_, m)| m.contains("WATCHDOG=1"))
        .unwrap_or_else(|| panic!("no watchdog ping: {got:?}\n{}", agent.log()));
    assert!(
        got[..first_ping].iter().any(|(_, m)| m.contains("READY=1")),
        "READY=1 comes before the first ping: {got:?}"
    );
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        pings.len() >= 5,
        "pings every 500 ms until the stall at 4 s: {got:?}"
    );
    assert!(
        got.iter().any(|(_, m)| m.contains("STATUS=link ")),
        "each ping carries a status line: {got:?}"
    );
    let last = *pings.last().unwrap();
    assert!(
        last < started + Duration::from_secs(5),
        "no ping after the stall: the last came {:?} after start",
        last - started
    );
    // The process is alive (systemd would now kill it); only the loop is
    // stuck. Its other tasks still answer.
    assert!(agent.is_running(), "{}", agent.log());
    assert!(
        agent.log().contains("the main loop stalls now"),
        "{}",
        agent.log()
    );
    let answer = status(dir.path(), true);
    assert!(
        answer.status.code().is_some_and(|c| c != 3),
        "the status socket still answers: {answer:?}"
    );
    agent.kill();
}
