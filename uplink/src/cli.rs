//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Buoy uplink: drains Kafka topics into time-series databases over line
/// protocol (InfluxDB 1/2/3, VictoriaMetrics, CnosDB, QuestDB) and the latest
/// value of each series into Redis. Offsets are committed only after every
/// database has accepted the data; records that can never be written go to a
/// dead-letter topic instead of stalling their partition. Metrics (lag,
/// lines/s, batch latency, retries, dead letters) are served at
/// http://127.0.0.1:9274/metrics unless `metrics.listen` says otherwise.
#[derive(Debug, Parser)]
#[command(name = "uplink", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Config file (TOML). Without this option /etc/buoy/uplink.toml is read
    /// if it exists, else built-in defaults are used.
    #[arg(short, long, global = true, env = "BUOY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume and write until SIGTERM or SIGINT (the default).
    Run,
    /// Check the config file and environment overrides, print every problem
    /// with its line number, and exit non-zero if there is any.
    CheckConfig {
        /// Also print the effective config as TOML.
        #[arg(long)]
        print: bool,
    },
}

const AFTER_HELP: &str = "\
Environment:
  BUOY_<SECTION>_<KEY>   override a scalar config key, e.g.
                         BUOY_KAFKA_BROKERS=a:9092,b:9092, BUOY_KAFKA_TOPICS=telemetry,oceanic
  RUST_LOG               log filter (default: info)
  CREDENTIALS_DIRECTORY  where relative password_file and token_file names are
                         looked up (systemd's LoadCredential=)

Signals:
  SIGTERM, SIGINT        stop consuming, give the batch in hand retry.shutdown_grace
                         to be written, commit what was written and exit 0; a
                         second signal exits at once (uncommitted records are
                         read again on the next start)

Exit status:
  0 clean stop, 1 runtime failure, 2 invalid config";
