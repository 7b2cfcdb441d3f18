//! `edge-agent run --report-commits FILE`: the highest committed sequence
//! number, one line per commit, written only after the commit is durable.
//!
//! The writer publishes its [`Progress`] once a commit has returned (redb's
//! fsync included). This task follows it and appends `"<last_seq>\n"` to the
//! file in one `write`, so a line that reached the file is a promise that
//! every reading up to that number survives a power cut: the promise the
//! power-cut harness (`scripts/powercut`) checks after every cut, from a
//! serial port the cut cannot reach back into. Commits in quick succession
//! may be reported as one line (the newest); none is reported early.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::writer::Progress;

/// Why the report file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("commit report {path}: {source}")]
pub struct ReportError {
    path: PathBuf,
    source: std::io::Error,
}

/// Opens `path` for appending and reports every commit `committed` shows
/// until the writer is gone. A failed write is logged once and ends the
/// reporting: the journal goes on without it.
pub fn start(
    path: &Path,
    mut committed: watch::Receiver<Progress>,
) -> Result<tokio::task::JoinHandle<()>, ReportError> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| ReportError {
            path: path.to_owned(),
            source,
        })?;
    let path = path.to_owned();
    Ok(tokio::spawn(async move {
        let mut reported = 0;
        loop {
            let last_seq = committed.borrow_and_update().last_seq;
            if last_seq > reported {
                let line = format!("{last_seq}\n");
                let write = tokio::task::spawn_blocking(move || {
                    let written = file.write_all(line.as_bytes());
                    (file, written)
                });
                let Ok((f, written)) = write.await else {
                    return;
                };
                if let Err(e) = written {
                    tracing::warn!(path = %path.display(), error = %e, "cannot report commits; no longer reporting them");
                    return;
                }
                file = f;
                reported = last_seq;
            }
            if committed.changed().await.is_err() {
                return;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_commit_is_reported_after_it_returned_and_the_task_ends_with_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commits");
        let (tx, rx) = watch::channel(Progress {
            last_seq: 0,
            sampling_done: false,
        });
        let task = start(&path, rx).unwrap();
        for last_seq in [3, 7, 12] {
            tx.send_modify(|p| p.last_seq = last_seq);
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while !std::fs::read_to_string(&path)
                    .unwrap()
                    .ends_with(&format!("{last_seq}\n"))
                {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the commit is reported");
        }
        drop(tx);
        task.await.unwrap();
        let lines: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(lines, [3, 7, 12], "one line per commit, none before it");
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_a_clear_error() {
        let (_tx, rx) = watch::channel(Progress {
            last_seq: 0,
            sampling_done: false,
        });
        let err = start(Path::new("/nonexistent-dir/commits"), rx).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/commits"),
            "{err}"
        );
    }
}
