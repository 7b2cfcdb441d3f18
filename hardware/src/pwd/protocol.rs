//! The Vaisala PWD serial protocol for message 2, with no I/O: the poll
//! command, a frame finder that tolerates noise and fragments, and the
//! message body parser.
//!
//! Poll (PWD22 user's guide, "Message Polling"): `CR ENQ "PW " id " 2" CR`.
//! Answer: `SOH "PW" id STX body ETX CR LF`, where id is two characters
//! (`" 1"`), and the message 2 body is
//!
//! ```text
//! 00  1839  1505 R-  61 61 61  0.33 12.16    0
//! ││  │     │    │   │  │  │   │    │        └ cumulative snow sum, mm
//! ││  │     │    │   │  │  │   │    └ cumulative water sum, mm
//! ││  │     │    │   │  │  │   └ precipitation intensity (1 min), mm/h
//! ││  │     │    │   │  │  └ present weather code (1 h), WMO 4680
//! ││  │     │    │   │  └ present weather code (15 min)
//! ││  │     │    │   └ present weather code (instant)
//! ││  │     │    └ present weather (instant), NWS code
//! ││  │     └ visibility, 10-minute average, m
//! ││  └ visibility, 1-minute average, m
//! │└ hardware status: 0 ok, 1 error, 2 warning, 3 backscatter alarm, 4 backscatter warning
//! └ visibility alarm: 0 none, 1 to 3
//! ```
//!
//! A value the sensor cannot give yet is sent as slashes (`/////`) and is
//! left out of the reading.

use telemetry::FieldValue;

use crate::sensor::Observation;

pub const SOH: u8 = 0x01;
pub const STX: u8 = 0x02;
pub const ETX: u8 = 0x03;
pub const ENQ: u8 = 0x05;
/// Longest frame worth waiting for; anything longer is noise.
pub const MAX_FRAME: usize = 256;

/// The command that polls unit `id` for message 2.
pub fn poll_command(id: &str) -> Vec<u8> {
    format!("\r\x05PW {} 2\r", id.trim()).into_bytes()
}

/// What the buffer holds so far.
#[derive(Debug, PartialEq)]
pub enum Scan {
    /// A whole frame: the unit id and the body.
    Frame { id: String, body: String },
    /// Not yet: wait for more bytes.
    Incomplete,
    /// A frame that cannot be read.
    Broken(String),
}

/// Looks for one frame in `buf`, dropping from it whatever was consumed
/// (noise before the frame, and the frame itself).
pub fn scan(buf: &mut Vec<u8>) -> Scan {
    let Some(start) = buf.iter().position(|&b| b == SOH) else {
        buf.clear();
        return Scan::Incomplete;
    };
    buf.drain(..start);
    let end = buf.iter().position(|&b| b == ETX);
    // A new SOH before the ETX means this frame was cut short.
    let next_soh = buf[1..].iter().position(|&b| b == SOH).map(|i| i + 1);
    if let Some(next) = next_soh
        && end.is_none_or(|end| next < end)
    {
        buf.drain(..next);
        return Scan::Broken("a frame was cut short (SOH before ETX)".into());
    }
    let Some(end) = end else {
        if buf.len() > MAX_FRAME {
            buf.clear();
            return Scan::Broken(format!("no ETX within {MAX_FRAME} bytes"));
        }
        return Scan::Incomplete;
    };
    // The CR LF after ETX is not waited for: it is dropped as noise before
    // the next frame.
    let frame: Vec<u8> = buf.drain(..=end).collect();
    let Some(stx) = frame.iter().position(|&b| b == STX) else {
        return Scan::Broken("no STX in the frame".into());
    };
    let header = &frame[1..stx];
    let body = &frame[stx + 1..frame.len() - 1];
    let (Ok(header), Ok(body)) = (std::str::from_utf8(header), std::str::from_utf8(body)) else {
        return Scan::Broken("the frame is not ASCII".into());
    };
    let Some(id) = header
        .strip_prefix("PW")
        .or_else(|| header.strip_prefix("FD"))
    else {
        return Scan::Broken(format!("the header {header:?} is not \"PW id\""));
    };
    if body
        .bytes()
        .any(|b| b.is_ascii_control() && b != b'\r' && b != b'\n')
    {
        return Scan::Broken("control characters in the message body".into());
    }
    Scan::Frame {
        id: id.trim().to_owned(),
        body: body.to_owned(),
    }
}

/// Why a message 2 body is not an observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Message2Error {
    #[error("empty message")]
    Empty,
    #[error("status {0:?} is not two digits")]
    Status(String),
    #[error("expected 10 values in message 2, got {got}: {body:?}")]
    Count { got: usize, body: String },
    #[error("{name} {value:?} is not a number")]
    NotANumber { name: &'static str, value: String },
    #[error("{name} {value:?} is not a code 0 to 99")]
    NotACode { name: &'static str, value: String },
}

/// Parses a message 2 body into the `visibility` observation.
pub fn parse_message2(body: &str) -> Result<Observation, Message2Error> {
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let (alarm, hardware) = status(tokens.first().ok_or(Message2Error::Empty)?)?;
    // The NWS code is letters (C, R-, S+, ...); a sensor reporting no
    // present weather leaves it blank, and then the next token is a number.
    let (nws, rest) = match tokens.get(3) {
        Some(t) if t.starts_with(|c: char| c.is_ascii_alphabetic()) => (Some(*t), &tokens[4..]),
        Some(_) => (None, &tokens[3..]),
        None => (None, &tokens[tokens.len().min(3)..]),
    };
    if tokens.len() < 3 || rest.len() != 6 {
        return Err(Message2Error::Count {
            got: tokens.len(),
            body: body.to_owned(),
        });
    }
    let mut fields: Vec<(&'static str, FieldValue)> = vec![
        ("alarm", FieldValue::Int(alarm.into())),
        ("hardware_status", FieldValue::Int(hardware.into())),
    ];
    // Physical quantities are floats; weather codes are integers.
    let quantities = [
        ("visibility_m", tokens[1]),
        ("visibility_10min_m", tokens[2]),
        ("precipitation_mm_h", rest[3]),
        ("precipitation_sum_mm", rest[4]),
        ("snow_sum_mm", rest[5]),
    ];
    for (name, t) in quantities {
        if let Some(v) = number(name, t)? {
            fields.push((name, FieldValue::Float(v)));
        }
    }
    let codes = [
        ("present_weather", rest[0]),
        ("present_weather_15min", rest[1]),
        ("present_weather_1h", rest[2]),
    ];
    for (name, t) in codes {
        if let Some(v) = code(name, t)? {
            fields.push((name, FieldValue::Int(v)));
        }
    }
    if let Some(nws) = nws {
        fields.push(("present_weather_nws", FieldValue::String(nws.into())));
    }
    Ok(Observation {
        measurement: "visibility",
        tags: Vec::new(),
        fields,
    })
}

/// The two-digit status: alarm, then hardware.
fn status(token: &str) -> Result<(u32, u32), Message2Error> {
    let bad = || Message2Error::Status(token.to_owned());
    let mut chars = token.chars();
    let (Some(alarm), Some(hardware), None) = (chars.next(), chars.next(), chars.next()) else {
        return Err(bad());
    };
    match (alarm.to_digit(10), hardware.to_digit(10)) {
        (Some(alarm), Some(hardware)) => Ok((alarm, hardware)),
        _ => Err(bad()),
    }
}

/// A quantity; slashes say the sensor has none.
fn number(name: &'static str, t: &str) -> Result<Option<f64>, Message2Error> {
    if t.chars().all(|c| c == '/') {
        return Ok(None);
    }
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Some)
        .ok_or_else(|| Message2Error::NotANumber {
            name,
            value: t.to_owned(),
        })
}

/// A weather code 0 to 99; slashes say the sensor has none.
fn code(name: &'static str, t: &str) -> Result<Option<i64>, Message2Error> {
    if t.chars().all(|c| c == '/') {
        return Ok(None);
    }
    t.parse::<i64>()
        .ok()
        .filter(|v| (0..=99).contains(v))
        .map(Some)
        .ok_or_else(|| Message2Error::NotACode {
            name,
            value: t.to_owned(),
        })
}

/// A message 2 frame as the sensor sends it (for the simulator and tests).
pub fn frame(id: &str, body: &str) -> Vec<u8> {
    let mut f = vec![SOH];
    f.extend(format!("PW{id:>2}").bytes());
    f.push(STX);
    f.extend(body.bytes());
    f.extend([ETX, b'\r', b'\n']);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PWD22 user's guide example for message 2.
    const EXAMPLE: &str = "00  1839  1505 R-  61 61 61  0.33 12.16    0";

    #[test]
    fn polls_unit_one_for_message_two() {
        assert_eq!(poll_command("1"), b"\r\x05PW 1 2\r");
    }

    #[test]
    fn parses_the_manuals_example() {
        let obs = parse_message2(EXAMPLE).unwrap();
        assert_eq!(obs.measurement, "visibility");
        let f = |name: &str| {
            obs.fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(f("alarm"), Some(FieldValue::Int(0)));
        assert_eq!(f("hardware_status"), Some(FieldValue::Int(0)));
        assert_eq!(obs.float("visibility_m"), Some(1839.0));
        assert_eq!(obs.float("visibility_10min_m"), Some(1505.0));
        assert_eq!(
            f("present_weather_nws"),
            Some(FieldValue::String("R-".into()))
        );
        assert_eq!(f("present_weather"), Some(FieldValue::Int(61)));
        assert_eq!(f("present_weather_1h"), Some(FieldValue::Int(61)));
        assert_eq!(obs.float("precipitation_mm_h"), Some(0.33));
        assert_eq!(obs.float("precipitation_sum_mm"), Some(12.16));
        assert_eq!(obs.float("snow_sum_mm"), Some(0.0));
        assert_eq!(obs.fields.len(), 11);
    }

    #[test]
    fn slashes_leave_a_value_out_and_a_blank_nws_code_is_allowed() {
        let obs = parse_message2("12 ///// /////   // // //  //// /////  ///").unwrap();
        assert_eq!(obs.fields.len(), 2);
        assert_eq!(obs.fields[1], ("hardware_status", FieldValue::Int(2)));
        let obs = parse_message2("10  680  1230  04 04 04  0.00  0.00    0").unwrap();
        assert_eq!(obs.float("visibility_m"), Some(680.0));
        assert!(obs.fields.iter().all(|(k, _)| *k != "present_weather_nws"));
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        for (body, says) in [
            ("", "empty"),
            ("0 1839 1505 C 0 0 0 0 0 0", "two digits"),
            ("00 18x9 1505 C 0 0 0 0 0 0", "visibility_m \"18x9\""),
            ("00 1839 1505 C 0 0 0 0 0", "expected 10 values"),
            ("00 1839 1505 C 0 0 100 0 0 0", "present_weather_1h"),
            ("00 1839 1505 C 0 0 0 0 0 0 7", "expected 10 values"),
        ] {
            let e = parse_message2(body).unwrap_err().to_string();
            assert!(e.contains(says), "{body:?}: {e}");
        }
    }

    #[test]
    fn finds_a_frame_behind_noise_and_across_fragments() {
        let whole = frame(" 1", EXAMPLE);
        let mut buf = b"\xff\x00junk".to_vec();
        buf.extend(&whole[..10]);
        assert_eq!(scan(&mut buf), Scan::Incomplete);
        assert_eq!(buf[0], SOH, "the noise before SOH is dropped");
        buf.extend(&whole[10..]);
        assert_eq!(
            scan(&mut buf),
            Scan::Frame {
                id: "1".into(),
                body: EXAMPLE.into()
            }
        );
        assert_eq!(buf, b"\r\n");
        assert_eq!(scan(&mut buf), Scan::Incomplete);
        assert!(buf.is_empty());
    }

    #[test]
    fn broken_frames_are_reported_and_the_next_one_still_read() {
        let whole = frame(" 1", EXAMPLE);
        let mut buf = whole[..20].to_vec();
        buf.extend(&whole);
        assert!(matches!(scan(&mut buf), Scan::Broken(e) if e.contains("cut short")));
        assert!(matches!(scan(&mut buf), Scan::Frame { .. }));

        let mut buf = vec![SOH, b'P', b'W', ETX];
        assert!(matches!(scan(&mut buf), Scan::Broken(e) if e.contains("STX")));
        let mut buf = vec![SOH, b'X', b'Y', STX, b'0', ETX];
        assert!(matches!(scan(&mut buf), Scan::Broken(e) if e.contains("header")));
        let mut buf = vec![SOH];
        buf.extend([b'a'; MAX_FRAME + 1]);
        assert!(matches!(scan(&mut buf), Scan::Broken(e) if e.contains("no ETX")));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever arrives, in whatever pieces, the scanner neither
            /// panics nor grows its buffer past one frame, and the parser
            /// only returns errors.
            #[test]
            fn arbitrary_bytes_never_panic(chunks in prop::collection::vec(
                prop::collection::vec(any::<u8>(), 0..80), 0..12)
            ) {
                let mut buf = Vec::new();
                for chunk in chunks {
                    buf.extend(chunk);
                    loop {
                        match scan(&mut buf) {
                            Scan::Frame { body, .. } => { let _ = parse_message2(&body); }
                            Scan::Broken(_) => {}
                            Scan::Incomplete => break,
                        }
                    }
                    prop_assert!(buf.len() <= MAX_FRAME + 80);
                }
            }

            /// A frame behind noise (without SOH) and split anywhere is found
            /// whole.
            #[test]
            fn a_frame_behind_noise_split_anywhere_is_found(
                noise in prop::collection::vec(any::<u8>().prop_filter("not SOH", |b| *b != SOH), 0..60),
                split in 0usize..60,
            ) {
                let mut bytes = noise;
                bytes.extend(frame(" 1", EXAMPLE));
                let split = split.min(bytes.len());
                let mut buf = bytes[..split].to_vec();
                let first = scan(&mut buf);
                let found = if matches!(first, Scan::Frame { .. }) {
                    first
                } else {
                    prop_assert_eq!(first, Scan::Incomplete);
                    buf.extend(&bytes[split..]);
                    scan(&mut buf)
                };
                prop_assert_eq!(found, Scan::Frame { id: "1".into(), body: EXAMPLE.into() });
            }
        }
    }
}
