//! The jwt-auth filter on the wasmgate frame: verify the request's tokens against local or
//! remote key sets, wait (bounded) for remote keys that are still being fetched, and forward
//! the request with the configured headers or deny it.

use crate::cache::TokenCache;
use crate::config::{Config, KeySource, RemoteJwks};
use crate::decide::{self, Decision, Evaluation, Mutations, RequestView};
use crate::failure::Failure;
use crate::foreign::HostVerifier;
use crate::keys::{self, RemoteKeys, IDLE_SYNC_MS};
use crate::remote::{self, SharedJwks};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::{request_info, Host};
use wasmgate_core::{Answer, ConfigError, HeaderEdits, LocalReply, Outcome, Selected};
use wasmgate_host::{select, Counter, CounterSet, Cx, Filter, RootCx, Setup, Uses};

/// The filter's name in logs, metrics and Envoy config.
pub const FILTER: &str = "jwt-auth";
/// Tick of plugins with remote providers: wakes waiting requests and starts fetches.
const TICK: Duration = Duration::from_millis(100);

/// The filter's counters.
struct Metrics {
    allowed: Counter,
    denied: Counter,
    denied_by: CounterSet,
    cache_hits: Counter,
    fetch_ok: Counter,
    fetch_failed: Counter,
    foreign_verified: Counter,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        Self {
            allowed: setup.counter("allowed"),
            denied: setup.counter("denied"),
            denied_by: CounterSet::define(
                setup,
                Failure::ALL_CODES
                    .iter()
                    .map(|code| (*code, format!("denied_{code}"))),
            ),
            cache_hits: setup.counter("cache_hits"),
            fetch_ok: setup.counter("jwks_fetch_success"),
            fetch_failed: setup.counter("jwks_fetch_failure"),
            foreign_verified: setup.counter("host_verified"),
        }
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

/// One stream; while it waits for remote keys, what it saw of them and until when it waits.
pub struct JwtAuth {
    plugin: Rc<Plugin>,
    seen: Vec<(u64, u64)>,
    deadline_ms: u64,
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
        let path = info.raw_path().to_string();
        let now = cx.host().now_ms();
        let mut headers = info.headers;
        headers.retain(|(n, _)| !outputs.contains(n));
        let request = RequestView {
            headers: &headers,
            path: &path,
            now: now / 1000,
        };
        let evaluation = self.evaluate(cx, policy, request);
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
                cx.count(metrics.denied);
                cx.count(metrics.denied_by.get(failure.code()));
                log::debug!(
                    "wasmgate {FILTER}: denied {} ({})",
                    info.path,
                    failure.code()
                );
                Outcome::Reply(failure.reply(&info.host))
            }
        }
    }

    /// Verifies the tokens, with the host's `verify_signature` while it proves usable.
    fn evaluate(
        &self,
        cx: &Cx<'_>,
        policy: &crate::config::Policy,
        request: RequestView<'_>,
    ) -> Evaluation {
        let host = cx.host();
        let plugin = &self.plugin;
        let config = &plugin.config;
        let keys = |i: usize| plugin.remote.keys(host, config, i);
        let use_host = config.use_host_crypto && plugin.host_verify.get() != Some(false);
        let verifier = HostVerifier::new(host, use_host);
        let evaluation = {
            let mut cache = plugin.cache.borrow_mut();
            decide::evaluate(config, policy, request, &keys, &mut cache, &verifier)
        };
        if verifier.verified() > 0 {
            plugin.host_verify.set(Some(true));
        } else if verifier.failed() > 0 && plugin.host_verify.get().is_none() {
            log::info!(
                "wasmgate {FILTER}: the host has no usable verify_signature; verifying in the VM"
            );
            plugin.host_verify.set(Some(false));
        }
        cx.add(
            plugin.metrics.foreign_verified,
            i64::from(verifier.verified()),
        );
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
    let timeout = |remote: &RemoteJwks| u64::try_from(remote.timeout.as_millis()).unwrap_or(0);
    let mut deadline: Option<u64> = None;
    let mut extend = |d: u64| deadline = Some(deadline.map_or(d, |x| x.max(d)));
    for remote in evaluation.pending.iter().filter_map(|i| remote_of(*i)) {
        extend(now.saturating_add(timeout(remote)));
    }
    for remote in evaluation.kid_miss.iter().filter_map(|i| remote_of(*i)) {
        let waiting = wasmgate_core::shared::update(host, &remote.shared_key, |bytes| {
            let mut shared = SharedJwks::decode(bytes);
            if shared.in_flight(now) || shared.refetch_requested {
                return (None, true);
            }
            if shared.request_refetch(now) {
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

/// The result of one JWKS fetch.
fn fetch_result(answer: Answer, remote: &RemoteJwks) -> Result<String, String> {
    match answer {
        Answer::Http { headers, body } => {
            let status = headers
                .iter()
                .find(|(n, _)| n == ":status")
                .map(|(_, v)| v.as_str());
            let body = (!body.is_empty()).then_some(body.as_slice());
            remote::accept_response(status, body, remote.max_bytes)
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
            metrics: Metrics::define(setup),
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

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
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
        for index in plugin.remote.claim_fetches(cx.host(), config, now) {
            if let Some(KeySource::Remote(remote)) = config.providers.get(index).map(|p| &p.keys) {
                let key = u64::try_from(index).unwrap_or(u64::MAX);
                cx.call(key, keys::fetch_request(remote), remote.max_bytes);
            }
        }
        cx.wake_waiting();
    }

    fn on_plugin_answer(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        let Ok(index) = usize::try_from(key) else {
            return;
        };
        let Some(KeySource::Remote(remote)) = plugin.config.providers.get(index).map(|p| &p.keys)
        else {
            return;
        };
        let result = fetch_result(answer, remote);
        match &result {
            Ok(_) => {
                cx.add(plugin.metrics.fetch_ok, 1);
                log::info!("wasmgate {FILTER}: fetched JWKS {}", remote.uri);
            }
            Err(reason) => {
                cx.add(plugin.metrics.fetch_failed, 1);
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
