//! # Remote configuration over MQTT (work in progress, issue 7)
//!
//! - [`desired`]: a desired config payload: parsing, canonical bytes,
//!   ed25519 signatures, versions. Pure.
//! - [`overlay`]: the remotely settable keys laid over the local config and
//!   validated by the same checks as the file. Pure.
//! - [`store`]: the last accepted payload, replaced atomically on disk.
//!
//! Still to come: the `[mqtt]` config, the rumqttc client (desired and
//! reported state, status and Last Will, TLS), applying a config without
//! restarting the process with rollback, and `edge-agent sign-config`.

pub mod controller;
pub mod desired;
pub mod mqtt;
pub mod overlay;
pub mod settings;
pub mod state;
pub mod store;
