//! Configuration: raw serde types (names follow Envoy's jwt_authn) compiled into a checked
//! [`Config`] with decoded keys and resolved provider references.

use crate::claims::{ArrayFormat, ClaimMatch, ClaimRule};
use crate::jwks::{Jwks, KeyLimits};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasmgate_core::config::{ConfigError, Duration};
use wasmgate_core::metrics::label_value;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{Match, Policies};

/// Default size of the per-worker verified-token cache.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Default cap of a remote JWKS response body.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 64 * 1024;
/// Default `cache_duration` of a remote JWKS (Envoy's default: 10 minutes).
pub const DEFAULT_CACHE_DURATION_MS: u64 = 10 * 60 * 1000;
/// Default `max_token_bytes`: admits an Entra ID token with hundreds of group claims (about
/// 12 KB) with room to spare; Envoy's default request header limit (60 KiB) is below it.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Largest `max_token_bytes` accepted.
pub const MAX_MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Smallest `max_token_bytes` accepted (a smaller cap refuses every real token).
pub const MIN_MAX_TOKEN_BYTES: usize = 1024;
/// Default `max_keys_tried`: signature checks per token at most.
pub const DEFAULT_MAX_KEYS_TRIED: usize = 4;
/// Largest `max_keys_tried` accepted.
pub const MAX_MAX_KEYS_TRIED: usize = 64;

/// The largest `clock_skew_seconds` accepted: ten minutes.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    providers: BTreeMap<String, RawProvider>,
    requires: Option<RawRequirement>,
    #[serde(default)]
    claims: BTreeMap<String, ClaimValue>,
    #[serde(default)]
    rules: Vec<RawRule>,
    cache_entries: Option<usize>,
    use_host_crypto: Option<bool>,
    max_token_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    local_jwks: Option<RawLocalJwks>,
    remote_jwks: Option<RawRemoteJwks>,
    introspection: Option<RawIntrospection>,
    from_headers: Option<Vec<RawHeader>>,
    from_params: Option<Vec<String>>,
    from_cookies: Option<Vec<String>>,
    #[serde(default)]
    forward: bool,
    forward_payload_header: Option<String>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    clock_skew_seconds: Option<u64>,
    subjects: Option<RawStringMatcher>,
    max_lifetime: Option<Duration>,
    #[serde(default)]
    require_expiration: bool,
    max_keys_tried: Option<usize>,
    jwks_limits: Option<RawKeyLimits>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawStringMatcher {
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawKeyLimits {
    max_keys: Option<usize>,
    max_rsa_bits: Option<usize>,
    max_rsa_exponent: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawLocalJwks {
    inline_string: Option<String>,
    environment_variable: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    http_uri: RawHttpUri,
    cache_duration: Option<Duration>,
    max_jwks_bytes: Option<usize>,
    retry_back_off: Option<RawBackOff>,
    max_stale: Option<Duration>,
    jwks_clusters: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    http_uri: RawHttpUri,
    client_id: String,
    client_secret: wasmgate_core::Secret,
    cache_duration: Option<Duration>,
    negative_cache_duration: Option<Duration>,
    max_response_bytes: Option<usize>,
    cache_slots: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBackOff {
    base_interval: Option<Duration>,
    max_interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawHttpUri {
    uri: String,
    cluster: String,
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default)]
    value_prefix: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    header_name: String,
    claim_name: String,
    array_format: Option<ArrayFormat>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    requires_any: Option<RawRequirementList>,
    requires_all: Option<RawRequirementList>,
    allow_missing: Option<Empty>,
    allow_missing_or_failed: Option<Empty>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRequirementList {
    requirements: Vec<RawRequirement>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
enum ClaimValue {
    One(String),
    Any(Vec<ClaimValue>),
    Rule(Box<RawClaimRule>),
}

/// `{"prefix": "p"}`, `{"any_of": [...]}`, `{"all_of": [...]}` or `{"not": ...}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawClaimRule {
    prefix: Option<String>,
    any_of: Option<Vec<ClaimValue>>,
    all_of: Option<Vec<ClaimValue>>,
    not: Option<ClaimValue>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matcher: Match,
    enabled: Option<bool>,
    requires: Option<RawRequirement>,
    claims: Option<BTreeMap<String, ClaimValue>>,
}

/// Where a provider looks for its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A request header (lowercase name) whose value starts with `prefix` (compared
    /// case-insensitively, so `bearer ` also matches `Bearer `).
    Header {
        /// Header name.
        name: String,
        /// Value prefix (may be empty).
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// Where a remote JWKS comes from.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    /// The configured URI (for logs).
    pub uri: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// `:path` of the fetch.
    pub path: String,
    /// Envoy cluster to send the fetch to.
    pub cluster: String,
    /// Timeout of one fetch, and how long a request waits for the first one.
    pub timeout: std::time::Duration,
    /// How long fetched keys are used before a refresh.
    pub cache_duration: std::time::Duration,
    /// Responses larger than this are refused.
    pub max_bytes: usize,
    /// Bounds on a fetched key set (a set over them is a failed fetch).
    pub limits: KeyLimits,
    /// First wait after a failed fetch, in ms (doubled per failure).
    pub retry_base_ms: u64,
    /// Longest wait between failed fetches, in ms.
    pub retry_max_ms: u64,
    /// Last good keys are dropped this long (ms) after `cache_duration` ran out without a
    /// successful refresh (`None`: kept until a fetch succeeds).
    pub max_stale_ms: Option<u64>,
    /// The URI is an OpenID Connect discovery document (its path ends with
    /// `/.well-known/openid-configuration`); `issuer` is then the provider's issuer.
    pub discovery: Option<String>,
    /// Discovery: the cluster of each `jwks_uri` host other than the document's own.
    pub jwks_clusters: Vec<(String, String)>,
    /// Shared-data key holding this provider's fetched keys and fetch state: `jwks/<hash>` as
    /// compiled, then placed in the plugin's shared-data namespace at configure time.
    pub shared_key: String,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys given in the configuration.
    Local(Rc<Jwks>),
    /// Keys fetched from a URI.
    Remote(RemoteJwks),
    /// No keys: opaque tokens are checked by an RFC 7662 introspection endpoint.
    Introspection(crate::introspect::Introspection),
}

/// One compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Name in `providers`.
    pub name: String,
    /// Required `iss`, if configured.
    pub issuer: Option<String>,
    /// Allowed audiences (empty: any).
    pub audiences: Vec<String>,
    /// Keys.
    pub keys: KeySource,
    /// Token locations, in lookup order.
    pub locations: Vec<Location>,
    /// Keep the token in the request forwarded upstream.
    pub forward: bool,
    /// Header that receives the base64url payload.
    pub forward_payload_header: Option<String>,
    /// `(header, claim path, array format)` triples.
    pub claim_to_headers: Vec<(String, String, ArrayFormat)>,
    /// Allowed clock skew in seconds.
    pub clock_skew: u64,
    /// Allowed `sub` values (none: any).
    pub subjects: Option<SubjectMatcher>,
    /// `exp` required, and at most this many seconds after now (`require_expiration` alone:
    /// `u64::MAX`).
    pub max_lifetime: Option<u64>,
    /// Signature checks per token at most (a token without `kid` is tried against each
    /// fitting key until this many were tried).
    pub max_keys_tried: usize,
    /// Bounds on this provider's key sets (local at load, remote at each fetch).
    pub key_limits: KeyLimits,
}

/// `subjects`: which `sub` values a provider accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectMatcher {
    /// Exactly this value.
    Exact(String),
    /// Starts with this (non-empty) value.
    Prefix(String),
    /// Ends with this (non-empty) value.
    Suffix(String),
}

impl SubjectMatcher {
    /// Whether a token's `sub` (absent or not a string: never) is allowed.
    pub fn matches(&self, sub: Option<&str>) -> bool {
        let Some(sub) = sub else { return false };
        match self {
            Self::Exact(v) => sub == v,
            Self::Prefix(v) => sub.starts_with(v.as_str()),
            Self::Suffix(v) => sub.ends_with(v.as_str()),
        }
    }
}

/// A requirement tree with providers as indexes into [`Config::providers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The provider's token must be present and valid.
    Provider(usize),
    /// One of these must hold.
    Any(Vec<Requirement>),
    /// All of these must hold.
    All(Vec<Requirement>),
    /// A missing token is fine; a present token must be valid for some provider.
    AllowMissing,
    /// Always holds; valid tokens still produce their headers.
    AllowMissingOrFailed,
}

/// What a request must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The requirement tree.
    pub requires: Requirement,
    /// Claims a verified token must hold (403 `insufficient_scope` otherwise).
    pub claims: Vec<ClaimRule>,
}

/// The whole compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Providers in name order.
    pub providers: Vec<Provider>,
    /// The policy when no rule matches, and the per-route rules (first match wins).
    pub policies: Policies<Policy>,
    /// Capacity of the per-worker verified-token cache (0 disables it).
    pub cache_entries: usize,
    /// Verify RS*/ES256/ES384 with the host's `verify_signature` when it offers it.
    pub use_host_crypto: bool,
    /// Every header this filter may set from a token (removed from every request first).
    pub output_headers: Vec<String>,
    /// Tokens longer than this are refused (401 `token_too_large`) before any work.
    pub max_token_bytes: usize,
}

impl Config {
    /// Parses and compiles a JSON configuration.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        wasmgate_core::config::parse::<RawConfig>(json).and_then(compile)
    }

    /// Every header this filter may set from a token: removed from every request first.
    pub fn output_headers(&self) -> Vec<String> {
        self.output_headers.clone()
    }

    fn collect_output_headers(providers: &[Provider]) -> Vec<String> {
        let mut names: Vec<String> = providers
            .iter()
            .flat_map(|p| {
                p.forward_payload_header
                    .iter()
                    .cloned()
                    .chain(p.claim_to_headers.iter().map(|(h, _, _)| h.clone()))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(':')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if !valid_header_name(name) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// Splits `http(s)://authority/path` into authority and path (with query).
fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex_prefix(&Sha256::digest(text.as_bytes()))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn compile_key_limits(path: &str, raw: Option<RawKeyLimits>) -> Result<KeyLimits, ConfigError> {
    let defaults = KeyLimits::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let max_keys = raw.max_keys.unwrap_or(defaults.max_keys);
    if !(1..=crate::jwks::MAX_MAX_KEYS).contains(&max_keys) {
        return Err(ConfigError::new(
            format!("{path}.max_keys"),
            format!("must be between 1 and {}", crate::jwks::MAX_MAX_KEYS),
        ));
    }
    let max_rsa_bits = raw.max_rsa_bits.unwrap_or(defaults.max_rsa_bits);
    if !(crate::jwks::MIN_RSA_BITS..=crate::jwks::MAX_RSA_BITS).contains(&max_rsa_bits) {
        return Err(ConfigError::new(
            format!("{path}.max_rsa_bits"),
            format!(
                "must be between {} and {}",
                crate::jwks::MIN_RSA_BITS,
                crate::jwks::MAX_RSA_BITS
            ),
        ));
    }
    let max_rsa_exponent = raw.max_rsa_exponent.unwrap_or(defaults.max_rsa_exponent);
    if !(3..=crate::jwks::MAX_RSA_EXPONENT).contains(&max_rsa_exponent) {
        return Err(ConfigError::new(
            format!("{path}.max_rsa_exponent"),
            format!("must be between 3 and {}", crate::jwks::MAX_RSA_EXPONENT),
        ));
    }
    Ok(KeyLimits {
        max_keys,
        max_rsa_bits,
        max_rsa_exponent,
    })
}

/// Default `introspection.cache_duration`: the longest life of a cached active answer.
pub const DEFAULT_INTROSPECTION_CACHE_SECS: u64 = 300;
/// Default `introspection.negative_cache_duration`.
pub const DEFAULT_INTROSPECTION_NEGATIVE_SECS: u64 = 10;
/// Default `introspection.max_response_bytes`.
pub const DEFAULT_INTROSPECTION_MAX_BYTES: usize = 16 * 1024;
/// Default `introspection.cache_slots`.
pub const DEFAULT_INTROSPECTION_SLOTS: u32 = 1024;

fn compile_introspection(
    name: &str,
    path: &str,
    raw: RawIntrospection,
) -> Result<crate::introspect::Introspection, ConfigError> {
    let p = format!("{path}.introspection");
    let (authority, uri_path) = split_uri(&raw.http_uri.uri).ok_or_else(|| {
        ConfigError::new(
            format!("{p}.http_uri.uri"),
            "expected an absolute http:// or https:// URI",
        )
    })?;
    if raw.http_uri.cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{p}.http_uri.cluster"),
            "empty cluster",
        ));
    }
    if raw.http_uri.timeout.as_millis() == 0 {
        return Err(ConfigError::new(
            format!("{p}.http_uri.timeout"),
            "the timeout must be positive",
        ));
    }
    if raw.client_id.is_empty() {
        return Err(ConfigError::new(
            format!("{p}.client_id"),
            "empty client_id",
        ));
    }
    let cache_secs = raw
        .cache_duration
        .map_or(DEFAULT_INTROSPECTION_CACHE_SECS, |d| d.0.as_secs());
    if !(1..=86_400).contains(&cache_secs) {
        // A revoked token stays accepted this long: bounded.
        return Err(ConfigError::new(
            format!("{p}.cache_duration"),
            "must be between 1s and 24h",
        ));
    }
    let negative_secs = raw
        .negative_cache_duration
        .map_or(DEFAULT_INTROSPECTION_NEGATIVE_SECS, |d| d.0.as_secs());
    if negative_secs > 300 {
        return Err(ConfigError::new(
            format!("{p}.negative_cache_duration"),
            "must be at most 5m",
        ));
    }
    let max_bytes = raw
        .max_response_bytes
        .unwrap_or(DEFAULT_INTROSPECTION_MAX_BYTES);
    if !(256..=1024 * 1024).contains(&max_bytes) {
        return Err(ConfigError::new(
            format!("{p}.max_response_bytes"),
            "must be between 256 and 1048576",
        ));
    }
    let cache_slots = raw.cache_slots.unwrap_or(DEFAULT_INTROSPECTION_SLOTS);
    if !(1..=65_536).contains(&cache_slots) {
        return Err(ConfigError::new(
            format!("{p}.cache_slots"),
            "must be between 1 and 65536",
        ));
    }
    let scheme = if raw.http_uri.uri.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    // The cache's key covers what decides an answer: another endpoint or client starts afresh.
    let shared_prefix = format!(
        "introspect/{}",
        short_hash(&format!(
            "{name}\n{}\n{}\n{}",
            raw.http_uri.uri, raw.http_uri.cluster, raw.client_id
        ))
    );
    Ok(crate::introspect::Introspection {
        uri: raw.http_uri.uri,
        scheme,
        authority,
        path: uri_path,
        cluster: raw.http_uri.cluster,
        timeout: raw.http_uri.timeout.0,
        authorization: crate::introspect::basic_authorization(
            &raw.client_id,
            raw.client_secret.expose(),
        ),
        cache_secs,
        negative_secs,
        max_bytes,
        cache_slots,
        shared_prefix,
    })
}

fn compile_subjects(path: &str, raw: RawStringMatcher) -> Result<SubjectMatcher, ConfigError> {
    let matcher = match (raw.exact, raw.prefix, raw.suffix) {
        (Some(v), None, None) => SubjectMatcher::Exact(v),
        (None, Some(v), None) => SubjectMatcher::Prefix(v),
        (None, None, Some(v)) => SubjectMatcher::Suffix(v),
        _ => {
            return Err(ConfigError::new(
                path,
                "give exactly one of exact, prefix or suffix",
            ))
        }
    };
    let (SubjectMatcher::Exact(v) | SubjectMatcher::Prefix(v) | SubjectMatcher::Suffix(v)) =
        &matcher;
    if v.is_empty() {
        // An empty prefix or suffix matches every subject: omit `subjects` instead.
        return Err(ConfigError::new(
            path,
            "must not be empty (omit subjects to accept any subject)",
        ));
    }
    Ok(matcher)
}

fn compile_provider(name: &str, raw: RawProvider) -> Result<Provider, ConfigError> {
    let path = format!("providers.{name}");
    let key_limits = compile_key_limits(&format!("{path}.jwks_limits"), raw.jwks_limits)?;
    let keys = match (raw.local_jwks, raw.remote_jwks, raw.introspection) {
        (None, None, Some(intro)) => {
            KeySource::Introspection(compile_introspection(name, &path, intro)?)
        }
        (Some(local), None, None) => {
            let p = format!("{path}.local_jwks");
            let text = match (local.inline_string, local.environment_variable) {
                (Some(text), None) => text,
                (None, Some(var)) => std::env::var(&var).map_err(|_| {
                    ConfigError::new(
                        format!("{p}.environment_variable"),
                        format!("environment variable {var} is not set"),
                    )
                })?,
                _ => {
                    return Err(ConfigError::new(
                        p,
                        "give exactly one of inline_string or environment_variable",
                    ))
                }
            };
            let jwks = Jwks::parse_limited(&text, &key_limits)
                .map_err(|reason| ConfigError::new(&p, reason))?;
            if jwks.keys.is_empty() {
                return Err(ConfigError::new(p, "the JWKS has no usable key"));
            }
            KeySource::Local(Rc::new(jwks))
        }
        (None, Some(remote), None) => {
            let p = format!("{path}.remote_jwks.http_uri");
            let (authority, uri_path) = split_uri(&remote.http_uri.uri).ok_or_else(|| {
                ConfigError::new(
                    format!("{p}.uri"),
                    "expected an absolute http:// or https:// URI",
                )
            })?;
            if remote.http_uri.cluster.is_empty() {
                return Err(ConfigError::new(format!("{p}.cluster"), "empty cluster"));
            }
            if remote.http_uri.timeout.as_millis() == 0 {
                return Err(ConfigError::new(
                    format!("{p}.timeout"),
                    "the timeout must be positive",
                ));
            }
            let cache_duration = remote.cache_duration.map_or(
                std::time::Duration::from_millis(DEFAULT_CACHE_DURATION_MS),
                |d| d.0,
            );
            if cache_duration.as_secs() == 0 {
                return Err(ConfigError::new(
                    format!("{path}.remote_jwks.cache_duration"),
                    "cache_duration must be at least 1s",
                ));
            }
            let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let back_off = remote.retry_back_off.unwrap_or(RawBackOff {
                base_interval: None,
                max_interval: None,
            });
            let retry_base_ms = back_off
                .base_interval
                .map_or(crate::remote::BASE_RETRY_MS, |d| ms(d.0));
            let retry_max_ms = back_off
                .max_interval
                .map_or(crate::remote::MAX_RETRY_MS.max(retry_base_ms), |d| ms(d.0));
            let bp = format!("{path}.remote_jwks.retry_back_off");
            if retry_base_ms < 100 {
                // A tighter loop would hammer a failing identity provider.
                return Err(ConfigError::new(
                    format!("{bp}.base_interval"),
                    "must be at least 100ms",
                ));
            }
            if retry_max_ms < retry_base_ms || retry_max_ms > 3_600_000 {
                return Err(ConfigError::new(
                    format!("{bp}.max_interval"),
                    "must be at least base_interval and at most 1h",
                ));
            }
            let max_stale_ms = remote.max_stale.map(|d| ms(d.0));
            let discovery = uri_path
                .split(['?', '#'])
                .next()
                .is_some_and(|p| p.ends_with(crate::discovery::WELL_KNOWN));
            let discovery = match (discovery, &raw.issuer) {
                (false, _) => None,
                (true, Some(issuer)) if !issuer.is_empty() => Some(issuer.clone()),
                (true, _) => {
                    return Err(ConfigError::new(
                        format!("{path}.issuer"),
                        "OIDC discovery needs the provider's issuer (the document's issuer must equal it)",
                    ))
                }
            };
            let mut jwks_clusters = Vec::new();
            for (host, cluster) in remote.jwks_clusters.unwrap_or_default() {
                let cp = format!("{path}.remote_jwks.jwks_clusters.{host}");
                if discovery.is_none() {
                    return Err(ConfigError::new(
                        cp,
                        "jwks_clusters is only used with an OIDC discovery URI (/.well-known/openid-configuration)",
                    ));
                }
                if host.is_empty() || cluster.is_empty() || host.contains(['/', '@', ' ']) {
                    return Err(ConfigError::new(
                        cp,
                        "expected a host (with an optional port) and a cluster name",
                    ));
                }
                jwks_clusters.push((host.to_ascii_lowercase(), cluster));
            }
            let max_bytes = remote.max_jwks_bytes.unwrap_or(DEFAULT_MAX_JWKS_BYTES);
            if max_bytes == 0 {
                return Err(ConfigError::new(
                    format!("{path}.remote_jwks.max_jwks_bytes"),
                    "must be positive",
                ));
            }
            // The limits are part of the key: a document accepted under other limits is
            // fetched (and checked) again. `f1` names the value's format
            // (`wasmgate_core::fetched::SharedFetch`), so a module version storing another
            // format never reads this one.
            let shared_key = format!(
                "jwks/f1/{}",
                short_hash(&format!(
                    "{name}\n{}\n{}\n{key_limits:?}",
                    remote.http_uri.uri, remote.http_uri.cluster
                ))
            );
            KeySource::Remote(RemoteJwks {
                uri: remote.http_uri.uri,
                authority,
                path: uri_path,
                cluster: remote.http_uri.cluster,
                timeout: remote.http_uri.timeout.0,
                cache_duration,
                max_bytes,
                limits: key_limits,
                retry_base_ms,
                retry_max_ms,
                max_stale_ms,
                discovery,
                jwks_clusters,
                shared_key,
            })
        }
        _ => {
            return Err(ConfigError::new(
                path,
                "give exactly one of local_jwks, remote_jwks or introspection",
            ))
        }
    };
    let mut locations = Vec::new();
    let defaults =
        raw.from_headers.is_none() && raw.from_params.is_none() && raw.from_cookies.is_none();
    if defaults {
        locations.push(Location::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        });
        locations.push(Location::Param("access_token".into()));
    }
    for (i, h) in raw.from_headers.unwrap_or_default().into_iter().enumerate() {
        locations.push(Location::Header {
            name: header_name(&format!("{path}.from_headers[{i}].name"), &h.name)?,
            prefix: h.value_prefix,
        });
    }
    for (i, p) in raw.from_params.unwrap_or_default().into_iter().enumerate() {
        if p.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.from_params[{i}]"),
                "empty parameter name",
            ));
        }
        locations.push(Location::Param(p));
    }
    for (i, c) in raw.from_cookies.unwrap_or_default().into_iter().enumerate() {
        if c.is_empty() || c.contains([';', '=', ' ']) {
            return Err(ConfigError::new(
                format!("{path}.from_cookies[{i}]"),
                "invalid cookie name",
            ));
        }
        locations.push(Location::Cookie(c));
    }
    let forward_payload_header = raw
        .forward_payload_header
        .map(|h| header_name(&format!("{path}.forward_payload_header"), &h))
        .transpose()?;
    let claim_to_headers = raw
        .claim_to_headers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let p = format!("{path}.claim_to_headers[{i}]");
            if c.claim_name.is_empty() {
                return Err(ConfigError::new(
                    format!("{p}.claim_name"),
                    "empty claim name",
                ));
            }
            Ok((
                header_name(&format!("{p}.header_name"), &c.header_name)?,
                c.claim_name,
                c.array_format.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let p = format!("providers.{name}");
    // A field given but empty would switch its check off without saying so: omit it instead.
    if raw.issuer.as_deref().is_some_and(str::is_empty) {
        return Err(ConfigError::new(
            format!("{p}.issuer"),
            "must not be empty (omit it to accept any issuer)",
        ));
    }
    if raw.audiences.as_ref().is_some_and(Vec::is_empty) {
        return Err(ConfigError::new(
            format!("{p}.audiences"),
            "must not be empty (omit it to accept any audience)",
        ));
    }
    if raw.audiences.iter().flatten().any(String::is_empty) {
        return Err(ConfigError::new(
            format!("{p}.audiences"),
            "an audience must not be empty",
        ));
    }
    let clock_skew = raw.clock_skew_seconds.unwrap_or(60);
    if clock_skew > MAX_CLOCK_SKEW_SECS {
        return Err(ConfigError::new(
            format!("{p}.clock_skew_seconds"),
            format!("must be at most {MAX_CLOCK_SKEW_SECS} (a larger skew all but switches exp and nbf off)"),
        ));
    }
    let subjects = raw
        .subjects
        .map(|s| compile_subjects(&format!("{p}.subjects"), s))
        .transpose()?;
    let max_lifetime = match raw.max_lifetime {
        Some(d) if d.0.as_secs() == 0 => {
            return Err(ConfigError::new(
                format!("{p}.max_lifetime"),
                "must be at least 1s",
            ))
        }
        Some(d) => Some(d.0.as_secs()),
        None if raw.require_expiration => Some(u64::MAX),
        None => None,
    };
    let max_keys_tried = raw.max_keys_tried.unwrap_or(DEFAULT_MAX_KEYS_TRIED);
    if !(1..=MAX_MAX_KEYS_TRIED).contains(&max_keys_tried) {
        return Err(ConfigError::new(
            format!("{p}.max_keys_tried"),
            format!("must be between 1 and {MAX_MAX_KEYS_TRIED}"),
        ));
    }
    Ok(Provider {
        name: name.to_string(),
        issuer: raw.issuer,
        audiences: raw.audiences.unwrap_or_default(),
        keys,
        locations,
        forward: raw.forward,
        forward_payload_header,
        claim_to_headers,
        clock_skew,
        subjects,
        max_lifetime,
        max_keys_tried,
        key_limits,
    })
}

fn compile_requirement(
    path: &str,
    raw: RawRequirement,
    names: &[String],
) -> Result<Requirement, ConfigError> {
    let given = usize::from(raw.provider_name.is_some())
        + usize::from(raw.requires_any.is_some())
        + usize::from(raw.requires_all.is_some())
        + usize::from(raw.allow_missing.is_some())
        + usize::from(raw.allow_missing_or_failed.is_some());
    if given != 1 {
        return Err(ConfigError::new(
            path,
            "a requirement needs exactly one of provider_name, requires_any, requires_all, allow_missing, allow_missing_or_failed",
        ));
    }
    let list = |field: &str, list: RawRequirementList| -> Result<Vec<Requirement>, ConfigError> {
        if list.requirements.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.{field}.requirements"),
                "needs at least one requirement",
            ));
        }
        list.requirements
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                compile_requirement(&format!("{path}.{field}.requirements[{i}]"), r, names)
            })
            .collect()
    };
    if let Some(name) = raw.provider_name {
        return names
            .iter()
            .position(|n| *n == name)
            .map(Requirement::Provider)
            .ok_or_else(|| {
                ConfigError::new(
                    format!("{path}.provider_name"),
                    format!("no provider named {name:?}"),
                )
            });
    }
    if let Some(any) = raw.requires_any {
        return list("requires_any", any).map(Requirement::Any);
    }
    if let Some(all) = raw.requires_all {
        return list("requires_all", all).map(Requirement::All);
    }
    if raw.allow_missing.is_some() {
        return Ok(Requirement::AllowMissing);
    }
    Ok(Requirement::AllowMissingOrFailed)
}

/// Deepest nesting of `not`, `any_of` and `all_of` in one claim rule.
const MAX_CLAIM_RULE_DEPTH: usize = 8;

fn compile_claim_value(
    path: &str,
    raw: ClaimValue,
    depth: usize,
) -> Result<ClaimMatch, ConfigError> {
    if depth > MAX_CLAIM_RULE_DEPTH {
        return Err(ConfigError::new(
            path,
            format!("rules nest at most {MAX_CLAIM_RULE_DEPTH} deep"),
        ));
    }
    let list = |field: &str, items: Vec<ClaimValue>| -> Result<Vec<ClaimMatch>, ConfigError> {
        let p = if field.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{field}")
        };
        if items.is_empty() {
            return Err(ConfigError::new(
                p,
                "a claim needs non-empty values (an empty list would hold never or always)",
            ));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| compile_claim_value(&format!("{p}[{i}]"), v, depth + 1))
            .collect()
    };
    match raw {
        ClaimValue::One(v) if v.is_empty() => {
            Err(ConfigError::new(path, "a claim needs non-empty values"))
        }
        ClaimValue::One(v) => Ok(ClaimMatch::Equals(v)),
        ClaimValue::Any(items) => list("", items).map(ClaimMatch::AnyOf),
        ClaimValue::Rule(rule) => {
            let RawClaimRule {
                prefix,
                any_of,
                all_of,
                not,
            } = *rule;
            let given = usize::from(prefix.is_some())
                + usize::from(any_of.is_some())
                + usize::from(all_of.is_some())
                + usize::from(not.is_some());
            if given != 1 {
                return Err(ConfigError::new(
                    path,
                    "a claim rule needs exactly one of prefix, any_of, all_of, not",
                ));
            }
            if let Some(prefix) = prefix {
                if prefix.is_empty() {
                    // An empty prefix holds for every value: omit the rule instead.
                    return Err(ConfigError::new(
                        format!("{path}.prefix"),
                        "must not be empty",
                    ));
                }
                return Ok(ClaimMatch::Prefix(prefix));
            }
            if let Some(items) = any_of {
                return list("any_of", items).map(ClaimMatch::AnyOf);
            }
            if let Some(items) = all_of {
                return list("all_of", items).map(ClaimMatch::AllOf);
            }
            match not {
                Some(inner) => compile_claim_value(&format!("{path}.not"), inner, depth + 1)
                    .map(|m| ClaimMatch::Not(Box::new(m))),
                None => Err(ConfigError::new(path, "empty claim rule")),
            }
        }
    }
}

fn compile_claims(
    path: &str,
    raw: BTreeMap<String, ClaimValue>,
) -> Result<Vec<ClaimRule>, ConfigError> {
    raw.into_iter()
        .map(|(name, value)| {
            let p = format!("{path}.{name}");
            if name.is_empty() {
                return Err(ConfigError::new(p, "a claim needs a name"));
            }
            let rule = compile_claim_value(&p, value, 0)?;
            Ok(ClaimRule { name, rule })
        })
        .collect()
}

pub(crate) fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.providers.is_empty() {
        return Err(ConfigError::new(
            "providers",
            "at least one provider is required",
        ));
    }
    let names: Vec<String> = raw.providers.keys().cloned().collect();
    // A provider's name is its metrics' `provider` label: two names must not become one.
    let mut labels = BTreeMap::new();
    for name in &names {
        if let Some(first) = labels.insert(label_value(name), name) {
            return Err(ConfigError::new(
                format!("providers.{name}"),
                format!("the same metric label as provider {first:?}"),
            ));
        }
    }
    let providers = raw
        .providers
        .into_iter()
        .map(|(name, p)| compile_provider(&name, p))
        .collect::<Result<Vec<_>, _>>()?;
    let default_requires = match raw.requires {
        Some(r) => compile_requirement("requires", r, &names)?,
        None if names.len() == 1 => Requirement::Provider(0),
        None => Requirement::Any((0..names.len()).map(Requirement::Provider).collect()),
    };
    let default_policy = Policy {
        requires: default_requires,
        claims: compile_claims("claims", raw.claims)?,
    };
    let rules = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let requires = r
                .requires
                .map(|req| compile_requirement(&format!("rules[{i}].requires"), req, &names))
                .transpose()?
                .unwrap_or_else(|| default_policy.requires.clone());
            let claims = match r.claims {
                Some(c) => compile_claims(&format!("rules[{i}].claims"), c)?,
                None => default_policy.claims.clone(),
            };
            Ok(PolicyRule {
                matcher: r.matcher,
                policy: r
                    .enabled
                    .unwrap_or(true)
                    .then_some(Policy { requires, claims }),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let output_headers = Config::collect_output_headers(&providers);
    let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(MIN_MAX_TOKEN_BYTES..=MAX_MAX_TOKEN_BYTES).contains(&max_token_bytes) {
        return Err(ConfigError::new(
            "max_token_bytes",
            format!("must be between {MIN_MAX_TOKEN_BYTES} and {MAX_MAX_TOKEN_BYTES}"),
        ));
    }
    Ok(Config {
        max_token_bytes,
        output_headers,
        providers,
        policies: Policies::new(default_policy, rules).with_paths(raw.paths),
        cache_entries: raw.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES),
        use_host_crypto: raw.use_host_crypto.unwrap_or(true),
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

    const JWKS: &str = r#"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA\"}]}"#;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::from_json(json.replace("JWKS", JWKS).as_bytes())
    }

    fn err(json: &str) -> ConfigError {
        parse(json).unwrap_err()
    }

    #[test]
    fn minimal_and_defaults() {
        let c =
            parse(r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}}}}"#).unwrap();
        let p = &c.providers[0];
        assert_eq!(p.clock_skew, 60);
        assert!(!p.forward);
        assert_eq!(
            p.locations,
            vec![
                Location::Header {
                    name: "authorization".into(),
                    prefix: "Bearer ".into()
                },
                Location::Param("access_token".into())
            ]
        );
        assert_eq!(
            c.policies.default_policy().requires,
            Requirement::Provider(0)
        );
        assert_eq!(c.cache_entries, DEFAULT_CACHE_ENTRIES);
        assert!(c.use_host_crypto);
        assert_eq!(c.max_token_bytes, 64 * 1024);
        assert_eq!(p.max_keys_tried, DEFAULT_MAX_KEYS_TRIED);
        assert_eq!(p.key_limits, KeyLimits::default());
        assert_eq!(p.max_lifetime, None);
        assert_eq!(p.subjects, None);
    }

    #[test]
    fn remote_jwks() {
        let c = parse(
            r#"{"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "https://issuer.example.com/.well-known/jwks.json",
                "cluster": "jwks_cluster", "timeout": "1s"}, "cache_duration": "10m"}}}}"#,
        )
        .unwrap();
        let KeySource::Remote(r) = &c.providers[0].keys else {
            panic!()
        };
        assert_eq!(r.authority, "issuer.example.com");
        assert_eq!(r.path, "/.well-known/jwks.json");
        assert_eq!(r.cache_duration.as_secs(), 600);
        assert_eq!(r.max_bytes, DEFAULT_MAX_JWKS_BYTES);
        let c = parse(
            r#"{"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "https://issuer.example.com/jwks",
                "cluster": "jwks_cluster", "timeout": "1s"}}}}}"#,
        )
        .unwrap();
        let KeySource::Remote(r) = &c.providers[0].keys else {
            panic!()
        };
        assert_eq!(
            r.cache_duration.as_secs(),
            600,
            "Envoy's default: 10 minutes"
        );
        assert!(r.shared_key.starts_with("jwks/"));
    }

    #[test]
    fn invalid_configs_name_their_path() {
        let cases = [
            (r#"{"providers": {}}"#, "providers", "at least one"),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "issuer": ""}}}"#,
                "providers.p.issuer",
                "omit it to accept any issuer",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "audiences": []}}}"#,
                "providers.p.audiences",
                "omit it to accept any audience",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "audiences": [""]}}}"#,
                "providers.p.audiences",
                "must not be empty",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "clock_skew_seconds": 601}}}"#,
                "providers.p.clock_skew_seconds",
                "at most 600",
            ),
            (
                r#"{"providers": {"p": {}}}"#,
                "providers.p",
                "exactly one of local_jwks, remote_jwks or introspection",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "remote_jwks": {"http_uri": {"uri": "http://a/", "cluster": "c", "timeout": "1s"}}}}}"#,
                "providers.p",
                "exactly one",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "{}"}}}}"#,
                "providers.p.local_jwks",
                "keys",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}"}}}}"#,
                "providers.p.local_jwks",
                "RSA",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "isuer": "x"}}}"#,
                "providers.p.isuer",
                "unknown field",
            ),
            (
                r#"{"providers": {"a b": {"local_jwks": {"inline_string": "JWKS"}}, "a_b": {"local_jwks": {"inline_string": "JWKS"}}}}"#,
                "providers.a_b",
                "the same metric label as provider \"a b\"",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}}}, "requires": {"provider_name": "q"}}"#,
                "requires.provider_name",
                "no provider named",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}}}, "requires": {"requires_any": {"requirements": []}}}"#,
                "requires.requires_any.requirements",
                "at least one",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}}}, "requires": {"provider_name": "p", "allow_missing": {}}}"#,
                "requires",
                "exactly one",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}}}, "rules": [{"match": {}, "requires": {"requires_all": {"requirements": [{"provider_name": "nope"}]}}}]}"#,
                "rules[0].requires.requires_all.requirements[0].provider_name",
                "no provider",
            ),
            (
                r#"{"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "jwks.json", "cluster": "c", "timeout": "1s"}}}}}"#,
                "providers.p.remote_jwks.http_uri.uri",
                "absolute",
            ),
            (
                r#"{"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "http://a/k", "cluster": "c", "timeout": "1"}}}}}"#,
                "providers.p.remote_jwks.http_uri.timeout",
                "invalid duration",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "claim_to_headers": [{"header_name": "bad header", "claim_name": "sub"}]}}}"#,
                "providers.p.claim_to_headers[0].header_name",
                "not a valid header name",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}}}, "rules": [{"match": {}, "claims": {"scope": []}}]}"#,
                "rules[0].claims.scope",
                "non-empty",
            ),
            (
                r#"{"providers": {"p": {"local_jwks": {"environment_variable": "WASMGATE_JWT_SURELY_UNSET"}}}}"#,
                "providers.p.local_jwks.environment_variable",
                "not set",
            ),
        ];
        let p = r#""local_jwks": {"inline_string": "JWKS"}"#;
        let r =
            r#""remote_jwks": {"http_uri": {"uri": "http://a/k", "cluster": "c", "timeout": "1s"}"#;
        let i = r#""introspection": {"http_uri": {"uri": "http://a/i", "cluster": "c", "timeout": "1s"}, "client_id": "gw""#;
        let more = [
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "max_token_bytes": 100}}"#), "max_token_bytes", "between"),
            (format!(r#"{{"providers": {{"p": {{{r}, "retry_back_off": {{"base_interval": "10ms"}}}}}}}}}}"#), "providers.p.remote_jwks.retry_back_off.base_interval", "at least 100ms"),
            (format!(r#"{{"providers": {{"p": {{{r}, "retry_back_off": {{"base_interval": "5s", "max_interval": "1s"}}}}}}}}}}"#), "providers.p.remote_jwks.retry_back_off.max_interval", "at least base_interval"),
            (format!(r#"{{"providers": {{"p": {{{r}, "max_stale": "soon"}}}}}}}}"#), "providers.p.remote_jwks.max_stale", "invalid duration"),
            (format!(r#"{{"providers": {{"p": {{{i}, "client_secret": {{"value": ""}}}}}}}}}}"#), "providers.p.introspection.client_secret", "empty"),
            (format!(r#"{{"providers": {{"p": {{{i}, "client_secret": {{"env": "WASMGATE_JWT_SURELY_UNSET"}}}}}}}}}}"#), "providers.p.introspection.client_secret", "not set"),
            (format!(r#"{{"providers": {{"p": {{{i}, "client_secret": {{"value": "s"}}, "cache_duration": "48h"}}}}}}}}"#), "providers.p.introspection.cache_duration", "between"),
            (format!(r#"{{"providers": {{"p": {{{i}, "client_secret": {{"value": "s"}}, "negative_cache_duration": "1h"}}}}}}}}"#), "providers.p.introspection.negative_cache_duration", "at most"),
            (format!(r#"{{"providers": {{"p": {{{i}, "client_secret": {{"value": "s"}}, "cache_slots": 0}}}}}}}}"#), "providers.p.introspection.cache_slots", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, {i}, "client_secret": {{"value": "s"}}}}}}}}}}"#), "providers.p", "exactly one"),
            (format!(r#"{{"providers": {{"p": {{{r}, "jwks_clusters": {{"k.example.com": "k"}}}}}}}}}}"#), "providers.p.remote_jwks.jwks_clusters.k.example.com", "only used with"),
            (r#"{"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "https://idp/.well-known/openid-configuration", "cluster": "c", "timeout": "1s"}}}}}"#.to_string(), "providers.p.issuer", "discovery needs"),
            (r#"{"providers": {"p": {"issuer": "https://idp", "remote_jwks": {"http_uri": {"uri": "https://idp/.well-known/openid-configuration", "cluster": "c", "timeout": "1s"}, "jwks_clusters": {"a@b": "k"}}}}}"#.to_string(), "providers.p.remote_jwks.jwks_clusters.a@b", "expected a host"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "max_token_bytes": 2000000}}"#), "max_token_bytes", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, "max_keys_tried": 0}}}}}}"#), "providers.p.max_keys_tried", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, "jwks_limits": {{"max_keys": 0}}}}}}}}"#), "providers.p.jwks_limits.max_keys", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, "jwks_limits": {{"max_rsa_bits": 1024}}}}}}}}"#), "providers.p.jwks_limits.max_rsa_bits", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, "jwks_limits": {{"max_rsa_bits": 16384}}}}}}}}"#), "providers.p.jwks_limits.max_rsa_bits", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, "jwks_limits": {{"max_rsa_exponent": 1}}}}}}}}"#), "providers.p.jwks_limits.max_rsa_exponent", "between"),
            (format!(r#"{{"providers": {{"p": {{{p}, "subjects": {{"prefix": ""}}}}}}}}"#), "providers.p.subjects", "must not be empty"),
            (format!(r#"{{"providers": {{"p": {{{p}, "subjects": {{"prefix": "a", "exact": "b"}}}}}}}}"#), "providers.p.subjects", "exactly one"),
            (format!(r#"{{"providers": {{"p": {{{p}, "subjects": {{"regex": "a"}}}}}}}}"#), "providers.p.subjects.regex", "unknown field"),
            (format!(r#"{{"providers": {{"p": {{{p}, "max_lifetime": "0s"}}}}}}"#), "providers.p.max_lifetime", "at least 1s"),
            (format!(r#"{{"providers": {{"p": {{{p}, "claim_to_headers": [{{"header_name": "x", "claim_name": "g", "array_format": "csv"}}]}}}}}}"#), "providers.p.claim_to_headers[0].array_format", "unknown variant"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": {{"prefix": ""}}}}}}"#), "claims.scope.prefix", "must not be empty"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": {{"all_of": []}}}}}}"#), "claims.scope.all_of", "non-empty"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": {{"not": ""}}}}}}"#), "claims.scope.not", "non-empty"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": {{"any_of": ["a", ""]}}}}}}"#), "claims.scope.any_of[1]", "non-empty"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": {{"prefix": "a", "not": "b"}}}}}}"#), "claims.scope", "exactly one"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": {{}}}}}}"#), "claims.scope", "exactly one"),
            (format!(r#"{{"providers": {{"p": {{{p}}}}}, "claims": {{"scope": 5}}}}"#), "claims.scope", ""),
        ];
        for (json, path, reason) in more {
            let e = err(&json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
        for (json, path, reason) in cases {
            let e = err(json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    #[test]
    fn jwks_from_the_environment() {
        std::env::set_var(
            "WASMGATE_JWT_TEST_KEYSET",
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#,
        );
        let c = parse(r#"{"providers": {"p": {"local_jwks": {"environment_variable": "WASMGATE_JWT_TEST_KEYSET"}}}}"#)
            .unwrap();
        assert!(matches!(&c.providers[0].keys, KeySource::Local(j) if j.keys.len() == 1));
    }

    #[test]
    fn the_issue_example_and_the_istio_manifest_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = std::fs::read_to_string(root.join("examples/istio/jwt-auth.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::Deserializer::from_str(&manifest)
            .next()
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .unwrap();
        assert_eq!(doc["kind"], "WasmPlugin");
        assert_eq!(doc["spec"]["phase"], "AUTHN");
        let plugin_config = serde_json::to_vec(&doc["spec"]["pluginConfig"]).unwrap();
        let c = Config::from_json(&plugin_config).unwrap();
        assert!(!c.providers.is_empty());
    }

    /// The `configuration` value of the jwt-auth filter in an Envoy config file.
    fn envoy_filter_config(path: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join(path)).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let filters = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"];
        let filter = filters
            .as_sequence()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "jwt-auth")
            .unwrap();
        filter["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn shipped_envoy_configs_parse() {
        for path in ["envoy/jwt-auth.yaml", "envoy/demo.yaml"] {
            let json = envoy_filter_config(path);
            let c = Config::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(c.providers[0].name, "demo", "{path}");
        }
    }

    #[test]
    fn output_headers_are_collected() {
        let c = parse(
            r#"{"providers": {"p": {"local_jwks": {"inline_string": "JWKS"}, "forward_payload_header": "X-Jwt-Payload",
                "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}]}}}"#,
        )
        .unwrap();
        assert_eq!(c.output_headers(), vec!["x-jwt-payload", "x-sub"]);
    }
}
