//! The Grafana dashboards in `dashboards/` against a real pipeline: every
//! panel query and every variable query is run on VictoriaMetrics filled by
//! a real agent and uplink (readings through Tansu, both binaries' metrics
//! scraped by VictoriaMetrics), and must parse and return data. A renamed
//! metric fails here, not on a dashboard in the field.

use std::path::Path;
use std::time::Duration;

use buoy_tests::binaries;
use buoy_tests::kafka::{Kafka, Storage};
use buoy_tests::process::free_port;
use buoy_tests::victoria::Victoria;
use serde_json::Value;
use telemetry::record::Format;

use crate::common::*;

/// One query of a dashboard: where it is, and what it asks.
#[derive(Debug, Clone)]
struct Query {
    place: String,
    expr: String,
}

/// Every panel target's `expr` and every variable's query in `dashboard`.
fn queries(name: &str, dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let place = format!("{name}: panel {:?} {}", panel["title"], target["refId"]);
                out.push(Query {
                    place,
                    expr: expr.to_owned(),
                });
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_default();
        out.push(Query {
            place: format!("{name}: variable {}", var["name"]),
            expr: query.to_owned(),
        });
    }
    out
}

/// The dashboards' variables and Grafana's own, as a viewer with "All"
/// selected would send them.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$device", ".*")
        .replace("$instance", ".*")
}

/// `None` when `q` parses and returns data; else what is wrong.
async fn check(vm: &str, q: &Query) -> Option<String> {
    let client = reqwest::Client::new();
    let expr = as_sent(&q.expr);
    // label_values(label) or label_values(metric, label): Grafana asks the
    // label values API.
    let (url, form) = if let Some(args) = expr
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        let (label, matcher) = match parts.as_slice() {
            [label] => (*label, None),
            [metric, label] => (*label, Some(metric.to_string())),
            _ => return Some(format!("{}: cannot read {expr}", q.place)),
        };
        let form: Vec<(&str, String)> = matcher.map(|m| ("match[]", m)).into_iter().collect();
        (format!("{vm}/api/v1/label/{label}/values"), form)
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let form = vec![
            ("query", expr.clone()),
            ("start", (now - 300).to_string()),
            ("end", now.to_string()),
            ("step", "5".into()),
        ];
        (format!("{vm}/api/v1/query_range"), form)
    };
    let answer: Value = match client.post(&url).form(&form).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => return Some(format!("{}: {e}", q.place)),
    };
    if answer["status"] != "success" {
        return Some(format!("{}: {expr} does not parse: {answer}", q.place));
    }
    let data = &answer["data"];
    let empty = data
        .as_array()
        .map(Vec::is_empty)
        .or(data["result"].as_array().map(Vec::is_empty));
    (empty != Some(false)).then(|| format!("{}: {expr} returns no data", q.place))
}

async fn failures(vm: &str, all: &[Query]) -> Vec<String> {
    let mut out = Vec::new();
    for q in all {
        if let Some(f) = check(vm, q).await {
            out.push(f);
        }
    }
    out
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The series `expr` gives over the last `seconds`, as (label text, points).
async fn series(vm: &str, expr: &str, seconds: u64) -> Vec<(String, Vec<(f64, f64)>)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let form = [
        ("query", as_sent(expr)),
        ("start", (now - seconds).to_string()),
        ("end", now.to_string()),
        ("step", "2".into()),
    ];
    let answer: Value = reqwest::Client::new()
        .post(format!("{vm}/api/v1/query_range"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parse =
        |v: &Value| -> Option<(f64, f64)> { Some((v[0].as_f64()?, v[1].as_str()?.parse().ok()?)) };
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let labels: Vec<String> = s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| {
                    [
                        "device_id",
                        "sensor",
                        "cause",
                        "sink",
                        "reason",
                        "job",
                        "__name__",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            let points = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(parse)
                .collect();
            (labels.join(" "), points)
        })
        .collect()
}

/// The dashboard's panels drawn from VictoriaMetrics' answers, as an HTML
/// page of SVG charts (Grafana cannot be installed here; this draws the
/// same queries).
async fn render(vm: &str, title: &str, dashboard: &Value) -> String {
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut html = format!(
        "<!doctype html><html><head><meta charset=utf-8><style>body{{font-family:sans-serif;margin:12px}}\
         .p{{display:inline-block;margin:6px;border:1px solid #ddd;padding:6px}}h3{{margin:2px 0;font-size:13px}}\
         small{{color:#555;font-size:10px}}</style></head><body><h2>{title}</h2>"
    );
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let mut lines = Vec::new();
        for target in panel["targets"].as_array().into_iter().flatten() {
            lines.extend(series(vm, target["expr"].as_str().unwrap_or_default(), 120).await);
        }
        let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let (t0, t1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (t, _)| {
            (a.min(*t), b.max(*t))
        });
        let (v0, v1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, v)| {
            (a.min(*v), b.max(*v))
        });
        let (tw, vh) = ((t1 - t0).max(1.0), (v1 - v0).max(1e-9));
        html.push_str(&format!(
            "<div class=p><h3>{}</h3><svg width=420 height=130>",
            panel["title"].as_str().unwrap_or("")
        ));
        for (i, (_, points)) in lines.iter().enumerate() {
            let path: Vec<String> = points
                .iter()
                .map(|(t, v)| {
                    format!(
                        "{:.1},{:.1}",
                        (t - t0) / tw * 410.0 + 5.0,
                        125.0 - (v - v0) / vh * 115.0
                    )
                })
                .collect();
            html.push_str(&format!(
                "<polyline fill=none stroke='{}' stroke-width=1.5 points='{}'/>",
                COLOURS[i % 6],
                path.join(" ")
            ));
        }
        let legend: Vec<String> = lines.iter().take(4).map(|(l, _)| l.clone()).collect();
        html.push_str(&format!(
            "</svg><br><small>{:.4} to {:.4} &middot; {}</small></div>",
            v0,
            v1,
            legend.join("; ")
        ));
    }
    html.push_str("</body></html>");
    html
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_parses_and_returns_data_from_a_real_pipeline() {
    let _one_at_a_time = buoy_tests::exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"), Storage::Memory);
    kafka.create_topics(&["telemetry", "telemetry.dlq"]).await;
    let bootstrap = kafka.bootstrap();
    let (agent_metrics, uplink_metrics) = (free_port(), free_port());
    let scrape = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n\
             - job_name: edge-agent\n  static_configs:\n  - targets: [\"127.0.0.1:{agent_metrics}\"]\n\
             - job_name: uplink\n  static_configs:\n  - targets: [\"127.0.0.1:{uplink_metrics}\"]\n"
        ),
    )
    .unwrap();
    let vm = Victoria::start_scraping(dir.path(), &scrape);
    let db = Database::Victoria(vm);
    let config = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{agent_metrics}\"\n",
        agent_config(dir.path(), &bootstrap, Format::Influx, 1, "250ms")
    );
    let mut agent = binaries::start("edge-agent", dir.path(), &config);
    let uplink_toml = uplink_config_with_metrics(
        &bootstrap,
        "telemetry",
        "telemetry.dlq",
        &db.sink(),
        uplink_metrics,
    );
    let uplink = binaries::start("uplink", dir.path(), &uplink_toml);

    let Database::Victoria(vm) = &db else {
        unreachable!()
    };
    let vm_url = vm.url();
    let all: Vec<Query> = dashboards()
        .iter()
        .flat_map(|(name, d)| queries(name, d))
        .collect();
    assert!(all.len() >= 15, "the dashboards' queries: {all:?}");
    // Rates need a few scrapes: wait until everything answers, or show
    // what never did.
    let mut last = Vec::new();
    for _ in 0..60 {
        last = failures(&vm_url, &all).await;
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        last.is_empty(),
        "dashboard queries that fail:\n{}\nagent log:\n{}",
        last.join("\n"),
        agent.log_tail(20)
    );
    eprintln!("dashboards: {} queries, every one returns data", all.len());

    // The check can fail: a metric renamed in one query.
    let mut broken = all
        .iter()
        .find(|q| q.expr.contains("edge_agent_backlog_readings"))
        .unwrap()
        .clone();
    broken.expr = broken
        .expr
        .replace("edge_agent_backlog_readings", "edge_agent_backlog");
    let said = check(&vm_url, &broken).await;
    assert!(
        said.as_deref()
            .is_some_and(|s| s.ends_with("returns no data")),
        "{said:?}"
    );
    eprintln!("dashboards: a renamed metric is caught: {}", said.unwrap());

    // The pictures in docs/: each dashboard's panels over the last two
    // minutes, drawn from the same queries.
    for (name, dashboard) in dashboards() {
        let title = dashboard["title"].as_str().unwrap_or_default().to_owned();
        let page = dir.path().join(name.replace(".json", ".html"));
        std::fs::write(&page, render(&vm_url, &title, &dashboard).await).unwrap();
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name.replace(".json", ".png"));
        buoy_tests::chromium::screenshot(&format!("file://{}", page.display()), &shot, 1360, 1130);
    }
    agent.stop(Duration::from_secs(30));
    stop_uplink(uplink, 0);
}
