//! The transform filter on the wasmgate frame: edit request headers, query and path, then the
//! JSON bodies of both directions within `max_body_bytes`, and the response headers.

use crate::body::{classify, BodyKind};
use crate::config::{self, BodyPolicy, Config, OnUnsupported, Policy, FILTER};
use crate::doc::Invalid;
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
    unsupported_media_type: Counter,
    response_unsupported_media_type: Counter,
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
            unsupported_media_type: setup.counter("unsupported_media_type"),
            response_unsupported_media_type: setup.counter("response_unsupported_media_type"),
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
    /// What to do with a body by its headers: collect it for editing (JSON, not compressed;
    /// an announced length over the limit is collected too, and the frame answers 413 or 502),
    /// let it go on (empty, or one the edits cannot apply to that is passed), or refuse it.
    fn body_need(
        &self,
        cx: &mut Cx<'_>,
        direction: Direction,
        body: &BodyPolicy,
        headers: &[(String, String)],
    ) -> Result<Option<BodyNeed>, LocalReply> {
        let kind = classify(headers);
        match kind {
            BodyKind::Empty => return Ok(None),
            BodyKind::Json => {}
            BodyKind::NotJson | BodyKind::Compressed => {
                return self
                    .unsupported(cx, direction, body.on_unsupported, kind)
                    .map(|()| None)
            }
        }
        let mode = if self.plugin.config.hold_headers {
            // Envoy lets the plugin stop on headers: they wait for the edited body, whose
            // length then replaces Content-Length.
            BodyMode::HoldHeaders
        } else {
            BodyMode::Buffer
        };
        Ok(Some(BodyNeed {
            limit: body.max_body_bytes,
            mode,
            declared: declared_length(headers),
        }))
    }

    /// A body that is not JSON or is compressed: counted, then passed or refused.
    fn unsupported(
        &self,
        cx: &mut Cx<'_>,
        direction: Direction,
        on_unsupported: OnUnsupported,
        kind: BodyKind,
    ) -> Result<(), LocalReply> {
        let metrics = self.plugin.metrics;
        let what = if kind == BodyKind::Compressed {
            "compressed"
        } else {
            "not JSON"
        };
        let (counter, status, message) = match direction {
            Direction::Request => (
                metrics.unsupported_media_type,
                415,
                "The request body must be JSON (application/json or application/*+json) and not \
                 compressed.",
            ),
            Direction::Response => (
                metrics.response_unsupported_media_type,
                502,
                "The upstream response body is not uncompressed JSON.",
            ),
        };
        cx.count(counter);
        cx.count(metrics.body_errors);
        match on_unsupported {
            OnUnsupported::Pass => {
                log::debug!("wasmgate {FILTER}: {direction:?} body {what}: passed unedited");
                Ok(())
            }
            OnUnsupported::Refuse => {
                log::debug!("wasmgate {FILTER}: {direction:?} body {what}: refused");
                Err(LocalReply::new(status, "unsupported_media_type", message))
            }
        }
    }

    /// Applies the body edits: the new body (if changed) with its length header when held. A
    /// body that is not valid JSON is counted, then passed (`Continue`) or refused.
    fn edit_body(&mut self, cx: &mut Cx<'_>, direction: Direction, body: &[u8]) -> Outcome {
        let policy = self.policy.clone();
        let edits = match direction {
            Direction::Request => policy.as_ref().and_then(|p| p.request.body.as_ref()),
            Direction::Response => policy.as_ref().and_then(|p| p.response.body.as_ref()),
        };
        // An empty body has nothing to edit (as when it announced `content-length: 0`).
        let Some(edits) = edits.filter(|_| !body.is_empty()) else {
            return Outcome::Continue;
        };
        let metrics = self.plugin.metrics;
        let (edited, outcome) = match edits.edits.apply(body, &self.vars) {
            Ok(applied) => applied,
            Err(invalid) => {
                let (counter, status, whose) = match direction {
                    Direction::Request => (metrics.invalid_json, 400, "The request body"),
                    Direction::Response => (
                        metrics.response_invalid_json,
                        502,
                        "The upstream response body",
                    ),
                };
                cx.count(counter);
                cx.count(metrics.body_errors);
                let why = match invalid {
                    Invalid::Syntax => "is not valid JSON",
                    Invalid::DuplicateName => {
                        "is not valid JSON for editing: an object has two members with the same name"
                    }
                };
                return match edits.on_unsupported {
                    OnUnsupported::Pass => {
                        log::debug!("wasmgate {FILTER}: {direction:?} body {why}; passed unedited");
                        Outcome::Continue
                    }
                    OnUnsupported::Refuse => {
                        log::debug!("wasmgate {FILTER}: {direction:?} body {why}; refused");
                        Outcome::Reply(LocalReply::new(
                            status,
                            "invalid_json",
                            format!("{whose} {why}."),
                        ))
                    }
                };
            }
        };
        cx.add(metrics.operations_skipped, i64::from(outcome.skipped));
        if let Some(edited) = edited {
            let changes = self.changes(direction);
            if changes.held {
                cx.edits(direction)
                    .set("content-length", edited.len().to_string());
            }
            changes.changed = true;
            cx.replace_body(edited);
        }
        Outcome::Continue
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
    const USES: Uses = Uses::BODIES;

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
        let need = match policy.request.body.as_ref().filter(|_| !end_of_stream) {
            Some(body) => match self.body_need(cx, Direction::Request, body, &new_headers) {
                Ok(need) => need,
                Err(refused) => return Outcome::Reply(refused),
            },
            None => None,
        };
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
        let outcome = self.edit_body(cx, Direction::Request, body);
        if self.request.changed && matches!(outcome, Outcome::Continue) {
            cx.count(self.plugin.metrics.requests_transformed);
        }
        outcome
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
        let need = match response.body.as_ref().filter(|_| !end_of_stream) {
            Some(body) => match self.body_need(cx, Direction::Response, body, &new_headers) {
                Ok(need) => need,
                Err(refused) => return Outcome::Reply(refused),
            },
            None => None,
        };
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
        let outcome = self.edit_body(cx, Direction::Response, body);
        if self.response.changed && matches!(outcome, Outcome::Continue) {
            cx.count(self.plugin.metrics.responses_transformed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
