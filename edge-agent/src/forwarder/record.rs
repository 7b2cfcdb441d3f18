//! The Kafka record a journaled reading becomes: its value in the configured
//! format, its key (the device id) and its headers (`docs/design.md`, "The
//! Kafka record"). Built in this one place, and pure: no I/O.

use std::borrow::Cow;

use rdkafka::message::{Header, OwnedHeaders};
use telemetry::line_protocol::{self, LineProtocolError};
use telemetry::record::{
    Format, HEADER_BOOT, HEADER_CLOCK, HEADER_CONTENT_TYPE, HEADER_MONO, HEADER_SEQ,
};

use super::restamp::{self, RestampError, Verdict};
use crate::journal::JournalRecord;

/// Bytes a record's headers and framing add to its value and key, for the
/// budget's estimate before compression.
const RECORD_OVERHEAD: usize = 80;

/// One record, ready for librdkafka.
pub struct KafkaRecord<'a> {
    pub key: &'a str,
    pub value: Cow<'a, str>,
    pub headers: OwnedHeaders,
}

impl KafkaRecord<'_> {
    /// Its size on the wire before compression (value, key and headers):
    /// what the bandwidth budget is charged.
    pub fn raw_len(&self) -> usize {
        self.value.len() + self.key.len() + RECORD_OVERHEAD
    }
}

/// Why a journaled reading cannot become a record (it is skipped, and
/// counted as unreadable).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Restamp(#[from] RestampError),
    #[error("the journaled line does not parse: {0}")]
    Parse(#[from] LineProtocolError),
    #[error("the reading cannot be encoded as {format:?}: {source}")]
    Encode {
        format: Format,
        source: telemetry::InvalidReading,
    },
}

/// The record for `record`, restamped or tagged as `verdict` says (never
/// [`Verdict::Hold`]), in `format`.
pub fn build(
    record: &JournalRecord,
    verdict: Verdict,
    format: Format,
) -> Result<KafkaRecord<'_>, RecordError> {
    let line = restamp::apply(&record.line, verdict)?;
    let value = match format {
        Format::Influx => line,
        Format::Json => {
            let reading = line_protocol::parse_line(&line, 0)?;
            Cow::Owned(
                format
                    .encode(&reading)
                    .map_err(|source| RecordError::Encode { format, source })?,
            )
        }
    };
    Ok(KafkaRecord {
        key: &record.key,
        value,
        headers: headers(record, verdict, format),
    })
}

/// `buoy-seq`, `buoy-boot`, `content-type`, and `buoy-mono` and
/// `buoy-clock` when known.
fn headers(record: &JournalRecord, verdict: Verdict, format: Format) -> OwnedHeaders {
    let seq = record.seq.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: HEADER_SEQ,
            value: Some(seq.as_str()),
        })
        .insert(Header {
            key: HEADER_BOOT,
            value: Some(&*record.boot_id),
        })
        .insert(Header {
            key: HEADER_CONTENT_TYPE,
            value: Some(format.content_type()),
        });
    if let Some(taken) = record.taken {
        headers = headers.insert(Header {
            key: HEADER_MONO,
            value: Some(taken.mono_ns.to_string().as_str()),
        });
    }
    if let Some(clock) = verdict.header() {
        headers = headers.insert(Header {
            key: HEADER_CLOCK,
            value: Some(clock),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::message::Headers;

    use super::*;
    use crate::journal::record::Taken;

    fn journaled(taken: Option<Taken>) -> JournalRecord {
        JournalRecord {
            seq: 42,
            boot_id: Arc::from("boot-a"),
            key: "pi-7".into(),
            line: "weather,device_id=pi-7 temperature_c=21.5 1700000000000000000".into(),
            taken,
        }
    }

    fn header_map(r: &KafkaRecord<'_>) -> Vec<(String, String)> {
        r.headers
            .iter()
            .map(|h| {
                let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                (h.key.to_owned(), value.unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn a_reading_goes_out_as_journaled_with_its_sequence_boot_and_format() {
        let r = journaled(None);
        let out = build(&r, Verdict::AsIs(None), Format::Influx).unwrap();
        assert_eq!(out.key, "pi-7");
        assert_eq!(out.value, r.line.as_str());
        assert!(matches!(out.value, Cow::Borrowed(_)), "no copy of the line");
        assert_eq!(
            header_map(&out),
            [
                ("buoy-seq".into(), "42".into()),
                ("buoy-boot".into(), "boot-a".into()),
                ("content-type".into(), "text/plain; format=influx".into()),
            ]
        );
        assert_eq!(out.raw_len(), r.line.len() + 4 + RECORD_OVERHEAD);
    }

    #[test]
    fn time_since_boot_and_the_clock_verdict_travel_as_headers() {
        let taken = Some(Taken {
            mono_ns: 5_000,
            synced: false,
        });
        let r = journaled(taken);
        let out = build(
            &r,
            Verdict::Restamp(1_800_000_000_000_000_000),
            Format::Influx,
        )
        .unwrap();
        assert!(out.value.ends_with(" 1800000000000000000"), "{}", out.value);
        let headers = header_map(&out);
        assert!(headers.contains(&("buoy-mono".into(), "5000".into())));
        assert!(headers.contains(&("buoy-clock".into(), "corrected".into())));
    }

    #[test]
    fn json_is_encoded_from_the_journaled_line() {
        let r = journaled(None);
        let out = build(&r, Verdict::AsIs(None), Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.value).unwrap();
        assert_eq!(v["name"], "weather");
        assert_eq!(v["fields"]["temperature_c"], 21.5);
        assert!(header_map(&out).contains(&("content-type".into(), "application/json".into())));
    }

    #[test]
    fn a_damaged_line_is_an_error_not_a_record() {
        let mut r = journaled(None);
        r.line = "weather temperature_c=".into();
        assert!(build(&r, Verdict::AsIs(None), Format::Json).is_err());
        assert!(build(&r, Verdict::Tag, Format::Influx).is_err());
    }
}
