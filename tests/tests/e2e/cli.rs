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
    let out = binaries::command("edge-agent")
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for expected in ["sensors", "bme280", "pwd", "max_reopen_delay"] {
        assert!(
            help.contains(expected),
            "edge-agent --help lacks {expected:?}:\n{help}"
        );
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

#[test]
fn journal_stats_and_export_show_the_backlog_and_refuse_a_journal_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("127.0.0.1:{}", buoy_tests::process::free_port());
    let config = crate::common::agent_config(
        dir.path(),
        &nobody,
        telemetry::record::Format::Influx,
        1,
        "10ms",
    )
    .replace("shutdown_grace = \"15s\"", "shutdown_grace = \"1s\"");
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    crate::common::wait_for_status(&agent, "journaled", 200, std::time::Duration::from_secs(60));
    // The agent holds the journal: the commands say so instead of waiting.
    let (ok, _, err) = binaries::journal_command(dir.path(), &["stats"]);
    assert!(!ok);
    assert!(err.contains("in use"), "{err}");
    assert!(agent.stop(std::time::Duration::from_secs(30)).success());

    let (ok, text, err) = binaries::journal_command(dir.path(), &["stats"]);
    assert!(ok, "{err}");
    for expected in [
        "waiting",
        "oldest",
        "newest",
        "journal.max_bytes",
        "dropped",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    let stats = binaries::journal_stats_json(dir.path());
    let waiting = stats["records"].as_u64().unwrap();
    assert!(waiting >= 200, "{stats}");
    assert!(stats["oldest_ns"].as_i64() <= stats["newest_ns"].as_i64());

    // Export streams every waiting reading, oldest first, and consumes none.
    for format in ["influx", "json"] {
        let (ok, out, err) = binaries::journal_command(dir.path(), &["export", "--format", format]);
        assert!(ok, "{err}");
        assert_eq!(out.lines().count() as u64, waiting, "{format}");
        let first = out.lines().next().unwrap();
        match format {
            "influx" => {
                telemetry::line_protocol::parse_line(first, 0).unwrap();
            }
            _ => assert!(first.starts_with('{'), "{first}"),
        }
    }
    let again = binaries::journal_stats_json(dir.path());
    assert_eq!(
        again["records"], stats["records"],
        "export consumed nothing"
    );
}
