//! Logs that can be followed and leak nothing, in a real Envoy at `wasm:debug`: every line a
//! filter writes while handling a request ends with that request's `x-request-id`; a request id
//! that could forge a log line is printed as `(invalid)`; and no key, secret, token or signature
//! (right or wrong) appears anywhere in Envoy's log. (credential-inject's secrets and tokens are
//! checked the same way in tests/tests/credential-inject.rs.)

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Upstream};

const API_KEY: &str = "logs-test-api-key-0123456789abcdef";
const WRONG_API_KEY: &str = "logs-test-wrong-key-0123456789abcdef";
const HMAC_SECRET: &str = "logs-test-hmac-secret-0123456789";
const WRONG_HMAC_SECRET: &str = "logs-test-wrong-hmac-secret-01234";

/// Envoy with wasm lines at debug (and Envoy's own at info, whose debug lines print headers).
fn start(template: &str, config_var: &str, config: &Value) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        template,
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            (config_var, config.to_string()),
            ("FIXED_ENV", "unused".into()),
        ],
        EnvoyOptions {
            component_log_level: "wasm:debug".into(),
            ..EnvoyOptions::default()
        },
    );
    (upstream, envoy)
}

/// The filter's log lines written while requests were handled: those ending with a request id.
fn request_lines(log: &str, filter: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("wasmgate {filter}:")) && l.contains("[x-request-id="))
        .map(str::to_string)
        .collect()
}

/// Fails naming the secret when Envoy's log holds it.
fn assert_absent(log: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "{secret} appears in Envoy's log:\n{log}"
        );
    }
}

#[test]
fn key_auth_lines_carry_the_request_id_and_no_key() {
    let config = json!({
        "clients": [{"id": "team-a", "keys": [{"secret": {"value": API_KEY}}]}],
        "key_sources": [{"header": "x-api-key"}]
    });
    let (_upstream, envoy) = start("key-auth.yaml", "KEY_AUTH_CONFIG", &config);
    let client = envoy.client();
    let good = client.send(
        "GET",
        "/a",
        &[("x-api-key", API_KEY), ("x-request-id", "req-good-1")],
        b"",
    );
    assert_eq!(good.status, 200, "{}", good.text());
    let bad = client.send(
        "GET",
        "/a",
        &[("x-api-key", WRONG_API_KEY), ("x-request-id", "req-bad-2")],
        b"",
    );
    assert_eq!(bad.status, 401);
    let forged = client.send(
        "GET",
        "/a",
        &[("x-api-key", WRONG_API_KEY), ("x-request-id", "a b\"c")],
        b"",
    );
    assert_eq!(forged.status, 401);

    let log = envoy.log();
    let lines = request_lines(&log, "key-auth");
    for id in ["req-good-1", "req-bad-2"] {
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!("[x-request-id={id}]"))),
            "no key-auth line for {id}:\n{log}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("[x-request-id=(invalid)]")),
        "the unprintable id is not shown as invalid:\n{log}"
    );
    assert_absent(&log, &[API_KEY, WRONG_API_KEY]);
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn hmac_auth_lines_carry_the_request_id_and_no_secret_or_signature() {
    let config = json!({
        "scheme": "github",
        "secrets": [{"id": "current", "value": HMAC_SECRET}]
    });
    let (_upstream, envoy) = start("hmac-auth.yaml", "HMAC_CONFIG", &config);
    let client = envoy.client();
    let body = br#"{"action": "opened"}"#;
    let good_signature = github_signature(HMAC_SECRET, body);
    let wrong_signature = github_signature(WRONG_HMAC_SECRET, body);
    for (signature, delivery, status) in [
        (&good_signature, "d-1", 200),
        (&wrong_signature, "d-2", 401),
    ] {
        let response = client.send(
            "POST",
            "/hook",
            &[
                ("content-type", "application/json"),
                ("x-hub-signature-256", signature),
                ("x-github-delivery", delivery),
                ("x-github-event", "pull_request"),
                ("x-request-id", &format!("req-{delivery}")),
            ],
            body,
        );
        assert_eq!(response.status, status, "{}", response.text());
    }
    let log = envoy.log();
    assert!(
        request_lines(&log, "hmac-auth")
            .iter()
            .any(|l| l.ends_with("[x-request-id=req-d-2]")),
        "the rejection is not logged with its request id:\n{log}"
    );
    let hex_of = |s: &str| s.trim_start_matches("sha256=").to_string();
    assert_absent(
        &log,
        &[
            HMAC_SECRET,
            WRONG_HMAC_SECRET,
            &hex_of(&good_signature),
            &hex_of(&wrong_signature),
        ],
    );
}

#[test]
fn jwt_auth_lines_carry_the_request_id_and_no_token() {
    let keys: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/jwt/keys.json")).unwrap(),
    )
    .unwrap();
    let jwk = &keys["hmac"];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]});
    let claims = json!({"iss": "https://issuer.example.com", "sub": "alice", "exp": now + 3600});
    let token =
        jwt_auth::crypto::sign::sign(&jwk.to_string(), &header.to_string(), &claims.to_string())
            .unwrap();
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let config = json!({
        "providers": {"example": {
            "issuer": "https://issuer.example.com",
            "local_jwks": {"inline_string": json!({"keys": [jwk]}).to_string()}
        }}
    });
    let (_upstream, envoy) = start("jwt-auth.yaml", "JWT_CONFIG", &config);
    let client = envoy.client();
    for (t, id, status) in [(&token, "req-jwt-1", 200), (&tampered, "req-jwt-2", 401)] {
        let response = client.send(
            "GET",
            "/api",
            &[
                ("authorization", &format!("Bearer {t}")),
                ("x-request-id", id),
            ],
            b"",
        );
        assert_eq!(response.status, status, "{}", response.text());
    }
    let log = envoy.log();
    assert!(
        request_lines(&log, "jwt-auth")
            .iter()
            .any(|l| l.ends_with("[x-request-id=req-jwt-2]")),
        "the denial is not logged with its request id:\n{log}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert_absent(
        &log,
        &[&token, &tampered, signature, jwk["k"].as_str().unwrap()],
    );
}
