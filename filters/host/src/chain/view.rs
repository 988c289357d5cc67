//! The request view of a chain: the header maps as the stages before have left them. Each map is
//! read from the host at most once per hook (and not at all while the stages read only single
//! headers nobody edited); the stages' edits are applied to the view when a later stage reads
//! it, and written once, by the frame, after the chain's hook.

use crate::env::{Direction, Env};
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};
use wasmgate_core::clock::Clock;
use wasmgate_core::edits::{diff, Edit, Headers};
use wasmgate_core::host::{HeaderMap, Host};
use wasmgate_core::outcome::{Answer, Callout};
use wasmgate_core::shared::{SetError, SharedStore};
use wasmgate_core::HeaderEdits;

/// One header map as the chain's stages see it.
#[derive(Debug, Default)]
pub struct MapView {
    /// The map as last read or rebuilt, before the edits in `pending`.
    current: Option<Headers>,
    /// Edits not applied to `current` yet (applied when a stage reads the map), or, while the
    /// map is unread, the edits the host does not hold yet. The edits of the last stage to run
    /// are never applied when nothing reads the map after it.
    pending: Vec<Edit>,
}

impl MapView {
    /// The frame wrote every edit of the last hook: an unread map is the host's again.
    pub fn settle(&mut self) {
        if self.current.is_none() {
            self.pending.clear();
        }
    }

    fn load(&mut self, env: &dyn Env, map: HeaderMap) -> &Headers {
        let current = self.current.get_or_insert_with(|| env.headers(map));
        for edit in self.pending.drain(..) {
            apply(current, &edit);
        }
        current
    }

    fn touched(&self, name: &str) -> bool {
        self.pending.iter().any(|edit| match edit {
            Edit::Set(n, _) | Edit::Remove(n) | Edit::Add(n, _) => n.eq_ignore_ascii_case(name),
        })
    }

    /// Takes one stage's edits: into the view, and into `into`, what the frame writes after the
    /// chain's hook.
    pub fn merge(&mut self, into: &mut HeaderEdits, edits: HeaderEdits) {
        if let Some((read, new)) = edits.replace {
            // The stage read the whole map through this view (`read`): what the host holds once
            // the edits before it are written; `new` holds every one of them.
            match into.replace.take() {
                Some((written, _)) => {
                    into.edits.clear();
                    into.replace_all(written, new.clone());
                }
                None if into.edits.is_empty() => into.replace_all(read, new.clone()),
                // Earlier stages' single edits go first, then only the names this stage changed:
                // so no copy of the host's map needs keeping for such a rewrite.
                None => into.edits.extend(diff_edits(&read, &new)),
            }
            self.current = Some(new);
            self.pending.clear();
        }
        self.pending.extend(edits.edits.iter().cloned());
        into.edits.extend(edits.edits);
    }
}

/// The single edits that turn `old` into `new`, name by name.
fn diff_edits(old: &Headers, new: &Headers) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (name, values) in diff(old, new) {
        match <[String; 1]>::try_from(values) {
            Ok([one]) => edits.push(Edit::Set(name, one)),
            Err(values) => {
                edits.push(Edit::Remove(name.clone()));
                edits.extend(values.into_iter().map(|v| Edit::Add(name.clone(), v)));
            }
        }
    }
    edits
}

/// Applies one edit to a header list.
fn apply(headers: &mut Headers, edit: &Edit) {
    match edit {
        Edit::Set(name, value) => {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            headers.push((name.to_ascii_lowercase(), value.clone()));
        }
        Edit::Remove(name) => headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
        Edit::Add(name, value) => headers.push((name.to_ascii_lowercase(), value.clone())),
    }
}

/// The request and response header maps of one chain stream.
#[derive(Debug, Default)]
pub struct Views {
    /// The request headers.
    pub request: MapView,
    /// The response headers.
    pub response: MapView,
}

impl Views {
    /// The view of `direction`'s headers.
    pub fn of(&mut self, direction: Direction) -> &mut MapView {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }
}

/// The host as a stage sees it: header maps through the chain's [`Views`] and the clock read
/// once per hook, everything else straight from the host.
pub struct Overlay<'a> {
    /// The host.
    pub env: &'a dyn Env,
    /// The chain stream's views.
    pub views: &'a RefCell<Views>,
    /// The time of this hook, once a stage read it (each read is a host call).
    pub now: &'a Cell<Option<SystemTime>>,
}

impl Overlay<'_> {
    fn view_of(map: HeaderMap) -> Option<Direction> {
        match map {
            HeaderMap::Request => Some(Direction::Request),
            HeaderMap::Response => Some(Direction::Response),
            HeaderMap::RequestTrailers | HeaderMap::ResponseTrailers => None,
        }
    }
}

impl SharedStore for Overlay<'_> {
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
        self.env.get_shared(key)
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.env.set_shared(key, value, cas)
    }
}

impl Clock for Overlay<'_> {
    fn now(&self) -> SystemTime {
        if let Some(now) = self.now.get() {
            return now;
        }
        let now = self.env.now();
        self.now.set(Some(now));
        now
    }
}

impl Host for Overlay<'_> {
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        let Some(direction) = Self::view_of(map) else {
            return self.env.headers(map);
        };
        let mut views = self.views.borrow_mut();
        views.of(direction).load(self.env, map).clone()
    }

    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        let Some(direction) = Self::view_of(map) else {
            return self.env.header(map, name);
        };
        let mut views = self.views.borrow_mut();
        let view = views.of(direction);
        if view.current.is_none() && !view.touched(name) {
            return self.env.header(map, name);
        }
        view.load(self.env, map)
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.env.property(path)
    }

    fn call_foreign(&self, name: &str, args: &[u8]) -> Option<Vec<u8>> {
        self.env.call_foreign(name, args)
    }
}

impl Env for Overlay<'_> {
    fn write_map(&self, map: HeaderMap, headers: &[(String, String)]) -> bool {
        self.env.write_map(map, headers)
    }

    fn write_header(&self, map: HeaderMap, name: &str, value: Option<&str>) {
        self.env.write_header(map, name, value);
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &str) {
        self.env.add_header(map, name, value);
    }

    fn body(&self, direction: Direction, size: usize) -> Vec<u8> {
        self.env.body(direction, size)
    }

    fn replace_body(&self, direction: Direction, size: usize, body: &[u8]) {
        self.env.replace_body(direction, size, body);
    }

    fn respond(&self, status: u32, headers: &[(String, String)], body: &[u8]) {
        self.env.respond(status, headers, body);
    }

    fn dispatch(&self, callout: &Callout) -> Result<u32, String> {
        self.env.dispatch(callout)
    }

    fn http_answer(&self, num_headers: usize, body_size: usize) -> Answer {
        self.env.http_answer(num_headers, body_size)
    }

    fn grpc_answer(&self, status: u32, size: usize) -> Answer {
        self.env.grpc_answer(status, size)
    }

    fn resume(&self, direction: Direction) {
        self.env.resume(direction);
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        self.env.set_effective_context(context_id)
    }

    fn set_tick_period(&self, period: Duration) {
        self.env.set_tick_period(period);
    }

    fn define_metric(&self, name: &str) -> Option<u32> {
        self.env.define_metric(name)
    }

    fn increment_metric(&self, id: u32, by: i64) {
        self.env.increment_metric(id, by);
    }

    fn define_gauge(&self, name: &str) -> Option<u32> {
        self.env.define_gauge(name)
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.env.record_metric(id, value);
    }
}
