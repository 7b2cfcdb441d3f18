//! The MQTT session: desired configs in, state and status out.
//!
//! - Subscribes to the config topic of every layer the device takes (QoS 1)
//!   after every connect: `buoy/fleet/config`, `buoy/group/<key>/<value>/config`
//!   per label, `buoy/<device_id>/config`. The broker then delivers the
//!   retained layers again, which the controller recognises as running.
//!   Anything else the broker sends is ignored.
//! - Publishes `online` retained on `buoy/<device_id>/status` after every
//!   connect, with `offline` retained as the Last Will, and `offline` itself
//!   on a clean stop.
//! - Publishes the reported state retained on `buoy/<device_id>/state` at
//!   once after a connect, when something in it that matters changes, and
//!   every `mqtt.state_interval`.
//! - While the broker is unreachable the agent runs on as it is; the session
//!   retries with backoff (1 s doubling to `mqtt.max_reconnect_delay`).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use telemetry::backoff::Backoff;
use telemetry::throttle::Throttle;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::layers::{Labels, Layer};
use super::report::ConfigReport;
use super::settings::MqttConfig;
use super::state::StateSource;

/// Largest MQTT packet taken in; larger desired configs are refused anyway
/// (256 KiB), this leaves room to say so instead of dropping the link.
const MAX_INCOMING_PACKET: usize = 1 << 20;

/// Least time between two states published because something changed.
const NEWS_GAP: Duration = Duration::from_millis(250);

/// The device's topics: one per config layer it takes, its state and its
/// status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub configs: Vec<(Layer, String)>,
    pub state: String,
    pub status: String,
}

impl Topics {
    pub fn new(device_id: &str, labels: &Labels) -> Topics {
        Topics {
            configs: Layer::all_for(labels)
                .into_iter()
                .map(|layer| {
                    let topic = layer.topic(device_id);
                    (layer, topic)
                })
                .collect(),
            state: format!("buoy/{device_id}/state"),
            status: format!("buoy/{device_id}/status"),
        }
    }

    /// The layer a config topic is; `None` for anything else.
    pub fn layer_of(&self, topic: &str) -> Option<&Layer> {
        self.configs
            .iter()
            .find(|(_, t)| t == topic)
            .map(|(layer, _)| layer)
    }
}

/// Why the session cannot even be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("mqtt.url: {0}")]
    Url(#[from] super::settings::BrokerUrlError),
    #[error("cannot read mqtt.{key} {path}: {source}")]
    File {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("mqtt.password_file: {0}")]
    Password(#[source] telemetry::secret::SecretError),
    #[error("mqtt.{key} {path}: {reason}")]
    Pem {
        key: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

fn read_file(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::File {
        key,
        path: path.to_owned(),
        source,
    })
}

/// The agent's client options: [`client_options`] and the Last Will.
pub fn options(
    settings: &MqttConfig,
    device_id: &str,
    topics: &Topics,
) -> Result<MqttOptions, SetupError> {
    let mut options = client_options(settings, &settings.client_id(device_id))?;
    options
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_INCOMING_PACKET)
        .set_last_will(LastWill::new(
            &topics.status,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    Ok(options)
}

/// The client options `settings` give: address, keep-alive, credentials
/// (read from their files now), TLS. Shared with `buoy-fleet`.
pub fn client_options(settings: &MqttConfig, client_id: &str) -> Result<MqttOptions, SetupError> {
    let broker = settings.broker()?;
    let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(true);
    if let Some(user) = &settings.username {
        let password = match &settings.password_file {
            Some(file) => telemetry::secret::read(file)
                .map_err(SetupError::Password)?
                .expose()
                .to_owned(),
            None => String::new(),
        };
        options.set_credentials(user, password);
    }
    if broker.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(settings)?),
        )));
    }
    Ok(options)
}

fn tls_config(settings: &MqttConfig) -> Result<rustls::ClientConfig, SetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |key: &'static str, path: &std::path::Path, e: rustls::pki_types::pem::Error| {
        SetupError::Pem {
            key,
            path: path.to_owned(),
            reason: e.to_string(),
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            let pem = read_file("ca_file", path)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.map_err(|e| pem_err("ca_file", path, e))?)?;
            }
            if roots.is_empty() {
                return Err(SetupError::Pem {
                    key: "ca_file",
                    path: path.to_owned(),
                    reason: "holds no certificate".into(),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let pem = read_file("cert_file", cert)?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err("cert_file", cert, e))?;
            let pem = read_file("key_file", key)?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_err("key_file", key, e))?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// What the session tells the rest of the agent: the desired config
/// payloads, by layer, and whether it is connected (a trial needs it).
pub struct Channels {
    pub payloads: mpsc::Sender<(Layer, Vec<u8>)>,
    pub connected: watch::Sender<bool>,
}

/// Runs the session until `shutdown`, then publishes `offline` and
/// disconnects.
pub async fn run(
    settings: MqttConfig,
    source: StateSource,
    channels: Channels,
    shutdown: CancellationToken,
) {
    let topics = Topics::new(&source.device_id, &source.labels);
    let mut backoff = Backoff::new(Duration::from_secs(1), settings.max_reconnect_delay);
    // The settings' files may appear later (provisioning): keep trying.
    let options = loop {
        match options(&settings, &source.device_id, &topics) {
            Ok(options) => break options,
            Err(e) => {
                let delay = backoff.next_delay(rand::random());
                tracing::error!(error = %e, retry_in = ?delay, "cannot set up the MQTT connection; running on the local config");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    backoff.reset();
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    // An ack and a state are small writes in a row: without this, Nagle
    // and delayed ACKs hold each exchange for tens of milliseconds.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let session = Session {
        client,
        topics,
        source,
        payloads: channels.payloads,
        connected: channels.connected,
        backoff,
        url: settings.url.clone(),
        state_interval: settings.state_interval,
        failures: Throttle::new(Duration::from_secs(300)),
    };
    session.run(eventloop, shutdown).await;
}

struct Session {
    client: AsyncClient,
    topics: Topics,
    source: StateSource,
    payloads: mpsc::Sender<(Layer, Vec<u8>)>,
    connected: watch::Sender<bool>,
    backoff: Backoff,
    url: String,
    state_interval: Duration,
    failures: Throttle,
}

type News = (
    ConfigReport,
    std::borrow::Cow<'static, str>,
    Vec<(String, hardware::HealthState)>,
);

impl Session {
    async fn run(mut self, mut eventloop: EventLoop, shutdown: CancellationToken) {
        let mut connected = false;
        let mut last_news: Option<News> = None;
        let mut last_published = tokio::time::Instant::now();
        let mut report = self.source.report.clone();
        let mut report_open = true;
        // News goes out at most every NEWS_GAP (a flood of configs makes one
        // state, not thousands); counters go out at the state interval.
        let mut tick = tokio::time::interval(NEWS_GAP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        self.connected.send_replace(true);
                        self.backoff.reset();
                        self.failures.reset();
                        self.on_connect();
                        last_news = None;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Only the device's own layers; anything else the
                        // broker sends is ignored. Back-pressure: while a
                        // config is being applied the next waits here.
                        let Some(layer) = self.topics.layer_of(&p.topic) else { continue };
                        if self.payloads.send((layer.clone(), p.payload.to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        connected = false;
                        self.connected.send_replace(false);
                        let delay = self.backoff.next_delay(rand::random());
                        self.log_failure(&e, delay);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                },
                _ = tick.tick() => {}
                changed = report.changed(), if report_open => {
                    // Closed: the controller is gone, the agent is stopping.
                    report_open = changed.is_ok();
                }
                _ = shutdown.cancelled() => {
                    if connected {
                        self.say_goodbye(&mut eventloop).await;
                    }
                    return;
                }
            }
            if connected {
                self.publish_state(&mut last_news, &mut last_published);
            }
        }
    }

    /// Subscribes to every config layer and says `online`.
    fn on_connect(&self) {
        let layers: Vec<&str> = self
            .topics
            .configs
            .iter()
            .map(|(_, t)| t.as_str())
            .collect();
        tracing::info!(url = %self.url, "connected to MQTT; taking configs from {}", layers.join(", "));
        let subscriptions = self
            .topics
            .configs
            .iter()
            .map(|(_, topic)| rumqttc::SubscribeFilter::new(topic.clone(), QoS::AtLeastOnce));
        let _ = self.client.try_subscribe_many(subscriptions);
        let _ = self
            .client
            .try_publish(&self.topics.status, QoS::AtLeastOnce, true, "online");
    }

    /// Publishes the state (retained) when it has news, or the state
    /// interval has passed. Within NEWS_GAP of the last state nothing goes
    /// out: it is not even made (a flood of configs is a hot path).
    fn publish_state(
        &self,
        last_news: &mut Option<News>,
        last_published: &mut tokio::time::Instant,
    ) {
        let since = last_published.elapsed();
        if last_news.is_some() && since < NEWS_GAP {
            return;
        }
        let state = self.source.state();
        let news = state.news();
        if since >= self.state_interval || last_news.as_ref() != Some(&news) {
            let json = serde_json::to_vec(&state).expect("the state serialises");
            if self
                .client
                .try_publish(&self.topics.state, QoS::AtLeastOnce, true, json)
                .is_ok()
            {
                *last_news = Some(news);
                *last_published = tokio::time::Instant::now();
            }
        }
    }

    fn log_failure(&mut self, e: &ConnectionError, delay: Duration) {
        if let Some(held_back) = self.failures.allow(std::time::Instant::now()) {
            tracing::warn!(
                url = %self.url,
                error = %e,
                retry_in = ?delay,
                failures_not_logged = held_back,
                "MQTT broker unreachable; the agent runs on with its current config and retries"
            );
        }
    }

    /// `offline`, retained, then a clean disconnect (which does not trigger
    /// the Last Will; the explicit `offline` says the same).
    async fn say_goodbye(&mut self, eventloop: &mut EventLoop) {
        let state = serde_json::to_vec(&self.source.state()).expect("the state serialises");
        let _ = self
            .client
            .try_publish(&self.topics.state, QoS::AtLeastOnce, true, state);
        let _ = self
            .client
            .try_publish(&self.topics.status, QoS::AtLeastOnce, true, "offline");
        let _ = self.client.try_disconnect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    break;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}
