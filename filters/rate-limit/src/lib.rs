//! wasmgate rate-limit: token bucket, fixed and sliding window limits per key, exact across
//! Envoy workers. This file is the proxy-wasm glue only; decisions live in the other modules.

pub mod algorithm;
pub mod config;
pub mod headers;
pub mod key;
pub mod store;

use config::{Config, OnMissingKey, FILTER};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;
use wasmgate_core::host::{request_info, Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};
use wasmgate_core::LocalReply;

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
        self.check(&config, &ProxyHost)
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.add_http_response_header(&name, &value);
        }
        Action::Continue
    }
}

impl RateLimitHttp {
    fn check<H: Host>(&mut self, config: &Config, host: &H) -> Action {
        let info = request_info(host);
        let Some(rule) = wasmgate_core::rules::first_match(&config.rules, &info) else {
            return Action::Continue;
        };
        if !rule.enabled {
            return Action::Continue;
        }
        let raw_path = host.request_header(":path").unwrap_or_default();
        let source = host.property_string(&["source", "address"]);
        let input = key::KeyInput {
            info: &info,
            raw_path: &raw_path,
            source_address: source.as_deref(),
            xff_num_trusted_hops: config.xff_num_trusted_hops,
        };
        let key = match key::build(&rule.key, &input) {
            Ok(key) => key,
            Err(part) => match rule.on_missing_key {
                OnMissingKey::Allow => {
                    log::debug!("rate-limit: no {part} for the key; passing unlimited");
                    return Action::Continue;
                }
                OnMissingKey::Shared => "\u{0}missing".to_string(),
                OnMissingKey::Deny => {
                    self.metrics.missing_key.inc();
                    host.send_reply(&LocalReply::new(
                        400,
                        "missing_rate_limit_key",
                        format!("The request has no {part} to rate-limit it by."),
                    ));
                    return Action::Pause;
                }
            },
        };
        let full_key = format!("{}|{key}", rule.fingerprint);
        let slot = store::slot_key(&self.prefix, &full_key, config.max_keys);
        let now = wasmgate_core::clock::unix_nanos(host.now());
        let decision = match store::decide(host, &slot, &full_key, &rule.limits, now) {
            Ok(decision) => decision,
            Err(err) => {
                // Fail open: a shared-data failure must not turn into an outage.
                log::warn!("rate-limit: shared data update failed ({err:?}); passing the request");
                self.metrics.errors.inc();
                return Action::Continue;
            }
        };
        if decision.evicted {
            self.metrics.keys_evicted.inc();
        }
        let headers =
            headers::rate_limit_headers(rule.response_headers, &rule.limits, &decision.reports);
        if decision.allowed {
            self.metrics.allowed.inc();
            self.response_headers = headers;
            return Action::Continue;
        }
        if rule.shadow {
            log::debug!("rate-limit: over the limit in shadow mode; passing");
            self.metrics.shadow_limited.inc();
            self.response_headers = headers;
            return Action::Continue;
        }
        self.metrics.limited.inc();
        let retry_after = headers::retry_after(decision.retry_after_ns);
        let mut reply = LocalReply::new(
            429,
            "rate_limited",
            format!("Too many requests; retry after {retry_after} seconds."),
        )
        .with_header("retry-after", retry_after);
        for (name, value) in headers {
            reply = reply.with_header(name, value);
        }
        host.send_reply(&reply);
        Action::Pause
    }
}
