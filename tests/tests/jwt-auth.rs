//! jwt-auth in a real Envoy: every behaviour the filter README promises.
//!
//! Tokens are signed in the test with the test-only keys in `tests/fixtures/jwt/keys.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_auth::crypto::sign::sign;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Response, Scripted, Upstream};

const ISSUER: &str = "https://issuer.example.com";
const AUDIENCE: &str = "api.example.com";
/// The metrics the tests read, and the label of the remote provider of [`remote_config`].
const REQUESTS: &str = "wasmgate_jwt_auth_requests_total";
const JWKS_FETCHES: &str = "wasmgate_jwt_auth_jwks_fetches_total";
const REMOTE: (&str, &str) = ("provider", "remote");

fn keys() -> Value {
    let path = repo_root().join("tests/fixtures/jwt/keys.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The public half of a private JWK.
fn public(jwk: &Value) -> Value {
    let mut key = jwk.clone();
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        key.as_object_mut().unwrap().remove(private);
    }
    if key["kty"] == "oct" {
        return jwk.clone();
    }
    key
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(jwk: &Value, alg: &str, claims: Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": jwk["kid"]});
    sign(&jwk.to_string(), &header.to_string(), &claims.to_string()).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut base = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn start(config: &Value, concurrency: u32) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", config.to_string()),
        ],
        EnvoyOptions {
            concurrency,
            ..EnvoyOptions::default()
        },
    );
    (upstream, envoy)
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Response {
    envoy.client().send("GET", path, headers, b"")
}

fn assert_denied(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
}

fn local_config(keys: &Value, extra: Value) -> Value {
    let jwks = json!({"keys": [
        public(&keys["rsa"]), public(&keys["ec"]), public(&keys["ed"]), keys["hmac"].clone()
    ]});
    let mut config = json!({
        "providers": {
            "example": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "local_jwks": {"inline_string": jwks.to_string()},
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "from_params": ["access_token"],
                "from_cookies": ["session"],
                "forward_payload_header": "x-jwt-payload",
                "claim_to_headers": [
                    {"header_name": "x-jwt-sub", "claim_name": "sub"},
                    {"header_name": "x-jwt-admin", "claim_name": "admin"}
                ]
            },
            "partner": {
                "issuer": "https://partner.example.com",
                "local_jwks": {"inline_string": json!({"keys": [keys["hmac"]]}).to_string()},
                "from_headers": [{"name": "x-partner-token"}],
                "forward": true
            }
        },
        "requires": {"provider_name": "example"},
        "rules": [
            {"match": {"path_prefix": "/public"}, "enabled": false},
            {"match": {"path_prefix": "/maybe"},
             "requires": {"requires_any": {"requirements": [{"provider_name": "example"}, {"allow_missing": {}}]}}},
            {"match": {"path_prefix": "/admin"}, "requires": {"provider_name": "example"},
             "claims": {"scope": "admin"}},
            {"match": {"path_prefix": "/partner"}, "requires": {"provider_name": "partner"}}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

#[test]
fn local_jwks_allows_denies_and_rewrites_headers() {
    let keys = keys();
    // A small max_token_bytes, so that an oversized token fits in Envoy's header limit.
    let (upstream, envoy) = start(&local_config(&keys, json!({"max_token_bytes": 8192})), 1);

    // Every algorithm family with a valid token: allowed, token stripped, claims forwarded, and
    // a client's own copy of the claim header replaced.
    for (key, alg) in [
        ("rsa", "RS256"),
        ("ec", "ES256"),
        ("ed", "EdDSA"),
        ("hmac", "HS256"),
    ] {
        let t = token(&keys[key], alg, claims(json!({"admin": true})));
        let r = get(
            &envoy,
            "/api",
            &[("authorization", &bearer(&t)), ("x-jwt-sub", "mallory")],
        );
        assert_eq!(r.status, 200, "{alg}: {}", r.text());
        let echo = r.json();
        assert!(
            echo["headers"].get("authorization").is_none(),
            "{alg}: token stripped"
        );
        assert_eq!(echo["headers"]["x-jwt-sub"], "alice", "{alg}");
        assert_eq!(echo["headers"]["x-jwt-admin"], "true", "{alg}");
        assert_eq!(
            echo["headers"]["x-jwt-payload"],
            t.split('.').nth(1).unwrap(),
            "{alg}: payload header is the base64url payload"
        );
    }

    // Missing: 401 with a bare Bearer challenge.
    let r = get(&envoy, "/api", &[("host", "api.example.com")]);
    assert_denied(&r, 401, "missing_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"api.example.com\"")
    );

    // Each failure gets jwt_authn's status and an RFC 6750 challenge.
    let rsa = &keys["rsa"];
    let now = now();
    let valid = token(rsa, "RS256", claims(json!({})));
    // One character in the middle of the signature changed (still canonical base64url).
    let (head, sig) = valid.rsplit_once('.').unwrap();
    let swap = if sig.as_bytes()[10] == b'A' { "B" } else { "A" };
    let tampered = format!("{head}.{}{swap}{}", &sig[..10], &sig[11..]);
    let cases = [
        (
            token(rsa, "RS256", claims(json!({"exp": now - 3600}))),
            401,
            "token_expired",
        ),
        (
            token(rsa, "RS256", claims(json!({"nbf": now + 3600}))),
            401,
            "token_not_yet_valid",
        ),
        (
            token(
                rsa,
                "RS256",
                claims(json!({"iss": "https://evil.example.com"})),
            ),
            401,
            "unknown_issuer",
        ),
        (
            token(rsa, "RS256", claims(json!({"aud": "other.example.com"}))),
            403,
            "audience_not_allowed",
        ),
        (
            token(rsa, "RS256", claims(json!({"exp": "tomorrow"}))),
            401,
            "malformed_token",
        ),
        (tampered, 401, "invalid_signature"),
        (
            token(&keys["rsa_rotated"], "RS256", claims(json!({}))),
            401,
            "unknown_key",
        ),
        (format!("{valid}."), 401, "malformed_token"),
        (
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.".to_string(),
            401,
            "unsupported_algorithm",
        ),
        (
            token(rsa, "RS256", claims(json!({"pad": "x".repeat(9000)}))),
            401,
            "token_too_large",
        ),
    ];
    for (t, status, code) in &cases {
        let r = get(
            &envoy,
            "/api",
            &[("authorization", &bearer(t)), ("host", "h.test")],
        );
        assert_denied(&r, *status, code);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"h.test\", error=\"invalid_token\""),
            "{code}"
        );
        assert!(!r.text().contains(t.as_str()), "no token in the reply");
    }

    // Token in the query string and in a cookie: accepted and removed before the upstream.
    let r = get(&envoy, &format!("/api?a=1&access_token={valid}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["query"], "a=1");
    let cookie = format!("theme=dark; session={valid}");
    let r = get(&envoy, "/api", &[("cookie", &cookie)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["cookie"], "theme=dark");

    // allow_missing: absent is fine, present must be valid.
    assert_eq!(get(&envoy, "/maybe", &[]).status, 200);
    let expired = &cases[0].0;
    assert_denied(
        &get(&envoy, "/maybe", &[("authorization", &bearer(expired))]),
        401,
        "token_expired",
    );
    assert_eq!(
        get(&envoy, "/maybe", &[("authorization", &bearer(&valid))]).json()["headers"]["x-jwt-sub"],
        "alice"
    );

    // claims: 403 insufficient_scope until the token carries the scope.
    let reader = token(rsa, "RS256", claims(json!({"scope": "read write"})));
    let r = get(
        &envoy,
        "/admin",
        &[("authorization", &bearer(&reader)), ("host", "h.test")],
    );
    assert_denied(&r, 403, "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"h.test\", error=\"insufficient_scope\"")
    );
    let admin = token(rsa, "RS256", claims(json!({"scope": "read admin"})));
    assert_eq!(
        get(&envoy, "/admin", &[("authorization", &bearer(&admin))]).status,
        200
    );

    // enabled: false passes the request without a token check, but never with a forged output
    // header: the upstream of a public route may trust it too.
    let r = get(&envoy, "/public", &[("x-jwt-sub", "anyone")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-jwt-sub"], Value::Null);

    // forward: true keeps the token for the upstream.
    let partner = token(
        &keys["hmac"],
        "HS256",
        json!({"iss": "https://partner.example.com", "exp": now + 600}),
    );
    let r = get(&envoy, "/partner", &[("x-partner-token", &partner)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-partner-token"], partner.as_str());

    // The verified-token cache answers a repeated token; metrics by reason.
    get(&envoy, "/api", &[("authorization", &bearer(&valid))]);
    assert!(envoy.metric("wasmgate_jwt_auth_token_cache_hits_total", &[]) >= 1);
    assert!(envoy.metric(REQUESTS, &[("outcome", "allowed")]) >= 8);
    assert!(envoy.metric(REQUESTS, &[("outcome", "denied")]) >= 12);
    let denied = |reason| envoy.metric(REQUESTS, &[("outcome", "denied"), ("reason", reason)]);
    assert!(denied("token_expired") >= 2);
    assert!(denied("audience_not_allowed") >= 1);
    // The shipped stats_tags make the labels Prometheus labels, in the order of the tags.
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    let missing = format!(
        "{REQUESTS}{{plugin=\"jwt-auth\",outcome=\"denied\",reason=\"missing_token\"}} {}",
        denied("missing_token")
    );
    assert!(
        prometheus.lines().any(|line| line == missing),
        "{missing} not in:\n{}",
        prometheus
            .lines()
            .filter(|l| l.contains(REQUESTS))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(envoy.log().contains("jwt-auth 0.1.0 (commit "));
    assert!(!envoy.log().contains(&valid), "tokens never logged");
    assert!(upstream.attempts() >= 8);
}

#[test]
fn host_and_vm_signature_checks_agree() {
    let keys = keys();
    let mut verdicts = Vec::new();
    let mut host_checks = 0;
    for use_host in [false, true] {
        let config = local_config(
            &keys,
            json!({"use_host_crypto": use_host, "cache_entries": 0}),
        );
        let (_upstream, envoy) = start(&config, 1);
        let mut statuses = Vec::new();
        for (key, alg) in [
            ("rsa", "RS256"),
            ("rsa", "RS384"),
            ("rsa", "RS512"),
            ("rsa", "PS256"),
            ("ec", "ES256"),
        ] {
            let valid = token(&keys[key], alg, claims(json!({})));
            let (head, sig) = valid.rsplit_once('.').unwrap();
            let other = token(&keys[key], alg, claims(json!({"sub": "bob"})));
            let foreign_sig = other.rsplit_once('.').unwrap().1;
            let swapped = format!("{head}.{foreign_sig}");
            // Half the signature bytes, re-encoded (always canonical base64url).
            let sig_bytes = jwt_auth::jws::b64url_decode(sig).unwrap();
            let truncated = format!("{head}.{}", b64url(&sig_bytes[..sig_bytes.len() / 2]));
            for t in [&valid, &swapped, &truncated] {
                statuses.push(get(&envoy, "/api", &[("authorization", &bearer(t))]).status);
            }
        }
        if use_host {
            host_checks = envoy.metric("wasmgate_jwt_auth_host_verified_total", &[]);
        }
        verdicts.push(statuses);
    }
    assert_eq!(
        verdicts[0], verdicts[1],
        "same verdicts with and without the host"
    );
    assert_eq!(verdicts[0].iter().filter(|s| **s == 200).count(), 5);
    // RS256/384/512: 3 tokens each; ES256: valid and swapped (a truncated r||s is refused
    // before any call); PS256 always stays in the VM.
    assert_eq!(
        host_checks, 11,
        "Envoy's verify_signature checked RSA and ECDSA"
    );
}

fn remote_config(timeout: &str) -> Value {
    json!({
        "providers": {
            "remote": {
                "issuer": ISSUER,
                "remote_jwks": {
                    "http_uri": {"uri": "http://jwks.test/jwks.json", "cluster": "jwks", "timeout": timeout},
                    "cache_duration": "10m"
                },
                "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}]
            }
        }
    })
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
fn remote_jwks_shared_fetch_and_rotation() {
    let keys = keys();
    let upstream = Upstream::start();
    upstream.set_document(
        "/jwks.json",
        &json!({"keys": [public(&keys["rsa"])]}).to_string(),
    );
    let envoy = Envoy::start_with(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", remote_config("2s").to_string()),
        ],
        EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::default()
        },
    );
    let first = token(&keys["rsa"], "RS256", claims(json!({})));
    for _ in 0..6 {
        let r = get(&envoy, "/api", &[("authorization", &bearer(&first))]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        upstream.document_fetches("/jwks.json"),
        1,
        "one fetch for the whole Envoy process (2 workers)"
    );

    // Rotation: the issuer publishes a new key; a token with its kid triggers one refetch.
    upstream.set_document(
        "/jwks.json",
        &json!({"keys": [public(&keys["rsa_rotated"])]}).to_string(),
    );
    let rotated = token(&keys["rsa_rotated"], "RS256", claims(json!({"sub": "bob"})));
    let r = get(&envoy, "/api", &[("authorization", &bearer(&rotated))]);
    assert_eq!(
        r.status,
        200,
        "new kid accepted without a restart: {}",
        r.text()
    );
    assert_eq!(r.json()["headers"]["x-jwt-sub"], "bob");
    assert_eq!(upstream.document_fetches("/jwks.json"), 2);
    // The old key is gone from the set now.
    assert_denied(
        &get(&envoy, "/api", &[("authorization", &bearer(&first))]),
        401,
        "unknown_key",
    );
    // Another unknown kid within 30 s: no new fetch, 401.
    let unknown = token(&keys["ec"], "ES256", claims(json!({})));
    assert_denied(
        &get(&envoy, "/api", &[("authorization", &bearer(&unknown))]),
        401,
        "unknown_key",
    );
    assert_eq!(
        upstream.document_fetches("/jwks.json"),
        2,
        "refetch at most every 30 s"
    );
    assert!(envoy.metric(JWKS_FETCHES, &[("outcome", "success")]) >= 2);
    assert!(!envoy.log().contains("panicked"));
}

#[test]
fn remote_jwks_unavailable_then_recovers_keeping_last_good_keys() {
    let keys = keys();
    let upstream = Upstream::start();
    upstream.set_document_status("/jwks.json", 503, "{}");
    let (envoy, t) = {
        let envoy = Envoy::start(
            "jwt-auth.yaml",
            &[
                ("UPSTREAM_PORT", upstream.port().to_string()),
                ("JWT_CONFIG", remote_config("1s").to_string()),
            ],
        );
        (envoy, token(&keys["rsa"], "RS256", claims(json!({}))))
    };
    let auth = bearer(&t);
    assert_denied(
        &get(&envoy, "/api", &[("authorization", &auth)]),
        401,
        "jwks_unavailable",
    );
    assert!(envoy.metric(JWKS_FETCHES, &[("outcome", "failure"), REMOTE]) >= 1);
    upstream.set_document(
        "/jwks.json",
        &json!({"keys": [public(&keys["rsa"])]}).to_string(),
    );
    poll_until(
        "recovery after the JWKS came back",
        Duration::from_secs(45),
        || get(&envoy, "/api", &[("authorization", &auth)]).status == 200,
    );
    // A later failed refresh keeps the last good keys: an unknown kid forces a refetch that
    // fails, and the known key still works.
    upstream.set_document_status("/jwks.json", 503, "{}");
    let unknown = token(&keys["rsa_rotated"], "RS256", claims(json!({})));
    let fetches = upstream.document_fetches("/jwks.json");
    assert_denied(
        &get(&envoy, "/api", &[("authorization", &bearer(&unknown))]),
        401,
        "unknown_key",
    );
    assert!(
        upstream.document_fetches("/jwks.json") > fetches,
        "kid miss refetched"
    );
    assert_eq!(get(&envoy, "/api", &[("authorization", &auth)]).status, 200);
}

#[test]
fn remote_jwks_refreshes_every_cache_duration() {
    let keys = keys();
    let upstream = Upstream::start();
    upstream.set_document(
        "/jwks.json",
        &json!({"keys": [public(&keys["rsa"])]}).to_string(),
    );
    let mut config = remote_config("1s");
    config["providers"]["remote"]["remote_jwks"]["cache_duration"] = json!("1s");
    let envoy = Envoy::start(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", config.to_string()),
        ],
    );
    let t = token(&keys["rsa"], "RS256", claims(json!({})));
    assert_eq!(
        get(&envoy, "/api", &[("authorization", &bearer(&t))]).status,
        200
    );
    poll_until(
        "three fetches with cache_duration 1s",
        Duration::from_secs(20),
        || upstream.document_fetches("/jwks.json") >= 3,
    );
    // A refresh that replaces the key (same kid, other key) takes effect without a kid miss.
    let mut replaced = public(&keys["rsa_rotated"]);
    replaced["kid"] = json!("rsa-1");
    upstream.set_document("/jwks.json", &json!({"keys": [replaced]}).to_string());
    poll_until("the replaced key is used", Duration::from_secs(20), || {
        get(&envoy, "/api", &[("authorization", &bearer(&t))]).status == 401
    });
}

#[test]
fn oversized_jwks_responses_are_refused() {
    let keys = keys();
    let upstream = Upstream::start();
    let jwks = json!({"keys": [public(&keys["rsa"])]}).to_string();
    upstream.set_document("/jwks.json", &jwks);
    let mut config = remote_config("1s");
    config["providers"]["remote"]["remote_jwks"]["max_jwks_bytes"] = json!(jwks.len() - 1);
    let envoy = Envoy::start(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", config.to_string()),
        ],
    );
    let t = token(&keys["rsa"], "RS256", claims(json!({})));
    assert_denied(
        &get(&envoy, "/api", &[("authorization", &bearer(&t))]),
        401,
        "jwks_unavailable",
    );
    assert!(envoy.metric(JWKS_FETCHES, &[("outcome", "failure"), REMOTE]) >= 1);
    assert!(envoy.log().contains("body over"), "size cap logged");
    assert!(!envoy.log().contains("panicked"));
}

#[test]
fn first_requests_wait_for_the_first_fetch() {
    let keys = keys();
    let upstream = Upstream::start();
    // Not a document: the JWKS is the first scripted response, answered after a delay.
    upstream.script([Scripted::status(200)
        .body(json!({"keys": [public(&keys["rsa"])]}).to_string())
        .header("content-type", "application/json")
        .delay(Duration::from_millis(1500))]);
    let envoy = Envoy::start(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", remote_config("5s").to_string()),
        ],
    );
    let t = token(&keys["rsa"], "RS256", claims(json!({})));
    let r = get(&envoy, "/api", &[("authorization", &bearer(&t))]);
    assert_eq!(r.status, 200, "waited for the first fetch: {}", r.text());
    assert_eq!(
        envoy.metric(JWKS_FETCHES, &[("outcome", "success"), REMOTE]),
        1
    );
    let age = "provider=.=remote;.;wasmgate_jwt_auth_jwks_age_seconds";
    assert!(
        envoy.stats().keys().any(|name| name.ends_with(age)),
        "a key-age gauge per remote provider"
    );
}

#[test]
fn invalid_configuration_is_rejected() {
    let upstream = Upstream::start();
    let config = json!({"providers": {"p": {"isuer": "x"}}}).to_string();
    let rendered = wasmgate_e2e::repo_root().join("tests/configs/jwt-auth.yaml");
    let text = std::fs::read_to_string(rendered)
        .unwrap()
        .replace("${UPSTREAM_PORT}", &upstream.port().to_string())
        .replace("${JWT_CONFIG}", &config)
        .replace(
            "${WASM_DIR}",
            &wasmgate_e2e::wasm_dir().display().to_string(),
        );
    let dir = std::env::temp_dir().join(format!("wasmgate-jwt-invalid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(wasmgate_e2e::envoy_bin())
        .args([
            "--mode",
            "init_only",
            "--use-dynamic-base-id",
            "-l",
            "error",
            "-c",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !output.status.success(),
        "Envoy must refuse the configuration"
    );
    assert!(
        log.contains("wasmgate jwt-auth: invalid configuration at providers.p.isuer"),
        "{log}"
    );
}

#[test]
fn a_body_arriving_while_the_request_waits_does_not_let_it_pass() {
    let keys = keys();
    let upstream = Upstream::start();
    // The JWKS answers late and holds another key: the request waits for it, then is refused.
    upstream.script([Scripted::status(200)
        .body(json!({"keys": [public(&keys["rsa_rotated"])]}).to_string())
        .header("content-type", "application/json")
        .delay(Duration::from_millis(1500))]);
    let envoy = Envoy::start(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", remote_config("5s").to_string()),
        ],
    );
    let t = token(&keys["rsa"], "RS256", claims(json!({})));
    let r = envoy.client().send(
        "POST",
        "/api",
        &[
            ("authorization", &bearer(&t)),
            ("content-type", "text/plain"),
        ],
        &vec![b'x'; 64 * 1024],
    );
    assert_eq!(r.status, 401, "{}", r.text());
}
