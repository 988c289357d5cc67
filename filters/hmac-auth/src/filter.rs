//! The hmac-auth filter on the wasmgate frame: check the signature headers, buffer the body
//! within `max_body_bytes`, verify, claim the replay id, settle it when the upstream answers.
//! With `jwks`, the plugin's timer fetches key sets, and a request whose signature names a key
//! not fetched yet waits (bounded) for the first fetch or for one rate-limited refetch.

use crate::config::{self, Config, FailureMode, Mode, Policy, FILTER};
use crate::global::{self, Seen};
use crate::jwks::{Keys, RemoteKeys, IDLE_SYNC_MS};
use crate::pubkey::PublicKey;
use crate::replay::{Claim, Fingerprint, Table};
use crate::verify::{self, Pending, Reject, Request};
use crate::{handshake, httpsig, sign};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::{request_info, HeaderMap};
use wasmgate_core::outcome::parse_status;
use wasmgate_core::request::declared_length;
use wasmgate_core::{
    Answer, Body, BodyMode, BodyNeed, Callout, ConfigError, LocalReply, Outcome, Response, Selected,
};
use wasmgate_host::{
    select, Counter, CounterSet, Cx, Direction, Filter, Gauge, RootCx, Setup, Uses,
};

/// The reasons of `requests_total{outcome="rejected"}`: every error code the filter answers.
pub const REJECT_CODES: [&str; 8] = [
    "missing_signature",
    "invalid_signature",
    "wrong_credential_scope",
    "stale_timestamp",
    "malformed_signature",
    "body_too_large",
    "replayed",
    "replay_unavailable",
];

/// Tick of plugins with `jwks`: starts fetches and wakes requests waiting for keys.
const TICK: Duration = Duration::from_millis(100);

/// The `key_id` label of requests verified with a key of a JWKS (key ids of fetched key sets
/// are not configured, so they never become label values).
pub fn jwks_key_label(authority: &str) -> String {
    format!("jwks:{authority}")
}

/// The filter's metrics.
struct Metrics {
    verified: Counter,
    skipped: Counter,
    /// `requests_total{outcome="rejected", reason}`, in the order of [`REJECT_CODES`].
    rejected: Vec<(&'static str, Counter)>,
    replays: Counter,
    duplicates: Counter,
    handshakes: Counter,
    signed: Counter,
    replay_unavailable: Counter,
    /// `key_matched_total{key_id}` by configured secret or public key id.
    matched: CounterSet,
    /// `key_matched_total{key_id="jwks:<authority>"}` by key source.
    jwks_matched: Vec<Counter>,
    fetch_ok: Counter,
    fetch_failed: Counter,
    /// Seconds since the oldest key set in use was fetched.
    jwks_age: Gauge,
}

impl Metrics {
    fn define(setup: &Setup<'_>, config: &Config) -> Self {
        let requests =
            |outcome: &str| setup.counter_with("requests_total", &[("outcome", outcome)]);
        let with_jwks = !config.jwks.is_empty();
        let fetches = |outcome: &str| {
            if with_jwks {
                setup.counter_with("jwks_fetches_total", &[("outcome", outcome)])
            } else {
                Counter::default()
            }
        };
        Self {
            verified: requests("verified"),
            skipped: requests("skipped"),
            rejected: REJECT_CODES
                .iter()
                .map(|code| {
                    let labels = [("outcome", "rejected"), ("reason", *code)];
                    (*code, setup.counter_with("requests_total", &labels))
                })
                .collect(),
            replays: setup.counter("replays_total"),
            duplicates: setup.counter("duplicates_total"),
            handshakes: setup.counter("handshakes_total"),
            signed: setup.counter("signed_total"),
            replay_unavailable: setup.counter("replay_unavailable_total"),
            matched: CounterSet::define(setup, "key_matched_total", "key_id", config.secret_ids()),
            jwks_matched: config
                .jwks
                .iter()
                .map(|s| {
                    let label = jwks_key_label(&s.authority);
                    setup.counter_with("key_matched_total", &[("key_id", &label)])
                })
                .collect(),
            fetch_ok: fetches("success"),
            fetch_failed: fetches("failure"),
            jwks_age: if with_jwks {
                setup.gauge("jwks_age_seconds")
            } else {
                Gauge::default()
            },
        }
    }

    fn rejected(&self, code: &str) -> Counter {
        self.rejected
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(Counter::default(), |(_, counter)| *counter)
    }
}

/// One configuration: policies, counters, the replay table and the fetched key sets.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    table: Option<Table>,
    remote: RemoteKeys,
}

/// A request whose signature names a key not fetched yet, waiting for a fetch.
struct Deferred {
    request: Request,
    /// Waits until then at most (Unix ms).
    deadline_ms: u64,
    /// Its key set's generation and completed fetches when it started waiting.
    seen: (u64, u64),
    /// The complete body, once it arrived.
    body: Option<Vec<u8>>,
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
    /// The fetched keys `request` was prepared with.
    fetched: Rc<[PublicKey]>,
    /// Waiting for keys to be fetched.
    deferred: Option<Deferred>,
}

impl HmacAuth {
    fn reject(&mut self, cx: &Cx<'_>, reject: &Reject) -> Outcome {
        self.request = None;
        let metrics = &self.plugin.metrics;
        if let Reject::Replayed = reject {
            cx.count(metrics.replays);
        }
        cx.count(metrics.rejected(reject.code()));
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
        let fetched = Rc::clone(&self.fetched);
        let verified = match verify::verify_with(policy, &fetched, &pending, &request, body) {
            Ok(verified) => verified,
            Err(reject) => return self.reject(cx, &reject),
        };
        let key_id = match policy.key_id(verified.key_index) {
            Some(id) => {
                cx.count(plugin.metrics.matched.get(id));
                Some(id)
            }
            None => {
                let own = policy.keys.len() + policy.public_keys.len();
                let key = verified
                    .key_index
                    .checked_sub(own)
                    .and_then(|j| fetched.get(j));
                if let Some(source) = policy.jwks {
                    let counter = plugin.metrics.jwks_matched.get(source).copied();
                    cx.count(counter.unwrap_or_default());
                }
                key.map(|k| k.id.as_str())
            }
        };
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
        cx.count(self.plugin.metrics.rejected("replay_unavailable"));
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

    /// The keys fetched for `policy` (none without `jwks`, or while none were fetched).
    fn fetched_keys(&self, cx: &Cx<'_>, policy: &Policy) -> (Rc<[PublicKey]>, Keys) {
        let Some(source) = policy.jwks else {
            return (Rc::from(Vec::new()), Keys::Unavailable);
        };
        let keys = self
            .plugin
            .remote
            .keys(cx.host(), &self.plugin.config.jwks, source);
        match &keys {
            Keys::Ready(set) => (Rc::clone(set), keys),
            _ => (Rc::from(Vec::new()), keys),
        }
    }

    /// Until when a request refused with `reject` should rather wait for keys: none of its
    /// signatures names a known key, the policy fetches keys, and either no fetch has completed
    /// yet or a refetch runs or was just granted (at most one every
    /// [`crate::jwks::REFETCH_INTERVAL_MS`]); `None`: refuse now.
    fn wait_for_keys(
        &self,
        cx: &Cx<'_>,
        policy: &Policy,
        keys: &Keys,
        reject: &Reject,
    ) -> Option<u64> {
        let source = policy.jwks?;
        let config = &self.plugin.config;
        let settings = config.jwks.get(source)?;
        if !httpsig::is_unknown_key(reject) {
            return None;
        }
        let now = cx.host().now_ms();
        let wait = match keys {
            Keys::Pending => true,
            _ => self
                .plugin
                .remote
                .refetch_for_unknown_kid(cx.host(), settings, now),
        };
        wait.then(|| {
            now.saturating_add(settings.timeout_ms)
                .saturating_add(IDLE_SYNC_MS)
        })
    }

    /// Prepares a request that waited for keys again, now with the keys there are, and
    /// verifies it with its body.
    fn resume_deferred(&mut self, cx: &mut Cx<'_>, deferred: Deferred) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let Some(policy) = plugin.config.policies.get(self.rule) else {
            return Outcome::Continue;
        };
        let (fetched, _) = self.fetched_keys(cx, policy);
        let now = cx.host().unix_seconds();
        match verify::prepare_with(policy, &fetched, &deferred.request, now) {
            Ok(pending) => {
                self.fetched = fetched;
                self.request = Some((deferred.request, pending));
                self.finish(cx, deferred.body.as_deref().unwrap_or_default())
            }
            Err(reject) => self.reject(cx, &reject),
        }
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
        waits: true,
    };

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let mut config = config::parse(json)?;
        // Fetched keys outlive configuration changes: an unchanged source is not refetched.
        let keys_namespace = setup.plugin_namespace();
        for source in &mut config.jwks {
            source.shared_key = keys_namespace.key(&source.shared_key);
            crate::jwks::ensure_shared(setup.host(), &source.shared_key);
        }
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
            remote: RemoteKeys::default(),
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
            fetched: Rc::from(Vec::new()),
            deferred: None,
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
        let (fetched, keys) = self.fetched_keys(cx, policy);
        match verify::prepare_with(policy, &fetched, &request, cx.host().unix_seconds()) {
            Ok(pending) => {
                self.fetched = fetched;
                self.request = Some((request, pending));
            }
            Err(reject) => match self.wait_for_keys(cx, policy, &keys, &reject) {
                // The body is read first; the request then waits for the keys.
                Some(deadline_ms) => {
                    log::debug!("wasmgate {FILTER}: waiting for the JWKS");
                    self.deferred = Some(Deferred {
                        request,
                        deadline_ms,
                        seen: plugin.remote.seen(policy.jwks.unwrap_or_default()),
                        body: None,
                    });
                }
                None => return self.reject(cx, &reject),
            },
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
                if let Some(deferred) = &mut self.deferred {
                    deferred.body = Some(bytes.to_vec());
                    return Outcome::Wait {
                        until_ms: deferred.deadline_ms,
                    };
                }
                self.finish(cx, bytes)
            }
            Body::TooLarge => Outcome::Continue,
        }
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        let Some(deferred) = self.deferred.take() else {
            return Outcome::Continue;
        };
        let source = self
            .plugin
            .config
            .policies
            .get(self.rule)
            .and_then(|p| p.jwks)
            .unwrap_or_default();
        let unchanged = deferred.seen == self.plugin.remote.seen(source);
        if unchanged && cx.host().now_ms() < deferred.deadline_ms {
            let until_ms = deferred.deadline_ms;
            self.deferred = Some(deferred);
            return Outcome::Wait { until_ms };
        }
        self.resume_deferred(cx, deferred)
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
        self.deferred = None;
        cx.count(self.plugin.metrics.rejected("body_too_large"));
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        if self.claimed.is_some() {
            let status = parse_status(cx.host().header(HeaderMap::Response, ":status").as_deref());
            self.settle(cx, status.is_some_and(|s| (200..300).contains(&s)));
        }
        Outcome::Continue
    }

    fn tick_period(plugin: &Plugin) -> Option<Duration> {
        (!plugin.config.jwks.is_empty()).then_some(TICK)
    }

    fn on_tick(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>) {
        let sources = &plugin.config.jwks;
        let now = cx.host().now_ms();
        if plugin.remote.idle(sources, cx.waiting(), now) {
            return;
        }
        plugin.remote.synced(now);
        plugin.remote.sync_all(cx.host(), sources);
        if let Some(age) = plugin.remote.oldest_age_seconds(now) {
            cx.record(plugin.metrics.jwks_age, age);
        }
        for index in plugin.remote.claim_fetches(cx.host(), sources, now) {
            if let Some(source) = sources.get(index) {
                let key = u64::try_from(index).unwrap_or(u64::MAX);
                cx.call(key, crate::jwks::fetch_request(source), source.max_bytes);
            }
        }
        cx.wake_waiting();
    }

    fn on_plugin_answer(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        let Some((index, source)) = usize::try_from(key)
            .ok()
            .and_then(|i| Some((i, plugin.config.jwks.get(i)?)))
        else {
            return;
        };
        let result = crate::jwks::accept(answer, source);
        match &result {
            Ok(_) => {
                cx.add(plugin.metrics.fetch_ok, 1);
                log::info!("wasmgate {FILTER}: fetched JWKS {}", source.uri);
            }
            Err(reason) => {
                cx.add(plugin.metrics.fetch_failed, 1);
                log::warn!(
                    "wasmgate {FILTER}: JWKS fetch {} failed: {reason}; the last good keys (if \
                     any) stay in use",
                    source.uri
                );
            }
        }
        plugin
            .remote
            .finish_fetch(cx.host(), index, source, &result);
        cx.wake_waiting();
    }

    fn on_done(&mut self, cx: &mut Cx<'_>) {
        // A stream that ended without a response (reset, timeout) releases its id.
        self.settle(cx, false);
    }
}

#[cfg(test)]
mod tests;
