//! The whole path of a reading, with exact counts and values.

use std::collections::BTreeMap;
use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::influx::Influx;
use buoy_tests::kafka::{Kafka, Storage, read_topic};
use buoy_tests::points::{self, Point, PointKey, differences};
use buoy_tests::victoria::Victoria;
use telemetry::record::Format;

use crate::common::*;

/// Readings to sample before stopping the agent.
const READINGS: u64 = 15_000;

#[tokio::test(flavor = "multi_thread")]
async fn every_journaled_reading_reaches_victoriametrics_exactly_once_with_its_values() {
    let _one_at_a_time = buoy_tests::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "telemetry.dlq"]).await;
    let vm = Victoria::start(dir.path());
    let sink = format!(
        "[[sink]]\nkind = \"victoriametrics\"\nurl = \"{}\"\n",
        vm.url()
    );
    let mut uplink = binaries::start(
        "uplink",
        dir.path(),
        &uplink_config(&kafka.bootstrap(), "telemetry", "telemetry.dlq", &sink),
    );
    // Eight sensors every 5 ms: about 1,600 readings a second.
    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_config(dir.path(), &kafka.bootstrap(), Format::Influx, 2, "5ms"),
    );
    wait_for_status(&agent, "journaled", READINGS, Duration::from_secs(90));
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));

    // What an independent client finds on the topic.
    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(10),
        Some(journaled as usize),
    );
    let readings = readings_by_seq(&records, Format::Influx);
    assert_all_sequence_numbers(&readings, journaled);
    let expected = expected_points(&readings, 1_000_000);

    // What VictoriaMetrics holds, once the uplink has caught up.
    let held = settled_points(journaled, || async {
        points::from_victoria(&vm.export().await)
    })
    .await;
    // VictoriaMetrics keeps 12 significant digits or more.
    let diff = differences(&expected, &held, 1e-11);
    assert_eq!(
        held.len() as u64,
        journaled,
        "points in VictoriaMetrics != readings journaled:\n{}",
        diff.join("\n")
    );
    assert!(
        diff.is_empty(),
        "VictoriaMetrics differs from what was sampled:\n{}",
        diff.join("\n")
    );

    let status = uplink.stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "uplink exited with {status}:\n{}",
        uplink.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_journaled_reading_reaches_influxdb_exactly_once_with_its_values_as_json_records() {
    let _one_at_a_time = buoy_tests::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "telemetry.dlq"]).await;
    let influx = Influx::start(dir.path());
    influx.create_database("buoy").await;
    let sink = format!(
        "[[sink]]\nkind = \"influxdb_v1\"\nurl = \"{}\"\ndatabase = \"buoy\"\n",
        influx.url()
    );
    let mut uplink = binaries::start(
        "uplink",
        dir.path(),
        &uplink_config(&kafka.bootstrap(), "telemetry", "telemetry.dlq", &sink),
    );
    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_config(dir.path(), &kafka.bootstrap(), Format::Json, 2, "5ms"),
    );
    wait_for_status(&agent, "journaled", READINGS, Duration::from_secs(90));
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));

    let records = read_topic(
        &kafka.bootstrap(),
        "telemetry",
        Duration::from_secs(10),
        Some(journaled as usize),
    );
    let readings = readings_by_seq(&records, Format::Json);
    assert_all_sequence_numbers(&readings, journaled);
    let expected = expected_points(&readings, 1);

    let held = settled_points(journaled, || async {
        let mut held: BTreeMap<PointKey, Point> = BTreeMap::new();
        for m in ["weather", "visibility", "host", "fan"] {
            held.extend(influx.points("buoy", m).await);
        }
        held
    })
    .await;
    // InfluxDB stores float64 and prints it exactly.
    let diff = differences(&expected, &held, 0.0);
    assert_eq!(
        held.len() as u64,
        journaled,
        "points in InfluxDB != readings journaled:\n{}",
        diff.join("\n")
    );
    assert!(
        diff.is_empty(),
        "InfluxDB differs from what was sampled:\n{}",
        diff.join("\n")
    );

    let status = uplink.stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "uplink exited with {status}:\n{}",
        uplink.log()
    );
}
