//! wasmgate rate-limit: token bucket, fixed and sliding window limits per key, exact across
//! Envoy workers. This file is the proxy-wasm glue only; decisions live in the other modules.

pub mod algorithm;
pub mod config;
pub mod headers;
pub mod key;
pub mod request;
pub mod store;

use config::{Config, FILTER};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use request::Count;
use std::rc::Rc;
use wasmgate_core::host::{Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RateLimitRoot::default()) });
}}

/// The filter's counters (`wasmgate_rate_limit_<what>`).
#[derive(Debug, Clone, Copy, Default)]
struct Metrics {
    allowed: Counter,
    limited: Counter,
    shadow_limited: Counter,
    keys_evicted: Counter,
    missing_key: Counter,
    errors: Counter,
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
        }))
    }
}

struct RateLimitHttp {
    config: Option<Rc<Config>>,
    metrics: Metrics,
    prefix: Rc<str>,
    /// Rate-limit headers to add to the response of a request that went upstream.
    response_headers: Vec<(String, String)>,
}

impl Context for RateLimitHttp {}

impl HttpContext for RateLimitHttp {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let verdict = request::check(&config, &self.prefix, &ProxyHost);
        if verdict.evicted {
            self.metrics.keys_evicted.inc();
        }
        match verdict.count {
            Some(Count::Allowed) => self.metrics.allowed.inc(),
            Some(Count::Limited) => self.metrics.limited.inc(),
            Some(Count::ShadowLimited) => self.metrics.shadow_limited.inc(),
            Some(Count::MissingKey) => self.metrics.missing_key.inc(),
            Some(Count::Error) => self.metrics.errors.inc(),
            None => {}
        }
        self.response_headers = verdict.response_headers;
        match verdict.reply {
            Some(reply) => {
                ProxyHost.send_reply(&reply);
                Action::Pause
            }
            None => Action::Continue,
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
