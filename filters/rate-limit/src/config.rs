//! Configuration: raw serde types (unknown fields rejected) compiled into [`Config`].

use crate::algorithm::{Algorithm, Limit};
use crate::key::{KeyPart, Prefixes};
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
    /// The missing part is replaced by the client's address (marked, so no request value can
    /// stand for it): a request without its API key is limited per client address instead of
    /// being refused or escaping the limit.
    #[default]
    ClientIp,
    /// 400 `missing_rate_limit_key`.
    Deny,
    /// The limits whose key lacks a part are skipped (with the rule's key: every limit, the
    /// request passes unlimited).
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
    /// The reply to a refused request (a rule may override it).
    #[serde(default)]
    reply: RawReply,
}

#[derive(Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClientIp {
    #[serde(default)]
    xff_num_trusted_hops: u32,
    ipv4_prefix: Option<u64>,
    ipv6_prefix: Option<u64>,
}

#[derive(Deserialize, Default, Clone)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawReply {
    status: Option<u32>,
    error: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(rename = "match", default)]
    matcher: Match,
    enabled: Option<bool>,
    key: Option<Vec<RawKeyPart>>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    cost: Option<u64>,
    cost_header: Option<String>,
    max_cost: Option<u64>,
    #[serde(default)]
    shadow: bool,
    shadow_percentage: Option<u64>,
    shadow_header: Option<String>,
    reply: Option<RawReply>,
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
    key: Option<Vec<RawKeyPart>>,
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
    FixedWindow,
    /// The default: "N per window" as operators write quotas, without a fixed window's double
    /// burst at window edges (README, "Defaults").
    #[default]
    SlidingWindow,
}

/// The compiled configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The rules in order (the first match is used); the defaults limit nothing.
    pub policies: Policies<Rule>,
    /// Trusted proxies in front of Envoy (0: use the downstream address).
    pub xff_num_trusted_hops: u32,
    /// The networks client addresses are cut to.
    pub prefixes: Prefixes,
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
        // (`on_missing_key: "client_ip"` reads X-Forwarded-For itself, only when a part is
        // missing.)
        for part in rule.key_parts() {
            match part {
                KeyPart::ClientIp if xff_num_trusted_hops > 0 => return HeaderNeeds::All,
                KeyPart::Header(name) => push_name(&mut names, name),
                KeyPart::Query(_) | KeyPart::Path => push_name(&mut names, ":path"),
                KeyPart::Method => push_name(&mut names, ":method"),
                KeyPart::ClientIp | KeyPart::Route | KeyPart::Constant(_) => {}
            }
        }
        if let Some(name) = &rule.cost.header {
            push_name(&mut names, name);
        }
    }
    policies.header_needs(names)
}

/// Adds a header name once (a short list: no sort, no set).
fn push_name(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// The limits of a rule that count under one key: the rule's own key, or a key a limit names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The key parts.
    pub key: Vec<KeyPart>,
    /// The group's limits, in the rule's order.
    pub limits: Vec<Limit>,
    /// Where each of them is in the rule's `limits` (headers list them in the rule's order).
    pub indices: Vec<usize>,
    /// Identifies the rule's index, the group's key and limits in stored entries, so a changed
    /// rule starts afresh.
    pub fingerprint: String,
}

/// What one request of a rule costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// The units a request takes (`cost`, default 1); with `header`, when the header is absent
    /// or invalid.
    pub units: u64,
    /// `cost_header`: a request header holding the cost (lowercase name).
    pub header: Option<String>,
    /// `max_cost`: the most a header may charge (a larger value is charged this).
    pub max: u64,
}

impl Cost {
    /// The cost of a request whose `cost_header` holds `value`: a decimal number of units
    /// (digits only: no sign, no spaces, no fraction), at least 1 and at most `max` (a larger
    /// number, however many digits, charges `max`); `units` when absent, empty, zero or not a
    /// number.
    pub fn of(&self, value: Option<&str>) -> u64 {
        let Some(value) = value.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        else {
            return self.units;
        };
        match value.parse::<u64>() {
            Ok(0) => self.units,
            Ok(n) => n.min(self.max),
            // Only digits, so only too large to parse.
            Err(_) => self.max,
        }
    }
}

/// The reply to a refused request: status, `error` code and message (default: 429
/// `rate_limited`, "Too many requests; retry after N seconds.").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 400 to 599.
    pub status: u32,
    /// The body's `error` code.
    pub error: String,
    /// The body's `message`; `None`: the default sentence with the retry time.
    pub message: Option<String>,
}

impl Default for Reply {
    fn default() -> Self {
        Self {
            status: 429,
            error: "rate_limited".into(),
            message: None,
        }
    }
}

/// Shadow mode: over-limit requests pass, with a marker header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    /// Of the requests over a limit, how many in 100 pass (the others are refused).
    pub percentage: u8,
    /// The request header that marks a passed over-limit request for the upstream (any copy
    /// the client sent is removed first); `None`: no marker.
    pub header: Option<String>,
    /// This VM's running share (an error-diffusion counter, so exactly `percentage` in every
    /// 100 over-limit requests pass, with no random source).
    pub credit: std::cell::Cell<u32>,
}

impl Shadow {
    /// Whether this over-limit request passes in shadow.
    pub fn passes(&self) -> bool {
        let credit = self.credit.get() + u32::from(self.percentage);
        let passes = credit >= 100;
        self.credit.set(if passes { credit - 100 } else { credit });
        passes
    }
}

/// Headers a request needs, which the shadow marker may not be (it is removed from every
/// request of its rule).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-request-id",
];

/// Default `shadow_header`.
pub const DEFAULT_SHADOW_HEADER: &str = "x-ratelimit-shadow";

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name in metrics (`name`, default its index).
    pub name: String,
    /// Whether the configuration names the rule (only then does it have counters of its own).
    pub named: bool,
    /// The rule's key parts (global mode: the descriptor).
    pub key: Vec<KeyPart>,
    /// Every limit must pass.
    pub limits: Vec<Limit>,
    /// The limits grouped by key (the rule's key first); empty when `limits` is.
    pub groups: Vec<Group>,
    /// What a request costs.
    pub cost: Cost,
    /// Count and report, never reject (or with a percentage).
    pub shadow: Option<Shadow>,
    /// Headers for this rule's responses.
    pub response_headers: ResponseHeaders,
    /// Missing key parts.
    pub on_missing_key: OnMissingKey,
    /// The reply to a refused request.
    pub reply: Reply,
    /// `mode: "global"`: the rate limit service decides (`limits` are then the local pre-check
    /// of `local_first`, or empty).
    pub global: Option<Global>,
    /// Whether deciding reads the client address (`source.address`).
    pub reads_client_ip: bool,
}

impl Rule {
    /// The policy of requests no rule matches: no limit.
    fn unlimited() -> Self {
        Self {
            name: String::new(),
            named: false,
            key: Vec::new(),
            limits: Vec::new(),
            groups: Vec::new(),
            cost: Cost {
                units: 1,
                header: None,
                max: 1,
            },
            shadow: None,
            response_headers: ResponseHeaders::None,
            on_missing_key: OnMissingKey::Allow,
            reply: Reply::default(),
            global: None,
            reads_client_ip: false,
        }
    }

    /// Every key part a request of this rule may read: the rule's key for a global rule's
    /// descriptor, and each group's key.
    pub fn key_parts(&self) -> impl Iterator<Item = &KeyPart> {
        let descriptor: &[KeyPart] = if self.global.is_some() {
            &self.key
        } else {
            &[]
        };
        descriptor
            .iter()
            .chain(self.groups.iter().flat_map(|g| &g.key))
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
    let defaults = Prefixes::default();
    let prefix = |value: Option<u64>, default: u8, max: u8, field: &str| {
        match value.map_or(Ok(default), u8::try_from) {
            Ok(len) if (1..=max).contains(&len) => Ok(len),
            _ => Err(ConfigError::new(
                format!("client_ip.{field}"),
                format!("must be between 1 and {max} (for one counter for every client, use the key [{{\"constant\": \"all\"}}])"),
            )),
        }
    };
    let prefixes = Prefixes {
        ipv4: prefix(raw.client_ip.ipv4_prefix, defaults.ipv4, 32, "ipv4_prefix")?,
        ipv6: prefix(raw.client_ip.ipv6_prefix, defaults.ipv6, 128, "ipv6_prefix")?,
    };
    let reply = compile_reply("reply", &raw.reply, &Reply::default())?;
    let defaults = RuleDefaults {
        response_headers: raw.response_headers,
        on_missing_key: raw.on_missing_key,
        reply,
    };
    let mut rules: Vec<PolicyRule<Rule>> = Vec::with_capacity(raw.rules.len());
    // Names in metrics: a rule's `name`, or its index; two rules must never share counters.
    let mut names: Vec<String> = Vec::with_capacity(raw.rules.len());
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let name = rule.name.clone().unwrap_or_else(|| i.to_string());
        let compiled = compile_rule(i, rule, &defaults)?;
        if names.contains(&name) {
            return Err(ConfigError::new(
                format!("rules[{i}].name"),
                format!("duplicate rule name {name:?} (an unnamed rule is named by its index in metrics)"),
            ));
        }
        names.push(name);
        rules.push(compiled);
    }
    let xff_num_trusted_hops = raw.client_ip.xff_num_trusted_hops;
    let policies = Policies::new(Rule::unlimited(), rules).with_paths(raw.paths);
    Ok(Config {
        header_needs: header_needs(&policies, xff_num_trusted_hops),
        policies,
        xff_num_trusted_hops,
        prefixes,
        max_keys,
        seed: crate::store::SeedCell::default(),
    })
}

/// The top-level values a rule inherits.
struct RuleDefaults {
    response_headers: ResponseHeaders,
    on_missing_key: OnMissingKey,
    reply: Reply,
}

/// A name in metrics and headers: 1 to 64 of `A-Z a-z 0-9 _ -` (and `.` when `dots`).
fn valid_name(name: &str, dots: bool) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') || (dots && b == b'.'))
}

/// A header name we set or read: lowercase token characters, not a pseudo-header.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

fn compile_reply(path: &str, raw: &RawReply, defaults: &Reply) -> Result<Reply, ConfigError> {
    let status = raw.status.unwrap_or(defaults.status);
    if !(400..=599).contains(&status) {
        return Err(ConfigError::new(
            format!("{path}.status"),
            "must be between 400 and 599 (a refused request must not look successful)",
        ));
    }
    let error = raw.error.clone().unwrap_or_else(|| defaults.error.clone());
    let snake = !error.is_empty()
        && error.len() <= 64
        && error
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !snake {
        return Err(ConfigError::new(
            format!("{path}.error"),
            "an error code is 1 to 64 characters of a-z, 0-9 and '_'",
        ));
    }
    let message = raw.message.clone().or_else(|| defaults.message.clone());
    if message
        .as_deref()
        .is_some_and(|m| m.is_empty() || m.len() > 1024 || m.chars().any(char::is_control))
    {
        return Err(ConfigError::new(
            format!("{path}.message"),
            "a message is 1 to 1024 characters, without control characters",
        ));
    }
    Ok(Reply {
        status,
        error,
        message,
    })
}

fn compile_key(path: &str, parts: Vec<RawKeyPart>) -> Result<Vec<KeyPart>, ConfigError> {
    if parts.is_empty() {
        return Err(ConfigError::new(
            path,
            "a key needs at least one part (use [{\"constant\": \"all\"}] for one shared counter)",
        ));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(j, part)| {
            compile_key_part(part).map_err(|e| ConfigError::new(format!("{path}[{j}]"), e))
        })
        .collect()
}

fn compile_rule(
    index: usize,
    mut raw: RawRule,
    defaults: &RuleDefaults,
) -> Result<PolicyRule<Rule>, ConfigError> {
    let path = format!("rules[{index}]");
    if let Some(name) = &raw.name {
        if !valid_name(name, false) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                "a rule name is 1 to 64 characters of letters, digits, '_' and '-'",
            ));
        }
    }
    let enabled = raw.enabled.unwrap_or(true);
    let global = compile_global(&path, raw.mode, raw.global.take(), raw.local_first)?;
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
    let key = match raw.key.take() {
        None => vec![KeyPart::ClientIp],
        Some(parts) => compile_key(&format!("{path}.key"), parts)?,
    };
    let mut limits: Vec<Limit> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for (j, mut raw_limit) in std::mem::take(&mut raw.limits).into_iter().enumerate() {
        let limit_key = match raw_limit.key.take() {
            None => key.clone(),
            Some(parts) => compile_key(&format!("{path}.limits[{j}].key"), parts)?,
        };
        let limit = compile_limit(raw_limit).map_err(|(field, reason)| {
            ConfigError::new(format!("{path}.limits[{j}]{field}"), reason)
        })?;
        if limits.iter().any(|l| l.name == limit.name) {
            return Err(ConfigError::new(
                format!("{path}.limits[{j}].name"),
                format!("duplicate limit name {:?}", limit.name),
            ));
        }
        // The rule's own key is always the first group, so a rule without per-limit keys keeps
        // one group (and the stored entries it had before limits could name keys).
        if groups.is_empty() && limit_key != key {
            groups.push(Group {
                key: key.clone(),
                limits: Vec::new(),
                indices: Vec::new(),
                fingerprint: String::new(),
            });
        }
        match groups.iter_mut().find(|g| g.key == limit_key) {
            Some(group) => {
                group.limits.push(limit.clone());
                group.indices.push(j);
            }
            None => groups.push(Group {
                key: limit_key,
                limits: vec![limit.clone()],
                indices: vec![j],
                fingerprint: String::new(),
            }),
        }
        limits.push(limit);
    }
    groups.retain(|g| !g.limits.is_empty());
    for group in &mut groups {
        group.fingerprint = fingerprint(index, &group.key, &group.limits);
    }
    let cost = compile_cost(&path, &raw, &limits)?;
    let shadow = match (raw.shadow, raw.shadow_percentage, &raw.shadow_header) {
        (false, None, None) => None,
        (false, _, _) => {
            return Err(ConfigError::new(
                format!(
                    "{path}.{}",
                    if raw.shadow_percentage.is_some() {
                        "shadow_percentage"
                    } else {
                        "shadow_header"
                    }
                ),
                "only a rule with \"shadow\": true has a shadow percentage or header",
            ))
        }
        (true, percentage, header) => {
            let Some(percentage) = u8::try_from(percentage.unwrap_or(100))
                .ok()
                .filter(|p| (1..=100).contains(p))
            else {
                return Err(ConfigError::new(
                    format!("{path}.shadow_percentage"),
                    "must be between 1 and 100 (the share of over-limit requests that pass; without shadow, set \"shadow\": false)",
                ));
            };
            let header = match header.as_deref() {
                None => Some(DEFAULT_SHADOW_HEADER.to_string()),
                Some("") => None,
                Some(name) => {
                    let name = name.to_ascii_lowercase();
                    if !valid_header_name(&name) {
                        return Err(ConfigError::new(
                            format!("{path}.shadow_header"),
                            "must be a header name (or \"\" for no marker)",
                        ));
                    }
                    // The marker is removed from every request of the rule: it must not be a
                    // header the request needs.
                    let read = key
                        .iter()
                        .chain(groups.iter().flat_map(|g| &g.key))
                        .any(|p| *p == KeyPart::Header(name.clone()))
                        || cost.header.as_deref() == Some(name.as_str());
                    if read || RESERVED_HEADERS.contains(&name.as_str()) {
                        return Err(ConfigError::new(
                            format!("{path}.shadow_header"),
                            format!("{name:?} is a header requests need (the marker is removed from every request of the rule)"),
                        ));
                    }
                    Some(name)
                }
            };
            Some(Shadow {
                percentage,
                header,
                credit: std::cell::Cell::new(0),
            })
        }
    };
    let reply = match &raw.reply {
        None => defaults.reply.clone(),
        Some(reply) => compile_reply(&format!("{path}.reply"), reply, &defaults.reply)?,
    };
    let on_missing_key = raw.on_missing_key.unwrap_or(defaults.on_missing_key);
    let mut rule = Rule {
        name: raw.name.clone().unwrap_or_else(|| index.to_string()),
        named: raw.name.is_some(),
        key,
        limits,
        groups,
        cost,
        shadow,
        response_headers: raw.response_headers.unwrap_or(defaults.response_headers),
        on_missing_key,
        reply,
        global,
        reads_client_ip: false,
    };
    let reads_client_ip = rule.key_parts().any(|p| *p == KeyPart::ClientIp);
    rule.reads_client_ip = reads_client_ip;
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

/// `cost`, `cost_header`, `max_cost`: every cost the rule may charge must fit every local
/// limit when its key is idle (else those requests could never pass), and a header's cost is
/// always bounded.
fn compile_cost(path: &str, raw: &RawRule, limits: &[Limit]) -> Result<Cost, ConfigError> {
    let bound = u64::from(u32::MAX);
    let units = raw.cost.unwrap_or(1);
    if units == 0 || units > bound {
        return Err(ConfigError::new(
            format!("{path}.cost"),
            format!("must be between 1 and {bound}"),
        ));
    }
    let header = match &raw.cost_header {
        None => None,
        Some(name) => {
            let name = name.to_ascii_lowercase();
            if !valid_header_name(&name) {
                return Err(ConfigError::new(
                    format!("{path}.cost_header"),
                    "must be a header name",
                ));
            }
            Some(name)
        }
    };
    let max = match (&header, raw.max_cost) {
        (None, None) => units,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                format!("{path}.max_cost"),
                "only a rule with \"cost_header\" has a max_cost",
            ))
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                format!("{path}.max_cost"),
                "a rule with \"cost_header\" needs \"max_cost\" (a client could otherwise take a whole quota in one request)",
            ))
        }
        (Some(_), Some(max)) => {
            if max == 0 || max > bound {
                return Err(ConfigError::new(
                    format!("{path}.max_cost"),
                    format!("must be between 1 and {bound}"),
                ));
            }
            if units > max {
                return Err(ConfigError::new(
                    format!("{path}.cost"),
                    "must not exceed max_cost",
                ));
            }
            max
        }
    };
    let field = if header.is_some() { "max_cost" } else { "cost" };
    if let Some(limit) = limits.iter().find(|l| l.capacity() < max) {
        return Err(ConfigError::new(
            format!("{path}.{field}"),
            format!(
                "{max} is more than limit {:?} ever admits ({}): such requests could never pass",
                limit.name,
                limit.capacity()
            ),
        ));
    }
    Ok(Cost { units, header, max })
}

fn compile_limit(raw: RawLimit) -> Result<Limit, (&'static str, String)> {
    if !valid_name(&raw.name, true) {
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
        assert!(rule.shadow.is_none());
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
        assert_eq!(a.limits[0].algorithm, Algorithm::SlidingWindow);
        assert_eq!(a.response_headers, ResponseHeaders::Both);
        assert_eq!(a.on_missing_key, OnMissingKey::Shared);
        assert_eq!(b.limits[0].algorithm, Algorithm::TokenBucket { burst: 5 });
        assert_eq!(b.response_headers, ResponseHeaders::None);
        assert_eq!(b.on_missing_key, OnMissingKey::Allow);
        assert_ne!(a.groups[0].fingerprint, b.groups[0].fingerprint);
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

    #[test]
    fn limits_with_their_own_keys_are_grouped_by_key() {
        let config = parse(
            br#"{"rules": [{"key": ["client_ip"], "limits": [
                {"name": "ip_s", "requests": 5, "window": "1s"},
                {"name": "tenant", "requests": 100, "window": "1h", "key": [{"header": "X-Tenant"}]},
                {"name": "ip_h", "requests": 50, "window": "1h", "key": ["client_ip"]},
                {"name": "tenant_d", "requests": 900, "window": "1h", "key": [{"header": "x-tenant"}]}]}]}"#,
        )
        .unwrap();
        let rule = config.rule(0).unwrap();
        assert_eq!(rule.groups.len(), 2);
        assert_eq!(rule.groups[0].key, vec![KeyPart::ClientIp]);
        assert_eq!(rule.groups[0].indices, vec![0, 2]);
        assert_eq!(rule.groups[1].key, vec![KeyPart::Header("x-tenant".into())]);
        assert_eq!(rule.groups[1].indices, vec![1, 3]);
        assert_ne!(rule.groups[0].fingerprint, rule.groups[1].fingerprint);
        assert_eq!(
            config.header_needs,
            HeaderNeeds::Only(vec!["x-tenant".into()])
        );
        // Only limits with another key: the rule's key has no group.
        let config = parse(
            br#"{"rules": [{"limits": [{"name": "t", "requests": 5, "window": "1s", "key": ["method"]}]}]}"#,
        )
        .unwrap();
        let rule = config.rule(0).unwrap();
        assert_eq!(rule.groups.len(), 1);
        assert_eq!(rule.groups[0].key, vec![KeyPart::Method]);
        assert!(
            !rule.reads_client_ip,
            "the source address is read only when a part is missing"
        );
    }

    /// A rule without per-limit keys keeps the fingerprint (and so the stored counters) it had
    /// before limits could name keys.
    #[test]
    fn one_group_keeps_the_rules_fingerprint() {
        let config = parse(ISSUE_EXAMPLE.as_bytes()).unwrap();
        let rule = config.rule(0).unwrap();
        assert_eq!(rule.groups.len(), 1);
        assert_eq!(
            rule.groups[0].fingerprint,
            fingerprint(0, &rule.key, &rule.limits)
        );
    }

    #[test]
    fn costs() {
        let config = parse(
            br#"{"rules": [
                {"cost": 3, "limits": [{"name": "a", "requests": 10, "window": "1s"}]},
                {"cost_header": "X-Cost", "max_cost": 5, "cost": 2,
                 "limits": [{"name": "a", "requests": 10, "window": "1s", "algorithm": "token_bucket", "burst": 5}]}]}"#,
        )
        .unwrap();
        let fixed = &config.rule(0).unwrap().cost;
        assert_eq!(
            (fixed.units, fixed.header.as_deref(), fixed.max),
            (3, None, 3)
        );
        let header = &config.rule(1).unwrap().cost;
        assert_eq!(header.header.as_deref(), Some("x-cost"));
        assert_eq!(
            config.header_needs,
            HeaderNeeds::Only(vec!["x-cost".into()])
        );
        // What a client may put in the header: digits only, at least 1, at most max_cost.
        let cases: [(Option<&str>, u64); 16] = [
            (None, 2),
            (Some(""), 2),
            (Some("1"), 1),
            (Some("4"), 4),
            (Some("5"), 5),
            (Some("6"), 5),
            (Some("18446744073709551615"), 5),
            (Some("99999999999999999999999999999999"), 5),
            (Some("0"), 2),
            (Some("-3"), 2),
            (Some("+3"), 2),
            (Some(" 3"), 2),
            (Some("3 "), 2),
            (Some("2.5"), 2),
            (Some("3, 4"), 2),
            (Some("0x10"), 2),
        ];
        for (value, cost) in cases {
            assert_eq!(header.of(value), cost, "{value:?}");
        }
        assert_eq!(header.of(Some("\u{0663}")), 2, "non-ASCII digits");
    }

    #[test]
    fn invalid_new_fields_name_their_path() {
        let lim = r#"{"name": "a", "requests": 10, "window": "1s"}"#;
        let cases: Vec<(String, &str, &str)> = vec![
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost_header": "x-cost"}}]}}"#), "rules[0].max_cost", "needs \"max_cost\""),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "max_cost": 3}}]}}"#), "rules[0].max_cost", "only a rule with"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost": 0}}]}}"#), "rules[0].cost", "between"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost": -1}}]}}"#), "rules[0].cost", "invalid value"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost": 11}}]}}"#), "rules[0].cost", "never pass"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost_header": "x-c", "max_cost": 11}}]}}"#), "rules[0].max_cost", "never pass"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost_header": "x-c", "max_cost": 0}}]}}"#), "rules[0].max_cost", "between"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost_header": "x-c", "max_cost": 3, "cost": 4}}]}}"#), "rules[0].cost", "not exceed"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost_header": "x c", "max_cost": 3}}]}}"#), "rules[0].cost_header", "header name"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "cost_header": ":path", "max_cost": 3}}]}}"#), "rules[0].cost_header", "header name"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 10, "window": "1s", "algorithm": "token_bucket", "burst": 2}], "cost": 3}]}"#.into(), "rules[0].cost", "never pass"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s", "key": []}]}]}"#.into(), "rules[0].limits[0].key", "at least one part"),
            (r#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s", "key": ["ip"]}]}]}"#.into(), "rules[0].limits[0].key[0]", "unknown key part"),
            (r#"{"client_ip": {"ipv4_prefix": 0}}"#.into(), "client_ip.ipv4_prefix", "between 1 and 32"),
            (r#"{"client_ip": {"ipv4_prefix": 33}}"#.into(), "client_ip.ipv4_prefix", "between 1 and 32"),
            (r#"{"client_ip": {"ipv6_prefix": 129}}"#.into(), "client_ip.ipv6_prefix", "between 1 and 128"),
            (r#"{"client_ip": {"ipv6_prefix": 0}}"#.into(), "client_ip.ipv6_prefix", "between 1 and 128"),
            (r#"{"client_ip": {"ipv6_prefix": 300}}"#.into(), "client_ip.ipv6_prefix", "between 1 and 128"),
            (r#"{"client_ip": {"ipv6_prefix": -1}}"#.into(), "client_ip.ipv6_prefix", "invalid value"),
            (r#"{"reply": {"status": 200}}"#.into(), "reply.status", "between 400 and 599"),
            (r#"{"reply": {"status": 302}}"#.into(), "reply.status", "between 400 and 599"),
            (r#"{"reply": {"error": "Rate Limited"}}"#.into(), "reply.error", "a-z"),
            (r#"{"reply": {"message": ""}}"#.into(), "reply.message", "1 to 1024"),
            (r#"{"reply": {"message": "a\nb"}}"#.into(), "reply.message", "control"),
            (r#"{"reply": {"body": "x"}}"#.into(), "reply.body", "unknown field"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "reply": {{"status": 100}}}}]}}"#), "rules[0].reply.status", "between"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow_percentage": 10}}]}}"#), "rules[0].shadow_percentage", "only a rule with"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow_header": "x-s"}}]}}"#), "rules[0].shadow_header", "only a rule with"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow": true, "shadow_percentage": 0}}]}}"#), "rules[0].shadow_percentage", "between 1 and 100"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow": true, "shadow_percentage": 101}}]}}"#), "rules[0].shadow_percentage", "between 1 and 100"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow": true, "shadow_header": "a b"}}]}}"#), "rules[0].shadow_header", "header name"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow": true, "shadow_header": "Authorization"}}]}}"#), "rules[0].shadow_header", "requests need"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow": true, "key": [{{"header": "x-api-key"}}], "shadow_header": "X-API-Key"}}]}}"#), "rules[0].shadow_header", "requests need"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "shadow": true, "cost_header": "x-c", "max_cost": 2, "shadow_header": "x-c"}}]}}"#), "rules[0].shadow_header", "requests need"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "name": "a.b"}}]}}"#), "rules[0].name", "letters"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "name": "a"}}, {{"limits": [{lim}], "name": "a"}}]}}"#), "rules[1].name", "duplicate"),
            (format!(r#"{{"rules": [{{"limits": [{lim}]}}, {{"limits": [{lim}], "name": "0"}}]}}"#), "rules[1].name", "by its index"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "name": "1"}}, {{"limits": [{lim}]}}]}}"#), "rules[1].name", "by its index"),
            (format!(r#"{{"rules": [{{"limits": [{lim}], "on_missing_key": "fallback"}}]}}"#), "rules[0].on_missing_key", "unknown variant"),
        ];
        for (json, path, reason) in cases {
            let e = err(&json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    #[test]
    fn replies_shadow_names_and_prefixes() {
        let config = parse(
            br#"{"reply": {"status": 503, "message": "Slow down."},
                 "client_ip": {"ipv4_prefix": 24, "ipv6_prefix": 56},
                 "rules": [
                   {"name": "api", "limits": [{"name": "a", "requests": 1, "window": "1s"}],
                    "reply": {"error": "quota_exceeded"}},
                   {"limits": [{"name": "a", "requests": 1, "window": "1s"}],
                    "shadow": true, "shadow_percentage": 25, "shadow_header": "X-Would-Limit"},
                   {"limits": [{"name": "a", "requests": 1, "window": "1s"}],
                    "shadow": true, "shadow_header": ""}]}"#,
        )
        .unwrap();
        assert_eq!(config.prefixes, Prefixes { ipv4: 24, ipv6: 56 });
        let (api, second, third) = (
            config.rule(0).unwrap(),
            config.rule(1).unwrap(),
            config.rule(2).unwrap(),
        );
        assert_eq!(api.name, "api");
        assert_eq!(second.name, "1", "unnamed: the index");
        assert_eq!(
            api.reply,
            Reply {
                status: 503,
                error: "quota_exceeded".into(),
                message: Some("Slow down.".into()),
            }
        );
        assert_eq!(second.reply.error, "rate_limited");
        let shadow = second.shadow.as_ref().unwrap();
        assert_eq!(
            (shadow.percentage, shadow.header.as_deref()),
            (25, Some("x-would-limit"))
        );
        assert_eq!(third.shadow.as_ref().unwrap().header, None);
        // The defaults: whole IPv4 addresses, IPv6 /64s; client address fallback; 100% shadow
        // with the default marker.
        let config = parse(
            br#"{"rules": [{"limits": [{"name": "a", "requests": 1, "window": "1s"}], "shadow": true}]}"#,
        )
        .unwrap();
        assert_eq!(config.prefixes, Prefixes { ipv4: 32, ipv6: 64 });
        let rule = config.rule(0).unwrap();
        assert_eq!(rule.on_missing_key, OnMissingKey::ClientIp);
        let shadow = rule.shadow.as_ref().unwrap();
        assert_eq!(
            (shadow.percentage, shadow.header.as_deref()),
            (100, Some(DEFAULT_SHADOW_HEADER))
        );
        assert_eq!(rule.reply, Reply::default());
    }

    #[test]
    fn shadow_percentage_passes_exactly_that_share() {
        for percentage in [1u8, 25, 50, 99, 100] {
            let shadow = Shadow {
                percentage,
                header: None,
                credit: std::cell::Cell::new(0),
            };
            let passed = (0..1000).filter(|_| shadow.passes()).count();
            assert_eq!(passed, usize::from(percentage) * 10, "{percentage}%");
        }
    }
}
