//! Outbound signing (`"mode": "sign"`): the headers that sign a request leaving the mesh, so a
//! service sending webhooks keeps no signing code. GitHub (`X-Hub-Signature-256`), Standard
//! Webhooks (`v1` with the first secret and `v1a` with the first signing key, space-separated
//! when both are configured), RFC 9421 (`hmac-sha256` with the first secret, or `ed25519` with
//! the first signing key, which is preferred; `Content-Digest` when the request has a body).

use crate::config::{Policy, Scheme};
use crate::crypto::{self, Algorithm};
use crate::httpsig;
use crate::verify::Request;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signer;

/// The headers a signer sets (any value the client sent for them is replaced).
pub fn headers_set(scheme: &Scheme) -> &'static [&'static str] {
    match scheme {
        Scheme::Github => &["x-hub-signature-256"],
        Scheme::StandardWebhooks => &["webhook-id", "webhook-timestamp", "webhook-signature"],
        Scheme::HttpSignature(_) => &["signature", "signature-input", "content-digest"],
        _ => &[],
    }
}

/// The message id when the client sent no `webhook-id`: derived from what makes the request
/// unique (Envoy's `x-request-id`), the time and the body.
pub fn message_id(req: &Request, now: u64, body: &[u8]) -> String {
    let request_id = req.header("x-request-id").unwrap_or_default();
    let seed = [
        request_id.as_bytes(),
        b"\n",
        now.to_string().as_bytes(),
        b"\n",
        body,
    ]
    .concat();
    format!("msg_{}", &hex::encode(crypto::sha256(&seed))[..32])
}

/// The signature headers of `req` with `body` at `now` (Unix seconds).
pub fn sign(policy: &Policy, req: &Request, body: &[u8], now: u64) -> Vec<(String, String)> {
    let secret = policy.keys.first();
    let signing = policy.signing_keys.first();
    match &policy.scheme {
        Scheme::Github => secret
            .map(|key| {
                let mac = crypto::mac(Algorithm::Sha256, &key.bytes, &[body]);
                vec![(
                    "x-hub-signature-256".to_string(),
                    format!("sha256={}", hex::encode(mac)),
                )]
            })
            .unwrap_or_default(),
        Scheme::StandardWebhooks => {
            let id = match req.header("webhook-id") {
                Some(id) if !id.trim().is_empty() => id.trim().to_string(),
                _ => message_id(req, now, body),
            };
            let signed = [format!("{id}.{now}.").as_bytes(), body].concat();
            let mut entries = Vec::new();
            if let Some(key) = secret {
                let mac = crypto::mac(Algorithm::Sha256, &key.bytes, &[&signed]);
                entries.push(format!("v1,{}", STANDARD.encode(mac)));
            }
            if let Some(key) = signing {
                let sig = key.key.sign(&signed).to_bytes();
                entries.push(format!("v1a,{}", STANDARD.encode(sig)));
            }
            vec![
                ("webhook-id".to_string(), id),
                ("webhook-timestamp".to_string(), now.to_string()),
                ("webhook-signature".to_string(), entries.join(" ")),
            ]
        }
        Scheme::HttpSignature(_) => http_signature(policy, req, body, now),
        _ => Vec::new(),
    }
}

fn http_signature(policy: &Policy, req: &Request, body: &[u8], now: u64) -> Vec<(String, String)> {
    let (keyid, alg) = match (policy.signing_keys.first(), policy.keys.first()) {
        (Some(key), _) => (key.id.as_str(), "ed25519"),
        (None, Some(key)) => (key.id.as_str(), "hmac-sha256"),
        (None, None) => return Vec::new(),
    };
    let mut covered: Vec<String> = ["@method", "@authority", "@path"]
        .map(String::from)
        .to_vec();
    if req.query().is_some() {
        covered.push("@query".into());
    }
    let mut out = Vec::new();
    let mut signed_req = req.clone();
    signed_req
        .headers
        .retain(|(n, _)| !headers_set(&policy.scheme).contains(&n.as_str()));
    if !body.is_empty() {
        let digest = format!("sha-256=:{}:", STANDARD.encode(crypto::sha256(body)));
        signed_req
            .headers
            .push(("content-digest".into(), digest.clone()));
        out.push(("content-digest".to_string(), digest));
        covered.push("content-digest".into());
    }
    let list: Vec<String> = covered.iter().map(|c| format!("\"{c}\"")).collect();
    let nonce = message_id(req, now, body);
    let params = format!(
        "({});created={now};keyid=\"{keyid}\";alg=\"{alg}\";nonce=\"{nonce}\"",
        list.join(" ")
    );
    let Ok(base) = httpsig::signature_base(&signed_req, &covered, &params) else {
        return Vec::new();
    };
    let signature = match (policy.signing_keys.first(), policy.keys.first()) {
        (Some(key), _) => key.key.sign(base.as_bytes()).to_bytes().to_vec(),
        (None, Some(key)) => crypto::mac(Algorithm::Sha256, &key.bytes, &[base.as_bytes()]),
        (None, None) => return Vec::new(),
    };
    out.push(("signature-input".to_string(), format!("sig1={params}")));
    out.push((
        "signature".to_string(),
        format!("sig1=:{}:", STANDARD.encode(signature)),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{check, policy, request};

    /// What is signed verifies with the same keys in verify mode.
    fn round_trip(sign_config: serde_json::Value, verify_config: serde_json::Value) {
        let signer = crate::config::parse(sign_config.to_string().as_bytes())
            .unwrap()
            .policies
            .default_policy()
            .clone();
        let verifier = policy(&verify_config.to_string());
        let body = br#"{"event": "signed"}"#;
        let mut req = request(
            "POST",
            "/hooks?tenant=1",
            &[("x-request-id", "r-1"), ("webhook-signature", "forged")],
        );
        let headers = sign(&signer, &req, body, 1_700_000_000);
        assert!(!headers.is_empty());
        req.headers
            .retain(|(n, _)| !headers_set(&signer.scheme).contains(&n.as_str()));
        req.headers.extend(headers);
        let ok = check(&verifier, &req, body, 1_700_000_000).unwrap();
        assert!(verifier.key_id(ok.key_index).is_some());
        assert!(check(&verifier, &req, b"{}", 1_700_000_000).is_err());
    }

    #[test]
    fn signed_requests_verify() {
        let seed = [5u8; 32];
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let whsk = format!("whsk_{}", STANDARD.encode(seed));
        let whpk = format!("whpk_{}", STANDARD.encode(key.verifying_key().to_bytes()));
        let sign = |scheme: &str, extra: serde_json::Value| {
            let mut c = serde_json::json!({"mode": "sign", "hold_headers": true, "scheme": scheme});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        round_trip(
            sign(
                "github",
                serde_json::json!({"secrets": [{"id": "s", "value": "gh"}]}),
            ),
            serde_json::json!({"scheme": "github", "secrets": [{"id": "s", "value": "gh"}]}),
        );
        for (signing, verifying) in [
            (
                serde_json::json!({"secrets": [{"id": "s", "value": "whsec_AAECAwQ="}]}),
                serde_json::json!({"secrets": [{"id": "s", "value": "whsec_AAECAwQ="}]}),
            ),
            (
                serde_json::json!({"signing_keys": [{"id": "k", "value": whsk}]}),
                serde_json::json!({"public_keys": [{"id": "k", "value": whpk}]}),
            ),
        ] {
            let mut verify = serde_json::json!({"scheme": "standard_webhooks"});
            for (k, v) in verifying.as_object().unwrap() {
                verify[k] = v.clone();
            }
            round_trip(sign("standard_webhooks", signing.clone()), verify);
            let mut verify = serde_json::json!({"scheme": "http_signature"});
            for (k, v) in verifying.as_object().unwrap() {
                verify[k] = v.clone();
            }
            let signing = match signing.get("secrets") {
                Some(_) => serde_json::json!({"secrets": [{"id": "s", "value": "whsec_AAECAwQ="}]}),
                None => signing,
            };
            let verify = match verify.get("secrets") {
                Some(_) => serde_json::json!({"scheme": "http_signature",
                    "secrets": [{"id": "s", "value": "whsec_AAECAwQ="}]}),
                None => verify,
            };
            round_trip(sign("http_signature", signing), verify);
        }
    }

    #[test]
    fn sign_mode_refusals() {
        for (json, path, reason) in [
            (
                serde_json::json!({"mode": "sign", "scheme": "github", "secrets": [{"id": "s", "value": "x"}]}),
                "hold_headers",
                "needs \"hold_headers\": true",
            ),
            (
                serde_json::json!({"mode": "sign", "hold_headers": true, "scheme": "stripe",
                                   "secrets": [{"id": "s", "value": "x"}]}),
                "scheme",
                "not stripe",
            ),
            (
                serde_json::json!({"mode": "sign", "hold_headers": true, "scheme": "standard_webhooks"}),
                "secrets",
                "secret or signing key",
            ),
            (
                serde_json::json!({"mode": "sign", "hold_headers": true, "scheme": "standard_webhooks",
                                   "signing_keys": [{"id": "k", "value": "whpk_AAAA"}]}),
                "signing_keys[0]",
                "whsk_",
            ),
        ] {
            let e = crate::config::parse(json.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
        // The SigningKey never prints its bytes.
        let c = crate::config::parse(
            serde_json::json!({"mode": "sign", "hold_headers": true, "scheme": "standard_webhooks",
                "signing_keys": [{"id": "k", "value": format!("whsk_{}", STANDARD.encode([1u8; 32]))}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            format!("{:?}", c.policies.default_policy().signing_keys[0]),
            "SigningKey(k, <redacted>)"
        );
        assert!(c.replay.is_none(), "signing remembers nothing");
    }
}
