//! The agent forwards over mutual TLS, its client key's password read from a
//! file and never logged. Tansu speaks plaintext only, so socat terminates
//! TLS in front of it (and demands a client certificate signed by the test
//! CA); Tansu advertises socat's port, so every connection goes through it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::process::{Service, free_port, require, wait_for_port};
use buoy_tests::{binaries, certs};
use telemetry::record::Format;

use crate::common::*;

const KEY_PASSWORD: &str = "correct horse battery staple";

/// A CA, a server certificate for 127.0.0.1, and a client certificate whose
/// key is encrypted with [`KEY_PASSWORD`].
fn certificates(dir: &Path) {
    certs::ca_and_server(dir);
    certs::key_and_request(dir, "client", "/CN=e2e-device", Some(KEY_PASSWORD));
    certs::sign(dir, "client", None);
    std::fs::write(dir.join("key-password"), format!("{KEY_PASSWORD}\n")).unwrap();
}

/// socat terminating mutual TLS on `port` in front of `upstream`.
fn tls_terminator(dir: &Path, port: u16, upstream: u16) -> Service {
    let socat = require("socat", "apt-get install socat");
    let mut c = Command::new(socat);
    c.current_dir(dir).args([
        format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,cafile=ca.pem,verify=1"
        ),
        format!("TCP:127.0.0.1:{upstream}"),
    ]);
    let service = Service::spawn("socat", c, &dir.join("socat.log"));
    wait_for_port(port, Duration::from_secs(10), &service);
    service
}

fn tls_section(dir: &Path, key_password_file: &str) -> String {
    format!(
        r#"[kafka.security]
protocol = "ssl"
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
key_password_file = "{password}"
"#,
        ca = dir.join("ca.pem").display(),
        cert = dir.join("client.pem").display(),
        key = dir.join("client.key").display(),
        password = dir.join(key_password_file).display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_travel_over_mutual_tls_with_the_key_password_from_a_file() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    certificates(&certs);
    let broker_dir = dir.path().join("kafka");
    let (plain, tls) = (free_port(), free_port());

    // Create the topic while Tansu still advertises its plaintext port.
    let mut kafka = Kafka::start_on(plain, &broker_dir, Storage::Sqlite);
    kafka.create_topics(&["telemetry"]).await;
    kafka.service.kill();
    kafka = Kafka::start_advertising(plain, tls, &broker_dir, Storage::Sqlite);
    let _socat = tls_terminator(&certs, tls, plain);

    let bootstrap = format!("127.0.0.1:{tls}");
    let config = |password_file: &str| {
        let base = agent_config(dir.path(), &bootstrap, Format::Influx, 1, "20ms");
        // The security table goes before the first [[sensor]].
        let (head, sensors) = base.split_once("[[sensor]]").unwrap();
        format!(
            "{head}{}[[sensor]]{sensors}",
            tls_section(&certs, password_file)
        )
    };

    // A wrong password is caught by check-config, naming the setting.
    std::fs::write(certs.join("wrong-password"), "hunter2\n").unwrap();
    std::fs::write(dir.path().join("wrong.toml"), config("wrong-password")).unwrap();
    let out = binaries::command("edge-agent")
        .arg("--config")
        .arg(dir.path().join("wrong.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check-config accepted a wrong key password"
    );
    assert!(
        said.contains("ssl.key"),
        "check-config should name the key: {said}"
    );
    assert!(!said.contains("hunter2"));

    let mut agent = binaries::start("edge-agent", dir.path(), &config("key-password"));
    wait_for_status(&agent, "forwarded", 1_000, Duration::from_secs(60));
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    assert!(
        !agent.log().contains(KEY_PASSWORD) && !agent.log().contains("correct horse"),
        "the key password must never be logged"
    );

    // Independently: Tansu advertising its plaintext port again, read by
    // kafka-python.
    kafka.service.kill();
    buoy_tests::kafka::index_tansu_headers(&broker_dir);
    let kafka = Kafka::start_on(plain, &broker_dir, Storage::Sqlite);
    let records = buoy_tests::kafka::read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(60),
        Some(journaled as usize),
    );
    let readings = readings_by_seq(&records, Format::Influx);
    assert_all_sequence_numbers(&readings, journaled);
}
