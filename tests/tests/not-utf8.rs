//! Header values that are not UTF-8, through every filter in a real Envoy.
//!
//! HTTP allows obs-text bytes (0x80-0xFF, Latin-1 say) in header values and Envoy hands them to
//! Wasm filters as they are. The proxy-wasm SDK's text getters panic on them, and a panic fails
//! every later stream of that worker, so one crafted header would take a worker down. Every
//! filter reads headers through `wasmgate_core::host`, which replaces such bytes instead. Each
//! test sends the bytes, checks the filter's own answer where it gives one, then checks that the
//! VM still serves and never panicked. (transform's test is in `transform.rs`.)

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::json;
use wasmgate_e2e::{Envoy, EnvoyOptions, Upstream};

/// Sends one HTTP/1.1 request with `extra` header lines to the main listener; returns its status.
fn raw_status(envoy: &Envoy, method: &str, path: &str, extra: &[u8]) -> u16 {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    request.extend_from_slice(extra);
    request.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
    wasmgate_e2e::raw_status(envoy.port("main"), &request)
}

fn assert_alive(envoy: &Envoy, path: &str, expected: u16) {
    let status = envoy.client().get(path).status;
    assert_eq!(status, expected, "the VM still serves\n{}", envoy.log());
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}

#[test]
fn jwt_auth_answers_401_to_a_token_that_is_not_utf8() {
    let jwks =
        json!({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]});
    let config = json!({"providers": {"p": {"issuer": "https://issuer.test",
        "local_jwks": {"inline_string": jwks.to_string()}}}, "requires": {"provider_name": "p"}});
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", config.to_string()),
        ],
    );
    let token = b"Authorization: Bearer caf\xe9.x.y\r\nX-Name: caf\xe9\r\n";
    assert_eq!(raw_status(&envoy, "GET", "/api", token), 401);
    assert_alive(&envoy, "/api", 401);
}

#[test]
fn key_auth_answers_401_to_a_key_that_is_not_utf8() {
    let config = json!({"clients": [{"id": "a", "keys": [{"secret": {"value": "caf\u{FFFD}-key-0123456789"}}]}],
        "key_sources": [{"header": "x-api-key"}, {"cookie": "k"}]});
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "key-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("KEY_AUTH_CONFIG", config.to_string()),
        ],
    );
    // The configured key holds U+FFFD; bytes that are not UTF-8 read as U+FFFD must not match it.
    let key = b"X-Api-Key: caf\xe9-key-0123456789\r\nCookie: a=\xff; k=caf\xe9-key-0123456789\r\n";
    assert_eq!(raw_status(&envoy, "GET", "/api", key), 401);
    assert_alive(&envoy, "/api", 401);
}

#[test]
fn hmac_auth_answers_400_to_a_signature_that_is_not_utf8() {
    let config = json!({"scheme": "github", "secrets": [{"id": "a", "value": "webhook-secret"}]});
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "hmac-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config.to_string()),
            ("FIXED_ENV", "unused".to_string()),
        ],
        EnvoyOptions::default(),
    );
    let signature = b"X-Hub-Signature-256: sha256=caf\xe9\r\nX-GitHub-Delivery: \xff\r\n";
    assert_eq!(
        raw_status(&envoy, "POST", "/hook", signature),
        400,
        "malformed signature"
    );
    assert_alive(&envoy, "/hook", 401);
}

#[test]
fn rate_limit_keys_on_a_value_that_is_not_utf8() {
    let config = json!({"rules": [{"match": {"headers": {"x-name": {"present": true}}},
        "key": [{"header": "x-name"}],
        "limits": [{"name": "l", "requests": 1, "window": "1h", "algorithm": "token_bucket"}]}]});
    let text = config.to_string();
    let envoy = Envoy::start("rate-limit-direct.yaml", &[("CONFIG", text)]);
    let name = b"X-Name: caf\xe9\r\n";
    assert_eq!(raw_status(&envoy, "GET", "/", name), 200);
    assert_eq!(raw_status(&envoy, "GET", "/", name), 429, "the same key");
    assert_alive(&envoy, "/", 200);
}

#[test]
fn retry_passes_a_value_that_is_not_utf8() {
    let config = json!({"mode": "router", "max_retries": 1, "retry_on": ["5xx"]});
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "retry.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("RETRY_CONFIG", config.to_string()),
        ],
    );
    // The test upstream itself refuses such bytes, so only the filter's survival is checked.
    raw_status(&envoy, "GET", "/api", b"Idempotency-Key: caf\xe9\r\n");
    assert_alive(&envoy, "/api", 200);
}
