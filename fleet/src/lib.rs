//! # buoy-fleet
//!
//! The datacentre's view of the edge agents, from nothing but the MQTT
//! broker they already use: their retained status and state, and their
//! config layers.
//!
//! - [`settings`]: `/etc/buoy/fleet.toml` and `--mqtt`.
//! - [`broker`]: the MQTT session: subscribe, retained messages to the
//!   last, follow, publish.
//! - [`view`]: the fleet from those messages, and each device's problems.
//!   Pure.
//! - [`status`]: `buoy-fleet status` rows, table and JSON. Pure.
//! - [`rollout`]: the decisions of a push: target, version, answers,
//!   canary health, history. Pure.
//! - [`push`]: the rollout loop (canaries, soak, publish, follow).
//! - [`serve`], [`page`]: the live fleet page, `/api/devices`, `/metrics`.
//! - [`commands`]: each command's run.

pub mod broker;
pub mod cli;
pub mod commands;
pub mod page;
pub mod push;
pub mod rollout;
pub mod serve;
pub mod settings;
pub mod status;
pub mod view;
