//! Signature verification as pure functions: [`prepare`] reads the headers (missing, malformed,
//! stale are answered before any body is buffered), [`verify`] checks the HMAC over the body.

use crate::config::{CustomSettings, Part, Policy, Provider, Scheme, SignatureEncoding};
use crate::crypto::{self, Algorithm};
use crate::pubkey::PublicKey;
use crate::{httpsig, sigv4};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The request as the filter sees it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`, query included.
    pub path: String,
    /// `:scheme` (`http` when absent).
    pub scheme: String,
    /// Headers, lowercase names, in order (pseudo-headers may be present and are ignored).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Builds a request from a host header list (pseudo-headers included).
    pub fn from_headers(headers: Vec<(String, String)>) -> Self {
        let pseudo = |name: &str| wasmgate_core::request::header_or_empty(&headers, name);
        let scheme = pseudo(":scheme");
        Self {
            method: pseudo(":method"),
            authority: pseudo(":authority"),
            path: pseudo(":path"),
            scheme: if scheme.is_empty() {
                "http".into()
            } else {
                scheme
            },
            headers,
        }
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        if name == "host" && !self.authority.is_empty() {
            return Some(&self.authority);
        }
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        if name == "host" && !self.authority.is_empty() {
            return vec![&self.authority];
        }
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// The query without `?` (`None` when the path has none).
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// No signature header: 401 `missing_signature`.
    Missing(String),
    /// Signature does not match any secret: 401 `invalid_signature`.
    Invalid(String),
    /// A SigV4 credential scope for another region or service: 401 `wrong_credential_scope`.
    WrongScope(String),
    /// Timestamp outside the tolerance: 401 `stale_timestamp`.
    Stale,
    /// Header present but unreadable: 400 `malformed_signature`.
    Malformed(String),
    /// Body larger than `max_body_bytes`: 413 `body_too_large`.
    TooLarge(u64),
    /// Message already seen: 409 `replayed`.
    Replayed,
}

impl Reject {
    /// The snake_case error code (also the metric suffix).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing_signature",
            Self::Invalid(_) => "invalid_signature",
            Self::WrongScope(_) => "wrong_credential_scope",
            Self::Stale => "stale_timestamp",
            Self::Malformed(_) => "malformed_signature",
            Self::TooLarge(_) => "body_too_large",
            Self::Replayed => "replayed",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u32 {
        match self {
            Self::Missing(_) | Self::Invalid(_) | Self::WrongScope(_) | Self::Stale => 401,
            Self::Malformed(_) => 400,
            Self::TooLarge(_) => 413,
            Self::Replayed => 409,
        }
    }

    /// One human sentence, without any secret or signature.
    pub fn message(&self) -> String {
        match self {
            Self::Missing(header) => format!("The request has no {header} header."),
            Self::Invalid(why) | Self::WrongScope(why) => why.clone(),
            Self::Stale => "The request timestamp is outside the allowed window.".into(),
            Self::Malformed(why) => why.clone(),
            Self::TooLarge(limit) => format!("The request body is larger than {limit} bytes."),
            Self::Replayed => "This message was already received.".into(),
        }
    }
}

/// The default message for a signature that does not verify.
pub fn no_match() -> Reject {
    Reject::Invalid("The request signature does not match.".into())
}

fn malformed(why: impl Into<String>) -> Reject {
    Reject::Malformed(why.into())
}

/// What [`prepare`] read from the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// An HMAC over a payload built from the body: candidate signatures and payload parts.
    Simple {
        /// Hash under the HMAC.
        algorithm: Algorithm,
        /// HMAC signatures offered (any may match).
        candidates: Vec<Vec<u8>>,
        /// Ed25519 signatures offered, checked with the policy's public keys (any may match).
        ed25519: Vec<Vec<u8>>,
        /// Payload template with values already resolved except the body.
        payload: Vec<Piece>,
        /// A message id covered by the signature; `None`: the replay id is derived from the
        /// signed bytes (see [`verify`]).
        replay_id: Option<String>,
    },
    /// GitLab: the token matched this secret at the header phase; the replay id waits for the
    /// body.
    Token {
        /// Index of the secret the token equals.
        key_index: usize,
    },
    /// Twilio: the signatures, and the URL the form fields are appended to.
    Twilio {
        /// HMAC-SHA1 signatures offered.
        candidates: Vec<Vec<u8>>,
        /// The public URL with the path and query.
        url: String,
    },
    /// RFC 9421: the chosen signature and its base, body checks pending.
    HttpSignature(httpsig::Prepared),
    /// AWS SigV4: the parsed authorization, canonical request waits for the body hash.
    AwsSigv4(sigv4::Prepared),
}

/// A piece of a signed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Fixed bytes.
    Bytes(Vec<u8>),
    /// The body.
    Body,
}

/// The most signatures one request may offer: each costs a verification per key.
pub const MAX_SIGNATURES: usize = 10;

fn too_many(header: &str) -> Reject {
    malformed(format!(
        "{header} holds more than {MAX_SIGNATURES} signatures."
    ))
}

/// A verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Index of the key that matched: a secret's index, or the number of secrets plus a public
    /// key's index ([`Policy::key_id`]), or after those a fetched JWKS key's index.
    pub key_index: usize,
    /// Replay id (message id, nonce, or the signature).
    pub replay_id: String,
}

/// Reads and checks the signature headers; needs no body.
pub fn prepare(policy: &Policy, req: &Request, now: u64) -> Result<Pending, Reject> {
    prepare_with(policy, &[], req, now)
}

/// [`prepare`] with keys fetched from the policy's JWKS (`http_signature` only).
pub fn prepare_with(
    policy: &Policy,
    fetched: &[PublicKey],
    req: &Request,
    now: u64,
) -> Result<Pending, Reject> {
    match &policy.scheme {
        Scheme::Github => {
            let value = required(req, "x-hub-signature-256")?;
            let hex_sig = value
                .strip_prefix("sha256=")
                .ok_or_else(|| malformed("X-Hub-Signature-256 must start with \"sha256=\"."))?;
            let sig = decode_hex(hex_sig, 32, "X-Hub-Signature-256")?;
            // X-GitHub-Delivery is not signed, so it cannot name the message for replays.
            Ok(simple(
                Algorithm::Sha256,
                vec![sig],
                vec![Piece::Body],
                None,
            ))
        }
        Scheme::Shopify => {
            let value = required(req, "x-shopify-hmac-sha256")?;
            let sig = decode_base64(value.trim(), 32, "X-Shopify-Hmac-Sha256")?;
            // X-Shopify-Webhook-Id is not signed either.
            Ok(simple(
                Algorithm::Sha256,
                vec![sig],
                vec![Piece::Body],
                None,
            ))
        }
        Scheme::Slack => {
            let value = required(req, "x-slack-signature")?;
            let hex_sig = value
                .strip_prefix("v0=")
                .ok_or_else(|| malformed("X-Slack-Signature must start with \"v0=\"."))?;
            let sig = decode_hex(hex_sig, 32, "X-Slack-Signature")?;
            let ts = companion(
                req,
                "x-slack-request-timestamp",
                "X-Slack-Request-Timestamp",
            )?;
            check_time(parse_seconds(ts, "X-Slack-Request-Timestamp")?, now, policy)?;
            Ok(simple(
                Algorithm::Sha256,
                vec![sig],
                vec![Piece::Bytes(format!("v0:{ts}:").into_bytes()), Piece::Body],
                None,
            ))
        }
        Scheme::Stripe => prepare_stripe(policy, req, now),
        Scheme::StandardWebhooks => prepare_standard(policy, req, now),
        Scheme::Custom(CustomSettings {
            provider: Some(Provider::Gitlab),
            ..
        }) => prepare_gitlab(policy, req),
        Scheme::Custom(
            custom @ CustomSettings {
                provider: Some(Provider::Twilio),
                ..
            },
        ) => prepare_twilio(custom, req),
        Scheme::Custom(custom) => prepare_custom(custom, policy, req, now),
        Scheme::HttpSignature(settings) => {
            httpsig::prepare(settings, policy, fetched, req, now, policy.tolerance_secs)
                .map(Pending::HttpSignature)
        }
        Scheme::AwsSigv4(settings) => {
            sigv4::prepare(settings, &policy.keys, req, now, policy.tolerance_secs)
                .map(Pending::AwsSigv4)
        }
    }
}

/// Verifies the signature over the complete body.
pub fn verify(
    policy: &Policy,
    pending: &Pending,
    req: &Request,
    body: &[u8],
) -> Result<Verified, Reject> {
    verify_with(policy, &[], pending, req, body)
}

/// [`verify`] with the fetched keys [`prepare_with`] was given.
pub fn verify_with(
    policy: &Policy,
    fetched: &[PublicKey],
    pending: &Pending,
    req: &Request,
    body: &[u8],
) -> Result<Verified, Reject> {
    match pending {
        Pending::Simple {
            algorithm,
            candidates,
            ed25519,
            payload,
            replay_id,
        } => {
            let parts: Vec<&[u8]> = payload
                .iter()
                .map(|p| match p {
                    Piece::Bytes(b) => b.as_slice(),
                    Piece::Body => body,
                })
                .collect();
            for (i, key) in policy.keys.iter().enumerate() {
                let mac = crypto::mac(*algorithm, &key.bytes, &parts);
                if crypto::matches_any(&mac, candidates) {
                    // Without a signed message id, the message is named by a keyed hash of the
                    // signed bytes under the first key: the same whichever secret signed it and
                    // whatever unsigned headers or extra signatures come along with it.
                    let replay_id = match replay_id {
                        Some(id) => id.clone(),
                        None if i == 0 => hex::encode(&mac),
                        None => hex::encode(crypto::mac(
                            *algorithm,
                            policy.keys.first().map_or(&[][..], |k| k.bytes.as_slice()),
                            &parts,
                        )),
                    };
                    return Ok(Verified {
                        key_index: i,
                        replay_id,
                    });
                }
            }
            if !ed25519.is_empty() && !policy.public_keys.is_empty() {
                let message = parts.concat();
                for (j, key) in policy.public_keys.iter().enumerate() {
                    if ed25519.iter().any(|sig| key.key.verify(&message, sig)) {
                        // Signed bytes name the message (no secret to key a hash with).
                        let replay_id = match replay_id {
                            Some(id) => id.clone(),
                            None => hex::encode(crypto::sha256(&message)),
                        };
                        return Ok(Verified {
                            key_index: policy.keys.len() + j,
                            replay_id,
                        });
                    }
                }
            }
            Err(no_match())
        }
        Pending::Token { key_index } => Ok(Verified {
            key_index: *key_index,
            // The token signs nothing: a keyed hash of the body names the delivery, so only
            // byte-identical copies are recognised.
            replay_id: hex::encode(crypto::mac(
                Algorithm::Sha256,
                policy.keys.first().map_or(&[][..], |k| k.bytes.as_slice()),
                &[body],
            )),
        }),
        Pending::Twilio { candidates, url } => {
            let payload = twilio_payload(url, body)?;
            for (i, key) in policy.keys.iter().enumerate() {
                let mac = crypto::mac(Algorithm::Sha1, &key.bytes, &[payload.as_bytes()]);
                if crypto::matches_any(&mac, candidates) {
                    let first = policy.keys.first().map_or(&[][..], |k| k.bytes.as_slice());
                    return Ok(Verified {
                        key_index: i,
                        replay_id: hex::encode(crypto::mac(
                            Algorithm::Sha256,
                            first,
                            &[payload.as_bytes()],
                        )),
                    });
                }
            }
            Err(no_match())
        }
        Pending::HttpSignature(prepared) => httpsig::verify(prepared, policy, fetched, body),
        Pending::AwsSigv4(prepared) => sigv4::verify(prepared, &policy.keys, req, body),
    }
}

fn simple(
    algorithm: Algorithm,
    candidates: Vec<Vec<u8>>,
    payload: Vec<Piece>,
    replay_id: Option<String>,
) -> Pending {
    Pending::Simple {
        algorithm,
        candidates,
        ed25519: Vec::new(),
        payload,
        replay_id,
    }
}

/// The signature header itself: absent (or empty) is `missing_signature`.
fn required<'a>(req: &'a Request, name: &str) -> Result<&'a str, Reject> {
    match req.header(name) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(Reject::Missing(display_name(name))),
    }
}

/// A header that must accompany the signature: absent is `malformed_signature`.
fn companion<'a>(req: &'a Request, name: &str, display: &str) -> Result<&'a str, Reject> {
    match req.header(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim()),
        _ => Err(malformed(format!("The {display} header is missing."))),
    }
}

fn display_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn decode_hex(text: &str, len: usize, header: &str) -> Result<Vec<u8>, Reject> {
    match hex::decode(text.trim()) {
        Ok(bytes) if bytes.len() == len => Ok(bytes),
        _ => Err(malformed(format!(
            "{header} does not hold a {len}-byte hex signature."
        ))),
    }
}

fn decode_base64(text: &str, len: usize, header: &str) -> Result<Vec<u8>, Reject> {
    match STANDARD.decode(text) {
        Ok(bytes) if bytes.len() == len => Ok(bytes),
        _ => Err(malformed(format!(
            "{header} does not hold a {len}-byte base64 signature."
        ))),
    }
}

/// Parses Unix seconds.
pub fn parse_seconds(text: &str, header: &str) -> Result<u64, Reject> {
    let text = text.trim();
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "{header} is not a Unix timestamp in seconds."
        )));
    }
    text.parse()
        .map_err(|_| malformed(format!("{header} is not a Unix timestamp in seconds.")))
}

/// Parses an RFC 3339 UTC timestamp (`2019-11-16T10:11:12.634234626Z`, fraction optional) as
/// Unix seconds.
pub fn parse_rfc3339(text: &str, header: &str) -> Result<u64, Reject> {
    let bad = || malformed(format!("{header} is not an RFC 3339 UTC timestamp."));
    let text = text.trim();
    let (main, rest) = text.split_at_checked(19).ok_or_else(bad)?;
    let fraction_ok = match rest.strip_suffix('Z') {
        Some("") => true,
        Some(f) => {
            f.len() >= 2
                && f.len() <= 10
                && f.starts_with('.')
                && f[1..].bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    let b = main.as_bytes();
    let shape = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && b.get(10) == Some(&b'T')
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !fraction_ok || !shape {
        return Err(bad());
    }
    let compact: String = main.chars().filter(|c| *c != '-' && *c != ':').collect();
    sigv4::parse_amz_date(&format!("{compact}Z")).ok_or_else(bad)
}

/// `timestamp` within `tolerance` of `now`, in either direction.
pub fn check_time(timestamp: u64, now: u64, policy: &Policy) -> Result<(), Reject> {
    within(timestamp, now, policy.tolerance_secs)
}

/// `timestamp` within `tolerance` seconds of `now`.
pub fn within(timestamp: u64, now: u64, tolerance: u64) -> Result<(), Reject> {
    if timestamp.abs_diff(now) > tolerance {
        Err(Reject::Stale)
    } else {
        Ok(())
    }
}

fn prepare_stripe(policy: &Policy, req: &Request, now: u64) -> Result<Pending, Reject> {
    let value = required(req, "stripe-signature")?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in value.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            return Err(malformed(
                "Stripe-Signature is not a list of key=value pairs.",
            ));
        };
        match k {
            "t" => timestamp = Some(v),
            "v1" => {
                // A v1 entry that is not 32 bytes of hex can never match; skip it like Stripe.
                if let Ok(sig) = hex::decode(v) {
                    if sig.len() == 32 {
                        candidates.push(sig);
                    }
                }
            }
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(malformed("Stripe-Signature has no timestamp (t=)."));
    };
    if candidates.is_empty() {
        return Err(malformed("Stripe-Signature has no v1 signature."));
    }
    check_time(
        parse_seconds(timestamp, "The Stripe-Signature timestamp")?,
        now,
        policy,
    )?;
    Ok(simple(
        Algorithm::Sha256,
        candidates,
        vec![
            Piece::Bytes(format!("{timestamp}.").into_bytes()),
            Piece::Body,
        ],
        None,
    ))
}

fn prepare_standard(policy: &Policy, req: &Request, now: u64) -> Result<Pending, Reject> {
    // Svix (and the platforms built on it) send the same three headers under `svix-` names. One
    // family is read as a whole, the one whose signature header is present (`webhook-` first),
    // so an id or timestamp is always the one signed with that signature.
    let family =
        if req.header("webhook-signature").is_none() && req.header("svix-signature").is_some() {
            "svix"
        } else {
            "webhook"
        };
    let value = required(req, &format!("{family}-signature"))?;
    let id_name = format!("{family}-id");
    let id = companion(req, &id_name, &id_name)?;
    let ts_name = format!("{family}-timestamp");
    let ts = companion(req, &ts_name, &ts_name)?;
    let timestamp = parse_seconds(ts, &ts_name)?;
    check_time(timestamp, now, policy)?;
    // `v1` entries are HMAC-SHA256 signatures, `v1a` entries Ed25519; others (future versions)
    // are ignored. Entries are separated by spaces.
    let entries: Vec<&str> = value.split(' ').filter(|e| !e.is_empty()).collect();
    if entries.len() > MAX_SIGNATURES {
        return Err(too_many(&display_name(&format!("{family}-signature"))));
    }
    let decoded = |version: &str, len: usize| -> Vec<Vec<u8>> {
        entries
            .iter()
            .filter_map(|entry| entry.strip_prefix(version))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .filter(|sig| sig.len() == len)
            .collect()
    };
    let candidates = if policy.keys.is_empty() {
        Vec::new()
    } else {
        decoded("v1,", 32)
    };
    let ed25519 = if policy.public_keys.is_empty() {
        Vec::new()
    } else {
        decoded("v1a,", 64)
    };
    if candidates.is_empty() && ed25519.is_empty() {
        return Err(no_match());
    }
    Ok(Pending::Simple {
        algorithm: Algorithm::Sha256,
        candidates,
        ed25519,
        payload: vec![
            Piece::Bytes(format!("{id}.{ts}.").into_bytes()),
            Piece::Body,
        ],
        replay_id: Some(id.to_string()),
    })
}

/// GitLab: the token is the secret; compared in constant time with each configured secret.
fn prepare_gitlab(policy: &Policy, req: &Request) -> Result<Pending, Reject> {
    let token = required(req, "x-gitlab-token")?.trim().as_bytes().to_vec();
    let candidates = [token];
    for (key_index, key) in policy.keys.iter().enumerate() {
        if crypto::matches_any(&key.bytes, &candidates) {
            return Ok(Pending::Token { key_index });
        }
    }
    Err(Reject::Invalid("The X-Gitlab-Token does not match.".into()))
}

/// Twilio: the URL Twilio called (the configured public URL, then the path and query as sent).
fn prepare_twilio(custom: &CustomSettings, req: &Request) -> Result<Pending, Reject> {
    let value = required(req, "x-twilio-signature")?;
    let entries: Vec<&str> = value.split(' ').filter(|e| !e.is_empty()).collect();
    if entries.len() > MAX_SIGNATURES {
        return Err(too_many("X-Twilio-Signature"));
    }
    let candidates: Vec<Vec<u8>> = entries
        .iter()
        .filter_map(|e| decode_base64(e, 20, "X-Twilio-Signature").ok())
        .collect();
    if candidates.is_empty() {
        return Err(malformed(
            "X-Twilio-Signature does not hold a 20-byte base64 signature.",
        ));
    }
    Ok(Pending::Twilio {
        candidates,
        url: format!("{}{}", custom.public_url, req.path),
    })
}

/// What Twilio signs: the URL, then (for a form) each field's name and value, decoded and
/// sorted. When the URL carries `bodySHA256` (Twilio's JSON requests) the URL alone is signed and
/// the body must have that SHA-256; a body is never left unsigned.
pub fn twilio_payload(url: &str, body: &[u8]) -> Result<String, Reject> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let body_hash = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("bodySHA256="));
    if let Some(expected) = body_hash {
        let actual = hex::encode(crypto::sha256(body));
        if !crypto::matches_any(actual.as_bytes(), &[expected.as_bytes().to_vec()]) {
            return Err(Reject::Invalid(
                "The body does not match the signed bodySHA256.".into(),
            ));
        }
        return Ok(url.to_string());
    }
    let mut payload = url.to_string();
    let text = String::from_utf8_lossy(body);
    let mut fields: Vec<(String, String)> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                wasmgate_core::request::decode_component(k),
                wasmgate_core::request::decode_component(v),
            )
        })
        .collect();
    fields.sort();
    for (k, v) in fields {
        payload.push_str(&k);
        payload.push_str(&v);
    }
    Ok(payload)
}

fn prepare_custom(
    custom: &CustomSettings,
    policy: &Policy,
    req: &Request,
    now: u64,
) -> Result<Pending, Reject> {
    let value = required(req, &custom.signature_header)?.trim();
    let display = display_name(&custom.signature_header);
    let len = if custom.ed25519 {
        64
    } else {
        crypto::mac(custom.algorithm, b"k", &[]).len()
    };
    // Several signatures (rotation) are separated as the sender's format says; entries without
    // the prefix (other versions) are ignored, any one valid entry passes.
    let entries: Vec<&str> = value
        .split(|c| custom.separators.contains(c))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > MAX_SIGNATURES {
        return Err(too_many(&display));
    }
    let prefixed: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.strip_prefix(custom.signature_prefix.as_str()))
        .collect();
    if prefixed.is_empty() {
        return Err(malformed(format!(
            "{display} must start with {:?}.",
            custom.signature_prefix
        )));
    }
    let sigs: Vec<Vec<u8>> = prefixed
        .iter()
        .filter_map(|encoded| match custom.encoding {
            SignatureEncoding::Hex => decode_hex(encoded, len, &display).ok(),
            SignatureEncoding::Base64 => decode_base64(encoded, len, &display).ok(),
        })
        .collect();
    if sigs.is_empty() {
        let kind = match custom.encoding {
            SignatureEncoding::Hex => "hex",
            SignatureEncoding::Base64 => "base64",
        };
        return Err(malformed(format!(
            "{display} does not hold a {len}-byte {kind} signature."
        )));
    }
    let timestamp = match &custom.timestamp_header {
        Some(h) => {
            let ts = companion(req, h, &display_name(h))?;
            let seconds = if custom.provider == Some(Provider::Twitch) {
                parse_rfc3339(ts, &display_name(h))?
            } else {
                parse_seconds(ts, &display_name(h))?
            };
            check_time(seconds, now, policy)?;
            Some(ts)
        }
        None => None,
    };
    let id = match &custom.id_header {
        Some(h) => Some(companion(req, h, &display_name(h))?),
        None => None,
    };
    let mut payload = Vec::new();
    let mut pending = Vec::new();
    let flush = |pending: &mut Vec<u8>, payload: &mut Vec<Piece>| {
        if !pending.is_empty() {
            payload.push(Piece::Bytes(std::mem::take(pending)));
        }
    };
    for part in &custom.payload {
        match part {
            Part::Literal(text) => pending.extend_from_slice(text.as_bytes()),
            Part::Body => {
                flush(&mut pending, &mut payload);
                payload.push(Piece::Body);
            }
            Part::Timestamp => pending.extend_from_slice(timestamp.unwrap_or_default().as_bytes()),
            Part::Id => pending.extend_from_slice(id.unwrap_or_default().as_bytes()),
            Part::Method => pending.extend_from_slice(req.method.as_bytes()),
            Part::Path => pending.extend_from_slice(req.path.as_bytes()),
            Part::Header(name) => {
                pending.extend_from_slice(req.header(name).unwrap_or_default().as_bytes());
            }
        }
    }
    flush(&mut pending, &mut payload);
    // The id names the message only when the signature covers it.
    let replay_id = id
        .filter(|_| custom.payload.contains(&Part::Id))
        .map(str::to_string);
    let (candidates, ed25519) = if custom.ed25519 {
        (Vec::new(), sigs)
    } else {
        (sigs, Vec::new())
    };
    Ok(Pending::Simple {
        algorithm: custom.algorithm,
        candidates,
        ed25519,
        payload,
        replay_id,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config;

    pub fn vectors(name: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/vectors")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    pub fn policy(json: &str) -> Policy {
        config::parse(json.as_bytes())
            .unwrap()
            .policies
            .default_policy()
            .clone()
    }

    pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut all = vec![
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            (":authority".to_string(), "example.com".to_string()),
        ];
        all.extend(
            headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())),
        );
        Request::from_headers(all)
    }

    pub fn check(
        policy: &Policy,
        req: &Request,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, Reject> {
        let pending = prepare(policy, req, now)?;
        verify(policy, &pending, req, body)
    }

    fn secret_json(id: &str, value: &str) -> String {
        serde_json::json!({"id": id, "value": value}).to_string()
    }

    #[test]
    fn github_vector_and_negatives() {
        let v = vectors("github_webhook.json");
        let secret = v["secret"].as_str().unwrap();
        let p = policy(&format!(
            r#"{{"scheme": "github", "secrets": [{}, {}]}}"#,
            secret_json("new", "other"),
            secret_json("old", secret)
        ));
        let payload = v["payload"].as_str().unwrap().as_bytes();
        let header = v["X-Hub-Signature-256"].as_str().unwrap();
        let req = request(
            "POST",
            "/",
            &[
                ("X-Hub-Signature-256", header),
                ("X-GitHub-Delivery", "d-1"),
            ],
        );
        let ok = check(&p, &req, payload, 0).unwrap();
        assert_eq!(ok.key_index, 1, "the rotated (old) secret matched");
        // The unsigned X-GitHub-Delivery does not name the message: a keyed hash of the body does,
        // the same whichever secret signed it.
        let under_first = hex::encode(crypto::mac(Algorithm::Sha256, b"other", &[payload]));
        assert_eq!(ok.replay_id, under_first);
        let other_delivery = request(
            "POST",
            "/",
            &[
                ("X-Hub-Signature-256", header),
                ("X-GitHub-Delivery", "d-2"),
            ],
        );
        assert_eq!(
            check(&p, &other_delivery, payload, 0).unwrap().replay_id,
            under_first
        );
        let negatives = v["derived_not_from_docs"]["negative_cases_derived"]
            .as_array()
            .unwrap();
        for case in negatives {
            let req = request(
                "POST",
                "/",
                &[(
                    "X-Hub-Signature-256",
                    case["X-Hub-Signature-256"].as_str().unwrap(),
                )],
            );
            let result = check(&p, &req, case["payload"].as_str().unwrap().as_bytes(), 0);
            let expected = case["expected"].as_str().unwrap();
            if expected.starts_with("implementation-defined") {
                // We compare decoded bytes: uppercase hex is the same signature.
                assert!(result.is_ok(), "{expected}");
            } else if expected.contains("prefix") {
                assert_eq!(result.unwrap_err().code(), "malformed_signature");
            } else {
                assert_eq!(result.unwrap_err(), no_match(), "{expected}");
            }
        }
        let none = request("POST", "/", &[]);
        assert_eq!(
            check(&p, &none, payload, 0).unwrap_err(),
            Reject::Missing("X-Hub-Signature-256".into())
        );
        let short = request("POST", "/", &[("X-Hub-Signature-256", "sha256=abcd")]);
        assert_eq!(
            check(&p, &short, payload, 0).unwrap_err().code(),
            "malformed_signature"
        );
    }

    #[test]
    fn slack_vector_with_pinned_clock() {
        let v = vectors("slack.json");
        let p = policy(&format!(
            r#"{{"scheme": "slack", "secrets": [{}]}}"#,
            secret_json("s", v["signing_secret"].as_str().unwrap())
        ));
        let ts = v["X-Slack-Request-Timestamp"].as_str().unwrap();
        let now: u64 = ts.parse().unwrap();
        let sig = v["X-Slack-Signature"].as_str().unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let req = |ts: &str| {
            request(
                "POST",
                "/",
                &[
                    ("X-Slack-Signature", sig),
                    ("X-Slack-Request-Timestamp", ts),
                ],
            )
        };
        assert_eq!(check(&p, &req(ts), body, now).unwrap().key_index, 0);
        // Derived negatives: other timestamp, changed body, 301 s later.
        assert_eq!(
            check(&p, &req("1531420619"), body, now).unwrap_err(),
            no_match()
        );
        let mut longer = body.to_vec();
        longer.push(b'&');
        assert_eq!(check(&p, &req(ts), &longer, now).unwrap_err(), no_match());
        assert_eq!(
            check(&p, &req(ts), body, now + 301).unwrap_err(),
            Reject::Stale
        );
        assert!(check(&p, &req(ts), body, now + 300).is_ok());
        assert_eq!(
            check(&p, &req(ts), body, now - 301).unwrap_err(),
            Reject::Stale
        );
        let no_ts = request("POST", "/", &[("X-Slack-Signature", sig)]);
        assert_eq!(
            check(&p, &no_ts, body, now).unwrap_err().code(),
            "malformed_signature"
        );
        assert_eq!(
            check(&p, &req("soon"), body, now).unwrap_err().code(),
            "malformed_signature"
        );
    }

    #[test]
    fn standard_webhooks_vector_and_fixed_negatives() {
        let v = vectors("standard_webhooks.json");
        let sv = &v["signing_vector"];
        let p = policy(&format!(
            r#"{{"scheme": "standard_webhooks", "secrets": [{}]}}"#,
            secret_json("s", sv["secret"].as_str().unwrap())
        ));
        assert_eq!(
            hex::encode(&p.keys[0].bytes),
            sv["key_hex"].as_str().unwrap()
        );
        let id = sv["webhook-id"].as_str().unwrap();
        let ts = sv["webhook-timestamp"].as_str().unwrap();
        let now: u64 = ts.parse().unwrap();
        let body = sv["payload"].as_str().unwrap().as_bytes();
        let valid = sv["webhook-signature"].as_str().unwrap();
        let req = |sig: &str| {
            request(
                "POST",
                "/",
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", ts),
                    ("webhook-signature", sig),
                ],
            )
        };
        let ok = check(&p, &req(valid), body, now).unwrap();
        assert_eq!(ok.replay_id, id);

        let cases = v["library_test_cases_with_fixed_values"]
            .as_array()
            .unwrap();
        let fixed_invalid: Vec<&str> = cases
            .iter()
            .filter_map(|c| c["webhook-signature"].as_str())
            .collect();
        assert_eq!(fixed_invalid.len(), 3);
        for sig in fixed_invalid {
            assert_eq!(
                check(&p, &req(sig), body, now).unwrap_err(),
                no_match(),
                "{sig}"
            );
        }
        // Multi-signature header: one valid entry among invalid ones (and a v2) suffices.
        let bad = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        let v2 = bad.replacen("v1,", "v2,", 1);
        let multi = format!("{bad} {v2} {valid} {bad}");
        assert!(
            multi.len() > 100
                && cases
                    .iter()
                    .any(|c| c["case"].as_str().unwrap().starts_with("multi-signature"))
        );
        assert!(check(&p, &req(&multi), body, now).is_ok());
        // Right base64 with the wrong version prefix.
        let wrong_version = valid.replacen("v1,", "v2,", 1);
        assert_eq!(
            check(&p, &req(&wrong_version), body, now).unwrap_err(),
            no_match()
        );
        // Missing headers.
        let missing_sig = request(
            "POST",
            "/",
            &[("webhook-id", id), ("webhook-timestamp", ts)],
        );
        assert_eq!(
            check(&p, &missing_sig, body, now).unwrap_err().code(),
            "missing_signature"
        );
        let missing_id = request(
            "POST",
            "/",
            &[("webhook-timestamp", ts), ("webhook-signature", valid)],
        );
        assert_eq!(
            check(&p, &missing_id, body, now).unwrap_err().code(),
            "malformed_signature"
        );
        let missing_ts = request(
            "POST",
            "/",
            &[("webhook-id", id), ("webhook-signature", valid)],
        );
        assert_eq!(
            check(&p, &missing_ts, body, now).unwrap_err().code(),
            "malformed_signature"
        );
        // Timestamp "hello", too old, too new.
        let hello = request(
            "POST",
            "/",
            &[
                ("webhook-id", id),
                ("webhook-timestamp", "hello"),
                ("webhook-signature", valid),
            ],
        );
        assert_eq!(
            check(&p, &hello, body, now).unwrap_err().code(),
            "malformed_signature"
        );
        assert_eq!(
            check(&p, &req(valid), body, now + 301).unwrap_err(),
            Reject::Stale
        );
        assert_eq!(
            check(&p, &req(valid), body, now - 301).unwrap_err(),
            Reject::Stale
        );
        // Empty secret or "whsec_" alone is refused at configuration time.
        for secret in ["", "whsec_"] {
            let json = format!(
                r#"{{"scheme": "standard_webhooks", "secrets": [{}]}}"#,
                secret_json("s", secret)
            );
            assert!(config::parse(json.as_bytes()).is_err(), "{secret:?}");
        }
    }

    fn stripe_header(secret: &str, t: u64, body: &[u8]) -> String {
        let sig = crypto::mac(
            Algorithm::Sha256,
            secret.as_bytes(),
            &[format!("{t}.").as_bytes(), body],
        );
        format!("t={t},v1={}", hex::encode(sig))
    }

    #[test]
    fn stripe_computed() {
        let v = vectors("stripe.json");
        assert!(v["scheme"]["signed_payload"]
            .as_str()
            .unwrap()
            .contains("'.'"));
        let secret = "whsec_test_secret";
        let p = policy(&format!(
            r#"{{"scheme": "stripe", "secrets": [{}]}}"#,
            secret_json("s", secret)
        ));
        let now = 1_700_000_000;
        let body = br#"{"id": "evt_1"}"#;
        let header = stripe_header(secret, now, body);
        let req = |h: &str| request("POST", "/", &[("Stripe-Signature", h)]);
        assert!(check(&p, &req(&header), body, now).is_ok());
        // Several v1 entries, one valid, plus a v0 entry that is ignored.
        let other = stripe_header("whsec_other", now, body);
        let sig_other = other.split_once(",v1=").unwrap().1;
        let sig_ok = header.split_once(",v1=").unwrap().1;
        let multi = format!("t={now},v1={sig_other},v1={sig_ok},v0={sig_other}");
        // Extra signatures do not make a replay look like a new message.
        assert_eq!(
            check(&p, &req(&multi), body, now).unwrap().replay_id,
            check(&p, &req(&header), body, now).unwrap().replay_id
        );
        // Only the v0 entry: no v1 signature.
        let v0 = format!("t={now},v0={sig_ok}");
        assert_eq!(
            check(&p, &req(&v0), body, now).unwrap_err().code(),
            "malformed_signature"
        );
        assert_eq!(
            check(&p, &req(&header), b"{}", now).unwrap_err(),
            no_match()
        );
        assert_eq!(
            check(&p, &req(&header), body, now + 301).unwrap_err(),
            Reject::Stale
        );
        assert_eq!(
            check(&p, &req(&format!("v1={sig_ok}")), body, now)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        assert_eq!(
            check(&p, &req("garbage"), body, now).unwrap_err().code(),
            "malformed_signature"
        );
        // The whsec_ secret is used verbatim, not base64-decoded.
        let decoded = policy(&format!(
            r#"{{"scheme": "stripe", "secrets": [{}]}}"#,
            secret_json("s", "test_secret")
        ));
        assert_eq!(
            check(&decoded, &req(&header), body, now).unwrap_err(),
            no_match()
        );
    }

    #[test]
    fn shopify_base64_over_body() {
        let secret = "shpss_secret";
        let p = policy(&format!(
            r#"{{"scheme": "shopify", "secrets": [{}]}}"#,
            secret_json("s", secret)
        ));
        let body = b"{\"order\": 1}";
        let sig = STANDARD.encode(crypto::mac(Algorithm::Sha256, secret.as_bytes(), &[body]));
        let req = request(
            "POST",
            "/",
            &[
                ("X-Shopify-Hmac-Sha256", &sig),
                ("X-Shopify-Webhook-Id", "w1"),
            ],
        );
        assert_eq!(
            check(&p, &req, body, 0).unwrap().replay_id,
            hex::encode(STANDARD.decode(&sig).unwrap())
        );
        assert_eq!(check(&p, &req, b"{}", 0).unwrap_err(), no_match());
        let bad = request("POST", "/", &[("X-Shopify-Hmac-Sha256", "!!")]);
        assert_eq!(
            check(&p, &bad, body, 0).unwrap_err().code(),
            "malformed_signature"
        );
    }

    #[test]
    fn custom_template_sha512_base64() {
        let p = policy(
            r#"{"scheme": "custom", "secrets": [{"id": "k", "value": "s3"}],
                "custom": {"signature_header": "x-signature", "signature_prefix": "sha512=",
                           "algorithm": "sha512", "encoding": "base64",
                           "timestamp_header": "x-timestamp", "id_header": "x-delivery-id",
                           "signed_payload": "{method}:{path}:{timestamp}:{id}:{header:x-tenant}:{body}"}}"#,
        );
        let body = b"hello";
        let msg = b"POST:/hook?a=1:1000:d-9:acme:hello";
        let sig = format!(
            "sha512={}",
            STANDARD.encode(crypto::mac(Algorithm::Sha512, b"s3", &[msg]))
        );
        let headers = [
            ("x-signature", sig.as_str()),
            ("x-timestamp", "1000"),
            ("x-delivery-id", "d-9"),
            ("x-tenant", "acme"),
        ];
        let req = request("POST", "/hook?a=1", &headers);
        let ok = check(&p, &req, body, 1000).unwrap();
        assert_eq!(ok.replay_id, "d-9");
        assert_eq!(check(&p, &req, b"hellO", 1000).unwrap_err(), no_match());
        assert_eq!(check(&p, &req, body, 2000).unwrap_err(), Reject::Stale);
        let no_id = request("POST", "/hook?a=1", &headers[..2]);
        assert_eq!(
            check(&p, &no_id, body, 1000).unwrap_err().code(),
            "malformed_signature"
        );
        let no_prefix = request("POST", "/hook?a=1", &[("x-signature", "abc")]);
        assert_eq!(
            check(&p, &no_prefix, body, 1000).unwrap_err().code(),
            "malformed_signature"
        );
    }

    #[test]
    fn custom_sha1_hex_body_only() {
        let p = policy(
            r#"{"scheme": "custom", "secrets": [{"id": "k", "value": "s"}],
                "custom": {"signature_header": "x-hub-signature", "signature_prefix": "sha1=", "algorithm": "sha1"}}"#,
        );
        let v = vectors("github_webhook.json");
        let p2 = Policy {
            keys: vec![config::Key {
                id: "gh".into(),
                bytes: v["secret"].as_str().unwrap().as_bytes().to_vec(),
            }],
            ..p
        };
        let legacy = v["derived_not_from_docs"]["X-Hub-Signature_sha1_computed_by_us"]
            .as_str()
            .unwrap();
        let req = request("POST", "/", &[("X-Hub-Signature", legacy)]);
        let ok = check(&p2, &req, v["payload"].as_str().unwrap().as_bytes(), 0).unwrap();
        assert_eq!(ok.replay_id, legacy.trim_start_matches("sha1="));
    }

    #[test]
    fn reject_shapes() {
        assert_eq!(Reject::TooLarge(10).status(), 413);
        assert_eq!(Reject::TooLarge(10).code(), "body_too_large");
        assert_eq!(Reject::Replayed.status(), 409);
        assert_eq!(Reject::Stale.status(), 401);
        assert_eq!(Reject::Malformed("x".into()).status(), 400);
        assert_eq!(Reject::WrongScope("x".into()).status(), 401);
        assert_eq!(
            Reject::WrongScope("x".into()).code(),
            "wrong_credential_scope"
        );
        assert!(Reject::Missing("X-A".into()).message().contains("X-A"));
        assert_eq!(display_name("x-hub-signature-256"), "X-Hub-Signature-256");
    }

    fn sw_request(family: &str, id: &str, ts: &str, sig: &str) -> Request {
        request(
            "POST",
            "/",
            &[
                (&format!("{family}-id"), id),
                (&format!("{family}-timestamp"), ts),
                (&format!("{family}-signature"), sig),
            ],
        )
    }

    #[test]
    fn standard_webhooks_v1a_ed25519_next_to_v1_and_svix_headers() {
        use ed25519_dalek::Signer;
        let v = vectors("standard_webhooks.json");
        let sv = &v["signing_vector"];
        let signing = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let whpk = format!(
            "whpk_{}",
            STANDARD.encode(signing.verifying_key().to_bytes())
        );
        let config = serde_json::json!({
            "scheme": "standard_webhooks",
            "secrets": [{"id": "hmac", "value": sv["secret"]}],
            "public_keys": [{"id": "ed", "value": whpk}],
        });
        let p = policy(&config.to_string());
        let id = sv["webhook-id"].as_str().unwrap();
        let ts = sv["webhook-timestamp"].as_str().unwrap();
        let now: u64 = ts.parse().unwrap();
        let body = sv["payload"].as_str().unwrap().as_bytes();
        let valid_v1 = sv["webhook-signature"].as_str().unwrap();
        let signed = [format!("{id}.{ts}.").as_bytes(), body].concat();
        let v1a = format!("v1a,{}", STANDARD.encode(signing.sign(&signed).to_bytes()));
        let forged_v1a = format!(
            "v1a,{}",
            STANDARD.encode(signing.sign(b"something else").to_bytes())
        );
        let forged_v1 = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        // v1a alone, under the public key.
        let ok = check(&p, &sw_request("webhook", id, ts, &v1a), body, now).unwrap();
        assert_eq!(p.key_id(ok.key_index), Some("ed"));
        assert_eq!(ok.replay_id, id);
        // A valid v1 next to a forged v1a passes (any valid entry), and the reverse.
        for header in [
            format!("{forged_v1a} {valid_v1}"),
            format!("{forged_v1} {v1a}"),
        ] {
            assert!(check(&p, &sw_request("webhook", id, ts, &header), body, now).is_ok());
        }
        // Only forged entries, of both versions: refused.
        let header = format!("{forged_v1a} {forged_v1}");
        assert_eq!(
            check(&p, &sw_request("webhook", id, ts, &header), body, now).unwrap_err(),
            no_match()
        );
        // An Ed25519 signature under the v1 version is not an HMAC, and the body is signed.
        let disguised = v1a.replacen("v1a,", "v1,", 1);
        assert!(check(&p, &sw_request("webhook", id, ts, &disguised), body, now).is_err());
        assert!(check(&p, &sw_request("webhook", id, ts, &v1a), b"{}", now).is_err());
        // v1a when only secrets are configured: ignored, as the official libraries do.
        let hmac_only = policy(
            &serde_json::json!({"scheme": "standard_webhooks", "secrets": [{"id": "hmac", "value": sv["secret"]}]})
                .to_string(),
        );
        assert_eq!(
            check(&hmac_only, &sw_request("webhook", id, ts, &v1a), body, now).unwrap_err(),
            no_match()
        );
        // Many entries: refused before any verification.
        let many = [forged_v1; MAX_SIGNATURES].join(" ") + " " + valid_v1;
        assert_eq!(
            check(&p, &sw_request("webhook", id, ts, &many), body, now)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        let enough = [forged_v1; MAX_SIGNATURES - 1].join(" ") + " " + valid_v1;
        assert!(check(&p, &sw_request("webhook", id, ts, &enough), body, now).is_ok());
        // Svix-branded headers.
        let ok = check(&p, &sw_request("svix", id, ts, valid_v1), body, now).unwrap();
        assert_eq!(ok.replay_id, id);
        assert!(check(&p, &sw_request("svix", id, ts, &v1a), body, now).is_ok());
        // One family is read as a whole: a webhook- signature with only svix- companions lacks
        // its id and timestamp.
        let mixed = request(
            "POST",
            "/",
            &[
                ("svix-id", id),
                ("svix-timestamp", ts),
                ("webhook-signature", valid_v1),
            ],
        );
        assert_eq!(
            check(&p, &mixed, body, now).unwrap_err().code(),
            "malformed_signature"
        );
        let none = request("POST", "/", &[("svix-id", id), ("svix-timestamp", ts)]);
        assert_eq!(
            check(&p, &none, body, now).unwrap_err(),
            Reject::Missing("Webhook-Signature".into())
        );
    }

    #[test]
    fn custom_header_with_several_signatures() {
        let v = vectors("standard_webhooks.json");
        let sv = &v["signing_vector"];
        // Standard Webhooks written as `custom`: the rotation header of the issue.
        let config = serde_json::json!({
            "scheme": "custom",
            "secrets": [{"id": "k", "value": sv["secret"], "encoding": "base64"}],
            "custom": {"signature_header": "webhook-signature", "signature_prefix": "v1,",
                       "encoding": "base64", "timestamp_header": "webhook-timestamp",
                       "id_header": "webhook-id", "signed_payload": "{id}.{timestamp}.{body}"},
        });
        let p = policy(&config.to_string());
        let id = sv["webhook-id"].as_str().unwrap();
        let ts = sv["webhook-timestamp"].as_str().unwrap();
        let now: u64 = ts.parse().unwrap();
        let body = sv["payload"].as_str().unwrap().as_bytes();
        let valid = sv["webhook-signature"].as_str().unwrap();
        let forged = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        for header in [
            format!("{forged} {valid}"),
            format!("{valid} {forged}"),
            format!("v1a,AAAA {valid}"),
            format!("  {valid}  "),
        ] {
            let ok = check(&p, &sw_request("webhook", id, ts, &header), body, now);
            assert_eq!(ok.unwrap().replay_id, id, "{header}");
        }
        assert_eq!(
            check(
                &p,
                &sw_request("webhook", id, ts, &format!("{forged} {forged}")),
                body,
                now
            )
            .unwrap_err(),
            no_match()
        );
        assert_eq!(
            check(&p, &sw_request("webhook", id, ts, "v2,AAAA"), body, now)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        // Comma-separated hex signatures (`sha256=<hex>,sha256=<hex>`).
        let config = serde_json::json!({
            "scheme": "custom", "secrets": [{"id": "k", "value": "s"}],
            "custom": {"signature_header": "x-sig", "signature_prefix": "sha256=",
                       "signature_separator": ","},
        });
        let p = policy(&config.to_string());
        let good = hex::encode(crypto::mac(Algorithm::Sha256, b"s", &[b"hi"]));
        let bad = hex::encode([0u8; 32]);
        let header = format!("sha256={bad}, sha256={good}");
        assert!(check(&p, &request("POST", "/", &[("x-sig", &header)]), b"hi", 0).is_ok());
        // A separator that appears in the prefix could never split the header.
        let e = config::parse(
            br#"{"scheme": "custom", "secrets": [{"id": "k", "value": "s"}],
                 "custom": {"signature_header": "x-sig", "signature_prefix": "v1,", "signature_separator": ","}}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "custom.signature_separator");
    }

    #[test]
    fn discord_ed25519_over_timestamp_and_body() {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let public_hex = hex::encode(signing.verifying_key().to_bytes());
        let p = policy(
            &serde_json::json!({"scheme": "discord", "public_keys": [{"id": "app", "value": public_hex}]})
                .to_string(),
        );
        assert_eq!(p.scheme.name(), "discord");
        let body = br#"{"type": 1}"#;
        let ts = "1700000000";
        let sig = hex::encode(signing.sign(&[ts.as_bytes(), body].concat()).to_bytes());
        let req = |sig: &str, ts: &str| {
            request(
                "POST",
                "/interactions",
                &[("x-signature-ed25519", sig), ("x-signature-timestamp", ts)],
            )
        };
        let ok = check(&p, &req(&sig, ts), body, 1_700_000_000).unwrap();
        assert_eq!(p.key_id(ok.key_index), Some("app"));
        assert_eq!(
            ok.replay_id,
            hex::encode(crypto::sha256(&[ts.as_bytes(), body].concat()))
        );
        assert_eq!(
            check(&p, &req(&sig, ts), br#"{"type": 2}"#, 1_700_000_000).unwrap_err(),
            no_match()
        );
        assert_eq!(
            check(&p, &req(&sig, "1700000001"), body, 1_700_000_001).unwrap_err(),
            no_match()
        );
        assert_eq!(
            check(&p, &req(&sig, ts), body, 1_700_000_301).unwrap_err(),
            Reject::Stale
        );
        assert_eq!(
            check(&p, &req("abcd", ts), body, 1_700_000_000)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        // Another key's signature.
        let other = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        let forged = hex::encode(other.sign(&[ts.as_bytes(), body].concat()).to_bytes());
        assert_eq!(
            check(&p, &req(&forged, ts), body, 1_700_000_000).unwrap_err(),
            no_match()
        );
    }

    #[test]
    fn gitlab_token_compared_with_each_secret() {
        let p = policy(
            r#"{"scheme": "gitlab", "secrets": [{"id": "new", "value": "tok-new"}, {"id": "old", "value": "tok-old"}]}"#,
        );
        assert_eq!(p.scheme.name(), "gitlab");
        let req = |token: &str| {
            request(
                "POST",
                "/",
                &[("X-Gitlab-Token", token), ("X-Gitlab-Event-UUID", "u1")],
            )
        };
        assert_eq!(check(&p, &req("tok-old"), b"{}", 0).unwrap().key_index, 1);
        // Refused at the header phase, before any body: wrong, prefix, longer, empty.
        for bad in ["tok-ol", "tok-oldx", "TOK-OLD", "tok"] {
            assert_eq!(
                prepare(&p, &req(bad), 0).unwrap_err().code(),
                "invalid_signature",
                "{bad}"
            );
        }
        assert_eq!(
            prepare(&p, &request("POST", "/", &[]), 0).unwrap_err(),
            Reject::Missing("X-Gitlab-Token".into())
        );
        // The replay id is a keyed hash of the body: the same whichever token, per body.
        let a = check(&p, &req("tok-new"), b"{}", 0).unwrap().replay_id;
        assert_eq!(a, check(&p, &req("tok-old"), b"{}", 0).unwrap().replay_id);
        assert_ne!(a, check(&p, &req("tok-new"), b"{ }", 0).unwrap().replay_id);
    }

    #[test]
    fn twilio_url_and_sorted_form_fields() {
        use hmac::Mac;
        let p = policy(
            r#"{"scheme": "twilio", "secrets": [{"id": "tw", "value": "12345"}],
                "twilio": {"public_url": "https://mycompany.com/"}}"#,
        );
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        // Twilio's documented construction, written out independently.
        let signed = format!(
            "{url}CallSidCA1234567890ABCDECaller+12349013030Digits1234From+12349013030To+18005551212"
        );
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"12345").unwrap();
        mac.update(signed.as_bytes());
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        let body = b"To=%2B18005551212&From=%2B12349013030&Digits=1234&Caller=%2B12349013030&CallSid=CA1234567890ABCDE";
        let req = |sig: &str, path: &str| request("POST", path, &[("X-Twilio-Signature", sig)]);
        assert!(check(&p, &req(&sig, "/myapp.php?foo=1&bar=2"), body, 0).is_ok());
        // Another path or query, a changed field, an added field: refused.
        assert_eq!(
            check(&p, &req(&sig, "/myapp.php?foo=1&bar=3"), body, 0).unwrap_err(),
            no_match()
        );
        assert_eq!(
            check(&p, &req(&sig, "/other.php?foo=1&bar=2"), body, 0).unwrap_err(),
            no_match()
        );
        let changed = String::from_utf8_lossy(body).replace("Digits=1234", "Digits=9999");
        assert_eq!(
            check(
                &p,
                &req(&sig, "/myapp.php?foo=1&bar=2"),
                changed.as_bytes(),
                0
            )
            .unwrap_err(),
            no_match()
        );
        let added = [&body[..], b"&Extra=1"].concat();
        assert_eq!(
            check(&p, &req(&sig, "/myapp.php?foo=1&bar=2"), &added, 0).unwrap_err(),
            no_match()
        );
        // A JSON body is signed through bodySHA256 in the URL.
        let json = br#"{"a": 1}"#;
        let path = format!("/json?bodySHA256={}", hex::encode(crypto::sha256(json)));
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"12345").unwrap();
        mac.update(format!("https://mycompany.com{path}").as_bytes());
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        assert!(check(&p, &req(&sig, &path), json, 0).is_ok());
        assert_eq!(
            check(&p, &req(&sig, &path), br#"{"a": 2}"#, 0)
                .unwrap_err()
                .code(),
            "invalid_signature"
        );
        // public_url is required, and only scheme and host.
        for (json, path) in [
            (
                r#"{"scheme": "twilio", "secrets": [{"id": "tw", "value": "1"}]}"#,
                "twilio",
            ),
            (
                r#"{"scheme": "twilio", "secrets": [{"id": "tw", "value": "1"}], "twilio": {"public_url": "https://x.com/hooks"}}"#,
                "twilio.public_url",
            ),
            (
                r#"{"scheme": "twilio", "secrets": [{"id": "tw", "value": "1"}], "twilio": {"public_url": "x.com"}}"#,
                "twilio.public_url",
            ),
        ] {
            assert_eq!(
                config::parse(json.as_bytes()).unwrap_err().path,
                path,
                "{json}"
            );
        }
    }

    #[test]
    fn twitch_eventsub_signature_and_rfc3339_timestamp() {
        use hmac::Mac;
        let p = policy(r#"{"scheme": "twitch", "secrets": [{"id": "tw", "value": "s3cRe7"}]}"#);
        let (id, ts) = (
            "e76c6bd4-55c9-4987-8304-da1588d8988b",
            "2019-11-16T10:11:12.634234626Z",
        );
        let body = br#"{"subscription": {"type": "channel.follow"}}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cRe7").unwrap();
        mac.update(format!("{id}{ts}").as_bytes());
        mac.update(body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let req = |id: &str, ts: &str| {
            request(
                "POST",
                "/eventsub",
                &[
                    ("Twitch-Eventsub-Message-Id", id),
                    ("Twitch-Eventsub-Message-Timestamp", ts),
                    ("Twitch-Eventsub-Message-Signature", &sig),
                ],
            )
        };
        let now = 1_573_899_072; // 2019-11-16T10:11:12Z
        assert_eq!(check(&p, &req(id, ts), body, now).unwrap().replay_id, id);
        assert_eq!(
            check(&p, &req("other", ts), body, now).unwrap_err(),
            no_match()
        );
        assert_eq!(
            check(&p, &req(id, ts), body, now + 301).unwrap_err(),
            Reject::Stale
        );
        for bad in [
            "1573899072",
            "2019-11-16 10:11:12Z",
            "2019-11-16T10:11:12+01:00",
            "2019-11-16T10:11:12.Z",
        ] {
            assert_eq!(
                check(&p, &req(id, bad), body, now).unwrap_err().code(),
                "malformed_signature",
                "{bad}"
            );
        }
        assert_eq!(parse_rfc3339("2019-11-16T10:11:12Z", "x").unwrap(), now);
    }
}
