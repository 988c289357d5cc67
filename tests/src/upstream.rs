//! A scriptable upstream: echoes requests as JSON, plays scripted responses, counts attempts and
//! serves JSON documents that a test can change while it runs (JWKS rotation).
//!
//! It is hyper's HTTP/1.1 server on its own tokio runtime: every connection is served as long as
//! Envoy keeps it open, however many Envoy opens at once (a thread pool that parks a thread on
//! each idle keep-alive connection would leave later connections unread, and their requests
//! would end as Envoy's 504 after the route timeout).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted response; a `None` body means "echo the request as JSON".
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    /// Status code to answer.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Body to answer instead of the echo.
    pub body: Option<Vec<u8>>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Scripted {
    /// A response with this status and the echo body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers this body instead of the echo.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Scripted>,
    documents: HashMap<String, (u16, String)>,
    document_fetches: HashMap<String, usize>,
    received: Vec<serde_json::Value>,
}

/// The upstream server; stops when dropped.
pub struct Upstream {
    state: Arc<Mutex<State>>,
    port: u16,
    /// Stops the server; in a mutex so that an `Upstream` stays unwind-safe for tests that
    /// catch a panic.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Upstream {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts on a given address (the demo uses a fixed port).
    pub fn start_on(addr: &str) -> Self {
        let listener =
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(serve(listener, shared, stopped));
        });
        Self {
            state,
            port,
            stop: Mutex::new(Some(stop)),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queues responses played in order, one per non-document request; then it echoes again.
    pub fn script(&self, responses: impl IntoIterator<Item = Scripted>) {
        self.lock().script.extend(responses);
    }

    /// Serves `body` as `application/json` at `path` (status 200) until changed or removed.
    pub fn set_document(&self, path: &str, body: &str) {
        self.set_document_status(path, 200, body);
    }

    /// Serves `body` at `path` with a chosen status (e.g. 503 to make a JWKS unavailable).
    pub fn set_document_status(&self, path: &str, status: u16, body: &str) {
        self.lock()
            .documents
            .insert(path.to_string(), (status, body.to_string()));
    }

    /// Stops serving the document at `path` (it falls back to the echo).
    pub fn remove_document(&self, path: &str) {
        self.lock().documents.remove(path);
    }

    /// How many times the document at `path` was fetched.
    pub fn document_fetches(&self, path: &str) -> usize {
        self.lock().document_fetches.get(path).copied().unwrap_or(0)
    }

    /// How many non-document requests arrived (the attempts a retry test counts).
    pub fn attempts(&self) -> usize {
        self.lock().received.len()
    }

    /// The echo of every non-document request received, oldest first.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let stop = self.stop.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

/// Accepts connections until `stopped`, serving each on its own task.
async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(request, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(request: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, incoming) = request.into_parts();
    let body = incoming
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let document = {
        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
        let document = guard.documents.get(&path).cloned();
        if document.is_some() {
            *guard.document_fetches.entry(path.clone()).or_default() += 1;
        }
        document
    };
    if let Some((status, document)) = document {
        return response(
            status,
            &[("content-type", "application/json")],
            document.into_bytes(),
        );
    }
    let echo = echo(&parts, &path, &query, &body);
    let scripted = {
        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
        guard.received.push(echo.clone());
        guard
            .script
            .pop_front()
            .unwrap_or_else(|| Scripted::status(200))
    };
    tokio::time::sleep(scripted.delay).await;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if scripted.body.is_none() {
        headers.push(("content-type", "application/json"));
    }
    headers.extend(
        scripted
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let body = scripted
        .body
        .clone()
        .unwrap_or_else(|| serde_json::to_vec(&echo).unwrap_or_default());
    response(scripted.status, &headers, body)
}

/// A response; headers that are not valid HTTP are left out.
fn response(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn echo(
    parts: &hyper::http::request::Parts,
    path: &str,
    query: &str,
    body: &[u8],
) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    let mut list = Vec::new();
    for (name, value) in &parts.headers {
        let name = name.as_str().to_string();
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        list.push(serde_json::json!([name, value]));
        let joined = match headers.get(&name).and_then(|v| v.as_str()) {
            Some(previous) => format!("{previous}, {value}"),
            None => value,
        };
        headers.insert(name, joined.into());
    }
    serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": query,
        "headers": headers,
        "header_list": list,
        "body": String::from_utf8_lossy(body),
        "body_len": body.len(),
    })
}
