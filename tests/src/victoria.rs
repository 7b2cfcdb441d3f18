//! VictoriaMetrics, and reading back every sample it holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{Service, free_port, require, wait_for_port};

pub struct Victoria {
    pub service: Service,
    pub port: u16,
}

/// One series as `/api/v1/export` returns it.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps_ms: Vec<i64>,
}

impl Victoria {
    /// Starts VictoriaMetrics in `dir`. Deduplication at 1 ms makes a reading
    /// written twice one point, as Buoy's design expects; a latency offset of
    /// 1 s makes fresh points visible to queries quickly.
    pub fn start(dir: &Path) -> Victoria {
        let vm = require("victoria-metrics", "sudo apt-get install victoria-metrics");
        let port = free_port();
        let data = dir.join("victoria-data");
        let mut c = Command::new(vm);
        c.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.display()))
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-search.latencyOffset=1s")
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=WARN");
        let service = Service::spawn("victoria-metrics", c, &dir.join("victoria-metrics.log"));
        wait_for_port(port, Duration::from_secs(30), &service);
        Victoria { service, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every sample of every series.
    pub async fn export(&self) -> Vec<Series> {
        let client = reqwest::Client::new();
        // Make just-written samples visible at once.
        let _ = client
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await;
        let body = client
            .post(format!("{}/api/v1/export", self.url()))
            .form(&[("match[]", "{__name__=~\".+\"}")])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("export line");
                Series {
                    labels: v["metric"]
                        .as_object()
                        .expect("metric")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                    values: v["values"]
                        .as_array()
                        .expect("values")
                        .iter()
                        .map(|x| x.as_f64().expect("float value"))
                        .collect(),
                    timestamps_ms: v["timestamps"]
                        .as_array()
                        .expect("timestamps")
                        .iter()
                        .map(|x| x.as_i64().expect("timestamp"))
                        .collect(),
                }
            })
            .collect()
    }
}
