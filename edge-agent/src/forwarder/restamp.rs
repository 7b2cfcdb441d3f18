//! # Timestamps taken before the clock was set
//!
//! What the forwarder does with a reading, given when it was taken
//! ([`Taken`]) and the clock now ([`Stamp`]):
//!
//! | taken | now | what goes to Kafka | `buoy-clock` |
//! |---|---|---|---|
//! | clock synchronised | any | the reading as journaled | `synced` |
//! | not synchronised, this boot | synchronised | the timestamp recomputed from the time since boot | `corrected` |
//! | not synchronised, this boot | not synchronised, for less than `forward.hold_unsynced` | nothing yet: held in the journal | |
//! | not synchronised, this boot | not synchronised, held long enough | tagged `clock=unsynced` | `unsynced` |
//! | not synchronised, an earlier boot | any | tagged `clock=unsynced` (that boot never synced while it ran) | `unsynced` |
//! | unknown (aggregates, older journals) | any | as journaled | |
//!
//! A corrected timestamp is `now.wall - (now.mono - taken.mono)`: readings of
//! one boot keep their order and spacing, whatever the wall clock did.

use std::borrow::Cow;
use std::time::Duration;

use telemetry::line_protocol;

use crate::clock::Stamp;
use crate::journal::record::Taken;

/// The tag a reading with a timestamp that could not be corrected gets.
pub const UNSYNCED_TAG: (&str, &str) = ("clock", "unsynced");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send as journaled; the header value, if known.
    AsIs(Option<&'static str>),
    /// Send with this timestamp instead.
    Restamp(i64),
    /// Send tagged [`UNSYNCED_TAG`].
    Tag,
    /// Not yet: the clock may still be set.
    Hold,
}

impl Verdict {
    /// The `buoy-clock` header's value.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Verdict::AsIs(h) => h,
            Verdict::Restamp(_) => Some("corrected"),
            Verdict::Tag => Some("unsynced"),
            Verdict::Hold => None,
        }
    }
}

pub fn decide(taken: Option<Taken>, this_boot: bool, now: Stamp, hold: Duration) -> Verdict {
    let Some(taken) = taken else {
        return Verdict::AsIs(None);
    };
    if taken.synced {
        return Verdict::AsIs(Some("synced"));
    }
    if !this_boot {
        return Verdict::Tag;
    }
    if now.synced {
        return Verdict::Restamp(now.corrected(taken.mono_ns));
    }
    if Duration::from_nanos(now.mono_ns.saturating_sub(taken.mono_ns)) < hold {
        Verdict::Hold
    } else {
        Verdict::Tag
    }
}

/// The line to send for `verdict` (never called with [`Verdict::Hold`]).
/// A restamped line keeps the journal's encoding: only its timestamp, the
/// last token, is replaced. A tag is added by parsing and encoding again
/// (rare: readings of a boot whose clock was never set).
pub fn apply(line: &str, verdict: Verdict) -> Result<Cow<'_, str>, RestampError> {
    if let Verdict::Restamp(ts) = verdict
        && let Some(head) = without_timestamp(line)
    {
        return Ok(Cow::Owned(format!("{head} {ts}")));
    }
    let mut reading = match verdict {
        Verdict::AsIs(_) | Verdict::Hold => return Ok(Cow::Borrowed(line)),
        Verdict::Restamp(_) | Verdict::Tag => line_protocol::parse_line(line, 0)?,
    };
    match verdict {
        Verdict::Restamp(ts) => reading.timestamp_ns = ts,
        _ => {
            reading
                .tags
                .insert(UNSYNCED_TAG.0.into(), UNSYNCED_TAG.1.into());
        }
    }
    Ok(Cow::Owned(line_protocol::encode(&reading)?))
}

/// The line up to the space before its timestamp. The timestamp is the
/// last token: after the last space, digits only (an escaped space or a
/// string field's space is never followed by digits alone to the end).
fn without_timestamp(line: &str) -> Option<&str> {
    let (head, stamp) = line.rsplit_once(' ')?;
    let digits = stamp.strip_prefix('-').unwrap_or(stamp);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

/// Why a journaled line could not be restamped or tagged.
#[derive(Debug, thiserror::Error)]
pub enum RestampError {
    #[error("the journaled line does not parse: {0}")]
    Parse(#[from] line_protocol::LineProtocolError),
    #[error("the restamped reading is invalid: {0}")]
    Invalid(#[from] telemetry::InvalidReading),
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const HOLD: Duration = Duration::from_secs(600);

    fn taken(mono_s: u64, synced: bool) -> Option<Taken> {
        Some(Taken {
            mono_ns: mono_s * S,
            synced,
        })
    }

    fn now(mono_s: u64, synced: bool) -> Stamp {
        Stamp {
            wall_ns: 1_800_000_000 * S as i64,
            mono_ns: mono_s * S,
            synced,
        }
    }

    #[test]
    fn readings_from_before_the_sync_are_placed_by_time_since_boot() {
        let v = decide(taken(100, false), true, now(160, true), HOLD);
        assert_eq!(v, Verdict::Restamp((1_800_000_000 - 60) * S as i64));
        let line = apply("m,device_id=a v=1.5 5", v).unwrap();
        assert_eq!(line, "m,device_id=a v=1.5 1799999940000000000");
        // Only the timestamp changes, whatever the line holds; the result
        // is what parsing and encoding again would give.
        let journaled = r#"w,device_id=a,site=x\ 1 note="a 5",v=1.5 5"#;
        let restamped = apply(journaled, v).unwrap();
        assert_eq!(
            restamped,
            r#"w,device_id=a,site=x\ 1 note="a 5",v=1.5 1799999940000000000"#
        );
        let mut reading = line_protocol::parse_line(journaled, 0).unwrap();
        reading.timestamp_ns = (1_800_000_000 - 60) * S as i64;
        assert_eq!(restamped, line_protocol::encode(&reading).unwrap());
        // A line without a timestamp is not guessed at.
        assert_eq!(without_timestamp(r#"w note="a 5""#), None);
        assert_eq!(without_timestamp("w v=1"), None);
    }

    #[test]
    fn readings_wait_for_the_clock_then_go_tagged() {
        assert_eq!(
            decide(taken(100, false), true, now(160, false), HOLD),
            Verdict::Hold
        );
        let v = decide(taken(100, false), true, now(700, false), HOLD);
        assert_eq!(v, Verdict::Tag);
        assert_eq!(
            apply("m,device_id=a v=1.5 5", v).unwrap(),
            "m,clock=unsynced,device_id=a v=1.5 5"
        );
    }

    #[test]
    fn an_earlier_boot_that_never_synced_is_tagged_and_good_stamps_stay() {
        assert_eq!(
            decide(taken(100, false), false, now(5, true), HOLD),
            Verdict::Tag
        );
        let v = decide(taken(100, true), true, now(5, false), HOLD);
        assert_eq!(v, Verdict::AsIs(Some("synced")));
        assert_eq!(apply("m v=1 5", v).unwrap(), Cow::Borrowed("m v=1 5"));
        assert_eq!(
            decide(None, false, now(5, false), HOLD),
            Verdict::AsIs(None)
        );
    }
}
