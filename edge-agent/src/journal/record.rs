//! The byte layout of one journal record.
//!
//! ```text
//! [version: u8 = 1][boot index: u32 LE][key length: u16 LE][key][line protocol]
//! ```
//! The version byte lets later releases change the layout and still read
//! journals written by older ones.

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 2;

/// Appends the encoded record to `out`.
pub fn encode_into(out: &mut Vec<u8>, boot_index: u32, key: &str, line: &str) {
    // Keys are device ids, validated to be short; cap defensively.
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    out.reserve(HEADER + key.len() + line.len());
    out.push(VERSION);
    out.extend_from_slice(&boot_index.to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(line.as_bytes());
}

/// Splits a record into (boot index, key, line protocol).
pub fn decode(bytes: &[u8]) -> Result<(u32, &str, &str), String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "record is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    if bytes[0] != VERSION {
        return Err(format!("unknown record version {}", bytes[0]));
    }
    let boot = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    let key_len = u16::from_le_bytes(bytes[5..7].try_into().expect("2 bytes")) as usize;
    let rest = &bytes[HEADER..];
    if rest.len() < key_len {
        return Err("record is shorter than its key".into());
    }
    let key =
        std::str::from_utf8(&rest[..key_len]).map_err(|e| format!("key is not UTF-8: {e}"))?;
    let line =
        std::str::from_utf8(&rest[key_len..]).map_err(|e| format!("reading is not UTF-8: {e}"))?;
    Ok((boot, key, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 3, "pi-1", "m v=1 1");
        assert_eq!(decode(&buf), Ok((3, "pi-1", "m v=1 1")));
    }

    #[test]
    fn rejects_damaged_records() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 3, "pi-1", "m v=1 1");
        assert!(decode(&buf[..4]).is_err());
        assert!(decode(&buf[..9]).is_err());
        let mut wrong_version = buf.clone();
        wrong_version[0] = 9;
        assert!(decode(&wrong_version).unwrap_err().contains("version 9"));
    }
}
