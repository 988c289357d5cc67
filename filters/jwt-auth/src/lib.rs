//! wasmgate jwt-auth: JWT authentication at parity with Envoy's jwt_authn, plus remote JWKS
//! rotation without restarts, `claims` checks and a verified-token cache.
//!
//! This file is the proxy-wasm glue only: it reads the request, calls [`decide::evaluate`],
//! applies the verdict, and runs the remote JWKS fetches ([`remote`]) from the root context.

pub mod cache;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod decide;
pub mod extract;
pub mod failure;
pub mod foreign;
pub mod jwks;
pub mod jws;
pub mod remote;

use crate::cache::TokenCache;
use crate::config::{Config, KeySource, RemoteJwks};
use crate::decide::{Decision, Keys, Mutations, RequestView};
use crate::failure::Failure;
use crate::jwks::Jwks;
use crate::remote::SharedJwks;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::clock::{unix_nanos, Clock};
use wasmgate_core::host::{header_value, request_info, Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};
use wasmgate_core::rules::{first_match, Rule};

const FILTER: &str = "jwt-auth";
/// Tick of root contexts with remote providers: wakes waiting requests and starts fetches.
const TICK: Duration = Duration::from_millis(100);
/// When nothing waits and the keys are there, shared data is read this often.
const IDLE_SYNC_MS: u64 = 1_000;

// The module entry point is exported only in the Wasm build: natively (unit tests, the
// `wasmgate` CLI linking every filter) several `_initialize` symbols would collide.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    init();
}}

/// Registers the root context (called from `_initialize`).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn init() {
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(JwtRoot::default()) });
}

#[derive(Default)]
struct Metrics {
    allowed: Counter,
    denied: Counter,
    denied_by: HashMap<&'static str, Counter>,
    cache_hits: Counter,
    fetch_ok: Counter,
    fetch_failed: Counter,
    foreign_verified: Counter,
}

impl Metrics {
    fn define() -> Self {
        let m = |what: &str| Counter::define(&metric_name(FILTER, what));
        Self {
            allowed: m("allowed"),
            denied: m("denied"),
            denied_by: Failure::ALL_CODES
                .iter()
                .map(|code| (*code, m(&format!("denied_{code}"))))
                .collect(),
            cache_hits: m("cache_hits"),
            fetch_ok: m("jwks_fetch_success"),
            fetch_failed: m("jwks_fetch_failure"),
            foreign_verified: m("host_verified"),
        }
    }
}

/// A worker's view of one remote provider's keys.
#[derive(Default, Clone)]
struct RemoteView {
    generation: u64,
    completed: u64,
    jwks: Option<Rc<Jwks>>,
}

struct Waiter {
    context_id: u32,
    deadline_ms: u64,
    seen: Vec<(u64, u64)>,
}

/// State one worker's root and HTTP contexts share.
#[derive(Default)]
struct Worker {
    config: RefCell<Option<Rc<Config>>>,
    remote: RefCell<HashMap<usize, RemoteView>>,
    cache: RefCell<TokenCache>,
    waiters: RefCell<Vec<Waiter>>,
    metrics: RefCell<Metrics>,
    host_verify: Cell<Option<bool>>,
}

fn now_ms(host: &ProxyHost) -> u64 {
    unix_nanos(host.now()) / 1_000_000
}

impl Worker {
    fn config(&self) -> Option<Rc<Config>> {
        self.config.borrow().clone()
    }

    /// Reads a remote provider's shared value and updates this worker's view.
    fn sync_remote(&self, index: usize, remote: &RemoteJwks) -> RemoteView {
        let bytes = hostcalls::get_shared_data(&remote.shared_key)
            .ok()
            .and_then(|(b, _)| b)
            .unwrap_or_default();
        let shared = SharedJwks::decode(&bytes);
        let mut views = self.remote.borrow_mut();
        let view = views.entry(index).or_default();
        if shared.generation != view.generation || view.jwks.is_none() {
            if let Some(text) = &shared.jwks {
                match Jwks::parse(text) {
                    Ok(jwks) => {
                        view.jwks = Some(Rc::new(jwks));
                        view.generation = shared.generation;
                    }
                    Err(reason) => log::warn!(
                        "wasmgate jwt-auth: shared JWKS of {} unusable: {reason}",
                        remote.uri
                    ),
                }
            }
        }
        view.completed = shared.completed;
        view.clone()
    }

    fn keys(&self, config: &Config, index: usize) -> Keys {
        let Some(provider) = config.providers.get(index) else {
            return Keys::Unavailable;
        };
        match &provider.keys {
            KeySource::Local(jwks) => Keys::Ready {
                jwks: Rc::clone(jwks),
                generation: 0,
            },
            KeySource::Remote(remote) => {
                let known = self
                    .remote
                    .borrow()
                    .get(&index)
                    .cloned()
                    .unwrap_or_default();
                // Keys not here yet, or another worker fetched new ones: reload before deciding.
                let changed = shared_generation(&remote.shared_key)
                    .is_some_and(|generation| generation != known.generation);
                let view = if known.jwks.is_none() || changed {
                    self.sync_remote(index, remote)
                } else {
                    known
                };
                match view.jwks {
                    Some(jwks) => Keys::Ready {
                        jwks,
                        generation: view.generation,
                    },
                    None if view.completed == 0 => Keys::Pending,
                    None => Keys::Unavailable,
                }
            }
        }
    }

    fn snapshot(&self, config: &Config) -> Vec<(u64, u64)> {
        let views = self.remote.borrow();
        (0..config.providers.len())
            .map(|i| {
                views
                    .get(&i)
                    .map_or((0, 0), |v| (v.generation, v.completed))
            })
            .collect()
    }
}

enum Step {
    Continue,
    Replied,
    Wait { deadline_ms: u64 },
}

/// Decides the current request (the effective context) and applies the verdict.
fn process(worker: &Worker, may_wait: bool) -> Step {
    let host = ProxyHost;
    let Some(config) = worker.config() else {
        host.send_reply(&wasmgate_core::LocalReply::new(
            503,
            "not_configured",
            "The JWT filter has no valid configuration.",
        ));
        return Step::Replied;
    };
    let mut info = request_info(&host, wasmgate_core::rules::needs_route(&config.rules));
    let policy = match first_match(&config.rules, &info) {
        Some(rule) if !rule.enabled() => return Step::Continue,
        Some(rule) => &rule.policy,
        None => &config.default_policy,
    };
    let path = info
        .headers
        .iter()
        .find(|(n, _)| n == ":path")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let now = now_ms(&host);
    // Clients must never be able to forge the headers this filter sets.
    let outputs = &config.output_headers;
    // Only the ones the client sent: a host call per configured name would cost every request.
    for name in outputs
        .iter()
        .filter(|o| info.headers.iter().any(|(n, _)| n == *o))
    {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
    }
    let mut headers = std::mem::take(&mut info.headers);
    headers.retain(|(n, _)| !outputs.contains(n));
    let request = RequestView {
        headers: &headers,
        path: &path,
        now: now / 1000,
    };
    let keys = |i: usize| worker.keys(&config, i);
    let use_host = config.use_host_crypto && worker.host_verify.get() != Some(false);
    let verifier = foreign::HostVerifier::new(&host, use_host);
    let evaluation = {
        let mut cache = worker.cache.borrow_mut();
        decide::evaluate(&config, policy, request, &keys, &mut cache, &verifier)
    };
    if verifier.verified() > 0 {
        worker.host_verify.set(Some(true));
    } else if verifier.failed() > 0 && worker.host_verify.get().is_none() {
        log::info!(
            "wasmgate jwt-auth: the host has no usable verify_signature; verifying in the VM"
        );
        worker.host_verify.set(Some(false));
    }
    let metrics = worker.metrics.borrow();
    if evaluation.cache_hits > 0 {
        metrics.cache_hits.add(i64::from(evaluation.cache_hits));
    }
    let host_checks = verifier.verified();
    if host_checks > 0 {
        metrics.foreign_verified.add(i64::from(host_checks));
    }
    match evaluation.decision {
        Decision::Allow(mutations) => {
            apply(&mutations);
            metrics.allowed.inc();
            log::debug!("wasmgate jwt-auth: allowed {}", info.path);
            Step::Continue
        }
        Decision::Deny(failure) => {
            if may_wait {
                if let Some(deadline_ms) = wait_deadline(&config, &evaluation, now) {
                    log::debug!("wasmgate jwt-auth: waiting for remote keys");
                    return Step::Wait { deadline_ms };
                }
            }
            metrics.denied.inc();
            if let Some(counter) = metrics.denied_by.get(failure.code()) {
                counter.inc();
            }
            log::debug!(
                "wasmgate jwt-auth: denied {} ({})",
                info.path,
                failure.code()
            );
            host.send_reply(&failure.reply(&info.host));
            Step::Replied
        }
    }
}

/// Whether a denied request should rather wait: keys still pending, or an unknown `kid` for
/// which a refetch was just asked for (at most one every 30 s) or is already running.
fn wait_deadline(config: &Config, evaluation: &decide::Evaluation, now: u64) -> Option<u64> {
    let timeout_of = |i: usize| match config.providers.get(i).map(|p| &p.keys) {
        Some(KeySource::Remote(r)) => Some(r),
        _ => None,
    };
    let mut deadline = None;
    for &i in &evaluation.pending {
        if let Some(remote) = timeout_of(i) {
            let d = now.saturating_add(remote.timeout.as_millis() as u64);
            deadline = Some(deadline.map_or(d, |x: u64| x.max(d)));
        }
    }
    for &i in &evaluation.kid_miss {
        let Some(remote) = timeout_of(i) else {
            continue;
        };
        let waiting = wasmgate_core::shared::update(&ProxyHost, &remote.shared_key, |bytes| {
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
            let d = now
                .saturating_add(remote.timeout.as_millis() as u64)
                .saturating_add(IDLE_SYNC_MS);
            deadline = Some(deadline.map_or(d, |x: u64| x.max(d)));
        }
    }
    deadline
}

/// The shared-data key holding just the generation of a provider's key set.
fn generation_key(shared_key: &str) -> String {
    format!("{shared_key}.generation")
}

/// The generation of a provider's shared key set (a cheap read on every request).
fn shared_generation(shared_key: &str) -> Option<u64> {
    let (bytes, _) = hostcalls::get_shared_data(&generation_key(shared_key)).ok()?;
    std::str::from_utf8(&bytes?).ok()?.parse().ok()
}

/// Creates a remote provider's shared value if it does not exist yet; true when it existed.
fn ensure_shared(key: &str) -> bool {
    match hostcalls::get_shared_data(key) {
        Ok((Some(_), Some(_))) => true,
        _ => {
            let _ = hostcalls::set_shared_data(key, Some(&SharedJwks::default().encode()), None);
            false
        }
    }
}

fn apply(m: &Mutations) {
    for name in &m.remove_headers {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
    }
    if let Some(path) = &m.path {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path));
    }
    if let Some(cookie) = &m.cookie {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "cookie", cookie.as_deref());
    }
    for (name, value) in &m.set_headers {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }
}

#[derive(Default)]
struct JwtRoot {
    worker: Rc<Worker>,
    fetches: HashMap<u32, usize>,
    last_sync_ms: u64,
}

impl JwtRoot {
    fn remotes(config: &Config) -> Vec<(usize, RemoteJwks)> {
        config
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.keys {
                KeySource::Remote(r) => Some((i, r.clone())),
                KeySource::Local(_) => None,
            })
            .collect()
    }

    /// Starts the fetches that are due, claiming each with a CAS so one worker fetches.
    fn start_fetches(&mut self, config: &Config) {
        let now = now_ms(&ProxyHost);
        for (index, remote) in Self::remotes(config) {
            if self.fetches.values().any(|i| *i == index) {
                continue;
            }
            // Claims only ever CAS an existing value: a value created now is claimed at a later
            // tick, so another worker's unconditional create can never overwrite a claim.
            if !ensure_shared(&remote.shared_key) {
                continue;
            }
            let cache_ms = remote.cache_duration.as_millis() as u64;
            let timeout_ms = remote.timeout.as_millis() as u64;
            let claimed = wasmgate_core::shared::update(&ProxyHost, &remote.shared_key, |bytes| {
                let mut shared = SharedJwks::decode(bytes);
                if shared.due(now, cache_ms) {
                    shared.claim(now, timeout_ms);
                    (Some(shared.encode()), true)
                } else {
                    (None, false)
                }
            })
            .unwrap_or(false);
            if !claimed {
                continue;
            }
            let scheme = if remote.uri.starts_with("https://") {
                "https"
            } else {
                "http"
            };
            let headers = vec![
                (":method", "GET"),
                (":path", remote.path.as_str()),
                (":authority", remote.authority.as_str()),
                (":scheme", scheme),
                ("accept", "application/json"),
            ];
            match self.dispatch_http_call(&remote.cluster, headers, None, vec![], remote.timeout) {
                Ok(token) => {
                    self.fetches.insert(token, index);
                }
                Err(status) => {
                    log::warn!(
                        "wasmgate jwt-auth: cannot fetch JWKS {} through cluster {}: {status:?}",
                        remote.uri,
                        remote.cluster
                    );
                    self.finish_fetch(index, &remote, Err("dispatch failed".into()));
                }
            }
        }
    }

    fn finish_fetch(&self, index: usize, remote: &RemoteJwks, result: Result<String, String>) {
        let now = now_ms(&ProxyHost);
        let metrics = self.worker.metrics.borrow();
        match &result {
            Ok(_) => {
                metrics.fetch_ok.inc();
                log::info!("wasmgate jwt-auth: fetched JWKS {}", remote.uri);
            }
            Err(reason) => {
                metrics.fetch_failed.inc();
                log::warn!(
                    "wasmgate jwt-auth: JWKS fetch {} failed: {reason}; the last good keys (if any) stay in use",
                    remote.uri
                );
            }
        }
        drop(metrics);
        let generation = wasmgate_core::shared::update(&ProxyHost, &remote.shared_key, |bytes| {
            let mut shared = SharedJwks::decode(bytes);
            match &result {
                Ok(text) => shared.succeeded(now, text.clone()),
                Err(_) => shared.failed(now),
            }
            (Some(shared.encode()), shared.generation)
        });
        if let Ok(generation) = generation {
            // Every worker compares this small value on each request and reloads on a change.
            let _ = hostcalls::set_shared_data(
                &generation_key(&remote.shared_key),
                Some(generation.to_string().as_bytes()),
                None,
            );
        }
        self.worker.sync_remote(index, remote);
    }

    /// Re-decides waiting requests whose keys changed or whose wait is over.
    fn wake_waiters(&self, config: &Config) {
        let waiters = std::mem::take(&mut *self.worker.waiters.borrow_mut());
        if waiters.is_empty() {
            return;
        }
        let now = now_ms(&ProxyHost);
        let snapshot = self.worker.snapshot(config);
        let mut remaining = Vec::new();
        for waiter in waiters {
            if waiter.seen == snapshot && now < waiter.deadline_ms {
                remaining.push(waiter);
                continue;
            }
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue;
            }
            match process(&self.worker, false) {
                Step::Continue => {
                    let _ = hostcalls::resume_http_request();
                }
                Step::Replied | Step::Wait { .. } => {}
            }
        }
        self.worker.waiters.borrow_mut().extend(remaining);
    }
}

impl Context for JwtRoot {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let Some(index) = self.fetches.remove(&token) else {
            return;
        };
        let Some(config) = self.worker.config() else {
            return;
        };
        let Some(KeySource::Remote(remote)) = config.providers.get(index).map(|p| p.keys.clone())
        else {
            return;
        };
        let status = header_value(MapType::HttpCallResponseHeaders, ":status");
        let result = if body_size > remote.max_bytes {
            Err(format!("body over {} bytes", remote.max_bytes))
        } else {
            let body = self.get_http_call_response_body(0, body_size);
            remote::accept_response(status.as_deref(), body.as_deref(), remote.max_bytes)
        };
        self.finish_fetch(index, &remote, result);
        self.wake_waiters(&config);
    }
}

impl RootContext for JwtRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("{}", wasmgate_core::build_identity!());
        *self.worker.metrics.borrow_mut() = Metrics::define();
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let json = self.get_plugin_configuration();
        let Some(config) = wasmgate_core::config::load(FILTER, json.as_deref(), config::compile)
        else {
            return false;
        };
        *self.worker.cache.borrow_mut() = TokenCache::new(config.cache_entries);
        self.worker.remote.borrow_mut().clear();
        let remotes = Self::remotes(&config);
        for (_, remote) in &remotes {
            ensure_shared(&remote.shared_key);
        }
        let has_remote = !remotes.is_empty();
        *self.worker.config.borrow_mut() = Some(Rc::new(config));
        if has_remote {
            self.set_tick_period(TICK);
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(config) = self.worker.config() else {
            return;
        };
        let remotes = Self::remotes(&config);
        let now = now_ms(&ProxyHost);
        let all_fetched = remotes.iter().all(|(i, _)| {
            self.worker
                .remote
                .borrow()
                .get(i)
                .is_some_and(|v| v.jwks.is_some())
        });
        let busy = !self.worker.waiters.borrow().is_empty() || !self.fetches.is_empty();
        if !busy && all_fetched && now < self.last_sync_ms.saturating_add(IDLE_SYNC_MS) {
            return;
        }
        self.last_sync_ms = now;
        for (index, remote) in &remotes {
            self.worker.sync_remote(*index, remote);
        }
        self.start_fetches(&config);
        self.wake_waiters(&config);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(JwtHttp {
            context_id,
            worker: Rc::clone(&self.worker),
        }))
    }
}

struct JwtHttp {
    context_id: u32,
    worker: Rc<Worker>,
}

impl Context for JwtHttp {
    fn on_done(&mut self) -> bool {
        self.worker
            .waiters
            .borrow_mut()
            .retain(|w| w.context_id != self.context_id);
        true
    }
}

impl HttpContext for JwtHttp {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match process(&self.worker, true) {
            Step::Continue => Action::Continue,
            Step::Replied => Action::Pause,
            Step::Wait { deadline_ms } => {
                let seen = match self.worker.config() {
                    Some(config) => self.worker.snapshot(&config),
                    None => Vec::new(),
                };
                self.worker.waiters.borrow_mut().push(Waiter {
                    context_id: self.context_id,
                    deadline_ms,
                    seen,
                });
                Action::Pause
            }
        }
    }
}
