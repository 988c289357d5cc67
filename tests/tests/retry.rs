//! retry filter against a real Envoy and the scriptable upstream. The client is external to
//! Envoy (use_remote_address, only 10.0.0.0/8 internal), so these tests also prove which
//! `x-envoy-*` headers set by the filter Envoy's router honours for external requests.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wasmgate_e2e::{Client, Envoy, EnvoyOptions, Scripted, Upstream};

fn start(config: &Value) -> (Upstream, Envoy) {
    start_workers(config, 1)
}

fn start_workers(config: &Value, workers: u32) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "retry.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("RETRY_CONFIG", config.to_string()),
        ],
        EnvoyOptions {
            concurrency: workers,
            ..EnvoyOptions::default()
        },
    );
    (upstream, envoy)
}

/// Envoy with two upstreams (`retry-routes.yaml`): `backend` (routes `/`, and `/rewrite/`
/// rewritten to `/rewritten/`) and `second` (route `/second/`).
fn start_two(config: &Value) -> (Upstream, Upstream, Envoy) {
    let (upstream, second) = (Upstream::start(), Upstream::start());
    let envoy = Envoy::start(
        "retry-routes.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("SECOND_PORT", second.port().to_string()),
            ("RETRY_CONFIG", config.to_string()),
        ],
    );
    (upstream, second, envoy)
}

fn router(extra: Value) -> Value {
    let mut config = json!({"mode": "router", "backoff": {"base": "10ms", "max": "50ms"}});
    merge(&mut config, extra);
    config
}

fn filter(extra: Value) -> Value {
    let mut config = json!({
        "mode": "filter",
        "backoff": {"base": "10ms", "max": "100ms"},
        "filter_mode": {"loopback_cluster": "retry_loopback", "timeout": "5s", "max_body_bytes": 1024}
    });
    merge(&mut config, extra);
    config
}

/// Metric `wasmgate_retry_<what>` summed over its series carrying `labels`.
fn metric(envoy: &Envoy, what: &str, labels: &[(&str, &str)]) -> u64 {
    envoy.metric(&format!("wasmgate_retry_{what}"), labels)
}

fn merge(config: &mut Value, extra: Value) {
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
}

fn statuses(n: usize, status: u16) -> Vec<Scripted> {
    (0..n).map(|_| Scripted::status(status)).collect()
}

const ATTEMPTS: &str = "x-wasmgate-retry-attempts";

#[test]
fn router_mode_503_503_200_for_an_external_client() {
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 2,
        "retry_on": ["retriable-status-codes"],
        "retriable_status_codes": [503]
    })));
    upstream.script([Scripted::status(503), Scripted::status(503)]);
    let response = envoy.client().get("/r");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.attempts(), 3);
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    assert_eq!(metric(&envoy, "retries_total", &[]), 2);
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    assert!(
        prometheus
            .lines()
            .any(|l| l == r#"wasmgate_retry_retries_total{plugin="retry"} 2"#),
        "{prometheus}"
    );
    // The headers reached the router (and were consumed there, not sent upstream).
    let echo = &upstream.received()[2];
    assert_eq!(echo["headers"]["x-envoy-attempt-count"], Value::Null);
    // No retries: no attempts header.
    let plain = envoy.client().get("/r");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header(ATTEMPTS), None);
}

#[test]
fn router_honours_max_retries_and_retry_on_set_by_the_filter() {
    // Envoy's default is one retry; four attempts prove x-envoy-max-retries is honoured.
    let (upstream, envoy) = start(&router(json!({"max_retries": 3, "retry_on": ["5xx"]})));
    upstream.script(statuses(5, 500));
    let response = envoy.client().get("/r");
    assert_eq!(response.status, 500);
    assert_eq!(upstream.attempts(), 4);
    assert_eq!(response.header(ATTEMPTS), Some("4"));
}

#[test]
fn router_honours_retriable_status_codes_set_by_the_filter() {
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 1,
        "retry_on": ["retriable-status-codes"],
        "retriable_status_codes": [429]
    })));
    upstream.script([Scripted::status(429)]);
    let response = envoy.client().get("/r");
    assert_eq!(response.status, 200);
    assert_eq!(upstream.attempts(), 2);
}

#[test]
fn router_honours_per_try_timeout_set_by_the_filter() {
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 1,
        "retry_on": ["5xx"],
        "per_try_timeout": "200ms"
    })));
    upstream.script([Scripted::status(200)
        .body("slow")
        .delay(Duration::from_millis(1500))]);
    let response = envoy.client().get("/r");
    assert_eq!(response.status, 200);
    assert_ne!(response.text(), "slow", "the slow first attempt timed out");
    assert_eq!(upstream.attempts(), 2);
    assert!(envoy.stat("cluster.backend.upstream_rq_per_try_timeout") >= 1);
}

#[test]
fn router_mode_post_needs_an_idempotency_key() {
    let (upstream, envoy) = start(&router(json!({"max_retries": 2, "retry_on": ["5xx"]})));
    let client = envoy.client();
    upstream.script([Scripted::status(503)]);
    let response = client.send("POST", "/orders", &[], b"{}");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 1, "POST without a key: one attempt");
    assert_eq!(
        metric(&envoy, "retries_denied_total", &[("reason", "idempotency")]),
        1
    );
    upstream.script(statuses(2, 503));
    let response = client.send("POST", "/orders", &[("idempotency-key", "k-1")], b"{}");
    assert_eq!(response.status, 200);
    assert_eq!(upstream.attempts(), 4, "with a key: retried");
}

#[test]
fn filter_mode_503_503_200() {
    let (upstream, envoy) = start(&filter(json!({"max_retries": 2, "retry_on": ["5xx"]})));
    upstream.script([
        Scripted::status(503).body("first"),
        Scripted::status(503).body("second"),
        Scripted::status(200)
            .header("x-upstream", "final")
            .body("third"),
    ]);
    let response = envoy.client().send(
        "PUT",
        "/f/item?x=1",
        &[("content-type", "text/plain")],
        b"payload",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "third");
    assert_eq!(response.header("x-upstream"), Some("final"));
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    assert_eq!(upstream.attempts(), 3);
    for echo in upstream.received() {
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["path"], "/f/item");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["body"], "payload", "every attempt carries the body");
    }
    assert_eq!(metric(&envoy, "retries_total", &[]), 2);
}

#[test]
fn filter_mode_final_failure_is_passed_through() {
    let (upstream, envoy) = start(&filter(json!({"max_retries": 1, "retry_on": ["5xx"]})));
    upstream.script([
        Scripted::status(502),
        Scripted::status(504)
            .header("x-why", "gateway")
            .body("nope"),
    ]);
    let response = envoy.client().get("/f");
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "nope");
    assert_eq!(response.header("x-why"), Some("gateway"));
    assert_eq!(response.header(ATTEMPTS), Some("2"));
    assert_eq!(upstream.attempts(), 2);
}

#[test]
fn filter_mode_post_needs_an_idempotency_key() {
    let (upstream, envoy) = start(&filter(json!({"max_retries": 2, "retry_on": ["5xx"]})));
    let client = envoy.client();
    upstream.script([Scripted::status(503)]);
    let response = client.send("POST", "/orders", &[], b"{}");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 1);
    upstream.script(statuses(2, 503));
    let response = client.send("POST", "/orders", &[("Idempotency-Key", "k-1")], b"{}");
    assert_eq!(response.status, 200);
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    assert_eq!(upstream.attempts(), 4);
}

#[test]
fn filter_mode_large_body_gets_a_single_attempt() {
    let (upstream, envoy) = start(&filter(json!({"max_retries": 2, "retry_on": ["5xx"]})));
    upstream.script(statuses(3, 503));
    let big = vec![b'a'; 4096];
    let response = envoy.client().send("PUT", "/big", &[], &big);
    assert_eq!(response.status, 503);
    assert_eq!(
        upstream.attempts(),
        1,
        "over max_body_bytes: not buffered, not retried"
    );
    assert_eq!(upstream.received()[0]["body_len"], 4096);
}

#[test]
fn filter_mode_honours_retry_after() {
    let (upstream, envoy) = start(&filter(json!({"max_retries": 1, "retry_on": ["5xx"]})));
    upstream.script([Scripted::status(503).header("retry-after", "1")]);
    let started = Instant::now();
    let response = envoy.client().get("/f");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200);
    assert_eq!(upstream.attempts(), 2);
    assert!(
        elapsed >= Duration::from_millis(900),
        "Retry-After: 1 waited only {elapsed:?}"
    );
}

#[test]
fn filter_mode_budget_exhaustion_stops_retries() {
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "budget": {"ratio": 0.25, "min_per_second": 0}
    })));
    let client = envoy.client();
    for _ in 0..3 {
        assert_eq!(client.get("/ok").status, 200);
    }
    // 4 requests in the window allow 1 retry.
    upstream.script(statuses(3, 503));
    let response = client.get("/f");
    assert_eq!(response.status, 503);
    assert_eq!(
        upstream.attempts(),
        3 + 2,
        "one retry, then the budget is spent"
    );
    assert_eq!(response.header(ATTEMPTS), Some("2"));
    // 5 requests allow 1.25 retries: the second retry still does not fit.
    upstream.script([Scripted::status(503)]);
    let response = client.get("/f");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 3 + 2 + 1);
    assert_eq!(
        metric(&envoy, "retries_denied_total", &[("reason", "budget")]),
        2
    );
}

#[test]
fn router_mode_budget_exhaustion_stops_retries() {
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "budget": {"ratio": 0.25, "min_per_second": 0}
    })));
    let client = envoy.client();
    for _ in 0..3 {
        assert_eq!(client.get("/ok").status, 200);
    }
    upstream.script(statuses(3, 503));
    let response = client.get("/r");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 3 + 2, "the budget granted one retry");
    upstream.script([Scripted::status(503)]);
    assert_eq!(client.get("/r").status, 503);
    assert_eq!(upstream.attempts(), 3 + 2 + 1);
    // Every request granted fewer retries than its policy allows counts: the three warm-up
    // requests (the budget had no room for them yet), then the two above.
    assert_eq!(
        metric(&envoy, "retries_denied_total", &[("reason", "budget")]),
        5
    );
}

fn breaker_opens_half_opens_and_closes(config: &Value, attempts_per_request: usize) {
    let (upstream, envoy) = start(config);
    let client = envoy.client();
    upstream.script(statuses(3 * attempts_per_request, 503));
    for _ in 0..3 {
        assert_eq!(client.get("/cb").status, 503);
    }
    let attempts = upstream.attempts();
    assert_eq!(attempts, 3 * attempts_per_request);
    let backend = [("outcome", "opened"), ("upstream", "backend")];
    assert_eq!(metric(&envoy, "circuit_transitions_total", &backend), 1);
    let open = || metric(&envoy, "circuit_open", &[("upstream", "backend")]);
    assert_eq!(open(), 1);
    // Open: answered locally, the upstream sees nothing more.
    for _ in 0..3 {
        let response = client.get("/cb");
        assert_eq!(response.status, 503);
        assert_eq!(response.json()["error"], "circuit_open");
        let retry_after: u64 = response
            .header("retry-after")
            .expect("retry-after")
            .parse()
            .expect("seconds");
        assert_eq!(retry_after, 1, "open_for is 1s");
    }
    assert_eq!(upstream.attempts(), attempts, "attempts stop growing");
    let backend = [("upstream", "backend")];
    assert_eq!(metric(&envoy, "short_circuited_total", &backend), 3);
    // After open_for, one probe goes through; its success closes the circuit.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(client.get("/cb").status, 200);
    assert_eq!(upstream.attempts(), attempts + 1);
    assert_eq!(
        metric(
            &envoy,
            "circuit_transitions_total",
            &[("outcome", "closed")]
        ),
        1
    );
    assert_eq!(open(), 0);
    assert_eq!(client.get("/cb").status, 200);
    assert_eq!(upstream.attempts(), attempts + 2);
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    for series in [
        r#"wasmgate_retry_circuit_open{plugin="retry",upstream="backend"} 0"#,
        r#"wasmgate_retry_circuit_transitions_total{plugin="retry",outcome="opened",upstream="backend"} 1"#,
        r#"wasmgate_retry_short_circuited_total{plugin="retry",upstream="backend"} 3"#,
    ] {
        assert!(
            prometheus.lines().any(|l| l == series),
            "{series} in\n{prometheus}"
        );
    }
}

#[test]
fn filter_mode_circuit_breaker() {
    let config = filter(json!({
        "max_retries": 1,
        "retry_on": ["5xx"],
        "budget": {"ratio": 1.0, "min_per_second": 100},
        "circuit_breaker": {"failure_threshold": 3, "open_for": "1s", "half_open_requests": 1}
    }));
    breaker_opens_half_opens_and_closes(&config, 2);
}

#[test]
fn router_mode_circuit_breaker() {
    let config = router(json!({
        "max_retries": 0,
        "circuit_breaker": {"failure_threshold": 3, "open_for": "1s"}
    }));
    breaker_opens_half_opens_and_closes(&config, 1);
}

#[test]
fn failed_probe_reopens_the_circuit() {
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 0,
        "circuit_breaker": {"failure_threshold": 1, "open_for": "1s"}
    })));
    let client = envoy.client();
    upstream.script(statuses(2, 502));
    assert_eq!(client.get("/cb").status, 502);
    assert_eq!(client.get("/cb").json()["error"], "circuit_open");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(client.get("/cb").status, 502, "the probe fails");
    assert_eq!(client.get("/cb").json()["error"], "circuit_open");
    assert_eq!(upstream.attempts(), 2);
    assert_eq!(
        metric(
            &envoy,
            "circuit_transitions_total",
            &[("outcome", "opened")]
        ),
        2
    );
}

#[test]
fn client_sent_envoy_retry_headers_are_not_honoured() {
    // Proves the client really is external: with the filter off for /off, the client's own
    // x-envoy-* retry headers are stripped by the HTTP connection manager.
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "rules": [{"match": {"path_prefix": "/off"}, "enabled": false}]
    })));
    upstream.script(statuses(2, 503));
    let response = envoy.client().send(
        "GET",
        "/off",
        &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3")],
        b"",
    );
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 1);
    let echo = &upstream.received()[0];
    assert_eq!(echo["headers"]["x-envoy-internal"], Value::Null);
    assert_eq!(echo["headers"]["x-envoy-retry-on"], Value::Null);
    // The same request on a path the filter handles is retried.
    let response = envoy.client().get("/on");
    assert_eq!(response.status, 200);
    assert_eq!(upstream.attempts(), 3);
}

#[test]
fn filter_mode_per_try_timeout_retries_a_slow_attempt() {
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 1,
        "retry_on": ["reset"],
        "per_try_timeout": "200ms"
    })));
    upstream.script([Scripted::status(200)
        .body("slow")
        .delay(Duration::from_millis(1500))]);
    let response = envoy.client().get("/slow");
    assert_eq!(response.status, 200);
    assert_ne!(response.text(), "slow");
    assert_eq!(response.header(ATTEMPTS), Some("2"));
    assert_eq!(upstream.attempts(), 2);
}

#[test]
fn filter_mode_no_answer_at_all_passes_envoys_timeout_through() {
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 1,
        "retry_on": ["reset"],
        "per_try_timeout": "100ms"
    })));
    upstream.script((0..2).map(|_| Scripted::status(200).delay(Duration::from_millis(1000))));
    let response = envoy.client().get("/slow");
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "upstream request timeout");
    assert_eq!(response.header(ATTEMPTS), Some("2"));
}

#[test]
fn circuit_is_shared_by_workers() {
    // Two workers; every request on a new connection, so they land on either worker.
    let (upstream, envoy) = start_workers(
        &filter(json!({
            "max_retries": 1,
            "retry_on": ["5xx"],
            "budget": {"ratio": 1.0, "min_per_second": 100},
            "circuit_breaker": {"failure_threshold": 4, "open_for": "30s"}
        })),
        2,
    );
    let fresh = || Client::new(envoy.client().base().to_string());
    upstream.script(statuses(8, 503));
    for _ in 0..4 {
        assert_eq!(fresh().get("/cb").status, 503);
    }
    assert_eq!(upstream.attempts(), 8);
    for _ in 0..6 {
        let response = fresh().get("/cb");
        assert_eq!(response.json()["error"], "circuit_open");
    }
    assert_eq!(upstream.attempts(), 8, "open on every worker");
    assert_eq!(
        metric(
            &envoy,
            "circuit_transitions_total",
            &[("outcome", "opened")]
        ),
        1
    );
    assert_eq!(metric(&envoy, "short_circuited_total", &[]), 6);
}

#[test]
fn budget_is_shared_by_workers() {
    let (upstream, envoy) = start_workers(
        &filter(json!({
            "max_retries": 2,
            "retry_on": ["5xx"],
            "budget": {"ratio": 0.25, "min_per_second": 0}
        })),
        2,
    );
    let fresh = || Client::new(envoy.client().base().to_string());
    for _ in 0..3 {
        assert_eq!(fresh().get("/ok").status, 200);
    }
    // Each worker writes the requests it counted once a second (its tick); wait for both.
    std::thread::sleep(Duration::from_millis(2500));
    // Four requests counted across both workers allow exactly one retry.
    upstream.script(statuses(3, 503));
    let response = fresh().get("/f");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 3 + 2);
    assert_eq!(metric(&envoy, "retries_total", &[]), 1);
    assert_eq!(
        metric(&envoy, "retries_denied_total", &[("reason", "budget")]),
        1
    );
}

#[test]
fn filter_mode_body_request_retries_a_router_timeout_as_no_response() {
    // The first attempt of a request with a body goes through the router; its per-try timeout
    // is a "reset" (no response), retried even though 504 is not in retry_on.
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 1,
        "retry_on": ["reset"],
        "per_try_timeout": "200ms"
    })));
    upstream.script([Scripted::status(200)
        .body("slow")
        .delay(Duration::from_millis(1500))]);
    let response = envoy.client().send("PUT", "/slow", &[], b"data");
    assert_eq!(response.status, 200);
    assert_eq!(response.header(ATTEMPTS), Some("2"));
    assert_eq!(upstream.received()[1]["body"], "data");
    // An upstream 503 is a response, not a reset: not retried under "reset".
    upstream.script([Scripted::status(503)]);
    let response = envoy.client().send("PUT", "/slow", &[], b"data");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 3);
}

#[test]
fn filter_mode_every_retry_goes_through_the_route_table() {
    let (backend, second, envoy) = start_two(&filter(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "budget": {"ratio": 1.0, "min_per_second": 100}
    })));
    let client = envoy.client();
    // The route rewrites /rewrite/ to /rewritten/ and adds a header; its own retry_policy
    // (3 retries) is overridden: exactly 1 + max_retries attempts.
    backend.script(statuses(2, 503));
    let response = client.get("/rewrite/item?x=1");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    let received = backend.received();
    assert_eq!(received.len(), 3);
    for echo in &received {
        assert_eq!(echo["path"], "/rewritten/item", "{echo}");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["headers"]["x-route"], "rewrite", "{echo}");
        assert_eq!(echo["headers"]["x-wasmgate-retry-attempt"], Value::Null);
    }
    // A route to the second cluster: every attempt reaches it, none the first.
    second.script(statuses(2, 503));
    let response = client.send("PUT", "/second/thing", &[], b"data");
    assert_eq!(response.status, 200);
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    assert_eq!(second.attempts(), 3);
    for echo in second.received() {
        assert_eq!(echo["path"], "/second/thing");
        assert_eq!(echo["body"], "data");
    }
    assert_eq!(backend.attempts(), 3, "nothing more reached backend");
    assert_eq!(metric(&envoy, "retries_total", &[]), 4);
}

#[test]
fn circuit_is_per_upstream() {
    let (backend, second, envoy) = start_two(&router(json!({
        "max_retries": 0,
        "circuit_breaker": {"failure_threshold": 2, "open_for": "30s"}
    })));
    let client = envoy.client();
    second.script(statuses(2, 503));
    for _ in 0..2 {
        assert_eq!(client.get("/second/x").status, 503);
    }
    assert_eq!(
        metric(
            &envoy,
            "circuit_transitions_total",
            &[("outcome", "opened")]
        ),
        1
    );
    let open = client.get("/second/x");
    assert_eq!(open.json()["error"], "circuit_open");
    assert_eq!(second.attempts(), 2);
    // The other upstream is not affected: the default route and the rewriting route to it.
    assert_eq!(client.get("/x").status, 200);
    assert_eq!(client.get("/rewrite/x").status, 200);
    assert_eq!(backend.attempts(), 2);
    assert_eq!(metric(&envoy, "short_circuited_total", &[]), 1);
}

#[test]
fn filter_mode_keeps_a_long_retry_after() {
    // backoff.max is 100 ms: the old cap (backoff.max x 10) would have retried after 1 s.
    let (upstream, envoy) = start(&filter(json!({"max_retries": 1, "retry_on": ["5xx"]})));
    upstream.script([Scripted::status(503).header("retry-after", "2")]);
    let started = Instant::now();
    let response = envoy.client().get("/f");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200);
    assert_eq!(upstream.attempts(), 2);
    assert!(
        elapsed >= Duration::from_millis(1900),
        "Retry-After: 2 waited only {elapsed:?}"
    );
}

#[test]
fn filter_mode_returns_at_once_when_the_wait_asked_is_too_long() {
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 2,
        "retry_on": ["5xx", "retriable-status-codes"],
        "retriable_status_codes": [429],
        "max_retry_after": "5s"
    })));
    let client = envoy.client();
    upstream.script([Scripted::status(503)
        .header("retry-after", "30")
        .body("later")]);
    let response = client.get("/f");
    assert_eq!(response.status, 503);
    assert_eq!(response.text(), "later");
    assert_eq!(response.header("retry-after"), Some("30"));
    assert_eq!(response.header(ATTEMPTS), None);
    upstream.script([Scripted::status(429).header("ratelimit", "\"default\";r=0;t=60")]);
    assert_eq!(client.get("/f").status, 429);
    assert_eq!(upstream.attempts(), 2, "one attempt each");
    assert_eq!(
        metric(&envoy, "retries_denied_total", &[("reason", "retry_after")]),
        2
    );
    // Longer than filter_mode.timeout allows: not retried either.
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 1,
        "retry_on": ["5xx"],
        "filter_mode": {"loopback_cluster": "retry_loopback", "timeout": "2s"}
    })));
    upstream.script([Scripted::status(503).header("retry-after", "3")]);
    assert_eq!(envoy.client().get("/f").status, 503);
    assert_eq!(upstream.attempts(), 1);
}

#[test]
fn router_mode_counts_the_retries_of_a_stream_the_client_reset() {
    use std::io::Write;
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "budget": {"ratio": 1.0, "min_per_second": 100}
    })));
    upstream.script([
        Scripted::status(503),
        Scripted::status(200).delay(Duration::from_secs(5)),
    ]);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", envoy.port("main"))).unwrap();
    socket
        .write_all(b"GET /reset HTTP/1.1\r\nhost: example.com\r\n\r\n")
        .unwrap();
    // The router retried once and waits for the slow second attempt: the client goes away.
    let waited = Instant::now();
    while upstream.attempts() < 2 && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(upstream.attempts(), 2);
    drop(socket);
    let waited = Instant::now();
    while metric(&envoy, "retries_total", &[]) == 0 && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        metric(&envoy, "retries_total", &[]),
        1,
        "the retry made before the reset is counted"
    );
}

#[test]
fn a_forged_retry_marker_gains_nothing() {
    let (upstream, envoy) = start(&filter(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "budget": {"ratio": 1.0, "min_per_second": 100},
        "circuit_breaker": {"failure_threshold": 1, "open_for": "30s"}
    })));
    let client = envoy.client();
    upstream.script(statuses(3, 503));
    let response = client.send("GET", "/f", &[("x-wasmgate-retry-attempt", "1")], b"");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 1, "never retried");
    assert_eq!(
        upstream.received()[0]["headers"]["x-wasmgate-retry-attempt"],
        Value::Null
    );
    // Recorded like any request: the circuit opened and answers the next forged one too.
    assert_eq!(
        metric(
            &envoy,
            "circuit_transitions_total",
            &[("outcome", "opened")]
        ),
        1
    );
    let response = client.send("GET", "/f", &[("x-wasmgate-retry-attempt", "1")], b"");
    assert_eq!(response.json()["error"], "circuit_open");
    assert_eq!(upstream.attempts(), 1);
}

#[test]
fn a_request_that_already_is_a_retry_is_not_retried_again() {
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 2,
        "retry_on": ["5xx"],
        "skip_retried_requests": true
    })));
    let client = envoy.client();
    upstream.script([Scripted::status(503)]);
    let response = client.send("GET", "/r", &[("x-envoy-attempt-count", "2")], b"");
    assert_eq!(response.status, 503);
    assert_eq!(upstream.attempts(), 1);
    assert_eq!(
        metric(&envoy, "retries_denied_total", &[("reason", "retried")]),
        1
    );
    upstream.script(statuses(2, 503));
    assert_eq!(client.get("/r").status, 200, "a first attempt is retried");
    assert_eq!(upstream.attempts(), 4);
}

#[test]
fn router_mode_hedges_on_the_per_try_timeout() {
    // The first attempt is slower than the per-try timeout but faster than the second: with
    // hedging it is not cancelled and its answer wins; without, it is cut and the second times
    // out too.
    let script = || {
        [
            Scripted::status(200)
                .body("first")
                .delay(Duration::from_millis(600)),
            Scripted::status(200)
                .body("second")
                .delay(Duration::from_millis(3000)),
        ]
    };
    let config = |hedge: bool| {
        router(json!({
            "max_retries": 1,
            "retry_on": ["5xx"],
            "per_try_timeout": "300ms",
            "hedge_on_per_try_timeout": hedge
        }))
    };
    let (upstream, envoy) = start(&config(true));
    upstream.script(script());
    let response = envoy.client().get("/hedge");
    assert_eq!((response.status, response.text().as_str()), (200, "first"));
    assert_eq!(upstream.attempts(), 2, "the hedge was sent");
    let (upstream, envoy) = start(&config(false));
    upstream.script(script());
    assert_eq!(envoy.client().get("/hedge").status, 504);
    // A POST without an idempotency key is neither hedged nor retried: one attempt.
    let (upstream, envoy) = start(&config(true));
    upstream.script(script());
    let response = envoy.client().send("POST", "/hedge", &[], b"x");
    assert_eq!((response.status, response.text().as_str()), (200, "first"));
    assert_eq!(upstream.attempts(), 1);
}

#[test]
fn grpc_unavailable_is_retried_in_router_mode() {
    let unavailable = || {
        Scripted::status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .body("")
    };
    let grpc = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("idempotency-key", "k"),
    ];
    let (upstream, envoy) = start(&router(
        json!({"max_retries": 2, "retry_on": ["unavailable"]}),
    ));
    upstream.script([unavailable(), unavailable()]);
    let response = envoy
        .client()
        .send("POST", "/pkg.Service/Get", &grpc, b"\0\0\0\0\0");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("grpc-status"), None, "the echo");
    assert_eq!(upstream.attempts(), 3);
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    // Filter mode gives a gRPC request the router's one attempt, its answer untouched.
    let (upstream, envoy) = start(&filter(json!({"max_retries": 2, "retry_on": ["5xx"]})));
    upstream.script([Scripted::status(503)
        .header("content-type", "application/grpc")
        .header("grpc-status", "14")
        .header("x-upstream", "first")
        .body("")]);
    let response = envoy
        .client()
        .send("POST", "/pkg.Service/Get", &grpc, b"\0\0\0\0\0");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("grpc-status"), Some("14"));
    assert_eq!(response.header("x-upstream"), Some("first"));
    assert_eq!(upstream.attempts(), 1);
}

#[test]
fn a_failure_rate_opens_the_circuit_where_consecutive_counting_would_not() {
    // Every other request fails: never two in a row, but half of them.
    let (upstream, envoy) = start(&router(json!({
        "max_retries": 0,
        "circuit_breaker": {"failure_rate": 0.5, "minimum_calls": 6, "open_for": "30s"}
    })));
    let client = envoy.client();
    upstream.script([
        Scripted::status(503),
        Scripted::status(200),
        Scripted::status(503),
        Scripted::status(200),
        Scripted::status(503),
    ]);
    for expected in [503, 200, 503, 200, 503, 200] {
        assert_eq!(client.get("/flaky").status, expected);
    }
    assert_eq!(
        metric(
            &envoy,
            "circuit_transitions_total",
            &[("outcome", "opened")]
        ),
        1
    );
    assert_eq!(client.get("/flaky").json()["error"], "circuit_open");
    assert_eq!(upstream.attempts(), 6);
}
