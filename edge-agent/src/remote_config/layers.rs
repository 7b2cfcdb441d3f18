//! The layers a device takes its remote config from, and the labels that
//! choose them. Pure.
//!
//! In the order they merge (a later layer wins on each key):
//!
//! | layer | topic | name in the state and on disk |
//! |---|---|---|
//! | fleet-wide | `buoy/fleet/config` | `fleet` |
//! | one per label, by key in byte order | `buoy/group/<key>/<value>/config` | `group/<key>/<value>` |
//! | the device's own | `buoy/<device_id>/config` | `device` |
//!
//! Each layer is a desired config of its own ([`super::desired`]): retained,
//! versioned and signed on its own. A layer is withdrawn by publishing a
//! newer version with no settings; deleting the retained message changes
//! nothing on a device that already took the layer (an unsigned empty
//! message must not be able to undo a signed config).
//!
//! The accepted layers are stored together in one file (see
//! [`super::store`]), so that a power cut leaves either the old set or the
//! new one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use telemetry::config_file::Problem;

use super::desired::Rejected;

/// `labels = { site = "north-sea", hw = "pi5" }`: local only, reported in
/// the state; each label subscribes the device to one group layer.
pub type Labels = BTreeMap<String, String>;

/// Most labels a device may carry (each is one more subscription).
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// Device ids that would make the device's own topic another layer's.
pub const RESERVED_DEVICE_IDS: &[&str] = &["fleet", "group"];

/// Where a desired config came from. Ordered as the layers merge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    Fleet,
    Group { key: String, value: String },
    Device,
}

impl Layer {
    /// The layers a device with `labels` takes, in merge order.
    pub fn all_for(labels: &Labels) -> Vec<Layer> {
        let groups = labels.iter().map(|(key, value)| Layer::Group {
            key: key.clone(),
            value: value.clone(),
        });
        std::iter::once(Layer::Fleet)
            .chain(groups)
            .chain(std::iter::once(Layer::Device))
            .collect()
    }

    /// The retained topic this layer arrives on.
    pub fn topic(&self, device_id: &str) -> String {
        match self {
            Layer::Fleet => "buoy/fleet/config".into(),
            Layer::Group { key, value } => format!("buoy/group/{key}/{value}/config"),
            Layer::Device => format!("buoy/{device_id}/config"),
        }
    }

    /// `fleet`, `group/<key>/<value>` or `device`.
    pub fn name(&self) -> String {
        match self {
            Layer::Fleet => "fleet".into(),
            Layer::Group { key, value } => format!("group/{key}/{value}"),
            Layer::Device => "device".into(),
        }
    }

    /// The inverse of [`Layer::name`].
    pub fn from_name(name: &str) -> Option<Layer> {
        match name.split('/').collect::<Vec<_>>()[..] {
            ["fleet"] => Some(Layer::Fleet),
            ["device"] => Some(Layer::Device),
            ["group", key, value] => Some(Layer::Group {
                key: key.into(),
                value: value.into(),
            }),
            _ => None,
        }
    }
}

/// What is wrong with `labels`, as config problems.
pub fn label_problems(labels: &Labels) -> Vec<Problem> {
    let mut p = Vec::new();
    if labels.len() > MAX_LABELS {
        p.push(Problem::new(
            "labels",
            format!("at most {MAX_LABELS} labels (each is one more MQTT subscription)"),
        ));
    }
    for (key, value) in labels {
        for (what, text) in [("key", key), ("value", value)] {
            if let Some(why) = label_text_problem(text) {
                p.push(Problem::new(
                    format!("labels.{key}"),
                    format!("the {what} {text:?} {why}"),
                ));
            }
        }
    }
    p
}

/// Labels name MQTT topics and are matched by `buoy-fleet push --to
/// key=value`: plain words only.
fn label_text_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("is empty".into());
    }
    if text.len() > MAX_LABEL_LEN {
        return Some(format!("is longer than {MAX_LABEL_LEN} bytes"));
    }
    text.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
        .map(|c| format!("contains {c:?}: use letters, digits, '-', '_', '.' or ':'"))
}

/// The layers' settings laid one over the other, in merge order: tables
/// merge key by key, a later layer's value winning; `sensor` (a list) is
/// replaced whole. `Err` names the layer whose settings are not even
/// shaped like a config.
pub fn merge<'a>(
    layers: impl IntoIterator<Item = (&'a Layer, &'a Map<String, Value>)>,
) -> Result<Map<String, Value>, (Layer, Rejected)> {
    let mut merged = Map::new();
    for (layer, settings) in layers {
        for (section, value) in settings {
            match (merged.get_mut(section), value) {
                (Some(Value::Object(into)), Value::Object(fields)) if section != "sensor" => {
                    into.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                (_, Value::Object(_)) | (_, Value::Array(_)) => {
                    merged.insert(section.clone(), value.clone());
                }
                (_, other) => {
                    return Err((
                        layer.clone(),
                        Rejected::Invalid(format!(
                            "{section} must be an object, not {}",
                            super::desired::kind_of(other)
                        )),
                    ));
                }
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn settings(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_device_takes_the_fleet_then_its_groups_by_key_then_its_own_layer() {
        let layers = Layer::all_for(&labels(&[("site", "north-sea"), ("hw", "pi5")]));
        let topics: Vec<String> = layers.iter().map(|l| l.topic("pi-7")).collect();
        assert_eq!(
            topics,
            [
                "buoy/fleet/config",
                "buoy/group/hw/pi5/config",
                "buoy/group/site/north-sea/config",
                "buoy/pi-7/config"
            ]
        );
        let mut sorted = layers.clone();
        sorted.sort();
        assert_eq!(sorted, layers, "the merge order is the layers' order");
        for layer in &layers {
            assert_eq!(Layer::from_name(&layer.name()).as_ref(), Some(layer));
        }
        assert_eq!(Layer::from_name("group/site"), None);
    }

    #[test]
    fn later_layers_win_key_by_key_and_a_sensor_list_is_replaced_whole() {
        let (fleet, group, device) = (
            Layer::Fleet,
            Layer::Group {
                key: "site".into(),
                value: "north-sea".into(),
            },
            Layer::Device,
        );
        let f = settings(
            r#"{"forward": {"order": "fifo", "max_bytes_per_sec": "2KiB"},
                "kafka": {"topic": "fleet"}, "sensor": [{"name": "a", "kind": "fan"}]}"#,
        );
        let g = settings(
            r#"{"forward": {"order": "live_first"}, "sensor": [{"name": "b", "kind": "fan"}]}"#,
        );
        let d = settings(r#"{"kafka": {"topic": "mine"}}"#);
        let merged = merge([(&fleet, &f), (&group, &g), (&device, &d)]).unwrap();
        assert_eq!(
            Value::Object(merged),
            serde_json::json!({
                "forward": {"order": "live_first", "max_bytes_per_sec": "2KiB"},
                "kafka": {"topic": "mine"},
                "sensor": [{"name": "b", "kind": "fan"}],
            })
        );
        let bad = settings(r#"{"forward": "fifo"}"#);
        let (layer, e) = merge([(&fleet, &f), (&group, &bad)]).unwrap_err();
        assert_eq!(layer, group);
        assert!(e.to_string().contains("forward must be an object"), "{e}");
    }

    #[test]
    fn labels_are_plain_words() {
        assert!(label_problems(&labels(&[("site", "north-sea"), ("hw", "pi5:rev2")])).is_empty());
        for (key, value, says) in [
            ("site", "", "is empty"),
            ("", "x", "is empty"),
            ("site", "a/b", "contains '/'"),
            ("site", "#", "contains '#'"),
            ("si te", "x", "contains ' '"),
            ("site", "a=b", "contains '='"),
        ] {
            let p = label_problems(&labels(&[(key, value)]));
            assert_eq!(p.len(), 1, "{key}={value}");
            assert!(
                p[0].message.contains(says),
                "{key}={value}: {}",
                p[0].message
            );
        }
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(label_problems(&many)[0].message.contains("at most"));
    }
}
