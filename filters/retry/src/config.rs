//! Configuration: raw serde types (unknown fields rejected) compiled into a validated [`Config`].

use serde::Deserialize;
use std::time::Duration as StdDuration;
use wasmgate_core::config::ConfigError;
use wasmgate_core::host::HeaderNeeds;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{Duration, Match, Policies};

/// The filter's name in logs, metrics and shared-data keys.
pub const FILTER: &str = "retry";

/// The response header that reports the number of upstream attempts, unless configured.
pub const DEFAULT_ATTEMPTS_HEADER: &str = "x-wasmgate-retry-attempts";
/// Upper bound on `max_retries`: more is never a retry policy, it is a load generator.
pub const MAX_RETRIES_LIMIT: u32 = 10;

/// How retries are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Envoy's router retries, driven by the `x-envoy-*` request headers the filter sets.
    #[default]
    Router,
    /// The filter buffers the request and sends every attempt itself with `dispatch_http_call`.
    Filter,
}

/// What to do with requests whose method is not idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum NonIdempotent {
    /// Never retried.
    Never,
    /// Retried only when the request carries the idempotency key header.
    #[default]
    WithIdempotencyKey,
    /// Always retried (the operator vouches for the upstream).
    Always,
}

/// The retry conditions, as Envoy spells them in `x-envoy-retry-on`, then the gRPC ones as in
/// `x-envoy-retry-grpc-on`.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-4xx",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The gRPC retry conditions and the `grpc-status` each one retries.
pub const GRPC_RETRY_ON: &[(&str, u32)] = &[
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

/// True for a gRPC retry condition (router mode sets it in `x-envoy-retry-grpc-on`).
pub fn is_grpc_condition(name: &str) -> bool {
    GRPC_RETRY_ON.iter().any(|(n, _)| *n == name)
}

/// Which failures are retried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// The condition names, validated against [`RETRY_ON`], in configured order.
    pub names: Vec<String>,
    /// Status codes retried with `retriable-status-codes`.
    pub status_codes: Vec<u16>,
}

impl RetryOn {
    /// True when `name` is one of the conditions.
    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// True when a `grpc-status` is retried.
    pub fn has_grpc_status(&self, grpc_status: u32) -> bool {
        GRPC_RETRY_ON
            .iter()
            .any(|(n, code)| *code == grpc_status && self.has(n))
    }
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry waits up to this long.
    pub base: StdDuration,
    /// No wait is longer than this (Retry-After is capped at ten times this).
    pub max: StdDuration,
}

/// The retry budget, shared by all workers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries may be at most this fraction of requests over the last 10 s.
    pub ratio: f64,
    /// This many retries per second are always allowed.
    pub min_per_second: u32,
}

/// What one circuit covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One circuit per upstream: the cluster the request was routed to (`xds.cluster_name`).
    #[default]
    Cluster,
    /// One circuit per Envoy route (`xds.route_name`).
    Route,
}

/// The circuit breaker of the top level or of a rule that sets one, shared by all workers;
/// one circuit per [`Scope`] value.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// What one circuit covers.
    pub scope: Scope,
    /// Consecutive failed requests that open the circuit (consecutive tripping).
    pub failure_threshold: Option<u32>,
    /// Failed share of the calls in the window that opens the circuit (rate tripping).
    pub failure_rate: Option<f64>,
    /// A request slower than this is a slow call.
    pub slow_call_duration: Option<StdDuration>,
    /// Slow share of the calls in the window that opens the circuit.
    pub slow_call_rate: Option<f64>,
    /// Rates decide only once the window holds this many calls.
    pub minimum_calls: u32,
    /// The sliding window the rates are taken over.
    pub window: StdDuration,
    /// How long the circuit stays open after its first trip.
    pub open_for: StdDuration,
    /// Repeated trips (a failed probe) double the open time up to this.
    pub max_open_for: StdDuration,
    /// How many probe requests are let through while half-open; all must succeed to close.
    pub half_open_requests: u32,
    /// Final statuses that count as failures (a request without any response always does).
    pub failure_status_codes: Vec<u16>,
}

/// The attempt count the router of a proxy in front sets on its upstream requests (with
/// `include_request_attempt_count`), read by `skip_retried_requests`.
pub const ATTEMPT_COUNT: &str = "x-envoy-attempt-count";

/// The request header that marks a filter-mode retry re-entering Envoy through the loopback
/// cluster, with the configuration's random token: such a request goes to the router once,
/// without retries of its own (loop guard), and is not counted again.
pub const ATTEMPT_MARKER: &str = "x-wasmgate-retry-attempt";

/// Filter mode: where and how the filter sends its own attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMode {
    /// The Envoy cluster the filter's retries are sent to: it must lead back into a listener
    /// with the same route table (an internal listener), so every retry is routed, rewritten and
    /// load-balanced like the first attempt.
    pub loopback_cluster: String,
    /// Overall time for all attempts and waits of one request.
    pub timeout: StdDuration,
    /// Larger request bodies are not buffered: the request gets one attempt through the router.
    pub max_body_bytes: usize,
}

/// The effective policy for one request: the defaults with a rule's overrides applied. A rule
/// with `"enabled": false` has none (the request passes untouched).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// What is retried.
    pub retry_on: RetryOn,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<StdDuration>,
    /// Waits between attempts (filter mode).
    pub backoff: Backoff,
    /// Wait what an upstream's `Retry-After` (or `RateLimit` `t`, `X-RateLimit-Reset`) asks
    /// for (filter mode).
    pub honor_retry_after: bool,
    /// A response asking for a longer wait is not retried: it goes to the client at once.
    pub max_retry_after: StdDuration,
    /// Retry safety for non-idempotent methods.
    pub non_idempotent: NonIdempotent,
    /// Router mode: the router sends the next attempt when the per-try timeout fires without
    /// cancelling the one in flight (`x-envoy-hedge-on-per-try-timeout`); the first answer wins.
    pub hedge_on_per_try_timeout: bool,
    /// A request that already is a retry (`x-envoy-attempt-count` above 1, set by the router of
    /// a proxy in front) gets no retries here, so layered proxies do not multiply attempts.
    pub skip_retried_requests: bool,
    /// The breaker of this policy, if any.
    pub breaker: Option<BreakerConfig>,
    /// The shared-data key part of this policy's breaker: `default` for the top-level
    /// `circuit_breaker`, `rule<N>` for a rule that sets its own (a rule inheriting the top
    /// level's shares its circuits).
    pub breaker_id: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Router or filter mode.
    pub mode: Mode,
    /// The defaults and the ordered rules (the first match wins; `"enabled": false` rules have
    /// no policy).
    pub policies: Policies<Policy>,
    /// Request header whose presence makes a non-idempotent request retriable.
    pub idempotency_key_header: String,
    /// Response header reporting the attempt count when retries happened.
    pub attempts_header: String,
    /// The shared retry budget, if any.
    pub budget: Option<BudgetConfig>,
    /// Filter-mode settings (present when `mode` is `filter`).
    pub filter_mode: Option<FilterMode>,
    /// The request headers a request's decision reads.
    pub header_needs: HeaderNeeds,
}

impl Config {
    /// The most request-body bytes filter mode copies (0 outside filter mode).
    pub fn max_body_bytes(&self) -> usize {
        self.filter_mode.as_ref().map_or(0, |f| f.max_body_bytes)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    base: Duration,
    max: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBudget {
    ratio: f64,
    #[serde(default)]
    min_per_second: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    #[serde(default)]
    scope: Scope,
    failure_threshold: Option<u32>,
    failure_rate: Option<f64>,
    slow_call_duration: Option<Duration>,
    slow_call_rate: Option<f64>,
    minimum_calls: Option<u32>,
    window: Option<Duration>,
    #[serde(default = "default_open_for")]
    open_for: Duration,
    max_open_for: Option<Duration>,
    #[serde(default = "default_half_open")]
    half_open_requests: u32,
    #[serde(default = "default_failure_codes")]
    failure_status_codes: Vec<u16>,
}

fn default_open_for() -> Duration {
    Duration(StdDuration::from_secs(30))
}
fn default_half_open() -> u32 {
    1
}
fn default_failure_codes() -> Vec<u16> {
    vec![502, 503, 504]
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawFilterMode {
    /// Removed: attempts went straight to this cluster, skipping the route table.
    cluster: Option<String>,
    loopback_cluster: Option<String>,
    #[serde(default = "default_filter_timeout")]
    timeout: Duration,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
}

fn default_filter_timeout() -> Duration {
    Duration(StdDuration::from_secs(5))
}
fn default_max_body() -> usize {
    65_536
}

/// The policy fields, shared by the top level and rules (absent: inherited).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_retries: Option<u32>,
    retry_on: Option<Vec<String>>,
    retriable_status_codes: Option<Vec<u16>>,
    per_try_timeout: Option<Duration>,
    backoff: Option<RawBackoff>,
    honor_retry_after: Option<bool>,
    max_retry_after: Option<Duration>,
    non_idempotent: Option<NonIdempotent>,
    hedge_on_per_try_timeout: Option<bool>,
    skip_retried_requests: Option<bool>,
    circuit_breaker: Option<RawBreaker>,
}

/// The raw top-level document.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    #[serde(default)]
    mode: Mode,
    max_retries: Option<u32>,
    retry_on: Option<Vec<String>>,
    retriable_status_codes: Option<Vec<u16>>,
    per_try_timeout: Option<Duration>,
    backoff: Option<RawBackoff>,
    honor_retry_after: Option<bool>,
    max_retry_after: Option<Duration>,
    non_idempotent: Option<NonIdempotent>,
    hedge_on_per_try_timeout: Option<bool>,
    skip_retried_requests: Option<bool>,
    circuit_breaker: Option<RawBreaker>,
    idempotency_key_header: Option<String>,
    attempts_header: Option<String>,
    budget: Option<RawBudget>,
    filter_mode: Option<RawFilterMode>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matcher: Match,
    enabled: Option<bool>,
    max_retries: Option<u32>,
    retry_on: Option<Vec<String>>,
    retriable_status_codes: Option<Vec<u16>>,
    per_try_timeout: Option<Duration>,
    backoff: Option<RawBackoff>,
    honor_retry_after: Option<bool>,
    max_retry_after: Option<Duration>,
    non_idempotent: Option<NonIdempotent>,
    hedge_on_per_try_timeout: Option<bool>,
    skip_retried_requests: Option<bool>,
    circuit_breaker: Option<RawBreaker>,
}

/// Parses and compiles the JSON configuration.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    compile(wasmgate_core::config::parse(json)?)
}

/// Validates a parsed configuration.
pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let top = RawPolicy {
        max_retries: raw.max_retries,
        retry_on: raw.retry_on,
        retriable_status_codes: raw.retriable_status_codes,
        per_try_timeout: raw.per_try_timeout,
        backoff: raw.backoff,
        honor_retry_after: raw.honor_retry_after,
        max_retry_after: raw.max_retry_after,
        non_idempotent: raw.non_idempotent,
        hedge_on_per_try_timeout: raw.hedge_on_per_try_timeout,
        skip_retried_requests: raw.skip_retried_requests,
        circuit_breaker: raw.circuit_breaker,
    };
    let builtin = Policy {
        max_retries: 2,
        retry_on: RetryOn {
            names: vec![
                "gateway-error".into(),
                "connect-failure".into(),
                "reset".into(),
            ],
            status_codes: Vec::new(),
        },
        per_try_timeout: None,
        backoff: Backoff {
            base: StdDuration::from_millis(25),
            max: StdDuration::from_millis(250),
        },
        honor_retry_after: true,
        max_retry_after: StdDuration::from_secs(10),
        non_idempotent: NonIdempotent::WithIdempotencyKey,
        hedge_on_per_try_timeout: false,
        skip_retried_requests: false,
        breaker: None,
        breaker_id: "default".into(),
    };
    let default = apply(&builtin, &top, "", "default".into(), raw.mode)?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let prefix = format!("rules[{i}].");
        let fields = RawPolicy {
            max_retries: rule.max_retries,
            retry_on: rule.retry_on,
            retriable_status_codes: rule.retriable_status_codes,
            per_try_timeout: rule.per_try_timeout,
            backoff: rule.backoff,
            honor_retry_after: rule.honor_retry_after,
            max_retry_after: rule.max_retry_after,
            non_idempotent: rule.non_idempotent,
            hedge_on_per_try_timeout: rule.hedge_on_per_try_timeout,
            skip_retried_requests: rule.skip_retried_requests,
            circuit_breaker: rule.circuit_breaker,
        };
        // A disabled rule's fields are still validated, and it keeps its place in the numbering
        // of the breakers (`rule<N>`).
        let policy = apply(&default, &fields, &prefix, format!("rule{i}"), raw.mode)?;
        rules.push(PolicyRule {
            matcher: rule.matcher,
            policy: rule.enabled.unwrap_or(true).then_some(policy),
        });
    }
    let idempotency_key_header = header_name(
        raw.idempotency_key_header.as_deref(),
        "idempotency-key",
        "idempotency_key_header",
    )?;
    let attempts_header = header_name(
        raw.attempts_header.as_deref(),
        DEFAULT_ATTEMPTS_HEADER,
        "attempts_header",
    )?;
    let budget = match raw.budget {
        None => Some(BudgetConfig {
            ratio: 0.2,
            min_per_second: 5,
        }),
        Some(b) => {
            if !(b.ratio.is_finite() && (0.0..=1.0).contains(&b.ratio)) {
                return Err(ConfigError::new(
                    "budget.ratio",
                    "must be a number from 0 to 1",
                ));
            }
            Some(BudgetConfig {
                ratio: b.ratio,
                min_per_second: b.min_per_second,
            })
        }
    };
    let filter_mode = match raw.filter_mode {
        None => None,
        Some(f) => {
            if f.cluster.is_some() {
                return Err(ConfigError::new(
                    "filter_mode.cluster",
                    "was removed: retries sent straight to one cluster skipped the route table \
                     (routing, rewrites, weighted clusters); name a cluster that leads back into \
                     the route table in filter_mode.loopback_cluster (see the retry README)",
                ));
            }
            let loopback_cluster = f.loopback_cluster.unwrap_or_default();
            if loopback_cluster.trim().is_empty() {
                return Err(ConfigError::new(
                    "filter_mode.loopback_cluster",
                    "must name the Envoy cluster that leads back into the route table",
                ));
            }
            if f.timeout.0.is_zero() {
                return Err(ConfigError::new(
                    "filter_mode.timeout",
                    "must be greater than zero",
                ));
            }
            Some(FilterMode {
                loopback_cluster,
                timeout: f.timeout.0,
                max_body_bytes: f.max_body_bytes,
            })
        }
    };
    if raw.mode == Mode::Filter && filter_mode.is_none() {
        return Err(ConfigError::new(
            "filter_mode",
            "mode \"filter\" needs filter_mode with at least a loopback_cluster",
        ));
    }
    let policies = Policies::new(default, rules).with_paths(raw.paths);
    Ok(Config {
        header_needs: header_needs(raw.mode, &idempotency_key_header, &policies),
        mode: raw.mode,
        policies,
        idempotency_key_header,
        attempts_header,
        budget,
        filter_mode,
    })
}

/// The request headers a request's decision reads: router mode reads the method, the
/// idempotency key and what the rules match on; filter mode keeps every header to replay it.
fn header_needs(
    mode: Mode,
    idempotency_key_header: &str,
    policies: &Policies<Policy>,
) -> HeaderNeeds {
    if mode == Mode::Filter {
        return HeaderNeeds::All;
    }
    let mut names = vec![":method".to_string(), idempotency_key_header.to_string()];
    if policies.all().any(|p| p.skip_retried_requests) {
        names.push(ATTEMPT_COUNT.to_string());
    }
    policies.header_needs(names)
}

fn header_name(value: Option<&str>, default: &str, path: &str) -> Result<String, ConfigError> {
    let name = value.unwrap_or(default).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(ConfigError::new(
            path,
            format!("invalid header name {name:?}"),
        ))
    }
}

fn status_codes(codes: &[u16], path: &str) -> Result<Vec<u16>, ConfigError> {
    for (i, code) in codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                format!("{code} is not an HTTP status code (100-599)"),
            ));
        }
    }
    Ok(codes.to_vec())
}

fn apply(
    base: &Policy,
    raw: &RawPolicy,
    prefix: &str,
    breaker_id: String,
    mode: Mode,
) -> Result<Policy, ConfigError> {
    let at = |field: &str| format!("{prefix}{field}");
    let mut policy = base.clone();
    if let Some(n) = raw.max_retries {
        if n > MAX_RETRIES_LIMIT {
            return Err(ConfigError::new(
                at("max_retries"),
                format!("at most {MAX_RETRIES_LIMIT} retries"),
            ));
        }
        policy.max_retries = n;
    }
    if let Some(names) = &raw.retry_on {
        for (i, name) in names.iter().enumerate() {
            if !RETRY_ON.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("{}[{i}]", at("retry_on")),
                    format!(
                        "unknown retry condition {name:?} (one of {})",
                        RETRY_ON.join(", ")
                    ),
                ));
            }
            if mode == Mode::Filter && is_grpc_condition(name) {
                return Err(ConfigError::new(
                    format!("{}[{i}]", at("retry_on")),
                    "gRPC conditions need router mode: Envoy turns a filter's own answer to a \
                     gRPC request into a trailers-only error, so filter mode gives gRPC requests \
                     one attempt",
                ));
            }
        }
        policy.retry_on.names = names.clone();
    }
    if let Some(codes) = &raw.retriable_status_codes {
        policy.retry_on.status_codes = status_codes(codes, &at("retriable_status_codes"))?;
    }
    if policy.retry_on.has("retriable-status-codes") && policy.retry_on.status_codes.is_empty() {
        return Err(ConfigError::new(
            at("retriable_status_codes"),
            "retry_on has \"retriable-status-codes\" but no status codes are listed",
        ));
    }
    if let Some(t) = raw.per_try_timeout {
        if t.0.is_zero() {
            return Err(ConfigError::new(
                at("per_try_timeout"),
                "must be greater than zero",
            ));
        }
        policy.per_try_timeout = Some(t.0);
    }
    if let Some(b) = &raw.backoff {
        if b.base.0.is_zero() {
            return Err(ConfigError::new(
                at("backoff.base"),
                "must be greater than zero",
            ));
        }
        if b.max.0 < b.base.0 {
            return Err(ConfigError::new(
                at("backoff.max"),
                "must not be shorter than backoff.base",
            ));
        }
        policy.backoff = Backoff {
            base: b.base.0,
            max: b.max.0,
        };
    }
    if let Some(h) = raw.honor_retry_after {
        policy.honor_retry_after = h;
    }
    if let Some(max) = raw.max_retry_after {
        if max.0.is_zero() {
            return Err(ConfigError::new(
                at("max_retry_after"),
                "must be greater than zero (honor_retry_after: false ignores Retry-After)",
            ));
        }
        if !policy.honor_retry_after {
            return Err(ConfigError::new(
                at("max_retry_after"),
                "has no effect with honor_retry_after: false",
            ));
        }
        policy.max_retry_after = max.0;
    }
    if let Some(n) = raw.non_idempotent {
        policy.non_idempotent = n;
    }
    if let Some(s) = raw.skip_retried_requests {
        policy.skip_retried_requests = s;
    }
    if let Some(h) = raw.hedge_on_per_try_timeout {
        policy.hedge_on_per_try_timeout = h;
    }
    if policy.hedge_on_per_try_timeout {
        if mode == Mode::Filter {
            return Err(ConfigError::new(
                at("hedge_on_per_try_timeout"),
                "hedging is Envoy's router's: router mode only",
            ));
        }
        if policy.per_try_timeout.is_none() {
            return Err(ConfigError::new(
                at("hedge_on_per_try_timeout"),
                "needs a per_try_timeout: hedging starts the next attempt when it fires",
            ));
        }
    }
    if let Some(cb) = &raw.circuit_breaker {
        policy.breaker_id = breaker_id;
        policy.breaker = Some(breaker(cb, &at("circuit_breaker"))?);
    }
    Ok(policy)
}

fn share(value: Option<f64>, path: String) -> Result<Option<f64>, ConfigError> {
    match value {
        Some(r) if !(r.is_finite() && r > 0.0 && r <= 1.0) => Err(ConfigError::new(
            path,
            "must be a share of the calls, above 0 and at most 1",
        )),
        _ => Ok(value),
    }
}

/// Default rate tripping when no condition is given: half the calls failing, resilience4j's.
const DEFAULT_FAILURE_RATE: f64 = 0.5;

fn breaker(cb: &RawBreaker, path: &str) -> Result<BreakerConfig, ConfigError> {
    let at = |field: &str| format!("{path}.{field}");
    if cb.failure_threshold == Some(0) {
        return Err(ConfigError::new(
            at("failure_threshold"),
            "must be at least 1",
        ));
    }
    let mut failure_rate = share(cb.failure_rate, at("failure_rate"))?;
    let slow_call_rate = share(cb.slow_call_rate, at("slow_call_rate"))?;
    match (cb.slow_call_duration, slow_call_rate) {
        (Some(d), Some(_)) if d.0.is_zero() => {
            return Err(ConfigError::new(
                at("slow_call_duration"),
                "must be greater than zero",
            ));
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                at("slow_call_rate"),
                "slow_call_duration needs the slow_call_rate that opens the circuit",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                at("slow_call_duration"),
                "slow_call_rate needs the slow_call_duration that makes a call slow",
            ));
        }
        _ => {}
    }
    if cb.failure_threshold.is_none() && failure_rate.is_none() && slow_call_rate.is_none() {
        failure_rate = Some(DEFAULT_FAILURE_RATE);
    }
    let rates = failure_rate.is_some() || slow_call_rate.is_some();
    for (field, given) in [
        ("minimum_calls", cb.minimum_calls.is_some()),
        ("window", cb.window.is_some()),
    ] {
        if given && !rates {
            return Err(ConfigError::new(
                at(field),
                "has no effect without failure_rate or slow_call_rate",
            ));
        }
    }
    if cb.minimum_calls == Some(0) {
        return Err(ConfigError::new(at("minimum_calls"), "must be at least 1"));
    }
    let window = cb.window.map_or(StdDuration::from_secs(10), |w| w.0);
    if window < StdDuration::from_secs(1) {
        return Err(ConfigError::new(at("window"), "must be at least 1s"));
    }
    if cb.open_for.0.is_zero() {
        return Err(ConfigError::new(
            at("open_for"),
            "must be greater than zero",
        ));
    }
    let max_open_for = cb
        .max_open_for
        .map_or(cb.open_for.0.max(StdDuration::from_secs(300)), |m| m.0);
    if max_open_for < cb.open_for.0 {
        return Err(ConfigError::new(
            at("max_open_for"),
            "must not be shorter than open_for",
        ));
    }
    if cb.half_open_requests == 0 {
        return Err(ConfigError::new(
            at("half_open_requests"),
            "must be at least 1",
        ));
    }
    if cb.failure_status_codes.is_empty() {
        return Err(ConfigError::new(
            at("failure_status_codes"),
            "must list at least one status code",
        ));
    }
    Ok(BreakerConfig {
        scope: cb.scope,
        failure_threshold: cb.failure_threshold,
        failure_rate,
        slow_call_duration: cb.slow_call_duration.map(|d| d.0),
        slow_call_rate,
        minimum_calls: cb.minimum_calls.unwrap_or(20),
        window,
        open_for: cb.open_for.0,
        max_open_for,
        half_open_requests: cb.half_open_requests,
        failure_status_codes: status_codes(&cb.failure_status_codes, &at("failure_status_codes"))?,
    })
}

/// JSON Schema of the configuration, generated from the types above (feature `schema`, for the
/// `wasmgate` CLI; never built into the module).
#[cfg(feature = "schema")]
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_core::{RequestInfo, Selected};

    /// The merged policy of rule `i` (disabled rules included).
    pub(crate) fn rule(c: &Config, i: usize) -> &Policy {
        let rule = &c.policies.rules()[i];
        rule.policy.as_ref().expect("an enabled rule")
    }

    #[test]
    fn router_mode_reads_only_the_method_and_idempotency_key() {
        let needs = |json: &str| parse(json.as_bytes()).unwrap().header_needs;
        assert_eq!(
            needs(r#"{"mode": "router"}"#),
            HeaderNeeds::Only(vec![":method".into(), "idempotency-key".into()])
        );
        assert_eq!(
            needs(r#"{"mode": "router", "rules": [{"match": {"path_prefix": "/a"}}]}"#),
            HeaderNeeds::All,
            "a rule on the path makes three names"
        );
        assert_eq!(
            needs(r#"{"mode": "filter", "filter_mode": {"loopback_cluster": "c"}}"#),
            HeaderNeeds::All,
            "filter mode replays every header"
        );
    }

    const ISSUE_EXAMPLE: &str = r#"{
      "mode": "router",
      "max_retries": 2,
      "retry_on": ["5xx", "gateway-error", "connect-failure", "reset", "retriable-status-codes"],
      "retriable_status_codes": [503],
      "per_try_timeout": "500ms",
      "backoff": {"base": "25ms", "max": "250ms"},
      "honor_retry_after": true,
      "non_idempotent": "with_idempotency_key",
      "idempotency_key_header": "idempotency-key",
      "budget": {"ratio": 0.2, "min_per_second": 5},
      "circuit_breaker": {"failure_threshold": 5, "open_for": "30s", "half_open_requests": 1,
                          "failure_status_codes": [502, 503, 504]},
      "filter_mode": {"loopback_cluster": "retry_loopback", "timeout": "5s", "max_body_bytes": 65536},
      "rules": [{"match": {"methods": ["GET"]}, "max_retries": 3},
                {"match": {"path_prefix": "/pay/"}, "circuit_breaker": {"scope": "route"}}]
    }"#;

    fn err(json: &str) -> ConfigError {
        parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn issue_example_parses() {
        let c = parse(ISSUE_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.mode, Mode::Router);
        assert_eq!(c.policies.default_policy().max_retries, 2);
        assert_eq!(c.policies.default_policy().retry_on.status_codes, vec![503]);
        assert_eq!(
            c.policies.default_policy().per_try_timeout,
            Some(StdDuration::from_millis(500))
        );
        assert_eq!(rule(&c, 0).max_retries, 3);
        // Rules inherit the defaults they do not override, the circuits included (one per
        // cluster); a rule that sets its own breaker has its own circuits.
        assert_eq!(rule(&c, 0).retry_on, c.policies.default_policy().retry_on);
        assert_eq!(rule(&c, 0).breaker, c.policies.default_policy().breaker);
        assert_eq!(rule(&c, 0).breaker_id, "default");
        assert_eq!(c.policies.default_policy().breaker_id, "default");
        let default_cb = c.policies.default_policy().breaker.clone().unwrap();
        assert_eq!(default_cb.scope, Scope::Cluster);
        assert_eq!(default_cb.failure_threshold, Some(5));
        assert_eq!(
            default_cb.failure_rate, None,
            "consecutive only, as configured"
        );
        let own = rule(&c, 1).breaker.clone().unwrap();
        assert_eq!(own.scope, Scope::Route);
        assert_eq!(
            (own.failure_threshold, own.failure_rate, own.minimum_calls),
            (None, Some(0.5), 20),
            "no condition given: half the calls failing over the window"
        );
        assert_eq!(own.window, StdDuration::from_secs(10));
        assert_eq!(own.max_open_for, StdDuration::from_secs(300));
        assert_eq!(rule(&c, 1).breaker_id, "rule1");
        assert_eq!(
            c.policies.default_policy().max_retry_after,
            StdDuration::from_secs(10)
        );
        let fm = c.filter_mode.unwrap();
        assert_eq!(fm.loopback_cluster, "retry_loopback");
        assert_eq!(fm.max_body_bytes, 65536);
        assert_eq!(c.budget.unwrap().min_per_second, 5);
        assert_eq!(c.attempts_header, DEFAULT_ATTEMPTS_HEADER);
    }

    #[test]
    fn minimal_config_has_safe_defaults() {
        let c = parse(b"{}").unwrap();
        assert_eq!(c.mode, Mode::Router);
        assert_eq!(c.policies.default_policy().max_retries, 2);
        assert_eq!(
            c.policies.default_policy().non_idempotent,
            NonIdempotent::WithIdempotencyKey
        );
        assert!(c.policies.default_policy().honor_retry_after);
        assert_eq!(c.idempotency_key_header, "idempotency-key");
        assert!(c.budget.is_some());
        assert!(c.policies.default_policy().breaker.is_none());
        assert!(c.policies.rules().is_empty());
    }

    #[test]
    fn rules_select_policies() {
        let c = parse(ISSUE_EXAMPLE.as_bytes()).unwrap();
        let get = RequestInfo::new(None, "h", "/x", "GET", vec![]);
        let post = RequestInfo::new(None, "h", "/x", "POST", vec![]);
        let max_retries = |req| c.policies.select(req).policy().map(|p| p.max_retries);
        assert_eq!(max_retries(&get), Some(3));
        assert_eq!(max_retries(&post), Some(2));
        let c =
            parse(br#"{"rules": [{"match": {"path_prefix": "/h"}, "enabled": false}]}"#).unwrap();
        let h = RequestInfo::new(None, "h", "/h/live", "GET", vec![]);
        assert_eq!(c.policies.select(&h), Selected::Disabled);
        let other = RequestInfo::new(None, "h", "/health", "GET", vec![]);
        assert!(
            matches!(c.policies.select(&other), Selected::Default(_)),
            "a prefix matches whole segments"
        );
        // A disabled rule is still validated and keeps its number in the breaker ids.
        let e = err(r#"{"rules": [{"match": {}, "enabled": false, "max_retries": 99}]}"#);
        assert_eq!(e.path, "rules[0].max_retries");
        let c = parse(
            br#"{"rules": [{"match": {"path_prefix": "/h"}, "enabled": false},
                           {"match": {}, "circuit_breaker": {}}]}"#,
        )
        .unwrap();
        assert!(c.policies.rules()[0].policy.is_none());
        assert_eq!(rule(&c, 1).breaker_id, "rule1");
    }

    #[test]
    fn invalid_configs_name_their_path() {
        let cases = [
            (r#"{"mode": "both"}"#, "mode"),
            (r#"{"max_retries": 11}"#, "max_retries"),
            (r#"{"retry_on": ["5xx", "sometimes"]}"#, "retry_on[1]"),
            (
                r#"{"retry_on": ["retriable-status-codes"]}"#,
                "retriable_status_codes",
            ),
            (
                r#"{"retriable_status_codes": [503, 99]}"#,
                "retriable_status_codes[1]",
            ),
            (r#"{"per_try_timeout": "0ms"}"#, "per_try_timeout"),
            (r#"{"per_try_timeout": "5"}"#, "per_try_timeout"),
            (
                r#"{"backoff": {"base": "0ms", "max": "1s"}}"#,
                "backoff.base",
            ),
            (r#"{"backoff": {"base": "2s", "max": "1s"}}"#, "backoff.max"),
            (r#"{"non_idempotent": "sometimes"}"#, "non_idempotent"),
            (r#"{"budget": {"ratio": 1.5}}"#, "budget.ratio"),
            (r#"{"budget": {"ratio": -0.1}}"#, "budget.ratio"),
            (
                r#"{"circuit_breaker": {"failure_threshold": 0}}"#,
                "circuit_breaker.failure_threshold",
            ),
            (
                r#"{"circuit_breaker": {"open_for": "0s"}}"#,
                "circuit_breaker.open_for",
            ),
            (
                r#"{"circuit_breaker": {"half_open_requests": 0}}"#,
                "circuit_breaker.half_open_requests",
            ),
            (
                r#"{"circuit_breaker": {"failure_status_codes": []}}"#,
                "circuit_breaker.failure_status_codes",
            ),
            (
                r#"{"circuit_breaker": {"failure_status_codes": [600]}}"#,
                "circuit_breaker.failure_status_codes[0]",
            ),
            (r#"{"mode": "filter"}"#, "filter_mode"),
            (
                r#"{"filter_mode": {"loopback_cluster": " "}}"#,
                "filter_mode.loopback_cluster",
            ),
            (
                r#"{"filter_mode": {"loopback_cluster": "b", "timeout": "0s"}}"#,
                "filter_mode.timeout",
            ),
            (r#"{"filter_mode": {}}"#, "filter_mode.loopback_cluster"),
            // The old field sent retries straight to one cluster: refused, not ignored.
            (
                r#"{"filter_mode": {"cluster": "backend"}}"#,
                "filter_mode.cluster",
            ),
            (
                r#"{"filter_mode": {"cluster": "backend", "loopback_cluster": "l"}}"#,
                "filter_mode.cluster",
            ),
            (r#"{"max_retry_after": "0s"}"#, "max_retry_after"),
            (
                r#"{"honor_retry_after": false, "max_retry_after": "5s"}"#,
                "max_retry_after",
            ),
            (
                r#"{"honor_retry_after": false, "rules": [{"match": {}, "max_retry_after": "5s"}]}"#,
                "rules[0].max_retry_after",
            ),
            (
                r#"{"circuit_breaker": {"scope": "host"}}"#,
                "circuit_breaker.scope",
            ),
            (
                r#"{"circuit_breaker": {"failure_rate": 0}}"#,
                "circuit_breaker.failure_rate",
            ),
            (
                r#"{"circuit_breaker": {"failure_rate": 1.5}}"#,
                "circuit_breaker.failure_rate",
            ),
            (
                r#"{"circuit_breaker": {"slow_call_duration": "1s"}}"#,
                "circuit_breaker.slow_call_rate",
            ),
            (
                r#"{"circuit_breaker": {"slow_call_rate": 0.5}}"#,
                "circuit_breaker.slow_call_duration",
            ),
            (
                r#"{"circuit_breaker": {"slow_call_rate": 0.5, "slow_call_duration": "0s"}}"#,
                "circuit_breaker.slow_call_duration",
            ),
            (
                r#"{"circuit_breaker": {"failure_threshold": 3, "minimum_calls": 10}}"#,
                "circuit_breaker.minimum_calls",
            ),
            (
                r#"{"circuit_breaker": {"failure_threshold": 3, "window": "10s"}}"#,
                "circuit_breaker.window",
            ),
            (
                r#"{"circuit_breaker": {"minimum_calls": 0}}"#,
                "circuit_breaker.minimum_calls",
            ),
            (
                r#"{"circuit_breaker": {"window": "500ms"}}"#,
                "circuit_breaker.window",
            ),
            (
                r#"{"circuit_breaker": {"open_for": "10s", "max_open_for": "5s"}}"#,
                "circuit_breaker.max_open_for",
            ),
            (
                r#"{"hedge_on_per_try_timeout": true}"#,
                "hedge_on_per_try_timeout",
            ),
            (
                r#"{"mode": "filter", "filter_mode": {"loopback_cluster": "l"},
                    "rules": [{"match": {}, "retry_on": ["reset", "unavailable"]}]}"#,
                "rules[0].retry_on[1]",
            ),
            (
                r#"{"per_try_timeout": "1s", "rules": [{"match": {}, "hedge_on_per_try_timeout": true}],
                    "mode": "filter", "filter_mode": {"loopback_cluster": "l"}}"#,
                "rules[0].hedge_on_per_try_timeout",
            ),
            (
                r#"{"idempotency_key_header": "bad header"}"#,
                "idempotency_key_header",
            ),
            (r#"{"attempts_header": ""}"#, "attempts_header"),
            (r#"{"max_retrys": 1}"#, "max_retrys"),
            (
                r#"{"rules": [{"match": {}, "max_retries": 99}]}"#,
                "rules[0].max_retries",
            ),
            (
                r#"{"rules": [{"match": {}, "retry_on": ["x"]}]}"#,
                "rules[0].retry_on[0]",
            ),
            (
                r#"{"rules": [{"match": {}, "mode": "filter"}]}"#,
                "rules[0].mode",
            ),
            (r#"{"rules": [{"max_retries": 1}]}"#, "rules[0].match"),
            (
                r#"{"rules": [{"match": {"path_prefix": "x"}}]}"#,
                "rules[0].match",
            ),
        ];
        for (json, path) in cases {
            let e = err(json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn status_code_condition_checked_after_rule_merge() {
        // A rule that adds retriable-status-codes inherits the top-level codes.
        let c = parse(
            br#"{"retriable_status_codes": [409],
                 "rules": [{"match": {}, "retry_on": ["retriable-status-codes"]}]}"#,
        )
        .unwrap();
        assert_eq!(rule(&c, 0).retry_on.status_codes, vec![409]);
    }
}

#[cfg(test)]
mod shipped {
    use super::tests::rule;
    use super::*;
    use std::path::PathBuf;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn istio_plugin_config_parses() {
        let text = std::fs::read_to_string(repo().join("examples/istio/retry.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let json = serde_json::to_vec(&doc["spec"]["pluginConfig"]).unwrap();
        let config = parse(&json).unwrap();
        assert_eq!(config.policies.rules().len(), 3);
        assert_eq!(rule(&config, 2).non_idempotent, NonIdempotent::Never);
        let scope = |p: &Policy| p.breaker.as_ref().map(|b| b.scope);
        assert_eq!(
            scope(config.policies.default_policy()),
            Some(Scope::Cluster)
        );
        assert_eq!(scope(rule(&config, 2)), Some(Scope::Route));
    }

    #[test]
    fn standalone_envoy_config_parses() {
        let text = std::fs::read_to_string(repo().join("envoy/retry.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let filter = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0];
        let value = filter["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap();
        let config = parse(value.as_bytes()).unwrap();
        assert_eq!(config.mode, Mode::Router);
        assert!(config.filter_mode.is_none());
    }
}
