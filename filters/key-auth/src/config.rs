//! The key-auth configuration: clients and their keys, where a request carries its key, what an
//! allowed request tells the upstream, and per-route requirements. Everything that could make a
//! check weaker than written (an unknown client id in `allowed_clients`, a short key, one key
//! given twice, a forwarded header that is also a key source) is refused at load.

use crate::keys::{self, Entry, KeyTable};
use serde::Deserialize;
use std::time::UNIX_EPOCH;
use wasmgate_core::config::ConfigError;
use wasmgate_core::metrics::label_value;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{Match, Policies, Secret};

/// Keys given as secrets must be at least this long: a shorter key can be guessed.
pub const MIN_KEY_LENGTH: usize = 16;
/// A client id is at most this long (it is forwarded in a header and named in metrics).
pub const MAX_CLIENT_ID_LENGTH: usize = 128;

/// The whole configuration as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    clients: Vec<RawClient>,
    key_sources: Option<Vec<RawSource>>,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    required_scopes: Vec<String>,
    allowed_clients: Option<Vec<String>>,
    #[serde(default)]
    allow_missing: bool,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// One client as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    id: String,
    keys: Vec<RawKey>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// One key as written: its digest or the key itself, and when it is valid.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Hex SHA-256 digest of the key.
    sha256: Option<String>,
    /// The key itself; only its digest is kept.
    secret: Option<Secret>,
    /// RFC 3339 instant in UTC (`2027-01-31T00:00:00Z`) before which the key is not valid.
    not_before: Option<String>,
    /// RFC 3339 instant in UTC from which the key is no longer valid.
    not_after: Option<String>,
}

/// One place a request may carry its key, as written: exactly one of `header`, `query`, `cookie`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    header: Option<String>,
    /// With `header`: the value starts with this (case-insensitive, as HTTP auth schemes are),
    /// e.g. `"Bearer "`; values without it are not keys.
    value_prefix: Option<String>,
    query: Option<String>,
    cookie: Option<String>,
}

/// What an allowed request tells the upstream, as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    #[serde(default = "default_client_header")]
    client_header: String,
    #[serde(default = "default_scopes_header")]
    scopes_header: String,
    #[serde(default = "default_true")]
    hide_credentials: bool,
}

impl Default for RawForward {
    fn default() -> Self {
        Self {
            client_header: default_client_header(),
            scopes_header: default_scopes_header(),
            hide_credentials: true,
        }
    }
}

fn default_client_header() -> String {
    "x-client-id".into()
}

fn default_scopes_header() -> String {
    "x-client-scopes".into()
}

fn default_true() -> bool {
    true
}

/// One per-route rule as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match")]
    matcher: Match,
    enabled: Option<bool>,
    required_scopes: Option<Vec<String>>,
    allowed_clients: Option<Vec<String>>,
    allow_missing: Option<bool>,
}

/// A client: its id (forwarded, and named in metrics) and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The id operators know it by.
    pub id: String,
    /// Its scopes, as configured.
    pub scopes: Vec<String>,
    /// The scopes space-separated, as forwarded.
    pub scopes_header: String,
}

/// Where a request may carry its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A request header (lowercase name), optionally after a prefix such as `Bearer `.
    Header {
        /// Lowercase header name.
        name: String,
        /// The prefix the value starts with (compared ignoring ASCII case).
        prefix: Option<String>,
    },
    /// A query parameter, by its decoded name.
    Query(String),
    /// A cookie, by name.
    Cookie(String),
}

/// What an allowed request tells the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Header carrying the client id (removed from every incoming request).
    pub client_header: String,
    /// Header carrying the client's scopes (removed from every incoming request).
    pub scopes_header: String,
    /// Remove the key from where it was found.
    pub hide_credentials: bool,
}

/// What one route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Scopes the client must all hold.
    pub required_scopes: Vec<String>,
    /// Clients allowed (indices into `clients`, sorted); `None`: every client.
    pub allowed_clients: Option<Vec<u32>>,
    /// A request without any key passes (without identity); a wrong key is still refused.
    pub allow_missing: bool,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every client, in configuration order.
    pub clients: Vec<Client>,
    /// Every key's digest.
    pub keys: KeyTable,
    /// Where keys are looked for, in order.
    pub sources: Vec<Source>,
    /// What the upstream receives.
    pub forward: Forward,
    /// The defaults and rules.
    pub policies: Policies<Policy>,
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
    let (clients, keys) = compile_clients(raw.clients)?;
    let sources = compile_sources(raw.key_sources)?;
    let forward = compile_forward(raw.forward, &sources)?;
    let default = compile_policy(
        "",
        &clients,
        raw.required_scopes,
        raw.allowed_clients,
        raw.allow_missing,
    )?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let at = format!("rules[{i}].");
        let policy = if rule.enabled == Some(false) {
            if rule.required_scopes.is_some()
                || rule.allowed_clients.is_some()
                || rule.allow_missing.is_some()
            {
                return Err(ConfigError::new(
                    format!("rules[{i}]"),
                    "a rule with \"enabled\": false switches the filter off; it cannot also set requirements",
                ));
            }
            None
        } else {
            Some(compile_policy(
                &at,
                &clients,
                rule.required_scopes
                    .unwrap_or_else(|| default.required_scopes.clone()),
                rule.allowed_clients.or_else(|| {
                    default.allowed_clients.as_ref().map(|ids| {
                        ids.iter()
                            .map(|&c| clients[c as usize].id.clone())
                            .collect()
                    })
                }),
                rule.allow_missing.unwrap_or(default.allow_missing),
            )?)
        };
        rules.push(PolicyRule {
            matcher: rule.matcher,
            policy,
        });
    }
    Ok(Config {
        clients,
        keys,
        sources,
        forward,
        policies: Policies::new(default, rules).with_paths(raw.paths),
    })
}

/// The clients and the table of every key's digest.
fn compile_clients(raw: Vec<RawClient>) -> Result<(Vec<Client>, KeyTable), ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "clients",
            "no client is configured: every request would be refused",
        ));
    }
    let mut clients: Vec<Client> = Vec::with_capacity(raw.len());
    let mut entries = Vec::new();
    let mut positions = Vec::new();
    let mut ids = std::collections::BTreeMap::new();
    for (c, client) in raw.into_iter().enumerate() {
        let at = format!("clients[{c}]");
        check_client_id(&client.id).map_err(|e| ConfigError::new(format!("{at}.id"), e))?;
        if let Some(first) = ids.insert(label_value(&client.id), c) {
            return Err(ConfigError::new(
                format!("{at}.id"),
                format!("the same id (or one with the same metric label) as clients[{first}]"),
            ));
        }
        for (s, scope) in client.scopes.iter().enumerate() {
            check_scope(scope).map_err(|e| ConfigError::new(format!("{at}.scopes[{s}]"), e))?;
        }
        if client.keys.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.keys"),
                "a client needs at least one key",
            ));
        }
        let index =
            u32::try_from(c).map_err(|_| ConfigError::new("clients", "too many clients"))?;
        for (k, key) in client.keys.into_iter().enumerate() {
            let key_at = format!("{at}.keys[{k}]");
            entries.push((entries.len(), compile_key(&key_at, key, index)?));
            positions.push(key_at);
        }
        clients.push(Client {
            id: client.id,
            scopes_header: client.scopes.join(" "),
            scopes: client.scopes,
        });
    }
    let keys = KeyTable::new(entries).map_err(|(first, second)| {
        ConfigError::new(
            positions[second].clone(),
            format!("the same key as {}", positions[first]),
        )
    })?;
    Ok((clients, keys))
}

/// One key's digest and validity period.
fn compile_key(at: &str, raw: RawKey, client: u32) -> Result<Entry, ConfigError> {
    let digest = match (raw.sha256, raw.secret) {
        (Some(hex_digest), None) => {
            parse_digest(&hex_digest).map_err(|e| ConfigError::new(format!("{at}.sha256"), e))?
        }
        (None, Some(secret)) => {
            if secret.expose().len() < MIN_KEY_LENGTH {
                return Err(ConfigError::new(
                    format!("{at}.secret"),
                    format!("the key is shorter than {MIN_KEY_LENGTH} characters and could be guessed (`wasmgate apikey` makes a 256-bit key)"),
                ));
            }
            keys::digest(secret.expose())
        }
        _ => {
            return Err(ConfigError::new(
                at,
                "give exactly one of \"sha256\" and \"secret\"",
            ))
        }
    };
    let not_before = instant(at, "not_before", raw.not_before.as_deref())?.unwrap_or(0);
    let not_after = instant(at, "not_after", raw.not_after.as_deref())?.unwrap_or(u64::MAX);
    if not_before >= not_after {
        return Err(ConfigError::new(
            format!("{at}.not_after"),
            "is not after not_before: the key would never be valid",
        ));
    }
    Ok(Entry {
        digest,
        client,
        not_before,
        not_after,
    })
}

/// A 64-digit hex SHA-256 digest.
fn parse_digest(text: &str) -> Result<keys::KeyDigest, String> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).map_err(|_| {
        "expected the 64 hex digits of a SHA-256 digest (`wasmgate apikey` prints one)".to_string()
    })?;
    Ok(digest)
}

/// An RFC 3339 instant in UTC as Unix seconds.
fn instant(at: &str, field: &str, text: Option<&str>) -> Result<Option<u64>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    let time = humantime::parse_rfc3339(text).map_err(|_| {
        ConfigError::new(
            format!("{at}.{field}"),
            format!("invalid instant {text:?}: expected RFC 3339 in UTC, as in \"2027-01-31T00:00:00Z\""),
        )
    })?;
    Ok(Some(
        time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    ))
}

/// Client ids are forwarded in a header and are a metric label.
fn check_client_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:@".contains(c);
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LENGTH || !id.chars().all(allowed) {
        return Err(format!(
            "a client id is 1 to {MAX_CLIENT_ID_LENGTH} letters, digits and . _ - : @"
        ));
    }
    Ok(())
}

/// A scope as OAuth 2.0 defines one: printable ASCII without space, `"` and `\`.
fn check_scope(scope: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'\\';
    if scope.is_empty() || !scope.bytes().all(allowed) {
        return Err("a scope is printable ASCII without spaces, quotes or backslashes".into());
    }
    Ok(())
}

/// The key sources; by default the `x-api-key` header.
fn compile_sources(raw: Option<Vec<RawSource>>) -> Result<Vec<Source>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(vec![Source::Header {
            name: "x-api-key".into(),
            prefix: None,
        }]);
    };
    if raw.is_empty() {
        return Err(ConfigError::new(
            "key_sources",
            "no key source: no request could carry a key",
        ));
    }
    let mut sources: Vec<Source> = Vec::with_capacity(raw.len());
    for (i, source) in raw.into_iter().enumerate() {
        let at = format!("key_sources[{i}]");
        let source = compile_source(source).map_err(|e| ConfigError::new(at.clone(), e))?;
        if sources.iter().any(|s| same_place(s, &source)) {
            return Err(ConfigError::new(at, "the same place as an earlier source"));
        }
        sources.push(source);
    }
    Ok(sources)
}

/// Two sources read the same place (a header read with two prefixes is allowed).
fn same_place(a: &Source, b: &Source) -> bool {
    match (a, b) {
        (
            Source::Header {
                name: n1,
                prefix: p1,
            },
            Source::Header {
                name: n2,
                prefix: p2,
            },
        ) => n1 == n2 && (p1.is_none() || p2.is_none() || p1 == p2),
        (Source::Query(a), Source::Query(b)) | (Source::Cookie(a), Source::Cookie(b)) => a == b,
        _ => false,
    }
}

fn compile_source(raw: RawSource) -> Result<Source, String> {
    match (raw.header, raw.query, raw.cookie, raw.value_prefix) {
        (Some(header), None, None, prefix) => {
            if prefix.as_deref().is_some_and(|p| p.trim().is_empty()) {
                return Err("value_prefix is empty".into());
            }
            Ok(Source::Header {
                name: header_name(&header)?,
                prefix,
            })
        }
        (None, Some(query), None, None) if !query.is_empty() => Ok(Source::Query(query)),
        (None, None, Some(cookie), None) => {
            if cookie.is_empty()
                || !cookie
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";=,".contains(&b))
            {
                return Err(format!("{cookie:?} is not a cookie name"));
            }
            Ok(Source::Cookie(cookie))
        }
        (None, Some(query), None, None) if query.is_empty() => {
            Err("the parameter name is empty".into())
        }
        (None, _, _, Some(_)) => Err("value_prefix is only for header sources".into()),
        _ => Err("give exactly one of \"header\", \"query\" and \"cookie\"".into()),
    }
}

/// A lowercase header name a filter may read or write (no pseudo-header).
fn header_name(name: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// The forwarded headers: valid names, distinct, and never a key source or a header the
/// request's routing depends on.
fn compile_forward(raw: RawForward, sources: &[Source]) -> Result<Forward, ConfigError> {
    let mut names = Vec::new();
    for (field, name) in [
        ("client_header", &raw.client_header),
        ("scopes_header", &raw.scopes_header),
    ] {
        let at = format!("forward.{field}");
        let name = header_name(name).map_err(|e| ConfigError::new(at.clone(), e))?;
        let reserved = [
            "host",
            "cookie",
            "authorization",
            "content-length",
            "content-type",
        ];
        if reserved.contains(&name.as_str()) || name.starts_with("x-envoy-") {
            return Err(ConfigError::new(
                at,
                format!("{name} cannot carry the client's identity"),
            ));
        }
        if sources
            .iter()
            .any(|s| matches!(s, Source::Header { name: n, .. } if *n == name))
        {
            return Err(ConfigError::new(at, format!("{name} is also a key source")));
        }
        if names.contains(&name) {
            return Err(ConfigError::new(at, "the same header as client_header"));
        }
        names.push(name);
    }
    let [client_header, scopes_header] = <[String; 2]>::try_from(names)
        .map_err(|_| ConfigError::new("forward", "two header names expected"))?;
    Ok(Forward {
        client_header,
        scopes_header,
        hide_credentials: raw.hide_credentials,
    })
}

/// One route's requirements (`at` is the path prefix of the object holding them).
fn compile_policy(
    at: &str,
    clients: &[Client],
    required_scopes: Vec<String>,
    allowed_clients: Option<Vec<String>>,
    allow_missing: bool,
) -> Result<Policy, ConfigError> {
    for (s, scope) in required_scopes.iter().enumerate() {
        check_scope(scope).map_err(|e| ConfigError::new(format!("{at}required_scopes[{s}]"), e))?;
    }
    let allowed_clients = match allowed_clients {
        None => None,
        Some(ids) if ids.is_empty() => {
            return Err(ConfigError::new(
                format!("{at}allowed_clients"),
                "lists no client: every request would be refused (use \"enabled\": false or remove the route)",
            ))
        }
        Some(ids) => {
            let mut indices = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                let index = clients.iter().position(|c| c.id == *id).ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}allowed_clients[{i}]"),
                        format!("no client has the id {id:?}"),
                    )
                })?;
                indices.push(u32::try_from(index).unwrap_or(u32::MAX));
            }
            indices.sort_unstable();
            indices.dedup();
            Some(indices)
        }
    };
    Ok(Policy {
        required_scopes,
        allowed_clients,
        allow_missing,
    })
}

#[cfg(test)]
mod tests;
