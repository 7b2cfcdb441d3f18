//! A Vaisala PWD on a pseudo-terminal pair, so the real serial code path
//! (tokio-serial, termios, the frame finder) runs without hardware.
//!
//! The simulator owns the master side and answers each poll for message 2
//! with the next [`Reply`] of its script, then repeats the last one. The
//! slave side's path (`/dev/pts/N`) is what a sensor config names as `port`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::protocol;

/// How the simulated sensor answers one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A proper message 2 frame with this body.
    Message(String),
    /// Line noise, then a proper frame.
    NoiseThen(Vec<u8>, String),
    /// A proper frame in pieces of `n` bytes, 20 ms apart.
    Fragmented(String, usize),
    /// The first `n` bytes of a frame, then nothing.
    Truncated(String, usize),
    /// Bytes that are not a frame at all (a wrong baud rate looks like this).
    Garbage(Vec<u8>),
    /// A frame from another unit id.
    OtherUnit(String),
    /// No answer.
    Silent,
}

/// A running simulator; stopped on drop.
pub struct PwdSimulator {
    path: PathBuf,
    polls: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Held so the master never sees the slave fully closed (EIO) while the
    // sensor re-opens the port.
    _slave: OwnedFd,
}

impl PwdSimulator {
    /// Starts a simulated PWD with unit id `id`.
    pub fn start(id: &str, script: Vec<Reply>) -> std::io::Result<Self> {
        assert!(!script.is_empty(), "a script needs at least one reply");
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two fds; the name, termios and winsize
        // arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: openpty succeeded, so both fds are open and ours.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        raw_mode(&slave)?;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))?;
        let polls = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let id = format!("{id:>2}");
        let thread = {
            let (polls, stop) = (polls.clone(), stop.clone());
            let script = Arc::new(Mutex::new(script));
            std::thread::spawn(move || serve(File::from(master), &id, &script, &polls, &stop))
        };
        Ok(PwdSimulator {
            path,
            polls,
            stop,
            thread: Some(thread),
            _slave: slave,
        })
    }

    /// The port to configure: the slave side of the pair.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Polls answered (or deliberately not) so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }
}

impl Drop for PwdSimulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn raw_mode(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: a zeroed termios is filled by tcgetattr before use.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads polls from the master side and answers them until `stop`.
fn serve(
    mut master: File,
    id: &str,
    script: &Mutex<Vec<Reply>>,
    polls: &AtomicU64,
    stop: &AtomicBool,
) {
    let poll = protocol::poll_command(id);
    let poll = &poll[1..]; // the leading CR only clears the line
    let mut pending = Vec::new();
    let mut chunk = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 || pfd.revents & libc::POLLIN == 0 {
            continue;
        }
        let Ok(n) = master.read(&mut chunk) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(at) = pending.windows(poll.len()).position(|w| w == poll) {
            pending.drain(..at + poll.len());
            polls.fetch_add(1, Ordering::Relaxed);
            let reply = {
                let mut script = script.lock().expect("script lock");
                if script.len() > 1 {
                    script.remove(0)
                } else {
                    script[0].clone()
                }
            };
            // A real PWD waits about 100 ms before answering.
            std::thread::sleep(Duration::from_millis(5));
            let _ = answer(&mut master, id, reply);
        }
        if pending.len() > 1024 {
            pending.clear();
        }
    }
}

fn answer(master: &mut File, id: &str, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::Message(body) => master.write_all(&protocol::frame(id, &body)),
        Reply::NoiseThen(noise, body) => {
            master.write_all(&noise)?;
            master.write_all(&protocol::frame(id, &body))
        }
        Reply::Fragmented(body, n) => {
            for piece in protocol::frame(id, &body).chunks(n.max(1)) {
                master.write_all(piece)?;
                master.flush()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Reply::Truncated(body, n) => {
            let f = protocol::frame(id, &body);
            master.write_all(&f[..n.min(f.len())])
        }
        Reply::Garbage(bytes) => master.write_all(&bytes),
        Reply::OtherUnit(body) => master.write_all(&protocol::frame(" 7", &body)),
        Reply::Silent => Ok(()),
    }
}
