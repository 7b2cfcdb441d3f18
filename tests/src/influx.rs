//! InfluxDB 1.x, and reading back every point it holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::points::{Point, PointKey};
use crate::process::{Service, free_port, require, wait_for_port};

pub struct Influx {
    pub service: Service,
    pub port: u16,
}

impl Influx {
    /// Starts influxd with its data, WAL and metadata in `dir`.
    pub fn start(dir: &Path) -> Influx {
        let influxd = require("influxd", "sudo apt-get install influxdb");
        let port = free_port();
        let rpc = free_port();
        let d = dir.join("influxdb");
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#,
            d = d.display()
        );
        let config_path = dir.join("influxdb.conf");
        std::fs::write(&config_path, config).expect("influxdb config");
        let mut c = Command::new(influxd);
        c.arg("-config").arg(&config_path);
        let service = Service::spawn("influxd", c, &dir.join("influxd.log"));
        wait_for_port(port, Duration::from_secs(30), &service);
        Influx { service, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/query", self.url()))
            .query(&[("db", db), ("q", q), ("epoch", "ns")])
            .send()
            .await
            .expect("influx query")
            .json()
            .await
            .expect("influx JSON")
    }

    pub async fn create_database(&self, db: &str) {
        let r = self.query("", &format!("CREATE DATABASE \"{db}\"")).await;
        assert!(
            r["results"][0].get("error").is_none(),
            "CREATE DATABASE failed: {r}"
        );
    }

    /// Every point of `measurement`, keyed by tags and timestamp (ns).
    pub async fn points(&self, db: &str, measurement: &str) -> BTreeMap<PointKey, Point> {
        let r = self
            .query(db, &format!("SELECT * FROM \"{measurement}\" GROUP BY *"))
            .await;
        let mut out = BTreeMap::new();
        let Some(series) = r["results"][0]["series"].as_array() else {
            return out;
        };
        for s in series {
            let tags: BTreeMap<String, String> = s["tags"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.as_str().is_some_and(|v| !v.is_empty()))
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let columns: Vec<&str> = s["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().expect("column name"))
                .collect();
            for row in s["values"].as_array().expect("values") {
                let row = row.as_array().expect("row");
                let ts = row[0].as_i64().expect("time");
                let fields = columns
                    .iter()
                    .zip(row)
                    .skip(1)
                    .filter_map(|(c, v)| v.as_f64().map(|v| (c.to_string(), v)))
                    .collect();
                out.insert(
                    PointKey {
                        measurement: measurement.to_owned(),
                        tags: tags.clone(),
                        timestamp: ts,
                    },
                    fields,
                );
            }
        }
        out
    }
}
