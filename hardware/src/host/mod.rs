//! The host's own sensors, from Linux sysfs: CPU temperature and fans.
//!
//! - [`sysfs`]: finding devices by name and reading attributes under a
//!   configurable root (fixture trees in tests).
//! - [`cpu`]: the CPU temperature (sysinfo, hwmon, thermal zones).
//! - [`fan`]: fan speed, duty and cooling state.

pub mod cpu;
pub mod fan;
pub mod sysfs;

pub use cpu::CpuTemperature;
pub use fan::Fans;
