//! examples/api-gateway in a real Envoy: the shipped `envoy.yaml` (only its ports, module
//! directory and upstream address replaced) with tokens minted by the shipped `token.sh`.
//! A token is required, each subject has its own limit (burst 5), a forged `x-jwt-sub` or
//! `x-user-id` changes nothing, and the upstream sees the transformed request.

// Test code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::process::Command;
use wasmgate_e2e::{repo_root, wasm_dir, Envoy, EnvoyOptions, Response, Upstream};

/// The example's own envoy.yaml with free ports, the built modules and the test upstream.
fn example_config(upstream_port: u16) -> String {
    let path = repo_root().join("examples/api-gateway/envoy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let replacements = [
        ("/etc/wasmgate/", format!("{}/", wasm_dir().display())),
        ("address: 0.0.0.0", "address: 127.0.0.1".to_string()),
        ("port_value: 9901", "port_value: 0".to_string()),
        ("port_value: 10000", "port_value: 0".to_string()),
        (
            "address: upstream, port_value: 8080",
            format!("address: 127.0.0.1, port_value: {upstream_port}"),
        ),
    ];
    let mut text = text;
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "examples/api-gateway/envoy.yaml no longer contains {from:?}: update this test"
        );
        text = text.replace(from, &to);
    }
    text
}

fn start() -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start_config(&example_config(upstream.port()), EnvoyOptions::default());
    (upstream, envoy)
}

/// A token from the example's token.sh (the command the README shows).
fn token(subject: &str, lifetime: i64) -> String {
    let script = repo_root().join("examples/api-gateway/token.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(subject)
        .arg(lifetime.to_string())
        .output()
        .expect("bash and openssl");
    assert!(
        output.status.success(),
        "token.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn call(
    envoy: &Envoy,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    let body: &[u8] = if method == "POST" {
        br#"{"item": "book", "submitted_by": "mallory"}"#
    } else {
        b""
    };
    if method == "POST" {
        headers.push(("content-type", "application/json"));
    }
    envoy.client().send(method, path, &headers, body)
}

fn remaining(response: &Response) -> String {
    response
        .header("ratelimit")
        .unwrap_or_else(|| panic!("no RateLimit header: {:?}", response.headers))
        .to_string()
}

fn assert_denied(response: &Response, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

#[test]
fn token_per_subject_limit_and_transformed_request() {
    let (upstream, envoy) = start();
    let alice = token("alice", 3600);
    let bob = token("bob", 3600);

    // Health needs nothing and never reaches the upstream.
    let health = envoy.client().get("/health");
    assert_eq!(health.status, 200);

    // No token, an expired token, a token whose payload was changed: refused before the upstream.
    assert_denied(
        &call(&envoy, "GET", "/api/orders", None, &[]),
        401,
        "missing_token",
    );
    assert_denied(
        &call(
            &envoy,
            "GET",
            "/api/orders",
            Some(&token("alice", -3600)),
            &[],
        ),
        401,
        "token_expired",
    );
    let mut parts: Vec<String> = bob.split('.').map(str::to_string).collect();
    parts[1] = alice.split('.').nth(1).unwrap().to_string();
    assert_denied(
        &call(&envoy, "GET", "/api/orders", Some(&parts.join(".")), &[]),
        401,
        "invalid_signature",
    );
    // A forged identity header without a token is still no token.
    assert_denied(
        &call(
            &envoy,
            "GET",
            "/api/orders",
            None,
            &[("x-jwt-sub", "alice")],
        ),
        401,
        "missing_token",
    );
    assert_eq!(
        upstream.attempts(),
        0,
        "nothing unauthenticated reached the upstream"
    );

    // Alice, trying to pass as mallory: the upstream sees the verified subject only, on its own
    // path, without the token, the client's identity headers or x-debug.
    let first = call(
        &envoy,
        "GET",
        "/api/orders?page=2",
        Some(&alice),
        &[
            ("x-jwt-sub", "mallory"),
            ("x-user-id", "mallory"),
            ("x-debug", "1"),
        ],
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-gateway"), Some("wasmgate"));
    assert!(remaining(&first).contains("r=4"), "{}", remaining(&first));
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per_user\";q=100;w=3600")
    );
    let seen = &upstream.received()[0];
    assert_eq!(seen["path"], "/v1/orders");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["headers"]["x-user-id"], "alice");
    assert_eq!(seen["headers"]["x-gateway"], "wasmgate");
    for gone in ["x-jwt-sub", "authorization", "x-debug"] {
        assert!(
            seen["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }

    // A JSON body gets the verified subject, whatever the client wrote there.
    let post = call(&envoy, "POST", "/api/orders", Some(&alice), &[]);
    assert_eq!(post.status, 200, "{}", post.text());
    assert!(remaining(&post).contains("r=3"), "{}", remaining(&post));
    let seen = upstream.received().last().cloned().unwrap();
    assert_eq!(seen["method"], "POST");
    let body: serde_json::Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["submitted_by"], "alice");
    assert_eq!(body["item"], "book");

    // Alice spends the rest of her burst; the next request is limited. Claiming to be bob in
    // x-jwt-sub does not move her to bob's bucket.
    for expected in ["r=2", "r=1", "r=0"] {
        let r = call(&envoy, "GET", "/api/orders", Some(&alice), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(remaining(&r).contains(expected), "{}", remaining(&r));
    }
    let before = upstream.attempts();
    let limited = call(
        &envoy,
        "GET",
        "/api/orders",
        Some(&alice),
        &[("x-jwt-sub", "bob")],
    );
    assert_denied(&limited, 429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    assert_eq!(
        upstream.attempts(),
        before,
        "a limited request never reaches the upstream"
    );

    // Bob has his own bucket, and claiming to be alice does not spend hers (she has none left).
    let bobs = call(
        &envoy,
        "GET",
        "/api/orders",
        Some(&bob),
        &[("x-jwt-sub", "alice")],
    );
    assert_eq!(bobs.status, 200, "{}", bobs.text());
    assert!(remaining(&bobs).contains("r=4"), "{}", remaining(&bobs));
    assert_eq!(
        upstream.received().last().unwrap()["headers"]["x-user-id"],
        "bob"
    );
    let again = call(&envoy, "GET", "/api/orders", Some(&bob), &[]);
    assert!(remaining(&again).contains("r=3"), "{}", remaining(&again));
    assert_denied(
        &call(&envoy, "GET", "/api/orders", Some(&alice), &[]),
        429,
        "rate_limited",
    );

    let outcome = |o| [("outcome", o)];
    assert!(envoy.metric("wasmgate_jwt_auth_requests_total", &outcome("denied")) >= 4);
    assert!(envoy.metric("wasmgate_rate_limit_requests_total", &outcome("limited")) >= 2);
}
