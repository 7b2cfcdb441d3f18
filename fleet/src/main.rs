use std::process::ExitCode;

use anyhow::Context as _;
use buoy_fleet::cli::{Cli, Command};
use buoy_fleet::commands::{self, Verdict};
use buoy_fleet::settings::{DEFAULT_FILE, FleetConfig};
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

/// mimalloc, freeing at once: `serve` renders pages of thousands of rows on
/// its worker threads; with glibc's malloc it held 57 MiB instead of 32
/// after serving 5,000 devices (tests/e2e/fleet_scale.rs, debug build).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    telemetry::allocator::purge_freed_memory_at_once();
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| if serving { "info" } else { "warn" }.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(Verdict::Fine) => ExitCode::SUCCESS,
        Ok(Verdict::Problems) => ExitCode::from(1),
        Err(e) => {
            eprintln!("buoy-fleet: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Verdict> {
    let (name, text) = telemetry::config_file::read_file(
        cli.config.as_deref(),
        std::path::Path::new(DEFAULT_FILE),
    )?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = FleetConfig::load(&name, text.as_deref(), &env, cli.mqtt.as_deref())
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?
        .config;
    let mqtt = &config.mqtt;
    Ok(match cli.command {
        Command::Status {
            json,
            watch,
            label,
            state,
            timeout,
        } => commands::status(mqtt, json, watch, commands::filter(label, state), timeout).await?,
        Command::Push {
            file,
            rollout,
            trial,
        } => commands::push(mqtt, &file, &rollout, trial).await?,
        Command::Rollback { rollout } => commands::rollback(mqtt, &rollout).await?,
        Command::Serve { listen } => {
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("a SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                on_signal.cancel();
            });
            let listen = listen.unwrap_or(config.serve.listen);
            buoy_fleet::serve::serve(mqtt, listen, config.serve.history, stop)
                .await
                .context("serve")?;
            Verdict::Fine
        }
    })
}
