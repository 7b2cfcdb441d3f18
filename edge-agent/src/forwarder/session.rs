//! # When a producer session is given up for a fresh one
//!
//! A librdkafka producer is one idempotent session with the brokers: a
//! producer id, an epoch and a sequence number per partition. A broker that
//! restarted, lost its state or hit a bug of its own may go on answering such
//! a session with errors for ever (unknown producer id, a fenced epoch, out of
//! order sequence numbers, or an unknown server error), while a fresh session
//! (a new `InitProducerId`) would be taken at once. librdkafka never starts a
//! fresh session by itself; the forwarder does, when this watch says so.
//!
//! A session is renewed when:
//! - the connection to the brokers was lost, or librdkafka raised a fatal
//!   error (decided where those are reported: [`super::producer`]);
//! - [`REFUSALS_BEFORE_RENEWAL`] failure episodes in a row ended with the
//!   broker refusing readings, and nothing was acknowledged in between;
//! - deliveries have been failing for `forward.renew_after` with nothing
//!   acknowledged, while the broker answers (it refuses readings, or it
//!   serves metadata and the topic exists but readings time out).
//!
//! It is not renewed for a missing topic or an unreachable broker: a fresh
//! session cannot help there, and a lost connection renews it anyway.
//!
//! This module does no I/O and reads no clock: the forwarder reports each
//! failure episode (all deliveries of a failed window resolved) and each
//! acknowledgement, and asks [`SessionWatch::decide`].

use std::time::Duration;

use tokio::time::Instant;

/// Failure episodes in a row, each ending with the broker refusing readings,
/// after which the session is renewed. Episodes are spaced by the retry
/// backoff, so this is a few seconds of refusals, not a burst of errors from
/// one batch.
pub const REFUSALS_BEFORE_RENEWAL: u32 = 3;

/// How one failure episode ended, as far as the session is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Episode {
    /// The broker answered with an error about the readings or the session
    /// (unknown producer id, fenced epoch, sequence errors, an unknown
    /// server error, ...).
    Refused,
    /// Readings timed out; the broker serves metadata and the topic exists.
    TimedOutWhileAnswering,
    /// The topic does not exist: a fresh session would not help.
    TopicMissing,
    /// The broker cannot be reached: the lost connection renews the session.
    Unreachable,
}

/// Why a session is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The connection to every broker was lost: a broker that restarted may
    /// not know the old session.
    BrokerLost,
    /// librdkafka raised a fatal error: the producer cannot go on.
    Fatal,
    /// The broker refused readings this many episodes in a row.
    Refused { episodes: u32 },
    /// Nothing acknowledged for this long while the broker answered.
    NoProgress { for_: Duration },
}

impl Renewal {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::BrokerLost => "broker_lost",
            Renewal::Fatal => "fatal_error",
            Renewal::Refused { .. } => "refused",
            Renewal::NoProgress { .. } => "no_progress",
        }
    }
}

impl std::fmt::Display for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Renewal::BrokerLost => write!(f, "the connection to Kafka was lost"),
            Renewal::Fatal => write!(f, "the Kafka producer hit a fatal error"),
            Renewal::Refused { episodes } => write!(
                f,
                "Kafka refused readings {episodes} times in a row with nothing acknowledged"
            ),
            Renewal::NoProgress { for_ } => write!(
                f,
                "Kafka answers but acknowledged nothing for {}",
                humantime::format_duration(Duration::from_secs(for_.as_secs()))
            ),
        }
    }
}

/// What the forwarder has seen of the current session since its last
/// acknowledgement.
#[derive(Debug, Clone)]
pub struct SessionWatch {
    renew_after: Duration,
    /// The first failure episode since the last acknowledgement (or since
    /// the session started).
    failing_since: Option<Instant>,
    /// Failure episodes in a row that ended with a refusal.
    refusals: u32,
    /// Whether the latest episode showed the broker answering.
    answering: bool,
}

impl SessionWatch {
    /// `renew_after`: `forward.renew_after`; zero turns the time rule off.
    pub fn new(renew_after: Duration) -> Self {
        SessionWatch {
            renew_after,
            failing_since: None,
            refusals: 0,
            answering: false,
        }
    }

    /// Kafka acknowledged a reading: the session works.
    pub fn acknowledged(&mut self) {
        self.failing_since = None;
        self.refusals = 0;
        self.answering = false;
    }

    /// A failure episode ended at `now` (every delivery of the failed window
    /// has resolved).
    pub fn episode(&mut self, episode: Episode, now: Instant) {
        self.failing_since.get_or_insert(now);
        self.answering = matches!(episode, Episode::Refused | Episode::TimedOutWhileAnswering);
        if episode == Episode::Refused {
            self.refusals += 1;
        } else {
            self.refusals = 0;
        }
    }

    /// Whether to renew the session now, and why.
    pub fn decide(&self, now: Instant) -> Option<Renewal> {
        if self.refusals >= REFUSALS_BEFORE_RENEWAL {
            return Some(Renewal::Refused {
                episodes: self.refusals,
            });
        }
        let failing_for = now.saturating_duration_since(self.failing_since?);
        (self.answering && !self.renew_after.is_zero() && failing_for >= self.renew_after)
            .then_some(Renewal::NoProgress { for_: failing_for })
    }

    /// A fresh session starts: it gets its own full period.
    pub fn renewed(&mut self) {
        *self = SessionWatch::new(self.renew_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENEW_AFTER: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_healthy_session_is_kept() {
        let t0 = Instant::now();
        let w = SessionWatch::new(RENEW_AFTER);
        assert_eq!(w.decide(t0 + secs(3600)), None);
    }

    #[test]
    fn repeated_refusals_without_progress_renew() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(RENEW_AFTER);
        w.episode(Episode::Refused, t0);
        assert_eq!(w.decide(t0), None, "one refusal may be a passing fault");
        w.episode(Episode::Refused, t0 + secs(1));
        assert_eq!(w.decide(t0 + secs(1)), None);
        w.episode(Episode::Refused, t0 + secs(2));
        assert_eq!(
            w.decide(t0 + secs(2)),
            Some(Renewal::Refused { episodes: 3 })
        );
    }

    #[test]
    fn an_acknowledgement_between_refusals_keeps_the_session() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(RENEW_AFTER);
        w.episode(Episode::Refused, t0);
        w.episode(Episode::Refused, t0 + secs(1));
        w.acknowledged();
        w.episode(Episode::Refused, t0 + secs(2));
        assert_eq!(w.decide(t0 + secs(2)), None);
        w.episode(Episode::Refused, t0 + secs(3));
        w.episode(Episode::Refused, t0 + secs(4));
        assert!(w.decide(t0 + secs(4)).is_some());
    }

    #[test]
    fn refusals_must_be_in_a_row() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(Duration::ZERO);
        w.episode(Episode::Refused, t0);
        w.episode(Episode::Refused, t0);
        w.episode(Episode::Unreachable, t0);
        w.episode(Episode::Refused, t0);
        assert_eq!(w.decide(t0), None);
    }

    #[test]
    fn no_progress_while_the_broker_answers_renews_after_the_configured_time() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(RENEW_AFTER);
        w.episode(Episode::TimedOutWhileAnswering, t0);
        assert_eq!(w.decide(t0 + secs(59)), None);
        w.episode(Episode::TimedOutWhileAnswering, t0 + secs(30));
        assert_eq!(
            w.decide(t0 + secs(60)),
            Some(Renewal::NoProgress { for_: secs(60) }),
            "the time counts from the first failure since progress"
        );
    }

    #[test]
    fn no_renewal_for_a_missing_topic_or_an_unreachable_broker() {
        let t0 = Instant::now();
        for episode in [Episode::TopicMissing, Episode::Unreachable] {
            let mut w = SessionWatch::new(RENEW_AFTER);
            for s in 0..100 {
                w.episode(episode, t0 + secs(s * 10));
            }
            assert_eq!(w.decide(t0 + secs(1000)), None, "{episode:?}");
        }
    }

    #[test]
    fn the_time_rule_needs_the_latest_episode_to_show_the_broker_answering() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(RENEW_AFTER);
        w.episode(Episode::TimedOutWhileAnswering, t0);
        w.episode(Episode::Unreachable, t0 + secs(50));
        assert_eq!(w.decide(t0 + secs(70)), None);
        w.episode(Episode::TimedOutWhileAnswering, t0 + secs(80));
        assert!(w.decide(t0 + secs(80)).is_some());
    }

    #[test]
    fn zero_turns_the_time_rule_off() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(Duration::ZERO);
        w.episode(Episode::TimedOutWhileAnswering, t0);
        assert_eq!(w.decide(t0 + secs(3600)), None);
    }

    #[test]
    fn a_renewed_session_gets_its_own_full_period() {
        let t0 = Instant::now();
        let mut w = SessionWatch::new(RENEW_AFTER);
        w.episode(Episode::TimedOutWhileAnswering, t0);
        assert!(w.decide(t0 + secs(60)).is_some());
        w.renewed();
        assert_eq!(w.decide(t0 + secs(61)), None);
        w.episode(Episode::TimedOutWhileAnswering, t0 + secs(70));
        assert_eq!(w.decide(t0 + secs(129)), None);
        assert!(w.decide(t0 + secs(130)).is_some());
        for _ in 0..REFUSALS_BEFORE_RENEWAL {
            w.episode(Episode::Refused, t0 + secs(131));
        }
        w.renewed();
        assert_eq!(w.decide(t0 + secs(131)), None, "refusals start over");
    }
}
