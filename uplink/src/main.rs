//! `uplink`: see `uplink --help`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use clap::Parser;
use telemetry::config_file::{self, Loaded};
use tokio_util::sync::CancellationToken;
use uplink::cli::{Cli, Command};
use uplink::config::{DEFAULT_CONFIG_PATH, UplinkConfig};
use uplink::metrics::Metrics;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let loaded = match load_config(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    for var in &loaded.unknown_env {
        tracing::warn!(variable = %var, "environment variable matches no uplink setting; ignored");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { print } => runtime.block_on(check_config(&loaded, print)),
        Command::Run => match runtime.block_on(run(loaded.config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(config: UplinkConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tracing::info!(
        brokers = %config.kafka.brokers.join(","),
        topics = %config.kafka.topics.join(","),
        group = %config.kafka.group,
        sinks = %config.sinks.iter().map(|s| format!("{} {}", s.kind.as_str(), s.url)).collect::<Vec<_>>().join(", "),
        "uplink starting"
    );
    let metrics = Arc::new(Metrics::default());
    let server = match config.metrics.listen_addr()? {
        Some(addr) => Some(
            telemetry::metrics_http::serve(
                addr,
                {
                    let metrics = metrics.clone();
                    move || metrics.render()
                },
                shutdown.clone(),
            )
            .await
            .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let lag = metrics.clone().watch_lag(
        uplink::consumer::watermark_client(&config)?,
        shutdown.clone(),
    );
    let pipeline = uplink::pipeline::Pipeline::new(&config, metrics).await?;
    // systemd's Type=notify: started (outside systemd this does nothing).
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    });
    pipeline.run(shutdown).await?;
    if let Some(server) = server {
        server.abort();
    }
    lag.abort();
    tracing::info!("uplink stopped; everything committed was written");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits at once on the
/// second.
async fn stop_on_signal(shutdown: CancellationToken) {
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
    tracing::warn!("second signal: exiting now; uncommitted records will be read again");
    std::process::exit(130);
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Loaded<UplinkConfig>> {
    let (name, text) = config_file::read_file(path, Path::new(DEFAULT_CONFIG_PATH))?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(UplinkConfig::load(&name, text.as_deref(), &env)?)
}

async fn check_config(loaded: &Loaded<UplinkConfig>, print: bool) -> ExitCode {
    let c = &loaded.config;
    if let Err(e) = uplink::consumer::client_config(c).create::<rdkafka::consumer::BaseConsumer>() {
        eprintln!("kafka.properties: librdkafka refuses these settings: {e}");
        return ExitCode::from(2);
    }
    for (i, sink) in c.sinks.iter().enumerate() {
        if let Err(e) = uplink::sinks::build(sink).await {
            eprintln!("sink[{i}]: {e}");
            return ExitCode::from(2);
        }
    }
    println!("config OK");
    println!(
        "  kafka  {} topics {:?} group {:?}",
        c.kafka.brokers.join(","),
        c.kafka.topics,
        c.kafka.group
    );
    if c.kafka.dead_letter_topic.is_empty() {
        println!("  dead letters: none (bad records are logged and skipped)");
    } else {
        println!("  dead letters: {}", c.kafka.dead_letter_topic);
    }
    for sink in &c.sinks {
        println!("  sink   {} {}", sink.kind.as_str(), sink.url);
    }
    for (var, path) in &loaded.overrides {
        println!("  {path} set by {var}");
    }
    if print {
        println!(
            "\n{}",
            toml::to_string_pretty(c).expect("config serialises")
        );
    }
    ExitCode::SUCCESS
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
