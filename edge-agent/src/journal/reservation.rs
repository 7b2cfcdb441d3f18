//! Sequence numbers that survive the loss of the journal file.
//!
//! The journal keeps its next sequence number inside the redb file, so a
//! damaged file can take with it the only record of the newest numbers
//! handed out: salvage finds the highest number still intact, and numbering
//! on from there would give new readings the numbers of lost ones (which
//! may already be in Kafka). A deleted journal would start again at 1.
//!
//! So the journal also reserves numbers in a small file of its own next to
//! it, `<journal>.seq-limit`: one decimal number above every sequence number
//! ever committed. Before a commit numbers a reading at or past the limit,
//! the limit is moved [`BLOCK`] numbers further and written durably
//! ([`crate::durable`]), so the file is written once per `BLOCK` readings,
//! not once per commit (flash wear). A journal that is salvaged, or created
//! afresh where a limit exists, numbers new readings from the limit on: the
//! numbers in between are a gap, never a reuse.
//!
//! The file is a safety net for the journal, never a reason to lose a
//! reading: if it cannot be read or written, that is logged (once until it
//! works again) and the journal carries on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{self, Disk};

/// How many sequence numbers one write of the limit reserves.
pub const BLOCK: u64 = 1 << 16;

/// The reservation file of one journal.
#[derive(Debug)]
pub struct Reservation {
    disk: Arc<dyn Disk>,
    path: PathBuf,
    state: State,
}

#[derive(Debug)]
struct State {
    /// Every sequence number committed is below this.
    limit: u64,
    /// A write failed and has not worked since (logged once).
    failing: bool,
}

impl Reservation {
    /// The reservation of the journal at `journal`: reads its limit, or 0
    /// when there is none (a new device, or a journal from before limits
    /// were kept) or it cannot be read.
    pub fn load(disk: Arc<dyn Disk>, journal: &Path) -> Reservation {
        let path = path_for(journal);
        let text = disk::read(&*disk, &path).map(|b| String::from_utf8_lossy(&b).into_owned());
        let limit = match text {
            Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|_| {
                tracing::warn!(
                    path = %path.display(),
                    "the journal's sequence limit file is damaged; ignored (it is rewritten \
                     by the next commit)"
                );
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the journal's sequence limit file; ignored");
                0
            }
        };
        Reservation {
            disk,
            path,
            state: State {
                limit,
                failing: false,
            },
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every sequence number committed so far is below this (0: unknown).
    pub fn limit(&self) -> u64 {
        self.state.limit
    }

    /// Makes sure every number below `end` is reserved, writing a new limit
    /// when `end` passes the old one. Call it before the commit that uses
    /// those numbers.
    pub fn cover(&mut self, end: u64) {
        let state = &mut self.state;
        if end <= state.limit {
            return;
        }
        let limit = end.saturating_add(BLOCK);
        match crate::durable::replace(&*self.disk, &self.path, format!("{limit}\n").as_bytes()) {
            Ok(()) => {
                if state.failing {
                    tracing::info!(path = %self.path.display(),
                        "the journal's sequence limit file is written again");
                }
                *state = State {
                    limit,
                    failing: false,
                };
            }
            Err(e) => {
                if !state.failing {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "cannot write the journal's sequence limit file; journaling goes on, \
                         but if the journal is damaged now, new readings may reuse the \
                         sequence numbers of lost ones"
                    );
                }
                state.failing = true;
            }
        }
    }
}

/// `<journal>.seq-limit`, next to the journal.
pub fn path_for(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".seq-limit");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_written_once_per_block_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j.redb");
        let mut r = Reservation::load(disk::real(), &journal);
        assert_eq!(r.limit(), 0, "no file: nothing known");
        r.cover(10);
        assert_eq!(r.limit(), 10 + BLOCK);
        // Numbers inside the block do not touch the file.
        std::fs::write(r.path(), "sentinel").unwrap();
        r.cover(BLOCK);
        r.cover(10 + BLOCK);
        assert_eq!(std::fs::read_to_string(r.path()).unwrap(), "sentinel");
        // Past the block: a new limit, durable for the next open.
        r.cover(11 + BLOCK);
        assert_eq!(r.limit(), 11 + 2 * BLOCK);
        assert_eq!(
            Reservation::load(disk::real(), &journal).limit(),
            11 + 2 * BLOCK
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["j.redb.seq-limit"], "no temporary file left");
    }

    #[test]
    fn a_damaged_or_unwritable_limit_file_is_ignored_and_never_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j.redb");
        std::fs::write(path_for(&journal), "\0\0garbage").unwrap();
        let mut r = Reservation::load(disk::real(), &journal);
        assert_eq!(r.limit(), 0);
        r.cover(5);
        assert_eq!(
            Reservation::load(disk::real(), &journal).limit(),
            5 + BLOCK,
            "rewritten"
        );

        // A directory where the file should be: every write fails.
        let blocked = dir.path().join("k.redb");
        std::fs::create_dir(path_for(&blocked)).unwrap();
        std::fs::write(path_for(&blocked).join("x"), "").unwrap();
        let mut r = Reservation::load(disk::real(), &blocked);
        r.cover(5);
        r.cover(6);
        assert_eq!(r.limit(), 0, "nothing reserved, nothing claimed");
    }
}
