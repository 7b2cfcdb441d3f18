//! Redis, and reading back the hashes the uplink's `redis` sink writes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{Service, free_port, require, wait_for_port};

pub struct Redis {
    pub service: Service,
    pub port: u16,
}

impl Redis {
    /// Starts redis-server in `dir`, without persistence.
    pub fn start(dir: &Path) -> Redis {
        let server = require("redis-server", "sudo apt-get install redis-server");
        let port = free_port();
        let mut c = Command::new(server);
        c.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir);
        let service = Service::spawn("redis-server", c, &dir.join("redis.log"));
        wait_for_port(port, Duration::from_secs(20), &service);
        Redis { service, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every hash whose key starts with `prefix`: key → field → value.
    pub async fn hashes(&self, prefix: &str) -> BTreeMap<String, HashMap<String, String>> {
        let client = redis::Client::open(self.url()).expect("redis URL");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .expect("KEYS");
        let mut out = BTreeMap::new();
        for key in keys {
            let hash: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("HGETALL");
            out.insert(key, hash);
        }
        out
    }
}
