//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::rollout::Target;
use crate::view::StateFilter;

/// Buoy fleet: every edge agent on an MQTT broker at a glance, remote
/// configuration rolled out safely (validated, signed, canaries first),
/// and a live fleet page with Prometheus metrics. Needs nothing but the
/// broker the agents already use.
#[derive(Debug, Parser)]
#[command(name = "buoy-fleet", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// The MQTT broker: mqtt://host:port or mqtts://host:port. Overrides
    /// mqtt.url from the config file.
    #[arg(long, global = true, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Config file (TOML): [mqtt] with the agent's keys (url, username,
    /// password_file, ca_file, cert_file, key_file, client_id, keep_alive)
    /// and [serve] (listen, history). Default: /etc/buoy/fleet.toml if it
    /// exists.
    #[arg(
        short,
        long,
        global = true,
        env = "BUOY_FLEET_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every device seen on the broker (from its retained status and
    /// state): online or offline since when, agent version, the config
    /// layers running and the last decision on each, Kafka link, backlog and
    /// the age of its oldest reading, dropped readings, failing sensors,
    /// clock, labels; then each device's problems. Exit 0 when no selected
    /// device has a problem, 1 when one has: usable from cron or a
    /// monitoring check.
    Status {
        /// One JSON array, a row per device.
        #[arg(long)]
        json: bool,
        /// Keep the view live, redrawn every 2 s, until interrupted.
        #[arg(long)]
        watch: bool,
        /// Only devices with this label (key=value); repeat to require
        /// several.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
        label: Vec<(String, String)>,
        /// Only devices in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// How long to wait for the broker.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Validate a layer file (TOML: the remotely settable keys of the
    /// agent's config file) with the agent's own checks, sign it, publish it
    /// retained under the next version, and follow it until every targeted
    /// device has answered. Exit 0 when all accepted, 1 when any refused,
    /// reverted, turned unhealthy as a canary or did not answer, 2 when the
    /// file is invalid (each problem with its line).
    Push {
        /// The layer file.
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
        #[command(flatten)]
        rollout: RolloutArgs,
        /// Run it as a trial: each device reverts it by itself unless, within
        /// this time, it reaches MQTT and Kafka acknowledges a reading. Needed
        /// to change kafka.brokers or [kafka.security].
        #[arg(long, value_name = "DURATION")]
        trial: Option<String>,
    },
    /// Publish the layer's previous content (from the history push keeps
    /// on the broker) under a new version, and follow it like push.
    Rollback {
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Keep the fleet view live and serve it on [serve] listen
    /// (127.0.0.1:9276): a page with every device (sortable, filterable,
    /// coloured by state), a page per device with its state, layers and
    /// config history, /api/devices (JSON) and /metrics (Prometheus:
    /// buoy_device_online, buoy_device_backlog_readings,
    /// buoy_device_oldest_unsent_age_seconds, buoy_device_config_version,
    /// buoy_device_problems).
    Serve {
        /// Listen here instead of [serve] listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
}

/// Where a rollout goes and how.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// all (the fleet layer), KEY=VALUE (the group of devices with that
    /// label) or device:ID (one device's own layer).
    #[arg(long, value_name = "TARGET")]
    pub to: Target,
    /// The ed25519 private key (PKCS#8 PEM, as for `edge-agent
    /// sign-config`). Devices with mqtt.config_public_key refuse unsigned
    /// configs.
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// First give the config to this many of the targeted devices, as
    /// device-level overrides; go on only if they accept it and stay
    /// healthy for --soak (online, link up, no new problems, backlog not
    /// growing). Otherwise stop, put the canaries back and leave the rest
    /// untouched.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub canary: usize,
    /// How long the canaries must stay healthy.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub soak: Duration,
    /// How long to wait for the devices' answers (each phase).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A `--label` that is not `KEY=VALUE`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: a label is KEY=VALUE")]
pub struct BadLabel(String);

fn parse_label(s: &str) -> Result<(String, String), BadLabel> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(BadLabel(s.to_owned())),
    }
}

const AFTER_HELP: &str = "\
Topics (see the agent's README): buoy/fleet/config (every device),
buoy/group/<key>/<value>/config (devices with that label), buoy/<device_id>/config
(one device); devices report on buoy/<device_id>/state and buoy/<device_id>/status.
push keeps the history of each layer retained on buoy/fleet/history/<layer>, which
rollback reads. Let only the fleet's MQTT user write configs: see
docs/mosquitto-acl.conf.

Layer file example (the agent's keys and syntax):
  [forward]
  order = \"fifo\"
  [journal]
  max_bytes = \"128MiB\"

Environment:
  BUOY_FLEET_<SECTION>_<KEY>  override a config key, e.g. BUOY_FLEET_MQTT_URL
  RUST_LOG                    log filter (default: warn; serve: info)

Exit status:
  0 all well, 1 a device has a problem (status) or the rollout did not complete
  (push, rollback), 2 invalid arguments, file or config, or the broker cannot be
  reached";
