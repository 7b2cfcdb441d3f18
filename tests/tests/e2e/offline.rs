//! The agent with no broker: it keeps sampling and journaling, and catches up
//! when the broker and its topic appear, without a restart.

use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::process::free_port;
use telemetry::record::Format;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn readings_taken_while_offline_all_arrive_once_the_broker_starts() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    // The agent is pointed at a port where nothing listens yet.
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut agent = binaries::start(
        "edge-agent",
        dir.path(),
        &agent_config(dir.path(), &bootstrap, Format::Influx, 1, "10ms"),
    );
    let offline = wait_for_status(&agent, "journaled", 2_000, Duration::from_secs(60));
    let status = binaries::state_now(&agent);
    assert_eq!(
        status["forwarded"], 0,
        "nothing can have been forwarded yet"
    );
    assert_ne!(status["link"]["state"], "up");
    assert!(
        agent.is_running(),
        "the agent must keep running without a broker"
    );
    assert!(
        agent.log().contains("cannot reach Kafka"),
        "the agent should say clearly that Kafka is unreachable:\n{}",
        agent.log()
    );

    // The broker comes up; for a while its topic does not exist.
    let kafka = Kafka::start_on(port, &dir.path().join("kafka"), Storage::Memory);
    wait_for_log(&agent, "does not exist", Duration::from_secs(60));
    assert!(agent.is_running());
    kafka.create_topics(&["telemetry", "telemetry.dlq"]).await;

    let db = Database::victoria(dir.path());
    let uplink = start_uplink(dir.path(), &kafka.bootstrap(), "telemetry", &db);
    // The backlog drains while sampling goes on.
    let journaled_now = binaries::state_number(&binaries::state_now(&agent), "journaled");
    wait_for_status(&agent, "forwarded", journaled_now, Duration::from_secs(120));
    let journaled = stop_agent_and_count(&mut agent, &dir.path().join("journal.redb"));
    assert!(journaled > offline);

    let readings = every_reading_on_topic(&kafka.bootstrap(), Format::Influx, journaled);
    // Exactly as many points as readings: none lost, none twice.
    db.assert_holds_exactly(&readings, &uplink).await;
    stop_uplink(uplink, 0);
}

fn wait_for_log(service: &buoy_tests::process::Service, text: &str, timeout: Duration) {
    buoy_tests::process::wait_for(
        &format!("{} to log {text:?}", service.name),
        timeout,
        || service.log().contains(text).then_some(()),
        || service.log(),
    );
}
