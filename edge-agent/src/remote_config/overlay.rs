//! The remotely settable part of the config, laid over the local one. Pure.
//!
//! A desired config may set the sensors, the journal's policy and limits,
//! the Kafka topic, format and compression, and the `forward` and `status`
//! tables. Everything that could cut the device off or that names local
//! files stays local: `device_id`, `labels`, `journal.path`, `kafka.brokers`,
//! `kafka.security`, `kafka.properties` and `[mqtt]`. The exception: a layer
//! with `"trial"` may set `kafka.brokers` and `kafka.security`, because it
//! reverts by itself unless Kafka acknowledges a reading under it.
//!
//! Tables are merged key by key; `sensor` (an array of tables) replaces the
//! local list whole. The result goes through the same typed parse and the
//! same checks as the TOML file, and is refused whole if anything is wrong.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::desired::{Rejected, kind_of};
use crate::config::AgentConfig;

/// Sections a desired config may set, with the keys allowed in each (`None`:
/// all of them).
const REMOTE: &[(&str, Option<&[&str]>)] = &[
    ("sensor", None),
    (
        "journal",
        Some(&[
            "commit_interval",
            "max_bytes",
            "when_full",
            "downsample_window",
            "max_batch",
        ]),
    ),
    (
        "kafka",
        Some(&["topic", "format", "compression", "delivery_timeout"]),
    ),
    ("forward", None),
    ("status", Some(&["log_interval"])),
];

/// Keys a layer may set only under a trial.
const TRIAL_ONLY: &[&str] = &["kafka.brokers", "kafka.security"];

/// Whether a layer is a trial (and may set [`TRIAL_ONLY`] keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Plain,
    Trial,
}

/// The config `settings` make of `local`: [`check_remote`], then laid over
/// it and validated by the file's checks.
pub fn overlay(
    local: &AgentConfig,
    settings: &Map<String, Value>,
    reach: Reach,
) -> Result<AgentConfig, Rejected> {
    check_remote(settings, reach)?;
    let mut table = match toml::Value::try_from(local) {
        Ok(toml::Value::Table(t)) => t,
        _ => unreachable!("the config serialises to a table"),
    };
    for (section, value) in settings {
        match value {
            Value::Object(fields) if section != "sensor" => {
                let target = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(target) = target else {
                    unreachable!("config sections are tables")
                };
                for (key, v) in fields {
                    target.insert(key.clone(), to_toml(&format!("{section}.{key}"), v)?);
                }
            }
            _ => {
                table.insert(section.clone(), to_toml(section, value)?);
            }
        }
    }
    let config = AgentConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| Rejected::Invalid(e.to_string().trim().to_owned()))?;
    let problems = config.problems();
    if !problems.is_empty() {
        let shown: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        return Err(Rejected::Invalid(shown.join("; ")));
    }
    Ok(config)
}

/// Whether `settings` hold only keys a desired config may set, each
/// section shaped as one (a table; `sensor`: anything, the typed parse
/// checks it).
pub fn check_remote(settings: &Map<String, Value>, reach: Reach) -> Result<(), Rejected> {
    for (section, value) in settings {
        let Some((_, keys)) = REMOTE.iter().find(|(s, _)| s == section) else {
            return Err(Rejected::NotRemote {
                key: section.clone(),
                why: not_remote_why(section),
            });
        };
        match (keys, value) {
            (None, _) if section == "sensor" => {}
            (keys, Value::Object(fields)) => {
                let allowed = |key: &str| {
                    keys.is_none_or(|allowed| allowed.contains(&key))
                        || (reach == Reach::Trial
                            && TRIAL_ONLY.contains(&format!("{section}.{key}").as_str()))
                };
                let refused = fields.keys().find(|key| !allowed(key));
                if let Some(key) = refused {
                    let path = format!("{section}.{key}");
                    return Err(Rejected::NotRemote {
                        why: not_remote_why(&path),
                        key: path,
                    });
                }
            }
            (_, other) => {
                return Err(Rejected::Invalid(format!(
                    "{section} must be an object, not {}",
                    kind_of(other)
                )));
            }
        }
    }
    Ok(())
}

fn not_remote_why(key: &str) -> &'static str {
    match key {
        "device_id" => "it names the device and its MQTT topics",
        "labels" => "labels choose the layers a device takes; they are set on the device",
        "mqtt" => "a wrong value would cut the device off; change it on the device",
        "kafka.brokers" | "kafka.security" => {
            "a wrong value would cut the device off; set it in a layer with \"trial\" (it reverts unless Kafka acknowledges a reading), or on the device"
        }
        "journal.path" | "kafka.properties" | "journal.cache_size" | "status.socket"
        | "metrics" => "it is local to the device (files, secrets, memory, ports)",
        _ => "not a setting a desired config may carry",
    }
}

/// JSON to TOML. TOML has no null.
fn to_toml(path: &str, v: &Value) -> Result<toml::Value, Rejected> {
    Ok(match v {
        Value::Null => {
            return Err(Rejected::Invalid(format!(
                "{path} is null; leave a key out to keep its current value"
            )));
        }
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => return Err(Rejected::Invalid(format!("{path}: {n} is out of range"))),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_toml(&format!("{path}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, item)| Ok((k.clone(), to_toml(&format!("{path}.{k}"), item)?)))
                .collect::<Result<_, Rejected>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn local() -> AgentConfig {
        AgentConfig::load(
            "edge-agent.toml",
            Some("device_id = \"pi-1\"\n[kafka]\nbrokers = [\"k:9092\"]\n[[sensor]]\nname = \"env\"\nkind = \"simulated_weather\"\n"),
            &[],
        )
        .unwrap()
        .config
    }

    fn settings(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn nothing_remote_leaves_the_local_config() {
        assert_eq!(
            overlay(&local(), &Map::new(), Reach::Plain).unwrap(),
            local()
        );
    }

    #[test]
    fn remote_keys_merge_into_tables_and_replace_the_sensor_list() {
        let c = overlay(
            &local(),
            &settings(
                r#"{"kafka": {"topic": "weather", "format": "json"},
                    "journal": {"max_bytes": "64MiB", "when_full": "downsample"},
                    "forward": {"order": "fifo", "max_bytes_per_sec": "2KiB"},
                    "sensor": [{"name": "cpu", "kind": "simulated_cpu_temperature", "interval": "10s",
                                "limits": {"cpu_temperature_c": [0, 90]}}]}"#,
            ),
            Reach::Plain,
        )
        .unwrap();
        assert_eq!(c.kafka.topic, "weather");
        assert_eq!(c.kafka.brokers, ["k:9092"], "brokers stay local");
        assert_eq!(c.device_id, "pi-1");
        assert_eq!(c.journal.max_bytes.bytes(), 64 << 20);
        assert_eq!(c.forward.max_bytes_per_sec.bytes(), 2048);
        assert_eq!(c.sensors.len(), 1);
        assert_eq!(c.sensors[0].name, "cpu");
        assert_eq!(c.sensors[0].interval, Duration::from_secs(10));
        assert_eq!(
            c.sensors[0].effective_limits()[0],
            ("cpu_temperature_c", 0.0, 90.0)
        );
    }

    #[test]
    fn local_only_keys_unknown_keys_and_bad_values_are_refused_whole() {
        for (json, says) in [
            (r#"{"device_id": "x"}"#, "device_id cannot be set remotely"),
            (
                r#"{"labels": {"site": "x"}}"#,
                "labels cannot be set remotely: labels choose",
            ),
            (
                r#"{"mqtt": {"enabled": false}}"#,
                "mqtt cannot be set remotely: a wrong value would cut",
            ),
            (
                r#"{"kafka": {"brokers": ["evil:9092"]}}"#,
                "kafka.brokers cannot be set remotely",
            ),
            (
                r#"{"journal": {"path": "/etc/passwd"}}"#,
                "journal.path cannot be set remotely",
            ),
            (r#"{"forward": {"ordre": "fifo"}}"#, "unknown field `ordre`"),
            (
                r#"{"forward": {"order": "random"}}"#,
                "unknown variant `random`",
            ),
            (
                r#"{"forward": "fifo"}"#,
                "forward must be an object, not a string",
            ),
            (
                r#"{"journal": {"max_bytes": "1MiB"}}"#,
                "journal.max_bytes: must be at least 4MiB",
            ),
            (r#"{"kafka": {"topic": null}}"#, "kafka.topic is null"),
            (
                r#"{"sensor": [{"name": "a", "kind": "fan"}, {"name": "a", "kind": "fan"}]}"#,
                "another sensor is already called",
            ),
            (
                r#"{"sensor": [{"name": "vis", "kind": "pwd"}]}"#,
                "needs the serial port",
            ),
            (r#"{"status": {"log_interval": 5}}"#, "invalid"),
            (
                r#"{"kafka": {"security": {"protocol": "ssl"}}}"#,
                "kafka.security cannot be set remotely: a wrong value would cut the device off; set it in a layer with \"trial\"",
            ),
        ] {
            let e = overlay(&local(), &settings(json), Reach::Plain)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn a_trial_may_set_the_brokers_and_security_but_nothing_else_local() {
        let brokers = settings(
            r#"{"kafka": {"brokers": ["k2:9092"], "security": {"protocol": "plaintext"}}}"#,
        );
        let c = overlay(&local(), &brokers, Reach::Trial).unwrap();
        assert_eq!(c.kafka.brokers, ["k2:9092"]);
        let path = settings(r#"{"journal": {"path": "/tmp/j"}}"#);
        let e = overlay(&local(), &path, Reach::Trial).unwrap_err();
        assert!(
            e.to_string()
                .contains("journal.path cannot be set remotely"),
            "{e}"
        );
        let e = overlay(&local(), &brokers, Reach::Plain).unwrap_err();
        assert!(
            e.to_string()
                .contains("kafka.brokers cannot be set remotely"),
            "{e}"
        );
    }
}
