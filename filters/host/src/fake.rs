//! The fake host of every test that drives the frame: the frame's own tests and each filter's.
//!
//! A test sets the host's state (the four header maps, properties, the clock, the bodies, the
//! next callout answer); the frame reads it, and every write it makes both changes that state
//! (a header written is in the map, a body replaced is the new body) and is appended to a log of
//! [`Call`]s. A test asserts either the state (`env.header(HeaderMap::Request, "x-a")`) or the
//! calls; the helpers ([`FakeEnv::responses`], [`FakeEnv::resumed`], [`FakeEnv::callouts`],
//! [`FakeEnv::metric`]) read the log, so they see what happened since the last
//! [`FakeEnv::take_calls`]. Shared data keeps Envoy's CAS semantics; there are no foreign
//! functions (`call_foreign` is always `None`, as in a host without them). The header maps and
//! bodies are those of one stream: `set_effective_context` is recorded but switches nothing, so
//! a test that interleaves streams sets their headers before each call.

use crate::env::{Direction, Env};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmgate_core::clock::Clock;
use wasmgate_core::host::{FakeHost, HeaderMap, Host};
use wasmgate_core::outcome::{Answer, Callout};
use wasmgate_core::shared::{SetError, SharedStore};

type Pairs = Vec<(String, String)>;

fn pairs(list: &[(&str, &str)]) -> Pairs {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One call the frame made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A whole header map written.
    WriteMap(HeaderMap, Vec<(String, String)>),
    /// One header set (`Some`) or removed (`None`).
    WriteHeader(HeaderMap, String, Option<String>),
    /// One header value added.
    AddHeader(HeaderMap, String, String),
    /// A body replaced: the size replaced and the new bytes.
    ReplaceBody(Direction, usize, Vec<u8>),
    /// A local response.
    Respond(u32, Vec<(String, String)>, Vec<u8>),
    /// A callout sent, with the token it got.
    Dispatch(Callout, u32),
    /// A paused direction resumed.
    Resume(Direction),
    /// The current context changed.
    EffectiveContext(u32),
    /// The root timer set.
    Tick(Duration),
    /// A counter incremented (by name).
    Metric(String, i64),
    /// A gauge set (by name).
    Gauge(String, u64),
}

/// A response the frame sent to the client ([`Call::Respond`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// HTTP status.
    pub status: u32,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Sent {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// The fake host (see the module documentation).
#[derive(Debug, Default)]
pub struct FakeEnv {
    /// What the clock reads, in Unix milliseconds (0 by default).
    pub now_ms: Cell<u64>,
    /// Properties by their path joined with `.` (`"source.address"`).
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    /// The request body the host holds.
    pub request_body: RefCell<Vec<u8>>,
    /// The response body the host holds.
    pub response_body: RefCell<Vec<u8>>,
    /// The answer the next callout response callback reads (none: an empty answer).
    pub answer: RefCell<Option<Answer>>,
    /// `Some(reason)`: every dispatch is refused.
    pub refuse_dispatch: RefCell<Option<String>>,
    /// The root timer's period as last set (zero: stopped).
    pub timer: Cell<Duration>,
    /// Every call, in order.
    pub calls: RefCell<Vec<Call>>,
    /// Header reads, whole maps and single headers, each one host call.
    pub reads: Cell<usize>,
    maps: RefCell<HashMap<HeaderMap, Pairs>>,
    shared: FakeHost,
    metric_names: RefCell<Vec<String>>,
    next_token: Cell<u32>,
}

impl FakeEnv {
    /// A fake whose request has these method, authority and path.
    pub fn with_request(method: &str, authority: &str, path: &str) -> Self {
        let env = Self::default();
        env.set_map(
            HeaderMap::Request,
            &[
                (":method", method),
                (":authority", authority),
                (":path", path),
            ],
        );
        env
    }

    /// A fake whose clock reads `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        let env = Self::default();
        env.now_ms.set(now_ms);
        env
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
    }

    /// Replaces a whole header map (without recording a call).
    pub fn set_map(&self, map: HeaderMap, headers: &[(&str, &str)]) {
        self.maps.borrow_mut().insert(map, pairs(headers));
    }

    /// Sets a property, by its path joined with `.`.
    pub fn set_property(&self, path: &str, value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(path.to_string(), value.to_vec());
    }

    /// Sets the body a direction's body callbacks read.
    pub fn set_body(&self, direction: Direction, body: &[u8]) {
        *self.body_of(direction).borrow_mut() = body.to_vec();
    }

    /// The calls so far, emptied.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.borrow_mut())
    }

    /// The responses sent to the client, in order.
    pub fn responses(&self) -> Vec<Sent> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Respond(status, headers, body) => Some(Sent {
                    status: *status,
                    headers: headers.clone(),
                    body: body.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The last response sent to the client.
    pub fn last_response(&self) -> Option<Sent> {
        self.responses().pop()
    }

    /// The directions resumed, in order.
    pub fn resumed(&self) -> Vec<Direction> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Resume(direction) => Some(*direction),
                _ => None,
            })
            .collect()
    }

    /// The callouts sent, with their tokens, in order.
    pub fn callouts(&self) -> Vec<(Callout, u32)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Dispatch(callout, token) => Some((callout.clone(), *token)),
                _ => None,
            })
            .collect()
    }

    /// The sum of every increment of metric `name` (`wasmgate_<filter>_<what>`), whatever its
    /// labels.
    pub fn metric(&self, name: &str) -> i64 {
        self.metric_with(name, &[])
    }

    /// The sum of every increment of metric `name` among the series carrying all of `labels`.
    pub fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> i64 {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Metric(stat, by) if series_matches(stat, name, labels) => Some(*by),
                _ => None,
            })
            .sum()
    }

    /// The last value gauge `name` was set to, whatever its labels.
    pub fn gauge(&self, name: &str) -> Option<u64> {
        self.gauge_with(name, &[])
    }

    /// The last value gauge `name` carrying all of `labels` was set to.
    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.calls.borrow().iter().rev().find_map(|c| match c {
            Call::Gauge(stat, value) if series_matches(stat, name, labels) => Some(*value),
            _ => None,
        })
    }

    /// The stat names defined so far (labels included), in order.
    pub fn metric_names(&self) -> Vec<String> {
        self.metric_names.borrow().clone()
    }

    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }

    fn body_of(&self, direction: Direction) -> &RefCell<Vec<u8>> {
        match direction {
            Direction::Request => &self.request_body,
            Direction::Response => &self.response_body,
        }
    }
}

impl SharedStore for FakeEnv {
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
        self.shared.get_shared(key)
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.shared.set_shared(key, value, cas)
    }
}

impl Clock for FakeEnv {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms.get())
    }
}

impl Host for FakeEnv {
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        self.reads.set(self.reads.get() + 1);
        self.maps.borrow().get(&map).cloned().unwrap_or_default()
    }

    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        self.reads.set(self.reads.get() + 1);
        self.maps
            .borrow()
            .get(&map)?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.borrow().get(&path.join(".")).cloned()
    }

    fn call_foreign(&self, _name: &str, _args: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl Env for FakeEnv {
    fn write_map(&self, map: HeaderMap, headers: &[(String, String)]) -> bool {
        self.maps.borrow_mut().insert(map, headers.to_vec());
        self.record(Call::WriteMap(map, headers.to_vec()));
        true
    }

    fn write_header(&self, map: HeaderMap, name: &str, value: Option<&str>) {
        {
            let mut maps = self.maps.borrow_mut();
            let headers = maps.entry(map).or_default();
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        self.record(Call::WriteHeader(
            map,
            name.to_string(),
            value.map(str::to_string),
        ));
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &str) {
        self.maps
            .borrow_mut()
            .entry(map)
            .or_default()
            .push((name.to_string(), value.to_string()));
        self.record(Call::AddHeader(map, name.to_string(), value.to_string()));
    }

    fn body(&self, direction: Direction, size: usize) -> Vec<u8> {
        let body = self.body_of(direction).borrow();
        body[..size.min(body.len())].to_vec()
    }

    fn replace_body(&self, direction: Direction, size: usize, body: &[u8]) {
        {
            let mut held = self.body_of(direction).borrow_mut();
            let end = size.min(held.len());
            held.splice(..end, body.iter().copied());
        }
        self.record(Call::ReplaceBody(direction, size, body.to_vec()));
    }

    fn respond(&self, status: u32, headers: &[(String, String)], body: &[u8]) {
        self.record(Call::Respond(status, headers.to_vec(), body.to_vec()));
    }

    fn dispatch(&self, callout: &Callout) -> Result<u32, String> {
        if let Some(reason) = self.refuse_dispatch.borrow().clone() {
            return Err(reason);
        }
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        self.record(Call::Dispatch(callout.clone(), token));
        Ok(token)
    }

    fn http_answer(&self, _: usize, _: usize) -> Answer {
        self.answer.borrow_mut().take().unwrap_or(Answer::Http {
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    fn grpc_answer(&self, status: u32, _: usize) -> Answer {
        self.answer.borrow_mut().take().unwrap_or(Answer::Grpc {
            status,
            message: Vec::new(),
        })
    }

    fn resume(&self, direction: Direction) {
        self.record(Call::Resume(direction));
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        self.record(Call::EffectiveContext(context_id));
        true
    }

    fn set_tick_period(&self, period: Duration) {
        self.timer.set(period);
        self.record(Call::Tick(period));
    }

    fn define_metric(&self, name: &str) -> Option<u32> {
        let mut names = self.metric_names.borrow_mut();
        let id = names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_string());
            names.len() - 1
        });
        u32::try_from(id).ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let name = usize::try_from(id)
            .ok()
            .and_then(|i| self.metric_names.borrow().get(i).cloned())
            .unwrap_or_default();
        self.record(Call::Metric(name, by));
    }

    fn define_gauge(&self, name: &str) -> Option<u32> {
        self.define_metric(name)
    }

    fn record_metric(&self, id: u32, value: u64) {
        let name = usize::try_from(id)
            .ok()
            .and_then(|i| self.metric_names.borrow().get(i).cloned())
            .unwrap_or_default();
        self.record(Call::Gauge(name, value));
    }
}

/// True when the stat name `stat` is metric `name` with all of `labels`.
fn series_matches(stat: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    let (metric, have) = wasmgate_core::metrics::parse_metric_name(stat);
    metric == name
        && labels
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}
