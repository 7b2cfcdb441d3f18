//! Simulated sensors, the default on every machine without instruments.
//!
//! Each quantity follows an Ornstein–Uhlenbeck process: a random walk pulled
//! back towards its mean with a time constant, which is how real weather and
//! machine temperatures wander. Successive readings are therefore correlated
//! (not uniform noise), and over long runs the values stay in a realistic band.
//! Air temperature adds a diurnal cycle, humidity falls as temperature rises,
//! and visibility is driven through the extinction coefficient, the quantity
//! a visibility sensor actually measures.

mod process;
mod sensors;

pub use process::OrnsteinUhlenbeck;
pub use sensors::{CpuTemperature, Fan, Visibility, Weather};
