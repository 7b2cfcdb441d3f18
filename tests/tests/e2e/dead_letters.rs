//! Records that can never be written go to the dead-letter topic, with where
//! they came from; the good records around them are written.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buoy_tests::kafka::{Kafka, Outgoing, Storage, produce, read_topic};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_records_are_dead_lettered_and_good_ones_of_every_format_written() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["oceanic", "oceanic.dlq"]).await;
    let db = Database::victoria(dir.path());

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ns = now.as_nanos() as i64;
    let good_line = format!("weather,device_id=d1,sensor=s pressure_hpa=1000.5 {ns}");
    let telegraf = format!(
        r#"{{"fields":{{"temperature_c":21.5}},"name":"weather","tags":{{"device_id":"d2"}},"timestamp":{}}}"#,
        now.as_secs()
    );
    let plain = r#"{"pressure": 3.2, "temperature": 22.5}"#;
    let second_line = format!(
        "visibility,device_id=d1 visibility_m=8000 {}",
        ns + 1_000_000
    );
    let not_utf8: &[u8] = &[b'w', 0xff, 0xfe, b' '];
    let bad_line = "weather,device_id=d1 pressure_hpa= 123";
    let lp = [("content-type", "text/plain; format=influx")];
    produce(
        &kafka.bootstrap(),
        "oceanic",
        &[
            Outgoing {
                payload: good_line.as_bytes(),
                headers: &lp,
            },
            Outgoing {
                payload: not_utf8,
                headers: &[],
            },
            Outgoing {
                payload: bad_line.as_bytes(),
                headers: &[("origin", "test")],
            },
            Outgoing {
                payload: telegraf.as_bytes(),
                headers: &[],
            },
            Outgoing {
                payload: plain.as_bytes(),
                headers: &[],
            },
            Outgoing {
                payload: second_line.as_bytes(),
                headers: &[],
            },
        ],
    )
    .await;

    let uplink = start_uplink(dir.path(), &kafka.bootstrap(), "oceanic", &db);

    // The two malformed records, as an independent client finds them.
    let dead = read_topic(
        &kafka.bootstrap(),
        "oceanic.dlq",
        Duration::from_secs(20),
        Some(2),
    );
    assert_eq!(dead.len(), 2, "{dead:?}\n{}", uplink.log());
    assert_eq!(dead[0].value, not_utf8);
    assert_eq!(dead[0].headers["buoy-source-offset"], "1");
    assert!(
        dead[0].headers["buoy-error"].contains("not UTF-8"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[1].value, bad_line.as_bytes());
    assert_eq!(dead[1].headers["buoy-source-offset"], "2");
    assert_eq!(dead[1].headers["buoy-source-topic"], "oceanic");
    assert_eq!(dead[1].headers["buoy-source-partition"], "0");
    assert_eq!(
        dead[1].headers["origin"], "test",
        "original headers are kept"
    );
    assert!(
        dead[1].headers["buoy-error"].contains("pressure_hpa"),
        "{:?}",
        dead[1].headers
    );

    // Four good records, four points: line protocol twice, Telegraf JSON in
    // seconds, and a plain object named after its topic.
    let held = wait_for_async(
        "4 points in VictoriaMetrics",
        Duration::from_secs(60),
        || async {
            let held = db.points(&[]).await;
            (held.len() >= 4).then_some(held)
        },
        || uplink.log(),
    )
    .await;
    assert_eq!(held.len(), 4, "{held:?}");
    let measurements: Vec<&str> = held.keys().map(|k| k.measurement.as_str()).collect();
    assert_eq!(measurements.iter().filter(|m| **m == "weather").count(), 2);
    assert!(measurements.contains(&"visibility"));
    assert!(measurements.contains(&"oceanic"));
    let telegraf_point = held
        .iter()
        .find(|(k, _)| k.tags.get("device_id").map(String::as_str) == Some("d2"))
        .expect("the Telegraf metric");
    assert_eq!(
        telegraf_point.0.timestamp,
        now.as_secs() as i64 * 1000,
        "seconds were read as seconds"
    );
    stop_uplink(uplink, 2);
}
