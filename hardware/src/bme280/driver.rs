//! The BME280/BMP280 driver, generic over any embedded-hal 1.0 I²C bus and
//! delay, so it runs the same on Linux (`I2cdev`), a microcontroller, or
//! embedded-hal-mock in tests.
//!
//! Each measurement is a one-shot "forced mode" conversion with 1×
//! oversampling and the IIR filter off (the datasheet's "weather monitoring"
//! setting): the chip sleeps between readings and does not self-heat.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c};

use super::compensation::Calibration;

pub const REG_CHIP_ID: u8 = 0xD0;
pub const REG_RESET: u8 = 0xE0;
pub const REG_CALIB_TP: u8 = 0x88;
pub const REG_CALIB_H: u8 = 0xE1;
pub const REG_CTRL_HUM: u8 = 0xF2;
pub const REG_STATUS: u8 = 0xF3;
pub const REG_CTRL_MEAS: u8 = 0xF4;
pub const REG_CONFIG: u8 = 0xF5;
pub const REG_DATA: u8 = 0xF7;

pub const RESET_COMMAND: u8 = 0xB6;
/// ctrl_meas: osrs_t = 001 (×1), osrs_p = 001 (×1), mode = 01 (forced).
pub const CTRL_MEAS_FORCED: u8 = (0b001 << 5) | (0b001 << 2) | 0b01;
/// ctrl_hum: humidity ×1.
pub const CTRL_HUM_X1: u8 = 0b001;
const STATUS_MEASURING: u8 = 0b1000;
const STATUS_IM_UPDATE: u8 = 0b0001;
/// Datasheet appendix B: 1.25 + 2.3 + (2.3 + 0.575) × 2 ms at 1× each.
const MEASUREMENT_US: u32 = 9_300;
/// Status polls before giving up on a conversion (1 ms apart).
const MAX_POLLS: u32 = 50;
/// A channel that was skipped, or a chip that was reset mid-conversion.
const SKIPPED_20BIT: i32 = 0x80000;
const SKIPPED_16BIT: i32 = 0x8000;

/// Which chip answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chip {
    /// Pressure, temperature and humidity.
    Bme280,
    /// Pressure and temperature.
    Bmp280,
}

impl Chip {
    pub fn from_id(id: u8) -> Option<Chip> {
        match id {
            0x60 => Some(Chip::Bme280),
            // 0x56 and 0x57 are engineering samples.
            0x56..=0x58 => Some(Chip::Bmp280),
            _ => None,
        }
    }
}

/// One compensated measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub temperature_c: f64,
    pub pressure_hpa: f64,
    /// `None` on a BMP280.
    pub humidity_pct: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::fmt::Debug> {
    #[error("I²C: {kind} ({error:?})")]
    Bus { kind: ErrorKind, error: E },
    #[error("chip id {0:#04x} is neither a BME280 (0x60) nor a BMP280 (0x58)")]
    WrongChip(u8),
    #[error("calibration data reads as {0}: the chip did not answer properly")]
    BadCalibration(&'static str),
    #[error("the conversion did not finish within {0} ms")]
    NotReady(u32),
    #[error("the chip returned a skipped measurement (raw {0:#x}): was it reset?")]
    Skipped(i32),
}

/// A BME280 or BMP280 at one address.
pub struct Bme280<I, D> {
    i2c: I,
    delay: D,
    address: u8,
    chip: Chip,
    calibration: Calibration,
}

impl<I: I2c, D: DelayNs> Bme280<I, D>
where
    I::Error: std::fmt::Debug,
{
    /// Checks the chip id, resets the chip and reads its calibration.
    pub fn new(mut i2c: I, mut delay: D, address: u8) -> Result<Self, Error<I::Error>> {
        let mut id = [0];
        read(&mut i2c, address, REG_CHIP_ID, &mut id)?;
        let chip = Chip::from_id(id[0]).ok_or(Error::WrongChip(id[0]))?;
        write(&mut i2c, address, REG_RESET, RESET_COMMAND)?;
        // Start-up takes 2 ms; then the NVM is copied to the registers.
        delay.delay_ms(2);
        let mut status = [STATUS_IM_UPDATE];
        for _ in 0..MAX_POLLS {
            read(&mut i2c, address, REG_STATUS, &mut status)?;
            if status[0] & STATUS_IM_UPDATE == 0 {
                break;
            }
            delay.delay_ms(1);
        }
        let mut tp = [0; 26];
        read(&mut i2c, address, REG_CALIB_TP, &mut tp)?;
        let mut h = [0; 7];
        let h = if chip == Chip::Bme280 {
            read(&mut i2c, address, REG_CALIB_H, &mut h)?;
            Some(&h)
        } else {
            None
        };
        let calibration = Calibration::parse(&tp, h);
        if !calibration.is_plausible() {
            return Err(Error::BadCalibration(if tp.iter().all(|&b| b == 0) {
                "all zeros"
            } else {
                "impossible values"
            }));
        }
        // Filter off, and the standby time does not matter in forced mode.
        write(&mut i2c, address, REG_CONFIG, 0)?;
        Ok(Bme280 {
            i2c,
            delay,
            address,
            chip,
            calibration,
        })
    }

    pub fn chip(&self) -> Chip {
        self.chip
    }

    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Runs one forced conversion and compensates it.
    pub fn measure(&mut self) -> Result<Measurement, Error<I::Error>> {
        let a = self.address;
        if self.chip == Chip::Bme280 {
            // ctrl_hum takes effect only with the next write to ctrl_meas.
            write(&mut self.i2c, a, REG_CTRL_HUM, CTRL_HUM_X1)?;
        }
        write(&mut self.i2c, a, REG_CTRL_MEAS, CTRL_MEAS_FORCED)?;
        self.delay.delay_us(MEASUREMENT_US);
        let mut status = [0];
        let mut polls = 0;
        loop {
            read(&mut self.i2c, a, REG_STATUS, &mut status)?;
            if status[0] & STATUS_MEASURING == 0 {
                break;
            }
            polls += 1;
            if polls == MAX_POLLS {
                return Err(Error::NotReady(MEASUREMENT_US / 1000 + MAX_POLLS));
            }
            self.delay.delay_ms(1);
        }
        let mut data = [0; 8];
        let len = if self.chip == Chip::Bme280 { 8 } else { 6 };
        read(&mut self.i2c, a, REG_DATA, &mut data[..len])?;
        let adc_p =
            (i32::from(data[0]) << 12) | (i32::from(data[1]) << 4) | i32::from(data[2] >> 4);
        let adc_t =
            (i32::from(data[3]) << 12) | (i32::from(data[4]) << 4) | i32::from(data[5] >> 4);
        let adc_h = (i32::from(data[6]) << 8) | i32::from(data[7]);
        for (raw, skipped) in [(adc_t, SKIPPED_20BIT), (adc_p, SKIPPED_20BIT)] {
            if raw == skipped {
                return Err(Error::Skipped(raw));
            }
        }
        if self.chip == Chip::Bme280 && adc_h == SKIPPED_16BIT {
            return Err(Error::Skipped(adc_h));
        }
        let c = &self.calibration;
        let t_fine = c.t_fine(adc_t);
        let pressure = c
            .pressure(t_fine, adc_p)
            .ok_or(Error::BadCalibration("dig_P1 = 0"))?;
        Ok(Measurement {
            temperature_c: f64::from(Calibration::temperature(t_fine)) / 100.0,
            pressure_hpa: f64::from(pressure) / 256.0 / 100.0,
            humidity_pct: (self.chip == Chip::Bme280)
                .then(|| f64::from(c.humidity(t_fine, adc_h)) / 1024.0),
        })
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }
}

fn read<I: I2c>(
    i2c: &mut I,
    address: u8,
    register: u8,
    buf: &mut [u8],
) -> Result<(), Error<I::Error>>
where
    I::Error: std::fmt::Debug,
{
    i2c.write_read(address, &[register], buf)
        .map_err(|error| Error::Bus {
            kind: error.kind(),
            error,
        })
}

fn write<I: I2c>(i2c: &mut I, address: u8, register: u8, value: u8) -> Result<(), Error<I::Error>>
where
    I::Error: std::fmt::Debug,
{
    i2c.write(address, &[register, value])
        .map_err(|error| Error::Bus {
            kind: error.kind(),
            error,
        })
}
