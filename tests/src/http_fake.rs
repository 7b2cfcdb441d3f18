//! A small HTTP server standing in for a database the machine does not have
//! (InfluxDB 2 and 3, CnosDB, QuestDB). It records every request, with its
//! body un-gzipped, and answers what the test's responder says, so a test
//! can check the path, query, auth header and gzip a sink sends, and make it
//! face the status codes and error bodies each database documents.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body, un-gzipped if it came gzipped.
    pub body: String,
    pub gzipped: bool,
}

impl Received {
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.body.lines().filter(|l| !l.is_empty())
    }
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_owned(),
        }
    }
}

/// Decides the answer from the request and how many came before it.
pub type Responder = dyn Fn(&Received, usize) -> Reply + Send + Sync;

pub struct FakeDb {
    pub port: u16,
    received: Arc<Mutex<Vec<(Received, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDb {
    /// Starts the fake on a free loopback port, in the current runtime.
    pub async fn start(responder: Arc<Responder>) -> FakeDb {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let received: Arc<Mutex<Vec<(Received, u16)>>> = Arc::default();
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                let responder = responder.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let responder = responder.clone();
                        async move {
                            let received = read(request).await;
                            let n = log.lock().unwrap().len();
                            let reply = responder(&received, n);
                            log.lock().unwrap().push((received, reply.status));
                            let mut response = Response::builder().status(reply.status);
                            for (k, v) in &reply.headers {
                                response = response.header(*k, v);
                            }
                            response.body(Full::new(Bytes::from(reply.body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeDb {
            port,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, with the status it was answered.
    pub fn received(&self) -> Vec<(Received, u16)> {
        self.received.lock().unwrap().clone()
    }

    /// The lines of every request answered with a 2xx.
    pub fn accepted_lines(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter(|(_, status)| (200..300).contains(status))
            .flat_map(|(r, _)| r.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }
}

impl Drop for FakeDb {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read(request: Request<hyper::body::Incoming>) -> Received {
    let path = request.uri().path().to_owned();
    let query = request
        .uri()
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let raw = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = if gzipped {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .expect("a gzip body that decompresses");
        text
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    };
    Received {
        path,
        query,
        headers,
        body,
        gzipped,
    }
}
