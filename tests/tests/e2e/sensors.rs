//! Real sensor drivers without hardware: `edge-agent sensors` and a running
//! agent against fixture sysfs trees (Raspberry Pi 4 and 5, an x86 box) and
//! a simulated Vaisala PWD on a pseudo-terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::process::{free_port, wait_for};
use hardware::pwd::simulator::{PwdSimulator, Reply};
use telemetry::{FieldValue, Reading};

use crate::common::DEVICE;

const RAIN: &str = "00  1839  1505 R-  61 61 61  0.33 12.16    0";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hardware/tests/fixtures/sysfs")
        .join(name)
}

fn sysfs_sensor(name: &str, kind: &str, root: &str, interval: &str) -> String {
    format!(
        "[[sensor]]\nname = \"{name}\"\nkind = \"{kind}\"\ninterval = \"{interval}\"\nsysfs_root = \"{}\"\n",
        fixture(root).display()
    )
}

fn pwd_sensor(sim: &PwdSimulator, interval: &str) -> String {
    format!(
        "[[sensor]]\nname = \"vis\"\nkind = \"pwd\"\ninterval = \"{interval}\"\nport = \"{}\"\nanswer_timeout = \"300ms\"\nmax_reopen_delay = \"1s\"\n",
        sim.path().display()
    )
}

/// Runs `edge-agent sensors --json` with `config`; (exit code, checks).
fn sensors(dir: &Path, config: &str) -> (i32, Vec<serde_json::Value>) {
    let path = dir.join("sensors.toml");
    std::fs::write(&path, config).unwrap();
    let out = binaries::command("edge-agent")
        .arg("--config")
        .arg(&path)
        .args(["sensors", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let checks = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), checks)
}

/// The readings one check printed, parsed back from line protocol.
fn readings(check: &serde_json::Value) -> Vec<Reading> {
    check["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| telemetry::line_protocol::parse_line(l.as_str().unwrap(), 0).unwrap())
        .collect()
}

fn float(r: &Reading, field: &str) -> f64 {
    match r.fields.get(field) {
        Some(FieldValue::Float(v)) => *v,
        other => panic!("{field} is {other:?} in {r:?}"),
    }
}

#[test]
fn sensors_reads_every_fixture_and_the_pwd_and_names_each_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sim = PwdSimulator::start("1", vec![Reply::Message(RAIN.into())]).unwrap();
    let mut config = format!("device_id = \"{DEVICE}\"\n");
    for root in ["rpi4", "rpi5", "x86"] {
        config.push_str(&sysfs_sensor(
            &format!("cpu-{root}"),
            "cpu_temperature",
            root,
            "1s",
        ));
    }
    for root in ["rpi5", "x86", "rpi4"] {
        config.push_str(&sysfs_sensor(&format!("fan-{root}"), "fan", root, "1s"));
    }
    config.push_str(&pwd_sensor(&sim, "1s"));
    config
        .push_str("[[sensor]]\nname = \"env\"\nkind = \"bme280\"\nbus = \"/nonexistent/i2c-3\"\n");
    config.push_str("[[sensor]]\nname = \"off\"\nkind = \"simulated_fan\"\nenabled = false\n");

    let (code, checks) = sensors(dir.path(), &config);
    assert_eq!(code, 1, "two sensors fail: {checks:#?}");
    let by_name = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check for {name}: {checks:#?}"))
    };
    for (name, celsius) in [("cpu-rpi4", 48.686), ("cpu-rpi5", 57.35), ("cpu-x86", 52.0)] {
        let r = readings(by_name(name));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].measurement, "host");
        assert_eq!(r[0].tag("device_id"), Some(DEVICE));
        assert_eq!(r[0].tag("sensor"), Some(name));
        assert_eq!(float(&r[0], "cpu_temperature_c"), celsius, "{name}");
    }
    let pi5 = readings(by_name("fan-rpi5"));
    assert_eq!(pi5.len(), 1);
    assert_eq!(pi5[0].tag("fan"), Some("pwmfan/fan1"));
    assert_eq!(float(&pi5[0], "fan_rpm"), 2815.0);
    assert_eq!(float(&pi5[0], "fan_state"), 2.0);
    let x86 = readings(by_name("fan-x86"));
    let fans: Vec<(&str, f64)> = x86
        .iter()
        .map(|r| (r.tag("fan").unwrap(), float(r, "fan_duty_pct")))
        .collect();
    assert_eq!(
        fans,
        [
            ("nct6798/fan1", 50.19607843137255),
            ("nct6798/fan2", 100.0),
            ("Fan", 100.0)
        ]
    );
    let vis = readings(by_name("vis"));
    assert_eq!(vis.len(), 1);
    assert_eq!(float(&vis[0], "visibility_m"), 1839.0);
    assert_eq!(
        vis[0].fields.get("present_weather"),
        Some(&FieldValue::Int(61))
    );

    let env = by_name("env");
    assert_eq!(
        env["error"],
        "cannot open /nonexistent/i2c-3: No such file or directory (os error 2)"
    );
    assert!(env["hint"].as_str().unwrap().contains("I²C"), "{env}");
    assert!(
        by_name("fan-rpi4")["error"]
            .as_str()
            .unwrap()
            .starts_with("not found: no fan under")
    );
    assert_eq!(by_name("off")["enabled"], false);
    assert!(by_name("off")["error"].is_null());

    // The text report an installer reads.
    let out = binaries::command("edge-agent")
        .arg("--config")
        .arg(dir.path().join("sensors.toml"))
        .arg("sensors")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("env       bme280 on /nonexistent/i2c-3 at 0x76: FAILED: cannot open"),
        "{text}"
    );
    assert!(
        text.contains("off       simulated_fan on simulated: disabled, not opened"),
        "{text}"
    );
    assert!(
        text.ends_with("6 of 8 enabled sensors read; 2 FAILED\n"),
        "{text}"
    );

    // Without the two that fail, it exits 0.
    let good: String = config
        .split("[[sensor]]")
        .filter(|t| !t.contains("i2c-3") && !t.contains("fan-rpi4"))
        .collect::<Vec<_>>()
        .join("[[sensor]]");
    let (code, checks) = sensors(dir.path(), &good);
    assert_eq!((code, checks.len()), (0, 7), "{checks:#?}");
}

#[test]
fn a_silent_pwd_is_skipped_counted_and_picked_up_again_while_other_sensors_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let sim = PwdSimulator::start(
        "1",
        vec![
            Reply::Message(RAIN.into()),
            Reply::Silent,
            Reply::Silent,
            Reply::Silent,
            Reply::Message(RAIN.into()),
        ],
    )
    .unwrap();
    // Kafka is unreachable: the agent journals everything.
    let mut config = crate::common::agent_config_head(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        telemetry::record::Format::Influx,
        "",
        "",
    );
    config.push_str(&sysfs_sensor("cpu", "cpu_temperature", "rpi5", "200ms"));
    config.push_str(&pwd_sensor(&sim, "500ms"));
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    wait_for(
        "the PWD to fail, recover and read again",
        Duration::from_secs(30),
        || (sim.polls() >= 6 && agent.log().contains("sensor reads again")).then_some(()),
        || agent.log(),
    );
    // A status line after the recovery names no failing sensor.
    let recovered_at = agent.log().find("sensor reads again").unwrap();
    wait_for(
        "a status line after the recovery",
        Duration::from_secs(10),
        || {
            agent.log()[recovered_at..]
                .contains(" status ")
                .then_some(())
        },
        || agent.log(),
    );
    // Kafka is unreachable, so the agent waits out forward.shutdown_grace.
    assert!(agent.stop(Duration::from_secs(60)).success());
    let log = agent.log();
    // The first failure is logged; the next two within the minute are not.
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sensor read failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("sensor=vis") && warnings[0].contains("no answer within 300ms"),
        "{log}"
    );
    let failing = log
        .lines()
        .filter(|l| {
            l.contains(" status ") && l.contains("sensors_failing=\"vis: no answer within 300ms\"")
        })
        .count();
    assert!(failing >= 1, "no status line shows the failing PWD:\n{log}");
    let after = &log[recovered_at..];
    let status_after = after.lines().find(|l| l.contains(" status ")).unwrap();
    assert!(
        status_after.contains("sensors_failing=\"\""),
        "{status_after}"
    );
    let last = binaries::final_state(&agent);
    assert_eq!(crate::common::sensor_errors(&last), 3, "{last}");

    // Everything sampled is in the journal: the PWD's good readings, and the
    // CPU's throughout the PWD's outage.
    let (ok, export, err) = binaries::journal_command(dir.path(), &["export"]);
    assert!(ok, "{err}");
    let readings: Vec<Reading> = export
        .lines()
        .map(|l| telemetry::line_protocol::parse_line(l, 0).unwrap())
        .collect();
    let vis: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.measurement == "visibility")
        .collect();
    assert!(vis.len() >= 2, "{export}");
    assert!(vis.iter().all(|r| float(r, "visibility_m") == 1839.0));
    let cpu: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.measurement == "host")
        .collect();
    assert!(cpu.len() >= 15, "{} CPU readings in {export}", cpu.len());
    assert!(cpu.iter().all(|r| float(r, "cpu_temperature_c") == 57.35));
    // Sampled at 200 ms throughout: no gap near the PWD's 3 s of silence.
    let mut times: Vec<i64> = cpu.iter().map(|r| r.timestamp_ns).collect();
    times.sort();
    let widest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(widest < 1_000_000_000, "a {widest} ns gap in CPU readings");
}
