//! `/etc/buoy/fleet.toml`: where the broker is and how to log in to it
//! (`[mqtt]`, the same keys as the agent's), and where `serve` listens
//! (`[serve]`). `--mqtt URL` on the command line overrides `mqtt.url`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edge_agent::remote_config::settings::MqttConfig;
use serde::{Deserialize, Serialize};
use telemetry::config_file::{ConfigError, Loaded, Problem};

/// Environment overrides: `BUOY_FLEET_MQTT_URL`, …
pub const ENV_PREFIX: &str = "BUOY_FLEET_";
pub const DEFAULT_FILE: &str = "/etc/buoy/fleet.toml";

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    pub mqtt: FleetMqtt,
    pub serve: ServeConfig,
}

/// `[mqtt]`: the broker, with the agent's credential and TLS keys.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetMqtt {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Default: `buoy-fleet-<random>`, so that several commands can run at
    /// once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
}

impl Default for FleetMqtt {
    fn default() -> Self {
        FleetMqtt {
            url: "mqtt://localhost:1883".into(),
            client_id: None,
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keep_alive: Duration::from_secs(30),
        }
    }
}

impl FleetMqtt {
    /// The agent's `[mqtt]` with these keys: its client builder and checks
    /// apply as they are.
    pub fn as_agent(&self) -> MqttConfig {
        MqttConfig {
            enabled: true,
            url: self.url.clone(),
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            keep_alive: self.keep_alive,
            ..MqttConfig::default()
        }
    }

    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("buoy-fleet-{:08x}", rand::random::<u32>()))
    }
}

/// `[serve]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where the fleet page, `/api/devices` and `/metrics` are served.
    pub listen: SocketAddr,
    /// Config decisions kept per device for its page.
    pub history: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9276)),
            history: 20,
        }
    }
}

impl FleetConfig {
    /// Loads `text` (the file, if any), with the environment's overrides
    /// and `url` (from `--mqtt`) over it.
    pub fn load(
        source_name: &str,
        text: Option<&str>,
        env: &[(String, String)],
        url: Option<&str>,
    ) -> Result<Loaded<FleetConfig>, ConfigError> {
        let mut loaded = telemetry::config_file::load(
            source_name,
            text,
            env,
            ENV_PREFIX,
            FleetConfig::problems,
        )?;
        if let Some(url) = url {
            loaded.config.mqtt.url = url.to_owned();
            if let Err(e) = loaded.config.mqtt.as_agent().broker() {
                let problem = Problem::new("--mqtt", e);
                return Err(telemetry::config_file::problems_in_file(
                    "the command line",
                    "",
                    vec![problem],
                ));
            }
        }
        Ok(loaded)
    }

    pub fn problems(&self) -> Vec<Problem> {
        let mut p: Vec<Problem> = self
            .mqtt
            .as_agent()
            .problems()
            .into_iter()
            .filter(|p| !p.path.contains("config_public_key"))
            .collect();
        if self.serve.history == 0 {
            p.push(Problem::new("serve.history", "must be at least 1"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_url_wins_and_bad_keys_are_named() {
        let text = "[mqtt]\nurl = \"mqtts://broker:8883\"\nusername = \"fleet\"\n";
        let c = FleetConfig::load("fleet.toml", Some(text), &[], None)
            .unwrap()
            .config;
        assert_eq!(c.mqtt.url, "mqtts://broker:8883");
        let c = FleetConfig::load("fleet.toml", Some(text), &[], Some("mqtt://other:1884"))
            .unwrap()
            .config;
        assert_eq!(c.mqtt.url, "mqtt://other:1884");
        assert_eq!(c.mqtt.username.as_deref(), Some("fleet"));
        let e = FleetConfig::load("fleet.toml", None, &[], Some("http://x")).unwrap_err();
        assert!(e.to_string().contains("mqtt:// or mqtts://"), "{e}");
        let e =
            FleetConfig::load("fleet.toml", Some("[mqtt]\nurll = \"x\"\n"), &[], None).unwrap_err();
        assert_eq!(e.lines(), [2], "{e}");
    }
}
