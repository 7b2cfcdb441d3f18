//! The byte layout of what the journal stores: self-describing, checksummed
//! frames, so that a damaged file can be salvaged by scanning its raw bytes
//! for frames, without trusting redb's page structure (see [`scan`]).
//!
//! ```text
//! offset size
//!  0     2    magic 0xB5 0x4A (0xB5 cannot start a UTF-8 character)
//!  2     1    kind: 1 = reading, 2 = boot, 3 = meta value, 4 = stamped reading
//!  3     4    payload length, u32 LE
//!  7     4    CRC-32 (IEEE) of bytes 2..7 and the payload
//! 11     n    payload
//! ```
//! Reading payload: `[seq u64 LE][boot index u32 LE][key length u16 LE][key][line protocol]`.
//! Stamped reading payload: `[seq u64 LE][boot index u32 LE][monotonic ns u64 LE]
//! [flags u8: 1 = clock synchronised][key length u16 LE][key][line protocol]`:
//! what the agent writes since it checks the clock (see [`crate::clock`]);
//! plain readings (older journals, aggregates) are read as before.
//! Boot payload: `[boot index u32 LE][boot id, UTF-8]`.
//! Meta payload: `[value u64 LE][name, UTF-8]`: `next_seq` (the journal's
//! high-water mark, so salvage never numbers a new reading like an old one)
//! and the counters, so they survive a damaged file too.
//!
//! The sequence number is stored in the frame as well as in the redb key, so a
//! salvaged frame keeps its identity.

const MAGIC: [u8; 2] = [0xB5, 0x4A];
const HEADER: usize = 2 + 1 + 4 + 4;
const KIND_READING: u8 = 1;
const KIND_BOOT: u8 = 2;
const KIND_META: u8 = 3;
const KIND_STAMPED: u8 = 4;
/// What a stamped reading adds to a plain one.
const STAMP_LEN: usize = 8 + 1;
const FLAG_SYNCED: u8 = 1;

/// When a reading was taken, besides its timestamp: the time since boot,
/// and whether the wall clock was believed then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub mono_ns: u64,
    pub synced: bool,
}

/// A decoded reading frame, borrowing from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub boot: u32,
    pub key: &'a str,
    pub line: &'a str,
    /// `None` for plain readings.
    pub taken: Option<Taken>,
}

/// Anything a raw scan can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Reading(RecordRef<'a>),
    Boot { index: u32, id: &'a str },
    Meta { name: &'a str, value: u64 },
}

/// The bytes a (stamped) reading frame takes for this key and line.
pub fn reading_len(key: &str, line: &str) -> usize {
    HEADER + 8 + 4 + STAMP_LEN + 2 + key.len().min(u16::MAX as usize) + line.len()
}

/// Appends a reading frame to `out`: a stamped one if `taken` is known.
pub fn encode_reading(
    out: &mut Vec<u8>,
    seq: u64,
    boot: u32,
    key: &str,
    line: &str,
    taken: Option<Taken>,
) {
    // Keys are device ids, validated to be short; cap defensively.
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let kind = if taken.is_some() {
        KIND_STAMPED
    } else {
        KIND_READING
    };
    frame(out, kind, |p| {
        p.extend_from_slice(&seq.to_le_bytes());
        p.extend_from_slice(&boot.to_le_bytes());
        if let Some(t) = taken {
            p.extend_from_slice(&t.mono_ns.to_le_bytes());
            p.push(if t.synced { FLAG_SYNCED } else { 0 });
        }
        p.extend_from_slice(&(key.len() as u16).to_le_bytes());
        p.extend_from_slice(key);
        p.extend_from_slice(line.as_bytes());
    });
}

/// Appends a boot frame to `out`.
pub fn encode_boot(out: &mut Vec<u8>, index: u32, id: &str) {
    frame(out, KIND_BOOT, |p| {
        p.extend_from_slice(&index.to_le_bytes());
        p.extend_from_slice(id.as_bytes());
    });
}

/// Why bytes are not an intact frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("record is {len} bytes, shorter than its header")]
    ShorterThanHeader { len: usize },
    #[error("record does not start with the journal's magic bytes")]
    NoMagic,
    #[error("record says it holds {len} bytes, but only {present} follow")]
    Truncated { len: usize, present: usize },
    #[error("record checksum does not match: the bytes were damaged")]
    Checksum,
    #[error("{what} record is too short")]
    TooShort { what: &'static str },
    #[error("{what} is not UTF-8: {source}")]
    NotUtf8 {
        what: &'static str,
        source: std::str::Utf8Error,
    },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("another kind of frame where a {expected} was expected")]
    WrongKind { expected: &'static str },
}

/// Appends a meta value frame to `out`.
pub fn encode_meta(out: &mut Vec<u8>, name: &str, value: u64) {
    frame(out, KIND_META, |p| {
        p.extend_from_slice(&value.to_le_bytes());
        p.extend_from_slice(name.as_bytes());
    });
}

/// Decodes a stored meta value.
pub fn decode_meta(bytes: &[u8]) -> Result<(&str, u64), FrameError> {
    match decode(bytes)? {
        (Frame::Meta { name, value }, _) => Ok((name, value)),
        _ => Err(FrameError::WrongKind { expected: "meta" }),
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(kind);
    out.extend_from_slice(&[0; 8]);
    payload(out);
    let len = (out.len() - start - HEADER) as u32;
    out[start + 3..start + 7].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&out[start + 2..start + 7], &out[start + HEADER..]);
    out[start + 7..start + 11].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    h.finalize()
}

/// Decodes one stored reading. Any damage (length, checksum, UTF-8) is an
/// error saying what is wrong.
pub fn decode_reading(bytes: &[u8]) -> Result<RecordRef<'_>, FrameError> {
    match decode(bytes)? {
        (Frame::Reading(r), _) => Ok(r),
        _ => Err(FrameError::WrongKind {
            expected: "reading",
        }),
    }
}

/// Decodes one stored boot entry.
pub fn decode_boot(bytes: &[u8]) -> Result<(u32, &str), FrameError> {
    match decode(bytes)? {
        (Frame::Boot { index, id }, _) => Ok((index, id)),
        _ => Err(FrameError::WrongKind { expected: "boot" }),
    }
}

/// Decodes the frame at the start of `bytes`; returns it and its length.
fn decode(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    if bytes.len() < HEADER {
        return Err(FrameError::ShorterThanHeader { len: bytes.len() });
    }
    if bytes[..2] != MAGIC {
        return Err(FrameError::NoMagic);
    }
    let kind = bytes[2];
    let len = u32::from_le_bytes(bytes[3..7].try_into().expect("4 bytes")) as usize;
    if bytes.len() - HEADER < len {
        return Err(FrameError::Truncated {
            len,
            present: bytes.len() - HEADER,
        });
    }
    let stored = u32::from_le_bytes(bytes[7..11].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER..HEADER + len];
    if checksum(&bytes[2..7], payload) != stored {
        return Err(FrameError::Checksum);
    }
    let frame = match kind {
        KIND_READING => Frame::Reading(reading_payload(payload, false)?),
        KIND_STAMPED => Frame::Reading(reading_payload(payload, true)?),
        KIND_BOOT => {
            if payload.len() < 4 {
                return Err(FrameError::TooShort { what: "boot" });
            }
            let index = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes"));
            let id = std::str::from_utf8(&payload[4..]).map_err(|source| FrameError::NotUtf8 {
                what: "boot id",
                source,
            })?;
            Frame::Boot { index, id }
        }
        KIND_META => {
            if payload.len() < 8 {
                return Err(FrameError::TooShort { what: "meta" });
            }
            let value = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let name =
                std::str::from_utf8(&payload[8..]).map_err(|source| FrameError::NotUtf8 {
                    what: "meta name",
                    source,
                })?;
            Frame::Meta { name, value }
        }
        other => return Err(FrameError::UnknownKind(other)),
    };
    Ok((frame, HEADER + len))
}

fn reading_payload(p: &[u8], stamped: bool) -> Result<RecordRef<'_>, FrameError> {
    let stamp_len = if stamped { STAMP_LEN } else { 0 };
    if p.len() < 14 + stamp_len {
        return Err(FrameError::TooShort { what: "reading" });
    }
    let seq = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    let boot = u32::from_le_bytes(p[8..12].try_into().expect("4 bytes"));
    let taken = stamped.then(|| Taken {
        mono_ns: u64::from_le_bytes(p[12..20].try_into().expect("8 bytes")),
        synced: p[20] & FLAG_SYNCED != 0,
    });
    let p = &p[12 + stamp_len..];
    let key_len = u16::from_le_bytes(p[..2].try_into().expect("2 bytes")) as usize;
    let rest = &p[2..];
    if rest.len() < key_len {
        return Err(FrameError::TooShort {
            what: "reading's key",
        });
    }
    let key = std::str::from_utf8(&rest[..key_len]).map_err(|source| FrameError::NotUtf8 {
        what: "key",
        source,
    })?;
    let line = std::str::from_utf8(&rest[key_len..]).map_err(|source| FrameError::NotUtf8 {
        what: "reading",
        source,
    })?;
    Ok(RecordRef {
        seq,
        boot,
        key,
        line,
        taken,
    })
}

/// Every intact frame in `bytes` with its offset, in file order: the raw
/// scan salvage uses.
/// A frame is believed only if its magic, length and checksum agree, so
/// zeroed, truncated or bit-flipped regions are passed over. Old copies of
/// frames that redb has since freed are found too; callers deduplicate by
/// sequence number.
pub fn scan(bytes: &[u8]) -> impl Iterator<Item = (usize, Frame<'_>)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + HEADER <= bytes.len() {
            let Some(found) = bytes[at..].windows(2).position(|w| w == MAGIC) else {
                at = bytes.len();
                return None;
            };
            at += found;
            match decode(&bytes[at..]) {
                Ok((frame, len)) => {
                    let start = at;
                    at += len;
                    return Some((start, frame));
                }
                Err(_) => at += 1,
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAKEN: Taken = Taken {
        mono_ns: 12_345_678_901,
        synced: false,
    };

    fn reading(seq: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_reading(&mut buf, seq, 3, "pi-1", "m v=1 1", Some(TAKEN));
        buf
    }

    #[test]
    fn round_trips() {
        let buf = reading(42);
        assert_eq!(buf.len(), reading_len("pi-1", "m v=1 1"));
        assert_eq!(
            decode_reading(&buf),
            Ok(RecordRef {
                seq: 42,
                boot: 3,
                key: "pi-1",
                line: "m v=1 1",
                taken: Some(TAKEN),
            })
        );
        // Plain readings (journals from before stamps, aggregates) still
        // read back.
        let mut plain = Vec::new();
        encode_reading(&mut plain, 43, 3, "pi-1", "m v=1 1", None);
        assert_eq!(
            decode_reading(&plain).map(|r| (r.seq, r.taken)),
            Ok((43, None))
        );
        let mut boot = Vec::new();
        encode_boot(&mut boot, 7, "b-7");
        assert_eq!(decode_boot(&boot), Ok((7, "b-7")));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = reading(42);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    decode_reading(&damaged).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn rejects_truncated_records() {
        let buf = reading(42);
        for len in 0..buf.len() {
            assert!(decode_reading(&buf[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn a_scan_finds_intact_frames_among_garbage_and_damage() {
        let mut file = vec![0u8; 100];
        file.extend(reading(1));
        file.extend([0xB5, 0x4A, 1, 200, 0, 0, 0]); // a header cut short
        let mut damaged = reading(2);
        let last = damaged.len() - 1;
        damaged[last] ^= 0x20;
        file.extend(damaged);
        file.extend(b"some text 0xB5 \xB5\xB5J");
        let mut boot = Vec::new();
        encode_boot(&mut boot, 0, "boot-a");
        file.extend(&boot);
        file.extend(reading(3));
        encode_meta(&mut file, "next_seq", 9);
        file.extend(&reading(4)[..20]); // truncated at the end of the file
        let found: Vec<Frame<'_>> = scan(&file).map(|(_, f)| f).collect();
        let seqs: Vec<u64> = found
            .iter()
            .filter_map(|f| match f {
                Frame::Reading(r) => Some(r.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [1, 3]);
        assert!(found.contains(&Frame::Boot {
            index: 0,
            id: "boot-a"
        }));
        assert!(found.contains(&Frame::Meta {
            name: "next_seq",
            value: 9
        }));
    }
}
