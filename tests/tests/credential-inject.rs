//! credential-inject end-to-end against a real OAuth2 server: the npm package `oidc-provider`
//! runs the client-credentials grant on loopback (`tests/oidc/client-credentials.mjs`), and a
//! real Envoy with two workers injects its tokens into requests to the echo upstream. Every token
//! the upstream sees is checked at the server's introspection endpoint. Covered: one fetch per
//! Envoy process, `client_secret_basic` and `client_secret_post`, refresh before expiry, the
//! server's outage (the current token kept until it expires, then 503, then recovery), a 401
//! from the upstream dropping the token, static header credentials per host, `overwrite`, no
//! secret or token in Envoy's log, and configuration errors.
//!
//! Needs `node` and `npm`: the server's packages are installed into `tests/oidc/node_modules`
//! with `npm ci` when absent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wasmgate_e2e::{
    repo_root, Client, Envoy, EnvoyOptions, NodeServer, Response, Scripted, Upstream,
};

/// The OAuth2 server, killed on drop.
struct Server {
    node: NodeServer,
    port: u16,
}

impl Server {
    /// Starts the server with tokens valid `ttl` seconds, on `port` (0: any free port).
    fn start(ttl: u64, port: u16) -> Self {
        let node = NodeServer::start(
            "oidc",
            "oidc-provider",
            "client-credentials.mjs",
            &[("TOKEN_TTL", ttl.to_string()), ("PORT", port.to_string())],
        );
        let port = node.port;
        Self { node, port }
    }

    /// Whether the server says `token` is an active token of client "orders".
    fn active(&self, token: &str) -> bool {
        let basic =
            base64::engine::general_purpose::STANDARD.encode("orders:orders-secret-for-tests-only");
        let r = Client::new(self.node.base()).send(
            "POST",
            "/token/introspection",
            &[
                ("authorization", &format!("Basic {basic}")),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            format!("token={token}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["active"] == json!(true)
    }
}

const SECRET_ENV: &str = "CREDENTIAL_E2E_SECRET";

fn config(client: &str, auth: &str, extra: Value) -> Value {
    let mut config = json!({
        "credentials": {
            "payments": {"oauth2": {
                "token_endpoint": {"cluster": "idp", "uri": "http://idp.example/token", "timeout": "2s"},
                "client_id": client, "client_secret": {"env": SECRET_ENV},
                "auth": auth, "scopes": ["payments:write"]}},
            "crm": {"header": {"name": "x-api-key", "value": {"value": "crm-key-for-tests-only"}}}
        },
        "use": "payments",
        "rules": [{"match": {"hosts": ["api.crm.example"]}, "use": "crm"}]
    });
    if let (Some(target), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        target.extend(extra.clone());
    }
    config
}

fn start(server: &Server, upstream: &Upstream, config: &Value, secret: &str) -> Envoy {
    Envoy::start_with(
        "credential-inject.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("IDP_PORT", server.port.to_string()),
            ("CONFIG", config.to_string()),
        ],
        EnvoyOptions {
            concurrency: 2,
            env: vec![(SECRET_ENV.into(), secret.into())],
            ..EnvoyOptions::default()
        },
    )
}

/// A request to the third-party API through Envoy on a new connection (so both workers serve).
fn call(envoy: &Envoy, host: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("host", host), ("connection", "close")];
    all.extend_from_slice(headers);
    envoy.client().send("POST", "/v1/charges", &all, b"{}")
}

/// The token the upstream saw on its last request.
fn seen_token(upstream: &Upstream) -> String {
    let last = upstream
        .received()
        .last()
        .cloned()
        .expect("the upstream got a request");
    let authorization = last["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("no Bearer token upstream: {last}"))
        .to_string()
}

/// Sends requests until `done` holds for one, for at most `within`.
fn until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn assert_no_secrets(envoy: &Envoy, secrets: &[&str]) {
    let log = envoy.log();
    for secret in secrets {
        assert!(!log.contains(secret), "a secret or token is in Envoy's log");
    }
}

/// The label of the `payments` credential's metrics.
const PAYMENTS: (&str, &str) = ("credential", "payments");

/// The sum of metric `wasmgate_credential_inject_<what>` over its series carrying `labels`.
fn metric(envoy: &Envoy, what: &str, labels: &[(&str, &str)]) -> u64 {
    envoy.metric(&format!("wasmgate_credential_inject_{what}"), labels)
}

#[test]
fn one_token_per_process_shared_by_every_worker() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders", "basic", json!({})),
        "orders-secret-for-tests-only",
    );
    let mut tokens = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let response = call(&envoy, "api.payments.example", &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        tokens.insert(seen_token(&upstream));
    }
    assert_eq!(
        tokens.len(),
        1,
        "one token for the whole process: {tokens:?}"
    );
    let token = tokens.into_iter().next().unwrap();
    assert!(server.active(&token), "a genuine token of the server");
    let fetched = [("outcome", "success"), PAYMENTS];
    assert_eq!(metric(&envoy, "token_fetches_total", &fetched), 1);
    assert_eq!(metric(&envoy, "injected_total", &[PAYMENTS]), 12);
    assert_no_secrets(&envoy, &["orders-secret-for-tests-only", &token]);
}

#[test]
fn client_secret_post_and_static_headers() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders-post", "body", json!({})),
        "orders-post-secret-for-tests-only",
    );
    let response = call(&envoy, "api.payments.example", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    let token = seen_token(&upstream);
    // The crm host gets its static key, and a client's own key is kept (overwrite is false).
    assert_eq!(call(&envoy, "api.crm.example", &[]).status, 200);
    let last = upstream.received().last().cloned().unwrap();
    assert_eq!(last["headers"]["x-api-key"], "crm-key-for-tests-only");
    assert_eq!(
        last["headers"].get("authorization"),
        None,
        "no token for the crm host"
    );
    assert_eq!(
        call(&envoy, "api.crm.example", &[("x-api-key", "own")]).status,
        200
    );
    assert_eq!(
        upstream.received().last().unwrap()["headers"]["x-api-key"],
        "own"
    );
    assert_eq!(metric(&envoy, "kept_client_credential_total", &[]), 1);
    let crm = [("credential", "crm")];
    assert_eq!(metric(&envoy, "injected_total", &crm), 1);
    assert_no_secrets(
        &envoy,
        &[
            "orders-post-secret-for-tests-only",
            &token,
            "crm-key-for-tests-only",
        ],
    );
}

#[test]
fn a_wrong_client_secret_gets_503_and_no_credential_goes_upstream() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders", "basic", json!({})),
        "not-the-secret",
    );
    let response = call(&envoy, "api.payments.example", &[]);
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.json()["error"], "credential_unavailable");
    assert_eq!(upstream.attempts(), 0);
    let failed = [("outcome", "failure"), PAYMENTS];
    assert!(metric(&envoy, "token_fetches_total", &failed) >= 1);
    let refused = [("outcome", "refused"), PAYMENTS];
    assert_eq!(metric(&envoy, "unavailable_total", &refused), 1);
    assert_no_secrets(&envoy, &["not-the-secret"]);
}

#[test]
fn tokens_are_refreshed_before_they_expire() {
    // 4 s tokens: refreshed at half their lifetime, so requests never carry an expired one.
    let server = Server::start(4, 0);
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders", "basic", json!({})),
        "orders-secret-for-tests-only",
    );
    assert_eq!(call(&envoy, "api.payments.example", &[]).status, 200);
    let first = seen_token(&upstream);
    let refreshed = until(Duration::from_secs(20), || {
        let response = call(&envoy, "api.payments.example", &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        let token = seen_token(&upstream);
        assert!(server.active(&token), "every token sent is active");
        token != first
    });
    assert!(refreshed, "a new token within 20 s");
}

#[test]
fn outage_keeps_the_token_until_it_expires_then_503_then_recovers() {
    let server = Server::start(6, 0);
    let port = server.port;
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders", "basic", json!({})),
        "orders-secret-for-tests-only",
    );
    assert_eq!(call(&envoy, "api.payments.example", &[]).status, 200);
    drop(server);
    // The current token is still used right after the server went away...
    assert_eq!(call(&envoy, "api.payments.example", &[]).status, 200);
    // ...until it expires: then 503, with nothing sent upstream without a credential.
    let denied = until(Duration::from_secs(20), || {
        let response = call(&envoy, "api.payments.example", &[]);
        response.status == 503 && response.json()["error"] == "credential_unavailable"
    });
    assert!(denied, "503 credential_unavailable once the token expired");
    let restarted = Server::start(6, port);
    let recovered = until(Duration::from_secs(45), || {
        call(&envoy, "api.payments.example", &[]).status == 200
    });
    assert!(recovered, "a new token once the server is back");
    assert!(restarted.active(&seen_token(&upstream)));
}

#[test]
fn an_upstream_401_drops_the_token_and_a_new_one_is_fetched() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders", "basic", json!({})),
        "orders-secret-for-tests-only",
    );
    assert_eq!(call(&envoy, "api.payments.example", &[]).status, 200);
    let first = seen_token(&upstream);
    upstream.script([Scripted::status(401)]);
    assert_eq!(
        call(&envoy, "api.payments.example", &[]).status,
        401,
        "the upstream's answer"
    );
    let replaced = until(Duration::from_secs(20), || {
        call(&envoy, "api.payments.example", &[]).status == 200 && seen_token(&upstream) != first
    });
    assert!(replaced, "a new token after the 401");
    assert_eq!(metric(&envoy, "token_purged_total", &[PAYMENTS]), 1);
}

#[test]
fn invalid_configurations_are_refused_with_their_path() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let bad = config("orders", "basic", json!({"use": "payment"}));
    let result = std::panic::catch_unwind(|| {
        start(&server, &upstream, &bad, "orders-secret-for-tests-only")
    });
    let message = match result {
        Ok(_) => panic!("Envoy accepted an invalid configuration"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains("wasmgate credential-inject: invalid configuration at use: no credential is named \"payment\""),
        "{message}"
    );
    assert!(!message.contains("orders-secret-for-tests-only"));
}

/// The shipped `envoy/credential-inject.yaml` runs as documented (ports and module path adapted).
#[test]
fn shipped_envoy_config_runs_as_documented() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let text = std::fs::read_to_string(repo_root().join("envoy/credential-inject.yaml"))
        .expect("envoy/credential-inject.yaml");
    let module = wasmgate_e2e::wasm_dir().join("credential_inject.wasm");
    let config = text
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace(
            "port_value: 18080",
            &format!("port_value: {}", upstream.port()),
        )
        .replace("port_value: 19000", &format!("port_value: {}", server.port))
        .replace("dist/credential_inject.wasm", &module.display().to_string());
    let envoy = Envoy::start_config(&config, EnvoyOptions::default());
    assert_eq!(call(&envoy, "api.payments.example", &[]).status, 200);
    assert!(server.active(&seen_token(&upstream)));
    assert_eq!(call(&envoy, "api.crm.example", &[]).status, 200);
    let last = upstream.received().last().cloned().unwrap();
    assert_eq!(
        last["headers"]["x-api-key"],
        "demo-crm-key-not-for-production"
    );
}

/// Requests that arrive together before the first token all wait for it and all reach the
/// upstream with it (the frame resumes every waiting stream, on every worker).
#[test]
fn concurrent_requests_waiting_for_the_first_token_all_pass() {
    let server = Server::start(600, 0);
    let upstream = Upstream::start();
    let envoy = start(
        &server,
        &upstream,
        &config("orders", "basic", json!({})),
        "orders-secret-for-tests-only",
    );
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let envoy = &envoy;
                scope.spawn(move || {
                    let method = if i % 2 == 0 { "GET" } else { "POST" };
                    let headers = [("host", "api.payments.example"), ("connection", "close")];
                    envoy
                        .client()
                        .send(method, "/v1/charges", &headers, b"")
                        .status
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; 8], "{}", envoy.log());
    assert_eq!(upstream.attempts(), 8);
}
