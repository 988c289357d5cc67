//! Configuration: raw serde types (names follow Envoy's jwt_authn) compiled into a checked
//! [`Config`] with decoded keys and resolved provider references.

use crate::claims::ClaimRule;
use crate::jwks::Jwks;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasmgate_core::config::{ConfigError, Duration};
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{Match, Policies};

/// Default size of the per-worker verified-token cache.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Default cap of a remote JWKS response body.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 64 * 1024;
/// Default `cache_duration` of a remote JWKS (Envoy's default).
pub const DEFAULT_CACHE_DURATION_MS: u64 = 5 * 60 * 1000;

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
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    local_jwks: Option<RawLocalJwks>,
    remote_jwks: Option<RawRemoteJwks>,
    from_headers: Option<Vec<RawHeader>>,
    from_params: Option<Vec<String>>,
    from_cookies: Option<Vec<String>>,
    #[serde(default)]
    forward: bool,
    forward_payload_header: Option<String>,
    #[serde(default)]
    claim_to_headers: Vec<RawClaimToHeader>,
    clock_skew_seconds: Option<u64>,
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
    Any(Vec<String>),
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
    /// `(header, claim path)` pairs.
    pub claim_to_headers: Vec<(String, String)>,
    /// Allowed clock skew in seconds.
    pub clock_skew: u64,
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
                    .chain(p.claim_to_headers.iter().map(|(h, _)| h.clone()))
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

fn compile_provider(name: &str, raw: RawProvider) -> Result<Provider, ConfigError> {
    let path = format!("providers.{name}");
    let keys = match (raw.local_jwks, raw.remote_jwks) {
        (Some(local), None) => {
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
            let jwks = Jwks::parse(&text).map_err(|reason| ConfigError::new(&p, reason))?;
            if jwks.keys.is_empty() {
                return Err(ConfigError::new(p, "the JWKS has no usable key"));
            }
            KeySource::Local(Rc::new(jwks))
        }
        (None, Some(remote)) => {
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
            let max_bytes = remote.max_jwks_bytes.unwrap_or(DEFAULT_MAX_JWKS_BYTES);
            if max_bytes == 0 {
                return Err(ConfigError::new(
                    format!("{path}.remote_jwks.max_jwks_bytes"),
                    "must be positive",
                ));
            }
            let shared_key = format!(
                "jwks/{}",
                short_hash(&format!(
                    "{name}\n{}\n{}",
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
                shared_key,
            })
        }
        _ => {
            return Err(ConfigError::new(
                path,
                "give exactly one of local_jwks or remote_jwks",
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

fn compile_claims(
    path: &str,
    raw: BTreeMap<String, ClaimValue>,
) -> Result<Vec<ClaimRule>, ConfigError> {
    raw.into_iter()
        .map(|(name, value)| {
            let values = match value {
                ClaimValue::One(v) => vec![v],
                ClaimValue::Any(list) => list,
            };
            if name.is_empty() || values.is_empty() || values.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    format!("{path}.{name}"),
                    "a claim needs a name and non-empty values",
                ));
            }
            Ok(ClaimRule { name, values })
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
    Ok(Config {
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
                "exactly one of local_jwks or remote_jwks",
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
