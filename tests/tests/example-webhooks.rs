//! examples/webhooks in a real Envoy: the shipped `envoy.yaml` (only its ports, module directory
//! and receiver address replaced), the secrets from Envoy's environment as docker-compose.yaml
//! passes them. Signed GitHub and Stripe deliveries are accepted, tampered ones refused,
//! redeliveries acknowledged (200, `x-wasmgate-duplicate: true`) without reaching the receiver,
//! a delivery whose first attempt gets 503 is retried and succeeds, and a delivery that finally
//! failed can be redelivered.

// Test code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, wasm_dir, Envoy, EnvoyOptions, Response, Scripted, Upstream};

const GITHUB_SECRET: &str = "test-github-secret";
const STRIPE_SECRET: &str = "whsec_test_stripe_secret";

/// The example's own envoy.yaml with free ports, the built modules and the test receiver.
fn example_config(receiver_port: u16) -> String {
    let path = repo_root().join("examples/webhooks/envoy.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let replacements = [
        ("/etc/wasmgate/", format!("{}/", wasm_dir().display())),
        ("address: 0.0.0.0", "address: 127.0.0.1".to_string()),
        ("port_value: 9901", "port_value: 0".to_string()),
        ("port_value: 10000", "port_value: 0".to_string()),
        (
            "address: receiver, port_value: 8080",
            format!("address: 127.0.0.1, port_value: {receiver_port}"),
        ),
    ];
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "examples/webhooks/envoy.yaml no longer contains {from:?}: update this test"
        );
        text = text.replace(from, &to);
    }
    text
}

fn start() -> (Upstream, Envoy) {
    let receiver = Upstream::start();
    let envoy = Envoy::start_config(
        &example_config(receiver.port()),
        EnvoyOptions {
            env: vec![
                ("GITHUB_WEBHOOK_SECRET".into(), GITHUB_SECRET.into()),
                ("STRIPE_WEBHOOK_SECRET".into(), STRIPE_SECRET.into()),
            ],
            ..EnvoyOptions::default()
        },
    );
    (receiver, envoy)
}

fn hmac_hex(key: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A GitHub delivery as GitHub sends it: the body signed in X-Hub-Signature-256.
fn github(envoy: &Envoy, path: &str, body: &str, signed_body: &str, delivery: &str) -> Response {
    let signature = format!("sha256={}", hmac_hex(GITHUB_SECRET, signed_body.as_bytes()));
    envoy.client().send(
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", &signature),
        ],
        body.as_bytes(),
    )
}

/// A Stripe event as Stripe sends it: `<t>.<body>` signed in Stripe-Signature.
fn stripe(envoy: &Envoy, body: &str, signed_body: &str, t: u64) -> Response {
    let payload = format!("{t}.{signed_body}");
    let signature = format!("t={t},v1={}", hmac_hex(STRIPE_SECRET, payload.as_bytes()));
    envoy.client().send(
        "POST",
        "/stripe/events",
        &[
            ("content-type", "application/json"),
            ("stripe-signature", &signature),
        ],
        body.as_bytes(),
    )
}

fn assert_refused(response: &Response, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

/// A copy of a delivery the receiver already took: acknowledged (200, `x-wasmgate-duplicate`)
/// without reaching the receiver, so the sender stops retrying.
#[track_caller]
fn assert_duplicate(response: &Response) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-wasmgate-duplicate"), Some("true"));
    assert_eq!(response.json()["duplicate"], true);
}

#[test]
fn github_deliveries_verified_duplicates_acknowledged_failures_retried() {
    let (receiver, envoy) = start();
    assert_eq!(envoy.client().get("/health").status, 200);

    // A signed delivery reaches the receiver once, unchanged.
    let body = r#"{"ref": "refs/heads/main", "after": "a1"}"#;
    let ok = github(&envoy, "/github/push", body, body, "d-1");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(receiver.attempts(), 1);
    assert_eq!(receiver.received()[0]["body"], body);
    assert_eq!(receiver.received()[0]["path"], "/github/push");

    // The same delivery again (even with a new delivery id, which GitHub does not sign):
    // acknowledged, not forwarded.
    assert_duplicate(&github(&envoy, "/github/push", body, body, "d-1"));
    assert_duplicate(&github(&envoy, "/github/push", body, body, "d-1b"));
    assert_eq!(receiver.attempts(), 1);

    // A tampered body, a wrong secret, no signature, a Stripe signature on the GitHub route:
    // refused, and the receiver sees none of it (the buffer filter holds the headers back).
    let tampered = r#"{"ref": "refs/heads/main", "after": "evil"}"#;
    assert_refused(
        &github(&envoy, "/github/push", tampered, body, "d-2"),
        401,
        "invalid_signature",
    );
    let forged = envoy.client().send(
        "POST",
        "/github/push",
        &[(
            "x-hub-signature-256",
            &format!("sha256={}", hmac_hex("not-the-secret", b"{}")),
        )],
        b"{}",
    );
    assert_refused(&forged, 401, "invalid_signature");
    let unsigned = envoy.client().send(
        "POST",
        "/github/push",
        &[("x-github-delivery", "d-3")],
        b"{}",
    );
    assert_refused(&unsigned, 401, "missing_signature");
    let t = now();
    let payload = format!("{t}.{{}}");
    let wrong_scheme = envoy.client().send(
        "POST",
        "/github/push",
        &[(
            "stripe-signature",
            &format!("t={t},v1={}", hmac_hex(GITHUB_SECRET, payload.as_bytes())),
        )],
        b"{}",
    );
    assert_refused(&wrong_scheme, 401, "missing_signature");
    assert_eq!(
        receiver.attempts(),
        1,
        "no refused delivery reached the receiver"
    );

    // The receiver fails the first attempt: the delivery is retried (same body) and succeeds.
    receiver.script([Scripted::status(503)]);
    let body = r#"{"ref": "refs/heads/main", "after": "b2"}"#;
    let retried = github(&envoy, "/github/push", body, body, "d-4");
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.header("x-wasmgate-retry-attempts"), Some("2"));
    assert_eq!(receiver.attempts(), 3);
    let received = receiver.received();
    assert_eq!(received[1]["body"], body);
    assert_eq!(
        received[2]["body"], body,
        "the retry carries the whole body"
    );
    // Delivered once for good: a redelivery of it is acknowledged, not forwarded.
    assert_duplicate(&github(&envoy, "/github/push", body, body, "d-4"));

    // The receiver fails every attempt: the sender gets the failure, and its own redelivery
    // later is accepted (a delivery is remembered only once the receiver took it).
    receiver.script([
        Scripted::status(503),
        Scripted::status(503),
        Scripted::status(503),
    ]);
    let body = r#"{"ref": "refs/heads/main", "after": "c3"}"#;
    let failed = github(&envoy, "/github/push", body, body, "d-5");
    assert_eq!(failed.status, 503, "{}", failed.text());
    assert_eq!(failed.header("x-wasmgate-retry-attempts"), Some("3"));
    assert_eq!(receiver.attempts(), 6);
    let redelivered = github(&envoy, "/github/push", body, body, "d-5");
    assert_eq!(redelivered.status, 200, "{}", redelivered.text());
    assert_eq!(receiver.attempts(), 7);

    assert_eq!(
        envoy.metric(
            "wasmgate_hmac_auth_requests_total",
            &[("outcome", "verified")]
        ),
        4
    );
    assert_eq!(envoy.metric("wasmgate_hmac_auth_duplicates_total", &[]), 3);
    assert_eq!(envoy.metric("wasmgate_hmac_auth_replays_total", &[]), 0);
    assert_eq!(envoy.metric("wasmgate_retry_retries_total", &[]), 3);
}

#[test]
fn stripe_events_verified_duplicates_acknowledged_failures_retried() {
    let (receiver, envoy) = start();

    let t = now();
    let body = r#"{"id": "evt_1", "type": "invoice.paid"}"#;
    let ok = stripe(&envoy, body, body, t);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(receiver.attempts(), 1);
    assert_eq!(receiver.received()[0]["body"], body);

    // Redelivered: acknowledged. Tampered, stale, signed with the GitHub secret: refused.
    // None of them reaches the receiver.
    assert_duplicate(&stripe(&envoy, body, body, t));
    let tampered = r#"{"id": "evt_1", "type": "invoice.voided"}"#;
    assert_refused(&stripe(&envoy, tampered, body, t), 401, "invalid_signature");
    let stale = t - 3600;
    let old = r#"{"id": "evt_0", "type": "invoice.paid"}"#;
    assert_refused(&stripe(&envoy, old, old, stale), 401, "stale_timestamp");
    let payload = format!("{t}.{body}");
    let wrong_secret = envoy.client().send(
        "POST",
        "/stripe/events",
        &[(
            "stripe-signature",
            &format!("t={t},v1={}", hmac_hex(GITHUB_SECRET, payload.as_bytes())),
        )],
        body.as_bytes(),
    );
    assert_refused(&wrong_secret, 401, "invalid_signature");
    assert_eq!(receiver.attempts(), 1);

    // First attempt 503: retried (Stripe events carry no idempotency key; the /stripe/ rule
    // retries them anyway) and delivered; a redelivery of it is acknowledged.
    receiver.script([Scripted::status(503)]);
    let body = r#"{"id": "evt_2", "type": "invoice.paid"}"#;
    let retried = stripe(&envoy, body, body, t);
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.header("x-wasmgate-retry-attempts"), Some("2"));
    assert_eq!(receiver.attempts(), 3);
    assert_eq!(receiver.received()[2]["body"], body);
    assert_duplicate(&stripe(&envoy, body, body, t));
    assert_eq!(receiver.attempts(), 3);

    assert_eq!(
        envoy.metric(
            "wasmgate_hmac_auth_requests_total",
            &[("outcome", "verified")]
        ),
        2
    );
    assert_eq!(
        envoy.metric(
            "wasmgate_hmac_auth_key_matched_total",
            &[("key_id", "stripe")]
        ),
        4,
        "replays included"
    );
}
