//! The redb file: opening it with redb's integrity check plus our own,
//! telling a damaged file (to quarantine) from one that cannot be opened for
//! another reason, and registering the boot the journal is opened in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use redb::{Database, DatabaseError, ReadableTable, StorageError};

use super::config::JournalOptions;
use super::file::LimitedFile;
use super::record;
use super::tables::{BOOTS, META, READINGS, begin, get};
use super::{Counters, JournalError};
use crate::disk::{Disk, Mode};

/// Why the file could not be opened.
pub(super) enum OpenFailure {
    /// The file is damaged: quarantine it.
    Damaged(String),
    Other(JournalError),
}

/// Opens the file with redb's integrity check. Anything that says the bytes
/// are not a sound journal (redb's checks, a panic inside redb, tables of the
/// wrong type) is [`OpenFailure::Damaged`]; a lock held by another process or
/// an I/O error is not.
pub(super) fn open_db(
    disk: &dyn Disk,
    path: &Path,
    options: &JournalOptions,
    size_limit: &Arc<AtomicU64>,
) -> Result<Database, OpenFailure> {
    let io_err = |e: std::io::Error| {
        OpenFailure::Other(JournalError::Open {
            path: path.to_owned(),
            source: redb::Error::Io(e),
        })
    };
    let file = disk.open(path, Mode::Create).map_err(io_err)?;
    let backend = LimitedFile::new(file, size_limit.clone());
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .set_check_integrity_on_open(true)
            .create_with_backend(backend)
    }));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(OpenFailure::Other(JournalError::InUse {
                path: path.to_owned(),
            }));
        }
        Ok(Err(DatabaseError::Storage(StorageError::Corrupted(reason)))) => {
            return Err(OpenFailure::Damaged(reason));
        }
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Err(OpenFailure::Damaged(e.to_string()));
        }
        Ok(Err(e)) => {
            return Err(OpenFailure::Other(JournalError::Open {
                path: path.to_owned(),
                source: e.into(),
            }));
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(OpenFailure::Damaged(format!(
                "redb could not read it ({what})"
            )));
        }
    };
    match check_tables(&db) {
        Ok(()) => Ok(db),
        Err(e) => Err(OpenFailure::Damaged(e.to_string())),
    }
}

/// Our own tables must open with the right types and their first and last
/// records decode.
fn check_tables(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let table = tx.open_table(READINGS)?;
        tx.open_table(BOOTS)?;
        tx.open_table(META)?;
        for end in [table.first(), table.last()] {
            if let Some((_, v)) = end? {
                record::decode_reading(v.value())
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            }
        }
    }
    Ok(tx.commit()?)
}

/// Finds or adds `boot_id` (if any) in the `boots` table; returns its index, the whole
/// table (one entry per boot the journal has seen, a handful), the persisted
/// counters.
pub(super) fn register_boot(
    db: &Database,
    boot_id: Option<&str>,
) -> Result<Registered, redb::Error> {
    let tx = begin(db)?;
    let (index, boots, counters);
    {
        let mut table = tx.open_table(BOOTS)?;
        let mut known = read_boots(&table)?;
        index = match boot_id.map(|b| (b, known.iter().find(|(_, v)| &***v == b))) {
            None => u32::MAX,
            Some((_, Some((&i, _)))) => i,
            Some((boot_id, None)) => {
                let i = known.keys().max().map_or(0, |m| m + 1);
                let mut value = Vec::new();
                record::encode_boot(&mut value, i, boot_id);
                table.insert(i, value.as_slice())?;
                known.insert(i, Arc::from(boot_id));
                i
            }
        };
        boots = known;
        let meta = tx.open_table(META)?;
        let mut values = [0; 6];
        for (v, key) in values.iter_mut().zip(Counters::KEYS) {
            *v = get(&meta, key)?;
        }
        counters = Counters::from_values(values);
    }
    tx.commit()?;
    Ok(Registered {
        boot_index: index,
        boots,
        counters,
    })
}

/// What [`register_boot`] found.
pub(super) struct Registered {
    pub boot_index: u32,
    pub boots: HashMap<u32, Arc<str>>,
    pub counters: Counters,
}

pub(super) fn read_boots(
    table: &impl ReadableTable<u32, &'static [u8]>,
) -> Result<HashMap<u32, Arc<str>>, redb::Error> {
    let mut boots = HashMap::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let id = record::decode_boot(v.value()).map_or("unknown", |(_, id)| id);
        boots.insert(k.value(), Arc::<str>::from(id));
    }
    Ok(boots)
}
