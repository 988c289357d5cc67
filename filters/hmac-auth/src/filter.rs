//! The hmac-auth filter on the wasmgate frame: check the signature headers, buffer the body
//! within `max_body_bytes`, verify, claim the replay id, settle it when the upstream answers.

use crate::config::{self, Config, FailureMode, Mode, FILTER};
use crate::global::{self, Seen};
use crate::replay::{Claim, Fingerprint, Table};
use crate::verify::{self, Pending, Reject, Request};
use crate::{handshake, sign};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::{request_info, HeaderMap};
use wasmgate_core::outcome::parse_status;
use wasmgate_core::request::declared_length;
use wasmgate_core::{
    Answer, Body, BodyMode, BodyNeed, Callout, ConfigError, LocalReply, Outcome, Response, Selected,
};
use wasmgate_host::{select, Counter, CounterSet, Cx, Direction, Filter, Setup, Uses};

/// The reject codes that have a `rejected_<code>` counter.
const REJECT_CODES: [&str; 6] = [
    "missing_signature",
    "invalid_signature",
    "wrong_credential_scope",
    "stale_timestamp",
    "malformed_signature",
    "body_too_large",
];

/// The metric name suffix for a secret id (`.` and `-` become `_`).
pub fn secret_metric(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("matched_{clean}")
}

/// The filter's counters.
struct Metrics {
    verified: Counter,
    skipped: Counter,
    replays: Counter,
    duplicates: Counter,
    handshakes: Counter,
    signed: Counter,
    replay_unavailable: Counter,
    rejected: CounterSet,
    matched: CounterSet,
}

impl Metrics {
    fn define(setup: &Setup<'_>, config: &Config) -> Self {
        Self {
            verified: setup.counter("verified"),
            skipped: setup.counter("skipped"),
            replays: setup.counter("replays"),
            duplicates: setup.counter("duplicates"),
            handshakes: setup.counter("handshakes"),
            signed: setup.counter("signed"),
            replay_unavailable: setup.counter("replay_unavailable"),
            rejected: CounterSet::define(
                setup,
                REJECT_CODES.map(|code| (code, format!("rejected_{code}"))),
            ),
            matched: CounterSet::define(
                setup,
                config.secret_ids().into_iter().map(|id| {
                    let what = secret_metric(&id);
                    (id, what)
                }),
            ),
        }
    }
}

/// One configuration: policies, counters and the replay table.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    table: Option<Table>,
}

/// One stream: the selected policy, the request waiting for its body, the claimed replay id.
pub struct HmacAuth {
    plugin: Rc<Plugin>,
    /// The matched rule; `None` for the defaults.
    rule: Option<usize>,
    request: Option<(Request, Pending)>,
    /// `mode: "sign"`: the request waiting for its body to be signed.
    signing: Option<Request>,
    /// Replay id claimed as in flight, settled when the upstream answers.
    claimed: Option<Fingerprint>,
    /// Waiting for the rate limit service (`replay.global`): the key id that verified.
    asking: Option<Option<String>>,
}

impl HmacAuth {
    fn reject(&mut self, cx: &Cx<'_>, reject: &Reject) -> Outcome {
        self.request = None;
        let metrics = &self.plugin.metrics;
        if let Reject::Replayed = reject {
            cx.count(metrics.replays);
        } else {
            cx.count(metrics.rejected.get(reject.code()));
        }
        log::debug!("wasmgate {FILTER}: rejected: {}", reject.code());
        Outcome::Reply(LocalReply::new(
            reject.status(),
            reject.code(),
            reject.message(),
        ))
    }

    /// Verifies the complete body, answers a handshake, then claims the replay id.
    fn finish(&mut self, cx: &mut Cx<'_>, body: &[u8]) -> Outcome {
        let Some((request, pending)) = self.request.take() else {
            return Outcome::Continue;
        };
        let plugin = Rc::clone(&self.plugin);
        let Some(policy) = plugin.config.policies.get(self.rule) else {
            return Outcome::Continue;
        };
        let verified = match verify::verify(policy, &pending, &request, body) {
            Ok(verified) => verified,
            Err(reject) => return self.reject(cx, &reject),
        };
        let key_id = policy.key_id(verified.key_index);
        if let Some(id) = key_id {
            cx.count(plugin.metrics.matched.get(id));
        }
        if policy.handshake {
            let secret = policy
                .keys
                .get(verified.key_index)
                .map(|k| k.bytes.as_slice());
            let answer = match handshake::Kind::of(&policy.scheme) {
                Some(handshake::Kind::Twitch) => {
                    handshake::twitch(request.header("twitch-eventsub-message-type"), body)
                }
                Some(kind) => handshake::answer(kind, body, secret),
                None => None,
            };
            if let Some(response) = answer {
                cx.count(plugin.metrics.handshakes);
                log::debug!("wasmgate {FILTER}: answered a verified handshake");
                return Outcome::Respond(response);
            }
        }
        if let Some(table) = &plugin.table {
            let fp = Table::fingerprint(policy.index, policy.scheme.name(), &verified.replay_id);
            let now = cx.host().unix_seconds();
            match table.claim(cx.host(), &fp, now) {
                Ok(Claim::Claimed) => {
                    self.claimed = Some(fp);
                    if let Some(settings) = &plugin.config.global {
                        // First sighting here: ask whether another Envoy saw it.
                        self.asking = Some(key_id.map(str::to_string));
                        return Outcome::Call(Callout::Grpc {
                            cluster: settings.cluster.clone(),
                            service: global::SERVICE,
                            method: global::METHOD,
                            message: global::request(&settings.domain, &fp),
                            timeout: Duration::from_millis(settings.timeout_ms),
                        });
                    }
                }
                Ok(Claim::InFlight) => return self.reject(cx, &Reject::Replayed),
                Ok(Claim::Done) => {
                    let status = plugin.config.replay.map_or(409, |r| r.duplicate_status);
                    if status == 409 {
                        return self.reject(cx, &Reject::Replayed);
                    }
                    cx.count(plugin.metrics.duplicates);
                    log::debug!("wasmgate {FILTER}: acknowledged a duplicate delivery");
                    return Outcome::Respond(duplicate(status));
                }
                Err(err) => {
                    log::warn!("wasmgate {FILTER}: replay table unavailable: {err:?}");
                    return self.unavailable(cx);
                }
            }
        }
        self.forward(cx, key_id)
    }

    /// 503 `replay_unavailable`: the replay check could not be made (fails closed).
    fn unavailable(&mut self, cx: &Cx<'_>) -> Outcome {
        cx.count(self.plugin.metrics.replay_unavailable);
        Outcome::Reply(LocalReply::new(
            503,
            "replay_unavailable",
            "The replay check is unavailable; retry later.",
        ))
    }

    /// A verified, first-seen delivery goes on to the upstream.
    fn forward(&mut self, cx: &mut Cx<'_>, key_id: Option<&str>) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        cx.count(plugin.metrics.verified);
        if let (Some(header), Some(id)) = (&plugin.config.key_id_header, key_id) {
            cx.request.set(header.as_str(), id);
        }
        log::debug!(
            "wasmgate {FILTER}: verified with secret {}",
            key_id.unwrap_or("?")
        );
        Outcome::Continue
    }

    /// Records the upstream's answer for the claimed replay id.
    fn settle(&mut self, cx: &Cx<'_>, success: bool) {
        if let (Some(fp), Some(table)) = (self.claimed.take(), self.plugin.table.as_ref()) {
            let now = cx.host().unix_seconds();
            if let Err(err) = table.settle(cx.host(), &fp, now, success) {
                log::warn!("wasmgate {FILTER}: could not settle a replay id: {err:?}");
            }
        }
    }
}

/// The answer to a copy of a delivery the upstream already accepted: acknowledged, not forwarded.
fn duplicate(status: u16) -> Response {
    let body = serde_json::json!({
        "duplicate": true,
        "message": "This message was already delivered; it was not forwarded again.",
    });
    Response {
        status: u32::from(status),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-wasmgate-duplicate".into(), "true".into()),
        ],
        body: body.to_string().into_bytes(),
    }
}

impl Filter for HmacAuth {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses {
        bodies: true,
        callouts: true,
        waits: false,
    };

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let config = config::parse(json)?;
        // Replay ids of different configurations never meet; one configuration on every worker
        // shares one table.
        let namespace = setup.configuration_namespace();
        let table = config
            .replay
            .map(|r| Table::new(namespace.prefix(), r.ttl_secs, r.max_entries));
        Ok(Plugin {
            metrics: Metrics::define(setup, &config),
            config,
            table,
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            rule: None,
            request: None,
            signing: None,
            claimed: None,
            asking: None,
        }
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        // The key-id header is only ever written by this filter: a client's value is removed on
        // every request, a route where verification is off included.
        if let Some(header) = &plugin.config.key_id_header {
            cx.request.remove(header.as_str());
        }
        let mut info = request_info(cx.host(), plugin.config.policies.reads_route());
        let selected = match select(cx, &plugin.config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        let policy = match selected {
            Selected::Disabled => {
                cx.count(plugin.metrics.skipped);
                return Outcome::Continue;
            }
            Selected::Default(policy) => policy,
            Selected::Rule { index, policy } => {
                self.rule = Some(index);
                policy
            }
        };
        let declared = declared_length(&info.headers);
        let request = Request::from_headers(info.headers);
        if plugin.config.mode == Mode::Sign {
            // Whatever the client sent in the signature headers is replaced once the body is
            // read (the headers wait for it: `hold_headers` is required).
            for name in sign::headers_set(&policy.scheme) {
                if *name != "webhook-id" {
                    cx.request.remove(*name);
                }
            }
            self.signing = Some(request);
            return Outcome::NeedBody(BodyNeed {
                limit: policy.max_body_bytes,
                mode: BodyMode::HoldHeaders,
                declared,
            });
        }
        match verify::prepare(policy, &request, cx.host().unix_seconds()) {
            Ok(pending) => self.request = Some((request, pending)),
            Err(reject) => return self.reject(cx, &reject),
        }
        if policy.hide_credentials {
            for name in policy.scheme.signature_headers() {
                cx.request.remove(name);
            }
        }
        // Envoy turns a paused header phase into "stop all iteration", which also withholds the
        // body from this filter unless the plugin has `allow_on_headers_stop_iteration`; so by
        // default headers go on and the body is held, and a native `envoy.filters.http.buffer`
        // placed right after this filter keeps the headers from the upstream until the body is
        // verified (see README). With `hold_headers` (that Envoy setting on) the headers wait
        // here for the verified body and may get the key-id header.
        let mode = if plugin.config.hold_headers {
            BodyMode::HoldHeaders
        } else {
            BodyMode::Buffer
        };
        Outcome::NeedBody(BodyNeed {
            limit: policy.max_body_bytes,
            mode,
            declared,
        })
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        match body {
            Body::Complete(bytes) => {
                if let Some(request) = self.signing.take() {
                    let plugin = Rc::clone(&self.plugin);
                    if let Some(policy) = plugin.config.policies.get(self.rule) {
                        let now = cx.host().unix_seconds();
                        for (name, value) in sign::sign(policy, &request, bytes, now) {
                            cx.request.set(name, value);
                        }
                        cx.count(plugin.metrics.signed);
                    }
                    return Outcome::Continue;
                }
                self.finish(cx, bytes)
            }
            Body::TooLarge => Outcome::Continue,
        }
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        let Some(key_id) = self.asking.take() else {
            return Outcome::Continue;
        };
        let plugin = Rc::clone(&self.plugin);
        let seen = match &answer {
            Answer::Grpc { status, message } => global::seen(*status, message),
            _ => Seen::Unknown,
        };
        match seen {
            Seen::First => self.forward(cx, key_id.as_deref()),
            Seen::Again => {
                // Seen at another Envoy (or before a restart): its outcome there is unknown, so
                // the copy is refused, never acknowledged; the id here is released.
                self.settle(cx, false);
                self.reject(cx, &Reject::Replayed)
            }
            Seen::Unknown => {
                log::warn!("wasmgate {FILTER}: the rate limit service gave no answer: {answer:?}");
                match plugin.config.global.as_ref().map(|g| g.failure_mode) {
                    Some(FailureMode::Allow) => self.forward(cx, key_id.as_deref()),
                    _ => {
                        self.settle(cx, false);
                        self.unavailable(cx)
                    }
                }
            }
        }
    }

    fn on_body_too_large(&mut self, cx: &mut Cx<'_>, _: Direction) {
        self.request = None;
        cx.count(self.plugin.metrics.rejected.get("body_too_large"));
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        if self.claimed.is_some() {
            let status = parse_status(cx.host().header(HeaderMap::Response, ":status").as_deref());
            self.settle(cx, status.is_some_and(|s| (200..300).contains(&s)));
        }
        Outcome::Continue
    }

    fn on_done(&mut self, cx: &mut Cx<'_>) {
        // A stream that ended without a response (reset, timeout) releases its id.
        self.settle(cx, false);
    }
}

#[cfg(test)]
mod tests;
