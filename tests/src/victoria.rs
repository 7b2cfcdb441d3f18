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
        Self::start_on(dir, free_port())
    }

    /// Starts VictoriaMetrics on `port`, with its data in `dir`.
    pub fn start_on(dir: &Path, port: u16) -> Victoria {
        Self::start_with(dir, port, &[])
    }

    /// Starts VictoriaMetrics scraping the Prometheus targets of
    /// `scrape_config` (a `-promscrape.config` file) as well.
    pub fn start_scraping(dir: &Path, scrape_config: &Path) -> Victoria {
        let config = format!("-promscrape.config={}", scrape_config.display());
        Self::start_with(dir, free_port(), &[&config])
    }

    fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Victoria {
        let vm = require("victoria-metrics", "sudo apt-get install victoria-metrics");
        let data = dir.join("victoria-data");
        let mut c = Command::new(vm);
        c.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.display()))
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-search.latencyOffset=1s")
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=WARN")
            .args(extra);
        let log = (0..)
            .map(|i| dir.join(format!("victoria-metrics.{i}.log")))
            .find(|p| !p.exists())
            .expect("a log name");
        let service = Service::spawn("victoria-metrics", c, &log);
        wait_for_port(port, Duration::from_secs(30), &service);
        Victoria { service, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many samples of `metric` it holds (after deduplication).
    pub async fn count(&self, metric: &str) -> usize {
        let client = reqwest::Client::new();
        let _ = client
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await;
        let Ok(response) = client
            .post(format!("{}/api/v1/export", self.url()))
            .form(&[("match[]", format!("{{__name__=\"{metric}\"}}"))])
            .send()
            .await
        else {
            return 0;
        };
        let body = response.text().await.unwrap_or_default();
        body.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["timestamps"].as_array().map_or(0, Vec::len))
            .sum()
    }

    /// Rows it has taken in over the Influx line protocol, from its own
    /// metrics (counted before deduplication).
    pub async fn rows_inserted(&self) -> u64 {
        let Ok(response) = reqwest::get(format!("{}/metrics", self.url())).await else {
            return 0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("vm_rows_inserted_total{type=\"influx\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
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
