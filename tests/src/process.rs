//! Child processes owned by the test, and the programs they come from.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running service. Killed when dropped, so a failing test leaves nothing
/// behind.
pub struct Service {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
    /// An edge agent's status socket and `--report-state` file, or why
    /// its config has none.
    pub(crate) state: Option<Result<AgentFiles, String>>,
}

/// Where an edge agent tells its state: the status socket while it runs,
/// the `--report-state` file once it has stopped.
#[derive(Debug, Clone)]
pub(crate) struct AgentFiles {
    pub socket: PathBuf,
    pub final_state: PathBuf,
}

impl Service {
    /// Starts `command` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Service {
        let out =
            File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", command.get_program()));
        Service {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            state: None,
        }
    }

    /// Everything the service has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines the service printed.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where the service logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How the process ended, if it has (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Freezes the process (SIGSTOP): it holds its connections and answers
    /// nothing until [`Service::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on our own child, which has not been reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "cannot signal {} ({pid})", self.name);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its resident and peak resident memory (`VmRSS`, `VmHWM`), in KiB;
    /// zeros once it has exited.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("service already stopped");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within {timeout:?} of SIGTERM; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Finds `program` on PATH or in `~/.cargo/bin`, or fails the test with the
/// command that installs it.
pub fn require(program: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is required by this test but was not found; install it with: {install}"
            )
        })
}

/// Waits until `check` returns `Some`, polling every 100 ms, or fails the
/// test after `timeout` with `what` and the output of `context`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `check` returns `Some`, for as long as `progress` keeps
/// changing: the deadline is measured progress, not a fixed time, so a
/// loaded machine that is slow but moving does not fail the test. Fails
/// when `progress` has not changed for `stall` (or, as a last resort, after
/// `limit`), naming `stage`, the last progress seen and `context`.
pub fn wait_while_progressing<T, P: PartialEq + std::fmt::Debug>(
    stage: &str,
    stall: Duration,
    limit: Duration,
    check: impl FnMut() -> (Option<T>, P),
    context: impl Fn() -> String,
) -> T {
    try_wait_while_progressing(stage, stall, limit, check)
        .unwrap_or_else(|stalled| panic!("{stalled}\n{}", context()))
}

/// Like [`wait_while_progressing`], returning the failure instead of
/// panicking, for a caller that can still tell whose fault the stall is.
pub fn try_wait_while_progressing<T, P: PartialEq + std::fmt::Debug>(
    stage: &str,
    stall: Duration,
    limit: Duration,
    mut check: impl FnMut() -> (Option<T>, P),
) -> Result<T, String> {
    let started = Instant::now();
    let (mut last, mut moved_at) = (None, Instant::now());
    loop {
        let (done, progress) = check();
        if let Some(v) = done {
            return Ok(v);
        }
        if last.as_ref() != Some(&progress) {
            last = Some(progress);
            moved_at = Instant::now();
        } else if moved_at.elapsed() > stall || started.elapsed() > limit {
            return Err(format!(
                "stage \"{stage}\" stalled: no progress for {:.0?} ({:.0?} in all); last progress: {:?}",
                moved_at.elapsed(),
                started.elapsed(),
                last
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration, service: &Service) {
    wait_for(
        &format!("{} to listen on port {port}", service.name),
        timeout,
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        || service.log(),
    );
}
