//! # hardware: where readings come from
//!
//! A [`Sensor`] produces [`Observation`]s: a measurement name, the fields it
//! measured (named with their unit, e.g. `pressure_hpa`), and any tags of its
//! own (a fan's name). The edge agent's sampler adds the device and sensor
//! tags and the timestamp, which turns an observation into a reading.
//!
//! ## Layout
//! - [`sensor`]: the [`Sensor`] trait, [`Observation`], [`SensorError`], and
//!   [`SensorKind`], the `kind` values a config may name.
//! - [`simulated`]: simulated sensors for every quantity Buoy knows (the
//!   default, so everything runs on a laptop). Their values follow
//!   mean-reverting random walks with realistic time constants.
//!
//! ## Invariants
//! - Physical quantities are always `f64` fields, so a time-series database
//!   never sees an int/float conflict.
//! - `read` never blocks the async runtime: a driver doing blocking I/O does it
//!   on a blocking thread.

pub mod sensor;
pub mod simulated;

pub use sensor::{Observation, Sensor, SensorError, SensorKind, open};
