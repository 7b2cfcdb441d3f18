//! `edge-agent journal stats` and `edge-agent journal export`: what the
//! journal holds, and the backlog itself, read in bounded windows and never
//! consumed.

use std::io::{self, Write};

use serde::Serialize;
use telemetry::record::Format;
use telemetry::telegraf_json;

use super::downsample::is_aggregate_line;
use super::{Counters, Journal, JournalError, JournalReader};

/// Records read per window.
const WINDOW: usize = 2_000;

/// Everything `journal stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    pub path: String,
    /// Records waiting: raw readings plus aggregates.
    pub records: u64,
    pub readings: u64,
    pub aggregates_waiting: u64,
    /// Records whose frame is damaged (skipped by the forwarder).
    pub unreadable: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub next_seq: u64,
    /// Oldest and newest reading timestamps, ns since the epoch.
    pub oldest_ns: Option<i64>,
    pub newest_ns: Option<i64>,
    pub file_bytes: u64,
    pub max_bytes: u64,
    /// The most the file can hold: the largest size it can double to within
    /// `max_bytes` and the disk's free space.
    pub capacity_bytes: u64,
    /// Bytes of the file in use.
    pub used_bytes: u64,
    pub dropped_oldest: u64,
    pub rejected_new: u64,
    pub aggregated: u64,
    pub aggregates_written: u64,
    pub quarantined: u64,
    pub salvaged: u64,
}

/// Errors of the inspection commands.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the export: {0}")]
    Write(#[from] io::Error),
}

/// Reads the whole journal, window by window, and sums it up.
pub fn inspect(journal: &mut Journal) -> Result<Inspection, JournalError> {
    let stats = journal.stats()?;
    let space = journal.measure()?;
    let Counters {
        dropped_oldest,
        rejected_new,
        aggregated,
        aggregates,
        quarantined,
        salvaged,
    } = stats.counters;
    let mut out = Inspection {
        path: journal.path().display().to_string(),
        records: stats.records,
        readings: 0,
        aggregates_waiting: 0,
        unreadable: 0,
        first_seq: stats.first_seq,
        last_seq: stats.last_seq,
        next_seq: stats.next_seq,
        oldest_ns: None,
        newest_ns: None,
        file_bytes: stats.file_bytes,
        max_bytes: stats.max_bytes,
        capacity_bytes: space.capacity(),
        used_bytes: space.used,
        dropped_oldest,
        rejected_new,
        aggregated,
        aggregates_written: aggregates,
        quarantined,
        salvaged,
    };
    journal.for_each(WINDOW, |item| {
        let Ok(record) = item else {
            out.unreadable += 1;
            return Ok::<(), JournalError>(());
        };
        if is_aggregate_line(&record.line) {
            out.aggregates_waiting += 1;
        } else {
            out.readings += 1;
        }
        // The timestamp is the last token of a line.
        if let Some(ts) = record
            .line
            .rsplit_once(' ')
            .and_then(|(_, t)| t.parse::<i64>().ok())
        {
            out.oldest_ns = Some(out.oldest_ns.map_or(ts, |o| o.min(ts)));
            out.newest_ns = Some(out.newest_ns.map_or(ts, |n| n.max(ts)));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Writes every reading to `out`, one per line, in sequence order, each
/// line after its sequence number and a tab if `with_seq`. Returns how many
/// were written and how many were unreadable (reported, skipped).
pub fn export(
    journal: &JournalReader,
    format: Format,
    with_seq: bool,
    out: &mut impl Write,
) -> Result<(u64, u64), InspectError> {
    let (mut written, mut unreadable) = (0, 0);
    journal.for_each(WINDOW, |item| {
        let record = match item {
            Ok(record) => record,
            Err(bad) => {
                unreadable += 1;
                eprintln!("record {} is unreadable ({}); skipped", bad.seq, bad.reason);
                return Ok::<(), InspectError>(());
            }
        };
        let line = match format {
            Format::Influx => record.line.clone(),
            Format::Json => match record.reading().map(|r| telegraf_json::encode(&r)) {
                Ok(Ok(json)) => json,
                Ok(Err(e)) => {
                    unreadable += 1;
                    eprintln!(
                        "record {} cannot be written as JSON ({e}); skipped",
                        record.seq
                    );
                    return Ok(());
                }
                Err(e) => {
                    unreadable += 1;
                    eprintln!("record {} is not line protocol ({e}); skipped", record.seq);
                    return Ok(());
                }
            },
        };
        if with_seq {
            write!(out, "{}\t", record.seq)?;
        }
        writeln!(out, "{line}")?;
        written += 1;
        Ok(())
    })?;
    out.flush()?;
    Ok((written, unreadable))
}

/// `stats` for a person.
pub fn describe(i: &Inspection, now_ns: i64) -> String {
    let when = |ns: Option<i64>| match ns {
        None => "-".to_owned(),
        Some(ns) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
            let age = std::time::Duration::from_secs(((now_ns - ns).max(0) / 1_000_000_000) as u64);
            format!(
                "{} ({} ago)",
                humantime::format_rfc3339_nanos(t),
                humantime::format_duration(age)
            )
        }
    };
    let seqs = match (i.first_seq, i.last_seq) {
        (Some(a), Some(b)) => format!("{a} .. {b} (next {})", i.next_seq),
        _ => format!("none waiting (next {})", i.next_seq),
    };
    let limit = if i.max_bytes == u64::MAX {
        String::new()
    } else {
        format!(
            " of {} (journal.max_bytes)",
            telemetry::units::ByteSize(i.max_bytes)
        )
    };
    format!(
        "journal      {}\n\
         waiting      {} records: {} readings, {} aggregates, {} unreadable\n\
         sequence     {seqs}\n\
         oldest       {}\n\
         newest       {}\n\
         file size    {} bytes{limit}\n\
         in use       {} bytes; the file can grow to about {} (it grows by doubling)\n\
         dropped      {} oldest readings deleted to make room\n\
         rejected     {} new readings refused while full\n\
         aggregated   {} readings replaced by {} aggregates\n\
         quarantined  {} damaged journal files moved aside; {} readings salvaged from them\n",
        i.path,
        i.records,
        i.readings,
        i.aggregates_waiting,
        i.unreadable,
        when(i.oldest_ns),
        when(i.newest_ns),
        i.file_bytes,
        i.used_bytes,
        i.capacity_bytes,
        i.dropped_oldest,
        i.rejected_new,
        i.aggregated,
        i.aggregates_written,
        i.quarantined,
        i.salvaged,
    )
}
