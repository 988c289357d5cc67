//! A scriptable upstream: echoes requests as JSON, plays scripted responses, counts attempts and
//! serves JSON documents that a test can change while it runs (JWKS rotation).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiny_http::{Header, Request, Response as HttpResponse, Server};

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
    server: Arc<Server>,
    state: Arc<Mutex<State>>,
    port: u16,
}

impl Upstream {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// Starts on a given address (the demo uses a fixed port).
    pub fn start_on(addr: &str) -> Self {
        let server = Arc::new(Server::http(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .expect("an IP listener");
        let state = Arc::new(Mutex::new(State::default()));
        let (accepting, shared) = (Arc::clone(&server), Arc::clone(&state));
        std::thread::spawn(move || {
            for request in accepting.incoming_requests() {
                let state = Arc::clone(&shared);
                std::thread::spawn(move || handle(request, &state));
            }
        });
        Self {
            server,
            state,
            port,
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
        self.server.unblock();
    }
}

fn handle(mut request: Request, state: &Mutex<State>) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((status, document)) = guard.documents.get(path).cloned() {
        *guard.document_fetches.entry(path.to_string()).or_default() += 1;
        drop(guard);
        let response = HttpResponse::from_string(document)
            .with_status_code(status)
            .with_header(header("content-type", "application/json"));
        let _ = request.respond(response);
        return;
    }
    let echo = echo(&request, path, query, &body);
    guard.received.push(echo.clone());
    let scripted = guard
        .script
        .pop_front()
        .unwrap_or_else(|| Scripted::status(200));
    drop(guard);
    std::thread::sleep(scripted.delay);
    let is_echo = scripted.body.is_none();
    let body = scripted
        .body
        .unwrap_or_else(|| serde_json::to_vec(&echo).unwrap_or_default());
    let mut response = HttpResponse::from_data(body).with_status_code(scripted.status);
    if is_echo {
        response.add_header(header("content-type", "application/json"));
    }
    for (name, value) in &scripted.headers {
        response.add_header(header(name, value));
    }
    let _ = request.respond(response);
}

fn echo(request: &Request, path: &str, query: &str, body: &[u8]) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    let mut list = Vec::new();
    for h in request.headers() {
        let name = h.field.as_str().as_str().to_ascii_lowercase();
        let value = h.value.as_str().to_string();
        list.push(serde_json::json!([name, value]));
        let joined = match headers.get(&name).and_then(|v| v.as_str()) {
            Some(previous) => format!("{previous}, {value}"),
            None => value,
        };
        headers.insert(name, joined.into());
    }
    serde_json::json!({
        "method": request.method().as_str(),
        "path": path,
        "query": query,
        "headers": headers,
        "header_list": list,
        "body": String::from_utf8_lossy(body),
        "body_len": body.len(),
    })
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}
