//! The accepted layers, kept on the device so that they survive a power cut
//! or reboot without the broker.
//!
//! One file, `remote-config.json` next to the journal ([`StoredSet`]),
//! holding each layer's payload exactly as it was accepted (signature
//! included, so it can be checked again on start), the trial running if
//! any, and the versions reverted. It is replaced atomically
//! ([`crate::durable`]): a power cut at any point leaves either the old
//! file or the new one, never a mix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::layers::Layer;

use crate::disk::{self, Disk};

/// Where the accepted config lives.
#[derive(Debug, Clone)]
pub struct Store {
    disk: Arc<dyn Disk>,
    path: PathBuf,
}

impl Store {
    /// The store in `dir` (the journal's directory).
    pub fn in_dir(dir: &Path) -> Self {
        Store::on(disk::real(), dir)
    }

    /// The store in `dir` on `disk`.
    pub fn on(disk: Arc<dyn Disk>, dir: &Path) -> Self {
        Store {
            disk,
            path: dir.join("remote-config.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last accepted payload, if any.
    pub fn load(&self) -> std::io::Result<Option<Vec<u8>>> {
        match disk::read(&*self.disk, &self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the stored payload durably.
    pub fn save(&self, payload: &[u8]) -> std::io::Result<()> {
        crate::durable::replace(&*self.disk, &self.path, payload)
    }

    /// Puts back what [`Store::load`] returned earlier (a rollback).
    pub fn restore(&self, previous: Option<&[u8]>) -> std::io::Result<()> {
        match previous {
            Some(payload) => self.save(payload),
            None => crate::durable::remove(&*self.disk, &self.path),
        }
    }
}

/// What `remote-config.json` holds:
///
/// ```json
/// {"layers": {"fleet": "<payload as accepted>", "device": "…"},
///  "trial": {"layer": "device", "version": 7, "ends_at_ms": 1764950000000, "duration_ms": 600000,
///            "previous": {"fleet": "…", "device": "<version 6>"}},
///  "reverted": {"device": 5}}
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredSet {
    pub layers: BTreeMap<Layer, Vec<u8>>,
    pub trial: Option<StoredTrial>,
    /// Per layer, the newest version tried and reverted: it is not taken
    /// again when the broker delivers it again.
    pub reverted: BTreeMap<Layer, u64>,
}

/// A trial not yet confirmed: the layer and version on trial, when it ends
/// (wall clock, ms since the epoch), how long it was given, and the layers
/// to go back to.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrial {
    pub layer: Layer,
    pub version: u64,
    pub ends_at_ms: i64,
    pub duration_ms: u64,
    pub previous: BTreeMap<Layer, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct FileJson {
    layers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial: Option<TrialJson>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    reverted: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct TrialJson {
    layer: String,
    version: u64,
    ends_at_ms: i64,
    duration_ms: u64,
    previous: BTreeMap<String, String>,
}

/// Why the stored file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoredError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("neither a layer set nor a single desired config: {0}")]
    Shape(String),
    #[error("unknown layer {0:?}")]
    UnknownLayer(String),
}

fn names(payloads: &BTreeMap<Layer, Vec<u8>>) -> BTreeMap<String, String> {
    payloads
        .iter()
        .map(|(l, p)| (l.name(), String::from_utf8_lossy(p).into_owned()))
        .collect()
}

fn layer(name: String) -> Result<Layer, StoredError> {
    Layer::from_name(&name).ok_or(StoredError::UnknownLayer(name))
}

fn layers(names: BTreeMap<String, String>) -> Result<BTreeMap<Layer, Vec<u8>>, StoredError> {
    names
        .into_iter()
        .map(|(name, text)| Ok((layer(name)?, text.into_bytes())))
        .collect()
}

impl StoredSet {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let file = FileJson {
            layers: names(&self.layers),
            trial: self.trial.as_ref().map(|t| TrialJson {
                layer: t.layer.name(),
                version: t.version,
                ends_at_ms: t.ends_at_ms,
                duration_ms: t.duration_ms,
                previous: names(&t.previous),
            }),
            reverted: self.reverted.iter().map(|(l, v)| (l.name(), *v)).collect(),
        };
        serde_json::to_vec_pretty(&file).expect("JSON serialises")
    }

    /// The inverse of [`StoredSet::encode`]. A file written before layers
    /// existed holds one desired config: the device's own layer.
    pub fn decode(bytes: &[u8]) -> Result<StoredSet, StoredError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| StoredError::NotJson(e.to_string()))?;
        if value.get(super::desired::VERSION_KEY).is_some() {
            return Ok(StoredSet {
                layers: BTreeMap::from([(Layer::Device, bytes.to_vec())]),
                ..StoredSet::default()
            });
        }
        let file: FileJson =
            serde_json::from_value(value).map_err(|e| StoredError::Shape(e.to_string()))?;
        let trial = match file.trial {
            None => None,
            Some(t) => Some(StoredTrial {
                layer: layer(t.layer)?,
                version: t.version,
                ends_at_ms: t.ends_at_ms,
                duration_ms: t.duration_ms,
                previous: layers(t.previous)?,
            }),
        };
        let reverted = file
            .reverted
            .into_iter()
            .map(|(name, v)| Ok((layer(name)?, v)))
            .collect::<Result<_, StoredError>>()?;
        Ok(StoredSet {
            layers: layers(file.layers)?,
            trial,
            reverted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sets_round_trip_and_a_single_old_config_is_the_device_layer() {
        let site = Layer::Group {
            key: "site".into(),
            value: "n".into(),
        };
        let set = StoredSet {
            layers: BTreeMap::from([
                (Layer::Fleet, br#"{"version":3}"#.to_vec()),
                (
                    site.clone(),
                    br#"{"version": 1, "signature": "x"}"#.to_vec(),
                ),
            ]),
            trial: Some(StoredTrial {
                layer: site.clone(),
                version: 1,
                ends_at_ms: 1_764_950_000_000,
                duration_ms: 600_000,
                previous: BTreeMap::from([(Layer::Fleet, br#"{"version":3}"#.to_vec())]),
            }),
            reverted: BTreeMap::from([(Layer::Device, 4)]),
        };
        assert_eq!(StoredSet::decode(&set.encode()).unwrap(), set);
        let plain = StoredSet {
            trial: None,
            reverted: BTreeMap::new(),
            ..set
        };
        assert_eq!(StoredSet::decode(&plain.encode()).unwrap(), plain);
        let old = br#"{"version": 4, "forward": {"order": "fifo"}}"#;
        assert_eq!(
            StoredSet::decode(old).unwrap().layers,
            BTreeMap::from([(Layer::Device, old.to_vec())])
        );
        assert!(StoredSet::decode(b"[]").is_err());
        assert!(StoredSet::decode(br#"{"layers": {"nope": "{}"}}"#).is_err());
    }

    #[test]
    fn saves_replaces_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_dir(&dir.path().join("state"));
        assert_eq!(store.load().unwrap(), None);
        store.save(b"{\"version\":1}").unwrap();
        store.save(b"{\"version\":2}").unwrap();
        assert_eq!(
            store.load().unwrap().as_deref(),
            Some(&b"{\"version\":2}"[..])
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["remote-config.json"]);
        store.restore(Some(b"{\"version\":1}")).unwrap();
        assert_eq!(
            store.load().unwrap().as_deref(),
            Some(&b"{\"version\":1}"[..])
        );
        store.restore(None).unwrap();
        assert_eq!(store.load().unwrap(), None);
    }
}
