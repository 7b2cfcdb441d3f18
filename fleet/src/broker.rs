//! The MQTT session of a fleet command: connect, subscribe, take in the
//! retained messages (knowing when the last one arrived), follow what comes
//! after, publish.
//!
//! The end of the retained messages is found with a probe: after the
//! subscriptions are acknowledged, the command publishes to its own
//! `buoy/fleet/probe/<client id>`, to which it is subscribed too. The broker
//! queues the retained messages of a subscription before the probe, so when
//! the probe comes back every retained message has arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::settings::FleetMqtt;

/// Every device's status and state.
pub const DEVICE_TOPICS: &[&str] = &["buoy/+/status", "buoy/+/state"];
/// Every config layer and the fleet's history of them.
pub const CONFIG_TOPICS: &[&str] = &[
    "buoy/+/config",
    "buoy/group/+/+/config",
    "buoy/fleet/history/#",
];

/// Largest packet taken in: 5,000 retained states need no more than this
/// each.
const MAX_PACKET: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot set up the MQTT client: {0}")]
    Setup(#[from] edge_agent::remote_config::mqtt::SetupError),
    #[error("cannot reach the MQTT broker at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the MQTT broker at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("the connection to the MQTT broker at {url} ended")]
    Closed { url: String },
}

/// A message as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

enum Incoming {
    Message(Message),
    Failed(String),
}

/// A live session.
pub struct Session {
    pub client: AsyncClient,
    incoming: mpsc::Receiver<Incoming>,
    probe: String,
    url: String,
    /// Publishes the broker has not acknowledged yet.
    unacked: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Connects and subscribes to `filters`. Fails when the broker cannot
    /// be reached or refuses the login.
    pub async fn connect(settings: &FleetMqtt, filters: &[&str]) -> Result<Session, BrokerError> {
        let client_id = settings.client_id();
        let mut options =
            edge_agent::remote_config::mqtt::client_options(&settings.as_agent(), &client_id)?;
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let probe = format!("buoy/fleet/probe/{client_id}");
        let mut subscriptions: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce))
            .collect();
        subscriptions.push(SubscribeFilter::new(probe.clone(), QoS::AtLeastOnce));
        let (tx, incoming) = mpsc::channel(4096);
        let (subscriber, probe_to) = (client.clone(), probe.clone());
        let unacked = Arc::new(AtomicUsize::new(0));
        let acked = unacked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.subscribe_many(subscriptions.clone()).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(Incoming::Message(m)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = acked
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        // Counted like any publish: its PubAck comes too.
                        acked.fetch_add(1, Ordering::SeqCst);
                        let _ = subscriber.try_publish(&probe_to, QoS::AtLeastOnce, false, "probe");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Incoming::Failed(e.to_string())).await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Session {
            client,
            incoming,
            probe,
            url: settings.url.clone(),
            unacked,
            task,
        })
    }

    /// Hands `take` every retained message of the subscriptions, as each
    /// arrives (5,000 devices' states are not held twice), and returns
    /// after the last.
    pub async fn retained(
        &mut self,
        timeout: Duration,
        mut take: impl FnMut(Message),
    ) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.incoming.recv()).await;
            match next {
                Err(_) => {
                    return Err(BrokerError::Timeout {
                        url: self.url.clone(),
                        timeout,
                    });
                }
                Ok(None) => {
                    return Err(BrokerError::Closed {
                        url: self.url.clone(),
                    });
                }
                Ok(Some(Incoming::Failed(reason))) => {
                    return Err(BrokerError::Unreachable {
                        url: self.url.clone(),
                        reason,
                    });
                }
                Ok(Some(Incoming::Message(m))) if m.topic == self.probe => return Ok(()),
                Ok(Some(Incoming::Message(m))) => take(m),
            }
        }
    }

    /// The next message after the retained ones; `None` when nothing came
    /// within `wait`. Connection failures are retried quietly: a follower
    /// waits out a broker restart.
    pub async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(Incoming::Message(m))) if m.topic == self.probe => {}
                Ok(Some(Incoming::Message(m))) => return Some(m),
                Ok(Some(Incoming::Failed(reason))) => {
                    tracing::warn!(url = %self.url, %reason, "MQTT connection lost; reconnecting");
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Publishes with QoS 1 (see [`Session::flush`]).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.unacked.fetch_add(1, Ordering::SeqCst);
        if self
            .client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .is_err()
        {
            self.unacked.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until the broker has acknowledged every publish: a command
    /// must not exit with its last publishes still queued.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.unacked.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() > deadline {
                return Err(BrokerError::Timeout {
                    url: self.url.clone(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}
