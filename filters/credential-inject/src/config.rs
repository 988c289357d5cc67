//! The credential-inject configuration: named credentials (an OAuth2 client-credentials grant or
//! a static header), which one each route uses, and how tokens are refreshed and dropped.

use serde::Deserialize;
use std::collections::BTreeMap;
use wasmgate_core::config::ConfigError;
use wasmgate_core::metrics::label_value;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{Duration, Match, Policies, Secret};

/// The token endpoint's timeout when none is given.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// A token endpoint answering slower than this is down, whatever the configuration says.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// How long before expiry a token is refreshed when `refresh_before` is not given.
pub const DEFAULT_REFRESH_BEFORE_MS: u64 = 60_000;

/// The whole configuration as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    credentials: BTreeMap<String, RawCredential>,
    #[serde(rename = "use")]
    use_credential: Option<String>,
    #[serde(default)]
    overwrite: bool,
    refresh_before: Option<Duration>,
    purge_on_status: Option<Vec<u16>>,
    on_unavailable: Option<OnUnavailable>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// One credential as written: exactly one of `oauth2` and `header`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    oauth2: Option<RawOauth2>,
    header: Option<RawHeader>,
}

/// An OAuth2 client-credentials grant as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawOauth2 {
    token_endpoint: RawEndpoint,
    client_id: String,
    client_secret: Secret,
    auth: Option<ClientAuth>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// Where the token endpoint is, as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    cluster: String,
    uri: String,
    timeout: Option<Duration>,
}

/// A static header credential as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    name: String,
    value: Secret,
    prefix: Option<String>,
}

/// One per-route rule as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match")]
    matcher: Match,
    enabled: Option<bool>,
    #[serde(rename = "use")]
    use_credential: Option<String>,
}

/// How the client authenticates at the token endpoint (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Body,
}

/// What a request gets when its credential is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// 503 `credential_unavailable`.
    Deny,
    /// Forwarded without a credential.
    Pass,
}

/// A compiled OAuth2 grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oauth2 {
    /// The cluster the token request goes to.
    pub cluster: String,
    /// `:authority` of the token request.
    pub authority: String,
    /// `:path` of the token request.
    pub path: String,
    /// `:scheme` of the token request.
    pub scheme: &'static str,
    /// The token request's timeout, also how long a request waits for a first token.
    pub timeout_ms: u64,
    /// The client id.
    pub client_id: String,
    /// The client secret; never logged.
    pub client_secret: Secret,
    /// How the client authenticates.
    pub auth: ClientAuth,
    /// Scopes asked for (`scope`, space-separated); none: the parameter is left out.
    pub scopes: Vec<String>,
    /// Extra form parameters (`audience`, `resource`).
    pub params: Vec<(String, String)>,
    /// The shared-data key of this grant's token (set at configure time).
    pub shared_key: String,
}

/// What a credential puts on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `authorization: Bearer <token>` with a token from the grant.
    Oauth2(Box<Oauth2>),
    /// A fixed header value (prefix included).
    Header {
        /// Lowercase header name.
        name: String,
        /// The whole value; never logged.
        value: Secret,
    },
}

/// A named credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The name the configuration gives it (the `credential` label of its metrics, logs).
    pub name: String,
    /// What it injects.
    pub kind: Kind,
}

impl Credential {
    /// The header this credential sets.
    pub fn header(&self) -> &str {
        match &self.kind {
            Kind::Oauth2(_) => "authorization",
            Kind::Header { name, .. } => name,
        }
    }
}

/// What one route injects: a credential's index, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Index into [`Config::credentials`]; `None`: nothing is injected.
    pub credential: Option<usize>,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every credential, sorted by name.
    pub credentials: Vec<Credential>,
    /// The defaults and rules.
    pub policies: Policies<Policy>,
    /// Replace a credential header the request already carries.
    pub overwrite: bool,
    /// Refresh this long before a token expires.
    pub refresh_before_ms: u64,
    /// Upstream statuses that drop the token used.
    pub purge_on_status: Vec<u16>,
    /// What a request gets while its credential is unavailable.
    pub on_unavailable: OnUnavailable,
}

/// Parses and compiles a configuration.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    wasmgate_core::config::parse::<RawConfig>(json).and_then(compile)
}

/// The JSON Schema of the configuration, for the CLI.
#[cfg(feature = "schema")]
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

/// Compiles a raw configuration.
pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.credentials.is_empty() {
        return Err(ConfigError::new(
            "credentials",
            "no credential is configured: nothing would be injected",
        ));
    }
    let mut credentials = Vec::with_capacity(raw.credentials.len());
    for (name, credential) in raw.credentials {
        let at = format!("credentials.{name}");
        check_name(&name).map_err(|e| ConfigError::new(at.clone(), e))?;
        if credentials
            .iter()
            .any(|c: &Credential| label_value(&c.name) == label_value(&name))
        {
            return Err(ConfigError::new(
                at,
                "has the same metric label as another credential",
            ));
        }
        let kind = compile_credential(&at, credential)?;
        credentials.push(Credential { name, kind });
    }
    let find = |at: String, name: &str| {
        credentials
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ConfigError::new(at, format!("no credential is named {name:?}")))
    };
    let default = Policy {
        credential: raw
            .use_credential
            .as_deref()
            .map(|name| find("use".into(), name))
            .transpose()?,
    };
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let policy = match (rule.enabled, rule.use_credential) {
            (Some(false), Some(_)) => return Err(ConfigError::new(
                format!("rules[{i}]"),
                "a rule with \"enabled\": false injects nothing; it cannot also name a credential",
            )),
            (Some(false), None) => None,
            (_, Some(name)) => Some(Policy {
                credential: Some(find(format!("rules[{i}].use"), &name)?),
            }),
            (_, None) => Some(default),
        };
        rules.push(PolicyRule {
            matcher: rule.matcher,
            policy,
        });
    }
    Ok(Config {
        credentials,
        policies: Policies::new(default, rules).with_paths(raw.paths),
        overwrite: raw.overwrite,
        refresh_before_ms: raw
            .refresh_before
            .map_or(DEFAULT_REFRESH_BEFORE_MS, |d| d.as_millis()),
        purge_on_status: compile_statuses(raw.purge_on_status)?,
        on_unavailable: raw.on_unavailable.unwrap_or(OnUnavailable::Deny),
    })
}

/// Credential names are a metric label and part of shared-data keys.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err("a credential name is 1 to 64 lowercase letters, digits, _ and -".into());
    }
    Ok(())
}

fn compile_credential(at: &str, raw: RawCredential) -> Result<Kind, ConfigError> {
    match (raw.oauth2, raw.header) {
        (Some(oauth2), None) => Ok(Kind::Oauth2(Box::new(compile_oauth2(
            &format!("{at}.oauth2"),
            oauth2,
        )?))),
        (None, Some(header)) => compile_header(&format!("{at}.header"), header),
        _ => Err(ConfigError::new(
            at,
            "give exactly one of \"oauth2\" and \"header\"",
        )),
    }
}

/// Form parameters the grant itself sets; `params` may not replace them.
const RESERVED_PARAMS: [&str; 4] = ["grant_type", "client_id", "client_secret", "scope"];

fn compile_oauth2(at: &str, raw: RawOauth2) -> Result<Oauth2, ConfigError> {
    let endpoint = raw.token_endpoint;
    let endpoint_at = format!("{at}.token_endpoint");
    if endpoint.cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{endpoint_at}.cluster"),
            "the cluster is empty",
        ));
    }
    let (scheme, authority, path) =
        split_uri(&endpoint.uri).map_err(|e| ConfigError::new(format!("{endpoint_at}.uri"), e))?;
    let timeout_ms = endpoint
        .timeout
        .map_or(DEFAULT_TIMEOUT_MS, |d| d.as_millis());
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(ConfigError::new(
            format!("{endpoint_at}.timeout"),
            format!("must be between 1ms and {}s", MAX_TIMEOUT_MS / 1000),
        ));
    }
    if raw.client_id.is_empty() {
        return Err(ConfigError::new(
            format!("{at}.client_id"),
            "the client id is empty",
        ));
    }
    for (i, scope) in raw.scopes.iter().enumerate() {
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !valid {
            return Err(ConfigError::new(
                format!("{at}.scopes[{i}]"),
                "a scope is printable ASCII without spaces, quotes or backslashes",
            ));
        }
    }
    if let Some(name) = raw
        .params
        .keys()
        .find(|k| RESERVED_PARAMS.contains(&k.as_str()))
    {
        return Err(ConfigError::new(
            format!("{at}.params.{name}"),
            "is set by the grant itself (use client_id, client_secret, scopes)",
        ));
    }
    Ok(Oauth2 {
        cluster: endpoint.cluster,
        authority: authority.to_string(),
        path: path.to_string(),
        scheme,
        timeout_ms,
        client_id: raw.client_id,
        client_secret: raw.client_secret,
        auth: raw.auth.unwrap_or(ClientAuth::Basic),
        scopes: raw.scopes,
        params: raw.params.into_iter().collect(),
        shared_key: String::new(),
    })
}

/// `http(s)://authority/path` split into its parts (the path defaults to `/`).
fn split_uri(uri: &str) -> Result<(&'static str, &str, &str), String> {
    let (scheme, rest) = if let Some(rest) = uri.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = uri.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(format!("{uri:?} is not an http:// or https:// URI"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '@' || c == '#';
    if authority.is_empty() || authority.contains(bad) || path.contains(bad) {
        return Err(format!(
            "{uri:?} needs a host, and no user info, fragment or spaces"
        ));
    }
    Ok((scheme, authority, path))
}

fn compile_header(at: &str, raw: RawHeader) -> Result<Kind, ConfigError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let name = raw.name.to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(token) {
        return Err(ConfigError::new(
            format!("{at}.name"),
            format!("{:?} is not a header name", raw.name),
        ));
    }
    if ["host", "content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
        return Err(ConfigError::new(
            format!("{at}.name"),
            format!("{name} cannot carry a credential"),
        ));
    }
    let value = format!("{}{}", raw.prefix.unwrap_or_default(), raw.value.expose());
    if !value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            format!("{at}.value"),
            "a header value is printable ASCII",
        ));
    }
    Ok(Kind::Header {
        name,
        value: Secret::new(value),
    })
}

/// `purge_on_status`: error statuses only (a 2xx that dropped tokens would refetch on every
/// success); default `[401]`.
fn compile_statuses(raw: Option<Vec<u16>>) -> Result<Vec<u16>, ConfigError> {
    let statuses = raw.unwrap_or_else(|| vec![401]);
    for (i, status) in statuses.iter().enumerate() {
        if !(400..=599).contains(status) {
            return Err(ConfigError::new(
                format!("purge_on_status[{i}]"),
                "only 4xx and 5xx statuses can drop a token",
            ));
        }
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests;
