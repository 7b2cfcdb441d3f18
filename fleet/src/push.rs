//! `buoy-fleet push` and `rollback`: publish a layer, with canaries first if
//! asked, and follow it until every targeted device has answered. The
//! decisions are in [`crate::rollout`]; this is the loop that performs them.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use edge_agent::remote_config::desired;
use edge_agent::remote_config::report::Verdict;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::broker::{Message, Session};
use crate::rollout::{self, Answers, Entry, Health, History, Target};
use crate::view::{Fleet, classify, verdict_text};

/// The canaries' own layers before the rollout, by device.
type Originals = BTreeMap<String, Map<String, Value>>;

/// What to push, where, how.
pub struct Plan {
    pub target: Target,
    pub settings: Map<String, Value>,
    pub trial: Option<String>,
    pub key: Option<SigningKey>,
    pub canary: usize,
    pub soak: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no device on the broker is reached by --to {0}")]
    NoDevices(String),
    #[error("cannot sign: {0}")]
    Sign(#[from] desired::Rejected),
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every targeted device accepted.
    Done,
    /// Stopped at the canaries; the rest untouched.
    Stopped { device: String, why: String },
    /// Published; some devices refused it or did not answer in time.
    Incomplete {
        refused: Vec<String>,
        silent: Vec<String>,
    },
}

/// The broker's view, kept current while a rollout runs.
pub struct Live {
    pub session: Session,
    pub fleet: Fleet,
    /// Retained configs and histories, by topic.
    pub retained: BTreeMap<String, Vec<u8>>,
}

impl Live {
    pub fn take(&mut self, m: Message) {
        if m.topic.ends_with("/config") || m.topic.starts_with("buoy/fleet/history/") {
            if m.payload.is_empty() {
                self.retained.remove(&m.topic);
            } else {
                self.retained.insert(m.topic.clone(), m.payload.clone());
            }
        }
        self.fleet.take(classify(&m.topic, &m.payload));
    }

    /// Takes messages until `until` holds or `deadline` passes; whether it
    /// held.
    async fn wait(&mut self, deadline: Instant, until: impl Fn(&Fleet) -> bool) -> bool {
        while !until(&self.fleet) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(m) = self
                .session
                .next(left.min(Duration::from_millis(500)))
                .await
            {
                self.take(m);
            }
        }
        true
    }

    /// Publishes `settings` as device `id`'s own layer, at its next
    /// version, which it returns.
    async fn publish_device_layer(
        &mut self,
        plan: &Plan,
        id: &str,
        settings: &Map<String, Value>,
        trial: Option<&str>,
    ) -> Result<u64, PushError> {
        let topic = Target::Device(id.to_owned()).topic();
        let devices = [&self.fleet.devices[id]];
        let retained = self.retained.get(&topic).map(Vec::as_slice);
        let version = rollout::next_version(retained, "device", &devices);
        let payload = self.sign(plan, rollout::payload(settings, version, trial))?;
        self.session.publish(&topic, payload.clone(), true).await;
        self.retained.insert(topic, payload);
        Ok(version)
    }

    fn sign(&self, plan: &Plan, payload: Vec<u8>) -> Result<Vec<u8>, PushError> {
        Ok(match &plan.key {
            Some(key) => desired::sign(&payload, key)?.into_bytes(),
            None => payload,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs `plan` and says what happened, device by device, on stdout.
pub async fn push(live: &mut Live, plan: &Plan) -> Result<Outcome, PushError> {
    let layer = plan.target.layer().name();
    let targets = plan.target.devices(&live.fleet);
    if targets.is_empty() {
        return Err(PushError::NoDevices(format!("{:?}", plan.target)));
    }
    let devices: Vec<_> = targets.iter().map(|id| &live.fleet.devices[id]).collect();
    let topic = plan.target.topic();
    let version = rollout::next_version(
        live.retained.get(&topic).map(Vec::as_slice),
        &layer,
        &devices,
    );
    println!(
        "pushing {topic} version {version} to {} devices",
        targets.len()
    );
    let canaries: Vec<String> = if matches!(plan.target, Target::Device(_)) {
        Vec::new()
    } else {
        targets.iter().take(plan.canary).cloned().collect()
    };
    // Each canary's own layer, to put back afterwards.
    let originals: Originals = canaries
        .iter()
        .map(|id| {
            let topic = Target::Device(id.clone()).topic();
            (
                id.clone(),
                rollout::settings_of(live.retained.get(&topic).map(Vec::as_slice)).1,
            )
        })
        .collect();
    if !canaries.is_empty()
        && let Some((device, why)) = canary_phase(live, plan, &originals).await?
    {
        println!("STOPPED at the canaries: {device}: {why}");
        println!(
            "the other {} devices were left untouched",
            targets.len() - canaries.len()
        );
        return Ok(Outcome::Stopped { device, why });
    }
    let payload = live.sign(
        plan,
        rollout::payload(&plan.settings, version, plan.trial.as_deref()),
    )?;
    live.session.publish(&topic, payload, true).await;
    record_history(live, plan, version).await;
    restore_canaries(live, plan, &originals).await?;
    let answers = follow(live, &targets, &layer, version, plan.timeout).await;
    Ok(report(&targets, &answers))
}

/// Gives the canaries the new settings as device-level overrides, waits for
/// their answers, then watches them for the soak time. `Some`: the device
/// and why the rollout stops (the canaries are restored then).
async fn canary_phase(
    live: &mut Live,
    plan: &Plan,
    originals: &Originals,
) -> Result<Option<(String, String)>, PushError> {
    let canaries: Vec<String> = originals.keys().cloned().collect();
    println!("canaries: {}", canaries.join(", "));
    let mut versions = BTreeMap::new();
    for (id, own) in originals {
        let settings = rollout::canary_settings(&plan.settings, own);
        let version = live
            .publish_device_layer(plan, id, &settings, plan.trial.as_deref())
            .await?;
        versions.insert(id.clone(), version);
    }
    let deadline = Instant::now() + plan.timeout;
    let answered = |f: &Fleet| {
        versions
            .iter()
            .all(|(id, v)| rollout::answer(&f.devices[id], "device", *v).is_some())
    };
    let all_answered = live.wait(deadline, answered).await;
    let mut stop = None;
    for (id, v) in &versions {
        match rollout::answer(&live.fleet.devices[id], "device", *v) {
            Some((Verdict::Accepted, _)) => println!("{id}: accepted (canary)"),
            Some((verdict, reason)) => {
                let why = format!(
                    "{} v{v}: {}",
                    verdict_text(verdict),
                    reason.unwrap_or_default()
                );
                println!("{id}: {why} (canary)");
                stop.get_or_insert((id.clone(), why));
            }
            None => {
                println!("{id}: no answer within {:?} (canary)", plan.timeout);
                stop.get_or_insert((id.clone(), "no answer in time".into()));
            }
        }
    }
    if stop.is_none() && all_answered {
        stop = soak(live, plan, &canaries).await;
    }
    if stop.is_some() {
        restore_canaries(live, plan, originals).await?;
    }
    Ok(stop)
}

/// Watches the canaries for `plan.soak`; the first regression stops it.
async fn soak(live: &mut Live, plan: &Plan, canaries: &[String]) -> Option<(String, String)> {
    println!(
        "soaking the canaries for {}",
        humantime::format_duration(plan.soak)
    );
    let before: BTreeMap<String, Health> = canaries
        .iter()
        .map(|id| (id.clone(), Health::of(&live.fleet.devices[id])))
        .collect();
    let end = Instant::now() + plan.soak;
    let regressed = |f: &Fleet| {
        before
            .iter()
            .any(|(id, h)| h.regression(&f.devices[id]).is_some())
    };
    live.wait(end, regressed).await;
    let found = before.iter().find_map(|(id, h)| {
        h.regression(&live.fleet.devices[id])
            .map(|why| (id.clone(), why))
    });
    if let Some((id, why)) = &found {
        println!("{id}: {why} during the soak (canary)");
    }
    found
}

/// Puts each canary's own layer back as it was, under a newer version.
async fn restore_canaries(
    live: &mut Live,
    plan: &Plan,
    originals: &Originals,
) -> Result<(), PushError> {
    for (id, own) in originals {
        live.publish_device_layer(plan, id, own, None).await?;
    }
    Ok(())
}

/// Adds this push to the layer's retained history.
async fn record_history(live: &mut Live, plan: &Plan, version: u64) {
    let topic = plan.target.history_topic();
    let mut history = History::read(live.retained.get(&topic).map(Vec::as_slice));
    history.push(Entry {
        version,
        settings: plan.settings.clone(),
        trial: plan.trial.clone(),
        pushed_at_ms: now_ms(),
    });
    let bytes = serde_json::to_vec(&history).expect("JSON serialises");
    live.session.publish(&topic, bytes.clone(), true).await;
    live.retained.insert(topic, bytes);
}

/// Waits until every target has answered `version` of `layer`, printing
/// each answer as it comes.
async fn follow(
    live: &mut Live,
    targets: &[String],
    layer: &str,
    version: u64,
    timeout: Duration,
) -> Answers {
    let deadline = Instant::now() + timeout;
    let mut answers = Answers::new();
    loop {
        for id in targets {
            if answers.contains_key(id) {
                continue;
            }
            if let Some((verdict, reason)) =
                rollout::answer(&live.fleet.devices[id], layer, version)
            {
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                println!("{id}: {}{why}", verdict_text(verdict));
                answers.insert(id.clone(), (verdict, reason));
            }
        }
        if answers.len() == targets.len() || Instant::now() >= deadline {
            return answers;
        }
        if let Some(m) = live.session.next(Duration::from_millis(500)).await {
            live.take(m);
        }
    }
}

fn report(targets: &[String], answers: &Answers) -> Outcome {
    let refused: Vec<String> = answers
        .iter()
        .filter(|(_, (v, _))| *v != Verdict::Accepted)
        .map(|(id, _)| id.clone())
        .collect();
    let silent: Vec<String> = targets
        .iter()
        .filter(|id| !answers.contains_key(*id))
        .cloned()
        .collect();
    for id in &silent {
        println!("{id}: no answer in time");
    }
    println!(
        "{} accepted, {} refused, {} did not answer",
        answers.len() - refused.len(),
        refused.len(),
        silent.len()
    );
    if refused.is_empty() && silent.is_empty() {
        Outcome::Done
    } else {
        Outcome::Incomplete { refused, silent }
    }
}
