//! The journal's redb tables and the small operations every transaction
//! shares: durable transactions, appending numbered readings, the next
//! sequence number, and the meta values (each a checksummed frame, so that
//! salvage can find them in a damaged file).

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

use super::file;
use super::record;
use super::{Counters, Encoded};

pub(crate) const READINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("readings");
pub(crate) const BOOTS: TableDefinition<u32, &[u8]> = TableDefinition::new("boots");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const NEXT_SEQ: &str = "next_seq";

/// A durable write transaction.
pub(super) fn begin(db: &Database) -> Result<WriteTransaction, redb::Error> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    Ok(tx)
}

/// Appends `lines` numbered from `first`; returns the numbers given and the
/// bytes stored.
pub(super) fn append(
    table: &mut redb::Table<'_, u64, &'static [u8]>,
    boot: u32,
    first: u64,
    lines: &[Encoded],
) -> Result<(std::ops::Range<u64>, i64), redb::Error> {
    let mut next = first;
    let mut added = 0;
    let mut value = Vec::with_capacity(256);
    for e in lines {
        value.clear();
        record::encode_reading(&mut value, next, boot, &e.key, &e.line, e.taken);
        table.insert(next, value.as_slice())?;
        added += value.len() as i64;
        next += 1;
    }
    Ok((first..next, added))
}

/// The number the next appended reading gets: one past the newest record,
/// or the high-water mark kept in `meta` once the newest were deleted.
pub(super) fn next_seq(
    table: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, redb::Error> {
    let last = table.last()?.map_or(0, |(k, _)| k.value());
    Ok(get(meta, NEXT_SEQ)?.max(last + 1))
}

/// Keeps `next` in `meta` when the table alone no longer shows it (its
/// newest records were deleted). Writing it only then spares the meta page
/// a rewrite on every commit: a page less of flash wear per commit.
pub(super) fn keep_next_seq(
    table: &impl ReadableTable<u64, &'static [u8]>,
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    next: u64,
) -> Result<(), redb::Error> {
    let last = table.last()?.map_or(0, |(k, _)| k.value());
    if last + 1 < next && get(meta, NEXT_SEQ)? < next {
        put(meta, NEXT_SEQ, next)?;
    }
    Ok(())
}

/// A meta value. Stored as a checksummed frame naming itself, so that
/// salvage finds `next_seq` and the counters in a damaged file.
pub(super) fn get(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, redb::Error> {
    let Some(v) = meta.get(key)? else {
        return Ok(0);
    };
    match record::decode_meta(v.value()) {
        Ok((name, value)) if name == key => Ok(value),
        _ => Err(redb::Error::Corrupted(format!(
            "the journal's {key} value is damaged"
        ))),
    }
}

pub(super) fn put(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: u64,
) -> Result<(), redb::Error> {
    let mut frame = Vec::with_capacity(32);
    record::encode_meta(&mut frame, key, value);
    meta.insert(key, frame.as_slice())?;
    Ok(())
}

pub(super) fn add_counters(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    add: &Counters,
) -> Result<(), redb::Error> {
    for (key, n) in Counters::KEYS.iter().zip(add.values()) {
        if n > 0 {
            let now = get(meta, key)?;
            put(meta, key, now + n)?;
        }
    }
    Ok(())
}

/// Whether a redb error is a lack of space.
pub(crate) fn is_no_space(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(io) => file::is_no_space(io),
        _ => false,
    }
}
