//! Signature verification as pure functions: [`prepare`] reads the headers (missing, malformed,
//! stale are answered before any body is buffered), [`verify`] checks the HMAC over the body.

use crate::config::{CustomSettings, Part, Policy, Scheme, SignatureEncoding};
use crate::crypto::{self, Algorithm};
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
        /// Signatures offered (any may match).
        candidates: Vec<Vec<u8>>,
        /// Payload template with values already resolved except the body.
        payload: Vec<Piece>,
        /// A message id covered by the signature; `None`: the replay id is derived from the
        /// signed bytes (see [`verify`]).
        replay_id: Option<String>,
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

/// A verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Index of the key that matched in the policy.
    pub key_index: usize,
    /// Replay id (message id, nonce, or the signature).
    pub replay_id: String,
}

/// Reads and checks the signature headers; needs no body.
pub fn prepare(policy: &Policy, req: &Request, now: u64) -> Result<Pending, Reject> {
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
        Scheme::Custom(custom) => prepare_custom(custom, policy, req, now),
        Scheme::HttpSignature(settings) => {
            httpsig::prepare(settings, &policy.keys, req, now, policy.tolerance_secs)
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
    match pending {
        Pending::Simple {
            algorithm,
            candidates,
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
            Err(no_match())
        }
        Pending::HttpSignature(prepared) => httpsig::verify(prepared, &policy.keys, body),
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
    let value = required(req, "webhook-signature")?;
    let id = companion(req, "webhook-id", "webhook-id")?;
    let ts = companion(req, "webhook-timestamp", "webhook-timestamp")?;
    let timestamp = parse_seconds(ts, "webhook-timestamp")?;
    check_time(timestamp, now, policy)?;
    // Only `v1` entries are HMAC signatures; others (`v1a` Ed25519, future versions) are ignored.
    let candidates: Vec<Vec<u8>> = value
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter(|sig| sig.len() == 32)
        .collect();
    if candidates.is_empty() {
        return Err(no_match());
    }
    Ok(simple(
        Algorithm::Sha256,
        candidates,
        vec![
            Piece::Bytes(format!("{id}.{ts}.").into_bytes()),
            Piece::Body,
        ],
        Some(id.to_string()),
    ))
}

fn prepare_custom(
    custom: &CustomSettings,
    policy: &Policy,
    req: &Request,
    now: u64,
) -> Result<Pending, Reject> {
    let value = required(req, &custom.signature_header)?.trim();
    let display = display_name(&custom.signature_header);
    let encoded = value
        .strip_prefix(custom.signature_prefix.as_str())
        .ok_or_else(|| {
            malformed(format!(
                "{display} must start with {:?}.",
                custom.signature_prefix
            ))
        })?;
    let len = crypto::mac(custom.algorithm, b"k", &[]).len();
    let sig = match custom.encoding {
        SignatureEncoding::Hex => decode_hex(encoded, len, &display)?,
        SignatureEncoding::Base64 => decode_base64(encoded, len, &display)?,
    };
    let timestamp = match &custom.timestamp_header {
        Some(h) => {
            let ts = companion(req, h, &display_name(h))?;
            check_time(parse_seconds(ts, &display_name(h))?, now, policy)?;
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
    Ok(simple(custom.algorithm, vec![sig], payload, replay_id))
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
}
