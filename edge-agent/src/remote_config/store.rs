//! The last accepted desired config, kept on the device so that it survives
//! a power cut or reboot without the broker.
//!
//! One file, `remote-config.json` next to the journal, holding the payload
//! exactly as it was accepted (signature included, so it can be checked
//! again on start). It is replaced atomically ([`crate::durable`]): a power
//! cut at any point leaves either the old payload or the new one, never a
//! mix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
