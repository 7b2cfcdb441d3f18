//! The whole path of a reading, with exact counts and values.

use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage};
use telemetry::record::Format;

use crate::common::*;

/// Readings to sample before stopping the agent.
const READINGS: u64 = 15_000;

#[tokio::test(flavor = "multi_thread")]
async fn every_journaled_reading_reaches_victoriametrics_exactly_once_with_its_values() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::victoria(dir.path());
    whole_pipeline(dir.path(), db, Format::Influx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_journaled_reading_reaches_influxdb_exactly_once_with_its_values_as_json_records() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::influx(dir.path()).await;
    whole_pipeline(dir.path(), db, Format::Json).await;
}

/// Runs agent, Tansu, uplink and `db` as separate processes, with the agent
/// sampling eight sensors every 5 ms (about 1,600 readings a second), then
/// checks the topic with kafka-python and the database point by point.
async fn whole_pipeline(dir: &std::path::Path, db: Database, format: Format) {
    let kafka = Kafka::start(&dir.join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "telemetry.dlq"]).await;
    let uplink = start_uplink(dir, &kafka.bootstrap(), "telemetry", &db);
    let mut agent = binaries::start(
        "edge-agent",
        dir,
        &agent_config(dir, &kafka.bootstrap(), format, 2, "5ms"),
    );
    wait_for_status(&agent, "journaled", READINGS, Duration::from_secs(90));
    let journaled = stop_agent_and_count(&mut agent, &dir.join("journal.redb"));

    // What an independent client finds on the topic: the record contract, and
    // every journaled reading.
    let readings = every_reading_on_topic(&kafka.bootstrap(), format, journaled);

    db.assert_holds_exactly(&readings, &uplink).await;
    stop_uplink(uplink, 0);
}
