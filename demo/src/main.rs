//! `buoy-demo-kafka`: a Kafka-protocol broker on a loopback TCP port, for
//! `scripts/demo` on a machine where the Tansu broker is not built yet (its
//! build takes about 20 minutes; this one comes with librdkafka, which the
//! agent and the uplink link anyway).
//!
//! It is librdkafka's mock cluster: one broker, in memory, speaking the
//! Kafka protocol to the agent and the uplink, which run as their own
//! processes and connect over TCP as they would to any broker.
//!
//! It prints the bootstrap address as the first line of stdout, then reads
//! commands on stdin, one per line:
//!
//!   down   stop the broker: connections are closed and new ones refused
//!   up     start it again, with every record it held
//!
//! It exits when stdin closes (the demo ended, or died).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use rdkafka::mocking::MockCluster;

const BROKER: i32 = 1;
const USAGE: &str = "usage: buoy-demo-kafka TOPIC...

Runs librdkafka's mock cluster (one broker, in memory) on a loopback port,
with each TOPIC created (one partition), and prints its bootstrap address.
Then reads `down` (stop the broker) and `up` (start it again) on stdin, one
per line, and exits when stdin closes. Used by scripts/demo while the Tansu
broker is not built.";

fn main() -> ExitCode {
    let topics: Vec<String> = std::env::args().skip(1).collect();
    if topics.is_empty() || topics.iter().any(|t| t.starts_with('-')) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let cluster = match MockCluster::new(1) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("buoy-demo-kafka: cannot start librdkafka's mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    for topic in &topics {
        if let Err(e) = cluster.create_topic(topic, 1, 1) {
            eprintln!("buoy-demo-kafka: cannot create topic {topic}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}", cluster.bootstrap_servers());
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let outcome = match line.trim() {
            "down" => cluster.broker_down(BROKER),
            "up" => cluster.broker_up(BROKER),
            "" => continue,
            other => {
                eprintln!("buoy-demo-kafka: unknown command {other:?} (down, up)");
                continue;
            }
        };
        match outcome {
            Ok(()) => println!("{}", line.trim()),
            Err(e) => eprintln!("buoy-demo-kafka: {}: {e}", line.trim()),
        }
        let _ = std::io::stdout().flush();
    }
    ExitCode::SUCCESS
}
