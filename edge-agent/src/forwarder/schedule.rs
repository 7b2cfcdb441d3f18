//! Send windows (`forward.send_windows`): times of day, in the device's local
//! time, when the forwarder may send (`"01:00-05:00"`). A window may cross
//! midnight (`"22:00-06:00"`); the end is exclusive. No windows: always.

use std::fmt;
use std::str::FromStr;

/// One window, in minutes since local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    start: u16,
    end: u16,
}

impl SendWindow {
    /// Whether `minute` (since local midnight) falls inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window opens (0 when open).
    pub fn opens_in(&self, minute: u16) -> u16 {
        if self.contains(minute) {
            0
        } else {
            (self.start + 1440 - minute) % 1440
        }
    }
}

/// Whether sending is allowed at `minute` (always, with no windows).
pub fn open_at(windows: &[SendWindow], minute: u16) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(minute))
}

/// The current minute of the day in local time (the system's time zone).
pub fn local_minute_of_day() -> u16 {
    let now = libc::time_t::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
    .unwrap_or(0);
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return ((now / 60) % 1440) as u16;
        }
        tm
    };
    (tm.tm_hour * 60 + tm.tm_min) as u16
}

fn parse_time(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// Why a send window does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{0:?} is not a window; write local times as \"01:00-05:00\"")]
    Malformed(String),
    #[error("{0:?} is empty; a window needs a start before its end")]
    Empty(String),
}

impl FromStr for SendWindow {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, WindowError> {
        let bad = || WindowError::Malformed(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            parse_time(a).ok_or_else(bad)?,
            parse_time(b).ok_or_else(bad)?,
        );
        if start == end || start == 1440 {
            return Err(WindowError::Empty(s.to_owned()));
        }
        Ok(SendWindow {
            start,
            end: end % 1440,
        })
    }
}

impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.end == 0 { 1440 } else { self.end };
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            end / 60,
            end % 60
        )
    }
}

impl serde::Serialize for SendWindow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SendWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> SendWindow {
        s.parse().unwrap()
    }

    #[test]
    fn windows_include_their_start_and_exclude_their_end() {
        let night = w("01:00-05:00");
        assert!(!night.contains(59));
        assert!(night.contains(60));
        assert!(night.contains(299));
        assert!(!night.contains(300));
        assert_eq!(night.opens_in(0), 60);
        assert_eq!(night.opens_in(300), 1200);
        assert_eq!(night.to_string(), "01:00-05:00");
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let late = w("22:00-06:00");
        assert!(late.contains(23 * 60));
        assert!(late.contains(0));
        assert!(late.contains(359));
        assert!(!late.contains(360));
        assert!(!late.contains(12 * 60));
        let to_midnight = w("18:00-24:00");
        assert!(to_midnight.contains(1439));
        assert!(!to_midnight.contains(0));
        assert_eq!(to_midnight.to_string(), "18:00-24:00");
    }

    #[test]
    fn no_windows_means_always() {
        assert!(open_at(&[], 700));
        assert!(!open_at(&[w("01:00-02:00"), w("03:00-04:00")], 150));
        assert!(open_at(&[w("01:00-02:00"), w("03:00-04:00")], 190));
    }

    #[test]
    fn bad_windows_say_how_to_write_them() {
        for bad in ["1-5", "01:00", "25:00-26:00", "01:60-02:00", "03:00-03:00"] {
            let e = bad.parse::<SendWindow>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(local_minute_of_day() < 1440);
    }
}
