//! Configuration: raw serde types (unknown fields rejected) compiled into [`Config`].

use crate::algorithm::{Algorithm, Limit};
use crate::key::KeyPart;
use serde::Deserialize;
use wasmgate_core::host::HeaderNeeds;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{ConfigError, Duration, Match, Policies};

/// The filter's name in logs and metrics.
pub const FILTER: &str = "rate-limit";
/// Largest accepted `max_keys` (entries of the slot table, in shared-data buckets of 8).
pub const MAX_KEYS_LIMIT: u64 = 10_000_000;
/// Default `max_keys`.
pub const DEFAULT_MAX_KEYS: u64 = 100_000;
/// Most limits one rule may hold.
pub const MAX_LIMITS_PER_RULE: usize = 8;

/// Which rate-limit headers responses of a limited route carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResponseHeaders {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
    #[default]
    Draft,
    /// Envoy's `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`.
    #[serde(rename = "x-ratelimit")]
    XRatelimit,
    /// Both sets.
    Both,
    /// No headers (429 replies still carry `Retry-After`).
    None,
}

/// Where a rule's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In this Envoy's shared data (exact across its workers).
    #[default]
    Local,
    /// In a rate limit service (`envoy.service.ratelimit.v3.RateLimitService`) shared by many Envoys.
    Global,
}

/// What a global rule does when the rate limit service fails or does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Pass the request (without rate-limit headers).
    #[default]
    Allow,
    /// 503 `rate_limit_unavailable`.
    Deny,
}

/// Default `global.timeout`.
pub const DEFAULT_GLOBAL_TIMEOUT_MS: u64 = 20;
/// Largest accepted `global.timeout`.
pub const MAX_GLOBAL_TIMEOUT_MS: u64 = 60_000;

/// A global rule's rate limit service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// The Envoy cluster (HTTP/2) of the rate limit service.
    pub cluster: String,
    /// The `domain` sent with every request.
    pub domain: String,
    /// How long a request may wait for the answer.
    pub timeout_ms: u64,
    /// What a failure or timeout does.
    pub failure_mode: FailureMode,
    /// Check the rule's local `limits` first and call the service only when they pass.
    pub local_first: bool,
}

/// What to do with a request that lacks a part of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// 400 `missing_rate_limit_key`.
    #[default]
    Deny,
    /// Pass without limiting.
    Allow,
    /// Count under one key shared by every such request of the rule.
    Shared,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    response_headers: ResponseHeaders,
    #[serde(default)]
    client_ip: RawClientIp,
    max_keys: Option<u64>,
    #[serde(default)]
    on_missing_key: OnMissingKey,
}

#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClientIp {
    #[serde(default)]
    xff_num_trusted_hops: u32,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match", default)]
    matcher: Match,
    enabled: Option<bool>,
    key: Option<Vec<RawKeyPart>>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    #[serde(default)]
    shadow: bool,
    response_headers: Option<ResponseHeaders>,
    on_missing_key: Option<OnMissingKey>,
    mode: Option<Mode>,
    global: Option<RawGlobal>,
    local_first: Option<bool>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    cluster: String,
    domain: String,
    timeout: Option<Duration>,
    #[serde(default)]
    failure_mode: FailureMode,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
enum RawKeyPart {
    Name(String),
    Object(RawKeyObject),
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawKeyObject {
    header: Option<String>,
    query: Option<String>,
    constant: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: String,
    requests: u64,
    window: Duration,
    #[serde(default)]
    algorithm: RawAlgorithm,
    burst: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
enum RawAlgorithm {
    TokenBucket,
    #[default]
    FixedWindow,
    SlidingWindow,
}

/// The compiled configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The rules in order (the first match is used); the defaults limit nothing.
    pub policies: Policies<Rule>,
    /// Trusted proxies in front of Envoy (0: use the downstream address).
    pub xff_num_trusted_hops: u32,
    /// Size of the slot table in shared data (entries).
    pub max_keys: u64,
    /// The request headers the rules and keys read.
    pub header_needs: HeaderNeeds,
    /// The table's hash seed once read from shared data (see `store::seed`).
    pub seed: crate::store::SeedCell,
}

/// The request headers `rules` read to match and build keys. Every X-Forwarded-For line counts
/// for a client address behind trusted proxies, and a single read gives only the first line, so
/// that case reads them all.
fn header_needs(policies: &Policies<Rule>, xff_num_trusted_hops: u32) -> HeaderNeeds {
    let mut names = Vec::new();
    for rule in policies.all() {
        for part in &rule.key {
            match part {
                KeyPart::ClientIp if xff_num_trusted_hops > 0 => return HeaderNeeds::All,
                KeyPart::Header(name) => names.push(name.clone()),
                KeyPart::Query(_) | KeyPart::Path => names.push(":path".to_string()),
                KeyPart::Method => names.push(":method".to_string()),
                KeyPart::ClientIp | KeyPart::Route | KeyPart::Constant(_) => {}
            }
        }
    }
    policies.header_needs(names)
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The key parts, joined into the rate-limit key.
    pub key: Vec<KeyPart>,
    /// Every limit must pass.
    pub limits: Vec<Limit>,
    /// Count and report, never reject.
    pub shadow: bool,
    /// Headers for this rule's responses.
    pub response_headers: ResponseHeaders,
    /// Missing key parts.
    pub on_missing_key: OnMissingKey,
    /// `mode: "global"`: the rate limit service decides (`limits` are then the local pre-check
    /// of `local_first`, or empty).
    pub global: Option<Global>,
    /// Identifies the rule's index and limits in stored entries, so a changed rule starts afresh.
    pub fingerprint: String,
}

impl Rule {
    /// The policy of requests no rule matches: no limit.
    fn unlimited() -> Self {
        Self {
            key: Vec::new(),
            limits: Vec::new(),
            shadow: false,
            response_headers: ResponseHeaders::None,
            on_missing_key: OnMissingKey::Allow,
            global: None,
            fingerprint: String::new(),
        }
    }

    /// True when the rule limits something (the defaults do not).
    pub fn limits_anything(&self) -> bool {
        !self.limits.is_empty() || self.global.is_some()
    }
}

impl Config {
    /// The rule at `index` (a global call remembers its rule by index).
    pub fn rule(&self, index: usize) -> Option<&Rule> {
        self.policies.rules().get(index)?.policy.as_ref()
    }
}

/// Parses and compiles a configuration.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    wasmgate_core::config::parse(json).and_then(compile)
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let max_keys = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 || max_keys > MAX_KEYS_LIMIT {
        return Err(ConfigError::new(
            "max_keys",
            format!("must be between 1 and {MAX_KEYS_LIMIT}"),
        ));
    }
    let rules: Vec<PolicyRule<Rule>> = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| compile_rule(i, rule, raw.response_headers, raw.on_missing_key))
        .collect::<Result<_, _>>()?;
    let xff_num_trusted_hops = raw.client_ip.xff_num_trusted_hops;
    let policies = Policies::new(Rule::unlimited(), rules).with_paths(raw.paths);
    Ok(Config {
        header_needs: header_needs(&policies, xff_num_trusted_hops),
        policies,
        xff_num_trusted_hops,
        max_keys,
        seed: crate::store::SeedCell::default(),
    })
}

fn compile_rule(
    index: usize,
    raw: RawRule,
    response_headers: ResponseHeaders,
    on_missing_key: OnMissingKey,
) -> Result<PolicyRule<Rule>, ConfigError> {
    let path = format!("rules[{index}]");
    let enabled = raw.enabled.unwrap_or(true);
    let global = compile_global(&path, raw.mode, raw.global, raw.local_first)?;
    let local_first = global.as_ref().is_some_and(|g| g.local_first);
    if global.is_some() && !local_first && !raw.limits.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.limits"),
            "a global rule's limits are set in the rate limit service; local limits here need \"local_first\": true",
        ));
    }
    if local_first && raw.limits.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.limits"),
            "\"local_first\": true needs at least one local limit",
        ));
    }
    if enabled && global.is_none() && raw.limits.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.limits"),
            "an enabled rule needs at least one limit",
        ));
    }
    if raw.limits.len() > MAX_LIMITS_PER_RULE {
        return Err(ConfigError::new(
            format!("{path}.limits"),
            format!("at most {MAX_LIMITS_PER_RULE} limits per rule"),
        ));
    }
    let key = match raw.key {
        None => vec![KeyPart::ClientIp],
        Some(parts) if parts.is_empty() => return Err(ConfigError::new(
            format!("{path}.key"),
            "a key needs at least one part (use [{\"constant\": \"all\"}] for one shared counter)",
        )),
        Some(parts) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| {
                compile_key_part(part).map_err(|e| ConfigError::new(format!("{path}.key[{j}]"), e))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut limits: Vec<Limit> = Vec::new();
    for (j, limit) in raw.limits.into_iter().enumerate() {
        let limit = compile_limit(limit).map_err(|(field, reason)| {
            ConfigError::new(format!("{path}.limits[{j}]{field}"), reason)
        })?;
        if limits.iter().any(|l| l.name == limit.name) {
            return Err(ConfigError::new(
                format!("{path}.limits[{j}].name"),
                format!("duplicate limit name {:?}", limit.name),
            ));
        }
        limits.push(limit);
    }
    let fingerprint = fingerprint(index, &key, &limits);
    let rule = Rule {
        key,
        limits,
        shadow: raw.shadow,
        response_headers: raw.response_headers.unwrap_or(response_headers),
        on_missing_key: raw.on_missing_key.unwrap_or(on_missing_key),
        global,
        fingerprint,
    };
    Ok(PolicyRule {
        matcher: raw.matcher,
        policy: enabled.then_some(rule),
    })
}

fn compile_global(
    path: &str,
    mode: Option<Mode>,
    raw: Option<RawGlobal>,
    local_first: Option<bool>,
) -> Result<Option<Global>, ConfigError> {
    let raw = match (mode.unwrap_or_default(), raw) {
        (Mode::Local, None) => {
            if local_first.is_some() {
                return Err(ConfigError::new(
                    format!("{path}.local_first"),
                    "only a rule with \"mode\": \"global\" has a local pre-check",
                ));
            }
            return Ok(None);
        }
        (Mode::Local, Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.global"),
                "only a rule with \"mode\": \"global\" has a \"global\" block",
            ))
        }
        (Mode::Global, None) => {
            return Err(ConfigError::new(
                format!("{path}.global"),
                "a rule with \"mode\": \"global\" needs a \"global\" block (cluster, domain)",
            ))
        }
        (Mode::Global, Some(raw)) => raw,
    };
    if raw.cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.global.cluster"),
            "must name the Envoy cluster of the rate limit service",
        ));
    }
    if raw.domain.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.global.domain"),
            "must not be empty",
        ));
    }
    let timeout_ms = raw
        .timeout
        .map_or(DEFAULT_GLOBAL_TIMEOUT_MS, |t| t.as_millis());
    if timeout_ms == 0 || timeout_ms > MAX_GLOBAL_TIMEOUT_MS {
        return Err(ConfigError::new(
            format!("{path}.global.timeout"),
            "must be between 1ms and 60s",
        ));
    }
    Ok(Some(Global {
        cluster: raw.cluster,
        domain: raw.domain,
        timeout_ms,
        failure_mode: raw.failure_mode,
        local_first: local_first.unwrap_or(false),
    }))
}

fn compile_key_part(raw: RawKeyPart) -> Result<KeyPart, String> {
    match raw {
        RawKeyPart::Name(name) => match name.as_str() {
            "client_ip" => Ok(KeyPart::ClientIp),
            "path" => Ok(KeyPart::Path),
            "method" => Ok(KeyPart::Method),
            "route" => Ok(KeyPart::Route),
            other => Err(format!(
                "unknown key part {other:?}: expected \"client_ip\", \"path\", \"method\", \"route\", or an object {{\"header\"}}, {{\"query\"}}, {{\"constant\"}}"
            )),
        },
        RawKeyPart::Object(RawKeyObject {
            header,
            query,
            constant,
        }) => match (header, query, constant) {
            (Some(h), None, None) if !h.is_empty() => Ok(KeyPart::Header(h.to_ascii_lowercase())),
            (None, Some(q), None) if !q.is_empty() => Ok(KeyPart::Query(q)),
            (None, None, Some(c)) => Ok(KeyPart::Constant(c)),
            _ => Err(
                "a key part object has exactly one of \"header\", \"query\", \"constant\" (names not empty)"
                    .into(),
            ),
        },
    }
}

fn compile_limit(raw: RawLimit) -> Result<Limit, (&'static str, String)> {
    let valid_name = !raw.name.is_empty()
        && raw.name.len() <= 64
        && raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid_name {
        return Err((
            ".name",
            "a limit name is 1 to 64 characters of letters, digits, '_', '-' and '.'".into(),
        ));
    }
    if raw.requests == 0 || raw.requests > u64::from(u32::MAX) {
        return Err((".requests", format!("must be between 1 and {}", u32::MAX)));
    }
    let window_ms = raw.window.as_millis();
    if window_ms == 0 || window_ms > 366 * 24 * 3_600_000 {
        return Err((".window", "must be between 1ms and 366 days".into()));
    }
    let algorithm = match (raw.algorithm, raw.burst) {
        (RawAlgorithm::TokenBucket, burst) => {
            let burst = burst.unwrap_or(raw.requests);
            if burst == 0 || burst > u64::from(u32::MAX) {
                return Err((".burst", format!("must be between 1 and {}", u32::MAX)));
            }
            Algorithm::TokenBucket { burst }
        }
        (_, Some(_)) => {
            return Err((".burst", "only a token_bucket limit has a burst".into()));
        }
        (RawAlgorithm::FixedWindow, None) => Algorithm::FixedWindow,
        (RawAlgorithm::SlidingWindow, None) => Algorithm::SlidingWindow,
    };
    Ok(Limit {
        name: raw.name,
        requests: raw.requests,
        window_ns: window_ms * 1_000_000,
        algorithm,
    })
}

fn fingerprint(index: usize, key: &[KeyPart], limits: &[Limit]) -> String {
    let mut text = format!("{index}|{key:?}");
    for limit in limits {
        text.push_str(&format!(
            "|{}:{}:{}:{:?}",
            limit.name, limit.requests, limit.window_ns, limit.algorithm
        ));
    }
    format!("{index}.{:016x}", wasmgate_core::fnv1a(text.as_bytes()))
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

    const ISSUE_EXAMPLE: &str = r#"{
      "rules": [
        {"match": {"path_prefix": "/api/"},
         "key": ["client_ip", {"header": "x-api-key"}],
         "limits": [
           {"name": "per_second", "requests": 10, "window": "1s", "algorithm": "token_bucket", "burst": 20},
           {"name": "hourly", "requests": 1000, "window": "1h", "algorithm": "sliding_window"}
         ],
         "shadow": false}
      ],
      "response_headers": "draft",
      "client_ip": {"xff_num_trusted_hops": 0},
      "max_keys": 100000,
      "on_missing_key": "deny"
    }"#;

    fn err(json: &str) -> ConfigError {
        parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn reads_only_the_headers_its_rules_and_keys_use() {
        let needs = |json: &str| parse(json.as_bytes()).unwrap().header_needs;
        let limits = r#""limits": [{"name": "l", "requests": 1, "window": "1s"}]"#;
        assert_eq!(
            needs(&format!(
                r#"{{"rules": [{{"key": [{{"constant": "all"}}], {limits}}}]}}"#
            )),
            HeaderNeeds::Only(vec![])
        );
        assert_eq!(
            needs(ISSUE_EXAMPLE),
            HeaderNeeds::Only(vec![":path".into(), "x-api-key".into()])
        );
        assert_eq!(
            needs(&format!(
                r#"{{"rules": [{{"key": ["client_ip"], {limits}}}], "client_ip": {{"xff_num_trusted_hops": 1}}}}"#
            )),
            HeaderNeeds::All,
            "every X-Forwarded-For line"
        );
        assert_eq!(
            needs(&format!(
                r#"{{"rules": [{{"match": {{"hosts": ["a"], "methods": ["GET"]}}, "key": ["path"], {limits}}}]}}"#
            )),
            HeaderNeeds::All,
            "more than a couple of names"
        );
    }

    #[test]
    fn issue_example_parses() {
        let config = parse(ISSUE_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(config.max_keys, 100_000);
        let rule = config.rule(0).unwrap();
        assert_eq!(
            rule.key,
            vec![KeyPart::ClientIp, KeyPart::Header("x-api-key".into())]
        );
        assert_eq!(
            rule.limits[0].algorithm,
            Algorithm::TokenBucket { burst: 20 }
        );
        assert_eq!(rule.limits[0].window_ns, 1_000_000_000);
        assert_eq!(rule.limits[1].algorithm, Algorithm::SlidingWindow);
        assert_eq!(rule.response_headers, ResponseHeaders::Draft);
        assert_eq!(rule.on_missing_key, OnMissingKey::Deny);
        assert!(!rule.shadow);
    }

    #[test]
    fn minimal_and_defaults() {
        let config = parse(b"{}").unwrap();
        assert!(config.policies.rules().is_empty());
        assert_eq!(config.max_keys, DEFAULT_MAX_KEYS);
        assert_eq!(config.xff_num_trusted_hops, 0);
        let config = parse(
            br#"{"response_headers": "both", "on_missing_key": "shared",
                 "rules": [{"limits": [{"name": "a", "requests": 5, "window": "1m"}]},
                           {"limits": [{"name": "b", "requests": 5, "window": "1m", "algorithm": "token_bucket"}],
                            "response_headers": "none", "on_missing_key": "allow"}]}"#,
        )
        .unwrap();
        let (a, b) = (config.rule(0).unwrap(), config.rule(1).unwrap());
        assert_eq!(a.key, vec![KeyPart::ClientIp]);
        assert_eq!(a.limits[0].algorithm, Algorithm::FixedWindow);
        assert_eq!(a.response_headers, ResponseHeaders::Both);
        assert_eq!(a.on_missing_key, OnMissingKey::Shared);
        assert_eq!(b.limits[0].algorithm, Algorithm::TokenBucket { burst: 5 });
        assert_eq!(b.response_headers, ResponseHeaders::None);
        assert_eq!(b.on_missing_key, OnMissingKey::Allow);
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn every_key_part() {
        let config = parse(
            br#"{"rules": [{"key": ["client_ip", "path", "method", "route",
                 {"header": "X-User"}, {"query": "tenant"}, {"constant": "c"}],
                 "limits": [{"name": "a", "requests": 1, "window": "1s"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            config.rule(0).unwrap().key,
            vec![
                KeyPart::ClientIp,
                KeyPart::Path,
                KeyPart::Method,
                KeyPart::Route,
                KeyPart::Header("x-user".into()),
                KeyPart::Query("tenant".into()),
                KeyPart::Constant("c".into()),
            ]
        );
    }

    #[test]
    fn disabled_rule_needs_no_limits() {
        let config =
            parse(br#"{"rules": [{"match": {"path_prefix": "/h"}, "enabled": false}]}"#).unwrap();
        assert!(config.rule(0).is_none());
    }

    #[test]
    fn invalid_configs_name_their_path() {
        let lim = r#"{"name": "a", "requests": 1, "window": "1s"}"#;
        let cases: Vec<(String, &str, &str)> = vec![
            (r#"{"max_keys": 0}"#.into(), "max_keys", "between"),
            (r#"{"max_keys": 20000000}"#.into(), "max_keys", "between"),
            (r#"{"max_key": 1}"#.into(), "max_key", "unknown field"),
            (r#"{"response_headers": "draft-7"}"#.into(), "response_headers", "unknown variant"),
            (r#"{"on_missing_key": "drop"}"#.into(), "on_missing_key", "unknown variant"),
            (r#"{"client_ip": {"xff": 1}}"#.into(), "client_ip.xff", "unknown field"),
            (r#"{"rules": [{}]}"#.into(), "rules[0].limits", "at least one"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadw": true}}]}}"#), "rules[0].shadw", "unknown field"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "key": []}}]}}"#), "rules[0].key", "at least one part"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "key": ["ip"]}}]}}"#), "rules[0].key[0]", "unknown key part"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "key": ["path", {{"header": "a", "query": "b"}}]}}]}}"#), "rules[0].key[1]", "exactly one"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "key": [{{"header": ""}}]}}]}}"#), "rules[0].key[0]", "exactly one"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "key": [{{"cookie": "a"}}]}}]}}"#), "rules[0].key[0]", ""),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 0, "window": "1s"}]}]}"#.into(), "rules[0].limits[0].requests", "between"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "0s"}]}]}"#.into(), "rules[0].limits[0].window", "between"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1"}]}]}"#.into(), "rules[0].limits[0].window", "invalid duration"),
            (r#"{"rules": [{"limits": [{"name": "a b", "requests": 1, "window": "1s"}]}]}"#.into(), "rules[0].limits[0].name", "letters"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s", "algorithm": "leaky"}]}]}"#.into(), "rules[0].limits[0].algorithm", "unknown variant"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s", "burst": 5}]}]}"#.into(), "rules[0].limits[0].burst", "only a token_bucket"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s", "algorithm": "token_bucket", "burst": 0}]}]}"#.into(), "rules[0].limits[0].burst", "between"),
            (format!(r#"{{"rules": [{{"limits": [{lim}, {lim}]}}]}}"#), "rules[0].limits[1].name", "duplicate"),
            (format!(r#"{{"rules": [{{"limits": [{lim}]}}, {{"match": {{"path_prefix": "x"}}, "limits": [{lim}]}}]}}"#), "rules[1].match", "must start with"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s", "windw": "1s"}]}]}"#.into(), "rules[0].limits[0].windw", "unknown field"),
        ];
        for (json, path, reason) in cases {
            let e = err(&json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    #[test]
    fn too_many_limits() {
        let limits: Vec<String> = (0..9)
            .map(|i| format!(r#"{{"name": "l{i}", "requests": 1, "window": "1s"}}"#))
            .collect();
        let e = err(&format!(
            r#"{{"rules": [{{"limits": [{}]}}]}}"#,
            limits.join(",")
        ));
        assert_eq!(e.path, "rules[0].limits");
    }

    #[test]
    fn global_rules() {
        let config = parse(
            br#"{"rules": [
                {"mode": "global", "global": {"cluster": "ratelimit", "domain": "edge"}},
                {"mode": "global", "local_first": true,
                 "global": {"cluster": "rl", "domain": "d", "timeout": "250ms", "failure_mode": "deny"},
                 "limits": [{"name": "a", "requests": 5, "window": "1s"}]},
                {"mode": "local", "limits": [{"name": "a", "requests": 5, "window": "1s"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            config.rule(0).unwrap().global,
            Some(Global {
                cluster: "ratelimit".into(),
                domain: "edge".into(),
                timeout_ms: DEFAULT_GLOBAL_TIMEOUT_MS,
                failure_mode: FailureMode::Allow,
                local_first: false,
            })
        );
        assert!(config.rule(0).unwrap().limits.is_empty());
        let second = config.rule(1).unwrap().global.as_ref().unwrap();
        assert_eq!(
            (second.timeout_ms, second.failure_mode, second.local_first),
            (250, FailureMode::Deny, true)
        );
        assert_eq!(config.rule(1).unwrap().limits.len(), 1);
        assert_eq!(config.rule(2).unwrap().global, None);
    }

    #[test]
    fn invalid_global_rules_name_their_path() {
        let g = r#""global": {"cluster": "rl", "domain": "edge"}"#;
        let lim = r#""limits": [{"name": "a", "requests": 1, "window": "1s"}]"#;
        let cases: Vec<(String, &str, &str)> = vec![
            (r#"{"rules": [{"mode": "global"}]}"#.into(), "rules[0].global", "needs a \"global\" block"),
            (format!(r#"{{"rules": [{{{g}, {lim}}}]}}"#), "rules[0].global", "only a rule with"),
            (format!(r#"{{"rules": [{{{lim}, "local_first": true}}]}}"#), "rules[0].local_first", "only a rule with"),
            (format!(r#"{{"rules": [{{"mode": "global", {g}, {lim}}}]}}"#), "rules[0].limits", "local_first"),
            (format!(r#"{{"rules": [{{"mode": "global", {g}, "local_first": true}}]}}"#), "rules[0].limits", "at least one local limit"),
            (r#"{"rules": [{"mode": "remote"}]}"#.into(), "rules[0].mode", "unknown variant"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "", "domain": "e"}}]}"#.into(), "rules[0].global.cluster", "must name"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "c", "domain": ""}}]}"#.into(), "rules[0].global.domain", "not be empty"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "c"}}]}"#.into(), "rules[0].global.domain", "missing field"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "c", "domain": "e", "timeout": "0ms"}}]}"#.into(), "rules[0].global.timeout", "between"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "c", "domain": "e", "timeout": "2m"}}]}"#.into(), "rules[0].global.timeout", "between"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "c", "domain": "e", "failure_mode": "open"}}]}"#.into(), "rules[0].global.failure_mode", "unknown variant"),
            (r#"{"rules": [{"mode": "global", "global": {"cluster": "c", "domain": "e", "port": 1}}]}"#.into(), "rules[0].global.port", "unknown field"),
        ];
        for (json, path, reason) in cases {
            let e = err(&json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    /// The filter configuration (`value: |` JSON block) of a shipped Envoy config.
    fn envoy_filter_config(relative: &str) -> Config {
        let path = format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("value: |").unwrap() + "value: |".len();
        let mut stream =
            serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
        let value = stream.next().unwrap().unwrap();
        parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn shipped_global_configs_are_valid() {
        for file in [
            "envoy/rate-limit-global.yaml",
            "examples/global-rate-limit/envoy.yaml",
        ] {
            let config = envoy_filter_config(file);
            assert!(
                config.policies.all().any(|r| r.global.is_some()),
                "{file} has a global rule"
            );
        }
    }

    /// The Istio manifests' pluginConfig is JSON inside YAML; it must be a valid config.
    #[test]
    fn istio_manifest_plugin_config_is_valid() {
        for file in [
            "examples/istio/rate-limit.yaml",
            "examples/global-rate-limit/istio.yaml",
        ] {
            let path = format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).unwrap();
            let start = text.find("pluginConfig:").unwrap() + "pluginConfig:".len();
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
            let plugin_config = stream.next().unwrap().unwrap();
            let config = parse(plugin_config.to_string().as_bytes()).unwrap();
            assert!(!config.policies.rules().is_empty(), "{file}");
        }
    }
}
