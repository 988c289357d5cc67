//! hmac-auth `replay.global`: two Envoys share one replay memory through the rate limit service
//! (the test's Limitador-backed `envoy.service.ratelimit.v3` service, as rate-limit's global mode
//! uses it), with the delivery's replay id as the descriptor `hmac_replay_id` and a limit of 1 per
//! `replay.ttl`. A copy sent to the other Envoy is refused with 409 (its outcome there is
//! unknown, so it is not acknowledged); the service down follows `failure_mode`.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use hmac::{Hmac, Mac};
use ratelimit_service::Service;
use serde_json::{json, Value};
use sha2::Sha256;
use std::net::TcpListener;
use wasmgate_e2e::{Envoy, Response, Scripted, Upstream};

const SECRET: &str = "global-github-secret";

fn signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn config(failure_mode: &str) -> Value {
    json!({
        "scheme": "github",
        "secrets": [{"id": "gh", "value": SECRET}],
        "replay": {"ttl": "10m", "global": {"cluster": "ratelimit", "domain": "webhooks",
                                            "timeout": "2s", "failure_mode": failure_mode}},
    })
}

fn start(config: &Value, upstream: &Upstream, rls_port: u16) -> Envoy {
    Envoy::start(
        "hmac-auth-global.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config.to_string()),
            ("FIXED_ENV", "unused".to_string()),
            ("RLS_PORT", rls_port.to_string()),
        ],
    )
}

fn deliver(envoy: &Envoy, body: &str) -> Response {
    envoy.client().send(
        "POST",
        "/hooks",
        &[("x-hub-signature-256", &signature(body))],
        body.as_bytes(),
    )
}

#[track_caller]
fn assert_error(response: &Response, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error);
}

#[test]
fn two_envoys_share_one_replay_memory() {
    // Limitador's limit: 1 per replay ttl per replay id, in the domain's namespace.
    let limits = json!([{"namespace": "webhooks", "max_value": 1, "seconds": 600,
        "name": "replay", "conditions": [], "variables": ["descriptors[0].hmac_replay_id"]}]);
    let service = Service::start(&limits.to_string()).unwrap();
    let upstream = Upstream::start();
    let a = start(&config("deny"), &upstream, service.port);
    let b = start(&config("deny"), &upstream, service.port);

    let body = r#"{"action": "opened", "n": 1}"#;
    assert_eq!(deliver(&a, body).status, 200);
    // The same delivery at the other Envoy: refused there, never forwarded.
    assert_error(&deliver(&b, body), 409, "replayed");
    // At the first Envoy its local memory acknowledges it (it knows the upstream took it).
    let again = deliver(&a, body);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-wasmgate-duplicate"), Some("true"));
    // Another delivery passes at either.
    assert_eq!(deliver(&b, r#"{"action": "opened", "n": 2}"#).status, 200);
    assert_eq!(upstream.attempts(), 2);
    assert_eq!(b.metric("wasmgate_hmac_auth_replays_total", &[]), 1);
    // The service counts without taking back: a delivery whose upstream attempt failed is
    // refused when the sender retries it within the ttl (README: "Replay memory across Envoys").
    upstream.script([Scripted::status(503)]);
    let failed = r#"{"action": "opened", "n": 3}"#;
    assert_eq!(deliver(&a, failed).status, 503);
    assert_error(&deliver(&a, failed), 409, "replayed");
    assert_eq!(upstream.attempts(), 3);
    assert_eq!(b.metric("wasmgate_hmac_auth_replays_total", &[]), 1);
    assert!(service.calls() >= 3);
}

#[test]
fn service_down_follows_failure_mode() {
    // A port nothing listens on.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let upstream = Upstream::start();
    let deny = start(&config("deny"), &upstream, port);
    assert_error(&deliver(&deny, r#"{"n": 1}"#), 503, "replay_unavailable");
    assert_eq!(
        deny.metric("wasmgate_hmac_auth_replay_unavailable_total", &[]),
        1
    );
    let allow = start(&config("allow"), &upstream, port);
    assert_eq!(deliver(&allow, r#"{"n": 2}"#).status, 200);
    // The local memory still works without the service.
    let copy = deliver(&allow, r#"{"n": 2}"#);
    assert_eq!(copy.header("x-wasmgate-duplicate"), Some("true"));
    assert_eq!(upstream.attempts(), 1);
}
