//! A layer written as TOML (what `buoy-fleet push` takes): the remotely
//! settable keys of the agent's config file, with the same syntax. Checked
//! here by the agent's own checks, so the fleet tool and the device agree on
//! what is valid, and every problem is reported at its line.
//!
//! The file is read as an agent config (built-in defaults filling the
//! rest), which catches syntax, unknown keys, wrong types and invalid
//! values; then its keys are checked against what a layer may set. The
//! device still checks the layer merged with its own config and its other
//! layers, and may refuse it for reasons only it can see (its sensors'
//! ports, its other layers).

use serde_json::{Map, Value};
use telemetry::config_file::{ConfigError, Problem, problems_in_file};

use super::desired::Rejected;
use super::overlay::{Reach, check_remote};
use crate::config::AgentConfig;

/// The settings of the layer file `text` (named `source_name` in
/// messages), as a desired config carries them.
pub fn read(
    source_name: &str,
    text: &str,
    reach: Reach,
) -> Result<Map<String, Value>, ConfigError> {
    AgentConfig::load(source_name, Some(text), &[])?;
    let table: toml::Table = toml::from_str(text).expect("parsed by the load above");
    let Ok(Value::Object(settings)) = serde_json::to_value(&table) else {
        unreachable!("a TOML table is a JSON object")
    };
    if let Err(e) = check_remote(&settings, reach) {
        let path = match &e {
            Rejected::NotRemote { key, .. } => key.clone(),
            _ => String::new(),
        };
        return Err(problems_in_file(
            source_name,
            text,
            vec![Problem::new(path, e)],
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_layer_reads_and_problems_come_with_their_lines() {
        let good = "[forward]\norder = \"fifo\"\n[kafka]\ntopic = \"weather\"\n";
        let settings = read("l.toml", good, Reach::Plain).unwrap();
        assert_eq!(
            Value::Object(settings),
            serde_json::json!({"forward": {"order": "fifo"}, "kafka": {"topic": "weather"}})
        );
        for (text, line, says) in [
            ("[forward]\nordre = \"fifo\"\n", 2, "unknown field `ordre`"),
            ("[journal]\n\nmax_bytes = \"1MiB\"\n", 3, "at least 4MiB"),
            (
                "[kafka]\ntopic = \"t\"\nbrokers = [\"k:9092\"]\n",
                3,
                "kafka.brokers cannot be set remotely",
            ),
            ("device_id = \"x\"\n", 1, "device_id cannot be set remotely"),
        ] {
            let e = read("l.toml", text, Reach::Plain).unwrap_err();
            assert_eq!(e.lines(), [line], "{text}: {e}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let brokers = "[kafka]\nbrokers = [\"k:9092\"]\n";
        assert!(read("l.toml", brokers, Reach::Trial).is_ok());
    }
}
