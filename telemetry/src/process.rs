//! The process shell both binaries share: logging, the runtime, signals
//! and config loading, so `edge-agent` and `uplink` start, log and stop
//! the same way.
//!
//! - [`init_logging`]: `tracing` to stderr, filtered by `RUST_LOG` (default
//!   `info`), without timestamps under systemd (journald adds its own).
//! - [`runtime`]: the multi-threaded tokio runtime.
//! - [`stop_on_signal`]: the first SIGTERM or SIGINT asks for a clean stop,
//!   the second exits at once with status 130.
//! - [`load_config`]: the config file (or the default path, or none) with
//!   `BUOY_*` overrides from the environment; a bad config is exit status 2.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config_file::{self, Loaded};

/// Exit status for a config that cannot be used (as sysexits' `EX_USAGE`
/// would be too specific, 2 is what both binaries have always used).
pub const EXIT_BAD_CONFIG: u8 = 2;

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // journald adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// The runtime the binaries run in.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits at once with
/// status 130 on the second, warning that `abandoned` (what a clean stop
/// would have finished).
pub async fn stop_on_signal(shutdown: CancellationToken, abandoned: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now; {abandoned}");
    std::process::exit(130);
}

/// Loads `binary`'s config from `path` (else `default`, if it exists) and
/// the environment with `load` (the config's own `load`). A config that
/// cannot be read or used is printed to stderr and becomes exit status 2;
/// environment variables that match no setting are warned about.
pub fn load_config<C, E: Display>(
    binary: &str,
    path: Option<&Path>,
    default: &Path,
    load: impl FnOnce(&str, Option<&str>, &[(String, String)]) -> Result<Loaded<C>, E>,
) -> Result<Loaded<C>, ExitCode> {
    let bad = |e: &dyn Display| {
        eprintln!("{e}");
        ExitCode::from(EXIT_BAD_CONFIG)
    };
    let (name, text) = config_file::read_file(path, default).map_err(|e| bad(&e))?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let loaded = load(&name, text.as_deref(), &env).map_err(|e| bad(&e))?;
    for var in &loaded.unknown_env {
        tracing::warn!(variable = %var, "environment variable matches no {binary} setting; ignored");
    }
    Ok(loaded)
}

/// The end of `check-config`'s report: each key set from the environment,
/// and with `print` the whole config as it will be used.
pub fn print_overrides<C: serde::Serialize>(loaded: &Loaded<C>, print: bool) {
    for (var, path) in &loaded.overrides {
        println!("  {path} set by {var}");
    }
    if print {
        let text = toml::to_string_pretty(&loaded.config).expect("config serialises");
        println!("\n{text}");
    }
}

/// The exit status of a run: success, or the error logged and failure.
pub fn exit_status<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
