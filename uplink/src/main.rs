//! `uplink`: see `uplink --help`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use clap::Parser;
use telemetry::config_file::Loaded;
use telemetry::process;
use tokio_util::sync::CancellationToken;
use uplink::cli::{Cli, Command};
use uplink::config::{DEFAULT_CONFIG_PATH, UplinkConfig};
use uplink::metrics::Metrics;

/// mimalloc, as the agent: batches are built on the loop's thread and freed
/// on the writers', which glibc's malloc handles slowly and with a high
/// water mark that stays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    telemetry::allocator::purge_freed_memory_at_once();
    let cli = Cli::parse();
    process::init_logging();
    let loaded = match process::load_config(
        "uplink",
        cli.config.as_deref(),
        Path::new(DEFAULT_CONFIG_PATH),
        UplinkConfig::load,
    ) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let runtime = process::runtime();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { print } => runtime.block_on(check_config(&loaded, print)),
        Command::Run => process::exit_status(runtime.block_on(run(loaded.config))),
    }
}

async fn run(config: UplinkConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(process::stop_on_signal(
        shutdown.clone(),
        "uncommitted records will be read again",
    ));
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
    let lag = metrics
        .clone()
        .watch_lag(uplink::kafka::watermark_client(&config)?, shutdown.clone());
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

async fn check_config(loaded: &Loaded<UplinkConfig>, print: bool) -> ExitCode {
    let c = &loaded.config;
    if let Err(e) = uplink::kafka::consumer_config(c).create::<rdkafka::consumer::BaseConsumer>() {
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
    process::print_overrides(loaded, print);
    ExitCode::SUCCESS
}
