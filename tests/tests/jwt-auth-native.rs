//! jwt-auth next to Envoy's native jwt_authn in the same Envoy: identity-provider-sized tokens,
//! array and object claims, dotted claim names and two tokens in one request get the same
//! answers (or the documented difference).
//!
//! Tokens are signed in the test with the test-only keys in `tests/fixtures/jwt/keys.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_auth::crypto::sign::sign;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, Envoy, Response, Upstream};

const ISSUER: &str = "https://issuer.example.com";
const AUDIENCE: &str = "api.example.com";

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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rs256(keys: &Value, claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": keys["rsa"]["kid"]});
    sign(
        &keys["rsa"].to_string(),
        &header.to_string(),
        &claims.to_string(),
    )
    .unwrap()
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut base = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn wasm_config(jwks: &str, extra: Value) -> Value {
    let mut config = json!({
        "providers": {"example": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": {"inline_string": jwks},
            "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
            "from_params": ["access_token"],
            "forward_payload_header": "x-jwt-payload",
            "claim_to_headers": [
                {"header_name": "x-jwt-sub", "claim_name": "sub"},
                {"header_name": "x-jwt-groups", "claim_name": "groups"},
                {"header_name": "x-jwt-groups-csv", "claim_name": "groups", "array_format": "comma_separated"},
                {"header_name": "x-jwt-realm", "claim_name": "realm"},
                {"header_name": "x-jwt-realm-roles", "claim_name": "realm.roles"},
                {"header_name": "x-jwt-tenant", "claim_name": "https://example.com/tenant"}
            ]
        }}
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn start() -> (Upstream, Envoy) {
    let keys = keys();
    let jwks = json!({"keys": [public(&keys["rsa"])]}).to_string();
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "jwt-auth-native.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWKS", jwks.clone()),
            ("JWT_CONFIG", wasm_config(&jwks, json!({})).to_string()),
            (
                "JWT_CONFIG_CAPPED",
                wasm_config(&jwks, json!({"max_token_bytes": 16384})).to_string(),
            ),
        ],
    );
    (upstream, envoy)
}

fn get(envoy: &Envoy, listener: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    envoy.client_for(listener).send("GET", path, headers, b"")
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// The upstream's view of a header (repeated lines joined with ", ").
fn seen(r: &Response, name: &str) -> Option<String> {
    let echo: Value = r.json();
    echo["headers"]
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[test]
fn provider_sized_tokens_and_array_claims_match_jwt_authn() {
    let keys = keys();
    let (_upstream, envoy) = start();
    // An Entra-ID-like token: 230 group GUIDs, about 12 KB.
    let groups: Vec<String> = (0..230)
        .map(|i| format!("{i:08x}-1111-4222-8333-{i:012x}"))
        .collect();
    let extra = json!({
        "groups": groups,
        "realm": {"roles": ["reader", "writer"], "level": 3},
        "https://example.com/tenant": "acme",
    });
    let big = rs256(&keys, &claims("alice", extra));
    assert!(big.len() > 11_500, "{}", big.len());

    let wasm = get(&envoy, "main", "/api", &[("authorization", &bearer(&big))]);
    let native = get(
        &envoy,
        "native",
        "/api",
        &[("authorization", &bearer(&big))],
    );
    assert_eq!(wasm.status, 200, "{}", wasm.text());
    assert_eq!(native.status, 200, "{}", native.text());
    // Same headers as jwt_authn: strings as is, arrays and objects as base64 of their JSON.
    for header in [
        "x-jwt-sub",
        "x-jwt-groups",
        "x-jwt-realm-roles",
        "x-jwt-payload",
    ] {
        assert!(seen(&wasm, header).is_some(), "{header}");
        assert_eq!(seen(&wasm, header), seen(&native, header), "{header}");
    }
    // An object: the same JSON, though jwt_authn orders members as its protobuf map does and
    // jwt-auth by name.
    let decoded = |r: &Response| -> Value {
        use base64::Engine;
        let text = seen(r, "x-jwt-realm").unwrap();
        let json = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        serde_json::from_slice(&json).unwrap()
    };
    assert_eq!(decoded(&wasm), decoded(&native));
    assert_eq!(
        decoded(&wasm),
        json!({"roles": ["reader", "writer"], "level": 3})
    );
    // The comma-separated option.
    assert_eq!(seen(&wasm, "x-jwt-groups-csv"), Some(groups.join(",")));
    // A claim name with dots: addressable here, not in jwt_authn (it splits at every dot).
    assert_eq!(seen(&wasm, "x-jwt-tenant").as_deref(), Some("acme"));
    assert_eq!(seen(&native, "x-jwt-tenant"), None);

    // max_token_bytes: the same token over a 16 KiB cap is refused, under it accepted.
    let capped = get(
        &envoy,
        "capped",
        "/api",
        &[("authorization", &bearer(&big))],
    );
    assert_eq!(capped.status, 200, "{}", capped.text());
    let padded = rs256(&keys, &claims("alice", json!({"pad": "x".repeat(12_000)})));
    assert!(padded.len() > 16_384);
    let capped = get(
        &envoy,
        "capped",
        "/api",
        &[("authorization", &bearer(&padded))],
    );
    assert_eq!(capped.status, 401, "{}", capped.text());
    assert_eq!(capped.json()["error"], "token_too_large");
    for listener in ["main", "native"] {
        let r = get(
            &envoy,
            listener,
            "/api",
            &[("authorization", &bearer(&padded))],
        );
        assert_eq!(r.status, 200, "{listener}: {}", r.text());
    }
}

#[test]
fn two_tokens_forward_the_header_tokens_identity_like_jwt_authn() {
    let keys = keys();
    let (_upstream, envoy) = start();
    let alice = rs256(&keys, &claims("alice", json!({})));
    let bob = rs256(&keys, &claims("bob", json!({})));
    let path = format!("/api?access_token={bob}");
    let headers = [("authorization", bearer(&alice))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let wasm = get(&envoy, "main", &path, &headers);
    let native = get(&envoy, "native", &path, &headers);
    assert_eq!(wasm.status, 200, "{}", wasm.text());
    assert_eq!(native.status, 200, "{}", native.text());
    // jwt_authn verifies the parameter token first and the header token last, adding a value
    // per token; the last value is the header token's. jwt-auth sends that one value only.
    assert_eq!(seen(&wasm, "x-jwt-sub").as_deref(), Some("alice"));
    let native_sub = seen(&native, "x-jwt-sub").unwrap();
    assert_eq!(
        native_sub.rsplit(", ").next(),
        Some("alice"),
        "{native_sub}"
    );
    // A forged second token (one signature character changed in the middle, so the decoded
    // signature differs) fails the request in both.
    let (head, sig) = bob.rsplit_once('.').unwrap();
    let swap = if sig.as_bytes()[10] == b'A' { "B" } else { "A" };
    let forged = format!("{head}.{}{swap}{}", &sig[..10], &sig[11..]);
    let path = format!("/api?access_token={forged}");
    let wasm = get(&envoy, "main", &path, &headers);
    let native = get(&envoy, "native", &path, &headers);
    assert_eq!(wasm.status, 401, "{}", wasm.text());
    assert_eq!(native.status, 401, "{}", native.text());
}
