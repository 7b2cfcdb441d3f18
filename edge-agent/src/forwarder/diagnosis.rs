//! What a failed delivery means: what to tell the operator, and what it says
//! about the producer session ([`super::session`]). Pure; the one question
//! that needs the broker (is it there, and is the topic?) is asked by the
//! forwarder and its answer passed in as a [`Diagnosis`].

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::config::KafkaConfig;
use super::session::Episode;

/// What the broker said when asked why deliveries failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// No metadata: the broker cannot be reached.
    Unreachable(String),
    /// The broker answers and the topic exists, yet readings time out.
    TimedOut,
    /// The broker answers, but the topic does not exist.
    TopicMissing,
}

impl Diagnosis {
    pub fn episode(&self) -> Episode {
        match self {
            Diagnosis::Unreachable(_) => Episode::Unreachable,
            Diagnosis::TimedOut => Episode::TimedOutWhileAnswering,
            Diagnosis::TopicMissing => Episode::TopicMissing,
        }
    }

    /// The line for the log and the link's `last_error`.
    pub fn explain(&self, kafka: &KafkaConfig) -> String {
        let brokers = kafka.brokers.join(",");
        match self {
            Diagnosis::Unreachable(e) => format!(
                "cannot reach Kafka at {brokers} ({e}); readings stay in the journal and are sent when it returns"
            ),
            Diagnosis::TimedOut => format!(
                "Kafka at {brokers} did not acknowledge readings in time; they stay in the journal and are sent again"
            ),
            Diagnosis::TopicMissing => format!(
                "Kafka topic {:?} does not exist on {brokers}; create it (the agent never creates topics). \
                 Readings stay in the journal and are sent once it exists",
                kafka.topic
            ),
        }
    }
}

/// Whether a failure calls for asking the broker what is wrong: librdkafka
/// reports a missing topic as a timeout when the topic never appears, and
/// readings purged after a lost connection say nothing about why.
pub fn calls_for_diagnosis(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
        )
    )
}

/// What a failure that needs no diagnosis says about the session: an error
/// the broker answered with is a refusal (unknown producer id, fenced epoch,
/// sequence errors, an unknown server error); librdkafka's own errors
/// (codes below -1: transport, resolution, ...) say the broker did not
/// answer.
pub fn episode_of(error: &KafkaError) -> Episode {
    match error.rdkafka_error_code() {
        Some(code) if code as i32 >= RDKafkaErrorCode::Unknown as i32 => Episode::Refused,
        _ => Episode::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn errors_the_broker_answered_with_are_refusals() {
        for code in [
            RDKafkaErrorCode::Unknown,
            RDKafkaErrorCode::UnknownProducerId,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::PolicyViolation,
        ] {
            assert_eq!(episode_of(&production(code)), Episode::Refused, "{code:?}");
            assert!(!calls_for_diagnosis(&production(code)), "{code:?}");
        }
    }

    #[test]
    fn librdkafkas_own_errors_say_the_broker_did_not_answer() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::Resolve,
        ] {
            assert_eq!(
                episode_of(&production(code)),
                Episode::Unreachable,
                "{code:?}"
            );
        }
    }

    #[test]
    fn timeouts_purges_and_missing_topics_are_diagnosed() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::PurgeQueue,
            RDKafkaErrorCode::PurgeInflight,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(calls_for_diagnosis(&production(code)), "{code:?}");
        }
        assert_eq!(
            Diagnosis::TimedOut.episode(),
            Episode::TimedOutWhileAnswering
        );
        assert_eq!(Diagnosis::TopicMissing.episode(), Episode::TopicMissing);
        assert_eq!(
            Diagnosis::Unreachable("x".into()).episode(),
            Episode::Unreachable
        );
    }
}
