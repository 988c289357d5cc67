//! wasmgate hmac-auth: request and webhook signature verification (GitHub, Stripe, Slack,
//! Shopify, Standard Webhooks, RFC 9421, AWS SigV4, custom) with secret rotation and replay
//! protection. This file is the proxy-wasm glue only; decisions live in [`verify`] and [`replay`].

pub mod config;
pub mod crypto;
pub mod httpsig;
pub mod replay;
pub mod sf;
pub mod sigv4;
pub mod verify;

use config::{Config, Policy, FILTER};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use replay::{Claim, Fingerprint, Table};
use std::collections::HashMap;
use std::rc::Rc;
use verify::{Pending, Reject, Request};
use wasmgate_core::clock::Clock;
use wasmgate_core::host::{header_value, request_info, Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};
use wasmgate_core::rules::Rule;
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
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HmacAuthRoot::default()) });
}

const REJECT_CODES: [&str; 5] = [
    "missing_signature",
    "invalid_signature",
    "stale_timestamp",
    "malformed_signature",
    "body_too_large",
];

/// The filter's counters, defined once per VM.
#[derive(Debug, Default)]
struct Metrics {
    verified: Counter,
    skipped: Counter,
    replays: Counter,
    replay_unavailable: Counter,
    rejected: HashMap<&'static str, Counter>,
    matched: HashMap<String, Counter>,
}

/// The metric name suffix for a secret id (`.` and `-` become `_`).
pub fn secret_metric(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("matched_{clean}")
}

impl Metrics {
    fn define(config: &Config) -> Self {
        let name = |what: &str| metric_name(FILTER, what);
        Self {
            verified: Counter::define(&name("verified")),
            skipped: Counter::define(&name("skipped")),
            replays: Counter::define(&name("replays")),
            replay_unavailable: Counter::define(&name("replay_unavailable")),
            rejected: REJECT_CODES
                .iter()
                .map(|code| (*code, Counter::define(&name(&format!("rejected_{code}")))))
                .collect(),
            matched: config
                .secret_ids()
                .into_iter()
                .map(|id| {
                    let counter = Counter::define(&name(&secret_metric(&id)));
                    (id, counter)
                })
                .collect(),
        }
    }
}

#[derive(Default)]
struct HmacAuthRoot {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    table: Option<Rc<Table>>,
}

impl Context for HmacAuthRoot {}

impl RootContext for HmacAuthRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("{}", wasmgate_core::build_identity!());
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = self.get_plugin_configuration();
        let Some(config) = wasmgate_core::config::load(FILTER, bytes.as_deref(), config::compile)
        else {
            return false;
        };
        // Replay ids of different configurations never meet; the same configuration on every
        // worker shares one table.
        let namespace = hex::encode(&crypto::sha256(bytes.as_deref().unwrap_or_default())[..6]);
        self.table = config
            .replay
            .map(|r| Rc::new(Table::new(&namespace, r.ttl_secs, r.max_entries)));
        self.metrics = Rc::new(Metrics::define(&config));
        self.config = Some(Rc::new(config));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(HmacAuth {
            config,
            metrics: Rc::clone(&self.metrics),
            table: self.table.clone(),
            rule: None,
            request: None,
            pending: None,
            body_size: 0,
            claimed: None,
        }))
    }
}

struct HmacAuth {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
    table: Option<Rc<Table>>,
    /// Index of the matching rule; `None` for the defaults.
    rule: Option<usize>,
    request: Option<Request>,
    /// Set while the body is being buffered for verification.
    pending: Option<Pending>,
    /// Bytes buffered so far.
    body_size: usize,
    /// Replay id claimed as in flight, settled when the upstream answers.
    claimed: Option<Fingerprint>,
}

/// The policy of the matched rule, or the defaults.
fn policy_of(config: &Config, rule: Option<usize>) -> &Policy {
    rule.and_then(|i| config.rules.get(i))
        .and_then(|r| r.policy.as_ref())
        .unwrap_or(&config.default)
}

impl HmacAuth {
    fn policy(&self) -> &Policy {
        policy_of(&self.config, self.rule)
    }

    fn reject(&mut self, reject: &Reject) -> Action {
        self.pending = None;
        if let Reject::Replayed = reject {
            self.metrics.replays.inc();
        } else if let Some(counter) = self.metrics.rejected.get(reject.code()) {
            counter.inc();
        }
        log::debug!("wasmgate hmac-auth: rejected: {}", reject.code());
        ProxyHost.send_reply(&LocalReply::new(
            reject.status(),
            reject.code(),
            reject.message(),
        ));
        Action::Pause
    }

    fn finish(&mut self, body: &[u8]) -> Action {
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let Some(request) = self.request.take() else {
            return Action::Continue;
        };
        let config = Rc::clone(&self.config);
        let policy = policy_of(&config, self.rule);
        let verified = match verify::verify(policy, &pending, &request, body) {
            Ok(v) => v,
            Err(reject) => return self.reject(&reject),
        };
        if let Some(counter) = policy
            .keys
            .get(verified.key_index)
            .and_then(|k| self.metrics.matched.get(&k.id))
        {
            counter.inc();
        }
        if let Some(table) = self.table.clone() {
            let fp = Table::fingerprint(policy.index, policy.scheme.name(), &verified.replay_id);
            match table.claim(&ProxyHost, &fp, ProxyHost.unix_seconds()) {
                Ok(Claim::Claimed) => self.claimed = Some(fp),
                Ok(Claim::Replayed) => return self.reject(&Reject::Replayed),
                Err(err) => {
                    log::warn!("wasmgate hmac-auth: replay table unavailable: {err:?}");
                    self.metrics.replay_unavailable.inc();
                    ProxyHost.send_reply(&LocalReply::new(
                        503,
                        "replay_unavailable",
                        "The replay check is unavailable; retry later.",
                    ));
                    return Action::Pause;
                }
            }
        }
        self.metrics.verified.inc();
        log::debug!(
            "wasmgate hmac-auth: verified with secret {}",
            policy
                .keys
                .get(verified.key_index)
                .map_or("?", |k| k.id.as_str())
        );
        Action::Continue
    }

    fn settle(&mut self, success: bool) {
        if let (Some(fp), Some(table)) = (self.claimed.take(), self.table.as_ref()) {
            if let Err(err) = table.settle(&ProxyHost, &fp, ProxyHost.unix_seconds(), success) {
                log::warn!("wasmgate hmac-auth: could not settle a replay id: {err:?}");
            }
        }
    }
}

impl Context for HmacAuth {}

impl HttpContext for HmacAuth {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let host = ProxyHost;
        let info = request_info(&host, wasmgate_core::rules::needs_route(&self.config.rules));
        let request = Request::from_headers(info.headers.clone());
        self.rule = self
            .config
            .rules
            .iter()
            .position(|r| r.matcher().matches(&info));
        if self
            .rule
            .and_then(|i| self.config.rules.get(i))
            .is_some_and(|r| !r.enabled())
        {
            self.metrics.skipped.inc();
            return Action::Continue;
        }
        let policy = self.policy();
        let max = policy.max_body_bytes;
        let declared = request
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return self.reject(&Reject::TooLarge(max));
        }
        match verify::prepare(policy, &request, host.unix_seconds()) {
            Ok(pending) => self.pending = Some(pending),
            Err(reject) => return self.reject(&reject),
        }
        self.request = Some(request);
        if end_of_stream {
            return self.finish(&[]);
        }
        // Envoy turns a paused header phase into "stop all iteration", which also withholds the
        // body from this filter; so headers continue here and the body is held below. A native
        // `envoy.filters.http.buffer` placed right after this filter keeps the headers from the
        // upstream until the body is verified (see README).
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        let max = self.policy().max_body_bytes;
        if u64::try_from(body_size).unwrap_or(u64::MAX) > max {
            return self.reject(&Reject::TooLarge(max));
        }
        self.body_size = body_size;
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.finish(&body)
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        let body = self
            .get_http_request_body(0, self.body_size)
            .unwrap_or_default();
        self.finish(&body)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.claimed.is_some() {
            let success = header_value(MapType::HttpResponseHeaders, ":status")
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|s| (200..300).contains(&s));
            self.settle(success);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // A stream that ended without a response (reset, timeout) releases its id.
        self.settle(false);
    }
}
