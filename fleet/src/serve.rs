//! `buoy-fleet serve`: the fleet view kept live from the broker, served
//! over HTTP: `/` (the device table), `/device?id=<id>`, `/api/devices`,
//! `/metrics`. The pages are in [`crate::page`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use edge_agent::remote_config::report::Decision;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::fmt::Write as _;
use tokio_util::sync::CancellationToken;

use crate::broker::{DEVICE_TOPICS, Session};
use crate::commands::CommandError;
use crate::page;
use crate::settings::FleetMqtt;
use crate::status;
use crate::view::{Filter, Fleet, Heard, Seen, StateFilter, classify};

/// What the server holds: the fleet, and per device its recent config
/// decisions (at most `history`).
#[derive(Debug, Default)]
pub struct View {
    pub fleet: Fleet,
    pub history: BTreeMap<String, VecDeque<Heard>>,
    pub keep: usize,
}

impl View {
    pub fn take(&mut self, seen: Seen, at_ms: i64) {
        let id = match &seen {
            Seen::State { device, .. } => Some(device.clone()),
            _ => None,
        };
        self.fleet.take(seen);
        let Some(id) = id else { return };
        let Some(state) = self.fleet.devices.get(&id).and_then(|d| d.state.as_ref()) else {
            return;
        };
        let decisions: Vec<Decision> = state
            .config
            .layers
            .values()
            .filter_map(|l| l.last.clone())
            .collect();
        let history = self.history.entry(id).or_default();
        for decision in decisions {
            if !history.iter().any(|h| h.decision == decision) {
                history.push_back(Heard { at_ms, decision });
                if history.len() > self.keep {
                    history.pop_front();
                }
            }
        }
    }
}

type Shared = Arc<RwLock<View>>;

/// Follows the broker into `view` until `stop`.
async fn follow(mut session: Session, view: Shared, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            m = session.next(Duration::from_secs(3600)) => {
                if let Some(m) = m {
                    let seen = classify(&m.topic, &m.payload);
                    view.write().expect("not poisoned").take(seen, crate::commands::now_ms());
                }
            }
        }
    }
}

/// Runs the server until `stop`.
pub async fn serve(
    mqtt: &FleetMqtt,
    listen: SocketAddr,
    keep: usize,
    stop: CancellationToken,
) -> Result<(), CommandError> {
    let mut session = Session::connect(mqtt, DEVICE_TOPICS).await?;
    let mut loaded = View {
        keep,
        ..View::default()
    };
    let now = crate::commands::now_ms();
    session
        .retained(Duration::from_secs(30), |m| {
            loaded.take(classify(&m.topic, &m.payload), now)
        })
        .await?;
    let view: Shared = Arc::new(RwLock::new(loaded));
    tokio::spawn(follow(session, view.clone(), stop.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CommandError::Invalid(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(%listen, "fleet page at http://{listen}/");
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let view = view.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let view = view.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&view, &request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `key=value&…` of a query string, decoded.
fn query(request: &Request<hyper::body::Incoming>) -> Vec<(String, String)> {
    let q = request.uri().query().unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// The filter and sort a page or `/api/devices` asks for: `label=k=v`,
/// `state=online|offline|problem|ok`, `sort=…`.
fn selection(q: &[(String, String)]) -> (Filter, String) {
    let mut filter = Filter::default();
    let mut sort = "device".to_owned();
    for (k, v) in q {
        match k.as_str() {
            "label" => {
                if let Some((lk, lv)) = v.split_once('=') {
                    filter.labels.push((lk.to_owned(), lv.to_owned()));
                }
            }
            "state" => {
                filter.state = <StateFilter as clap::ValueEnum>::from_str(v, true).ok();
            }
            "sort" => sort = v.clone(),
            _ => {}
        }
    }
    (filter, sort)
}

fn answer(view: &Shared, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let view = view.read().expect("not poisoned");
    let path = request.uri().path();
    let query = query(request);
    let (filter, sort) = selection(&query);
    let mut rows = status::rows(view.fleet.devices.values(), &filter);
    page::sort(&mut rows, &sort);
    let now = crate::commands::now_ms();
    match path {
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::fleet(&rows, &filter, &sort, now),
        ),
        "/api/devices" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&rows).expect("JSON serialises"),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(&view.fleet),
        ),
        "/device" => match query.iter().find(|(k, _)| k == "id") {
            Some((_, id)) if view.fleet.devices.contains_key(id) => {
                let device = &view.fleet.devices[id];
                let history = view.history.get(id).cloned().unwrap_or_default();
                reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page::device(device, &history, now),
                )
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "no such device\n".into(),
            ),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// The per-device gauges, in the Prometheus text format. Written
/// directly: a registry with a labelled series per device and layer held
/// 16 MiB more at 5,000 devices, for each scrape.
pub fn metrics(fleet: &Fleet) -> String {
    let mut out = String::with_capacity(fleet.devices.len() * 400);
    let families: [(&str, &str); 5] = [
        ("online", "1 while the device's retained status is online"),
        (
            "backlog_readings",
            "Readings in the device's journal not yet acknowledged by Kafka",
        ),
        (
            "oldest_unsent_age_seconds",
            "How old the device's oldest unsent reading is",
        ),
        (
            "config_version",
            "The config version running from each layer (0: none)",
        ),
        (
            "problems",
            "Problems buoy-fleet status lists for the device",
        ),
    ];
    for (name, help) in families {
        let _ = writeln!(
            out,
            "# HELP buoy_device_{name} {help}.\n# TYPE buoy_device_{name} gauge"
        );
        for d in fleet.devices.values() {
            let id = label_value(&d.id);
            let mut sample = |labels: String, v: f64| {
                let _ = writeln!(out, "buoy_device_{name}{{{labels}}} {v}");
            };
            let device = format!("device=\"{id}\"");
            match name {
                "online" => sample(device, f64::from(u8::from(d.is_online()))),
                "backlog_readings" => {
                    if let Some(n) = d.backlog() {
                        sample(device, n as f64);
                    }
                }
                "oldest_unsent_age_seconds" => {
                    sample(device, d.oldest_unsent_age_s().unwrap_or(0.0))
                }
                "problems" => sample(device, d.problems().len() as f64),
                _ => {
                    for (layer, l) in d.state.iter().flat_map(|s| &s.config.layers) {
                        let labels = format!("{device},layer=\"{}\"", label_value(layer));
                        sample(labels, l.applied_version as f64);
                    }
                }
            }
        }
    }
    out
}

/// A label value escaped as the text format wants.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
