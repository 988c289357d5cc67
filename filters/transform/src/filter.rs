//! The transform filter on the wasmgate frame: edit request headers, query and path, then the
//! JSON bodies of both directions within `max_body_bytes`, and the response headers.

use crate::body::{should_buffer, BodyError};
use crate::config::{self, BodyPolicy, Config, Policy, FILTER};
use crate::template::RequestVars;
use std::rc::Rc;
use wasmgate_core::edits::Edit;
use wasmgate_core::host::{request_info, HeaderMap};
use wasmgate_core::request::declared_length;
use wasmgate_core::{Body, BodyMode, BodyNeed, ConfigError, LocalReply, Outcome, Selected};
use wasmgate_host::{select, Counter, Cx, Direction, Filter, Setup, Uses};

/// The filter's counters.
#[derive(Debug, Clone, Copy)]
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
    fn define(setup: &Setup<'_>) -> Self {
        Self {
            requests_transformed: setup.counter("requests_transformed"),
            responses_transformed: setup.counter("responses_transformed"),
            skipped: setup.counter("skipped"),
            operations_skipped: setup.counter("operations_skipped"),
            body_errors: setup.counter("body_errors"),
            body_too_large: setup.counter("body_too_large"),
            invalid_json: setup.counter("invalid_json"),
            response_invalid_json: setup.counter("response_invalid_json"),
        }
    }
}

/// One configuration and its counters.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
}

/// What happened to one direction of a stream.
#[derive(Debug, Default)]
struct Changes {
    /// Headers or body were changed (counted once the direction is done).
    changed: bool,
    /// The headers wait for the body and carry a Content-Length to update.
    held: bool,
}

/// One stream: its policy, the request as it arrived (for templates), what changed.
pub struct Transform {
    plugin: Rc<Plugin>,
    /// `None`: the filter does nothing for this stream (disabled by a rule).
    policy: Option<Policy>,
    vars: RequestVars,
    request: Changes,
    response: Changes,
}

/// The request headers as the host holds them: with the `:path` that arrived when the frame's
/// path check rewrote it (the whole-map write compares against these).
fn as_arrived(mut headers: Vec<(String, String)>, path: Option<String>) -> Vec<(String, String)> {
    if let Some(path) = path {
        if let Some((_, value)) = headers.iter_mut().find(|(n, _)| n == ":path") {
            *value = path;
        }
    }
    headers
}

fn has_content_length(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
}

impl Transform {
    /// Whether a body with these headers is collected: JSON, not compressed, not empty. An
    /// announced length over the limit is collected too: the frame then answers 413 or 502.
    fn body_need(&self, body: &BodyPolicy, headers: &[(String, String)]) -> Option<BodyNeed> {
        let collect = should_buffer(headers, body.max_body_bytes).unwrap_or(true);
        let mode = if self.plugin.config.hold_headers {
            // Envoy lets the plugin stop on headers: they wait for the edited body, whose
            // length then replaces Content-Length.
            BodyMode::HoldHeaders
        } else {
            BodyMode::Buffer
        };
        collect.then_some(BodyNeed {
            limit: body.max_body_bytes,
            mode,
            declared: declared_length(headers),
        })
    }

    /// Applies the body edits; the new body (if changed) with its length header when held.
    fn edit_body(
        &mut self,
        cx: &mut Cx<'_>,
        direction: Direction,
        body: &[u8],
    ) -> Result<(), BodyError> {
        let policy = self.policy.clone();
        let edits = match direction {
            Direction::Request => policy.as_ref().and_then(|p| p.request.body.as_ref()),
            Direction::Response => policy.as_ref().and_then(|p| p.response.body.as_ref()),
        };
        let Some(edits) = edits else {
            return Ok(());
        };
        let (edited, outcome) = edits.edits.apply(body, &self.vars)?;
        cx.add(
            self.plugin.metrics.operations_skipped,
            i64::from(outcome.skipped),
        );
        if let Some(edited) = edited {
            let changes = self.changes(direction);
            if changes.held {
                cx.edits(direction)
                    .set("content-length", edited.len().to_string());
            }
            changes.changed = true;
            cx.replace_body(edited);
        }
        Ok(())
    }

    fn changes(&mut self, direction: Direction) -> &mut Changes {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }
}

impl Filter for Transform {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses {
        bodies: true,
        callouts: false,
        waits: false,
    };

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        Ok(Plugin {
            config: config::parse(json)?,
            metrics: Metrics::define(setup),
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            policy: None,
            vars: RequestVars::default(),
            request: Changes::default(),
            response: Changes::default(),
        }
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, end_of_stream: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let facts = plugin.config.host_facts;
        let mut info = request_info(cx.host(), facts.route);
        // A rewritten path is written with the whole map below, from the path as it arrived.
        let arrived = info.path_changed.then(|| info.raw_path().to_string());
        let selected = match select(cx, &plugin.config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        let policy = match selected {
            Selected::Disabled => {
                log::debug!("wasmgate {FILTER}: disabled by a rule for {}", info.path);
                cx.count(plugin.metrics.skipped);
                return Outcome::Continue;
            }
            Selected::Default(policy) | Selected::Rule { policy, .. } => policy.clone(),
        };
        if policy.is_empty() {
            return Outcome::Continue;
        }
        let headers = info.headers;
        let source = facts
            .client_ip
            .then(|| cx.host().property_string(&["source", "address"]))
            .flatten();
        // Templates that read nothing of the request leave it uncopied.
        let read: &[(String, String)] = if facts.request { &headers } else { &[] };
        self.vars = RequestVars::new(read, source.as_deref(), info.route);
        let (new_headers, outcome) = policy.request.ops.apply(&headers, &self.vars);
        cx.add(
            plugin.metrics.operations_skipped,
            i64::from(outcome.skipped),
        );
        let need = policy
            .request
            .body
            .as_ref()
            .filter(|_| !end_of_stream)
            .and_then(|body| self.body_need(body, &new_headers));
        self.request.held = has_content_length(&new_headers);
        if outcome.changed {
            // Envoy clears its route cache on every request header a Wasm filter writes, so the
            // request is routed again with the new path and headers (README, "Re-routing").
            cx.request
                .replace_all(as_arrived(headers, arrived), new_headers);
            cx.request
                .edits
                .retain(|edit| !matches!(edit, Edit::Set(name, _) if name == ":path"));
            self.request.changed = true;
        }
        self.policy = Some(policy);
        match need {
            Some(need) => {
                if need.mode == BodyMode::Buffer {
                    // The headers go on now (Envoy forwards them before the body), so the length
                    // of the edited body cannot be announced: the body is sent chunked instead.
                    self.request.held = false;
                    cx.request.remove("content-length");
                }
                Outcome::NeedBody(need)
            }
            None => {
                if self.request.changed {
                    cx.count(plugin.metrics.requests_transformed);
                }
                Outcome::Continue
            }
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        let Body::Complete(body) = body else {
            return Outcome::Continue;
        };
        let metrics = self.plugin.metrics;
        if let Err(BodyError::InvalidJson) = self.edit_body(cx, Direction::Request, body) {
            cx.count(metrics.invalid_json);
            cx.count(metrics.body_errors);
            return Outcome::Reply(LocalReply::new(
                400,
                "invalid_json",
                "The request body is not valid JSON.",
            ));
        }
        if self.request.changed {
            cx.count(metrics.requests_transformed);
        }
        Outcome::Continue
    }

    fn on_body_too_large(&mut self, cx: &mut Cx<'_>, _: Direction) {
        cx.count(self.plugin.metrics.body_too_large);
        cx.count(self.plugin.metrics.body_errors);
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, end_of_stream: bool) -> Outcome {
        let Some(policy) = self.policy.clone() else {
            return Outcome::Continue;
        };
        let response = &policy.response;
        if response.headers.is_empty() && response.body.is_none() {
            return Outcome::Continue;
        }
        let metrics = self.plugin.metrics;
        let headers = cx.host().headers(HeaderMap::Response);
        let (mut new_headers, mut regular): (Vec<_>, Vec<_>) = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .partition(|(n, _)| n.starts_with(':'));
        let outcome = response.headers.apply_headers(&mut regular, &self.vars);
        cx.add(metrics.operations_skipped, i64::from(outcome.skipped));
        new_headers.extend(regular);
        let need = response
            .body
            .as_ref()
            .filter(|_| !end_of_stream)
            .and_then(|body| self.body_need(body, &new_headers));
        self.response.held = has_content_length(&new_headers);
        if outcome.changed {
            cx.response.replace_all(headers, new_headers);
            self.response.changed = true;
        }
        match need {
            Some(need) => {
                if need.mode == BodyMode::Buffer {
                    // As for requests: the headers leave before the body, so without a length.
                    self.response.held = false;
                    cx.response.remove("content-length");
                }
                Outcome::NeedBody(need)
            }
            None => {
                if self.response.changed {
                    cx.count(metrics.responses_transformed);
                }
                Outcome::Continue
            }
        }
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        let Body::Complete(body) = body else {
            return Outcome::Continue;
        };
        let metrics = self.plugin.metrics;
        if let Err(BodyError::InvalidJson) = self.edit_body(cx, Direction::Response, body) {
            log::debug!("wasmgate {FILTER}: response body is not JSON; passed unchanged");
            cx.count(metrics.response_invalid_json);
            cx.count(metrics.body_errors);
        }
        if self.response.changed {
            cx.count(metrics.responses_transformed);
        }
        Outcome::Continue
    }
}

#[cfg(test)]
mod tests;
