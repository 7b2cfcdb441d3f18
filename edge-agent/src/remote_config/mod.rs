//! # Remote configuration over MQTT
//!
//! A desired config arrives retained in layers: fleet-wide on
//! `buoy/fleet/config`, one per label on `buoy/group/<key>/<value>/config`,
//! and the device's own on `buoy/<device_id>/config`. The layers are merged,
//! checked, stored and applied to the running pipeline without a restart,
//! or the new layer is rejected with a reason and nothing changed. The agent reports its state
//! on `buoy/<device_id>/state` and `online`/`offline` on
//! `buoy/<device_id>/status` (also its Last Will).
//!
//! - [`settings`]: `[mqtt]`, local only.
//! - [`desired`]: a desired config payload: parsing, canonical bytes,
//!   ed25519 signatures, versions. Pure.
//! - [`layer_file`]: a layer written as TOML (`buoy-fleet push`), checked
//!   by the agent's own checks with lines.
//! - [`layers`]: the layers, their topics, labels, the merge. Pure.
//! - [`overlay`]: the remotely settable keys laid over the local config and
//!   validated by the same checks as the file. Pure.
//! - [`store`]: the accepted layers (and a trial's previous ones), replaced
//!   atomically on disk.
//! - [`startup`]: the stored layers read and checked again at start.
//! - [`trial`]: when a trial config is confirmed or reverted. Pure.
//! - [`accepted`]: an accepted layer; the config a set of layers makes.
//! - [`controller`]: the decision on each payload, in order: parse,
//!   signature, version, validate, persist, apply (rolled back on failure),
//!   report.
//! - [`mqtt`]: the session: subscribe, publish state and status, reconnect.
//! - [`report`]: the config part of the reported state, per layer. Pure.
//! - [`state`]: the reported state.

pub mod accepted;
pub mod controller;
pub mod desired;
pub mod layer_file;
pub mod layers;
pub mod mqtt;
pub mod overlay;
pub mod report;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod trial;
