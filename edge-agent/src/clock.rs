//! # The clock: wall time, and whether to believe it
//!
//! A Raspberry Pi has no real-time clock: it boots at 1970, or at the time
//! saved at the last shutdown, and is set only when NTP syncs, possibly
//! hours later. So every reading is stamped with three things ([`Stamp`]):
//! the wall time, the time since boot (`CLOCK_BOOTTIME`, monotonic, counts
//! suspend), and whether the wall clock was synchronised when it was read.
//!
//! The clock counts as synchronised when the kernel says so (`adjtimex`:
//! no `STA_UNSYNC`, no `TIME_ERROR`) and its time is plausible (not before
//! [`PLAUSIBLE_AFTER`]). A machine with no NTP client at all (a VM set by its
//! host, a gateway with a battery-backed RTC and no network time) never
//! reports a synchronised clock; there the clock is trusted as it is, since
//! nothing will ever set it better, unless its time is implausible.
//!
//! Jumps (the wall clock moving against the monotonic clock by more than
//! [`JUMP_TOLERANCE`]) are what setting the clock looks like; each one is
//! logged. The forwarder uses the stamps to correct readings taken while
//! the clock was wrong (see [`Stamp::corrected`]).

use std::sync::Mutex;
use std::time::Duration;

/// The earliest wall time believed: anything before is a clock that was
/// never set (2025-01-01T00:00:00Z).
pub const PLAUSIBLE_AFTER_NS: i64 = 1_735_689_600_000_000_000;
/// The same, for documentation.
pub const PLAUSIBLE_AFTER: &str = "2025-01-01";
/// How far the wall clock may move against the monotonic clock between two
/// looks before it counts as a jump (NTP slews far less than this).
pub const JUMP_TOLERANCE: Duration = Duration::from_secs(2);

/// One look at the clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Nanoseconds since the Unix epoch, as the wall clock says.
    pub wall_ns: i64,
    /// Nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub mono_ns: u64,
    /// Whether the wall clock was believed.
    pub synced: bool,
}

impl Stamp {
    /// The wall time at which something stamped `earlier` (in the same
    /// boot) happened, as this (synchronised) stamp's clock tells it.
    pub fn corrected(&self, earlier_mono_ns: u64) -> i64 {
        let ago = self.mono_ns.saturating_sub(earlier_mono_ns);
        self.wall_ns
            .saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX))
    }
}

/// Gives the current time.
pub trait Clock: Send + Sync {
    /// The wall time, nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64 {
        self.stamp().wall_ns
    }
    /// The wall time, the time since boot and whether to believe the first.
    fn stamp(&self) -> Stamp;
}

/// The system's clocks, with the kernel's word on synchronisation.
#[derive(Debug, Default)]
pub struct SystemClock {
    watch: Mutex<JumpWatch>,
    /// Whether some NTP client runs here (cached: it is looked up once).
    ntp_client: std::sync::OnceLock<bool>,
}

impl SystemClock {
    fn has_ntp_client(&self) -> bool {
        *self.ntp_client.get_or_init(|| {
            let found = ntp_client_present();
            if !found {
                tracing::info!(
                    "no NTP client found (systemd-timesyncd, chrony, ntpd): the system clock \
                     is trusted as it is, unless it is before {PLAUSIBLE_AFTER}"
                );
            }
            found
        })
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        wall_now_ns()
    }

    fn stamp(&self) -> Stamp {
        let mono_ns = boottime_ns();
        let wall_ns = wall_now_ns();
        let kernel = kernel_synced();
        if let Some(jump) = self
            .watch
            .lock()
            .expect("clock lock")
            .look(wall_ns, mono_ns)
        {
            tracing::warn!(
                jump_s = jump as f64 / 1e9,
                kernel_synced = kernel,
                "the wall clock jumped"
            );
        }
        let believed = match kernel {
            Some(true) => true,
            // adjtimex refused (a sandbox): nothing to go by but plausibility.
            None => true,
            Some(false) => !self.has_ntp_client(),
        };
        Stamp {
            wall_ns,
            mono_ns,
            synced: believed && wall_ns >= PLAUSIBLE_AFTER_NS,
        }
    }
}

/// Notices the wall clock moving against the monotonic one.
#[derive(Debug, Default)]
pub struct JumpWatch {
    /// Wall minus monotonic at the last look.
    offset: Option<i64>,
}

impl JumpWatch {
    /// Looks at the clocks; returns the jump (ns, signed) if the wall clock
    /// moved by more than [`JUMP_TOLERANCE`] since the last look.
    pub fn look(&mut self, wall_ns: i64, mono_ns: u64) -> Option<i64> {
        let offset = wall_ns.saturating_sub(mono_ns as i64);
        let jump = self
            .offset
            .map(|last| offset.saturating_sub(last))
            .filter(|j| j.unsigned_abs() > JUMP_TOLERANCE.as_nanos() as u64);
        self.offset = Some(offset);
        jump
    }
}

/// Nanoseconds since the Unix epoch.
pub fn wall_now_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// Nanoseconds since boot, suspend included.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The kernel's view: is the clock synchronised? `None` if it cannot be
/// asked.
pub fn kernel_synced() -> Option<bool> {
    // SAFETY: an all-zero timex with modes = 0 only reads the state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

/// Whether an NTP client is running: the runtime directories the usual
/// ones create.
fn ntp_client_present() -> bool {
    [
        "/run/systemd/timesync",
        "/run/chrony",
        "/run/chronyd.pid",
        "/run/ntpd.pid",
        "/run/ntpsec",
        "/run/openntpd",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_placed_by_how_long_ago_it_was_taken() {
        let now = Stamp {
            wall_ns: 1_800_000_000_000_000_000,
            mono_ns: 50_000_000_000,
            synced: true,
        };
        // Taken 20 s after boot, i.e. 30 s ago.
        assert_eq!(now.corrected(20_000_000_000), 1_799_999_970_000_000_000);
        // A stamp from the future (never in one boot) is not moved forward.
        assert_eq!(now.corrected(60_000_000_000), now.wall_ns);
    }

    #[test]
    fn jumps_are_told_apart_from_time_passing() {
        let mut w = JumpWatch::default();
        assert_eq!(w.look(1_000, 1_000), None);
        // 10 s later on both clocks: no jump.
        assert_eq!(w.look(10_000_001_000, 10_000_001_000), None);
        // The wall clock is set forward by an hour.
        let hour = 3_600_000_000_000i64;
        assert_eq!(w.look(10_000_002_000 + hour, 10_000_002_000), Some(hour));
        // And back by a minute.
        assert_eq!(
            w.look(10_000_003_000 + hour - 60_000_000_000, 10_000_003_000),
            Some(-60_000_000_000)
        );
        // A second of slew is not a jump.
        assert_eq!(
            w.look(10_000_004_000 + hour - 59_000_000_000, 10_000_004_000),
            None
        );
    }

    #[test]
    fn the_system_clock_reads_sane_values() {
        let c = SystemClock::default();
        let a = c.stamp();
        let b = c.stamp();
        assert!(b.mono_ns >= a.mono_ns && a.mono_ns > 0);
        assert!(
            a.wall_ns > PLAUSIBLE_AFTER_NS,
            "this machine's clock is set"
        );
    }
}
