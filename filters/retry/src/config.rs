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

/// The retry conditions, as Envoy spells them in `x-envoy-retry-on`.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-4xx",
    "retriable-status-codes",
];

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

/// The circuit breaker of one rule, shared by all workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before probing.
    pub open_for: StdDuration,
    /// How many probe requests are let through while half-open; all must succeed to close.
    pub half_open_requests: u32,
    /// Final statuses that count as failures (a request without any response always does).
    pub failure_status_codes: Vec<u16>,
}

/// Filter mode: where and how the filter sends its own attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMode {
    /// The Envoy cluster attempts are sent to.
    pub cluster: String,
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
    /// Wait what an upstream's `Retry-After` asks for (filter mode).
    pub honor_retry_after: bool,
    /// Retry safety for non-idempotent methods.
    pub non_idempotent: NonIdempotent,
    /// The breaker of this policy, if any.
    pub breaker: Option<BreakerConfig>,
    /// The shared-data key suffix of this policy's breaker (`default` or `rule<N>`).
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
    #[serde(default = "default_failure_threshold")]
    failure_threshold: u32,
    #[serde(default = "default_open_for")]
    open_for: Duration,
    #[serde(default = "default_half_open")]
    half_open_requests: u32,
    #[serde(default = "default_failure_codes")]
    failure_status_codes: Vec<u16>,
}

fn default_failure_threshold() -> u32 {
    5
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
    cluster: String,
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
    non_idempotent: Option<NonIdempotent>,
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
    non_idempotent: Option<NonIdempotent>,
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
    non_idempotent: Option<NonIdempotent>,
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
        non_idempotent: raw.non_idempotent,
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
        non_idempotent: NonIdempotent::WithIdempotencyKey,
        breaker: None,
        breaker_id: "default".into(),
    };
    let default = apply(&builtin, &top, "", "default".into())?;
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
            non_idempotent: rule.non_idempotent,
            circuit_breaker: rule.circuit_breaker,
        };
        // A disabled rule's fields are still validated, and it keeps its place in the numbering
        // of the breakers (`rule<N>`).
        let policy = apply(&default, &fields, &prefix, format!("rule{i}"))?;
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
            if f.cluster.trim().is_empty() {
                return Err(ConfigError::new(
                    "filter_mode.cluster",
                    "must name an Envoy cluster",
                ));
            }
            if f.timeout.0.is_zero() {
                return Err(ConfigError::new(
                    "filter_mode.timeout",
                    "must be greater than zero",
                ));
            }
            Some(FilterMode {
                cluster: f.cluster,
                timeout: f.timeout.0,
                max_body_bytes: f.max_body_bytes,
            })
        }
    };
    if raw.mode == Mode::Filter && filter_mode.is_none() {
        return Err(ConfigError::new(
            "filter_mode",
            "mode \"filter\" needs filter_mode with at least a cluster",
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
    policies.header_needs([":method".to_string(), idempotency_key_header.to_string()])
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
) -> Result<Policy, ConfigError> {
    let at = |field: &str| format!("{prefix}{field}");
    let mut policy = base.clone();
    policy.breaker_id = breaker_id;
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
    if let Some(n) = raw.non_idempotent {
        policy.non_idempotent = n;
    }
    if let Some(cb) = &raw.circuit_breaker {
        let path = at("circuit_breaker");
        if cb.failure_threshold == 0 {
            return Err(ConfigError::new(
                format!("{path}.failure_threshold"),
                "must be at least 1",
            ));
        }
        if cb.open_for.0.is_zero() {
            return Err(ConfigError::new(
                format!("{path}.open_for"),
                "must be greater than zero",
            ));
        }
        if cb.half_open_requests == 0 {
            return Err(ConfigError::new(
                format!("{path}.half_open_requests"),
                "must be at least 1",
            ));
        }
        if cb.failure_status_codes.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.failure_status_codes"),
                "must list at least one status code",
            ));
        }
        policy.breaker = Some(BreakerConfig {
            failure_threshold: cb.failure_threshold,
            open_for: cb.open_for.0,
            half_open_requests: cb.half_open_requests,
            failure_status_codes: status_codes(
                &cb.failure_status_codes,
                &format!("{path}.failure_status_codes"),
            )?,
        });
    }
    Ok(policy)
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
            needs(r#"{"mode": "filter", "filter_mode": {"cluster": "c"}}"#),
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
      "filter_mode": {"cluster": "backend", "timeout": "5s", "max_body_bytes": 65536},
      "rules": [{"match": {"methods": ["GET"]}, "max_retries": 3}]
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
        // Rules inherit the defaults they do not override, but get their own breaker.
        assert_eq!(rule(&c, 0).retry_on, c.policies.default_policy().retry_on);
        assert_eq!(rule(&c, 0).breaker, c.policies.default_policy().breaker);
        assert_eq!(rule(&c, 0).breaker_id, "rule0");
        assert_eq!(c.policies.default_policy().breaker_id, "default");
        let fm = c.filter_mode.unwrap();
        assert_eq!(fm.cluster, "backend");
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
                           {"match": {}, "max_retries": 1}]}"#,
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
                r#"{"filter_mode": {"cluster": " "}}"#,
                "filter_mode.cluster",
            ),
            (
                r#"{"filter_mode": {"cluster": "b", "timeout": "0s"}}"#,
                "filter_mode.timeout",
            ),
            (r#"{"filter_mode": {}}"#, "filter_mode.cluster"),
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
        assert_eq!(config.filter_mode.unwrap().cluster, "upstream");
    }
}
