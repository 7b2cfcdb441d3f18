//! Vaisala PWD-family present-weather sensors (PWD10 to PWD52, and FD12P's
//! framing) on a serial port, polled for message 2.
//!
//! - [`protocol`]: the poll command, frame finder and message parser; pure.
//! - this module: the [`Sensor`] on a tokio-serial port.
//! - [`simulator`]: a PWD on a pseudo-terminal pair, for tests and for
//!   trying the agent without an instrument.
//!
//! Each read clears the port's input, sends the poll and waits up to
//! `answer_timeout` for this unit's frame. Noise before a frame is skipped;
//! a frame that cannot be read, a partial frame followed by silence, or no
//! answer at all fails the reading (the supervisor then re-opens the port).
//! Frames from other units on a shared RS-485 line are ignored.

pub mod protocol;
pub mod simulator;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::config::SensorConfig;
use crate::sensor::{Observation, Sensor, SensorError, SensorKind};
use protocol::Scan;

/// A PWD on a serial port.
pub struct PwdSensor {
    port: SerialStream,
    unit_id: String,
    answer_timeout: Duration,
    buf: Vec<u8>,
}

impl PwdSensor {
    /// Opens the port (8 data bits, no parity, 1 stop bit: the PWD's only
    /// framing).
    pub fn open(config: &SensorConfig) -> Result<Self, SensorError> {
        let path = config.port.clone().unwrap_or_default();
        let path = path.to_string_lossy();
        let port = tokio_serial::new(path.as_ref(), config.baud())
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
            .map_err(|e| SensorError::Open {
                device: path.to_string(),
                source: e.into(),
            })?;
        Ok(PwdSensor {
            port,
            unit_id: config.unit_id().trim().to_owned(),
            answer_timeout: config.answer_timeout(),
            buf: Vec::with_capacity(protocol::MAX_FRAME),
        })
    }

    /// Waits for this unit's next frame.
    async fn answer(&mut self) -> Result<String, SensorError> {
        let deadline = tokio::time::Instant::now() + self.answer_timeout;
        let mut chunk = [0u8; 128];
        let mut received = 0;
        let mut other_unit = None;
        loop {
            match protocol::scan(&mut self.buf) {
                Scan::Frame { id, body } if id == self.unit_id => return Ok(body),
                Scan::Frame { id, .. } => {
                    other_unit = Some(id);
                    continue;
                }
                Scan::Broken(why) => return Err(SensorError::Garbage(why)),
                Scan::Incomplete => {}
            }
            let n = match tokio::time::timeout_at(deadline, self.port.read(&mut chunk)).await {
                Ok(read) => read?,
                Err(_) if !self.buf.is_empty() => {
                    return Err(SensorError::Garbage(format!(
                        "a partial frame ({} bytes), then nothing for {:?}",
                        self.buf.len(),
                        self.answer_timeout
                    )));
                }
                Err(_) if received > 0 && other_unit.is_none() => {
                    return Err(SensorError::Garbage(format!(
                        "{received} bytes that hold no PWD frame (wrong baud rate?)"
                    )));
                }
                Err(_) => {
                    if let Some(id) = other_unit {
                        tracing::debug!(unit = %id, "only another unit answered");
                    }
                    return Err(SensorError::Timeout(self.answer_timeout));
                }
            };
            received += n;
            if n == 0 {
                return Err(SensorError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the serial port was closed",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[async_trait::async_trait]
impl Sensor for PwdSensor {
    fn kind(&self) -> SensorKind {
        SensorKind::Pwd
    }

    async fn read(&mut self) -> Result<Vec<Observation>, SensorError> {
        // Whatever arrived since the last poll is stale.
        self.port
            .clear(tokio_serial::ClearBuffer::Input)
            .map_err(std::io::Error::from)?;
        self.buf.clear();
        self.port
            .write_all(&protocol::poll_command(&self.unit_id))
            .await?;
        let body = self.answer().await?;
        let obs =
            protocol::parse_message2(&body).map_err(|e| SensorError::Garbage(e.to_string()))?;
        Ok(vec![obs])
    }
}
