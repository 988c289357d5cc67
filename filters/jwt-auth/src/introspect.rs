//! OAuth 2.0 token introspection (RFC 7662) for opaque access tokens: the request, the answer,
//! and a bounded cache of answers in shared data for every worker of the Envoy process.
//!
//! The cache is a fixed table of `cache_slots` entries per provider, each keyed by the
//! SHA-256 of a token (the token itself is never stored): a token maps to one slot, a newer
//! answer for another token in that slot replaces it, so random tokens cannot grow shared
//! data. An active answer lives until the token's `exp` or `cache_duration`, whichever comes
//! first; an inactive one for `negative_cache_duration`. Failed lookups are not cached: each
//! request whose token is not in the cache asks again, and is denied if that fails.

use crate::claims::{strict_object, Claims};
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::rc::Rc;
use wasmgate_core::host::Host;
use wasmgate_core::{Callout, Secret};

/// A compiled `introspection` block.
#[derive(Debug, Clone)]
pub struct Introspection {
    /// The endpoint URI (for logs).
    pub uri: String,
    /// `:scheme`.
    pub scheme: &'static str,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
    /// Envoy cluster of the endpoint.
    pub cluster: String,
    /// Timeout of one introspection call.
    pub timeout: std::time::Duration,
    /// `Basic <base64(client_id:client_secret)>` (RFC 6749 2.3.1).
    pub authorization: Secret,
    /// Longest life of a cached active answer, in seconds.
    pub cache_secs: u64,
    /// Life of a cached inactive answer, in seconds (0: not cached).
    pub negative_secs: u64,
    /// Answers larger than this are a failed lookup.
    pub max_bytes: usize,
    /// Slots of the shared cache.
    pub cache_slots: u32,
    /// Shared-data key prefix (`introspect/<hash>` as compiled, then namespaced).
    pub shared_prefix: String,
}

/// What the cache knows about a token.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Active, with its claims and the payload forwarded for it (base64url of the JSON).
    Active(crate::cache::Verified),
    /// Inactive (or expired, revoked, unknown to the server).
    Inactive,
    /// Not in the cache: ask the endpoint.
    Miss,
    /// Another request is asking about this token right now (until the time in ms).
    Pending(u64),
    /// Asked during this request, and the endpoint failed.
    Failed,
}

/// One cache slot, as JSON: `{"d": <hex digest>, "u": <until, s>, "c": <members> | null}`
/// (built and read as a `serde_json::Value`, which the module has anyway).
fn entry_json(digest: &str, until: u64, members: Option<&Map<String, Value>>) -> Vec<u8> {
    let mut entry = Map::new();
    entry.insert("d".into(), Value::from(digest));
    entry.insert("u".into(), Value::from(until));
    entry.insert(
        "c".into(),
        members.map_or(Value::Null, |m| Value::Object(m.clone())),
    );
    serde_json::to_vec(&Value::Object(entry)).unwrap_or_default()
}

/// A slot marking a question in flight: `{"d": <hex digest>, "p": <until, ms>}`.
fn pending_json(digest: &str, until_ms: u64) -> Vec<u8> {
    let mut entry = Map::new();
    entry.insert("d".into(), Value::from(digest));
    entry.insert("p".into(), Value::from(until_ms));
    serde_json::to_vec(&Value::Object(entry)).unwrap_or_default()
}

/// What a slot says about the token with `digest` at `now_ms`.
fn read_entry(bytes: &[u8], digest: &str, now_ms: u64) -> Lookup {
    let Ok(Value::Object(mut entry)) = serde_json::from_slice::<Value>(bytes) else {
        return Lookup::Miss;
    };
    if entry.get("d").and_then(Value::as_str) != Some(digest) {
        return Lookup::Miss;
    }
    if let Some(until) = entry.get("p").and_then(Value::as_u64) {
        return if now_ms < until {
            Lookup::Pending(until)
        } else {
            Lookup::Miss
        };
    }
    let until = entry.get("u").and_then(Value::as_u64).unwrap_or(0);
    if now_ms / 1000 >= until {
        return Lookup::Miss;
    }
    match entry.remove("c") {
        Some(Value::Object(members)) => match verified(members) {
            Some(v) => Lookup::Active(v),
            None => Lookup::Miss,
        },
        _ => Lookup::Inactive,
    }
}

/// Hex SHA-256 of a token.
pub fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Introspection {
    fn slot_key(&self, digest: &str) -> String {
        let slot = u32::from_str_radix(digest.get(..8).unwrap_or("0"), 16).unwrap_or(0)
            % self.cache_slots.max(1);
        format!("{}/{slot}", self.shared_prefix)
    }

    /// The cached answer for a token, if any and still valid at `now_ms`.
    pub fn lookup(&self, host: &dyn Host, token: &str, now_ms: u64) -> Lookup {
        let digest = digest(token);
        let Ok((Some(bytes), _)) = host.get_shared(&self.slot_key(&digest)) else {
            return Lookup::Miss;
        };
        read_entry(&bytes, &digest, now_ms)
    }

    /// Claims the question about a token for this request, so that concurrent requests with
    /// the same token wait for its answer instead of asking too: true when this request should
    /// ask (nobody else is asking).
    pub fn claim(&self, host: &dyn Host, token: &str, now_ms: u64) -> bool {
        let digest = digest(token);
        let until = now_ms
            .saturating_add(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX))
            .saturating_add(1_000);
        wasmgate_core::shared::update(host, &self.slot_key(&digest), |bytes| {
            if matches!(read_entry(bytes, &digest, now_ms), Lookup::Pending(_)) {
                (None, false)
            } else {
                (Some(pending_json(&digest, until)), true)
            }
        })
        .unwrap_or(true)
    }

    /// Gives up a claim (the question failed), so that waiting requests ask themselves.
    pub fn release(&self, host: &dyn Host, token: &str) {
        let digest = digest(token);
        let _ = host.set_shared(&self.slot_key(&digest), &pending_json(&digest, 0), None);
    }

    /// Caches an answer (`None`: inactive) for every worker.
    pub fn store(
        &self,
        host: &dyn Host,
        token: &str,
        now: u64,
        answer: Option<&Map<String, Value>>,
    ) {
        let until = match answer {
            None if self.negative_secs == 0 => return,
            None => now.saturating_add(self.negative_secs),
            Some(members) => {
                let cap = now.saturating_add(self.cache_secs);
                match members.get("exp").and_then(Value::as_u64) {
                    Some(exp) => exp.min(cap),
                    None => cap,
                }
            }
        };
        let digest = digest(token);
        let bytes = entry_json(&digest, until, answer);
        let _ = host.set_shared(&self.slot_key(&digest), &bytes, None);
    }

    /// The introspection request for a token.
    pub fn request(&self, token: &str) -> Callout {
        let header = |n: &str, v: &str| (n.to_string(), v.to_string());
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        Callout::Http {
            cluster: self.cluster.clone(),
            headers: vec![
                header(":method", "POST"),
                header(":path", &self.path),
                header(":authority", &self.authority),
                header(":scheme", self.scheme),
                header("content-type", "application/x-www-form-urlencoded"),
                header("accept", "application/json"),
                header("authorization", self.authorization.expose()),
            ],
            body: Some(body.into_bytes()),
            trailers: Vec::new(),
            timeout: self.timeout,
        }
    }
}

/// `Basic` credentials per RFC 6749 2.3.1 (both parts form-encoded first).
pub fn basic_authorization(client_id: &str, secret: &str) -> Secret {
    let pair = format!("{}:{}", form_encode(client_id), form_encode(secret));
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// application/x-www-form-urlencoded: unreserved characters as is, everything else `%XX`.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The claims of an active answer, checked as a JWT payload would be (`iss` a string, `aud`
/// a string or list of strings, `exp`/`nbf` numbers), with the JSON as the forwarded payload.
fn verified(members: Map<String, Value>) -> Option<crate::cache::Verified> {
    let json = serde_json::to_vec(&Value::Object(members)).ok()?;
    let claims = Claims::parse(&json).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&json);
    Some(Rc::new((claims, payload)))
}

/// Reads an introspection answer: `Ok(Some(members))` active (without `active`), `Ok(None)`
/// inactive, `Err` for anything else (fail closed).
pub fn parse_answer(
    status: Option<&str>,
    body: &[u8],
    max_bytes: usize,
) -> Result<Option<Map<String, Value>>, String> {
    if status != Some("200") {
        return Err(format!("status {}", status.unwrap_or("none")));
    }
    if body.len() > max_bytes {
        return Err(format!("answer over {max_bytes} bytes"));
    }
    let mut members =
        strict_object(body).ok_or("the answer is not a JSON object without duplicate names")?;
    match members.remove("active") {
        Some(Value::Bool(true)) => {
            // What a JWT payload must be, or the answer is unusable.
            verified(members.clone()).ok_or("the answer's claims have wrong types")?;
            Ok(Some(members))
        }
        Some(Value::Bool(false)) => Ok(None),
        _ => Err("the answer has no boolean \"active\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_core::host::FakeHost;
    use wasmgate_core::shared::SharedStore;

    fn intro(slots: u32) -> Introspection {
        Introspection {
            uri: "https://idp/introspect".into(),
            scheme: "https",
            authority: "idp".into(),
            path: "/introspect".into(),
            cluster: "idp".into(),
            timeout: std::time::Duration::from_secs(1),
            authorization: basic_authorization("gate way", "s3cr:t"),
            cache_secs: 300,
            negative_secs: 10,
            max_bytes: 4096,
            cache_slots: slots,
            shared_prefix: "introspect/x".into(),
        }
    }

    #[test]
    fn answers_are_read_strictly() {
        let ok = br#"{"active": true, "sub": "s", "exp": 100, "scope": "read"}"#;
        let members = parse_answer(Some("200"), ok, 4096).unwrap().unwrap();
        assert!(!members.contains_key("active"));
        assert_eq!(
            parse_answer(Some("200"), br#"{"active": false}"#, 4096),
            Ok(None)
        );
        for bad in [
            &br#"{"active": "true", "sub": "s"}"#[..],
            br#"{"sub": "s"}"#,
            br#"{"active": true, "exp": "soon"}"#,
            br#"{"active": true, "aud": 5}"#,
            br#"{"active": false, "active": true}"#,
            b"[]",
        ] {
            assert!(parse_answer(Some("200"), bad, 4096).is_err(), "{bad:?}");
        }
        assert!(parse_answer(Some("500"), ok, 4096).is_err());
        assert!(parse_answer(Some("200"), ok, 10).is_err());
    }

    #[test]
    fn the_cache_is_bounded_keyed_by_digest_and_expires() {
        let host = FakeHost::default();
        let i = intro(4);
        let active: Map<String, Value> =
            serde_json::from_str(r#"{"sub": "alice", "exp": 350}"#).unwrap();
        let ms = |s: u64| s * 1000;
        assert!(matches!(i.lookup(&host, "t1", 0), Lookup::Miss));
        i.store(&host, "t1", 100, Some(&active));
        let Lookup::Active(v) = i.lookup(&host, "t1", ms(349)) else {
            panic!()
        };
        assert_eq!(v.0.sub(), Some("alice"));
        assert!(
            matches!(i.lookup(&host, "t1", ms(350)), Lookup::Miss),
            "until exp"
        );
        // cache_duration caps an active answer.
        i.store(
            &host,
            "t1",
            100,
            Some(&serde_json::from_str(r#"{"sub": "a"}"#).unwrap()),
        );
        assert!(matches!(i.lookup(&host, "t1", ms(399)), Lookup::Active(_)));
        assert!(matches!(i.lookup(&host, "t1", ms(400)), Lookup::Miss));
        // Inactive: briefly.
        i.store(&host, "t2", 100, None);
        assert!(matches!(i.lookup(&host, "t2", ms(109)), Lookup::Inactive));
        assert!(matches!(i.lookup(&host, "t2", ms(110)), Lookup::Miss));
        // Another token never reads a slot it does not own; a flood of tokens stays in 4 slots.
        assert!(matches!(i.lookup(&host, "t3", ms(101)), Lookup::Miss));
        // One question at a time per token: the second claim waits until the first expires
        // (timeout + 1 s) or is released.
        assert!(i.claim(&host, "t4", 1_000));
        assert!(matches!(
            i.lookup(&host, "t4", 1_500),
            Lookup::Pending(3_000)
        ));
        assert!(!i.claim(&host, "t4", 2_999));
        assert!(i.claim(&host, "t4", 3_000));
        i.release(&host, "t4");
        assert!(matches!(i.lookup(&host, "t4", 3_001), Lookup::Miss));
        assert!(i.claim(&host, "t4", 3_001));
        i.store(&host, "t4", 3, Some(&active));
        assert!(matches!(i.lookup(&host, "t4", 3_002), Lookup::Active(_)));
        for n in 0..1000 {
            i.store(&host, &format!("flood-{n}"), 100, None);
        }
        let slots: std::collections::BTreeSet<String> = (0..1000)
            .map(|n| i.slot_key(&digest(&format!("flood-{n}"))))
            .collect();
        assert_eq!(slots.len(), 4, "{slots:?}");
        // The token is never stored, only its digest.
        for key in slots {
            let (value, _) = host.get_shared(&key).unwrap();
            let text = String::from_utf8(value.unwrap()).unwrap();
            assert!(!text.contains("flood-"), "{text}");
        }
    }

    #[test]
    fn the_request_authenticates_and_encodes() {
        let Callout::Http { headers, body, .. } = intro(4).request("a+b/c=") else {
            panic!()
        };
        let body = String::from_utf8(body.unwrap()).unwrap();
        assert_eq!(body, "token=a%2Bb%2Fc%3D&token_type_hint=access_token");
        let auth = headers.iter().find(|(n, _)| n == "authorization").unwrap();
        // base64("gate%20way:s3cr%3At")
        assert_eq!(auth.1, "Basic Z2F0ZSUyMHdheTpzM2NyJTNBdA==");
        assert_eq!(format!("{:?}", intro(4).authorization), "<redacted>");
    }
}
