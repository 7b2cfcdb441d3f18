//! End-to-end tests: the real binaries against real services on loopback,
//! asserting exact counts and values.
//!
//! - [`pipeline`]: sensors → journal → Tansu → uplink → VictoriaMetrics or
//!   InfluxDB 1.x; every journaled reading is in the database exactly once,
//!   with the values sampled, and kafka-python sees the record contract.
//! - [`offline`]: the agent journals with no broker, then catches up when the
//!   broker and its topic appear, without a restart.
//! - [`dead_letters`]: malformed records go to the dead-letter topic with
//!   their source offsets; good records from any supported format are written.
//! - [`forwarding`]: the broker killed while the agent samples fast, live
//!   readings overtaking a 200,000-reading backlog, and the bandwidth budget
//!   measured on the wire.
//! - [`journal`]: the journal under abuse: 50 SIGKILLs with zero loss of
//!   committed readings, each full-journal policy on a too-small disk, and
//!   damaged journal files quarantined, salvaged and forwarded.
//! - [`tls`]: forwarding over mutual TLS (socat in front of Tansu), the
//!   client key's password read from a file and never logged.
//! - [`dialects`]: InfluxDB 2 and 3, CnosDB and QuestDB against recording
//!   fakes: endpoint, auth, precision, gzip, and each database's refusals.
//! - [`uplink`]: mixed good and malformed records into VictoriaMetrics,
//!   InfluxDB and Redis at once; the
//!   uplink SIGKILLed mid-batch five times; the database stopped for a minute;
//!   two uplinks in one group, one killed. Exact point counts every time.
//! - [`group`]: the uplink and the broker: offsets the broker skips counted
//!   (Tansu resuming inside a record batch), and a second uplink joining the
//!   group taking only the partitions that move (cooperative rebalancing).
//! - [`sensors`]: `edge-agent sensors` and a running agent against fixture
//!   sysfs trees (Raspberry Pi 4 and 5, x86) and a simulated Vaisala PWD on a
//!   pseudo-terminal: exact values, named failures, a silent sensor skipped,
//!   counted and picked up again while the others carry on.
//! - [`layers`]: remote config in layers (fleet, one per label, the
//!   device's own) merged in order, a bad layer refused whole, the layers
//!   back from disk after a restart with no broker.
//! - [`fleet`]: `buoy-fleet` against twelve agents: status, a canary
//!   rollout stopped by a rejection and by bad health, then completed, and
//!   a rollback.
//! - [`demo`]: `scripts/demo` tells its story (outage, drain, every reading
//!   counted) and exits with the check; on a terminal (tmux) its panel is
//!   redrawn in place.
//! - [`dashboards`]: every Grafana dashboard query run against a real
//!   pipeline (readings and both binaries' scraped metrics) returns data.
//! - [`acl`]: the shipped mosquitto ACL: a device cannot publish another
//!   device's config (or read its topics).
//! - [`fleet_page`]: `buoy-fleet serve` in headless Chromium while agents
//!   go offline and come back; its metrics and JSON.
//! - [`fleet_scale`]: 5,000 devices' retained states: `status --json` lists
//!   them all, `serve` holds them in at most 64 MiB.
//! - [`trials`]: a trial config pointing `kafka.brokers` at a dead address
//!   reverts by itself, across a SIGKILL in the middle, with no reading
//!   lost; a working trial is confirmed and stays.
//! - [`remote_config`]: desired configs over MQTT (mosquitto with TLS and
//!   passwords) applied in place, refused whole, signed, rolled back, stored
//!   across restarts; broker restarts; 10,000 hostile payloads.
//! - [`cli`]: `--help`, and `check-config` reporting problems by line.
//! - [`operations`]: `edge-agent status` against a running agent and none,
//!   the metrics endpoint, and the systemd watchdog seeing a stalled loop.
//! - [`clock`]: readings taken before the clock was set reach Kafka with
//!   corrected timestamps; those of a boot that never synced are tagged.
//! - [`deployment`]: the systemd units' security exposure, the .deb packages
//!   installed into a scratch root and upgraded, the arm64 binary under
//!   qemu.

mod acl;
mod cli;
mod clock;
mod common;
mod dashboards;
mod dead_letters;
mod demo;
mod deployment;
mod dialects;
mod fleet;
mod fleet_page;
mod fleet_scale;
mod forwarding;
mod group;
mod journal;
mod layers;
mod offline;
mod operations;
mod pipeline;
mod remote_config;
mod sensors;
mod tls;
mod trials;
mod uplink;
