//! The driver against embedded-hal-mock, replaying the chip's transactions:
//! chip id, reset, calibration, then forced measurements.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

use super::driver::*;
use super::*;

const ADDR: u8 = 0x76;

/// The BMP280 datasheet's worked-example calibration (section 3.12) as the
/// chip holds it in registers 0x88..=0xA1, little-endian, with dig_H1 = 75.
fn calib_tp() -> Vec<u8> {
    let words: [i32; 12] = [
        27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
    ];
    let mut bytes: Vec<u8> = words
        .iter()
        .flat_map(|&w| (w as u16).to_le_bytes())
        .collect();
    bytes.extend([0x00, 75]);
    bytes
}

/// Humidity trimming of a BME280 (0xE1..=0xE7): H2 = 362, H3 = 0, H4 = 319,
/// H5 = 50, H6 = 30.
const CALIB_H: [u8; 7] = [0x6A, 0x01, 0x00, 0x13, 0x2F, 0x03, 0x1E];

/// adc_P = 415148, adc_T = 519888 (the worked example), adc_H = 0x7A00.
const DATA: [u8; 8] = [0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x7A, 0x00];

fn init(chip_id: u8) -> Vec<T> {
    let mut t = vec![
        T::write_read(ADDR, vec![REG_CHIP_ID], vec![chip_id]),
        T::write(ADDR, vec![REG_RESET, RESET_COMMAND]),
        // Still copying its NVM once, then ready.
        T::write_read(ADDR, vec![REG_STATUS], vec![0x01]),
        T::write_read(ADDR, vec![REG_STATUS], vec![0x00]),
        T::write_read(ADDR, vec![REG_CALIB_TP], calib_tp()),
    ];
    if chip_id == 0x60 {
        t.push(T::write_read(ADDR, vec![REG_CALIB_H], CALIB_H.to_vec()));
    }
    t.push(T::write(ADDR, vec![REG_CONFIG, 0]));
    t
}

fn measure(humidity: bool, data: &[u8]) -> Vec<T> {
    let mut t = Vec::new();
    if humidity {
        t.push(T::write(ADDR, vec![REG_CTRL_HUM, CTRL_HUM_X1]));
    }
    t.extend([
        T::write(ADDR, vec![REG_CTRL_MEAS, CTRL_MEAS_FORCED]),
        // Still measuring at the first poll.
        T::write_read(ADDR, vec![REG_STATUS], vec![0x08]),
        T::write_read(ADDR, vec![REG_STATUS], vec![0x00]),
        T::write_read(ADDR, vec![REG_DATA], data.to_vec()),
    ]);
    t
}

#[test]
fn a_bme280_measures_the_datasheet_example_to_its_stated_precision() {
    let mut expected = init(0x60);
    expected.extend(measure(true, &DATA));
    expected.extend(measure(true, &DATA));
    let mut i2c = Mock::new(&expected);
    let mut chip = Bme280::new(i2c.clone(), NoopDelay, ADDR).unwrap();
    assert_eq!(chip.chip(), Chip::Bme280);
    let c = *chip.calibration();
    assert_eq!(
        (c.t1, c.t3, c.p1, c.p9, c.h1, c.h4, c.h5),
        (27504, -1000, 36477, 6000, 75, 319, 50)
    );
    for _ in 0..2 {
        let m = chip.measure().unwrap();
        // 25.08 °C (0.01 °C resolution) and 100653.27 Pa (Q24.8).
        assert_eq!(m.temperature_c, 25.08);
        // 100653.254 Pa, Bosch's 64-bit routine (see compensation.rs).
        assert_eq!(m.pressure_hpa, 25_767_233.0 / 256.0 / 100.0);
        assert!((m.pressure_hpa - 1006.5327).abs() < 0.0002);
        // Bosch's int32 humidity routine, run separately (a Python
        // transcription) for adc_H = 0x7A00 at t_fine 128422: 61143 in
        // Q22.10, 59.71 %RH.
        assert_eq!(m.humidity_pct, Some(61_143.0 / 1024.0));
    }
    i2c.done();
}

#[test]
fn a_bmp280_has_no_humidity_and_reads_six_data_bytes() {
    let mut expected = init(0x58);
    expected.extend(measure(false, &DATA[..6]));
    let mut i2c = Mock::new(&expected);
    let mut chip = Bme280::new(i2c.clone(), NoopDelay, ADDR).unwrap();
    let m = chip.measure().unwrap();
    assert_eq!((m.temperature_c, m.humidity_pct), (25.08, None));
    let obs = observation(m);
    assert_eq!(obs.float("pressure_hpa"), Some(m.pressure_hpa));
    assert_eq!(obs.fields.len(), 2);
    i2c.done();
}

#[test]
fn another_chip_at_the_address_is_named() {
    let expected = [T::write_read(ADDR, vec![REG_CHIP_ID], vec![0x61])];
    let mut i2c = Mock::new(&expected);
    let e = Bme280::new(i2c.clone(), NoopDelay, ADDR).err().unwrap();
    assert!(e.to_string().contains("0x61"), "{e}");
    assert!(matches!(to_sensor_error(e), SensorError::WrongDevice(_)));
    i2c.done();
}

#[test]
fn a_nack_on_the_address_is_a_nack() {
    let expected = [T::write_read(ADDR, vec![REG_CHIP_ID], vec![0])
        .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))];
    let mut i2c = Mock::new(&expected);
    let e = to_sensor_error(Bme280::new(i2c.clone(), NoopDelay, ADDR).err().unwrap());
    assert!(matches!(e, SensorError::Nack(_)), "{e}");
    assert!(e.hint(SensorKind::Bme280).unwrap().contains("0x76 or 0x77"));
    i2c.done();
}

#[test]
fn a_nack_or_bus_error_mid_measurement_fails_that_reading_only() {
    let mut expected = init(0x60);
    expected.push(
        T::write(ADDR, vec![REG_CTRL_HUM, CTRL_HUM_X1])
            .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)),
    );
    expected.push(T::write(ADDR, vec![REG_CTRL_HUM, CTRL_HUM_X1]));
    expected.push(T::write(ADDR, vec![REG_CTRL_MEAS, CTRL_MEAS_FORCED]));
    expected.push(T::write_read(ADDR, vec![REG_STATUS], vec![0x00]));
    expected.push(T::write_read(ADDR, vec![REG_DATA], DATA.to_vec()).with_error(ErrorKind::Bus));
    expected.extend(measure(true, &DATA));
    let mut i2c = Mock::new(&expected);
    let mut chip = Bme280::new(i2c.clone(), NoopDelay, ADDR).unwrap();
    assert!(matches!(
        to_sensor_error(chip.measure().unwrap_err()),
        SensorError::Nack(_)
    ));
    assert!(matches!(
        to_sensor_error(chip.measure().unwrap_err()),
        SensorError::Bus(_)
    ));
    assert_eq!(chip.measure().unwrap().temperature_c, 25.08);
    i2c.done();
}

#[test]
fn skipped_measurements_zeroed_calibration_and_a_stuck_conversion_are_errors() {
    // A chip reset between configuration and read returns 0x80000.
    let mut expected = init(0x60);
    expected.extend(measure(
        true,
        &[0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00],
    ));
    expected.push(T::write(ADDR, vec![REG_CTRL_HUM, CTRL_HUM_X1]));
    expected.push(T::write(ADDR, vec![REG_CTRL_MEAS, CTRL_MEAS_FORCED]));
    for _ in 0..50 {
        expected.push(T::write_read(ADDR, vec![REG_STATUS], vec![0x08]));
    }
    let mut i2c = Mock::new(&expected);
    let mut chip = Bme280::new(i2c.clone(), NoopDelay, ADDR).unwrap();
    let e = to_sensor_error(chip.measure().unwrap_err());
    assert!(
        matches!(e, SensorError::Garbage(_)) && e.to_string().contains("0x80000"),
        "{e}"
    );
    assert!(matches!(
        to_sensor_error(chip.measure().unwrap_err()),
        SensorError::Timeout(_)
    ));
    i2c.done();

    let expected = [
        T::write_read(ADDR, vec![REG_CHIP_ID], vec![0x58]),
        T::write(ADDR, vec![REG_RESET, RESET_COMMAND]),
        T::write_read(ADDR, vec![REG_STATUS], vec![0x00]),
        T::write_read(ADDR, vec![REG_CALIB_TP], vec![0; 26]),
    ];
    let mut i2c = Mock::new(&expected);
    let e = Bme280::new(i2c.clone(), NoopDelay, ADDR).err().unwrap();
    assert!(e.to_string().contains("all zeros"), "{e}");
    i2c.done();
}

#[tokio::test]
async fn opening_a_missing_bus_names_it() {
    let mut config =
        SensorConfig::new("env", SensorKind::Bme280, std::time::Duration::from_secs(1));
    config.bus = Some("/nonexistent/i2c-9".into());
    let e = Bme280Sensor::open(&config).await.err().unwrap();
    assert!(matches!(e, SensorError::Open { .. }));
    assert!(
        e.to_string().starts_with("cannot open /nonexistent/i2c-9:"),
        "{e}"
    );
}
