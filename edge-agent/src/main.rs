//! `edge-agent`: see `edge-agent --help`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edge_agent::cli::{Cli, Command, ExportFormat, JournalCommand, RunArgs};
use edge_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use telemetry::config_file::Loaded;
use telemetry::process;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc. Readings are built on the samplers'
/// threads and freed on the journal writer's; glibc's malloc spent about a
/// third of the writer's time on such frees, and mimalloc takes the journal
/// from about 0.45 of raw redb's append rate to about 0.8 (docs/performance.md).
/// The journal benchmark uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_logging();
    if let Some(Command::SignConfig { key, output, file }) = &cli.command {
        return sign_config(key, output.as_deref(), file);
    }
    let loaded = match process::load_config(
        "edge-agent",
        cli.config.as_deref(),
        Path::new(DEFAULT_CONFIG_PATH),
        AgentConfig::load,
    ) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::CheckConfig { print } => check_config(&loaded, print),
        Command::Journal { command } => journal_command(&loaded.config, command),
        Command::Sensors { json } => sensors_command(&loaded.config, json),
        Command::Status { json } => status_command(&loaded.config, json),
        Command::SignConfig { .. } => unreachable!("handled before the config is loaded"),
        Command::Run(args) => {
            process::exit_status(process::runtime().block_on(run(loaded.config, args)))
        }
    }
}

async fn run(config: AgentConfig, args: RunArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(process::stop_on_signal(
        shutdown.clone(),
        "readings not yet in the journal are lost",
    ));
    let setup = edge_agent::agent::Setup {
        report_commits: args.report_commits,
        report_state: args.report_state,
        stall_main_loop_after: stall_hook(),
        ..edge_agent::agent::Setup::system()
    };
    Ok(edge_agent::agent::run_with(config, shutdown, setup).await?)
}

/// The test-only stall hook's delay, if set (see
/// [`edge_agent::service_manager::STALL_HOOK_VAR`]).
fn stall_hook() -> Option<Duration> {
    use edge_agent::service_manager::STALL_HOOK_VAR;
    let value = std::env::var(STALL_HOOK_VAR).ok()?;
    match humantime::parse_duration(&value) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(%value, error = %e, "{STALL_HOOK_VAR} is not a duration; ignored");
            None
        }
    }
}

fn check_config(loaded: &Loaded<AgentConfig>, print: bool) -> ExitCode {
    let c = &loaded.config;
    // librdkafka validates its own properties when a client is created.
    let kafka = match edge_agent::forwarder::producer::client_config(&c.forwarder()) {
        Ok(kafka) => kafka,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = kafka.create::<rdkafka::producer::BaseProducer>() {
        eprintln!("kafka: librdkafka refuses these settings: {e}");
        return ExitCode::from(2);
    }
    println!("config OK\n  device_id  {}", c.device_id);
    println!(
        "  journal    {} (commit every {:?}, at most {}, when full: {})",
        c.journal.path.display(),
        c.journal.commit_interval,
        c.journal.max_bytes,
        c.journal.when_full.as_str()
    );
    println!(
        "  kafka      {} topic {:?} as {:?}",
        c.kafka.brokers.join(","),
        c.kafka.topic,
        c.kafka.format
    );
    println!("  forward    {}", describe_forward(&c.forward));
    println!(
        "  status     edge-agent status asks {}; metrics {}",
        c.status_socket().display(),
        if c.metrics.listen.is_empty() {
            "off".to_owned()
        } else {
            format!("on http://{}/metrics", c.metrics.listen)
        }
    );
    println!("  mqtt       {}", describe_mqtt(c));
    for s in &c.sensors {
        let state = if s.enabled { "" } else { " (disabled)" };
        println!(
            "  sensor     {} {} on {} every {:?}{state}",
            s.name,
            s.kind.name(),
            s.device(),
            s.interval
        );
    }
    process::print_overrides(loaded, print);
    ExitCode::SUCCESS
}

/// `[forward]` in one line.
fn describe_forward(f: &edge_agent::config::ForwardConfig) -> String {
    let budget = if f.max_bytes_per_sec.bytes() == 0 {
        "no bandwidth limit".to_owned()
    } else {
        format!("at most {}/s on the wire", f.max_bytes_per_sec)
    };
    let windows = if f.send_windows.is_empty() {
        String::new()
    } else {
        let w: Vec<String> = f.send_windows.iter().map(|w| w.to_string()).collect();
        format!(", only during {} local time", w.join(", "))
    };
    let exempt = if f.live_exempt {
        " (live readings exempt)"
    } else {
        ""
    };
    format!("{:?}, {budget}{windows}{exempt}", f.order)
}

/// `[mqtt]` in one line.
fn describe_mqtt(c: &AgentConfig) -> String {
    let m = &c.mqtt;
    if !m.enabled {
        return "off (local config only)".into();
    }
    format!(
        "{} as {:?}, desired config on buoy/{}/config{}",
        m.url,
        m.client_id(&c.device_id),
        c.device_id,
        if m.config_public_key.is_some() {
            " (signed configs only)"
        } else {
            " (unsigned configs accepted)"
        }
    )
}

/// `edge-agent sign-config`.
fn sign_config(key: &Path, output: Option<&Path>, file: &Path) -> ExitCode {
    use edge_agent::remote_config::desired;
    use std::io::Read;
    let signed = (|| -> Result<String, String> {
        let pem = std::fs::read_to_string(key)
            .map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
        let key =
            desired::parse_private_key(&pem).map_err(|e| format!("{}: {e}", key.display()))?;
        let mut text = Vec::new();
        let read = if file == Path::new("-") {
            std::io::stdin().read_to_end(&mut text).map(|_| ())
        } else {
            std::fs::read(file).map(|bytes| text = bytes)
        };
        read.map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        desired::sign(&text, &key).map_err(|e| format!("{}: {e}", file.display()))
    })();
    let signed = match signed {
        Ok(signed) => signed + "\n",
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let written = match output {
        Some(path) => std::fs::write(path, &signed)
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            print!("{signed}");
            Ok(())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `edge-agent status`.
fn status_command(config: &AgentConfig, json: bool) -> ExitCode {
    use edge_agent::local_status;
    let state = match local_status::ask(&config.status_socket()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(local_status::EXIT_NOT_RUNNING);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&state).expect("the state serialises")
        );
    } else {
        print!("{}", local_status::describe(&state));
    }
    if state.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(local_status::EXIT_UNHEALTHY)
    }
}

/// `edge-agent sensors`.
fn sensors_command(config: &AgentConfig, json: bool) -> ExitCode {
    use edge_agent::sensor_check;
    let now = edge_agent::clock::wall_now_ns();
    let checks = process::runtime().block_on(sensor_check::check_all(config, now));
    if json {
        println!(
            "{}",
            serde_json::to_string(&checks).expect("checks serialise")
        );
    } else {
        print!("{}", sensor_check::describe(&checks));
    }
    if checks.iter().any(|c| c.failed()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `edge-agent journal stats|export`.
fn journal_command(config: &AgentConfig, command: JournalCommand) -> ExitCode {
    use edge_agent::journal::{Journal, inspect};
    let (mut journal, opened) =
        match Journal::open_for_inspection(&config.journal.path, config.journal.options()) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    if let Some(q) = opened.quarantined {
        eprintln!(
            "the journal was damaged ({}); it was moved to {} and {} intact readings were salvaged into a fresh journal; at most {} were lost",
            q.reason,
            q.moved_to.display(),
            q.salvaged,
            q.missing
        );
    }
    let result = match command {
        JournalCommand::Stats { json } => inspect::inspect(&mut journal)
            .map_err(inspect::InspectError::from)
            .map(|i| {
                if json {
                    println!("{}", serde_json::to_string(&i).expect("stats serialise"));
                } else {
                    let now = edge_agent::clock::wall_now_ns();
                    print!("{}", inspect::describe(&i, now));
                }
            }),
        JournalCommand::Export { format, with_seq } => {
            let format = match format {
                ExportFormat::Influx => telemetry::record::Format::Influx,
                ExportFormat::Json => telemetry::record::Format::Json,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match inspect::export(&journal, format, with_seq, &mut out) {
                Ok((written, unreadable)) => {
                    eprintln!("exported {written} readings ({unreadable} unreadable, skipped)");
                    Ok(())
                }
                // `edge-agent journal export | head` is not a failure.
                Err(inspect::InspectError::Write(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
