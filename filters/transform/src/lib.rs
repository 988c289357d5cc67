//! transform: header, query, path and JSON body transformation for requests and responses.
//!
//! This file is proxy-wasm glue only: it reads what the host offers, hands it to the pure
//! modules ([`ops`], [`body`], [`pointer`], [`template`]) and writes their results back.

pub mod body;
pub mod config;
pub mod ops;
pub mod pointer;
pub mod query;
pub mod template;

use crate::body::{should_buffer, BodyError, TooLarge};
use crate::config::{BodyPolicy, Config, Policy, FILTER};
use crate::ops::diff;
use crate::template::RequestVars;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::rc::Rc;
use wasmgate_core::host::{header_map, request_info, was_lossy, Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};
use wasmgate_core::LocalReply;

// The module entry point is exported only in the Wasm build: natively (unit tests, the
// `wasmgate` CLI linking every filter) several `_initialize` symbols would collide.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    init();
}}

/// Registers the root context (called from `_initialize`).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn init() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(TransformRoot::default())
    });
}

/// The filter's counters, defined once per VM.
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    requests_transformed: Counter,
    responses_transformed: Counter,
    skipped: Counter,
    operations_skipped: Counter,
    body_errors: Counter,
    body_too_large: Counter,
    invalid_json: Counter,
    response_invalid_json: Counter,
}

impl Metrics {
    fn define() -> Self {
        let counter = |what: &str| Counter::define(&metric_name(FILTER, what));
        Self {
            requests_transformed: counter("requests_transformed"),
            responses_transformed: counter("responses_transformed"),
            skipped: counter("skipped"),
            operations_skipped: counter("operations_skipped"),
            body_errors: counter("body_errors"),
            body_too_large: counter("body_too_large"),
            invalid_json: counter("invalid_json"),
            response_invalid_json: counter("response_invalid_json"),
        }
    }
}

#[derive(Default)]
struct TransformRoot {
    config: Rc<Config>,
    metrics: Metrics,
}

impl Context for TransformRoot {}

impl RootContext for TransformRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("{}", wasmgate_core::build_identity!());
        self.metrics = Metrics::define();
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let json = self.get_plugin_configuration();
        match wasmgate_core::config::load(FILTER, json.as_deref(), config::compile) {
            Some(config) => {
                self.config = Rc::new(config);
                true
            }
            None => false,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Transform {
            config: Rc::clone(&self.config),
            metrics: self.metrics,
            policy: None,
            vars: RequestVars::default(),
            request: Direction::default(),
            response: Direction::default(),
            replied: false,
        }))
    }
}

/// Per-direction state of one stream.
#[derive(Debug, Default)]
struct Direction {
    /// Headers were changed (counted once the direction is done).
    changed: bool,
    /// The body is being buffered for editing.
    buffering: bool,
    /// Bytes buffered so far.
    body_size: usize,
    /// The headers wait for the body (`hold_headers`) and carry a Content-Length to update.
    held: bool,
}

fn has_content_length(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
}

struct Transform {
    config: Rc<Config>,
    metrics: Metrics,
    /// `None`: the filter does nothing for this stream (disabled by a rule, or not started).
    policy: Option<Policy>,
    /// The request as it arrived, for templates in both directions.
    vars: RequestVars,
    request: Direction,
    response: Direction,
    /// The filter answered locally; its own reply is never transformed.
    replied: bool,
}

impl Context for Transform {}

impl Transform {
    fn reply(&mut self, reply: LocalReply) -> Action {
        self.replied = true;
        ProxyHost.send_reply(&reply);
        Action::Pause
    }

    fn too_large(&mut self, request: bool, limit: u64) -> Action {
        self.metrics.body_too_large.inc();
        self.metrics.body_errors.inc();
        log::debug!("wasmgate transform: body over max_body_bytes ({limit})");
        if request {
            self.reply(LocalReply::new(
                413,
                "body_too_large",
                format!("The request body is larger than {limit} bytes."),
            ))
        } else {
            self.reply(LocalReply::new(
                502,
                "body_too_large",
                format!("The upstream response body is larger than {limit} bytes."),
            ))
        }
    }

    fn request_body_policy(&self) -> Option<&BodyPolicy> {
        self.policy.as_ref()?.request.body.as_ref()
    }

    fn response_body_policy(&self) -> Option<&BodyPolicy> {
        self.policy.as_ref()?.response.body.as_ref()
    }

    /// Edits the buffered request body once it is complete.
    fn finish_request_body(&mut self) -> Action {
        self.request.buffering = false;
        let size = self.request.body_size;
        let Some(policy) = self.request_body_policy() else {
            return Action::Continue;
        };
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        match policy.edits.apply(&body, &self.vars) {
            Err(BodyError::InvalidJson) => {
                self.metrics.invalid_json.inc();
                self.metrics.body_errors.inc();
                self.reply(LocalReply::new(
                    400,
                    "invalid_json",
                    "The request body is not valid JSON.",
                ))
            }
            Ok((edited, outcome)) => {
                self.metrics
                    .operations_skipped
                    .add(i64::from(outcome.skipped));
                if let Some(edited) = edited {
                    if self.request.held {
                        let length = edited.len().to_string();
                        self.set_http_request_header("content-length", Some(&length));
                    }
                    self.set_http_request_body(0, size, &edited);
                    self.request.changed = true;
                }
                if self.request.changed {
                    self.metrics.requests_transformed.inc();
                }
                Action::Continue
            }
        }
    }

    /// Edits the buffered response body once it is complete; invalid JSON passes unchanged.
    fn finish_response_body(&mut self) -> Action {
        self.response.buffering = false;
        let size = self.response.body_size;
        let Some(policy) = self.response_body_policy() else {
            return Action::Continue;
        };
        let body = self.get_http_response_body(0, size).unwrap_or_default();
        match policy.edits.apply(&body, &self.vars) {
            Err(BodyError::InvalidJson) => {
                log::debug!("wasmgate transform: response body is not JSON; passed unchanged");
                self.metrics.response_invalid_json.inc();
                self.metrics.body_errors.inc();
            }
            Ok((edited, outcome)) => {
                self.metrics
                    .operations_skipped
                    .add(i64::from(outcome.skipped));
                if let Some(edited) = edited {
                    if self.response.held {
                        let length = edited.len().to_string();
                        self.set_http_response_header("content-length", Some(&length));
                    }
                    self.set_http_response_body(0, size, &edited);
                    self.response.changed = true;
                }
            }
        }
        if self.response.changed {
            self.metrics.responses_transformed.inc();
        }
        Action::Continue
    }
}

/// Replaces the headers of `map` (as read: `old`) with `new`. A host call costs more than the
/// rest of a header edit (`make bench`, probe rows), so the whole map is written in one call; a
/// value that was not UTF-8 when read (see `header_map`) is never written back, so then only the
/// changed names are, one call each.
fn write_headers(map: MapType, old: &[(String, String)], new: &[(String, String)]) {
    if !new.iter().any(|(_, v)| was_lossy(v)) {
        let pairs = new.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        if hostcalls::set_map(map, pairs).is_ok() {
            return;
        }
    }
    for (name, values) in diff(old, new) {
        match values.as_slice() {
            [] => set_header(map, &name, None),
            [one] => set_header(map, &name, Some(one)),
            many => {
                set_header(map, &name, None);
                for value in many {
                    if let Err(status) = hostcalls::add_map_value(map, &name, value) {
                        log::warn!("wasmgate transform: could not add header {name}: {status:?}");
                    }
                }
            }
        }
    }
}

fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(map, name, value) {
        log::warn!("wasmgate transform: could not write header {name}: {status:?}");
    }
}

impl HttpContext for Transform {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let facts = self.config.host_facts;
        let info = request_info(&ProxyHost, facts.route);
        let Some(policy) = self.config.select(&info).cloned() else {
            log::debug!("wasmgate transform: disabled by a rule for {}", info.path);
            self.metrics.skipped.inc();
            return Action::Continue;
        };
        if policy.is_empty() {
            return Action::Continue;
        }
        let headers = info.headers;
        let source = facts
            .client_ip
            .then(|| ProxyHost.property_string(&["source", "address"]))
            .flatten();
        // Templates that read nothing of the request leave it uncopied.
        let read: &[(String, String)] = if facts.request { &headers } else { &[] };
        self.vars = RequestVars::new(read, source.as_deref(), info.route);
        let (new_headers, outcome) = policy.request.ops.apply(&headers, &self.vars);
        self.metrics
            .operations_skipped
            .add(i64::from(outcome.skipped));
        if outcome.changed {
            write_headers(MapType::HttpRequestHeaders, &headers, &new_headers);
            // Envoy clears its route cache on every request header a Wasm filter writes, so the
            // request is routed again with the new path and headers (README, "Re-routing").
            self.request.changed = true;
        }
        if let Some(body) = policy.request.body.as_ref().filter(|_| !end_of_stream) {
            match should_buffer(&new_headers, body.max_body_bytes) {
                Err(TooLarge) => {
                    let limit = body.max_body_bytes;
                    self.policy = Some(policy);
                    return self.too_large(true, limit);
                }
                Ok(buffer) => self.request.buffering = buffer,
            }
        }
        self.policy = Some(policy);
        if self.request.buffering {
            if self.config.hold_headers {
                // Envoy lets the plugin stop on headers: they wait for the edited body, whose
                // length then replaces Content-Length.
                self.request.held = has_content_length(&new_headers);
                return Action::Pause;
            }
            // The headers go on now (Envoy forwards them before the body), so the length of
            // the edited body cannot be announced: the body is sent chunked instead.
            self.set_http_request_header("content-length", None);
        } else if self.request.changed {
            self.metrics.requests_transformed.inc();
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.request.buffering {
            return Action::Continue;
        }
        self.request.body_size = body_size;
        let limit = self.request_body_policy().map_or(0, |b| b.max_body_bytes);
        if u64::try_from(body_size).unwrap_or(u64::MAX) > limit {
            self.request.buffering = false;
            return self.too_large(true, limit);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_request_body()
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.request.buffering {
            return self.finish_request_body();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Continue;
        }
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        let response = &policy.response;
        if response.headers.is_empty() && response.body.is_none() {
            return Action::Continue;
        }
        let headers = header_map(MapType::HttpResponseHeaders);
        let (mut new_headers, mut regular): (Vec<_>, Vec<_>) = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .partition(|(n, _)| n.starts_with(':'));
        let outcome = response.headers.apply_headers(&mut regular, &self.vars);
        self.metrics
            .operations_skipped
            .add(i64::from(outcome.skipped));
        new_headers.extend(regular);
        if outcome.changed {
            write_headers(MapType::HttpResponseHeaders, &headers, &new_headers);
            self.response.changed = true;
        }
        if let Some(body) = response.body.as_ref().filter(|_| !end_of_stream) {
            match should_buffer(&new_headers, body.max_body_bytes) {
                Err(TooLarge) => return self.too_large(false, body.max_body_bytes),
                Ok(buffer) => self.response.buffering = buffer,
            }
        }
        if self.response.buffering {
            if self.config.hold_headers {
                self.response.held = has_content_length(&new_headers);
                return Action::Pause;
            }
            // As for requests: the headers leave before the body, so without a length.
            self.set_http_response_header("content-length", None);
        } else if self.response.changed {
            self.metrics.responses_transformed.inc();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.response.buffering || self.replied {
            return Action::Continue;
        }
        self.response.body_size = body_size;
        let limit = self.response_body_policy().map_or(0, |b| b.max_body_bytes);
        if u64::try_from(body_size).unwrap_or(u64::MAX) > limit {
            self.response.buffering = false;
            return self.too_large(false, limit);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_response_body()
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        if self.response.buffering && !self.replied {
            return self.finish_response_body();
        }
        Action::Continue
    }
}
