//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Buoy edge agent: samples sensors into a durable on-device journal and
/// forwards every reading to Kafka, deleting it from the journal only once
/// Kafka has acknowledged it. Runs with no config file at all (simulated
/// sensors, Kafka at localhost:9092).
#[derive(Debug, Parser)]
#[command(name = "edge-agent", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Config file (TOML). Without this option /etc/buoy/edge-agent.toml is
    /// read if it exists, else built-in defaults are used.
    #[arg(short, long, global = true, env = "BUOY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample, journal and forward until SIGTERM or SIGINT (the default).
    Run(RunArgs),
    /// Check the config file and environment overrides, print every problem
    /// with its line number, and exit non-zero if there is any.
    CheckConfig {
        /// Also print the effective config (file, defaults and environment
        /// combined) as TOML.
        #[arg(long)]
        print: bool,
    },
    /// Ask the running agent (over its status socket, status.socket) what it
    /// is doing: Kafka link, backlog and its age, journal size against its
    /// limit, dropped readings, sensor health, config version, clock, last
    /// error. Exit 0 when healthy, 1 when something needs looking at (link
    /// down, a sensor failing, the journal full), 3 when no agent answers:
    /// usable as a health check.
    Status {
        /// Print the agent's answer as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Open every enabled sensor once and print its reading (as line
    /// protocol) or the exact error, with a hint; exit 1 if any failed. The
    /// first thing to run on a new device. Stop the agent first: it holds
    /// the serial ports.
    Sensors {
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Look into the journal without consuming it. Stop the agent first: the
    /// journal is opened as the agent opens it (repaired after a crash, moved
    /// aside and salvaged if damaged).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Sign a desired config (JSON with a "version") for devices whose
    /// mqtt.config_public_key is set, and print it, ready to publish
    /// retained on buoy/<device_id>/config. Make a key pair with
    /// `openssl genpkey -algorithm ed25519 -out config-signing.pem` and
    /// `openssl pkey -in config-signing.pem -pubout`.
    SignConfig {
        /// The ed25519 private key, PKCS#8 PEM.
        #[arg(long, value_name = "PEM")]
        key: PathBuf,
        /// Write the signed config here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The desired config to sign (JSON); `-` reads stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// `edge-agent run`.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// After every journal commit, write the highest committed sequence
    /// number to FILE as one line (a file, a FIFO or a serial port; opened
    /// for appending, created if missing). A number is written only once the
    /// commit is on disk (fsync returned), so each line is a promise that
    /// every reading up to that number survives a power cut: what the
    /// power-cut test checks, and a feed for an external watchdog.
    #[arg(long, value_name = "FILE")]
    pub report_commits: Option<PathBuf>,
    /// On a clean stop, write the agent's final state to FILE (the JSON of
    /// `edge-agent status --json`, without `problems`): what this run
    /// sampled, journaled, forwarded and dropped, counted after the last
    /// commit. Replaced whole, never left half-written.
    #[arg(long, value_name = "FILE")]
    pub report_state: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Records waiting (readings and aggregates), sequence numbers, oldest
    /// and newest reading times, file size against journal.max_bytes, and
    /// how many readings were dropped, refused or aggregated because the
    /// journal was full, and salvaged from damaged files.
    Stats {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write every waiting reading to stdout, oldest first, one per line;
    /// nothing is removed. Damaged records are reported on stderr and
    /// skipped.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Influx)]
        format: ExportFormat,
        /// Start each line with the reading's journal sequence number (the
        /// buoy-seq header it is sent to Kafka with) and a tab.
        #[arg(long)]
        with_seq: bool,
    },
}

/// `journal export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Influx line protocol, as journaled.
    Influx,
    /// Telegraf JSON, one metric per line.
    Json,
}

const AFTER_HELP: &str = "\
Environment:
  BUOY_<SECTION>_<KEY>   override a scalar config key, e.g. BUOY_DEVICE_ID=pi-7,
                         BUOY_KAFKA_BROKERS=a:9092,b:9092, BUOY_JOURNAL_COMMIT_INTERVAL=2s
  RUST_LOG               log filter (default: info), e.g. RUST_LOG=debug
  STATE_DIRECTORY        default journal directory (set by systemd's StateDirectory=)
  NOTIFY_SOCKET, WATCHDOG_USEC
                         set by systemd (Type=notify, WatchdogSec=): the agent reports
                         readiness and pings the watchdog from its main loop
  CREDENTIALS_DIRECTORY  where relative [kafka.security] secret files are looked up
                         (set by systemd's LoadCredential=)

Sensors: [[sensor]] kind = \"bme280\" (bus, address), \"pwd\" (port, baud, unit_id),
\"cpu_temperature\" and \"fan\" (sysfs_root), or simulated_*; every kind takes interval,
limits = { field = [min, max] } and max_reopen_delay. A failing sensor is skipped and
re-opened with backoff while the others carry on; `edge-agent sensors` checks them all.

Forwarding: fresh readings go to Kafka first and the backlog drains behind them
([forward] order = \"live_first\", or \"fifo\"); [forward] max_bytes_per_sec caps the
bytes on the wire and send_windows = [\"01:00-05:00\"] limits sending to local times
of day. TLS and SASL go in [kafka.security]; secrets are read from files. A Kafka
producer session is replaced by a fresh one when the connection to the brokers is
lost, when Kafka refuses readings three times in a row, or when Kafka answers but
acknowledges nothing for [forward] renew_after (60s); unacknowledged readings stay
in the journal, and the renewals are counted in the status.

Remote config ([mqtt] enabled = true, url = \"mqtts://broker:8883\"): desired configs
arrive retained on buoy/<device_id>/config as JSON (the remotely settable keys of this
file plus \"version\", which only increases); each is checked, stored next to the journal
and applied without a restart, or rejected with a reason and nothing changed. State is
reported retained on buoy/<device_id>/state, online/offline on buoy/<device_id>/status.
With mqtt.config_public_key set, only configs signed by `edge-agent sign-config` apply.

Clock: readings are stamped with the wall time, the time since boot and whether the
clock is synchronised (adjtimex; NTP running). Readings taken before it is (a Pi
without RTC) wait in the journal up to forward.hold_unsynced and are sent with
timestamps corrected from the time since boot; those that cannot be corrected (a
boot that never synced) are tagged clock=\"unsynced\". Kafka headers buoy-boot,
buoy-mono and buoy-clock carry the stamps.

Operating: `edge-agent status` asks the running agent (exit 0 healthy, 1 problems,
3 not running); [metrics] listen = \"127.0.0.1:9275\" serves Prometheus metrics
(off by default).

Signals:
  SIGTERM, SIGINT        stop sampling, wait briefly for Kafka acknowledgements,
                         commit the journal and exit 0; a second signal exits at once

Exit status:
  0 clean stop, 1 runtime failure (or the journal is in use or unreadable; for
  `sensors`, a sensor failed; for `status`, the agent reports problems),
  2 invalid config, 3 (`status`) no agent answers";
