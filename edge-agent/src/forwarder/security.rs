//! `[kafka.security]`: TLS and SASL (PLAIN, SCRAM) for the producer.
//!
//! Secrets (the SASL password, a client key's password) are never in the
//! config file itself: the config names files, read when the producer is
//! created. A relative file name is looked up in `$CREDENTIALS_DIRECTORY`
//! when systemd's `LoadCredential=` set it. Secret values are kept in
//! [`Secret`], whose `Debug` does not show them, and are never logged.

use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};
use telemetry::config_file::Problem;
use telemetry::secret::{self, Secret, SecretError, resolve_files, unreadable_files};

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanisms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[kafka.security]`: how the producer authenticates and encrypts.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with `sasl_*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The file holding the SASL password (one trailing newline is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) the brokers' certificates are checked against.
    /// Default: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for brokers that require mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The file holding the private key's password, if it is encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_password_file: Option<PathBuf>,
    /// Check that a broker's certificate names the host connected to.
    /// Default: true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_hostname: Option<bool>,
}

/// A secret or certificate file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("kafka.security.{key}: {source}")]
pub struct SecretFileError {
    pub key: &'static str,
    #[source]
    pub source: SecretError,
}

fn read_secret(key: &'static str, path: &Path) -> Result<Secret, SecretFileError> {
    secret::read(path).map_err(|source| SecretFileError { key, source })
}

impl KafkaSecurity {
    /// Relative files made absolute in `credentials` (`resolve_in`).
    pub fn resolve_files(&mut self, credentials: Option<&std::ffi::OsStr>) {
        resolve_files(
            [
                &mut self.password_file,
                &mut self.ca_file,
                &mut self.cert_file,
                &mut self.key_file,
                &mut self.key_password_file,
            ],
            credentials,
        );
    }

    /// Everything inconsistent in these settings, or a file that cannot be
    /// read.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let key = |k: &str| format!("{at}.{k}");
        let sasl_keys = self.sasl_mechanism.is_some()
            || self.username.is_some()
            || self.password_file.is_some();
        if self.protocol.sasl() {
            if self.sasl_mechanism.is_none() {
                p.push(Problem::new(
                    key("sasl_mechanism"),
                    "is required with SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                ));
            }
            if self.username.as_deref().is_none_or(str::is_empty) {
                p.push(Problem::new(key("username"), "is required with SASL"));
            }
            if self.password_file.is_none() {
                p.push(Problem::new(
                    key("password_file"),
                    "is required with SASL: the file that holds the password",
                ));
            }
        } else if sasl_keys {
            p.push(Problem::new(
                key("protocol"),
                "SASL settings are given, so the protocol must be sasl_plaintext or sasl_ssl",
            ));
        }
        let tls_keys = self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.key_password_file.is_some()
            || self.verify_hostname.is_some();
        if tls_keys && !self.protocol.tls() {
            p.push(Problem::new(
                key("protocol"),
                "TLS settings are given, so the protocol must be ssl or sasl_ssl",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(Problem::new(
                key("cert_file"),
                "a client certificate needs both cert_file and key_file",
            ));
        }
        p.extend(unreadable_files(at, self.files()));
        p
    }

    fn files(&self) -> [(&'static str, &Option<PathBuf>); 5] {
        [
            ("password_file", &self.password_file),
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("key_password_file", &self.key_password_file),
        ]
    }

    /// Sets the librdkafka properties, reading the secrets from their files.
    pub fn apply(&self, c: &mut ClientConfig) -> Result<(), SecretFileError> {
        c.set("security.protocol", self.protocol.as_librdkafka());
        if self.protocol.sasl() {
            if let Some(m) = self.sasl_mechanism {
                c.set("sasl.mechanisms", m.as_librdkafka());
            }
            if let Some(user) = &self.username {
                c.set("sasl.username", user);
            }
            if let Some(file) = &self.password_file {
                c.set(
                    "sasl.password",
                    read_secret("password_file", file)?.expose(),
                );
            }
        }
        if self.protocol.tls() {
            if let Some(ca) = &self.ca_file {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                c.set("ssl.certificate.location", cert.display().to_string());
                c.set("ssl.key.location", key.display().to_string());
            }
            if let Some(file) = &self.key_password_file {
                c.set(
                    "ssl.key.password",
                    read_secret("key_password_file", file)?.expose(),
                );
            }
            let verify = self.verify_hostname.unwrap_or(true);
            c.set(
                "ssl.endpoint.identification.algorithm",
                if verify { "https" } else { "none" },
            );
        }
        Ok(())
    }
}

/// librdkafka properties that belong in `[kafka.security]` instead.
pub const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("security.protocol", "kafka.security.protocol"),
    ("sasl.mechanisms", "kafka.security.sasl_mechanism"),
    ("sasl.mechanism", "kafka.security.sasl_mechanism"),
    ("sasl.username", "kafka.security.username"),
    (
        "sasl.password",
        "kafka.security.password_file (secrets never go in the config file)",
    ),
    ("ssl.ca.location", "kafka.security.ca_file"),
    ("ssl.certificate.location", "kafka.security.cert_file"),
    ("ssl.key.location", "kafka.security.key_file"),
    (
        "ssl.key.password",
        "kafka.security.key_password_file (secrets never go in the config file)",
    ),
    (
        "ssl.endpoint.identification.algorithm",
        "kafka.security.verify_hostname",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn props(c: &ClientConfig) -> std::collections::BTreeMap<&str, &str> {
        c.config_map().iter().map(|(k, v)| (&**k, &**v)).collect()
    }

    #[test]
    fn sasl_scram_over_tls_reads_the_password_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cr3t\n").unwrap();
        let s = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("buoy".into()),
            password_file: Some(password),
            ..Default::default()
        };
        assert!(s.problems("kafka.security").is_empty());
        let mut c = ClientConfig::new();
        s.apply(&mut c).unwrap();
        let p = props(&c);
        assert_eq!(p["security.protocol"], "sasl_ssl");
        assert_eq!(p["sasl.mechanisms"], "SCRAM-SHA-512");
        assert_eq!(p["sasl.username"], "buoy");
        assert_ne!(p["sasl.password"], "s3cr3t", "rdkafka's own views hide it");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert_eq!(
            c.get("sasl.password"),
            Some("s3cr3t"),
            "one trailing newline is dropped"
        );
        assert_eq!(p["ssl.endpoint.identification.algorithm"], "https");
        // librdkafka accepts the combination (built with TLS and SCRAM).
        c.set("bootstrap.servers", "127.0.0.1:1");
        let created = c.create::<rdkafka::producer::BaseProducer>();
        assert!(created.is_ok(), "{:?}", created.err());
        // A CA file that holds no certificate is refused when the producer
        // is created, so `check-config` reports it.
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let with_bad_ca = KafkaSecurity {
            ca_file: Some(ca),
            ..s
        };
        let mut c = ClientConfig::new();
        with_bad_ca.apply(&mut c).unwrap();
        let e = c.create::<rdkafka::producer::BaseProducer>().err().unwrap();
        assert!(e.to_string().contains("ssl.ca.location"), "{e}");
    }

    #[test]
    fn secrets_are_not_shown_and_a_missing_file_is_named() {
        let s = KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl_mechanism: Some(SaslMechanism::Plain),
            username: Some("u".into()),
            password_file: Some("/nonexistent/buoy-password".into()),
            ..Default::default()
        };
        let problems = s.problems("kafka.security");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let e = s.apply(&mut ClientConfig::new()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/buoy-password"), "{e}");
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let sasl_without_protocol = KafkaSecurity {
            username: Some("u".into()),
            ..Default::default()
        };
        assert_eq!(sasl_without_protocol.problems("s").len(), 1);
        let sasl_incomplete = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            ..Default::default()
        };
        assert_eq!(sasl_incomplete.problems("s").len(), 3);
        let half_a_client_cert = KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            cert_file: Some("/etc/hostname".into()),
            ..Default::default()
        };
        assert_eq!(half_a_client_cert.problems("s").len(), 1);
        let tls_without_protocol = KafkaSecurity {
            verify_hostname: Some(false),
            ..Default::default()
        };
        assert_eq!(tls_without_protocol.problems("s").len(), 1);
    }
}
