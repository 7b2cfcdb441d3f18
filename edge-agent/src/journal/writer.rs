//! The journal writer: the one task that writes to the journal. It owns
//! the [`Journal`] (the write handle); everyone else reads through a
//! [`super::JournalReader`].
//!
//! Samplers send readings over a bounded channel; the forwarder sends the
//! sequence numbers Kafka acknowledged. The writer validates and encodes
//! each reading as it takes it, and groups readings and acks into one
//! durable commit at least every `journal.commit_interval` (or sooner when
//! `journal.max_batch` readings are waiting), then announces its
//! [`Progress`] on a watch channel, which is what wakes the forwarder. One
//! commit runs at a time, on a blocking thread; the next readings are taken
//! and encoded meanwhile.
//!
//! With `journal.commit_interval = 0`, every reading is its own commit: no
//! reading waits, at the cost of one fsync per reading (flash wear; see
//! docs/performance.md).
//!
//! What the full-journal policy did (dropped, refused, aggregated) is counted
//! in [`Stats`] and logged at most once a minute with the totals since the
//! last line.
//!
//! When the samplers stop, the readings still waiting are committed at once
//! and `Progress::sampling_done` is set, so the forwarder can drain the journal
//! before it stops. The writer itself stops when the forwarder's ack sender is
//! gone too, after a last commit: nothing handed to it is left uncommitted on a
//! clean shutdown. A failing commit (disk full, I/O error) is retried with
//! backoff, its readings back in front of those that arrived since; the
//! readings in memory stay under twice `max_batch`, and the bounded channel
//! pushes back on the samplers.

use std::sync::Arc;
use std::time::Duration;

use telemetry::backoff::Backoff;
use telemetry::throttle::Throttle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::WriterSettings;
use super::{Committed, Counters, Encoded, Journal, JournalError, Sampled};
use crate::stats::Stats;

/// Readings that may wait in the channel in front of the writer.
const CHANNEL_CAPACITY: usize = 16_384;
/// Attempts at the last commit on shutdown before giving up.
const FINAL_ATTEMPTS: u32 = 3;

/// The ends of the writer's channels, handed to the other stages.
pub struct WriterHandles {
    /// Where samplers send readings.
    pub readings: mpsc::Sender<Sampled>,
    /// Where the forwarder sends acknowledged sequence numbers. Unbounded,
    /// but never holds more than the forwarder's in-flight window.
    pub acks: mpsc::UnboundedSender<Vec<u64>>,
    /// What has been committed.
    pub committed: watch::Receiver<Progress>,
    /// Changes the commit interval, batch size and full-journal policy of
    /// the running writer.
    pub settings: watch::Sender<WriterSettings>,
}

/// How a failed commit is retried: with a backoff, logged at most once a
/// minute.
struct Retry {
    backoff: Backoff,
    log: Throttle,
}

impl Retry {
    fn new() -> Self {
        Retry {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            log: Throttle::new(Duration::from_secs(60)),
        }
    }
}

impl WriterSettings {
    /// Settings for `journal` as opened, committing every `commit_interval`
    /// at most `max_batch` readings.
    pub fn for_journal(journal: &Journal, commit_interval: Duration, max_batch: usize) -> Self {
        let o = journal.options();
        WriterSettings {
            commit_interval,
            max_batch,
            max_bytes: o.max_bytes,
            when_full: o.when_full,
            downsample_window: o.downsample_window,
        }
    }

    fn apply_policy(&self, journal: &mut Journal) {
        let o = journal.options();
        if (o.max_bytes, o.when_full, o.downsample_window)
            != (self.max_bytes, self.when_full, self.downsample_window)
        {
            journal.set_policy(self.max_bytes, self.when_full, self.downsample_window);
        }
    }
}

/// What the writer has committed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The highest committed sequence number (0 if none ever).
    pub last_seq: u64,
    /// Every sampler has stopped and its last readings are committed: no
    /// sequence number above `last_seq` will appear.
    pub sampling_done: bool,
}

pub struct JournalWriter {
    /// `None` only while a commit runs on a blocking thread.
    journal: Option<Journal>,
    readings: mpsc::Receiver<Sampled>,
    acks: mpsc::UnboundedReceiver<Vec<u64>>,
    committed: watch::Sender<Progress>,
    /// The settings in force.
    current: WriterSettings,
    settings: watch::Receiver<WriterSettings>,
    stats: Arc<Stats>,
    policy_log: Throttle,
    /// Policy actions since the last log line about them.
    policy_unlogged: Counters,
    /// Readings that could not be encoded, logged at most once a minute.
    rejected_log: Throttle,
}

/// What is waiting to be committed: readings already encoded, so that the
/// encoding of the next commit overlaps the writing of the one before.
#[derive(Default)]
struct Pending {
    lines: Vec<Encoded>,
    acked: Vec<u64>,
    /// When the oldest of them arrived plus the commit interval.
    due: Option<Instant>,
    /// Readings in the commit being written, which come back here if it
    /// fails.
    committing: usize,
    /// After a failed commit: not before then, however many wait.
    retry_at: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.acked.is_empty()
    }

    /// How many more readings may be taken now. A commit takes at most
    /// `max_batch` new readings, and the readings in memory (waiting, and in
    /// the commit being written) stay under twice that however often
    /// commits fail; then the channel pushes back on the samplers.
    fn room(&self, max_batch: usize) -> usize {
        let held = self.lines.len() + self.committing;
        max_batch
            .saturating_sub(self.lines.len())
            .min((2 * max_batch).saturating_sub(held))
    }

    /// Whether to start a commit (when none is running): a full batch, or
    /// the interval up; never before the backoff after a failed commit.
    fn commit_now(&self, max_batch: usize, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        self.lines.len() >= max_batch || self.due.is_some_and(|d| now >= d)
    }

    /// When the writer must look again, with nothing arriving: when the
    /// interval is up, but not before the backoff after a failed commit.
    fn wake_at(&self) -> Option<Instant> {
        let due = self.due?;
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }

    /// A failed commit's readings and acks go back in front of what arrived
    /// since, in order.
    fn put_back(&mut self, mut lines: Vec<Encoded>, mut acked: Vec<u64>) {
        lines.append(&mut self.lines);
        acked.append(&mut self.acked);
        (self.lines, self.acked) = (lines, acked);
    }
}

/// A commit running on a blocking thread. It holds the journal, and gives it
/// back with what it was given, so that a failed commit can be retried.
type InFlight = tokio::task::JoinHandle<Done>;

struct Done {
    journal: Journal,
    result: Result<Committed, JournalError>,
    lines: Vec<Encoded>,
    acked: Vec<u64>,
}

/// The readings a commit takes at most while it encodes without yielding.
const TAKE_AT_ONCE: usize = 1024;

impl JournalWriter {
    /// A writer owning `journal`, committing as `initial` says. If the
    /// journal cannot be read, the error comes back with it.
    pub fn new(
        mut journal: Journal,
        initial: WriterSettings,
        stats: Arc<Stats>,
    ) -> Result<(JournalWriter, WriterHandles), Box<(JournalError, Journal)>> {
        initial.apply_policy(&mut journal);
        let last = match journal.stats() {
            Ok(stats) => stats.next_seq - 1,
            Err(e) => return Err(Box::new((e, journal))),
        };
        let (readings_tx, readings) = mpsc::channel(CHANNEL_CAPACITY);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (committed, committed_rx) = watch::channel(Progress {
            last_seq: last,
            sampling_done: false,
        });
        let (settings_tx, settings) = watch::channel(initial);
        let writer = JournalWriter {
            journal: Some(journal),
            readings,
            acks,
            committed,
            current: initial,
            settings,
            stats,
            policy_log: Throttle::new(Duration::from_secs(60)),
            policy_unlogged: Counters::default(),
            rejected_log: Throttle::new(Duration::from_secs(60)),
        };
        let handles = WriterHandles {
            readings: readings_tx,
            acks: acks_tx,
            committed: committed_rx,
            settings: settings_tx,
        };
        Ok((writer, handles))
    }

    /// The journal back, from a writer that never ran (the pipeline could
    /// not start).
    pub fn into_journal(self) -> Journal {
        self.journal
            .expect("the writer holds the journal between commits")
    }

    /// Runs until every reading and ack sender is dropped, then commits what
    /// is left and returns. One commit runs at a time, on a blocking thread;
    /// meanwhile the next readings are taken and encoded.
    pub async fn run(mut self) -> Result<(), JournalError> {
        let mut pending = Pending::default();
        let mut in_flight: Option<InFlight> = None;
        let (mut readings_open, mut acks_open) = (true, true);
        let mut settings_open = true;
        let mut retry = Retry::new();
        loop {
            let max_batch = self.current.effective_max_batch();
            let full = pending.room(max_batch) == 0;
            if in_flight.is_none() {
                if pending.commit_now(max_batch, Instant::now()) {
                    in_flight = Some(self.start_commit(&mut pending));
                    continue;
                }
                if !readings_open && !acks_open {
                    break;
                }
                if !readings_open
                    && pending.lines.is_empty()
                    && !self.committed.borrow().sampling_done
                {
                    self.committed.send_modify(|p| p.sampling_done = true);
                }
            }
            let wake = pending
                .wake_at()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                done = async { in_flight.as_mut().expect("checked").await }, if in_flight.is_some() => {
                    in_flight = None;
                    let done = done.expect("journal commit task panicked");
                    self.finish_or_retry(done, &mut pending, &mut retry);
                }
                r = self.readings.recv(), if readings_open && !full => match r {
                    Some(r) => self.take(&mut pending, r),
                    None => {
                        readings_open = false;
                        // Commit the last readings now, not at the interval,
                        // so the forwarder can drain them before stopping.
                        if !pending.lines.is_empty() {
                            pending.due = Some(Instant::now());
                        }
                    }
                },
                a = self.acks.recv(), if acks_open => match a {
                    Some(seqs) => {
                        pending.acked.extend(seqs);
                        self.arm(&mut pending);
                    }
                    None => acks_open = false,
                },
                _ = tokio::time::sleep_until(wake), if pending.due.is_some() && in_flight.is_none() => {}
                changed = self.settings.changed(), if settings_open => {
                    settings_open = changed.is_ok();
                    self.apply_settings(&mut pending);
                }
            }
        }
        self.last_commit(&mut pending).await
    }

    /// `first`, and whatever else is already queued (up to a limit), encoded,
    /// without waiting.
    fn take(&mut self, pending: &mut Pending, first: Sampled) {
        self.encode(pending, &first);
        let max_batch = self.current.effective_max_batch();
        for _ in 1..TAKE_AT_ONCE {
            if pending.room(max_batch) == 0 {
                break;
            }
            match self.readings.try_recv() {
                Ok(r) => self.encode(pending, &r),
                Err(_) => break,
            }
        }
        self.arm(pending);
    }

    /// Encodes one reading into `pending`; one that cannot be encoded is
    /// counted and logged (at most once a minute), and not journaled.
    fn encode(&mut self, pending: &mut Pending, sampled: &Sampled) {
        match Encoded::new(sampled) {
            Ok(e) => pending.lines.push(e),
            Err(e) => {
                self.stats.rejected(1);
                if let Some(held_back) = self.rejected_log.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        similar_not_logged = held_back,
                        "a reading could not be encoded and was not journaled"
                    );
                }
            }
        }
    }

    /// New settings: the policy goes to the journal (or to it when its
    /// commit is back), and a shorter interval applies to what is already
    /// waiting.
    fn apply_settings(&mut self, pending: &mut Pending) {
        let new = *self.settings.borrow_and_update();
        self.current = new;
        if let Some(journal) = self.journal.as_mut() {
            new.apply_policy(journal);
        }
        if let Some(due) = pending.due {
            pending.due = Some(due.min(Instant::now() + new.commit_interval));
        }
    }

    /// After a commit: on failure the readings stay in memory and the
    /// commit is tried again after a backoff, logged (rate-limited) with why.
    fn finish_or_retry(&mut self, done: Done, pending: &mut Pending, retry: &mut Retry) {
        let Err(e) = self.finish_commit(done, pending) else {
            retry.backoff.reset();
            retry.log.reset();
            return;
        };
        if let Some(held_back) = retry.log.allow(std::time::Instant::now()) {
            let what = if e.is_no_space() {
                "the journal has no room (journal.max_bytes or a full disk)"
            } else {
                "journal commit failed"
            };
            tracing::error!(
                error = %e,
                waiting = pending.lines.len(),
                similar_errors_not_logged = held_back,
                "{what}; the readings stay in memory and the commit is retried"
            );
        }
        let retry_at = Instant::now() + retry.backoff.next_delay(rand::random());
        (pending.due, pending.retry_at) = (Some(retry_at), Some(retry_at));
    }

    /// On the way out: commits what is left, a few times if need be.
    async fn last_commit(&mut self, pending: &mut Pending) -> Result<(), JournalError> {
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let done = self.start_commit(pending).await;
            match self.finish_commit(done.expect("journal commit task panicked"), pending) {
                Ok(()) => {}
                Err(e) if attempt >= FINAL_ATTEMPTS => {
                    tracing::error!(
                        error = %e,
                        lost = pending.lines.len(),
                        "last journal commit failed; these readings were never journaled"
                    );
                    return Err(e);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(())
    }

    /// Starts the commit clock when the first item arrives.
    fn arm(&self, pending: &mut Pending) {
        if pending.due.is_none() {
            pending.due = Some(Instant::now() + self.current.commit_interval);
        }
    }

    /// Starts committing everything pending, off the async runtime.
    fn start_commit(&mut self, pending: &mut Pending) -> InFlight {
        let lines = std::mem::take(&mut pending.lines);
        let acked = std::mem::take(&mut pending.acked);
        pending.due = None;
        pending.retry_at = None;
        pending.committing = lines.len();
        let mut journal = self
            .journal
            .take()
            .expect("the writer holds the journal between commits");
        tokio::task::spawn_blocking(move || {
            let result = journal.commit_encoded(&lines, &acked);
            Done {
                journal,
                result,
                lines,
                acked,
            }
        })
    }

    /// Takes the journal back from a commit and announces what it
    /// committed. On failure its readings and acks go back in front of
    /// what is pending, for the next attempt.
    fn finish_commit(&mut self, done: Done, pending: &mut Pending) -> Result<(), JournalError> {
        let Done {
            mut journal,
            result,
            lines,
            acked,
        } = done;
        // Settings that changed while the commit ran.
        self.current.apply_policy(&mut journal);
        self.journal = Some(journal);
        pending.committing = 0;
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                pending.put_back(lines, acked);
                return Err(e);
            }
        };
        let appended = done.seqs.end - done.seqs.start;
        self.stats.journaled(appended, done.deleted);
        if done.policy != Counters::default() {
            self.report_policy(&done.policy);
        }
        // The highest number given, to readings or to aggregates the
        // full-journal policy wrote: all of it is for the forwarder.
        let last_seq = done.seqs.end.saturating_sub(1);
        if last_seq > self.committed.borrow().last_seq {
            tracing::debug!(
                last_seq,
                appended,
                deleted = done.deleted,
                "journal committed"
            );
            self.committed.send_modify(|p| p.last_seq = last_seq);
        }
        Ok(())
    }
}

impl JournalWriter {
    /// Counts what the full-journal policy did and logs it, at most once a
    /// minute, with the totals since the last line.
    fn report_policy(&mut self, done: &Counters) {
        self.stats.journal_policy(done);
        self.policy_unlogged.add(done);
        if let Some(held_back) = self.policy_log.allow(std::time::Instant::now()) {
            let c = std::mem::take(&mut self.policy_unlogged);
            let policy = self.current.when_full.as_str();
            tracing::warn!(
                policy,
                dropped_oldest = c.dropped_oldest,
                rejected_new = c.rejected_new,
                aggregated = c.aggregated,
                aggregates = c.aggregates,
                similar_not_logged = held_back,
                "the journal is full (journal.max_bytes or the disk); readings were {}",
                match self.current.when_full {
                    super::WhenFull::DropOldest => "dropped, oldest first",
                    super::WhenFull::RejectNew => "refused",
                    super::WhenFull::Downsample => "aggregated, oldest first",
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::JournalReader;
    use super::*;

    fn reading(i: i64) -> telemetry::Reading {
        telemetry::Reading::new("weather", 1_700_000_000_000_000_000 + i)
            .with_tag("device_id", "pi-1")
            .with_field("pressure_hpa", i as f64)
    }

    /// A writer on a fresh journal, committing at most 100 readings at a time.
    struct Setup {
        _dir: tempfile::TempDir,
        journal: JournalReader,
        stats: Arc<Stats>,
        writer: JournalWriter,
        handles: WriterHandles,
    }

    fn setup(interval: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(
            &dir.path().join("j.redb"),
            super::super::JournalOptions::for_inspection(),
            "b",
        )
        .unwrap();
        let reader = journal.reader();
        let stats = Arc::new(Stats::default());
        let settings = WriterSettings::for_journal(&journal, interval, 100);
        let (writer, handles) = JournalWriter::new(journal, settings, stats.clone())
            .map_err(|e| e.0)
            .unwrap();
        Setup {
            _dir: dir,
            journal: reader,
            stats,
            writer,
            handles,
        }
    }

    #[tokio::test]
    async fn groups_readings_into_one_commit_per_interval() {
        let Setup {
            _dir,
            journal,
            writer,
            handles,
            ..
        } = setup(Duration::from_secs(2));
        let task = tokio::spawn(writer.run());
        let mut committed = handles.committed.clone();
        for i in 0..10 {
            handles.readings.send(reading(i).into()).await.unwrap();
        }
        // Nothing is committed before the interval has passed...
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(committed.borrow().last_seq, 0);
        // ...then all ten are, in one commit.
        committed.changed().await.unwrap();
        assert_eq!(committed.borrow().last_seq, 10);
        assert_eq!(journal.stats().unwrap().records, 10);
        drop(handles);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_new_commit_interval_applies_to_the_running_writer() {
        let Setup {
            _dir,
            writer,
            handles,
            ..
        } = setup(Duration::from_secs(3600));
        let task = tokio::spawn(writer.run());
        for i in 0..3 {
            handles.readings.send(reading(i).into()).await.unwrap();
        }
        let mut committed = handles.committed.clone();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(committed.borrow().last_seq, 0, "an hour has not passed");
        handles
            .settings
            .send_modify(|s| s.commit_interval = Duration::from_millis(50));
        // What was waiting is committed at the new interval.
        tokio::time::timeout(
            Duration::from_secs(10),
            committed.wait_for(|p| p.last_seq == 3),
        )
        .await
        .expect("committed at the new interval")
        .unwrap();
        drop((handles, committed));
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn commit_interval_zero_commits_every_reading_on_its_own() {
        let Setup {
            _dir,
            stats,
            writer,
            handles,
            ..
        } = setup(Duration::ZERO);
        let task = tokio::spawn(writer.run());
        // All five are queued before the writer wakes: still five commits.
        for i in 0..5 {
            handles.readings.send(reading(i).into()).await.unwrap();
        }
        let mut committed = handles.committed.clone();
        committed.wait_for(|p| p.last_seq == 5).await.unwrap();
        assert_eq!(stats.snapshot().commits, 5);
        drop((handles, committed));
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readings_taken_while_a_commit_runs_keep_their_order() {
        let Setup {
            _dir,
            journal,
            writer,
            handles,
            ..
        } = setup(Duration::from_millis(1));
        let task = tokio::spawn(writer.run());
        // At most 100 per commit, a commit every millisecond: most readings
        // arrive while the commit before them is being written.
        for i in 0..2_000 {
            handles.readings.send(reading(i).into()).await.unwrap();
        }
        let mut committed = handles.committed.clone();
        committed.wait_for(|p| p.last_seq == 2_000).await.unwrap();
        drop((handles, committed));
        task.await.unwrap().unwrap();
        let records = journal.read_after(0, 5_000).unwrap();
        assert_eq!(records.len(), 2_000);
        for (i, r) in records.into_iter().enumerate() {
            let r = r.unwrap();
            assert_eq!(r.seq, i as u64 + 1);
            let timestamp = r.reading().unwrap().timestamp_ns;
            assert_eq!(timestamp, reading(i as i64).timestamp_ns, "seq {}", r.seq);
        }
    }

    #[tokio::test]
    async fn a_reading_that_cannot_be_encoded_is_counted_and_the_rest_journaled() {
        let Setup {
            _dir,
            journal,
            stats,
            writer,
            handles,
        } = setup(Duration::from_millis(10));
        let task = tokio::spawn(writer.run());
        let broken = reading(1).with_field("pressure_hpa", f64::NAN);
        for r in [reading(0), broken, reading(2)] {
            handles.readings.send(r.into()).await.unwrap();
        }
        let mut committed = handles.committed.clone();
        committed.wait_for(|p| p.last_seq == 2).await.unwrap();
        assert_eq!(stats.snapshot().rejected, 1);
        drop((handles, committed));
        task.await.unwrap().unwrap();
        assert_eq!(journal.stats().unwrap().records, 2);
    }

    #[test]
    fn a_failed_commit_goes_back_in_front_of_what_arrived_since() {
        let line = |n: u64| Encoded {
            key: "pi-1".into(),
            line: format!("m v={n} {n}"),
            taken: None,
        };
        let mut pending = Pending {
            lines: vec![line(3)],
            acked: vec![9],
            ..Pending::default()
        };
        pending.put_back(vec![line(1), line(2)], vec![7, 8]);
        assert_eq!(pending.lines, [line(1), line(2), line(3)]);
        assert_eq!(pending.acked, [7, 8, 9]);
    }

    #[test]
    fn commits_that_keep_failing_hold_at_most_twice_max_batch_and_wait_for_the_backoff() {
        let line = Encoded {
            key: "pi-1".into(),
            line: "m v=1 1".into(),
            taken: None,
        };
        let (max_batch, now) = (100, Instant::now());
        let mut pending = Pending::default();
        for attempt in 0..10 {
            // Readings arrive as long as there is room...
            while pending.room(max_batch) > 0 {
                pending.lines.push(line.clone());
            }
            assert!(pending.lines.len() + pending.committing <= 2 * max_batch);
            if attempt > 0 {
                // ...and a full batch waits for the backoff after a failure.
                assert!(!pending.commit_now(max_batch, now));
            }
            assert!(pending.commit_now(max_batch, now + Duration::from_secs(60)));
            // The commit starts, more readings arrive meanwhile, it fails.
            let (lines, acked) = (std::mem::take(&mut pending.lines), Vec::new());
            pending.committing = lines.len();
            while pending.room(max_batch) > 0 {
                pending.lines.push(line.clone());
            }
            assert!(pending.lines.len() + pending.committing <= 2 * max_batch);
            pending.committing = 0;
            pending.put_back(lines, acked);
            pending.retry_at = Some(now + Duration::from_secs(1));
            // A shorter interval set meanwhile does not cut the backoff.
            pending.due = Some(now);
            assert_eq!(pending.wake_at(), pending.retry_at);
        }
        assert_eq!(pending.lines.len(), 2 * max_batch);
    }

    #[tokio::test]
    async fn deletes_acknowledged_readings_and_commits_the_rest_on_shutdown() {
        let Setup {
            _dir,
            journal,
            writer,
            handles,
            ..
        } = setup(Duration::from_secs(3600));
        let task = tokio::spawn(writer.run());
        for i in 0..150 {
            handles.readings.send(reading(i).into()).await.unwrap();
        }
        // max_batch (100) forces a commit long before the hour is up.
        let mut committed = handles.committed.clone();
        committed.changed().await.unwrap();
        assert!(committed.borrow().last_seq >= 100);
        handles.acks.send((1..=40).collect()).unwrap();
        // The samplers stopping commits their last readings at once, not an
        // hour later, and says so.
        let WriterHandles { readings, acks, .. } = handles;
        drop(readings);
        committed
            .wait_for(|p| p.sampling_done && p.last_seq == 150)
            .await
            .unwrap();
        // The forwarder stopping too ends the writer after a last commit.
        drop(acks);
        task.await.unwrap().unwrap();
        let stats = journal.stats().unwrap();
        assert_eq!(stats.records, 110);
        assert_eq!(stats.first_seq, Some(41));
        assert_eq!(stats.next_seq, 151);
    }
}
