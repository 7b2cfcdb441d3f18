//! Reading the journal back: windows of records in order, merged from redb
//! and the hot segment, and what it holds ([`JournalReader::stats`]).
//! Readers take the segment as the writer last published it (a pointer
//! swapped after each commit) and read redb in their own read transactions,
//! so they never wait for a commit, nor a commit for them.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::record::{self, RecordRef};
use super::segment::Seqs;
use super::tables::{META, READINGS, next_seq};
use super::{JournalError, JournalReader, JournalRecord, JournalStats, ReadResult, Unreadable};

impl JournalReader {
    /// Reads up to `limit` records with sequence numbers above `after`, in
    /// order. A record that cannot be decoded comes back as an error in its
    /// place, so the caller can report and skip it.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<ReadResult>, JournalError> {
        self.read_range(after, u64::MAX, limit)
    }

    /// [`JournalReader::read_range`] on a blocking thread, for async callers.
    pub async fn read_range_async(
        &self,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<ReadResult>, JournalError> {
        let journal = self.clone();
        tokio::task::spawn_blocking(move || journal.read_range(after, up_to, limit))
            .await
            .expect("journal read task panicked")
    }

    /// Like [`JournalReader::read_after`], stopping after sequence number `up_to`.
    /// Readings in redb and in the hot segment come merged, in order;
    /// acknowledged ones still waiting to be deleted from redb are skipped.
    pub fn read_range(
        &self,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<ReadResult>, JournalError> {
        if after >= up_to || limit == 0 {
            return Ok(Vec::new());
        }
        // The segment first, then redb: a reading moving from one to the
        // other meanwhile is seen in both (and taken once), never in neither.
        let view = self.view();
        let no_acks = Seqs::new();
        let acked = view.hot.as_ref().map_or(&no_acks, |h| &h.cold_acks);
        let boots = &view.boots;
        let cold = self.read_db(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(READINGS)?;
            let mut out = Vec::new();
            for entry in table.range(after + 1..=up_to)? {
                let (seq, value) = entry?;
                if acked.contains(&seq.value()) {
                    continue;
                }
                out.push(to_record(seq.value(), value.value(), boots));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })?;
        let hot = view.hot.iter().flat_map(|h| {
            h.readings
                .range(after + 1..=up_to)
                .take(limit)
                .map(|(seq, v)| to_record(*seq, v, boots))
        });
        Ok(merge(cold, hot, limit))
    }

    /// Counts and bounds of what the journal holds, in redb and the hot
    /// segment.
    pub fn stats(&self) -> Result<JournalStats, JournalError> {
        // What the segment holds, then redb (a reading moving meanwhile may
        // be counted twice in this one figure, never lost).
        let view = self.view();
        let hot = view.hot.as_ref().map(|s| {
            let first = s.readings.iter().next();
            Held {
                count: s.readings.len() as u64,
                first: first.map(|(seq, frame)| (*seq, oldest_timestamp(frame))),
                last: s.readings.iter().next_back().map(|(k, _)| *k),
                next_seq: s.next_seq,
                cold_acks: s.cold_acks.clone(),
            }
        });
        let in_redb = self.redb_stats(hot.as_ref().map(|h| &h.cold_acks))?;
        let mut all = in_redb;
        if let Some(h) = hot {
            all.count += h.count;
            if h.first
                .is_some_and(|(seq, _)| all.first.is_none_or(|(f, _)| seq < f))
            {
                all.first = h.first;
            }
            all.last = all.last.max(h.last);
            all.next_seq = all.next_seq.max(h.next_seq);
        }
        Ok(JournalStats {
            records: all.count,
            first_seq: all.first.map(|(seq, _)| seq),
            oldest_timestamp_ns: all.first.and_then(|(_, ts)| ts),
            last_seq: all.last,
            next_seq: all.next_seq,
            file_bytes: self.disk().file_len(self.path()).unwrap_or(0),
            max_bytes: view.max_bytes,
            counters: view.counters,
        })
    }

    /// What redb holds, less the readings acknowledged (`acked`) but not yet
    /// deleted there.
    fn redb_stats(&self, acked: Option<&Seqs>) -> Result<Held, JournalError> {
        let no_acks = Seqs::new();
        let acked = acked.unwrap_or(&no_acks);
        self.read_db(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(READINGS)?;
            let meta = tx.open_table(META)?;
            let mut gone = 0;
            for &seq in acked {
                gone += u64::from(t.get(seq)?.is_some());
            }
            let live = |e: &Result<_, redb::StorageError>| match e {
                Ok((k, _)) => !acked.contains(&redb::AccessGuard::<u64>::value(k)),
                Err(_) => true,
            };
            let first = match t.iter()?.find(live) {
                Some(e) => {
                    let (k, v) = e?;
                    Some((k.value(), oldest_timestamp(v.value())))
                }
                None => None,
            };
            let last = match t.iter()?.rev().find(live) {
                Some(e) => Some(e?.0.value()),
                None => None,
            };
            Ok(Held {
                count: t.len()? - gone,
                first,
                last,
                next_seq: next_seq(&t, &meta)?,
                cold_acks: Seqs::new(),
            })
        })
    }

    /// Calls `f` on every record in order, in windows of `window` records, so
    /// the backlog is never all in memory. Stops at the first error `f`
    /// returns.
    pub fn for_each<E: From<JournalError>>(
        &self,
        window: usize,
        mut f: impl FnMut(ReadResult) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = 0;
        loop {
            let batch = self.read_after(after, window)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = match last {
                Ok(r) => r.seq,
                Err(u) => u.seq,
            };
            for item in batch {
                f(item)?;
            }
        }
    }
}

/// The timestamp of a stored reading: the last field of its line.
fn oldest_timestamp(value: &[u8]) -> Option<i64> {
    let r = record::decode_reading(value).ok()?;
    r.line.rsplit(' ').next()?.parse().ok()
}

/// A summary of what one part of the journal (segment or redb) holds.
struct Held {
    count: u64,
    /// The oldest: its number and timestamp.
    first: Option<(u64, Option<i64>)>,
    last: Option<u64>,
    next_seq: u64,
    /// Acknowledged readings in redb not yet deleted (the segment's).
    cold_acks: Seqs,
}

/// Two runs of records in sequence order, merged, at most `limit`.
fn merge(a: Vec<ReadResult>, b: impl Iterator<Item = ReadResult>, limit: usize) -> Vec<ReadResult> {
    let seq = |r: &ReadResult| match r {
        Ok(r) => r.seq,
        Err(u) => u.seq,
    };
    let (mut a, mut b) = (a.into_iter().peekable(), b.peekable());
    let mut out = Vec::new();
    while out.len() < limit {
        if let (Some(x), Some(y)) = (a.peek(), b.peek())
            && seq(x) == seq(y)
        {
            // Moved from the segment into redb while being read: once.
            b.next();
        }
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => seq(x) <= seq(y),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}

fn to_record(seq: u64, value: &[u8], boots: &HashMap<u32, Arc<str>>) -> ReadResult {
    match record::decode_reading(value) {
        Ok(RecordRef {
            seq: stored,
            boot,
            key,
            line,
            taken,
        }) if stored == seq => Ok(JournalRecord {
            seq,
            boot_id: boots
                .get(&boot)
                .cloned()
                .unwrap_or_else(|| Arc::from("unknown")),
            key: key.to_owned(),
            line: line.to_owned(),
            taken,
        }),
        Ok(r) => Err(Unreadable {
            seq,
            reason: format!("the record stored under {seq} says it is {}", r.seq),
        }),
        Err(e) => Err(Unreadable {
            seq,
            reason: e.to_string(),
        }),
    }
}
