//! Public keys fetched from a JWKS URL (`jwks`) for RFC 9421 signatures, selected by the
//! signature's `keyid` (= the JWK's `kid`).
//!
//! One worker of an Envoy process fetches a key set from the plugin's timer (claimed with a CAS
//! on a shared-data value, [`wasmgate_core::fetched::SharedFetch`]); every worker reads the same
//! document from shared data, reloading it when a small generation value changes. A failed fetch
//! keeps the last good keys (until `max_stale`, when set) and backs off; a signature naming a
//! `kid` the set lacks asks for at most one early refetch every [`REFETCH_INTERVAL_MS`].

use crate::pubkey::{self, KeyMaterial, PublicKey};
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasmgate_core::fetched::SharedFetch;
use wasmgate_core::host::Host;
use wasmgate_core::{Answer, Callout, ConfigError, Duration};

/// Default of `timeout`: one fetch, and how long a request waits for keys.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
/// Largest `timeout` (a request waiting for keys is held that long at most).
pub const MAX_TIMEOUT_MS: u64 = 10_000;
/// Default of `cache_duration`.
pub const DEFAULT_CACHE_MS: u64 = 600_000;
/// Default of `max_bytes`.
pub const DEFAULT_MAX_BYTES: usize = 65_536;
/// Largest `max_bytes`.
pub const MAX_MAX_BYTES: usize = 1_048_576;
/// Default of `max_keys`.
pub const DEFAULT_MAX_KEYS: usize = 16;
/// Largest `max_keys`.
pub const MAX_MAX_KEYS: usize = 256;
/// Largest RSA modulus of a fetched key, in bits (what identity providers publish, and the
/// cost of one verification stays small).
pub const MAX_FETCHED_RSA_BITS: usize = 4096;
/// Largest RSA public exponent of a fetched key.
pub const MAX_RSA_EXPONENT: u64 = 65_537;
/// Minimum time between two refetches asked for by signatures naming an unknown `kid`.
pub const REFETCH_INTERVAL_MS: u64 = 30_000;
/// First wait after a failed fetch (doubled per failure).
pub const RETRY_BASE_MS: u64 = 1_000;
/// Longest wait between failed fetches.
pub const RETRY_MAX_MS: u64 = 30_000;
/// When nothing waits and the keys are here, shared data is read this often.
pub const IDLE_SYNC_MS: u64 = 1_000;
/// The longest `kid` kept (longer ones are skipped).
const MAX_KID: usize = 128;

/// `jwks` as written.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    uri: String,
    cluster: String,
    timeout: Option<Duration>,
    cache_duration: Option<Duration>,
    max_stale: Option<Duration>,
    max_bytes: Option<usize>,
    max_keys: Option<usize>,
}

/// A compiled key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    /// The configured URI (for logs).
    pub uri: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// `:path` of the fetch.
    pub path: String,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The Envoy cluster the fetch goes to.
    pub cluster: String,
    /// Timeout of one fetch, ms; also how long a request waits for keys.
    pub timeout_ms: u64,
    /// Fetched keys are used this long before a refresh, ms.
    pub cache_ms: u64,
    /// Last good keys are dropped this long (ms) after `cache_duration` ran out without a
    /// successful refresh (`None`: kept until a fetch succeeds).
    pub max_stale_ms: Option<u64>,
    /// Documents larger than this are refused.
    pub max_bytes: usize,
    /// Documents with more keys than this are refused.
    pub max_keys: usize,
    /// The shared-data key of the fetched document and its fetch state: `jwks/<hash>` as
    /// compiled, placed in the plugin's namespace at configure time.
    pub shared_key: String,
}

fn millis(at: &str, field: &str, d: Option<Duration>, default: u64) -> Result<u64, ConfigError> {
    let ms = d.map_or(Ok(default), |d| {
        u64::try_from(d.0.as_millis())
            .map_err(|_| ConfigError::new(format!("{at}.{field}"), "is too long"))
    })?;
    if ms == 0 {
        return Err(ConfigError::new(
            format!("{at}.{field}"),
            "must be at least 1ms",
        ));
    }
    Ok(ms)
}

/// Compiles `jwks` written at `at` (`jwks` or `rules[<i>].jwks`).
pub fn compile(at: &str, raw: &RawJwks) -> Result<JwksSource, ConfigError> {
    let uri_at = format!("{at}.uri");
    let (scheme, rest) = if let Some(rest) = raw.uri.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = raw.uri.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(ConfigError::new(
            uri_at,
            "must be an absolute http:// or https:// URL",
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || !c.is_ascii();
    if authority.is_empty()
        || authority.contains(['@', '?', '#'])
        || authority.chars().any(bad)
        || path.contains('#')
        || path.chars().any(bad)
    {
        return Err(ConfigError::new(
            uri_at,
            "must be a URL with a host and no user info, fragment, spaces or non-ASCII characters",
        ));
    }
    if raw.cluster.trim().is_empty() {
        return Err(ConfigError::new(
            format!("{at}.cluster"),
            "must name the Envoy cluster that serves the key set",
        ));
    }
    let timeout_ms = millis(at, "timeout", raw.timeout, DEFAULT_TIMEOUT_MS)?;
    if timeout_ms > MAX_TIMEOUT_MS {
        return Err(ConfigError::new(
            format!("{at}.timeout"),
            "must be at most 10s (requests wait for the first fetch that long)",
        ));
    }
    let cache_ms = millis(at, "cache_duration", raw.cache_duration, DEFAULT_CACHE_MS)?;
    if cache_ms < 1_000 {
        return Err(ConfigError::new(
            format!("{at}.cache_duration"),
            "must be at least 1s",
        ));
    }
    let max_stale_ms = match raw.max_stale {
        None => None,
        Some(d) => Some(millis(at, "max_stale", Some(d), 0)?),
    };
    let max_bytes = raw.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if !(1..=MAX_MAX_BYTES).contains(&max_bytes) {
        return Err(ConfigError::new(
            format!("{at}.max_bytes"),
            format!("must be between 1 and {MAX_MAX_BYTES}"),
        ));
    }
    let max_keys = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if !(1..=MAX_MAX_KEYS).contains(&max_keys) {
        return Err(ConfigError::new(
            format!("{at}.max_keys"),
            format!("must be between 1 and {MAX_MAX_KEYS}"),
        ));
    }
    // The limits are part of the key: a document stored under other limits is fetched again.
    let identity = format!("{}\n{}\n{max_bytes}\n{max_keys}", raw.uri, raw.cluster);
    Ok(JwksSource {
        uri: raw.uri.clone(),
        authority: authority.to_string(),
        path: path.to_string(),
        scheme,
        cluster: raw.cluster.clone(),
        timeout_ms,
        cache_ms,
        max_stale_ms,
        max_bytes,
        max_keys,
        shared_key: format!("jwks/{:016x}", wasmgate_core::fnv1a(identity.as_bytes())),
    })
}

/// Whether the JWK's `alg`, `use` and `key_ops` allow this key to verify its RFC 9421
/// algorithm: an RSA key published for `RS256` is never used for `rsa-pss-sha512`.
fn usable(jwk: &serde_json::Value, key: &KeyMaterial) -> bool {
    if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return false;
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return false;
        }
    }
    let Some(alg) = jwk.get("alg") else {
        return true;
    };
    matches!(
        (key, alg.as_str()),
        (KeyMaterial::Ed25519(_), Some("EdDSA" | "Ed25519"))
            | (KeyMaterial::EcdsaP256(_), Some("ES256"))
            | (KeyMaterial::Rsa(_), Some("PS512"))
    )
}

/// The keys of a JWKS document: each JWK with a `kid` and a key type RFC 9421 verifies with
/// (`OKP`/`Ed25519`, `EC`/`P-256`, `RSA`) whose `alg`, `use` and `key_ops` allow it. Other
/// keys are skipped; a key of a supported type that is malformed, holds a private part, or is
/// an RSA key over 4096 bits or with an exponent over 65537 refuses the whole document, as do
/// more than `max_keys` keys, a `kid` used twice, and a document with no usable key.
pub fn parse_document(text: &str, max_keys: usize) -> Result<Vec<PublicKey>, String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|_| "not JSON".to_string())?;
    let keys = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("no \"keys\" array")?;
    if keys.len() > max_keys {
        return Err(format!("{} keys, over max_keys {max_keys}", keys.len()));
    }
    let mut out: Vec<PublicKey> = Vec::new();
    for jwk in keys {
        let Some(kid) = jwk.get("kid").and_then(serde_json::Value::as_str) else {
            continue;
        };
        let kid_ok = !kid.is_empty()
            && kid.len() <= MAX_KID
            && kid
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        let supported = matches!(
            (
                jwk.get("kty").and_then(serde_json::Value::as_str),
                jwk.get("crv").and_then(serde_json::Value::as_str)
            ),
            (Some("OKP"), Some("Ed25519")) | (Some("EC"), Some("P-256")) | (Some("RSA"), _)
        );
        if !kid_ok || !supported {
            continue;
        }
        let key = pubkey::parse_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        if let KeyMaterial::Rsa(rsa) = &key {
            let exponent_ok = *rsa.e() <= rsa::BigUint::from(MAX_RSA_EXPONENT);
            if rsa.size() * 8 > MAX_FETCHED_RSA_BITS || !exponent_ok {
                return Err(format!(
                    "key {kid:?}: RSA keys are at most {MAX_FETCHED_RSA_BITS} bits with an \
                     exponent up to {MAX_RSA_EXPONENT}"
                ));
            }
        }
        if !usable(jwk, &key) {
            continue;
        }
        if out.iter().any(|k| k.id == kid) {
            return Err(format!("kid {kid:?} names two keys"));
        }
        out.push(PublicKey {
            id: kid.to_string(),
            key,
        });
    }
    if out.is_empty() {
        return Err("no usable key".into());
    }
    Ok(out)
}

/// The request that fetches a key set.
pub fn fetch_request(source: &JwksSource) -> Callout {
    let header = |n: &str, v: &str| (n.to_string(), v.to_string());
    Callout::Http {
        cluster: source.cluster.clone(),
        headers: vec![
            header(":method", "GET"),
            header(":path", &source.path),
            header(":authority", &source.authority),
            header(":scheme", source.scheme),
            header("accept", "application/json"),
        ],
        body: None,
        trailers: Vec::new(),
        timeout: std::time::Duration::from_millis(source.timeout_ms),
    }
}

/// The document of a fetch's answer: status 200, within `max_bytes`, a key set with a usable key.
pub fn accept(answer: Answer, source: &JwksSource) -> Result<String, String> {
    let (headers, body) = match answer {
        Answer::Http { headers, body } => (headers, body),
        Answer::TooLarge { .. } => return Err(format!("body over {} bytes", source.max_bytes)),
        Answer::NotSent(reason) => return Err(format!("not sent ({reason})")),
        Answer::Grpc { .. } => return Err("not an HTTP answer".into()),
    };
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .map(|(_, v)| v.as_str());
    if status != Some("200") {
        return Err(format!("status {}", status.unwrap_or("none")));
    }
    if body.len() > source.max_bytes {
        return Err(format!("body over {} bytes", source.max_bytes));
    }
    let text = String::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    parse_document(&text, source.max_keys)?;
    Ok(text)
}

/// The shared-data key holding just the generation of a source's document.
fn generation_key(shared_key: &str) -> String {
    format!("{shared_key}.generation")
}

/// Creates a source's shared value if it does not exist yet; true when it existed.
pub fn ensure_shared(host: &dyn Host, key: &str) -> bool {
    match host.get_shared(key) {
        Ok((Some(_), Some(_))) => true,
        _ => {
            let _ = host.set_shared(key, &SharedFetch::default().encode(), None);
            false
        }
    }
}

/// The keys of a source as a request sees them.
#[derive(Debug, Clone)]
pub enum Keys {
    /// The last good key set.
    Ready(Rc<[PublicKey]>),
    /// No fetch has completed yet: worth waiting for.
    Pending,
    /// No usable keys (fetches failed, or the keys are older than `max_stale` allows).
    Unavailable,
}

/// One worker's view of one source.
#[derive(Debug, Default, Clone)]
struct View {
    generation: u64,
    completed: u64,
    fetched_at: u64,
    keys: Option<Rc<[PublicKey]>>,
}

/// The key sets as one worker sees them, and its fetches in flight.
#[derive(Debug, Default)]
pub struct RemoteKeys {
    /// By source index.
    views: RefCell<Vec<View>>,
    fetching: RefCell<Vec<usize>>,
    last_sync_ms: Cell<u64>,
}

impl RemoteKeys {
    /// Reads a source's shared value into this worker's view.
    fn sync(&self, host: &dyn Host, index: usize, source: &JwksSource) -> View {
        let bytes = host
            .get_shared(&source.shared_key)
            .ok()
            .and_then(|(b, _)| b)
            .unwrap_or_default();
        let shared = SharedFetch::decode(&bytes);
        let mut views = self.views.borrow_mut();
        if views.len() <= index {
            views.resize_with(index + 1, View::default);
        }
        let Some(view) = views.get_mut(index) else {
            return View::default();
        };
        if shared.generation != view.generation || view.keys.is_none() {
            if let Some(text) = &shared.document {
                match parse_document(text, source.max_keys) {
                    Ok(keys) => {
                        view.keys = Some(keys.into());
                        view.generation = shared.generation;
                    }
                    Err(reason) => log::warn!(
                        "wasmgate hmac-auth: shared JWKS of {} unusable: {reason}",
                        source.uri
                    ),
                }
            }
        }
        view.completed = shared.completed;
        view.fetched_at = shared.fetched_at;
        view.clone()
    }

    /// Reads every source's shared value.
    pub fn sync_all(&self, host: &dyn Host, sources: &[JwksSource]) {
        for (index, source) in sources.iter().enumerate() {
            self.sync(host, index, source);
        }
    }

    /// The keys of source `index`, reloaded first when another worker fetched new ones (one
    /// small shared-data read per request).
    pub fn keys(&self, host: &dyn Host, sources: &[JwksSource], index: usize) -> Keys {
        let Some(source) = sources.get(index) else {
            return Keys::Unavailable;
        };
        let known = self.views.borrow().get(index).cloned().unwrap_or_default();
        let changed = host
            .get_shared(&generation_key(&source.shared_key))
            .ok()
            .and_then(|(b, _)| std::str::from_utf8(&b?).ok()?.parse::<u64>().ok())
            .is_some_and(|generation| generation != known.generation);
        let now = host.now_ms();
        let stale = |v: &View| {
            SharedFetch::too_stale(v.fetched_at, now, source.cache_ms, source.max_stale_ms)
        };
        let view = if known.keys.is_none() || changed || stale(&known) {
            self.sync(host, index, source)
        } else {
            known
        };
        match view.keys {
            Some(_) if stale(&view) => {
                log::debug!(
                    "wasmgate hmac-auth: the keys of {} are older than cache_duration + \
                     max_stale; not used",
                    source.uri
                );
                Keys::Unavailable
            }
            Some(keys) => Keys::Ready(keys),
            None if view.completed == 0 => Keys::Pending,
            None => Keys::Unavailable,
        }
    }

    /// A signature named a `kid` the key set of `source` lacks: whether the request should wait
    /// for a refetch, which runs (or was just asked for: at most one every
    /// [`REFETCH_INTERVAL_MS`] per Envoy process, whatever the number of such requests).
    pub fn refetch_for_unknown_kid(&self, host: &dyn Host, source: &JwksSource, now: u64) -> bool {
        wasmgate_core::shared::update(host, &source.shared_key, |bytes| {
            let mut shared = SharedFetch::decode(bytes);
            if shared.in_flight(now) || shared.refetch_requested {
                return (None, true);
            }
            if shared.request_refetch(now, REFETCH_INTERVAL_MS) {
                (Some(shared.encode()), true)
            } else {
                (None, false)
            }
        })
        .unwrap_or(false)
    }

    /// What a request waiting for source `index` saw: its generation and completed fetches
    /// (they change when a fetch completes, in any worker, once this worker synced).
    pub fn seen(&self, index: usize) -> (u64, u64) {
        self.views
            .borrow()
            .get(index)
            .map_or((0, 0), |v| (v.generation, v.completed))
    }

    /// Seconds since the oldest key set in use was fetched (`None`: none yet).
    pub fn oldest_age_seconds(&self, now_ms: u64) -> Option<u64> {
        self.views
            .borrow()
            .iter()
            .filter(|v| v.keys.is_some() && v.fetched_at > 0)
            .map(|v| now_ms.saturating_sub(v.fetched_at) / 1000)
            .max()
    }

    /// True when the tick's work can be skipped: nothing waits or is fetched here, every key
    /// set is here, and shared data was read less than [`IDLE_SYNC_MS`] ago.
    pub fn idle(&self, sources: &[JwksSource], waiting: usize, now: u64) -> bool {
        let views = self.views.borrow();
        let all_here = (0..sources.len()).all(|i| views.get(i).is_some_and(|v| v.keys.is_some()));
        let busy = waiting > 0 || !self.fetching.borrow().is_empty();
        !busy && all_here && now < self.last_sync_ms.get().saturating_add(IDLE_SYNC_MS)
    }

    /// Notes a periodic sync at `now`.
    pub fn synced(&self, now: u64) {
        self.last_sync_ms.set(now);
    }

    /// The sources whose fetch is due, each claimed with a CAS so that one worker fetches it.
    pub fn claim_fetches(&self, host: &dyn Host, sources: &[JwksSource], now: u64) -> Vec<usize> {
        let mut claimed = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            if self.fetching.borrow().contains(&index) {
                continue;
            }
            // A value created now is claimed at a later tick: claims only ever CAS an existing
            // value, so another worker's unconditional create never overwrites a claim.
            if !ensure_shared(host, &source.shared_key) {
                continue;
            }
            let won = wasmgate_core::shared::update(host, &source.shared_key, |bytes| {
                let mut shared = SharedFetch::decode(bytes);
                if shared.due(now, source.cache_ms) {
                    shared.claim(now, source.timeout_ms);
                    (Some(shared.encode()), true)
                } else {
                    (None, false)
                }
            })
            .unwrap_or(false);
            if won {
                self.fetching.borrow_mut().push(index);
                claimed.push(index);
            }
        }
        claimed
    }

    /// Stores a fetch's result in shared data for every worker, then in this worker's view.
    pub fn finish_fetch(
        &self,
        host: &dyn Host,
        index: usize,
        source: &JwksSource,
        result: &Result<String, String>,
    ) {
        self.fetching.borrow_mut().retain(|i| *i != index);
        let now = host.now_ms();
        let generation = wasmgate_core::shared::update(host, &source.shared_key, |bytes| {
            let mut shared = SharedFetch::decode(bytes);
            match result {
                Ok(text) => shared.succeeded(now, text.clone()),
                Err(_) => shared.failed(now, RETRY_BASE_MS, RETRY_MAX_MS),
            }
            (Some(shared.encode()), shared.generation)
        });
        if let Ok(generation) = generation {
            // Every worker compares this small value on each request and reloads on a change.
            let _ = host.set_shared(
                &generation_key(&source.shared_key),
                generation.to_string().as_bytes(),
                None,
            );
        }
        self.sync(host, index, source);
    }
}

#[cfg(test)]
mod tests;
