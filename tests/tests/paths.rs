//! Hostile request paths in a real Envoy: no path that only looks exempt skips a policy, with
//! Envoy's own path normalization off (the filters refuse) and on (Envoy normalizes first).
//!
//! Requests are written as raw bytes: an HTTP client library would normalize or refuse some of
//! these paths before they reach Envoy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Upstream};

/// Paths that look like they are below `/health` (exempt) but are not, one per class.
const LOOKS_EXEMPT: &[&str] = &[
    "/health/../admin",
    "/health/./../admin",
    "/health/%2e%2e/admin",
    "/health/%2E%2E/admin",
    "/health%2f..%2fadmin",
    "/health%2F..%2Fadmin",
    "/health%5c..%5cadmin",
    "/health\\..\\admin",
    "/health/..;/admin",
    "/health/%2e%2e;/admin",
    "/healthz-admin/x",
    "//health/../admin",
];

/// A raw HTTP/1.1 GET; the status and the body (the echo upstream's JSON, when it answered).
fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", envoy.port("main"))).unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = match (text.find('{'), text.rfind('}')) {
        (Some(start), Some(end)) if start < end => text[start..=end].to_string(),
        _ => String::new(),
    };
    (status, body)
}

/// The path and query the echo upstream received, from its JSON answer.
fn upstream_path(body: &str) -> String {
    let echo: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not an echo: {body}"));
    let path = echo["path"].as_str().unwrap_or_default();
    match echo["query"].as_str().unwrap_or_default() {
        "" => path.to_string(),
        query => format!("{path}?{query}"),
    }
}

/// The template with Envoy's path normalization switched on.
fn normalizing(template: &str) -> String {
    let path = repo_root().join("tests/configs").join(template);
    std::fs::read_to_string(path).unwrap().replacen(
        "stat_prefix: ingress",
        "stat_prefix: ingress\n          normalize_path: true\n          merge_slashes: true\n          path_with_escaped_slashes_action: REJECT_REQUEST",
        1,
    )
}

fn start(template: &str, vars: &[(&str, String)], envoy_normalizes: bool) -> Envoy {
    if envoy_normalizes {
        Envoy::start_config(
            &wasmgate_e2e::render(&normalizing(template), vars),
            EnvoyOptions::default(),
        )
    } else {
        Envoy::start(template, vars)
    }
}

fn jwt_config(paths: Value) -> Value {
    let keys = std::fs::read_to_string(repo_root().join("tests/fixtures/jwt/keys.json")).unwrap();
    let keys: Value = serde_json::from_str(&keys).unwrap();
    // No request carries a token: any key will do.
    let jwks = json!({"keys": [keys["ec"]]});
    json!({
        "providers": {"test": {"issuer": "https://issuer.example.com",
                               "local_jwks": {"inline_string": jwks.to_string()}}},
        "rules": [{"match": {"path_prefix": "/health"}, "enabled": false}],
        "paths": paths
    })
}

fn start_jwt(upstream: &Upstream, paths: Value, envoy_normalizes: bool) -> Envoy {
    let vars = [
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("JWT_CONFIG", jwt_config(paths).to_string()),
    ];
    start("jwt-auth.yaml", &vars, envoy_normalizes)
}

#[test]
fn jwt_auth_exemptions_hold_with_envoy_normalization_off_and_on() {
    for envoy_normalizes in [false, true] {
        let upstream = Upstream::start();
        let envoy = start_jwt(&upstream, json!({}), envoy_normalizes);
        assert_eq!(get(&envoy, "/health", &[]).0, 200, "the exemption works");
        assert_eq!(
            get(&envoy, "/health/live", &[]).0,
            200,
            "below the exempt prefix"
        );
        assert_eq!(get(&envoy, "/admin", &[]).0, 401);
        for path in LOOKS_EXEMPT {
            let (status, body) = get(&envoy, path, &[]);
            assert!(
                status == 400 || status == 401 || status == 404,
                "{path} (Envoy normalizes: {envoy_normalizes}): {status} {body}"
            );
        }
    }
}

#[test]
fn refused_paths_get_a_json_invalid_path_reply() {
    let upstream = Upstream::start();
    let envoy = start_jwt(&upstream, json!({}), false);
    let (status, body) = get(&envoy, "/health/../admin", &[]);
    assert_eq!(status, 400);
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["error"], "invalid_path");
    assert_eq!(upstream.attempts(), 0, "nothing reached the upstream");
}

#[test]
fn rewrite_mode_forwards_the_path_the_rules_matched() {
    let upstream = Upstream::start();
    let envoy = start_jwt(&upstream, json!({"unnormalized": "rewrite"}), false);
    let (status, body) = get(&envoy, "/x/../health/./live?q=/..", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream_path(&body),
        "/health/live?q=/..",
        "query kept as sent"
    );
    assert_eq!(
        get(&envoy, "/health/../admin", &[]).0,
        401,
        "rewritten, then protected"
    );
    for ambiguous in [
        "/health%2f..%2fadmin",
        "/health\\..\\admin",
        "/health/..;/admin",
    ] {
        assert_eq!(
            get(&envoy, ambiguous, &[]).0,
            400,
            "{ambiguous}: no rewrite is certain"
        );
    }
}

#[test]
fn hmac_auth_exemptions_hold() {
    let upstream = Upstream::start();
    let config = json!({
        "scheme": "github",
        "secrets": [{"id": "a", "value": "s3cret"}],
        "rules": [{"match": {"path_prefix": "/health"}, "enabled": false}]
    });
    let vars = [
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("HMAC_CONFIG", config.to_string()),
        ("FIXED_ENV", String::new()),
    ];
    let envoy = start("hmac-auth.yaml", &vars, false);
    assert_eq!(get(&envoy, "/health", &[]).0, 200);
    assert_eq!(get(&envoy, "/admin", &[]).0, 401);
    for path in LOOKS_EXEMPT {
        let (status, body) = get(&envoy, path, &[]);
        assert!(status == 400 || status == 401, "{path}: {status} {body}");
    }
}

#[test]
fn rate_limit_cannot_be_evaded_by_spelling_the_path_differently() {
    let upstream = Upstream::start();
    let config = json!({"rules": [{"match": {"path_prefix": "/login"}, "key": [{"constant": "all"}],
                                  "limits": [{"name": "m", "requests": 1, "window": "1h", "algorithm": "token_bucket"}]}]});
    let vars = [
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("CONFIG", config.to_string()),
    ];
    let envoy = start("rate-limit.yaml", &vars, false);
    assert_eq!(get(&envoy, "/login", &[]).0, 200);
    assert_eq!(
        get(&envoy, "/login/", &[]).0,
        429,
        "below the prefix: the same limit"
    );
    for path in ["/./login", "/x/../login", "/%6Cogin", "//login"] {
        let status = get(&envoy, path, &[]).0;
        assert!(status == 400 || status == 429, "{path}: {status}");
    }
    assert_eq!(
        get(&envoy, "/loginx", &[]).0,
        200,
        "not a segment of /login"
    );
}

#[test]
fn transform_and_retry_rules_see_the_normal_path() {
    let upstream = Upstream::start();
    let upstream_b = Upstream::start();
    let config = json!({"rules": [{"match": {"path_prefix": "/tagged"},
                                   "request": {"headers": {"set": {"x-tagged": "yes"}}}}],
                        "paths": {"unnormalized": "rewrite"}});
    let vars = [
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("UPSTREAM_B_PORT", upstream_b.port().to_string()),
        ("TRANSFORM_CONFIG", config.to_string()),
        ("ALLOW_STOP", "false".to_string()),
    ];
    let envoy = start("transform.yaml", &vars, false);
    let (status, body) = get(&envoy, "/x/../tagged/a", &[]);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/tagged/a");
    assert_eq!(echo["headers"]["x-tagged"], "yes", "{echo}");
    let (_, body) = get(&envoy, "/taggedx", &[]);
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert!(
        echo["headers"]["x-tagged"].is_null(),
        "not a segment of /tagged"
    );

    let upstream = Upstream::start();
    let config = json!({"rules": [{"match": {"path_prefix": "/health"}, "enabled": false}]});
    let vars = [
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("RETRY_CONFIG", config.to_string()),
    ];
    let envoy = start("retry.yaml", &vars, false);
    assert_eq!(get(&envoy, "/health", &[]).0, 200);
    assert_eq!(get(&envoy, "/health/../x", &[]).0, 400);
}

/// Runs `check` for every looks-exempt path against a fresh Envoy per mode (Envoy's
/// normalization off, then on); `prepare` runs once per Envoy before the paths.
fn every_class(
    template: &str,
    vars: impl Fn(&Upstream) -> Vec<(&'static str, String)>,
    prepare: impl Fn(&Envoy),
    check: impl Fn(&Envoy, &Upstream, &str) -> Result<(), String>,
) {
    for envoy_normalizes in [false, true] {
        let upstream = Upstream::start();
        let envoy = start(template, &vars(&upstream), envoy_normalizes);
        prepare(&envoy);
        for path in LOOKS_EXEMPT {
            if let Err(why) = check(&envoy, &upstream, path) {
                panic!("{template}, {path} (Envoy normalizes: {envoy_normalizes}): {why}");
            }
        }
    }
}

#[test]
fn key_auth_exemptions_hold_with_envoy_normalization_off_and_on() {
    let digest = "1a986ee3342b96dbceb70862d1330931cffebb8a021698a1db34396c467dd0ce";
    let config = json!({
        "clients": [{"id": "a", "keys": [{"sha256": digest}]}],
        "rules": [{"match": {"path_prefix": "/health"}, "enabled": false}]});
    every_class(
        "key-auth.yaml",
        |upstream| {
            vec![
                ("UPSTREAM_PORT", upstream.port().to_string()),
                ("KEY_AUTH_CONFIG", config.to_string()),
            ]
        },
        |envoy| {
            assert_eq!(get(envoy, "/health", &[]).0, 200, "the exemption works");
            assert_eq!(get(envoy, "/admin", &[]).0, 401);
        },
        |envoy, _, path| match get(envoy, path, &[]).0 {
            400 | 401 | 404 => Ok(()),
            other => Err(format!("{other}: the key check was skipped")),
        },
    );
}

#[test]
fn rate_limit_exemptions_hold_with_envoy_normalization_off_and_on() {
    let config = json!({"rules": [
        {"match": {"path_prefix": "/health"}, "enabled": false},
        {"match": {}, "key": [{"constant": "all"}],
         "limits": [{"name": "m", "requests": 1, "window": "1h", "algorithm": "token_bucket"}]}]});
    every_class(
        "rate-limit.yaml",
        |upstream| {
            vec![
                ("UPSTREAM_PORT", upstream.port().to_string()),
                ("CONFIG", config.to_string()),
            ]
        },
        |envoy| assert_eq!(get(envoy, "/admin", &[]).0, 200, "the one request allowed"),
        |envoy, _, path| match get(envoy, path, &[]).0 {
            400 | 429 => Ok(()),
            other => Err(format!("{other}: the limit was skipped")),
        },
    );
}

#[test]
fn transform_exemptions_hold_with_envoy_normalization_off_and_on() {
    let config = json!({
        "request": {"headers": {"set": {"x-policy": "default"}}},
        "rules": [{"match": {"path_prefix": "/health"},
                   "request": {"headers": {"set": {"x-policy": "health"}}}}]});
    every_class(
        "transform.yaml",
        |upstream| {
            vec![
                ("UPSTREAM_PORT", upstream.port().to_string()),
                ("UPSTREAM_B_PORT", upstream.port().to_string()),
                ("TRANSFORM_CONFIG", config.to_string()),
                ("ALLOW_STOP", "false".to_string()),
            ]
        },
        |_| {},
        |envoy, _, path| match get(envoy, path, &[]) {
            (400, _) | (404, _) => Ok(()),
            (_, body) if body.contains("\"x-policy\":\"health\"") => {
                Err(format!("the /health rule applied: {body}"))
            }
            _ => Ok(()),
        },
    );
}

#[test]
fn retry_exemptions_hold_with_envoy_normalization_off_and_on() {
    let config = json!({"mode": "router", "max_retries": 2, "retry_on": ["5xx"],
                        "backoff": {"base": "10ms", "max": "50ms"},
                        "budget": {"ratio": 1.0, "min_per_second": 10000},
                        "rules": [{"match": {"path_prefix": "/health"}, "max_retries": 0}]});
    every_class(
        "retry.yaml",
        |upstream| {
            vec![
                ("UPSTREAM_PORT", upstream.port().to_string()),
                ("RETRY_CONFIG", config.to_string()),
            ]
        },
        |_| {},
        |envoy, upstream, path| {
            upstream.script((0..3).map(|_| wasmgate_e2e::Scripted::status(503)));
            let before = upstream.attempts();
            let status = get(envoy, path, &[]).0;
            let attempts = upstream.attempts() - before;
            match (status, attempts) {
                (400, 0) | (_, 3) => Ok(()),
                _ => Err(format!(
                    "{status} after {attempts} attempts: the /health rule applied"
                )),
            }
        },
    );
}

#[test]
fn hmac_auth_exemptions_hold_with_envoy_normalization_on() {
    let config = json!({
        "scheme": "github",
        "secrets": [{"id": "a", "value": "s3cret"}],
        "rules": [{"match": {"path_prefix": "/health"}, "enabled": false}]
    });
    let upstream = Upstream::start();
    let vars = [
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("HMAC_CONFIG", config.to_string()),
        ("FIXED_ENV", String::new()),
    ];
    let envoy = start("hmac-auth.yaml", &vars, true);
    for path in LOOKS_EXEMPT {
        let (status, body) = get(&envoy, path, &[]);
        assert!(status == 400 || status == 401, "{path}: {status} {body}");
    }
}
