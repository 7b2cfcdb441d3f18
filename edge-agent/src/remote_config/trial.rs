//! Trial configs: a layer carrying `"trial": "10m"` runs on probation. Pure.
//!
//! When such a layer is applied, the set of layers it replaces is stored
//! next to it, with the time the trial ends. Within that time the device
//! must be connected to MQTT and have a reading acknowledged by Kafka,
//! both after the trial config was applied; then the trial is confirmed
//! and the previous set forgotten. Otherwise the previous set is put back,
//! stored, and the layer's decision becomes `reverted`, with the reason.
//!
//! Only a trial may set `kafka.brokers` and `[kafka.security]`
//! ([`super::overlay::Reach`]): a wrong value there would otherwise cut the
//! device off for good.
//!
//! A restart during a trial (a power cut, a crash) does not confirm it: the
//! trial runs on after the start, until the stored end, and what counts is
//! what the device sees after the start. A wall clock set back at boot (no
//! RTC) cannot stretch it beyond one trial length from the start; a clock
//! set forward ends it at once.

use std::time::Duration;

use super::store::StoredTrial;

/// What the device has seen since the trial config was applied (or since
/// the agent started, during a trial carried over from before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Connected to the MQTT broker.
    pub mqtt: bool,
    /// A reading acknowledged by Kafka.
    pub kafka_ack: bool,
}

/// What to do about a trial now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Wait,
    Confirm,
    /// Put the previous layers back, for this reason.
    Revert(String),
}

/// How long the trial `t` still has, at wall time `now_ms`: at most one
/// trial length, never less than nothing.
pub fn remaining(t: &StoredTrial, now_ms: i64) -> Duration {
    let left = t.ends_at_ms.saturating_sub(now_ms).max(0) as u64;
    Duration::from_millis(left.min(t.duration_ms))
}

/// The decision on trial `t`, given what was seen and whether its time is
/// up.
pub fn step(t: &StoredTrial, seen: Seen, time_up: bool) -> Step {
    if seen.mqtt && seen.kafka_ack {
        return Step::Confirm;
    }
    if !time_up {
        return Step::Wait;
    }
    let missing = match (seen.mqtt, seen.kafka_ack) {
        (false, false) => "neither reached MQTT nor had a reading acknowledged by Kafka",
        (true, _) => "no reading was acknowledged by Kafka",
        (false, true) => "did not reach MQTT",
    };
    Step::Revert(format!(
        "trial of version {} not confirmed within {}: {missing} after it was applied; the previous config is back",
        t.version,
        humantime::format_duration(Duration::from_millis(t.duration_ms)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_config::layers::Layer;

    fn trial() -> StoredTrial {
        StoredTrial {
            layer: Layer::Device,
            version: 7,
            ends_at_ms: 1_000_000,
            duration_ms: 600_000,
            previous: Default::default(),
        }
    }

    #[test]
    fn both_mqtt_and_a_kafka_ack_confirm_at_once_and_either_alone_waits() {
        let t = trial();
        let both = Seen {
            mqtt: true,
            kafka_ack: true,
        };
        assert_eq!(step(&t, both, false), Step::Confirm);
        assert_eq!(step(&t, both, true), Step::Confirm);
        for seen in [
            Seen::default(),
            Seen {
                mqtt: true,
                kafka_ack: false,
            },
            Seen {
                mqtt: false,
                kafka_ack: true,
            },
        ] {
            assert_eq!(step(&t, seen, false), Step::Wait, "{seen:?}");
        }
    }

    #[test]
    fn time_up_without_confirmation_reverts_and_says_what_was_missing() {
        let t = trial();
        let mqtt_only = Seen {
            mqtt: true,
            kafka_ack: false,
        };
        let Step::Revert(reason) = step(&t, mqtt_only, true) else {
            panic!("must revert")
        };
        assert!(
            reason.starts_with(
                "trial of version 7 not confirmed within 10m: no reading was acknowledged by Kafka"
            ),
            "{reason}"
        );
        let Step::Revert(reason) = step(&t, Seen::default(), true) else {
            panic!("must revert")
        };
        assert!(reason.contains("neither reached MQTT"), "{reason}");
    }

    #[test]
    fn a_clock_set_back_cannot_stretch_a_trial_and_one_set_forward_ends_it() {
        let t = trial();
        assert_eq!(remaining(&t, 900_000), Duration::from_secs(100));
        assert_eq!(
            remaining(&t, 0),
            Duration::from_secs(600),
            "at most one trial length"
        );
        assert_eq!(remaining(&t, 2_000_000), Duration::ZERO);
    }
}
