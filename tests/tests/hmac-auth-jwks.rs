//! hmac-auth end-to-end with RFC 9421 public keys from a JWKS URL (`jwks`): the scriptable
//! upstream serves the key set through the `idp` cluster, requests are signed by the
//! `http-message-signatures` npm library (`tests/webhook-senders/sign.js`), and a real Envoy with
//! two workers fetches the set once, selects keys by `keyid` = `kid`, picks up a rotated key
//! with one refetch, refuses a removed key, never fetches per forged `kid`, refuses a key used
//! with another algorithm than its type, and keeps the last good keys when fetches fail or
//! return a set over its bounds.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Response, Upstream};

const KEY_ID_HEADER: &str = "x-wasmgate-key-id";
const JWKS_PATH: &str = "/idp/jwks.json";
const REQUESTS: &str = "wasmgate_hmac_auth_requests_total";
const FETCHES: &str = "wasmgate_hmac_auth_jwks_fetches_total";

fn senders_dir() -> PathBuf {
    repo_root().join("tests/webhook-senders")
}

/// Installs the senders' libraries once (`npm ci`) when one is missing.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let manifest: Value = serde_json::from_str(
            &std::fs::read_to_string(senders_dir().join("package.json")).unwrap(),
        )
        .unwrap();
        let installed = manifest["dependencies"]
            .as_object()
            .unwrap()
            .keys()
            .all(|name| senders_dir().join("node_modules").join(name).is_dir());
        if !installed {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(senders_dir())
                .status()
                .expect("npm (Node.js) is needed for the senders' libraries");
            assert!(status.success(), "npm ci failed in tests/webhook-senders");
        }
    });
}

/// One job for `sign.js`, its JSON answer.
fn node(job: Value) -> Value {
    install();
    let output = Command::new("node")
        .arg(senders_dir().join("sign.js"))
        .arg(job.to_string())
        .output()
        .expect("node (Node.js) is needed for the senders' libraries");
    assert!(
        output.status.success(),
        "sign.js {job}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Fresh key pairs (Ed25519, P-256, RSA) from Node's crypto.
fn keys() -> Value {
    node(json!({"kind": "keys"}))
}

/// The public JWKs of a key pair set under these `kid`s, as an identity provider publishes them.
fn ed_jwk(keys: &Value, kid: &str) -> Value {
    let public = hex::decode(keys["ed25519"]["hex"].as_str().unwrap()).unwrap();
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public), "kid": kid,
           "use": "sig", "alg": "EdDSA"})
}

fn with_kid(mut jwk: Value, kid: &str, alg: &str) -> Value {
    jwk["kid"] = kid.into();
    jwk["alg"] = alg.into();
    jwk
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn config(cache_duration: &str) -> Value {
    json!({
        "scheme": "http_signature",
        "http_signature": {"required_components": ["@method", "@authority", "@path", "content-digest"]},
        "jwks": {"uri": format!("http://idp.test{JWKS_PATH}"), "cluster": "idp",
                 "timeout": "2s", "cache_duration": cache_duration, "max_bytes": 8192},
        "key_id_header": KEY_ID_HEADER,
        "hold_headers": true,
        "max_body_bytes": 4096,
    })
}

fn start(upstream: &Upstream, config: &Value) -> Envoy {
    Envoy::start_with(
        "hmac-auth-hold.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config.to_string()),
            ("FIXED_ENV", "unused".to_string()),
        ],
        EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::default()
        },
    )
}

/// POSTs `body` to `/orders` signed by `http-message-signatures` with `private` as `keyid`.
fn post_signed(envoy: &Envoy, alg: &str, private: &Value, keyid: &str, nonce: &str) -> Response {
    let body = format!(r#"{{"order": "{nonce}"}}"#);
    let digest = format!(
        "sha-256=:{}:",
        STANDARD.encode(Sha256::digest(body.as_bytes()))
    );
    let port = envoy.port("main");
    let signed = node(json!({
        "kind": "httpsig", "alg": alg, "key": private, "keyid": keyid, "method": "POST",
        "url": format!("http://127.0.0.1:{port}/orders"),
        "headers": {"content-digest": digest},
        "fields": ["@method", "@authority", "@path", "content-digest"],
        "ts": now(), "nonce": nonce,
    }));
    let headers = [
        ("content-digest", digest.as_str()),
        ("signature", signed["signature"].as_str().unwrap()),
        (
            "signature-input",
            signed["signature-input"].as_str().unwrap(),
        ),
    ];
    envoy
        .client()
        .send("POST", "/orders", &headers, body.as_bytes())
}

#[track_caller]
fn assert_forwarded(response: &Response, kid: &str, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(response.json()["headers"][KEY_ID_HEADER], kid, "{what}");
}

#[track_caller]
fn assert_refused(response: &Response, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.text());
    assert_eq!(response.json()["error"], "invalid_signature", "{what}");
}

fn poll_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen within {limit:?}");
}

#[test]
fn keys_from_a_jwks_url_rotation_removal_and_forged_kids() {
    let first = keys();
    let next = keys();
    let upstream = Upstream::start();
    upstream.set_document(
        JWKS_PATH,
        &jwks(&[
            ed_jwk(&first, "ed-1"),
            with_kid(first["p256"]["jwk"].clone(), "ec-1", "ES256"),
            with_kid(first["rsa"]["jwk"].clone(), "rsa-1", "PS512"),
        ]),
    );
    let envoy = start(&upstream, &config("10m"));

    // Each algorithm, its key selected by kid; the first request waits for the first fetch.
    let cases = [
        ("ed25519", &first["ed25519"]["private_pem"], "ed-1"),
        ("ecdsa-p256-sha256", &first["p256"]["private_pem"], "ec-1"),
        ("rsa-pss-sha512", &first["rsa"]["private_pem"], "rsa-1"),
    ];
    for (alg, private, kid) in cases {
        assert_forwarded(&post_signed(&envoy, alg, private, kid, alg), kid, alg);
    }
    assert_eq!(
        upstream.document_fetches(JWKS_PATH),
        1,
        "one fetch for the whole Envoy process (2 workers)"
    );

    // Rotation: ed-2 published, ed-1 removed. A signature by ed-2 asks for one refetch and
    // passes; ed-1's signatures are refused from then on.
    upstream.set_document(
        JWKS_PATH,
        &jwks(&[
            ed_jwk(&next, "ed-2"),
            with_kid(first["p256"]["jwk"].clone(), "ec-1", "ES256"),
        ]),
    );
    let ed2 = &next["ed25519"]["private_pem"];
    assert_forwarded(
        &post_signed(&envoy, "ed25519", ed2, "ed-2", "rotated"),
        "ed-2",
        "rotated key",
    );
    assert_eq!(upstream.document_fetches(JWKS_PATH), 2);
    let ed1 = &first["ed25519"]["private_pem"];
    assert_refused(
        &post_signed(&envoy, "ed25519", ed1, "ed-1", "removed"),
        "removed key",
    );

    // Forged kids: refused, and no fetch each (one refetch per 30 s at most, just used).
    for i in 0..10 {
        let kid = format!("forged-{i}");
        assert_refused(
            &post_signed(&envoy, "ed25519", ed2, &kid, &kid),
            "unknown kid",
        );
    }
    // The P-256 key's kid with an Ed25519 signature: the JWK's type decides the algorithm.
    assert_refused(
        &post_signed(&envoy, "ed25519", ed2, "ec-1", "confused"),
        "Ed25519 signature under an EC key's kid",
    );
    assert_eq!(
        upstream.document_fetches(JWKS_PATH),
        2,
        "no fetch per forged kid"
    );

    assert_eq!(envoy.metric(REQUESTS, &[("outcome", "verified")]), 4);
    assert_eq!(
        envoy.metric(
            REQUESTS,
            &[("outcome", "rejected"), ("reason", "invalid_signature")]
        ),
        12
    );
    assert_eq!(
        envoy.metric(
            "wasmgate_hmac_auth_key_matched_total",
            &[("key_id", "jwks:idp.test")]
        ),
        4
    );
    assert_eq!(envoy.metric(FETCHES, &[("outcome", "success")]), 2);
    assert!(!envoy.log().contains("panicked"));
}

#[test]
fn failed_or_oversize_fetches_keep_the_last_good_keys() {
    let keys = keys();
    let upstream = Upstream::start();
    upstream.set_document(JWKS_PATH, &jwks(&[ed_jwk(&keys, "ed-1")]));
    let envoy = start(&upstream, &config("1s"));
    let private = &keys["ed25519"]["private_pem"];
    assert_forwarded(
        &post_signed(&envoy, "ed25519", private, "ed-1", "first"),
        "ed-1",
        "fetched",
    );
    // The identity provider fails, then serves a set over max_bytes (8192).
    upstream.set_document_status(JWKS_PATH, 503, "{}");
    poll_until("a failed refresh", Duration::from_secs(20), || {
        envoy.metric(FETCHES, &[("outcome", "failure")]) >= 1
    });
    assert_forwarded(
        &post_signed(&envoy, "ed25519", private, "ed-1", "during-outage"),
        "ed-1",
        "last good keys after a failed fetch",
    );
    let padding = "x".repeat(9000);
    let oversize = json!({"keys": [ed_jwk(&keys, "ed-1")], "padding": padding}).to_string();
    upstream.set_document(JWKS_PATH, &oversize);
    // One fetch at a time: once a second fetch started, the first one (oversize) was refused.
    let fetches = upstream.document_fetches(JWKS_PATH);
    poll_until("an oversize refresh", Duration::from_secs(60), || {
        upstream.document_fetches(JWKS_PATH) >= fetches + 2
    });
    assert_forwarded(
        &post_signed(&envoy, "ed25519", private, "ed-1", "after-oversize"),
        "ed-1",
        "last good keys after an oversize set",
    );
    let age = envoy.stats().into_iter().find(|(name, _)| {
        wasmgate_core::metrics::parse_metric_name(name).0 == "wasmgate_hmac_auth_jwks_age_seconds"
    });
    assert!(age.is_some(), "the key set's age is a gauge");
    assert!(!envoy.log().contains("panicked"));
}
