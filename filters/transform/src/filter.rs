//! The transform filter on the wasmgate frame: edit request headers, query and path, then the
//! JSON bodies of both directions within `max_body_bytes`, and the response headers.

use crate::body::{classify, BodyKind, Reads};
use crate::config::{
    self, BodyPolicy, Config, Conversion, OnUnsupported, Policy, DEFAULT_MAX_BODY_BYTES, FILTER,
};
use crate::doc::Invalid;
use crate::form::InvalidForm;
use crate::ops::{valid_header_value, Outcome as OpsOutcome};
use crate::template::RequestVars;
use crate::xml::{self, Unconvertible};
use std::rc::Rc;
use wasmgate_core::edits::Edit;
use wasmgate_core::host::{request_info, HeaderMap};
use wasmgate_core::request::declared_length;
use wasmgate_core::{Body, BodyMode, BodyNeed, ConfigError, LocalReply, Outcome, Selected};
use wasmgate_host::{select, Counter, Cx, Direction, Filter, Setup, Uses};

/// Why a body was not edited: the `reason` label of `body_errors_total` (the reply's error code
/// when the body is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    InvalidJson,
    UnsupportedMediaType,
    InvalidForm,
    InvalidXml,
}

impl BodyError {
    const ALL: [Self; 5] = [
        Self::TooLarge,
        Self::InvalidJson,
        Self::UnsupportedMediaType,
        Self::InvalidForm,
        Self::InvalidXml,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidJson => "invalid_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidForm => "invalid_form",
            Self::InvalidXml => "invalid_xml",
        }
    }
}

/// The `direction` label of a direction, and its index in [`Metrics`]' arrays.
fn direction_label(direction: Direction) -> (&'static str, usize) {
    match direction {
        Direction::Request => ("request", 0),
        Direction::Response => ("response", 1),
    }
}

/// The filter's counters (`wasmgate_transform_<what>`, README "Metrics").
#[derive(Debug, Clone, Copy)]
struct Metrics {
    /// `transformed_total` by direction.
    transformed: [Counter; 2],
    skipped: Counter,
    operations_skipped: Counter,
    status_rewritten: Counter,
    /// `body_errors_total` by direction, then by reason (in [`BodyError::ALL`] order).
    body_errors: [[Counter; 5]; 2],
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        let directions = [Direction::Request, Direction::Response].map(direction_label);
        Self {
            transformed: directions
                .map(|(d, _)| setup.counter_with("transformed_total", &[("direction", d)])),
            skipped: setup.counter("skipped_total"),
            operations_skipped: setup.counter("operations_skipped_total"),
            status_rewritten: setup.counter("status_rewritten_total"),
            body_errors: directions.map(|(d, _)| {
                BodyError::ALL.map(|e| {
                    let labels = [("reason", e.label()), ("direction", d)];
                    setup.counter_with("body_errors_total", &labels)
                })
            }),
        }
    }

    fn transformed(&self, direction: Direction) -> Counter {
        self.transformed[direction_label(direction).1]
    }

    fn body_error(&self, direction: Direction, error: BodyError) -> Counter {
        self.body_errors[direction_label(direction).1][error as usize]
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
    /// What the body is (by its headers), when it is collected.
    kind: Option<BodyKind>,
    /// The body is dropped (a response rewritten to 204 or 304).
    drain: bool,
}

/// Most request header edits written one by one; more are written as one whole map. In
/// `make bench-instructions` (transform_headers: three removes, three adds) a single write cost
/// about 3,300 instructions, and the request 74,300 over the floor against 93,300 as one
/// whole-map write with the copies it needs (which grow with the number of headers): eight
/// stays below the break-even.
pub const MAX_SINGLE_EDITS: usize = 8;

/// Longest body value copied into a header; a longer one is skipped.
pub const MAX_HEADER_VALUE: usize = 1024;

/// Why a body could not be edited or converted.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Json(Invalid),
    ToXml(Unconvertible),
    Form(InvalidForm),
    Xml(Unconvertible),
}

/// The edited body (if changed), what the edits did, and what they read.
type Edited = (Option<Vec<u8>>, OpsOutcome, Reads);

/// Edits (and converts) a body of `kind` by `policy`.
fn edit(
    policy: &BodyPolicy,
    kind: BodyKind,
    body: &[u8],
    vars: &RequestVars,
) -> Result<Edited, Failure> {
    let mut reads = Reads::default();
    match kind {
        BodyKind::Json => {
            let (mut edited, outcome) = policy
                .edits
                .apply_reading(body, vars, &mut reads)
                .map_err(Failure::Json)?;
            if let Some(Conversion::ToXml(options, _)) = &policy.convert {
                let json = edited.as_deref().unwrap_or(body);
                match xml::json_to_xml(json, options) {
                    Ok(Ok(document)) => edited = Some(document),
                    Ok(Err(why)) => return Err(Failure::ToXml(why)),
                    Err(invalid) => return Err(Failure::Json(invalid)),
                }
            }
            Ok((edited, outcome, reads))
        }
        BodyKind::Form => {
            let (edited, outcome, headers) =
                policy.form.apply(body, vars).map_err(Failure::Form)?;
            reads.headers = headers;
            Ok((edited, outcome, reads))
        }
        BodyKind::Xml => {
            let Some(Conversion::ToJson(options)) = &policy.convert else {
                return Ok((None, OpsOutcome::default(), reads));
            };
            let json = xml::xml_to_json(body, options).map_err(Failure::Xml)?;
            let (edited, outcome) = if policy.edits.is_empty() {
                (None, OpsOutcome::default())
            } else {
                policy
                    .edits
                    .apply_reading(&json, vars, &mut reads)
                    .map_err(Failure::Json)?
            };
            Ok((Some(edited.unwrap_or(json)), outcome, reads))
        }
        BodyKind::Empty | BodyKind::NotJson | BodyKind::Compressed => {
            Ok((None, OpsOutcome::default(), reads))
        }
    }
}

/// The `content-type` a converted body of `kind` gets.
fn converted_type(policy: &BodyPolicy, kind: BodyKind) -> Option<&str> {
    match (&policy.convert, kind) {
        (Some(Conversion::ToXml(_, content_type)), BodyKind::Json) => Some(content_type),
        (Some(Conversion::ToJson(_)), BodyKind::Xml) => Some("application/json"),
        _ => None,
    }
}

/// One stream: its policy, the request as it arrived (for templates), what changed.
pub struct Transform {
    plugin: Rc<Plugin>,
    /// `None`: the filter does nothing for this stream (disabled by a rule).
    policy: Option<Policy>,
    vars: RequestVars,
    request: Changes,
    response: Changes,
    /// The upstream's status (selects `by_status` edits).
    status: u16,
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
        &mut self,
        cx: &mut Cx<'_>,
        direction: Direction,
        body: &BodyPolicy,
        headers: &[(String, String)],
    ) -> Result<Option<BodyNeed>, LocalReply> {
        let kind = classify(headers);
        if kind == BodyKind::Empty {
            return Ok(None);
        }
        if !body.accepts(kind) {
            return self.unsupported(cx, direction, body, kind).map(|()| None);
        }
        self.changes(direction).kind = Some(kind);
        Ok(Some(BodyNeed {
            limit: body.max_body_bytes,
            mode: self.mode(),
            declared: declared_length(headers),
        }))
    }

    fn mode(&self) -> BodyMode {
        if self.plugin.config.hold_headers {
            // Envoy lets the plugin stop on headers: they wait for the edited body, whose
            // length then replaces Content-Length.
            BodyMode::HoldHeaders
        } else {
            BodyMode::Buffer
        }
    }

    /// A body of a type the policy does not edit, or compressed: counted, then passed or
    /// refused.
    fn unsupported(
        &self,
        cx: &mut Cx<'_>,
        direction: Direction,
        body: &BodyPolicy,
        kind: BodyKind,
    ) -> Result<(), LocalReply> {
        let metrics = self.plugin.metrics;
        let what = if kind == BodyKind::Compressed {
            "compressed"
        } else {
            "not of a type the edits apply to"
        };
        let (status, whose) = match direction {
            Direction::Request => (415, "The request body"),
            Direction::Response => (502, "The upstream response body"),
        };
        cx.count(metrics.body_error(direction, BodyError::UnsupportedMediaType));
        match body.on_unsupported {
            OnUnsupported::Pass => {
                log::debug!("wasmgate {FILTER}: {direction:?} body {what}: passed unedited");
                Ok(())
            }
            OnUnsupported::Refuse => {
                log::debug!("wasmgate {FILTER}: {direction:?} body {what}: refused");
                let verb = match direction {
                    Direction::Request => "must be",
                    Direction::Response => "is not",
                };
                Err(LocalReply::new(
                    status,
                    "unsupported_media_type",
                    format!("{whose} {verb} {}, not compressed.", body.media),
                ))
            }
        }
    }

    /// A body that could not be edited: counted, then passed (`Continue`) or refused.
    fn failed(
        &self,
        cx: &mut Cx<'_>,
        direction: Direction,
        on_unsupported: OnUnsupported,
        failure: Failure,
    ) -> Outcome {
        let metrics = self.plugin.metrics;
        let request = direction == Direction::Request;
        let (error, why): (_, std::borrow::Cow<'_, str>) = match failure {
            Failure::Json(Invalid::Syntax) => (BodyError::InvalidJson, "is not valid JSON".into()),
            Failure::Json(Invalid::DuplicateName) => (
                BodyError::InvalidJson,
                "is not valid JSON for editing: an object has two members with the same name"
                    .into(),
            ),
            Failure::ToXml(why) => (
                BodyError::InvalidJson,
                format!("cannot be converted to XML: {}", why.0).into(),
            ),
            Failure::Form(InvalidForm::NotUtf8) => (
                BodyError::InvalidForm,
                "is not a valid form: not UTF-8".into(),
            ),
            Failure::Form(InvalidForm::Repeated) => (
                BodyError::InvalidForm,
                "is not a valid form for editing: a field copied into a header appears more than \
                 once"
                    .into(),
            ),
            Failure::Xml(why) => (
                BodyError::InvalidXml,
                format!("is not XML that can be converted: {}", why.0).into(),
            ),
        };
        let code = error.label();
        cx.count(metrics.body_error(direction, error));
        match on_unsupported {
            OnUnsupported::Pass => {
                log::debug!("wasmgate {FILTER}: {direction:?} body {why}; passed unedited");
                Outcome::Continue
            }
            OnUnsupported::Refuse => {
                log::debug!("wasmgate {FILTER}: {direction:?} body {why}; refused");
                let (status, whose) = if request {
                    (400, "The request body")
                } else {
                    (502, "The upstream response body")
                };
                Outcome::Reply(LocalReply::new(status, code, format!("{whose} {why}.")))
            }
        }
    }

    /// Applies the body edits: the new body (if changed) with its length header when held, the
    /// headers copied from it, its new content-type when converted. A body that cannot be
    /// edited is counted, then passed (`Continue`) or refused.
    fn edit_body(&mut self, cx: &mut Cx<'_>, direction: Direction, body: &[u8]) -> Outcome {
        let changes = self.changes(direction);
        if changes.drain {
            if !body.is_empty() {
                cx.replace_body(Vec::new());
            }
            return Outcome::Continue;
        }
        let kind = changes.kind;
        let Some(policy) = self.policy.clone() else {
            return Outcome::Continue;
        };
        let body_policy = match direction {
            Direction::Request => policy.request.body.as_ref(),
            Direction::Response => policy.response.for_status(self.status).1,
        };
        // An empty body has nothing to edit (as when it announced `content-length: 0`).
        let (Some(body_policy), Some(kind)) = (body_policy.filter(|_| !body.is_empty()), kind)
        else {
            return Outcome::Continue;
        };
        let metrics = self.plugin.metrics;
        let (edited, mut outcome, reads) = match edit(body_policy, kind, body, &self.vars) {
            Ok(edited) => edited,
            Err(failure) => return self.failed(cx, direction, body_policy.on_unsupported, failure),
        };
        if let Some(status) = reads.status.filter(|_| direction == Direction::Response) {
            // The response headers wait for the body (the configuration needs hold_headers).
            cx.response.set(":status", status.to_string());
            cx.count(metrics.status_rewritten);
            self.response.changed = true;
        }
        for (name, value) in reads.headers {
            if value.is_empty() || value.len() > MAX_HEADER_VALUE || !valid_header_value(&value) {
                outcome.skipped += 1;
                continue;
            }
            cx.request.set(name, value);
            self.request.changed = true;
        }
        // Values absent, not scalars, or not usable in a header count as skipped, as templates
        // that resolve to nothing.
        cx.add(metrics.operations_skipped, i64::from(outcome.skipped));
        let held = self.changes(direction).held;
        if let Some(edited) = edited {
            if held {
                cx.edits(direction)
                    .set("content-length", edited.len().to_string());
            }
            if self.mode() == BodyMode::HoldHeaders {
                if let Some(content_type) = converted_type(body_policy, kind) {
                    cx.edits(direction).set("content-type", content_type);
                }
            }
            self.changes(direction).changed = true;
            cx.replace_body(edited);
        }
        Outcome::Continue
    }

    /// Queues the request's header edits on `cx.request` as at most [`MAX_SINGLE_EDITS`] single
    /// edits, when the policy edits only regular request headers (no body, query, path, method
    /// or authority): a few single writes cost less than writing the whole map (`make bench`).
    /// Skipped operations are counted here. `None` (nothing queued): write the whole map
    /// instead; `Some(changed)` otherwise.
    fn single_edits(
        &mut self,
        cx: &mut Cx<'_>,
        policy: &Policy,
        headers: &[(String, String)],
    ) -> Option<bool> {
        let request = &policy.request;
        if request.body.is_some() || !request.ops.headers_only() {
            return None;
        }
        let edits = &mut cx.request.edits;
        let start = edits.len();
        let outcome = request.ops.headers.header_edits(headers, &self.vars, edits);
        if edits.len() - start > MAX_SINGLE_EDITS {
            edits.truncate(start);
            return None;
        }
        cx.add(
            self.plugin.metrics.operations_skipped,
            i64::from(outcome.skipped),
        );
        // No operation may touch `content-length` (config::RESERVED_HEADERS).
        self.request.held = has_content_length(headers);
        Some(outcome.changed)
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
            status: 0,
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
        if let Some(changed) = self.single_edits(cx, &policy, &headers) {
            self.policy = Some(policy);
            if changed {
                self.request.changed = true;
                cx.count(plugin.metrics.transformed(Direction::Request));
            }
            return Outcome::Continue;
        }
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
        let converted = self
            .request
            .kind
            .zip(policy.request.body.as_ref())
            .and_then(|(kind, body)| converted_type(body, kind))
            .map(str::to_string);
        self.policy = Some(policy);
        match need {
            Some(need) => {
                if need.mode == BodyMode::Buffer {
                    // The headers go on now (Envoy forwards them before the body), so the length
                    // of the edited body cannot be announced: the body is sent chunked instead.
                    self.request.held = false;
                    cx.request.remove("content-length");
                    if let Some(content_type) = converted {
                        cx.request.set("content-type", content_type);
                    }
                }
                Outcome::NeedBody(need)
            }
            None => {
                if self.request.changed {
                    cx.count(plugin.metrics.transformed(Direction::Request));
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
            cx.count(self.plugin.metrics.transformed(Direction::Request));
        }
        outcome
    }

    fn on_body_too_large(&mut self, cx: &mut Cx<'_>, direction: Direction) {
        cx.count(
            self.plugin
                .metrics
                .body_error(direction, BodyError::TooLarge),
        );
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, end_of_stream: bool) -> Outcome {
        let Some(policy) = self.policy.clone() else {
            return Outcome::Continue;
        };
        let response = &policy.response;
        if response.is_empty() {
            return Outcome::Continue;
        }
        let metrics = self.plugin.metrics;
        let headers = cx.host().headers(HeaderMap::Response);
        let (mut new_headers, mut regular): (Vec<_>, Vec<_>) = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .partition(|(n, _)| n.starts_with(':'));
        self.status = new_headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_default();
        let (ops, body) = response.for_status(self.status);
        let mut outcome = ops.apply_headers(&mut regular, &self.vars);
        cx.add(metrics.operations_skipped, i64::from(outcome.skipped));
        if let Some(status) = response.new_status(self.status) {
            if let Some((_, value)) = new_headers.iter_mut().find(|(n, _)| n == ":status") {
                *value = status.to_string();
                outcome.changed = true;
                cx.count(metrics.status_rewritten);
            }
            if matches!(status, 204 | 304) {
                // These answers have no body: the upstream's is dropped.
                self.response.drain = true;
                regular.retain(|(n, _)| n != "content-length");
            }
        }
        new_headers.extend(regular);
        let need = if self.response.drain {
            (!end_of_stream).then(|| BodyNeed {
                limit: body.map_or(DEFAULT_MAX_BODY_BYTES, |b| b.max_body_bytes),
                mode: self.mode(),
                declared: None,
            })
        } else {
            match body.filter(|_| !end_of_stream) {
                Some(body) => match self.body_need(cx, Direction::Response, body, &new_headers) {
                    Ok(need) => need,
                    Err(refused) => return Outcome::Reply(refused),
                },
                None => None,
            }
        };
        self.response.held = has_content_length(&new_headers);
        let converted = self
            .response
            .kind
            .zip(body)
            .and_then(|(kind, body)| converted_type(body, kind))
            .map(str::to_string);
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
                    if let Some(content_type) = converted {
                        cx.response.set("content-type", content_type);
                    }
                }
                Outcome::NeedBody(need)
            }
            None => {
                if self.response.changed {
                    cx.count(metrics.transformed(Direction::Response));
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
            cx.count(self.plugin.metrics.transformed(Direction::Response));
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
