//! The commands: each connects, reads what the broker retains, and does
//! its part. Exit codes as `--help` says.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use edge_agent::remote_config::{desired, layer_file, overlay::Reach};
use serde_json::{Map, Value};

use crate::broker::{BrokerError, CONFIG_TOPICS, DEVICE_TOPICS, Session};
use crate::cli::RolloutArgs;
use crate::push::{self, Live, Outcome, Plan};
use crate::rollout::History;
use crate::settings::FleetMqtt;
use crate::status;
use crate::view::{Filter, Fleet, StateFilter, classify};

/// How a command ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// A device has a problem; a rollout did not complete.
    Problems,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Push(#[from] push::PushError),
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The fleet as the broker holds it now.
pub async fn snapshot(
    mqtt: &FleetMqtt,
    timeout: Duration,
) -> Result<(Session, Fleet), BrokerError> {
    let mut session = Session::connect(mqtt, DEVICE_TOPICS).await?;
    let mut fleet = Fleet::default();
    session
        .retained(timeout, |m| fleet.take(classify(&m.topic, &m.payload)))
        .await?;
    Ok((session, fleet))
}

/// `buoy-fleet status`.
pub async fn status(
    mqtt: &FleetMqtt,
    json: bool,
    watch: bool,
    filter: Filter,
    timeout: Duration,
) -> Result<Verdict, CommandError> {
    let (mut session, mut fleet) = snapshot(mqtt, timeout).await?;
    loop {
        let rows = status::rows(fleet.devices.values(), &filter);
        let text = if json {
            serde_json::to_string_pretty(&rows).expect("JSON serialises") + "\n"
        } else {
            status::table(&rows, now_ms())
        };
        if watch && std::io::stdout().is_terminal() {
            print!("\x1b[H\x1b[2J");
        }
        print!("{text}");
        if !watch {
            let problems = rows.iter().any(|r| !r.problems.is_empty());
            return Ok(if problems {
                Verdict::Problems
            } else {
                Verdict::Fine
            });
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Some(m) = session
            .next(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            fleet.take(classify(&m.topic, &m.payload));
        }
    }
}

/// The filter `status` and `serve` take from their options.
pub fn filter(labels: Vec<(String, String)>, state: Option<StateFilter>) -> Filter {
    Filter { labels, state }
}

/// Reads and checks a layer file; the error lists each problem at its line.
pub fn read_layer(path: &std::path::Path, trial: bool) -> Result<Map<String, Value>, CommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let reach = if trial { Reach::Trial } else { Reach::Plain };
    layer_file::read(&path.display().to_string(), &text, reach)
        .map_err(|e| CommandError::Invalid(e.to_string().trim_end().to_owned()))
}

fn signing_key(
    path: Option<&std::path::Path>,
) -> Result<Option<ed25519_dalek::SigningKey>, CommandError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| CommandError::Invalid(format!("--key {}: {e}", path.display())))?;
    desired::parse_private_key(&pem)
        .map(Some)
        .map_err(|e| CommandError::Invalid(format!("--key {}: {e}", path.display())))
}

/// Connects for a rollout: the devices and every retained config.
async fn live(mqtt: &FleetMqtt) -> Result<Live, CommandError> {
    let topics: Vec<&str> = DEVICE_TOPICS.iter().chain(CONFIG_TOPICS).copied().collect();
    let session = Session::connect(mqtt, &topics).await?;
    let mut live = Live {
        session,
        fleet: Fleet::default(),
        retained: BTreeMap::new(),
    };
    let mut messages = Vec::new();
    live.session
        .retained(Duration::from_secs(10), |m| messages.push(m))
        .await?;
    for m in messages {
        live.take(m);
    }
    Ok(live)
}

fn plan(
    args: &RolloutArgs,
    settings: Map<String, Value>,
    trial: Option<String>,
) -> Result<Plan, CommandError> {
    if let Some(t) = &trial {
        let check = serde_json::json!({"version": 1, "trial": t}).to_string();
        desired::parse(check.as_bytes())
            .map_err(|e| CommandError::Invalid(format!("--trial: {e}")))?;
    }
    Ok(Plan {
        target: args.to.clone(),
        settings,
        trial,
        key: signing_key(args.key.as_deref())?,
        canary: args.canary,
        soak: args.soak,
        timeout: args.timeout,
    })
}

fn verdict(outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Done => Verdict::Fine,
        _ => Verdict::Problems,
    }
}

/// `buoy-fleet push`.
pub async fn push(
    mqtt: &FleetMqtt,
    file: &std::path::Path,
    args: &RolloutArgs,
    trial: Option<String>,
) -> Result<Verdict, CommandError> {
    let settings = read_layer(file, trial.is_some())?;
    let plan = plan(args, settings, trial)?;
    let mut live = live(mqtt).await?;
    let outcome = push::push(&mut live, &plan).await;
    live.session.flush(Duration::from_secs(30)).await?;
    Ok(verdict(outcome?))
}

/// `buoy-fleet rollback`.
pub async fn rollback(mqtt: &FleetMqtt, args: &RolloutArgs) -> Result<Verdict, CommandError> {
    let mut live = live(mqtt).await?;
    let topic = args.to.history_topic();
    let history = History::read(live.retained.get(&topic).map(Vec::as_slice));
    let Some(previous) = history.previous().cloned() else {
        return Err(CommandError::Invalid(format!(
            "nothing to roll back to: {topic} holds {} pushes (rollback needs two, made with buoy-fleet push)",
            history.entries.len()
        )));
    };
    println!(
        "rolling back to the content of version {}",
        previous.version
    );
    let plan = plan(args, previous.settings, previous.trial)?;
    let outcome = push::push(&mut live, &plan).await;
    live.session.flush(Duration::from_secs(30)).await?;
    Ok(verdict(outcome?))
}
