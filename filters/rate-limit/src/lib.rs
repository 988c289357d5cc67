//! wasmgate rate-limit: token bucket, fixed and sliding window limits per key, exact across
//! Envoy workers. This file is the proxy-wasm glue only; decisions live in the other modules.

pub mod algorithm;
pub mod config;
pub mod global;
pub mod headers;
pub mod key;
pub mod request;
pub mod store;

use config::{Config, FILTER};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use request::Count;
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::{Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};

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
        Box::new(RateLimitRoot::default())
    });
}

/// The filter's counters (`wasmgate_rate_limit_<what>`).
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    allowed: Counter,
    limited: Counter,
    shadow_limited: Counter,
    keys_evicted: Counter,
    missing_key: Counter,
    errors: Counter,
    global_calls: Counter,
    global_failures: Counter,
    unavailable: Counter,
}

impl Metrics {
    fn define() -> Self {
        let counter = |what: &str| Counter::define(&metric_name(FILTER, what));
        Self {
            allowed: counter("allowed"),
            limited: counter("limited"),
            shadow_limited: counter("shadow_limited"),
            keys_evicted: counter("keys_evicted"),
            missing_key: counter("missing_key"),
            errors: counter("errors"),
            global_calls: counter("global_calls"),
            global_failures: counter("global_failures"),
            unavailable: counter("unavailable"),
        }
    }
}

#[derive(Default)]
struct RateLimitRoot {
    config: Option<Rc<Config>>,
    metrics: Metrics,
    /// Shared-data key prefix of this plugin's slot table.
    prefix: Rc<str>,
}

impl Context for RateLimitRoot {}

impl RootContext for RateLimitRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("{}", wasmgate_core::build_identity!());
        self.metrics = Metrics::define();
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let json = self.get_plugin_configuration();
        let Some(config) = config::load(json.as_deref()) else {
            return false;
        };
        let plugin = ProxyHost
            .property_string(&["plugin_name"])
            .unwrap_or_default();
        self.prefix = format!("wasmgate_rate_limit/{plugin}").into();
        self.config = Some(Rc::new(config));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RateLimitHttp {
            config: self.config.clone(),
            metrics: self.metrics,
            prefix: Rc::clone(&self.prefix),
            response_headers: Vec::new(),
            pending: None,
        }))
    }
}

struct RateLimitHttp {
    config: Option<Rc<Config>>,
    metrics: Metrics,
    prefix: Rc<str>,
    /// Rate-limit headers to add to the response of a request that went upstream.
    response_headers: Vec<(String, String)>,
    /// Global mode: the outstanding `ShouldRateLimit` call (token, rule index).
    pending: Option<(u32, usize)>,
}

impl RateLimitHttp {
    /// Counts, stores the headers, and replies or lets the request go on (`true`).
    fn apply(&mut self, verdict: request::Verdict) -> bool {
        if verdict.evicted {
            self.metrics.keys_evicted.inc();
        }
        match verdict.count {
            Some(Count::Allowed) => self.metrics.allowed.inc(),
            Some(Count::Limited) => self.metrics.limited.inc(),
            Some(Count::ShadowLimited) => self.metrics.shadow_limited.inc(),
            Some(Count::MissingKey) => self.metrics.missing_key.inc(),
            Some(Count::Error) => self.metrics.errors.inc(),
            Some(Count::FailedOpen) => self.metrics.global_failures.inc(),
            Some(Count::Unavailable) => {
                self.metrics.global_failures.inc();
                self.metrics.unavailable.inc();
            }
            None => {}
        }
        self.response_headers = verdict.response_headers;
        match verdict.reply {
            Some(reply) => {
                ProxyHost.send_reply(&reply);
                false
            }
            None => true,
        }
    }

    /// The verdict of a global rule from its answer or failure.
    fn global_verdict(
        &self,
        rule: usize,
        answer: Result<&[u8], global::Failure>,
    ) -> Option<request::Verdict> {
        let config = self.config.as_ref()?;
        let rule = config.rules.get(rule)?;
        let settings = rule.global.as_ref()?;
        Some(global::verdict(rule, settings, answer))
    }
}

impl Context for RateLimitHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some((token, rule)) = self.pending else {
            return;
        };
        if token != token_id {
            return;
        }
        self.pending = None;
        let body = if status_code == 0 {
            self.get_grpc_call_response_body(0, response_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let answer = if status_code == 0 {
            Ok(body.as_slice())
        } else {
            Err(global::Failure::Status(status_code))
        };
        let Some(verdict) = self.global_verdict(rule, answer) else {
            self.resume_http_request();
            return;
        };
        if self.apply(verdict) {
            self.resume_http_request();
        }
    }
}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let mut verdict = request::check(&config, &self.prefix, &ProxyHost);
        let call = verdict.call.take();
        if !self.apply(verdict) {
            return Action::Pause;
        }
        let Some(call) = call else {
            return Action::Continue;
        };
        let Some(settings) = config.rules.get(call.rule).and_then(|r| r.global.as_ref()) else {
            return Action::Continue;
        };
        self.metrics.global_calls.inc();
        match self.dispatch_grpc_call(
            &settings.cluster,
            global::SERVICE,
            global::METHOD,
            Vec::new(),
            Some(&call.message),
            Duration::from_millis(settings.timeout_ms),
        ) {
            Ok(token) => {
                self.pending = Some((token, call.rule));
                Action::Pause
            }
            Err(status) => {
                let failure = global::Failure::Dispatch(format!("{status:?}"));
                let verdict = self.global_verdict(call.rule, Err(failure));
                match verdict.map(|verdict| self.apply(verdict)) {
                    Some(false) => Action::Pause,
                    _ => Action::Continue,
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if name.starts_with("x-ratelimit-") {
                // Single-value fields: ours replace any the upstream sent.
                self.set_http_response_header(&name, Some(&value));
            } else {
                // Structured-field lists: an upstream's own items stay alongside ours.
                self.add_http_response_header(&name, &value);
            }
        }
        Action::Continue
    }
}
