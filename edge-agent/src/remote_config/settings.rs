//! `[mqtt]`: where the agent takes its remote config from, and how it
//! proves who it is. Local only: a desired config cannot change it.
//!
//! Secrets are files (the password, a client key), looked up in
//! `$CREDENTIALS_DIRECTORY` when relative, as for `[kafka.security]`, and
//! read when the agent connects.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry::config_file::Problem;
use telemetry::secret::{resolve_files, unreadable_files};

use super::desired;

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Take the config from MQTT and report state there. Off by default.
    pub enabled: bool,
    /// The broker: `mqtt://host:port` (default port 1883), or
    /// `mqtts://host:port` for TLS (default port 8883).
    pub url: String,
    /// The MQTT client id. Default: `buoy-<device_id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The file holding the password (one trailing newline is ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) the broker's certificate is checked against.
    /// Default: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for brokers that require mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// An ed25519 public key (PEM, or the base64 of its 32 bytes). When set,
    /// a desired config must be signed by its private key
    /// (`edge-agent sign-config`), or it is rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_public_key: Option<String>,
    /// The MQTT keep-alive; the broker publishes the Last Will (`offline`)
    /// about 1.5 times this after the link dies.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// The reported state is published when something in it changes, and at
    /// least this often.
    #[serde(with = "humantime_serde")]
    pub state_interval: Duration,
    /// Longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            url: "mqtt://localhost:1883".into(),
            client_id: None,
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            config_public_key: None,
            keep_alive: Duration::from_secs(30),
            state_interval: Duration::from_secs(60),
            max_reconnect_delay: Duration::from_secs(60),
        }
    }
}

/// A broker address from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Why `mqtt.url` does not name a broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("must start with mqtt:// or mqtts://")]
    Scheme,
    #[error("{0:?} is not a port number")]
    Port(String),
    #[error("needs a host name, as mqtt://host:port")]
    Host,
}

impl MqttConfig {
    /// Relative files made absolute in `credentials`, as for
    /// `[kafka.security]`.
    pub fn resolve_files(&mut self, credentials: Option<&std::ffi::OsStr>) {
        resolve_files(
            [
                &mut self.password_file,
                &mut self.ca_file,
                &mut self.cert_file,
                &mut self.key_file,
            ],
            credentials,
        );
    }

    /// The broker `url` names.
    pub fn broker(&self) -> Result<Broker, BrokerUrlError> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(BrokerUrlError::Scheme);
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port))
                if !rest.ends_with(']') && (!host.contains(':') || host.starts_with('[')) =>
            {
                (
                    host,
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| BrokerUrlError::Port(port.to_owned()))?,
                )
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(BrokerUrlError::Host);
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The client id to use for `device_id`.
    pub fn client_id(&self, device_id: &str) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("buoy-{device_id}"))
    }

    /// Everything wrong with these settings. Only checked when enabled:
    /// a disabled `[mqtt]` may be half filled in.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !self.enabled {
            return p;
        }
        let broker = self.broker();
        if let Err(e) = &broker {
            p.push(Problem::new("mqtt.url", e.to_string()));
        }
        if self.password_file.is_some() && self.username.is_none() {
            p.push(Problem::new(
                "mqtt.username",
                "is required with password_file",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(Problem::new(
                "mqtt.cert_file",
                "a client certificate needs both cert_file and key_file",
            ));
        }
        let tls_keys = self.ca_file.is_some() || self.cert_file.is_some();
        if tls_keys && broker.is_ok_and(|b| !b.tls) {
            p.push(Problem::new(
                "mqtt.url",
                "TLS files are given, so the url must start with mqtts://",
            ));
        }
        p.extend(unreadable_files(
            "mqtt",
            [
                ("password_file", &self.password_file),
                ("ca_file", &self.ca_file),
                ("cert_file", &self.cert_file),
                ("key_file", &self.key_file),
            ],
        ));
        if let Some(key) = &self.config_public_key
            && let Err(e) = desired::parse_public_key(key)
        {
            p.push(Problem::new("mqtt.config_public_key", e.to_string()));
        }
        if !(Duration::from_secs(5)..=Duration::from_secs(65_535)).contains(&self.keep_alive) {
            p.push(Problem::new(
                "mqtt.keep_alive",
                "must be between 5s and 65535s",
            ));
        }
        if self.state_interval < Duration::from_secs(1) {
            p.push(Problem::new("mqtt.state_interval", "must be at least 1s"));
        }
        if self.max_reconnect_delay < Duration::from_millis(100) {
            p.push(Problem::new(
                "mqtt.max_reconnect_delay",
                "must be at least 100ms",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> MqttConfig {
        MqttConfig {
            enabled: true,
            url: url.into(),
            ..MqttConfig::default()
        }
    }

    #[test]
    fn urls_give_host_port_and_tls() {
        let b = |url: &str| with_url(url).broker();
        assert_eq!(
            b("mqtt://broker.example:1884").unwrap(),
            Broker {
                host: "broker.example".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(b("mqtts://10.0.0.1").unwrap().port, 8883);
        assert_eq!(b("mqtt://[::1]:1883").unwrap().host, "::1");
        assert_eq!(b("mqtt://h").unwrap().port, 1883);
        assert!(b("tcp://h:1").unwrap_err().to_string().contains("mqtt://"));
        assert!(
            b("mqtt://h:99999")
                .unwrap_err()
                .to_string()
                .contains("port")
        );
        assert!(b("mqtt://:1883").unwrap_err().to_string().contains("host"));
    }

    #[test]
    fn inconsistent_settings_are_named() {
        let mut c = with_url("mqtt://h");
        c.password_file = Some("/nonexistent/pw".into());
        c.ca_file = Some("/nonexistent/ca.pem".into());
        c.config_public_key = Some("not a key".into());
        let shown: Vec<String> = c
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        let shown = shown.join("\n");
        assert!(shown.contains("mqtt.username: is required"), "{shown}");
        assert!(shown.contains("must start with mqtts://"), "{shown}");
        assert!(shown.contains("mqtt.ca_file: cannot read"), "{shown}");
        assert!(shown.contains("mqtt.config_public_key"), "{shown}");
        c.enabled = false;
        assert!(c.problems().is_empty(), "a disabled [mqtt] is not checked");
    }
}
