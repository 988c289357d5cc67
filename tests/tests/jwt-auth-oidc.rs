//! jwt-auth against a real OpenID provider: the npm package `oidc-provider` (OpenID Certified)
//! runs on loopback (`tests/oidc/provider.mjs`) and serves discovery, its JWKS and
//! client-credentials access tokens; jwt-auth finds the keys through discovery, and Envoy's
//! native jwt_authn in the same Envoy verifies the same tokens for comparison.
//!
//! Needs `node` and `npm`: the provider's packages are installed into `tests/oidc/node_modules`
//! with `npm ci` when absent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use wasmgate_e2e::{Client, Envoy, EnvoyOptions, NodeServer, Response, Upstream};

/// The OpenID provider, killed on drop.
struct Oidc {
    node: NodeServer,
    port: u16,
}

impl Oidc {
    fn start() -> Self {
        Self::start_with(None, "oidc-1")
    }

    /// Starts the provider on `port` (any free port when `None`), signing with key `kid`.
    fn start_with(port: Option<u16>, kid: &str) -> Self {
        let env = [
            ("OIDC_PORT", port.unwrap_or(0).to_string()),
            ("OIDC_KID", kid.to_string()),
        ];
        let node = NodeServer::start("oidc", "oidc-provider", "provider.mjs", &env);
        let port = node.port;
        Self { node, port }
    }

    fn issuer(&self) -> String {
        self.node.base()
    }

    /// A client-credentials access token for `client` ("service" or "large-service").
    fn token_for(&self, client: &str, params: &[(&str, &str)]) -> String {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client}:{client}-secret-for-tests-only"));
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(params);
        if !params.iter().any(|(k, _)| *k == "scope") {
            form.push(("scope", "read write"));
        }
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect();
        let r = Client::new(self.issuer()).send(
            "POST",
            "/token",
            &[
                ("authorization", &format!("Basic {basic}")),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body.join("&").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_string()
    }
}

impl Oidc {
    /// A client-credentials access token for the "service" client.
    fn token(&self, params: &[(&str, &str)]) -> String {
        self.token_for("service", params)
    }
}

fn wasm_config(oidc: &Oidc, issuer: &str) -> Value {
    json!({
        "providers": {"idp": {
            "issuer": issuer,
            "audiences": ["api.example.com"],
            "remote_jwks": {
                "http_uri": {
                    "uri": format!("{}/.well-known/openid-configuration", oidc.issuer()),
                    "cluster": "idp",
                    "timeout": "2s"
                }
            },
            "claim_to_headers": [
                {"header_name": "x-jwt-sub", "claim_name": "sub"},
                {"header_name": "x-jwt-groups", "claim_name": "groups"},
                {"header_name": "x-jwt-scope", "claim_name": "scope"},
                {"header_name": "x-jwt-tenant", "claim_name": "https://example.com/tenant"}
            ]
        }},
        "rules": [{"match": {"path_prefix": "/write"}, "claims": {"scope": {"all_of": ["read", "write"]}}}]
    })
}

fn start(oidc: &Oidc, config: &Value) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "jwt-auth-oidc.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("IDP_PORT", oidc.port.to_string()),
            ("JWT_CONFIG", config.to_string()),
        ],
        EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::default()
        },
    );
    (upstream, envoy)
}

fn get(envoy: &Envoy, listener: &str, path: &str, token: &str) -> Response {
    envoy.client_for(listener).send(
        "GET",
        path,
        &[("authorization", &format!("Bearer {token}"))],
        b"",
    )
}

fn seen(r: &Response, name: &str) -> Option<String> {
    r.json()["headers"]
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Key-set fetches of the `idp` provider (discovery included) with this outcome.
fn fetches(envoy: &Envoy, outcome: &str) -> u64 {
    let labels = [("outcome", outcome), ("provider", "idp")];
    envoy.metric("wasmgate_jwt_auth_jwks_fetches_total", &labels)
}

/// Introspections of the `opaque` provider with this outcome.
fn introspections(envoy: &Envoy, outcome: &str) -> u64 {
    let labels = [("outcome", outcome), ("provider", "opaque")];
    envoy.metric("wasmgate_jwt_auth_introspections_total", &labels)
}

#[test]
fn discovery_finds_the_providers_keys_and_tokens_match_jwt_authn() {
    let oidc = Oidc::start();
    let (_upstream, envoy) = start(&oidc, &wasm_config(&oidc, &oidc.issuer()));
    let small = oidc.token(&[]);
    let large = oidc.token_for("large-service", &[]);
    assert!(large.len() > 11_000, "{}", large.len());
    for (token, client) in [(&small, "service"), (&large, "large-service")] {
        let wasm = get(&envoy, "main", "/api", token);
        let native = get(&envoy, "native", "/api", token);
        assert_eq!(wasm.status, 200, "{}", wasm.text());
        assert_eq!(native.status, 200, "{}", native.text());
        for header in ["x-jwt-sub", "x-jwt-groups", "x-jwt-scope"] {
            assert!(seen(&wasm, header).is_some(), "{header}");
            assert_eq!(seen(&wasm, header), seen(&native, header), "{header}");
        }
        assert_eq!(seen(&wasm, "x-jwt-sub").as_deref(), Some(client));
        assert_eq!(seen(&wasm, "x-jwt-tenant").as_deref(), Some("acme"));
    }
    // all_of on the space-delimited scope.
    assert_eq!(get(&envoy, "main", "/write", &small).status, 200);
    let read_only = oidc.token(&[("scope", "read")]);
    let r = get(&envoy, "main", "/write", &read_only);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "insufficient_scope");
    // A token of the same provider with a changed payload does not verify.
    let mut parts: Vec<String> = small.split('.').map(str::to_string).collect();
    parts[1] = large.split('.').nth(1).unwrap().to_string();
    let spliced = parts.join(".");
    assert_eq!(get(&envoy, "main", "/api", &spliced).status, 401);
    assert_eq!(get(&envoy, "native", "/api", &spliced).status, 401);
    // One discovery and one key fetch for all of that.
    assert_eq!(fetches(&envoy, "success"), 1);
}

#[test]
fn a_discovery_document_of_another_issuer_is_never_used() {
    let oidc = Oidc::start();
    // The configured issuer differs from the document's (a trailing slash is another issuer).
    let config = wasm_config(&oidc, &format!("{}/", oidc.issuer()));
    let (_upstream, envoy) = start(&oidc, &config);
    // The filter fetches at start; the document is refused, with the reason in the log.
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fetches(&envoy, "failure") == 0 {
        assert!(std::time::Instant::now() < limit, "no failed discovery");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(fetches(&envoy, "success"), 0);
    assert!(
        envoy.log().contains("issuer is not the provider's issuer"),
        "the log says why"
    );
    // Its tokens (iss without the slash) are of an unknown issuer for this provider.
    let token = oidc.token(&[]);
    let r = get(&envoy, "main", "/api", &token);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_issuer");
}

#[test]
fn opaque_tokens_are_introspected_and_cached() {
    let oidc = Oidc::start();
    let mut config = wasm_config(&oidc, &oidc.issuer());
    config["providers"]["opaque"] = json!({
        "issuer": oidc.issuer(),
        "audiences": ["api.example.com"],
        "introspection": {
            "http_uri": {
                "uri": format!("{}/token/introspection", oidc.issuer()),
                "cluster": "idp",
                "timeout": "2s"
            },
            "client_id": "gateway",
            "client_secret": {"value": "gateway-secret-for-tests-only"}
        },
        "forward_payload_header": "x-introspection",
        "claim_to_headers": [
            {"header_name": "x-jwt-client", "claim_name": "client_id"},
            {"header_name": "x-jwt-groups", "claim_name": "groups", "array_format": "comma_separated"}
        ]
    });
    let (_upstream, envoy) = start(&oidc, &config);
    let opaque = oidc.token(&[("resource", "urn:example:opaque")]);
    assert_eq!(opaque.matches('.').count(), 0, "an opaque token: {opaque}");
    // Eight requests with one new token at once: one introspection, every request answered
    // (the others wait for the first one's answer, coalesced in shared data).
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| get(&envoy, "main", "/api", &opaque).status))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; 8]);
    for _ in 0..3 {
        let r = get(&envoy, "main", "/api", &opaque);
        assert_eq!(r.status, 200, "{}", r.text());
        // oidc-provider's introspection of a client-credentials token has client_id, no sub.
        assert_eq!(seen(&r, "x-jwt-client").as_deref(), Some("service"));
        assert_eq!(seen(&r, "x-jwt-groups").as_deref(), Some("g1,g2"));
        assert!(seen(&r, "x-introspection").is_some());
        assert_eq!(
            seen(&r, "authorization"),
            None,
            "the token is not forwarded"
        );
    }
    // One introspection for three requests: the answer is cached in shared data.
    assert_eq!(introspections(&envoy, "success"), 1);
    // An unknown opaque token: inactive (401), and the JWT provider still serves JWTs without
    // asking the introspection endpoint.
    let r = get(&envoy, "main", "/api", "not-a-token-the-provider-issued");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "token_inactive");
    let jwt = oidc.token(&[]);
    assert_eq!(get(&envoy, "main", "/api", &jwt).status, 200);
    assert_eq!(introspections(&envoy, "success"), 2);
    // Wrong client credentials: the endpoint refuses, the request is denied (fail closed).
    config["providers"]["opaque"]["introspection"]["client_secret"] = json!({"value": "wrong"});
    let (_upstream2, envoy2) = start(&oidc, &config);
    let r = get(&envoy2, "main", "/api", &opaque);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "introspection_failed");
    assert_eq!(introspections(&envoy2, "failure"), 1);
    assert!(!envoy2.log().contains("gateway-secret-for-tests-only"));
    assert!(!envoy2.log().contains(&opaque), "no token in the log");
}

#[test]
fn a_rotated_provider_key_is_found_through_discovery_on_its_unknown_kid() {
    let first = Oidc::start_with(None, "oidc-1");
    let port = first.port;
    let (_upstream, envoy) = start(&first, &wasm_config(&first, &first.issuer()));
    let old = first.token(&[]);
    assert_eq!(get(&envoy, "main", "/api", &old).status, 200);
    // The provider restarts with a new key (same issuer, same port).
    drop(first);
    let second = Oidc::start_with(Some(port), "oidc-2");
    let new = second.token(&[]);
    // An unknown kid: discovery and the key set are fetched again, the request waits for them.
    let r = get(&envoy, "main", "/api", &new);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fetches(&envoy, "success"), 2);
    // The old key is gone with the old set (and no new refetch within 30 s).
    let r = get(&envoy, "main", "/api", &old);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_key");
    assert_eq!(fetches(&envoy, "success"), 2);
}
