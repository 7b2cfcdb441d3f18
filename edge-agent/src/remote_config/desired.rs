//! A desired config as it arrives on `buoy/<device_id>/config`: parsing, the
//! bytes a signature covers, and the signature and version checks. Pure.
//!
//! The payload is one JSON object: the remotely settable part of the TOML
//! config (same keys, same value syntax: `"5s"`, `"64MiB"`), plus
//! `"version"` (a whole number that only increases) and, when the device has
//! `mqtt.config_public_key`, `"signature"`: the base64 ed25519 signature of
//! the payload's canonical bytes.
//!
//! Canonical bytes: the payload without `"signature"`, written as JSON with
//! no whitespace and every object's keys in byte order (numbers and strings
//! as serde_json writes them). The version is inside the signed bytes, so a
//! replayed old signed config fails the version check.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

pub const VERSION_KEY: &str = "version";
pub const SIGNATURE_KEY: &str = "signature";
/// `"trial": "10m"`: the layer reverts by itself unless the device confirms
/// it in that time (see [`super::trial`]).
pub const TRIAL_KEY: &str = "trial";
/// The shortest and longest trial.
pub const MIN_TRIAL: std::time::Duration = std::time::Duration::from_secs(5);
pub const MAX_TRIAL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Larger payloads are refused before parsing.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// A parsed desired config.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub version: u64,
    /// The config keys: everything but `version` and `signature`.
    pub settings: Map<String, Value>,
    pub signature: Option<Signature>,
    /// `"trial"`: how long the device has to confirm this config.
    pub trial: Option<std::time::Duration>,
    /// The canonical bytes (what a signature covers).
    pub canonical: Vec<u8>,
}

/// Why a desired config was refused. Shown to the operator in the reported
/// state, so each says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("{0} bytes is too large (at most {MAX_PAYLOAD})")]
    TooLarge(usize),
    #[error(
        "empty (the retained config was deleted): nothing changes; to withdraw a layer, publish a newer version with no settings"
    )]
    Empty,
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("\"version\" must be a whole number of at least 1")]
    Version,
    #[error("\"signature\" must be the base64 of a 64-byte ed25519 signature")]
    SignatureEncoding,
    #[error(
        "unsigned: this device only accepts configs signed for its mqtt.config_public_key (edge-agent sign-config)"
    )]
    Unsigned,
    #[error("the signature does not match: signed with another key, or changed after signing")]
    WrongSignature,
    #[error("version {got} is not newer than the applied version {applied}")]
    Stale { got: u64, applied: u64 },
    #[error("{key} cannot be set remotely: {why}")]
    NotRemote { key: String, why: &'static str },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("\"trial\" must be a duration between 5s and 7days, like \"10m\": {0}")]
    Trial(String),
    #[error("version {got} was tried on this device and reverted; publish a newer version")]
    Reverted { got: u64 },
}

/// Parses a payload. Checks only its shape; see [`check_signature`] and
/// [`check_version`].
pub fn parse(payload: &[u8]) -> Result<Desired, Rejected> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Rejected::TooLarge(payload.len()));
    }
    if payload.is_empty() {
        return Err(Rejected::Empty);
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| Rejected::NotJson(e.to_string()))?;
    let Value::Object(mut settings) = value else {
        return Err(Rejected::NotJson(format!(
            "the payload is {}, not an object",
            kind_of(&value)
        )));
    };
    let signature = match settings.remove(SIGNATURE_KEY) {
        None => None,
        Some(Value::String(s)) => {
            let bytes = BASE64
                .decode(s.trim())
                .map_err(|_| Rejected::SignatureEncoding)?;
            Some(Signature::from_slice(&bytes).map_err(|_| Rejected::SignatureEncoding)?)
        }
        Some(_) => return Err(Rejected::SignatureEncoding),
    };
    let canonical = canonical(&Value::Object(settings.clone()));
    let version = match settings.remove(VERSION_KEY) {
        Some(Value::Number(n)) => n.as_u64().filter(|v| *v >= 1).ok_or(Rejected::Version)?,
        _ => return Err(Rejected::Version),
    };
    let trial = match settings.remove(TRIAL_KEY) {
        None => None,
        Some(value) => Some(parse_trial(&value)?),
    };
    Ok(Desired {
        version,
        settings,
        signature,
        trial,
        canonical,
    })
}

fn parse_trial(value: &Value) -> Result<std::time::Duration, Rejected> {
    let Value::String(text) = value else {
        return Err(Rejected::Trial(format!("not {}", kind_of(value))));
    };
    let trial = humantime::parse_duration(text).map_err(|e| Rejected::Trial(e.to_string()))?;
    if !(MIN_TRIAL..=MAX_TRIAL).contains(&trial) {
        return Err(Rejected::Trial(format!("{text} is out of range")));
    }
    Ok(trial)
}

/// With a public key, the config must carry a valid signature by it; without
/// one, any signature is ignored.
pub fn check_signature(d: &Desired, key: Option<&VerifyingKey>) -> Result<(), Rejected> {
    let Some(key) = key else {
        return Ok(());
    };
    let signature = d.signature.as_ref().ok_or(Rejected::Unsigned)?;
    key.verify_strict(&d.canonical, signature)
        .map_err(|_| Rejected::WrongSignature)
}

/// Versions only increase.
pub fn check_version(d: &Desired, applied: u64) -> Result<(), Rejected> {
    if d.version <= applied {
        return Err(Rejected::Stale {
            got: d.version,
            applied,
        });
    }
    Ok(())
}

/// Signs a desired config (JSON text with a `version`), replacing any
/// signature; returns the signed JSON, pretty-printed.
pub fn sign(payload: &[u8], key: &SigningKey) -> Result<String, Rejected> {
    let d = parse(payload)?;
    let signature = key.sign(&d.canonical);
    let mut object: Map<String, Value> = serde_json::from_slice(payload).expect("parsed above");
    object.insert(
        SIGNATURE_KEY.into(),
        Value::String(BASE64.encode(signature.to_bytes())),
    );
    Ok(serde_json::to_string_pretty(&Value::Object(object)).expect("JSON serialises"))
}

/// A public key as `mqtt.config_public_key` gives it: PEM (`openssl pkey
/// -pubout`), or the base64 of the 32 raw bytes.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text)
            .map_err(|e| KeyError::PublicPem(e.to_string()));
    }
    let bytes = BASE64.decode(text).map_err(|_| KeyError::NotPemOrBase64)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::RawLength)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Public(e.to_string()))
}

/// A private key in PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
pub fn parse_private_key(pem: &str) -> Result<SigningKey, KeyError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::PrivatePem(e.to_string()))
}

/// Why a signing or verifying key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an ed25519 public key in PEM: {0}")]
    PublicPem(String),
    #[error("neither PEM nor base64")]
    NotPemOrBase64,
    #[error("a raw ed25519 public key is 32 bytes")]
    RawLength,
    #[error("not an ed25519 public key: {0}")]
    Public(String),
    #[error("not an ed25519 private key in PKCS#8 PEM: {0}")]
    PrivatePem(String),
}

/// JSON with no whitespace and object keys in byte order.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("a string serialises");
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a scalar serialises"),
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ed25519 key generated with `openssl genpkey -algorithm ed25519`
    /// for these tests only.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIK0FrOHs8G4zyj1qD92rab2Drtau82TmVNU1IV0yt+tH
-----END PRIVATE KEY-----";

    fn key() -> SigningKey {
        parse_private_key(PRIVATE).unwrap()
    }

    #[test]
    fn canonical_bytes_ignore_key_order_and_whitespace() {
        let a = parse(br#"{"version": 3, "kafka": {"topic": "t", "format": "json"}}"#).unwrap();
        let b =
            parse(b"{\"kafka\":{\"format\":\"json\",\n \"topic\":\"t\"},\"version\":3}").unwrap();
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(
            String::from_utf8(a.canonical).unwrap(),
            r#"{"kafka":{"format":"json","topic":"t"},"version":3}"#
        );
        assert_eq!(a.version, 3);
        assert_eq!(a.settings.keys().collect::<Vec<_>>(), ["kafka"]);
    }

    #[test]
    fn a_signed_config_verifies_and_any_change_breaks_it() {
        let k = key();
        let public = k.verifying_key();
        let signed = sign(br#"{"version": 7, "forward": {"order": "fifo"}}"#, &k).unwrap();
        let d = parse(signed.as_bytes()).unwrap();
        assert_eq!(check_signature(&d, Some(&public)), Ok(()));
        // Reformatting does not matter; changing a value does.
        let compact = signed.replace([' ', '\n'], "");
        assert_eq!(
            check_signature(&parse(compact.as_bytes()).unwrap(), Some(&public)),
            Ok(())
        );
        let tampered = signed.replace("fifo", "live_first");
        assert_eq!(
            check_signature(&parse(tampered.as_bytes()).unwrap(), Some(&public)),
            Err(Rejected::WrongSignature)
        );
        let bumped = signed.replace("7", "8");
        assert_eq!(
            check_signature(&parse(bumped.as_bytes()).unwrap(), Some(&public)),
            Err(Rejected::WrongSignature)
        );
        let unsigned = parse(br#"{"version": 7}"#).unwrap();
        assert_eq!(
            check_signature(&unsigned, Some(&public)),
            Err(Rejected::Unsigned)
        );
        // Without a key, signatures are not required.
        assert_eq!(check_signature(&unsigned, None), Ok(()));
        // Another key's signature does not pass.
        let other = SigningKey::from_bytes(&[7; 32]);
        let by_other = sign(br#"{"version": 7, "forward": {"order": "fifo"}}"#, &other).unwrap();
        assert_eq!(
            check_signature(&parse(by_other.as_bytes()).unwrap(), Some(&public)),
            Err(Rejected::WrongSignature)
        );
    }

    #[test]
    fn versions_only_increase() {
        let d = parse(br#"{"version": 5}"#).unwrap();
        assert_eq!(check_version(&d, 4), Ok(()));
        assert_eq!(
            check_version(&d, 5),
            Err(Rejected::Stale { got: 5, applied: 5 })
        );
    }

    #[test]
    fn malformed_payloads_say_what_is_wrong() {
        for (payload, says) in [
            (&b""[..], "empty (the retained config was deleted)"),
            (b"not json", "not a JSON object"),
            (b"[1,2]", "is an array, not an object"),
            (b"{}", "\"version\" must be"),
            (b"{\"version\": 0}", "\"version\" must be"),
            (b"{\"version\": -3}", "\"version\" must be"),
            (b"{\"version\": 1.5}", "\"version\" must be"),
            (b"{\"version\": \"2\"}", "\"version\" must be"),
            (
                b"{\"version\": 2, \"signature\": \"!!\"}",
                "base64 of a 64-byte",
            ),
            (
                b"{\"version\": 2, \"signature\": \"AAAA\"}",
                "base64 of a 64-byte",
            ),
            (b"{\"version\": 2, \"signature\": 5}", "base64 of a 64-byte"),
        ] {
            let e = parse(payload).unwrap_err().to_string();
            assert!(
                e.contains(says),
                "{:?}: {e}",
                String::from_utf8_lossy(payload)
            );
        }
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert!(matches!(parse(&big), Err(Rejected::TooLarge(_))));
    }

    #[test]
    fn public_keys_in_pem_or_raw_base64() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let public = key().verifying_key();
        let pem = public
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        assert_eq!(parse_public_key(&pem).unwrap(), public);
        let raw = BASE64.encode(public.to_bytes());
        assert_eq!(parse_public_key(&raw).unwrap(), public);
        assert!(
            parse_public_key("AAAA")
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        assert!(parse_private_key("nope").is_err());
    }

    #[test]
    fn a_trial_is_a_signed_duration_within_bounds() {
        let d = parse(br#"{"version": 2, "trial": "10m", "kafka": {"topic": "t"}}"#).unwrap();
        assert_eq!(d.trial, Some(std::time::Duration::from_secs(600)));
        assert!(!d.settings.contains_key(TRIAL_KEY), "not a config key");
        assert!(
            String::from_utf8(d.canonical)
                .unwrap()
                .contains(r#""trial":"10m""#),
            "the signature covers it"
        );
        for bad in [r#""2s""#, r#""8days""#, "600", r#""soon""#] {
            let payload = format!(r#"{{"version": 2, "trial": {bad}}}"#);
            let e = parse(payload.as_bytes()).unwrap_err();
            assert!(matches!(e, Rejected::Trial(_)), "{bad}: {e}");
        }
    }
}
