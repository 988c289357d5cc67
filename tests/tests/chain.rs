//! A chain in a real Envoy (docs/CONVENTIONS.md "Chains"): one plugin of wasmgate.wasm running
//! jwt-auth, then rate-limit keyed on the verified subject, then transform (headers and a JSON
//! body edit), on one request view. The first request waits for the remote JWKS while its body
//! arrives; nothing reaches the upstream before every stage passed it. hmac-auth then transform:
//! a webhook verified on the body as sent, then edited. A stage's invalid configuration is
//! refused at load with its JSON path.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use hmac::{Hmac, Mac};
use jwt_auth::crypto::sign::sign;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Response, Scripted, Upstream};

const ISSUER: &str = "https://issuer.example.com";
/// Requests each subject may make.
const LIMIT: usize = 3;

fn keys() -> Value {
    let path = repo_root().join("tests/fixtures/jwt/keys.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn public(jwk: &Value) -> Value {
    let mut key = jwk.clone();
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        key.as_object_mut().unwrap().remove(private);
    }
    key
}

fn token(jwk: &Value, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]});
    let claims = json!({"iss": ISSUER, "sub": sub, "exp": now + 3600});
    sign(&jwk.to_string(), &header.to_string(), &claims.to_string()).unwrap()
}

fn jwt_auth() -> Value {
    json!({
        "providers": {"idp": {
            "issuer": ISSUER,
            "remote_jwks": {
                "http_uri": {"uri": "http://jwks.test/jwks.json", "cluster": "jwks", "timeout": "5s"},
                "cache_duration": "10m"
            },
            "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}]
        }}
    })
}

fn chain(rate_limit_window: &str) -> Value {
    json!({"stages": [
        {"filter": "jwt-auth", "config": jwt_auth()},
        {"filter": "rate-limit", "config": {"rules": [{"key": [{"header": "x-jwt-sub"}], "limits": [
            {"name": "per-subject", "requests": LIMIT, "window": rate_limit_window,
             "algorithm": "sliding_window"}]}]}},
        {"filter": "transform", "config": {"request": {
            "headers": {"set": {"x-gateway": "wasmgate"}},
            "body": {"json": {"set": {"/meta/source": "gateway"}}}
        }}},
    ]})
}

fn start(config: &Value, upstream: &Upstream) -> Envoy {
    Envoy::start_with(
        "chain.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("CHAIN_CONFIG", config.to_string()),
        ],
        EnvoyOptions::default(),
    )
}

fn post(envoy: &Envoy, authorization: Option<&str>) -> Response {
    let mut headers = vec![("content-type", "application/json")];
    let bearer = authorization.map(|t| format!("Bearer {t}"));
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    envoy.client().send(
        "POST",
        "/orders",
        &headers,
        br#"{"order": 12345678901234567890}"#,
    )
}

#[test]
fn a_verified_subject_is_limited_and_its_body_edited_once_the_keys_arrive() {
    let keys = keys();
    let upstream = Upstream::start();
    // The JWKS is the first scripted response, late: the first request waits for it while its
    // body arrives.
    upstream.script([Scripted::status(200)
        .body(json!({"keys": [public(&keys["rsa"])]}).to_string())
        .header("content-type", "application/json")
        .delay(Duration::from_millis(1500))]);
    let envoy = start(&chain("1h"), &upstream);
    let alice = token(&keys["rsa"], "alice");

    let first = post(&envoy, Some(&alice));
    assert_eq!(first.status, 200, "{}", first.text());
    let seen = upstream.received();
    let request = seen.last().unwrap();
    assert_eq!(request["headers"]["x-jwt-sub"], "alice");
    assert_eq!(request["headers"]["x-gateway"], "wasmgate");
    assert_eq!(
        request["body"], r#"{"order": 12345678901234567890,"meta": {"source":"gateway"}}"#,
        "transform's edit, the rest of the body as sent"
    );

    let statuses: Vec<u16> = (0..LIMIT)
        .map(|_| post(&envoy, Some(&alice)).status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the subject jwt-auth verified is limited"
    );
    assert_eq!(post(&envoy, Some(&token(&keys["rsa"], "bob"))).status, 200);
    // A client naming another subject in the header jwt-auth sets: jwt-auth removes it, and
    // rate-limit, reading through the chain's view, still keys on the verified alice.
    let spoofed = envoy.client().send(
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {alice}")),
            ("x-jwt-sub", "carol"),
        ],
        br#"{"order": 1}"#,
    );
    assert_eq!(spoofed.status, 429, "{}", spoofed.text());

    let forged = token(&keys["rsa_rotated"], "alice");
    for (authorization, what) in [(None, "no token"), (Some(forged.as_str()), "another key")] {
        let r = post(&envoy, authorization);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    let orders = upstream
        .received()
        .iter()
        .filter(|r| r["path"] == "/orders")
        .count();
    assert_eq!(
        orders,
        LIMIT + 1,
        "only the allowed requests reached the upstream"
    );
    // Each stage counts under its own filter's names, labelled with the chain's plugin name.
    let stats = envoy.stats();
    for filter in ["jwt_auth", "rate_limit", "transform"] {
        let prefix = "plugin=.=edge;.;";
        assert!(
            stats
                .keys()
                .any(|name| name.contains(prefix) && name.contains(&format!("wasmgate_{filter}_"))),
            "{filter}: {stats:?}"
        );
    }
}

#[test]
fn an_invalid_stage_is_refused_at_load_with_its_json_path() {
    let upstream = Upstream::start();
    let failure = std::panic::catch_unwind(|| start(&chain("soon"), &upstream))
        .err()
        .expect("Envoy must refuse the configuration");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains(
            "wasmgate chain: invalid configuration at stages[1].config.rules[0].limits[0].window"
        ),
        "{message}"
    );
}

/// GitHub's signature of `body` with `secret`.
fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn a_webhook_is_verified_on_the_body_as_sent_then_edited() {
    const SECRET: &str = "chain-webhook-secret";
    let upstream = Upstream::start();
    // Both stages ask for the body with the headers going on: their body hooks run in order on
    // the held body, and the upstream gets it only once both passed it.
    let config = json!({"stages": [
        {"filter": "hmac-auth", "config": {"scheme": "github", "secrets": [{"id": "gh", "value": SECRET}]}},
        {"filter": "transform", "config": {
            "request": {"headers": {"set": {"x-gateway": "wasmgate"}},
                        "body": {"json": {"remove": ["/internal"]}}},
            "response": {"headers": {"remove": ["x-upstream-debug"]}}
        }},
    ]});
    let envoy = start(&config, &upstream);
    let body = br#"{"event": "push", "internal": "drop-me"}"#;
    let send = |signature: &str| {
        upstream.script([Scripted::status(200).header("x-upstream-debug", "1")]);
        envoy.client().send(
            "POST",
            "/hooks",
            &[
                ("content-type", "application/json"),
                ("x-github-delivery", "delivery-1"),
                ("x-hub-signature-256", signature),
            ],
            body,
        )
    };
    let r = send(&github_signature(SECRET, body));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-upstream-debug"),
        None,
        "transform's response edit"
    );
    let seen = upstream.received();
    let request = seen.last().unwrap();
    assert_eq!(request["headers"]["x-gateway"], "wasmgate");
    assert_eq!(
        request["body"], r#"{"event": "push"}"#,
        "edited after verification"
    );

    let forged = send(&github_signature("another-secret", body));
    assert_eq!(forged.status, 401, "{}", forged.text());
    assert_eq!(
        upstream.received().len(),
        1,
        "the forged one never reached the upstream"
    );
}
