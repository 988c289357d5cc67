//! key-auth end-to-end in a real Envoy: each key source (header, `Bearer`, query parameter,
//! cookie), rotation (old and new key both valid, then the old one retired by its `not_after`),
//! scopes and allowed clients per route, forged identity headers, hidden credentials, two keys
//! in one request, a key from the VM's environment, metrics, configuration errors, and a
//! configuration of 100,000 keys.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{Envoy, EnvoyOptions, Response, Upstream};

/// The metrics the tests read: `requests_total{outcome, reason}`, and
/// `client_requests_total{outcome, client}`.
const REQUESTS: &str = "wasmgate_key_auth_requests_total";
const CLIENT_REQUESTS: &str = "wasmgate_key_auth_client_requests_total";

const TEAM_A: &str = "team-a-current-key-0123456789";
const TEAM_A_NEXT: &str = "team-a-next-key-from-env-0123";
const PARTNER: &str = "partner-x-key-0123456789abcdef";

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn config(team_a_old_key_not_after: &str) -> Value {
    json!({
        "clients": [
            {"id": "team-a", "scopes": ["orders:read", "orders:write"], "keys": [
                {"sha256": sha256_hex(TEAM_A), "not_after": team_a_old_key_not_after},
                {"secret": {"env": "KEY_AUTH_E2E_NEXT"}}]},
            {"id": "partner-x", "scopes": ["orders:read"], "keys": [{"secret": {"value": PARTNER}}]}
        ],
        "key_sources": [{"header": "x-api-key"}, {"header": "authorization", "value_prefix": "Bearer "},
                        {"query": "api_key"}, {"cookie": "api_key"}],
        "forward": {"client_header": "x-client-id", "scopes_header": "x-client-scopes", "hide_credentials": true},
        "rules": [
            {"match": {"path_prefix": "/health"}, "enabled": false},
            {"match": {"path_prefix": "/orders", "methods": ["POST"]}, "required_scopes": ["orders:write"]},
            {"match": {"path_prefix": "/admin"}, "allowed_clients": ["team-a"]},
            {"match": {"path_prefix": "/public"}, "allow_missing": true}
        ]
    })
}

fn start(config: &Value) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let options = EnvoyOptions {
        env: vec![("KEY_AUTH_E2E_NEXT".into(), TEAM_A_NEXT.into())],
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(
        "key-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("KEY_AUTH_CONFIG", config.to_string()),
        ],
        options,
    );
    (upstream, envoy)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn far_future() -> String {
    "2100-01-01T00:00:00Z".into()
}

/// The headers the upstream received with the last request.
fn upstream_saw(upstream: &Upstream) -> Value {
    upstream
        .received()
        .last()
        .cloned()
        .expect("the upstream got a request")
}

fn assert_refused(response: &Response, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

#[test]
fn every_source_identifies_the_client_and_the_key_stays_here() {
    let (upstream, envoy) = start(&config(&far_future()));
    let client = envoy.client();
    let bearer = format!("Bearer {TEAM_A}");
    let cookie = format!("theme=dark; api_key={TEAM_A}");
    let query = format!("/orders?page=2&api_key={TEAM_A}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/orders?page=2", vec![("x-api-key", TEAM_A)]),
        ("/orders?page=2", vec![("authorization", &bearer)]),
        (&query, vec![]),
        ("/orders?page=2", vec![("cookie", &cookie)]),
    ];
    for (path, headers) in &cases {
        let response = client.send("GET", path, headers, b"");
        assert_eq!(
            response.status,
            200,
            "{path} {headers:?}: {}",
            response.text()
        );
        let seen = upstream_saw(&upstream);
        assert_eq!(seen["headers"]["x-client-id"], "team-a");
        assert_eq!(
            seen["headers"]["x-client-scopes"],
            "orders:read orders:write"
        );
        assert!(
            !seen.to_string().contains(TEAM_A),
            "the key reached the upstream: {seen}"
        );
        assert!(
            seen["query"]
                .as_str()
                .unwrap_or_default()
                .contains("page=2"),
            "{seen}"
        );
    }
    let cookies = &upstream_saw(&upstream)["headers"]["cookie"];
    assert_eq!(cookies, "theme=dark", "other cookies are kept");
    assert_eq!(envoy.metric(REQUESTS, &[("outcome", "allowed")]), 4);
    let team_a = [("client", "team-a"), ("outcome", "allowed")];
    assert_eq!(envoy.metric(CLIENT_REQUESTS, &team_a), 4);
}

#[test]
fn missing_invalid_ambiguous_and_their_challenges() {
    let (upstream, envoy) = start(&config(&far_future()));
    let client = envoy.client();
    let missing = client.get("/orders");
    assert_refused(&missing, 401, "missing_api_key");
    assert_eq!(
        missing.header("www-authenticate"),
        Some(
            r#"ApiKey header="x-api-key", Bearer, ApiKey query="api_key", ApiKey cookie="api_key""#
        )
    );
    let wrong = client.send(
        "GET",
        "/orders",
        &[("x-api-key", "not-a-key-0123456789")],
        b"",
    );
    assert_refused(&wrong, 401, "invalid_api_key");
    assert_eq!(
        wrong.header("www-authenticate"),
        Some(r#"ApiKey header="x-api-key""#)
    );
    let wrong_bearer = client.send(
        "GET",
        "/orders",
        &[("authorization", "Bearer nope-0123456789")],
        b"",
    );
    assert_refused(&wrong_bearer, 401, "invalid_api_key");
    assert_eq!(
        wrong_bearer.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    // Two different keys: in two sources, or the header twice.
    let query = format!("/orders?api_key={PARTNER}");
    assert_refused(
        &client.send("GET", &query, &[("x-api-key", TEAM_A)], b""),
        400,
        "ambiguous_credentials",
    );
    let twice = client.send(
        "GET",
        "/orders",
        &[("x-api-key", TEAM_A), ("x-api-key", PARTNER)],
        b"",
    );
    assert_refused(&twice, 400, "ambiguous_credentials");
    // An encoded parameter name is the same parameter.
    let encoded = format!("/orders?api_key={TEAM_A}&api%5Fkey={PARTNER}");
    assert_refused(&client.get(&encoded), 400, "ambiguous_credentials");
    assert_eq!(
        upstream.attempts(),
        0,
        "nothing refused reached the upstream"
    );
    let denied = |reason| envoy.metric(REQUESTS, &[("outcome", "denied"), ("reason", reason)]);
    assert_eq!(denied("missing_api_key"), 1);
    assert_eq!(denied("invalid_api_key"), 2);
    assert_eq!(denied("ambiguous_credentials"), 3);
    assert_eq!(envoy.metric(REQUESTS, &[("outcome", "denied")]), 6);
}

#[test]
fn scopes_allowed_clients_and_optional_routes() {
    let (upstream, envoy) = start(&config(&far_future()));
    let client = envoy.client();
    let partner = [("x-api-key", PARTNER)];
    let team_a = [("x-api-key", TEAM_A)];
    assert_eq!(client.send("POST", "/orders", &team_a, b"{}").status, 200);
    assert_refused(
        &client.send("POST", "/orders", &partner, b"{}"),
        403,
        "insufficient_scope",
    );
    assert_eq!(client.send("GET", "/orders", &partner, b"").status, 200);
    assert_eq!(client.send("GET", "/admin/users", &team_a, b"").status, 200);
    assert_refused(
        &client.send("GET", "/admin/users", &partner, b""),
        403,
        "client_not_allowed",
    );
    // Optional route: no key passes without identity, a wrong key never does.
    assert_eq!(client.get("/public/info").status, 200);
    assert_eq!(upstream_saw(&upstream)["headers"].get("x-client-id"), None);
    let wrong = [("x-api-key", "wrong-0123456789abcdef")];
    assert_refused(
        &client.send("GET", "/public/info", &wrong, b""),
        401,
        "invalid_api_key",
    );
    assert_eq!(
        client.send("GET", "/public/info", &partner, b"").status,
        200
    );
    assert_eq!(
        upstream_saw(&upstream)["headers"]["x-client-id"],
        "partner-x"
    );
    // A path through the switched-off route is refused (tests/tests/paths.rs has every class,
    // with Envoy's normalization off and on).
    let dodge = client.send("GET", "/health/../admin/users", &partner, b"");
    assert_refused(&dodge, 400, "invalid_path");
    let partner_denied = [("client", "partner-x"), ("outcome", "denied")];
    assert_eq!(envoy.metric(CLIENT_REQUESTS, &partner_denied), 2);
    let anonymous = [("outcome", "allowed_anonymous")];
    assert_eq!(envoy.metric(REQUESTS, &anonymous), 1);
}

#[test]
fn forged_identity_headers_never_reach_the_upstream() {
    let (upstream, envoy) = start(&config(&far_future()));
    let client = envoy.client();
    let forged = [
        ("x-client-id", "team-a"),
        ("x-client-scopes", "orders:write admin"),
    ];
    for path in ["/health", "/public/x"] {
        assert_eq!(client.send("GET", path, &forged, b"").status, 200);
        let seen = upstream_saw(&upstream);
        assert_eq!(seen["headers"].get("x-client-id"), None, "{path}: {seen}");
        assert_eq!(
            seen["headers"].get("x-client-scopes"),
            None,
            "{path}: {seen}"
        );
    }
    let mut with_key = forged.to_vec();
    with_key.push(("x-api-key", PARTNER));
    assert_eq!(client.send("GET", "/orders", &with_key, b"").status, 200);
    let seen = upstream_saw(&upstream);
    assert_eq!(seen["headers"]["x-client-id"], "partner-x");
    assert_eq!(seen["headers"]["x-client-scopes"], "orders:read");
}

#[test]
fn rotation_old_and_new_key_then_the_old_one_retires() {
    // Whole seconds (RFC 3339 as written), far enough ahead that Envoy is serving well before.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let retire_at = UNIX_EPOCH + Duration::from_secs(now + 20);
    let (_upstream, envoy) = start(&config(&rfc3339(retire_at)));
    let client = envoy.client();
    let old = [("x-api-key", TEAM_A)];
    let next = [("x-api-key", TEAM_A_NEXT)];
    assert_eq!(
        client.send("GET", "/orders", &old, b"").status,
        200,
        "old key still valid"
    );
    assert_eq!(
        client.send("GET", "/orders", &next, b"").status,
        200,
        "new key from the env"
    );
    // Wait until the old key's not_after has passed.
    while SystemTime::now() < retire_at {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_refused(
        &client.send("GET", "/orders", &old, b""),
        401,
        "invalid_api_key",
    );
    assert_eq!(client.send("GET", "/orders", &next, b"").status, 200);
}

#[test]
fn invalid_configurations_are_refused_with_their_path() {
    let mut bad = config(&far_future());
    bad["rules"][2]["allowed_clients"] = json!(["team-b"]);
    let result = std::panic::catch_unwind(|| start(&bad));
    let message = match result {
        Ok(_) => panic!("Envoy accepted an invalid configuration"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains(
            "wasmgate key-auth: invalid configuration at rules[2].allowed_clients[0]: no client has the id"
        ),
        "{message}"
    );
    assert!(
        !message.contains(PARTNER) && !message.contains(TEAM_A_NEXT),
        "no key in the log"
    );
}

#[test]
fn a_hundred_thousand_keys() {
    const CLIENTS: usize = 100_000;
    let key = |i: usize| format!("bulk-client-key-{i:08}-padding");
    let clients: Vec<Value> = (0..CLIENTS)
        .map(|i| json!({"id": format!("c{i}"), "keys": [{"sha256": sha256_hex(&key(i))}]}))
        .collect();
    let config = json!({"clients": clients});
    let started = Instant::now();
    let (_upstream, envoy) = start(&config);
    let loaded = started.elapsed();
    let client = envoy.client();
    for i in [0, 54_321, CLIENTS - 1] {
        let response = client.send("GET", "/", &[("x-api-key", &key(i))], b"");
        assert_eq!(response.status, 200, "client {i}: {}", response.text());
    }
    let response = client.send("GET", "/", &[("x-api-key", &key(CLIENTS))], b"");
    assert_refused(&response, 401, "invalid_api_key");
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", envoy.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").to_string())
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "100,000 keys: config {} bytes, Envoy ready in {loaded:?}, resident {} MiB",
        config.to_string().len(),
        rss_kib / 1024
    );
    assert!(
        rss_kib < 2 * 1024 * 1024,
        "Envoy holds {rss_kib} KiB with 100,000 keys"
    );
}

/// The shipped `envoy/key-auth.yaml` runs as documented (ports and module path adapted).
#[test]
fn shipped_envoy_config_runs_as_documented() {
    let upstream = Upstream::start();
    let text = std::fs::read_to_string(wasmgate_e2e::repo_root().join("envoy/key-auth.yaml"))
        .expect("envoy/key-auth.yaml");
    let module = wasmgate_e2e::wasm_dir().join("key_auth.wasm");
    let config = text
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace(
            "port_value: 18080",
            &format!("port_value: {}", upstream.port()),
        )
        .replace("dist/key_auth.wasm", &module.display().to_string());
    let envoy = Envoy::start_config(&config, EnvoyOptions::default());
    let client = envoy.client();
    let team_a = [("x-api-key", "wg_demo_team_a_key_not_for_production")];
    let next = [(
        "authorization",
        "Bearer wg_demo_team_a_next_key_not_for_production",
    )];
    let partner = [("x-api-key", "wg_demo_partner_key_not_for_production")];
    assert_eq!(client.send("POST", "/orders", &team_a, b"{}").status, 200);
    assert_eq!(client.send("POST", "/orders", &next, b"{}").status, 200);
    assert_refused(
        &client.send("POST", "/orders", &partner, b"{}"),
        403,
        "insufficient_scope",
    );
    assert_refused(
        &client.send("GET", "/admin", &partner, b""),
        403,
        "client_not_allowed",
    );
    assert_refused(&client.get("/orders"), 401, "missing_api_key");
    assert_eq!(client.get("/public/x").status, 200);
    assert_eq!(client.get("/health").status, 200);
}

/// The recipe "rate limit per API client": rate-limit keyed on the client id key-auth forwards.
/// Each client has its own quota, whichever of its keys or sources it uses, and a forged
/// x-client-id cannot spend another client's quota or escape its own.
#[test]
fn rate_limit_per_api_client() {
    let upstream = Upstream::start();
    let limit = json!({"rules": [{"match": {}, "key": [{"header": "x-client-id"}],
        "limits": [{"name": "per_client", "requests": 2, "window": "1h", "algorithm": "token_bucket"}]}]});
    let envoy = Envoy::start_with(
        "key-auth-rate-limit.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("KEY_AUTH_CONFIG", config(&far_future()).to_string()),
            ("RATE_LIMIT_CONFIG", limit.to_string()),
        ],
        EnvoyOptions {
            env: vec![("KEY_AUTH_E2E_NEXT".into(), TEAM_A_NEXT.into())],
            ..EnvoyOptions::default()
        },
    );
    let client = envoy.client();
    let status = |headers: &[(&str, &str)]| client.send("GET", "/orders", headers, b"").status;
    let bearer = format!("Bearer {TEAM_A_NEXT}");
    assert_eq!(status(&[("x-api-key", TEAM_A)]), 200);
    assert_eq!(
        status(&[("authorization", &bearer)]),
        200,
        "another key of team-a"
    );
    assert_eq!(
        status(&[("x-api-key", TEAM_A), ("x-client-id", "partner-x")]),
        429
    );
    assert_eq!(
        status(&[("x-api-key", PARTNER), ("x-client-id", "team-a")]),
        200
    );
    assert_eq!(status(&[("x-api-key", PARTNER)]), 200);
    assert_eq!(status(&[("x-api-key", PARTNER)]), 429);
}
