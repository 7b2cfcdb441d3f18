//! Every sink dialect the machine has no server for (InfluxDB 2 and 3,
//! CnosDB, QuestDB), against recording fakes that answer the way each
//! database documents: the endpoint, query, auth header, precision and gzip
//! each request carries, retries on 429/5xx, splitting on 413, and the
//! refused line found and dead-lettered per database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use buoy_tests::http_fake::{FakeDb, Received, Reply};
use buoy_tests::kafka::{Kafka, Outgoing, Storage, produce, read_topic};
use buoy_tests::load;

use crate::common::*;
use crate::uplink::start;

#[tokio::test(flavor = "multi_thread")]
async fn every_dialect_gets_its_endpoint_auth_precision_and_gzip_and_refused_lines_are_dead_lettered()
 {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["fleet", "fleet.dlq"]).await;

    // Each fake first says it is busy, then refuses the line with "reject"
    // in it the way its database documents, then accepts.
    let bad_index = |r: &Received| r.lines().position(|l| l.contains("reject"));
    let v2 = FakeDb::start(Arc::new(move |r: &Received, n| match (n, bad_index(r)) {
        (0, _) => Reply {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: String::new(),
        },
        (_, Some(i)) => Reply::json(
            400,
            &serde_json::json!({"code": "invalid", "message": format!(
                "partial write error ({} written): unable to parse '{}': invalid field format",
                r.lines().count() - 1, r.lines().nth(i).unwrap())})
            .to_string(),
        ),
        _ => Reply::status(204),
    }))
    .await;
    let v3 = FakeDb::start(Arc::new(move |r: &Received, n| match (n, bad_index(r)) {
        (0, _) => Reply::status(503),
        (_, Some(i)) => Reply::json(
            400,
            &serde_json::json!({"error": "partial write of line protocol occurred", "data": [
                {"original_line": r.lines().nth(i).unwrap(), "line_number": i + 1,
                 "error_message": "invalid column type for column 'v'"}]})
            .to_string(),
        ),
        _ => Reply::status(204),
    }))
    .await;
    // CnosDB names no line, and takes at most 8 lines a request.
    let cnos = FakeDb::start(Arc::new(move |r: &Received, n| {
        if n == 0 {
            return Reply::status(500);
        }
        if r.lines().count() > 8 {
            return Reply::json(
                413,
                r#"{"error_code":"010013","error_message":"payload too large"}"#,
            );
        }
        match bad_index(r) {
            Some(_) => Reply::json(
                422,
                r#"{"error_code":"050001","error_message":"field type conflict"}"#,
            ),
            None => Reply::status(200),
        }
    }))
    .await;
    let quest = FakeDb::start(Arc::new(move |r: &Received, n| match (n, bad_index(r)) {
        (0, _) => Reply::status(503),
        (_, Some(i)) => Reply::json(
            400,
            &serde_json::json!({"code": "invalid", "message": format!(
                "failed to parse line protocol:errors encountered on line(s):\nerror in line {}: table: load, column: v; cast error", i + 1),
                "line": i + 1, "errorId": "a1-42"})
            .to_string(),
        ),
        _ => Reply::status(204),
    }))
    .await;
    let d = dir.path();
    for (file, secret) in [
        ("v2.token", "v2-secret"),
        ("v3.token", "v3-secret"),
        ("cnos.password", "cnos pass"),
        ("q.token", "q-secret"),
    ] {
        std::fs::write(d.join(file), format!("{secret}\n")).unwrap();
    }
    let sinks = format!(
        r#"[[sink]]
kind = "influxdb_v2"
url = "{}"
org = "buoy org"
bucket = "telemetry"
token_file = "{}"
precision = "ms"
[[sink]]
kind = "influxdb_v3"
url = "{}"
database = "buoy"
token_file = "{}"
[[sink]]
kind = "cnosdb"
url = "{}"
database = "buoy"
username = "root"
password_file = "{}"
[[sink]]
kind = "questdb"
url = "{}"
token_file = "{}"
"#,
        v2.url(),
        d.join("v2.token").display(),
        v3.url(),
        d.join("v3.token").display(),
        cnos.url(),
        d.join("cnos.password").display(),
        quest.url(),
        d.join("q.token").display(),
    );

    let t0 = load::recent_t0_ms();
    let good: Vec<String> = (0..30).map(|i| load::line(i, 3, t0)).collect();
    let bad = format!(
        "load,device_id=d9 v=\"reject me\" {}",
        (t0 + 99) * 1_000_000
    );
    let mut records: Vec<Outgoing<'_>> = good
        .iter()
        .map(|l| Outgoing {
            payload: l.as_bytes(),
            headers: &[],
        })
        .collect();
    records.push(Outgoing {
        payload: bad.as_bytes(),
        headers: &[],
    });
    produce(&kafka.bootstrap(), "fleet", &records).await;
    let uplink = start(d, &kafka, "fleet", &sinks, "");

    // The refused line, once per database, from an independent client.
    let dead = read_topic(
        &kafka.bootstrap(),
        "fleet.dlq",
        Duration::from_secs(40),
        Some(4),
    );
    assert_eq!(dead.len(), 4, "{dead:?}\n{}", uplink.log());
    let by_sink: BTreeMap<String, &buoy_tests::kafka::KafkaRecord> = dead
        .iter()
        .map(|r| {
            (
                r.headers["buoy-sink"].split(' ').next().unwrap().to_owned(),
                r,
            )
        })
        .collect();
    assert_eq!(
        by_sink.keys().map(String::as_str).collect::<Vec<_>>(),
        ["cnosdb", "influxdb_v2", "influxdb_v3", "questdb"]
    );
    for (sink, r) in &by_sink {
        assert_eq!(r.headers["buoy-source-offset"], "30", "{sink}");
        assert_eq!(r.headers["buoy-source-topic"], "fleet", "{sink}");
        assert!(r.text().contains("reject me"), "{sink}: {}", r.text());
    }
    assert!(by_sink["influxdb_v2"].headers["buoy-error"].contains("invalid field format"));
    assert!(by_sink["influxdb_v3"].headers["buoy-error"].contains("invalid column type"));
    assert!(by_sink["cnosdb"].headers["buoy-error"].contains("422"));
    assert!(by_sink["questdb"].headers["buoy-error"].contains("cast error"));

    // Every good line accepted by every database, once, in its precision.
    let ns: BTreeSet<String> = good.iter().cloned().collect();
    let ms: BTreeSet<String> = good
        .iter()
        .map(|l| {
            let (head, ts) = l.rsplit_once(' ').unwrap();
            format!("{head} {}", ts.parse::<i64>().unwrap() / 1_000_000)
        })
        .collect();
    for (fake, expected) in [(&v2, &ms), (&v3, &ns), (&cnos, &ns), (&quest, &ns)] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake.accepted_lines().len() < expected.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let accepted = fake.accepted_lines();
        assert_eq!(
            accepted.len(),
            expected.len(),
            "{accepted:?}\n{}",
            uplink.log()
        );
        assert_eq!(&accepted.into_iter().collect::<BTreeSet<_>>(), expected);
    }

    // What each request carried.
    let basic = base64::engine::general_purpose::STANDARD.encode("root:cnos pass");
    // (fake, path, query, authorization, gzip)
    type Expected<'a> = (&'a FakeDb, &'a str, &'a [(&'a str, &'a str)], String, bool);
    let checks: [Expected<'_>; 4] = [
        (
            &v2,
            "/api/v2/write",
            &[
                ("org", "buoy org"),
                ("bucket", "telemetry"),
                ("precision", "ms"),
            ],
            "Token v2-secret".into(),
            true,
        ),
        (
            &v3,
            "/api/v3/write_lp",
            &[
                ("db", "buoy"),
                ("precision", "nanosecond"),
                ("accept_partial", "true"),
            ],
            "Bearer v3-secret".into(),
            true,
        ),
        (
            &cnos,
            "/api/v1/write",
            &[("db", "buoy"), ("tenant", "cnosdb"), ("precision", "ns")],
            format!("Basic {basic}"),
            false,
        ),
        (
            &quest,
            "/write",
            &[("precision", "n")],
            "Bearer q-secret".into(),
            false,
        ),
    ];
    for (fake, path, query, auth, gzip) in checks {
        let received = fake.received();
        assert!(
            received.len() >= 3,
            "retry, refusal and success: {received:?}"
        );
        for (r, _) in &received {
            assert_eq!(r.path, path);
            let want: BTreeMap<String, String> = query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(r.query, want, "{path}");
            assert_eq!(r.headers.get("authorization"), Some(&auth), "{path}");
            assert_eq!(r.gzipped, gzip, "{path}");
        }
    }
    // CnosDB's 413 made the uplink split its batch down to 8 lines or fewer.
    assert!(cnos.received().iter().any(|(_, s)| *s == 413));
    assert!(
        !uplink.log().contains("secret") && !uplink.log().contains("cnos pass"),
        "secrets never reach the log"
    );
    stop_uplink(uplink, 4);
}
