//! Mosquitto, and a client that watches and publishes on it.
//!
//! The broker keeps retained messages across restarts (persistence in its
//! directory) and queues without limit, so a test can publish thousands of
//! messages to a subscriber without the broker dropping any.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::process::{Service, free_port, require, wait_for_port};

/// How a broker takes clients.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Users and passwords; anonymous clients are refused when any is given.
    pub users: Vec<(String, String)>,
    /// A second listener with TLS (`ca.pem`, `server.pem`, `server.key` in
    /// this directory, see [`crate::certs::ca_and_server`]); client
    /// certificates signed by the CA are asked for but not required.
    pub tls_certs: Option<PathBuf>,
    /// mosquitto's `acl_file`: who may read and write which topics.
    pub acl_file: Option<PathBuf>,
}

pub struct Mosquitto {
    pub service: Service,
    /// Plain MQTT.
    pub port: u16,
    /// MQTT over TLS, when [`Access::tls_certs`] was given.
    pub tls_port: Option<u16>,
    dir: PathBuf,
    access: Access,
}

impl Mosquitto {
    /// Starts mosquitto in `dir` on free ports.
    pub fn start(dir: &Path, access: Access) -> Mosquitto {
        let tls_port = access.tls_certs.as_ref().map(|_| free_port());
        Mosquitto::start_on(free_port(), tls_port, dir, access)
    }

    /// Starts mosquitto on the given ports (again, after [`Mosquitto::stop`]).
    pub fn start_on(port: u16, tls_port: Option<u16>, dir: &Path, access: Access) -> Mosquitto {
        let program = require("mosquitto", "sudo apt-get install mosquitto");
        std::fs::create_dir_all(dir).unwrap();
        let mut conf = format!(
            "user root\npersistence true\npersistence_location {}/\nautosave_interval 1\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_type all\n\
             listener {port} 127.0.0.1\n",
            dir.display()
        );
        if let (Some(certs), Some(tls_port)) = (&access.tls_certs, tls_port) {
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate false\n",
                ca = certs.join("ca.pem").display(),
                cert = certs.join("server.pem").display(),
                key = certs.join("server.key").display(),
            ));
        }
        if access.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwd = dir.join("passwd");
            std::fs::write(&passwd, "").unwrap();
            let tool = require("mosquitto_passwd", "sudo apt-get install mosquitto");
            for (user, password) in &access.users {
                let out = Command::new(&tool)
                    .arg("-b")
                    .arg(&passwd)
                    .args([user, password])
                    .output()
                    .expect("run mosquitto_passwd");
                assert!(out.status.success(), "mosquitto_passwd: {out:?}");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwd.display()
            ));
        }
        if let Some(acl) = &access.acl_file {
            conf.push_str(&format!("acl_file {}\n", acl.display()));
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut c = Command::new(program);
        c.arg("-c").arg(&conf_path);
        let service = Service::spawn("mosquitto", c, &dir.join("mosquitto.log"));
        wait_for_port(port, Duration::from_secs(10), &service);
        if let Some(tls_port) = tls_port {
            wait_for_port(tls_port, Duration::from_secs(10), &service);
        }
        Mosquitto {
            service,
            port,
            tls_port,
            dir: dir.to_owned(),
            access,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!(
            "mqtts://127.0.0.1:{}",
            self.tls_port.expect("a TLS listener")
        )
    }

    /// Stops the broker (SIGTERM: it saves its retained messages).
    pub fn stop(&mut self) {
        self.service.stop(Duration::from_secs(10));
    }

    /// Starts it again on the same ports and directory.
    pub fn restart(&mut self) {
        let again = Mosquitto::start_on(self.port, self.tls_port, &self.dir, self.access.clone());
        *self = again;
    }
}

/// One message a [`Watcher`] saw.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// A client that records every message on `filter` (subscribing again
/// after each reconnect) and publishes.
pub struct Watcher {
    pub client: AsyncClient,
    seen: Arc<Mutex<Vec<Message>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub async fn connect(port: u16, credentials: Option<(&str, &str)>, filter: &str) -> Watcher {
        let mut options = MqttOptions::new(
            format!("watcher-{}", rand::random::<u32>()),
            "127.0.0.1",
            port,
        );
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (subscriber, record, filter) = (client.clone(), seen.clone(), filter.to_owned());
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let mut connected_tx = Some(connected_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        subscriber
                            .subscribe(&filter, QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        record.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .expect("the watcher connects to mosquitto")
            .unwrap();
        Watcher { client, seen, task }
    }

    /// Everything seen so far, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for a message (seen before or after the call) that `matches`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Message) -> bool,
    ) -> Message {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().rev().find(|m| matches(m)) {
                return m;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = self
                    .messages()
                    .iter()
                    .rev()
                    .take(5)
                    .map(|m| format!("{} {}", m.topic, m.text()))
                    .collect();
                panic!("no {what} within {timeout:?}; last messages: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes with QoS 1 (queued; the event loop sends it).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .expect("queue a publish");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
