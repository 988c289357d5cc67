//! The jwt-auth filter on the wasmgate frame: verify the request's tokens against local or
//! remote key sets, wait (bounded) for remote keys that are still being fetched, and forward
//! the request with the configured headers or deny it.

use crate::cache::TokenCache;
use crate::config::{Config, KeySource, Provider, RemoteJwks};
use crate::decide::{self, Decision, Evaluation, Mutations, RequestView, Sources};
use crate::failure::Failure;
use crate::foreign::HostVerifier;
use crate::introspect::Lookup;
use crate::keys::{self, RemoteKeys, IDLE_SYNC_MS};
use crate::remote::{self, KID_REFETCH_INTERVAL_MS};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::fetched::SharedFetch;
use wasmgate_core::host::{request_info, Host};
use wasmgate_core::{Answer, ConfigError, HeaderEdits, LocalReply, Outcome, Selected};
use wasmgate_host::{select, Counter, Cx, Filter, Gauge, RootCx, Setup, Uses};

/// The filter's name in logs, metrics and Envoy config.
pub const FILTER: &str = "jwt-auth";
/// Tick of plugins with remote providers: wakes waiting requests and starts fetches.
const TICK: Duration = Duration::from_millis(100);

/// The filter's metrics: `requests_total` by outcome (and reason when denied), the token
/// cache's hits, host-verified signatures, and each provider's fetches or introspections.
struct Metrics {
    allowed: Counter,
    /// One per [`Failure::ALL_CODES`], in its order.
    denied: Vec<Counter>,
    cache_hits: Counter,
    host_verified: Counter,
    /// By provider index.
    providers: Vec<ProviderMetrics>,
}

/// One provider's metrics, labelled with its name: `jwks_fetches_total` and `jwks_age_seconds`
/// for a remote key set, `introspections_total` for introspection (no-ops otherwise).
#[derive(Clone, Copy, Default)]
struct ProviderMetrics {
    success: Counter,
    failure: Counter,
    /// Seconds since the provider's key set was fetched.
    jwks_age: Gauge,
}

impl Metrics {
    fn define(setup: &Setup<'_>, config: &Config) -> Self {
        let provider = |p: &Provider| {
            let name = p.name.as_str();
            let (what, jwks_age) = match p.keys {
                KeySource::Local(_) => return ProviderMetrics::default(),
                KeySource::Remote(_) => (
                    "jwks_fetches_total",
                    setup.gauge_with("jwks_age_seconds", &[("provider", name)]),
                ),
                KeySource::Introspection(_) => ("introspections_total", Gauge::default()),
            };
            let counter =
                |outcome| setup.counter_with(what, &[("outcome", outcome), ("provider", name)]);
            ProviderMetrics {
                success: counter("success"),
                failure: counter("failure"),
                jwks_age,
            }
        };
        Self {
            allowed: setup.counter_with("requests_total", &[("outcome", "allowed")]),
            denied: Failure::ALL_CODES
                .iter()
                .map(|code| {
                    setup.counter_with("requests_total", &[("outcome", "denied"), ("reason", code)])
                })
                .collect(),
            cache_hits: setup.counter("token_cache_hits_total"),
            host_verified: setup.counter("host_verified_total"),
            providers: config.providers.iter().map(provider).collect(),
        }
    }

    /// The counter of a denial's reason.
    fn denied(&self, failure: Failure) -> Counter {
        Failure::ALL_CODES
            .iter()
            .position(|code| *code == failure.code())
            .and_then(|i| self.denied.get(i))
            .copied()
            .unwrap_or_default()
    }

    /// The metrics of provider `index`.
    fn provider(&self, index: usize) -> ProviderMetrics {
        self.providers.get(index).copied().unwrap_or_default()
    }
}

/// One configuration on one worker: the providers and policies, the remote key sets, the
/// verified-token cache, and whether the host verifies signatures.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    remote: RemoteKeys,
    cache: RefCell<TokenCache>,
    /// `Some(false)` once the host proved it has no usable `verify_signature`.
    host_verify: Cell<Option<bool>>,
}

/// Introspection calls one request may make at most (one per token found, in practice).
const MAX_INTROSPECTIONS: u8 = 4;
/// How often a request waiting for another request's introspection looks at the cache.
pub const INTROSPECTION_POLL_MS: u64 = 20;

/// One stream; while it waits for remote keys, what it saw of them and until when it waits;
/// while it asks an introspection endpoint, about which token.
pub struct JwtAuth {
    plugin: Rc<Plugin>,
    seen: Vec<(u64, u64)>,
    deadline_ms: u64,
    /// The `(provider, token)` being introspected.
    asking: Option<(usize, String)>,
    /// Tokens asked about during this request whose answer is not in the cache: `true` when
    /// the answer was "inactive", `false` when asking failed. Not asked again.
    answered: Vec<(usize, String, bool)>,
    introspections: u8,
    /// Waiting for another request's introspection of the same token.
    introspect_wait: bool,
}

/// Writes an allowed request's header changes.
fn apply(edits: &mut HeaderEdits, m: Mutations) {
    for name in m.remove_headers {
        edits.remove(name);
    }
    if let Some(path) = m.path {
        edits.set(":path", path);
    }
    match m.cookie {
        Some(Some(cookie)) => edits.set("cookie", cookie),
        Some(None) => edits.remove("cookie"),
        None => {}
    }
    for (name, value) in m.set_headers {
        edits.set(name, value);
    }
}

impl JwtAuth {
    /// Asks the introspection endpoint about a token, or waits while another request asks
    /// about the same token (polling the shared cache every [`INTROSPECTION_POLL_MS`] until
    /// that question's claim expires). `None`: neither (too many questions): deny.
    fn introspect(
        &mut self,
        cx: &mut Cx<'_>,
        index: usize,
        token: String,
        pending: Option<u64>,
        now: u64,
    ) -> Option<Outcome> {
        let plugin = Rc::clone(&self.plugin);
        let Some(KeySource::Introspection(intro)) =
            plugin.config.providers.get(index).map(|p| &p.keys)
        else {
            return None;
        };
        if self.introspections >= MAX_INTROSPECTIONS {
            return None;
        }
        let waiting_until = match pending {
            Some(until) => Some(until),
            None if intro.claim(cx.host(), &token, now) => None,
            // Claimed by another request between the lookup and the claim.
            None => Some(now.saturating_add(INTROSPECTION_POLL_MS)),
        };
        if let Some(until) = waiting_until {
            self.introspect_wait = true;
            return Some(Outcome::Wait {
                until_ms: until.min(now.saturating_add(INTROSPECTION_POLL_MS)),
            });
        }
        self.introspections += 1;
        let callout = intro.request(&token);
        self.asking = Some((index, token));
        log::debug!("wasmgate {FILTER}: introspecting a token at {}", intro.uri);
        Some(Outcome::Call(callout))
    }

    /// Decides the request; a denial may rather wait for remote keys when `may_wait`.
    fn process(&mut self, cx: &mut Cx<'_>, may_wait: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let config = &plugin.config;
        let mut info = request_info(cx.host(), config.policies.reads_route());
        let selected = match select(cx, &config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        // Clients must never be able to forge the headers this filter sets, on any route (a
        // route where the filter is off included: its upstream may trust them too); only the
        // ones the client sent are removed (a host call per configured name would cost every
        // request).
        let outputs = &config.output_headers;
        for name in outputs.iter().filter(|o| info.header(o).is_some()) {
            cx.request.remove(name.clone());
        }
        let policy = match selected {
            Selected::Disabled => return Outcome::Continue,
            Selected::Default(policy) | Selected::Rule { policy, .. } => policy,
        };
        let now = cx.host().now_ms();
        if !outputs.is_empty() {
            info.headers.retain(|(n, _)| !outputs.contains(n));
        }
        let request = RequestView {
            headers: &info.headers,
            path: info.raw_path(),
            now: now / 1000,
        };
        let evaluation = self.evaluate(cx, policy, request, now);
        let metrics = &plugin.metrics;
        cx.add(metrics.cache_hits, i64::from(evaluation.cache_hits));
        match evaluation.decision {
            Decision::Allow(mutations) => {
                apply(&mut cx.request, mutations);
                cx.count(metrics.allowed);
                log::debug!("wasmgate {FILTER}: allowed {}", info.path);
                Outcome::Continue
            }
            Decision::Deny(failure) => {
                if let Some((index, token, pending)) = evaluation.introspect.first().cloned() {
                    if let Some(outcome) = self.introspect(cx, index, token, pending, now) {
                        return outcome;
                    }
                }
                if may_wait {
                    if let Some(deadline_ms) = wait_deadline(cx.host(), config, &evaluation, now) {
                        log::debug!("wasmgate {FILTER}: waiting for remote keys");
                        self.seen = plugin.remote.snapshot(config);
                        self.deadline_ms = deadline_ms;
                        return Outcome::Wait {
                            until_ms: deadline_ms,
                        };
                    }
                }
                cx.count(metrics.denied(failure));
                log::debug!(
                    "wasmgate {FILTER}: denied {} ({})",
                    info.path,
                    failure.code()
                );
                Outcome::Reply(failure.reply(&info.host))
            }
        }
    }

    /// Verifies the tokens, with the host's `verify_signature` while it proves usable;
    /// `now_ms` is the time the request was read at (one clock read per request).
    fn evaluate(
        &self,
        cx: &Cx<'_>,
        policy: &crate::config::Policy,
        request: RequestView<'_>,
        now_ms: u64,
    ) -> Evaluation {
        let host = cx.host();
        let plugin = &self.plugin;
        let config = &plugin.config;
        let keys = |i: usize| plugin.remote.keys(host, config, i);
        let answered = &self.answered;
        let introspected = |i: usize, token: &str| {
            if let Some((_, _, inactive)) = answered.iter().find(|(p, t, _)| *p == i && t == token)
            {
                return if *inactive {
                    Lookup::Inactive
                } else {
                    Lookup::Failed
                };
            }
            match config.providers.get(i).map(|p| &p.keys) {
                Some(KeySource::Introspection(intro)) => intro.lookup(host, token, now_ms),
                _ => Lookup::Failed,
            }
        };
        let use_host = config.use_host_crypto && plugin.host_verify.get() != Some(false);
        let verifier = HostVerifier::new(host, use_host);
        let evaluation = {
            let mut cache = plugin.cache.borrow_mut();
            decide::evaluate_with(
                config,
                policy,
                request,
                Sources {
                    keys: &keys,
                    introspected: &introspected,
                    cache: &mut cache,
                    verifier: &verifier,
                },
            )
        };
        if verifier.verified() > 0 {
            plugin.host_verify.set(Some(true));
        } else if verifier.failed() > 0 && plugin.host_verify.get().is_none() {
            log::info!(
                "wasmgate {FILTER}: the host has no usable verify_signature; verifying in the VM"
            );
            plugin.host_verify.set(Some(false));
        }
        cx.add(plugin.metrics.host_verified, i64::from(verifier.verified()));
        evaluation
    }
}

/// Whether a denied request should rather wait: keys still pending, or an unknown `kid` for
/// which a refetch was just asked for (at most one every 30 s) or is already running.
fn wait_deadline(
    host: &dyn Host,
    config: &Config,
    evaluation: &Evaluation,
    now: u64,
) -> Option<u64> {
    let remote_of = |i: usize| match config.providers.get(i).map(|p| &p.keys) {
        Some(KeySource::Remote(r)) => Some(r),
        _ => None,
    };
    // With discovery a fetch is two requests in a row.
    let timeout = |remote: &RemoteJwks| {
        let fetches = if remote.discovery.is_some() { 2 } else { 1 };
        u64::try_from(remote.timeout.as_millis())
            .unwrap_or(0)
            .saturating_mul(fetches)
    };
    let mut deadline: Option<u64> = None;
    let mut extend = |d: u64| deadline = Some(deadline.map_or(d, |x| x.max(d)));
    for remote in evaluation.pending.iter().filter_map(|i| remote_of(*i)) {
        extend(now.saturating_add(timeout(remote)));
    }
    for remote in evaluation.kid_miss.iter().filter_map(|i| remote_of(*i)) {
        let waiting = wasmgate_core::shared::update(host, &remote.shared_key, |bytes| {
            let mut shared = SharedFetch::decode(bytes);
            if shared.in_flight(now) || shared.refetch_requested {
                return (None, true);
            }
            if shared.request_refetch(now, KID_REFETCH_INTERVAL_MS) {
                (Some(shared.encode()), true)
            } else {
                (None, false)
            }
        })
        .unwrap_or(false);
        if waiting {
            extend(
                now.saturating_add(timeout(remote))
                    .saturating_add(IDLE_SYNC_MS),
            );
        }
    }
    deadline
}

/// Which fetch of a provider a plugin callout is: the discovery document or the key set.
#[derive(Clone, Copy)]
enum Phase {
    Discovery = 0,
    Jwks = 1,
}

/// The plugin callout key of a provider's fetch.
fn fetch_key(index: usize, phase: Phase) -> u64 {
    u64::try_from(index)
        .unwrap_or(u64::MAX / 2)
        .saturating_mul(2)
        .saturating_add(phase as u64)
}

/// The result of a discovery fetch: where the key set is.
fn discovery_result(
    answer: Answer,
    remote: &RemoteJwks,
) -> Result<crate::discovery::JwksTarget, String> {
    let Some(issuer) = remote.discovery.as_deref() else {
        return Err("not a discovery provider".into());
    };
    let expect = crate::discovery::Expect {
        issuer,
        https: remote.uri.starts_with("https://"),
        authority: &remote.authority,
        cluster: &remote.cluster,
        clusters: &remote.jwks_clusters,
        max_bytes: remote.max_bytes,
    };
    match answer {
        Answer::Http { headers, body } => {
            let status = headers
                .iter()
                .find(|(n, _)| n == ":status")
                .map(|(_, v)| v.as_str());
            let body = (!body.is_empty()).then_some(body.as_slice());
            crate::discovery::accept(status, body, &expect)
        }
        Answer::TooLarge { .. } => Err(format!("document over {} bytes", remote.max_bytes)),
        Answer::NotSent(reason) => Err(format!("not sent ({reason})")),
        Answer::Grpc { .. } => Err("not an HTTP answer".into()),
    }
}

/// The result of one JWKS fetch.
fn fetch_result(answer: Answer, remote: &RemoteJwks) -> Result<String, String> {
    match answer {
        Answer::Http { headers, body } => {
            let status = headers
                .iter()
                .find(|(n, _)| n == ":status")
                .map(|(_, v)| v.as_str());
            let body = (!body.is_empty()).then_some(body.as_slice());
            remote::accept_response(status, body, remote.max_bytes, &remote.limits)
        }
        Answer::TooLarge { .. } => Err(format!("body over {} bytes", remote.max_bytes)),
        Answer::NotSent(reason) => Err(format!("not sent ({reason})")),
        Answer::Grpc { .. } => Err("not an HTTP answer".into()),
    }
}

impl Filter for JwtAuth {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses {
        bodies: false,
        callouts: true,
        waits: true,
    };

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let mut config = Config::from_json(json)?;
        // The fetched keys outlive configuration changes: an unchanged provider is not refetched.
        let namespace = setup.plugin_namespace();
        for provider in &mut config.providers {
            if let KeySource::Remote(remote) = &mut provider.keys {
                remote.shared_key = namespace.key(&remote.shared_key);
                keys::ensure_shared(setup.host(), &remote.shared_key);
            }
        }
        Ok(Plugin {
            metrics: Metrics::define(setup, &config),
            cache: RefCell::new(TokenCache::new(config.cache_entries)),
            remote: RemoteKeys::default(),
            host_verify: Cell::new(None),
            config,
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            seen: Vec::new(),
            deadline_ms: 0,
            asking: None,
            answered: Vec::new(),
            introspections: 0,
            introspect_wait: false,
        }
    }

    fn unconfigured() -> Option<LocalReply> {
        Some(LocalReply::new(
            503,
            "not_configured",
            "The JWT filter has no valid configuration.",
        ))
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        self.process(cx, true)
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let asked = self.asking.take().and_then(|(index, token)| {
            match plugin.config.providers.get(index).map(|p| &p.keys) {
                Some(KeySource::Introspection(intro)) => Some((index, token, intro)),
                _ => None,
            }
        });
        let Some((index, token, intro)) = asked else {
            // An answer this stream did not ask for: never a reason to let it through.
            let host = request_info(cx.host(), false).host;
            return Outcome::Reply(Failure::IntrospectionFailed.reply(&host));
        };
        let result = match answer {
            Answer::Http { headers, body } => {
                let status = headers
                    .iter()
                    .find(|(n, _)| n == ":status")
                    .map(|(_, v)| v.as_str());
                crate::introspect::parse_answer(status, &body, intro.max_bytes)
            }
            Answer::TooLarge { .. } => Err(format!("answer over {} bytes", intro.max_bytes)),
            Answer::NotSent(reason) => Err(format!("not sent ({reason})")),
            Answer::Grpc { .. } => Err("not an HTTP answer".into()),
        };
        let now_s = cx.host().now_ms() / 1000;
        match result {
            Ok(answer) => {
                cx.count(plugin.metrics.provider(index).success);
                intro.store(cx.host(), &token, now_s, answer.as_ref());
                if answer.is_none() && intro.negative_secs == 0 {
                    // Not cached: remembered for the rest of this request, and waiting
                    // requests ask themselves.
                    intro.release(cx.host(), &token);
                    self.answered.push((index, token, true));
                }
            }
            Err(reason) => {
                cx.count(plugin.metrics.provider(index).failure);
                // Requests waiting for this answer ask themselves.
                intro.release(cx.host(), &token);
                log::warn!(
                    "wasmgate {FILTER}: introspection at {} failed: {reason}; the request is denied",
                    intro.uri
                );
                self.answered.push((index, token, false));
            }
        }
        self.process(cx, true)
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        if std::mem::take(&mut self.introspect_wait) {
            // Another request's answer may be in the cache now; else ask or wait again.
            return self.process(cx, true);
        }
        let unchanged = self.seen == self.plugin.remote.snapshot(&self.plugin.config);
        if unchanged && cx.host().now_ms() < self.deadline_ms {
            return Outcome::Wait {
                until_ms: self.deadline_ms,
            };
        }
        self.process(cx, false)
    }

    fn tick_period(plugin: &Plugin) -> Option<Duration> {
        (!keys::remotes(&plugin.config).is_empty()).then_some(TICK)
    }

    fn on_tick(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>) {
        let config = &plugin.config;
        let now = cx.host().now_ms();
        if plugin.remote.idle(config, cx.waiting(), now) {
            return;
        }
        plugin.remote.synced(now);
        plugin.remote.sync_all(cx.host(), config);
        for (index, age) in plugin.remote.ages_seconds(now) {
            cx.record(plugin.metrics.provider(index).jwks_age, age);
        }
        for index in plugin.remote.claim_fetches(cx.host(), config, now) {
            if let Some(KeySource::Remote(remote)) = config.providers.get(index).map(|p| &p.keys) {
                // With discovery the configured URI is the document, fetched first.
                let phase = if remote.discovery.is_some() {
                    Phase::Discovery
                } else {
                    Phase::Jwks
                };
                cx.call(
                    fetch_key(index, phase),
                    keys::fetch_request(remote),
                    remote.max_bytes,
                );
            }
        }
        cx.wake_waiting();
    }

    fn on_plugin_answer(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        let Ok(index) = usize::try_from(key / 2) else {
            return;
        };
        let Some(KeySource::Remote(remote)) = plugin.config.providers.get(index).map(|p| &p.keys)
        else {
            return;
        };
        let result = if key & 1 == Phase::Discovery as u64 {
            // The discovery document: on success, fetch the key set it names.
            match discovery_result(answer, remote) {
                Ok(target) => {
                    log::debug!(
                        "wasmgate {FILTER}: {} names the keys {} (cluster {})",
                        remote.uri,
                        target.uri,
                        target.cluster
                    );
                    cx.call(
                        fetch_key(index, Phase::Jwks),
                        keys::jwks_request(&target, remote.timeout),
                        remote.max_bytes,
                    );
                    return;
                }
                Err(reason) => Err(format!("OIDC discovery: {reason}")),
            }
        } else {
            fetch_result(answer, remote)
        };
        match &result {
            Ok(_) => {
                cx.add(plugin.metrics.provider(index).success, 1);
                log::info!("wasmgate {FILTER}: fetched JWKS {}", remote.uri);
            }
            Err(reason) => {
                cx.add(plugin.metrics.provider(index).failure, 1);
                log::warn!(
                    "wasmgate {FILTER}: JWKS fetch {} failed: {reason}; the last good keys (if any) stay in use",
                    remote.uri
                );
            }
        }
        plugin
            .remote
            .finish_fetch(cx.host(), index, remote, &result);
        cx.wake_waiting();
    }
}

#[cfg(test)]
mod tests;
