//! What an operator sees at the command line.

use buoy_tests::binaries;

#[test]
fn help_explains_every_option_and_the_environment() {
    for binary in ["edge-agent", "uplink"] {
        let out = binaries::command(binary).arg("--help").output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for expected in [
            "--config",
            "check-config",
            "BUOY_",
            "SIGTERM",
            "Exit status",
        ] {
            assert!(
                help.contains(expected),
                "{binary} --help lacks {expected:?}:\n{help}"
            );
        }
    }
}

#[test]
fn check_config_reports_every_problem_with_its_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-agent.toml");
    std::fs::write(
        &path,
        "device_id = \"pi-1\"\n[kafka]\ntopic = \"no spaces allowed\"\n[[sensor]]\nname = \"env\"\nkind = \"simulated_weather\"\ninterval = \"0s\"\n",
    )
    .unwrap();
    let out = binaries::command("edge-agent")
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("edge-agent.toml:3:"), "{err}");
    assert!(err.contains("edge-agent.toml:7:"), "{err}");
    assert!(err.contains("kafka.topic"), "{err}");
    assert!(err.contains("sensor[0].interval"), "{err}");
}

#[test]
fn check_config_accepts_a_good_file_and_shows_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uplink.toml");
    std::fs::write(&path, "[kafka]\ntopics = [\"telemetry\"]\n").unwrap();
    let out = binaries::command("uplink")
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("BUOY_KAFKA_BROKERS", "10.0.0.1:9092")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("10.0.0.1:9092"), "{text}");
    assert!(
        text.contains("kafka.brokers set by BUOY_KAFKA_BROKERS"),
        "{text}"
    );
}

#[test]
fn a_config_with_unknown_keys_stops_the_agent_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-agent.toml");
    std::fs::write(&path, "[journal]\ncommit_intervall = \"1s\"\n").unwrap();
    let out = binaries::command("edge-agent")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("commit_intervall") && err.contains(":2:"),
        "{err}"
    );
}
