//! The rate-limit filter on the wasmgate frame: decide from shared data (or ask a rate limit
//! service), then reply 429 or add the rate-limit headers to the response.

use crate::config::{self, Config, FILTER};
use crate::global;
use crate::request::{self, Count, Verdict};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::request_info_reading;
use wasmgate_core::Selected;
use wasmgate_core::{Answer, Callout, ConfigError, Outcome};
use wasmgate_host::{select, Counter, Cx, Filter, Setup, Uses};

/// The filter's counters (`wasmgate_rate_limit_<what>`, README "Metrics").
#[derive(Debug, Clone, Copy)]
struct Metrics {
    /// `requests_total` by `outcome`: allowed, limited, shadow_limited.
    requests: Outcomes,
    keys_evicted: Counter,
    table_overflow: Counter,
    missing_key: Counter,
    errors: Counter,
    global_success: Counter,
    global_failure: Counter,
    unavailable: Counter,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        let global = |outcome| setup.counter_with("global_calls_total", &[("outcome", outcome)]);
        Self {
            requests: Outcomes::define(setup, "requests_total", &[], ALL_OUTCOMES),
            keys_evicted: setup.counter("keys_evicted_total"),
            table_overflow: setup.counter("table_overflow_total"),
            missing_key: setup.counter("missing_key_total"),
            errors: setup.counter("errors_total"),
            global_success: global("success"),
            global_failure: global("failure"),
            unavailable: setup.counter("unavailable_total"),
        }
    }
}

/// One metric's counters by `outcome`; a no-op counter for an outcome that cannot happen
/// (`shadow_limited` without shadow mode, `allowed` of a limit).
#[derive(Debug, Clone, Copy, Default)]
struct Outcomes {
    allowed: Counter,
    limited: Counter,
    shadow_limited: Counter,
}

impl Outcomes {
    /// Defines `what` with `labels` and `outcome=<o>` for each of `outcomes`.
    fn define(setup: &Setup<'_>, what: &str, labels: &[(&str, &str)], outcomes: &[&str]) -> Self {
        let define = |outcome: &str| {
            if !outcomes.contains(&outcome) {
                return Counter::default();
            }
            // Labels in the order of `metrics::LABELS`: `outcome` first.
            let mut all = vec![("outcome", outcome)];
            all.extend_from_slice(labels);
            setup.counter_with(what, &all)
        };
        Self {
            allowed: define("allowed"),
            limited: define("limited"),
            shadow_limited: define("shadow_limited"),
        }
    }

    /// The counter of a verdict's outcome, if it is one of these.
    fn of(&self, count: Option<Count>) -> Option<Counter> {
        match count? {
            Count::Allowed => Some(self.allowed),
            Count::Limited => Some(self.limited),
            Count::ShadowLimited => Some(self.shadow_limited),
            _ => None,
        }
    }
}

/// A named rule's counters: `rule_requests_total{rule, outcome}`, and per local limit
/// `limit_requests_total{rule, limit, outcome}` of the requests it refused (`limited`) or
/// would have refused (`shadow_limited`).
#[derive(Debug, Clone, Default)]
struct RuleMetrics {
    requests: Outcomes,
    /// One per limit of the rule.
    limits: Vec<Outcomes>,
}

impl RuleMetrics {
    fn define(setup: &Setup<'_>, rule: &config::Rule) -> Self {
        let name = rule.name.as_str();
        let (outcomes, refusals): (&[&str], &[&str]) = if rule.shadow.is_some() {
            (ALL_OUTCOMES, &["limited", "shadow_limited"])
        } else {
            (&["allowed", "limited"], &["limited"])
        };
        Self {
            requests: Outcomes::define(setup, "rule_requests_total", &[("rule", name)], outcomes),
            limits: rule
                .limits
                .iter()
                .map(|l| {
                    let labels = [("rule", name), ("limit", l.name.as_str())];
                    Outcomes::define(setup, "limit_requests_total", &labels, refusals)
                })
                .collect(),
        }
    }
}

/// The `outcome` values of `requests_total`.
const ALL_OUTCOMES: &[&str] = &["allowed", "limited", "shadow_limited"];

/// One configuration: the rules, the counters and this plugin's slot table in shared data.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    /// By rule index; `None` for a disabled or unnamed rule (a rule's counters are opt-in by
    /// naming it: stable labels, and no extra counter update per request of other rules).
    rule_metrics: Vec<Option<RuleMetrics>>,
    /// Shared-data key prefix of the slot table; it outlives configuration changes, and each
    /// rule's fingerprint in its entries restarts a changed rule.
    prefix: String,
}

/// One stream: the headers for the response, or the rule whose global call is outstanding.
pub struct RateLimit {
    plugin: Rc<Plugin>,
    response_headers: Vec<(String, String)>,
    pending_rule: Option<usize>,
}

/// True for a gRPC request as Envoy tells one (`content-type` `application/grpc`, or with a
/// `+` or `;` suffix): Envoy turns a local reply to it into a gRPC status.
fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.as_bytes();
        let base = b"application/grpc";
        ct.len() >= base.len()
            && ct[..base.len()].eq_ignore_ascii_case(base)
            && matches!(ct.get(base.len()), None | Some(b'+' | b';'))
    })
}

impl RateLimit {
    /// Counts the verdict and keeps its response headers; the reply, if the request is refused.
    fn apply(&mut self, cx: &mut Cx<'_>, rule: usize, verdict: Verdict) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let m = &plugin.metrics;
        let rm = plugin.rule_metrics.get(rule).and_then(Option::as_ref);
        if verdict.evicted {
            cx.count(m.keys_evicted);
        }
        if verdict.overflow {
            cx.count(m.table_overflow);
        }
        if let (Some(rm), true) = (rm, verdict.refused != 0) {
            // Over a limit and refused, or passed in shadow mode.
            let shadow = verdict.reply.is_none();
            for (i, limit) in rm.limits.iter().enumerate() {
                if verdict.refused & (1 << i) != 0 {
                    cx.count(if shadow {
                        limit.shadow_limited
                    } else {
                        limit.limited
                    });
                }
            }
        }
        for (name, value) in verdict.request_headers {
            cx.request.set(name, value);
        }
        if let Some(counter) = m.requests.of(verdict.count) {
            cx.count(counter);
        }
        if let Some(counter) = rm.and_then(|rm| rm.requests.of(verdict.count)) {
            cx.count(counter);
        }
        match verdict.count {
            Some(Count::MissingKey) => cx.count(m.missing_key),
            Some(Count::Error) => cx.count(m.errors),
            Some(Count::Unavailable) => cx.count(m.unavailable),
            _ => {}
        }
        self.response_headers = verdict.response_headers;
        match verdict.reply {
            None => Outcome::Continue,
            Some(mut reply) => {
                if verdict.count == Some(Count::Limited)
                    && is_grpc(cx.host().request_header("content-type").as_deref())
                {
                    // Envoy answers a gRPC request's local reply as a gRPC status, and keeps a
                    // grpc-status the reply sets: RESOURCE_EXHAUSTED, as Envoy's own rate limit
                    // filters with `rate_limited_as_resource_exhausted` (else UNAVAILABLE, which
                    // gRPC clients retry).
                    reply.headers.push(("grpc-status".into(), "8".into()));
                }
                Outcome::Reply(reply)
            }
        }
    }
}

impl Filter for RateLimit {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses {
        bodies: false,
        callouts: true,
        waits: false,
    };

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let config = config::parse(json)?;
        let rule_metrics = config
            .policies
            .rules()
            .iter()
            .map(|r| {
                r.policy
                    .as_ref()
                    .filter(|rule| rule.named)
                    .map(|rule| RuleMetrics::define(setup, rule))
            })
            .collect();
        Ok(Plugin {
            config,
            rule_metrics,
            metrics: Metrics::define(setup),
            prefix: setup.plugin_namespace().prefix().to_string(),
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            response_headers: Vec::new(),
            pending_rule: None,
        }
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let config = &plugin.config;
        let mut info = request_info_reading(
            cx.host(),
            request::needs_route(config),
            &config.header_needs,
        );
        let selected = match select(cx, &config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        let Selected::Rule { index, policy } = selected else {
            // Disabled by a rule, or no rule matched: the defaults limit nothing.
            return Outcome::Continue;
        };
        if let Some(name) = policy.shadow.as_ref().and_then(|s| s.header.as_ref()) {
            // The marker is ours: a client's copy must not reach the upstream.
            cx.request.remove(name.clone());
        }
        let mut verdict = request::check(config, &plugin.prefix, cx.host(), &info, index, policy);
        let call = verdict.call.take();
        let outcome = self.apply(cx, index, verdict);
        let (Outcome::Continue, Some(call)) = (&outcome, call) else {
            return outcome;
        };
        let Some(settings) = plugin
            .config
            .rule(call.rule)
            .and_then(|r| r.global.as_ref())
        else {
            return outcome;
        };
        self.pending_rule = Some(call.rule);
        Outcome::Call(Callout::Grpc {
            cluster: settings.cluster.clone(),
            service: global::SERVICE,
            method: global::METHOD,
            message: call.message,
            timeout: Duration::from_millis(settings.timeout_ms),
        })
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let Some(index) = self.pending_rule.take() else {
            return Outcome::Continue;
        };
        let Some(rule) = plugin.config.rule(index) else {
            return Outcome::Continue;
        };
        let Some(settings) = rule.global.as_ref() else {
            return Outcome::Continue;
        };
        let answer = match &answer {
            Answer::Grpc { status: 0, message } => Ok(message.as_slice()),
            Answer::Grpc { status, .. } => Err(global::Failure::Status(*status)),
            Answer::NotSent(reason) => Err(global::Failure::Dispatch(reason.clone())),
            Answer::Http { .. } | Answer::TooLarge { .. } => {
                Err(global::Failure::Dispatch("not a gRPC answer".into()))
            }
        };
        let verdict = global::verdict(rule, settings, answer);
        let m = &plugin.metrics;
        cx.count(match verdict.count {
            Some(Count::FailedOpen | Count::Unavailable) => m.global_failure,
            _ => m.global_success,
        });
        self.apply(cx, index, verdict)
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if name.starts_with("x-ratelimit-") {
                // Single-value fields: ours replace any the upstream sent.
                cx.response.set(name, value);
            } else {
                // Structured-field lists: an upstream's own items stay alongside ours.
                cx.response.add(name, value);
            }
        }
        Outcome::Continue
    }
}

#[cfg(test)]
mod tests;
