//! rate-limit global mode in real Envoys: two Envoy processes share one limit through a real
//! rate limit service (Limitador's rate limiter with its in-memory storage behind
//! `envoy.service.ratelimit.v3`, on loopback, in the test process); the service down (refusing,
//! silent, or no cluster) with `failure_mode` allow and deny; the `local_first` pre-check; headers
//! from the service's answer in both header modes; the service's `response_headers_to_add` and
//! `request_headers_to_add` applied; the docker compose example's Envoy config validates.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use ratelimit_service::{Headers, Service};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wasmgate_e2e::{repo_root, validate, wasm_dir, Client, Envoy, Response, Upstream};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Limitador limits: `max_value` per minute per client address in namespace `domain`.
fn per_minute(domain: &str, max_value: u64) -> String {
    json!([{
        "namespace": domain,
        "max_value": max_value,
        "seconds": 60,
        "name": "per_minute",
        "conditions": [],
        "variables": ["descriptors[0].remote_address"],
    }])
    .to_string()
}

fn start_envoy(config: &Value, rls_port: u16) -> Envoy {
    // Nothing listens there: these tests route nothing to /upstream/.
    start_envoy_upstream(config, rls_port, free_port())
}

fn start_envoy_upstream(config: &Value, rls_port: u16, upstream_port: u16) -> Envoy {
    let text = config.to_string();
    assert!(
        !text.contains('\''),
        "the template quotes the config with ''"
    );
    Envoy::start(
        "rate-limit-global.yaml",
        &[
            ("CONFIG", text),
            ("RLS_PORT", rls_port.to_string()),
            ("UPSTREAM_PORT", upstream_port.to_string()),
        ],
    )
}

fn global_rule(prefix: &str, domain: &str, timeout: &str, failure_mode: &str) -> Value {
    json!({
        "match": {"path_prefix": prefix},
        "mode": "global",
        "global": {"cluster": "ratelimit", "domain": domain, "timeout": timeout,
                   "failure_mode": failure_mode},
    })
}

/// Sends `total` GETs of `path`, spread over `envoys` from `threads` threads (each with its own
/// connections); returns the responses.
fn hammer(envoys: &[&Envoy], path: &str, total: usize, threads: usize) -> Vec<Response> {
    let next = AtomicUsize::new(0);
    let responses = Mutex::new(Vec::with_capacity(total));
    let bases: Vec<String> = envoys
        .iter()
        .map(|e| e.client().base().to_string())
        .collect();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let base = bases[t % bases.len()].clone();
            let (next, responses) = (&next, &responses);
            scope.spawn(move || {
                let client = Client::new(base);
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let response = client.get(path);
                    responses.lock().unwrap().push(response);
                }
            });
        }
    });
    responses.into_inner().unwrap()
}

fn count(responses: &[Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status == status).count()
}

#[test]
fn two_envoys_share_one_global_limit_exactly() {
    let service = Service::start(&per_minute("edge", 100)).unwrap();
    // A generous timeout and failure_mode deny: a slow answer shows as a 503, never as a pass.
    let config = json!({"rules": [global_rule("/", "edge", "5s", "deny")]});
    let a = start_envoy(&config, service.port);
    let b = start_envoy(&config, service.port);

    let responses = hammer(&[&a, &b], "/api", 1000, 8);
    assert_eq!(responses.len(), 1000);
    assert_eq!(count(&responses, 503), 0, "the service answered every call");
    assert_eq!(count(&responses, 200), 100, "exactly the shared limit");
    assert_eq!(count(&responses, 429), 900);
    assert_eq!(service.calls(), 1000, "one ShouldRateLimit per request");
    for envoy in [&a, &b] {
        assert!(
            envoy.metric(
                "wasmgate_rate_limit_requests_total",
                &[("outcome", "allowed")]
            ) > 0,
            "both Envoys admitted some"
        );
    }
    let metric = |what: &str, outcome: &str| {
        let name = format!("wasmgate_rate_limit_{what}");
        let labels = [("outcome", outcome)];
        a.metric(&name, &labels) + b.metric(&name, &labels)
    };
    assert_eq!(metric("global_calls_total", "success"), 1000);
    assert_eq!(metric("global_calls_total", "failure"), 0);
    assert_eq!(metric("requests_total", "allowed"), 100);
    assert_eq!(metric("requests_total", "limited"), 900);

    // Headers come from the service's answer: its limit, remaining and reset.
    let allowed = responses.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(
        allowed.header("ratelimit-policy"),
        Some("\"per_minute\";q=100;w=60")
    );
    let limited = a.client().get("/api");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.header("ratelimit"),
        Some(format!("\"per_minute\";r=0;t={retry_after}").as_str())
    );
}

#[test]
fn headers_modes_and_local_first_pre_check() {
    let limits = json!([
        {"namespace": "xr", "max_value": 3, "seconds": 60, "name": "three",
         "conditions": [], "variables": ["descriptors[0].remote_address"]},
        {"namespace": "lf", "max_value": 100, "seconds": 60, "name": "hundred",
         "conditions": [], "variables": ["descriptors[0].remote_address"]},
    ]);
    let service = Service::start(&limits.to_string()).unwrap();
    let mut xr = global_rule("/xr/", "xr", "5s", "deny");
    xr["response_headers"] = json!("x-ratelimit");
    let mut lf = global_rule("/lf/", "lf", "5s", "deny");
    lf["local_first"] = json!(true);
    lf["limits"] = json!([{"name": "local", "requests": 5, "window": "1m"}]);
    let envoy = start_envoy(&json!({"rules": [xr, lf]}), service.port);
    let client = envoy.client();

    // x-ratelimit mode, from the service's answer.
    for remaining in ["2", "1", "0"] {
        let response = client.get("/xr/a");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("x-ratelimit-limit"),
            Some("3, 3;w=60;name=\"three\"")
        );
        assert_eq!(response.header("x-ratelimit-remaining"), Some(remaining));
        assert!(response.header("ratelimit").is_none());
    }
    let limited = client.get("/xr/a");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        limited.header("x-ratelimit-reset"),
        limited.header("retry-after")
    );
    assert_eq!(service.calls(), 4);

    // local_first: a local limit of 5 in front of the global 100 sheds the rest locally.
    let responses: Vec<u16> = (0..20).map(|_| client.get("/lf/b").status).collect();
    assert_eq!(responses.iter().filter(|s| **s == 200).count(), 5);
    assert_eq!(responses.iter().filter(|s| **s == 429).count(), 15);
    assert_eq!(
        service.calls(),
        4 + 5,
        "only what passed the local pre-check asked"
    );
    assert_eq!(
        envoy.metric("wasmgate_rate_limit_global_calls_total", &[]),
        9
    );
    let passed = client.get("/xr/a");
    assert_eq!(passed.status, 429, "the xr limit still holds");
}

/// Accepts connections and never answers: a hung rate limit service.
fn black_hole() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            if held.len() > 64 {
                break;
            }
        }
    });
    (port, handle)
}

#[test]
fn service_down_follows_failure_mode_within_the_timeout() {
    let config = json!({"rules": [
        global_rule("/allow/", "edge", "200ms", "allow"),
        global_rule("/deny/", "edge", "200ms", "deny"),
        {"match": {"path_prefix": "/nocluster/"}, "mode": "global",
         "global": {"cluster": "no_such_cluster", "domain": "edge", "failure_mode": "deny"}},
    ]});
    // A silent service (the timeout fires) and a refusing one (nothing listens on the port).
    let (silent_port, _hole) = black_hole();
    let refused_port = free_port();
    for (what, port) in [("silent", silent_port), ("refusing", refused_port)] {
        let envoy = start_envoy(&config, port);
        let client = envoy.client();
        for _ in 0..3 {
            let start = Instant::now();
            let allowed = client.get("/allow/x");
            let allow_elapsed = start.elapsed();
            assert_eq!(allowed.status, 200, "{what}: failure_mode allow passes");
            assert!(allowed.header("ratelimit").is_none());

            let start = Instant::now();
            let denied = client.get("/deny/x");
            let deny_elapsed = start.elapsed();
            assert_eq!(denied.status, 503, "{what}: failure_mode deny");
            assert_eq!(denied.json()["error"], "rate_limit_unavailable");
            // The 200 ms timeout bounds the wait; the silent service would hold forever (the
            // client gives up after 30 s). The bound leaves room for a loaded CI machine.
            for elapsed in [allow_elapsed, deny_elapsed] {
                assert!(elapsed < Duration::from_secs(5), "{what}: held {elapsed:?}");
            }
        }
        let denied = client.get("/nocluster/x");
        assert_eq!(
            denied.status, 503,
            "an unknown cluster fails like a down service"
        );
        let metric = |what: &str, labels: &[(&str, &str)]| {
            envoy.metric(&format!("wasmgate_rate_limit_{what}"), labels)
        };
        let failed = [("outcome", "failure")];
        assert_eq!(metric("global_calls_total", &failed), 7, "{what}");
        assert_eq!(metric("global_calls_total", &[]), 7, "{what}: no success");
        assert_eq!(metric("unavailable_total", &[]), 4, "{what}");
        assert_eq!(metric("requests_total", &[]), 0, "{what}");
    }
}

/// examples/global-rate-limit/envoy.yaml (mounted into the Envoy container) validates, with the
/// container's module path pointed at the built module.
#[test]
fn compose_example_envoy_config_validates() {
    let text =
        std::fs::read_to_string(repo_root().join("examples/global-rate-limit/envoy.yaml")).unwrap();
    let module = wasm_dir().join("rate_limit.wasm");
    let text = text.replace(
        "/etc/wasmgate/rate_limit.wasm",
        &module.display().to_string(),
    );
    let path = std::env::temp_dir().join(format!(
        "wasmgate-e2e-global-example-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    let result = validate(&path);
    let _ = std::fs::remove_file(&path);
    if let Err(output) = result {
        panic!("the example does not validate:\n{output}");
    }
}

/// The request's cost goes to the service as `hits_addend` (bounded by `max_cost` whatever the
/// client writes), and the service's 429 carries `x-envoy-ratelimited` like a local one.
#[test]
fn cost_is_sent_as_hits_addend() {
    let limits = json!([{"namespace": "cost", "max_value": 10, "seconds": 3600, "name": "units",
        "conditions": [], "variables": ["descriptors[0].remote_address"]}]);
    let service = Service::start(&limits.to_string()).unwrap();
    let mut rule = global_rule("/", "cost", "5s", "deny");
    rule["cost_header"] = json!("x-cost");
    rule["max_cost"] = json!(4);
    let envoy = start_envoy(&json!({"rules": [rule]}), service.port);
    let client = envoy.client();
    let send = |cost: &str| client.send("GET", "/", &[("x-cost", cost)], b"");
    assert_eq!(send("4").status, 200, "4 of 10");
    assert_eq!(
        send("999999999999999999999").status,
        200,
        "max_cost: 8 of 10"
    );
    let refused = send("3");
    assert_eq!(refused.status, 429, "8 + 3 > 10");
    assert_eq!(refused.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(send("-7").status, 200, "not a number: 1, 9 of 10");
    assert_eq!(send("").status, 200, "absent: 1, 10 of 10");
    assert_eq!(send("1").status, 429);
    assert_eq!(service.calls(), 6);
}

/// The service's header additions (Limitador's `--rate-limit-headers DRAFT_VERSION_03` and fixed
/// ones, as envoyproxy/ratelimit's and Limitador's deployments send them) reach the client, on
/// the upstream's answer and on the 429, and its `request_headers_to_add` reach the upstream,
/// replacing the client's copy.
#[test]
fn service_header_additions_are_applied() {
    let limits = json!([{"namespace": "hdr", "max_value": 2, "seconds": 60, "name": "two",
        "conditions": [], "variables": ["descriptors[0].remote_address"]}]);
    let headers = Headers {
        draft_03: true,
        response: vec![("x-ratelimit-service".into(), "limitador".into())],
        request: vec![("x-tenant-tier".into(), "gold".into())],
    };
    let service = Service::start_with(
        &limits.to_string(),
        HashMap::from([("hdr".into(), headers)]),
    )
    .unwrap();
    let upstream = Upstream::start();
    let config = json!({"rules": [global_rule("/upstream/", "hdr", "5s", "deny")]});
    let envoy = start_envoy_upstream(&config, service.port, upstream.port());
    let client = envoy.client();
    let send = || client.send("GET", "/upstream/a", &[("x-tenant-tier", "forged")], b"");

    for remaining in ["1", "0"] {
        let response = send();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-ratelimit-service"), Some("limitador"));
        assert_eq!(
            response.header("x-ratelimit-limit"),
            Some("2, 2;w=60;name=\"two\"")
        );
        assert_eq!(response.header("x-ratelimit-remaining"), Some(remaining));
        let reset: u64 = response
            .header("x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
        // The filter's own headers from the answer's statuses are still there.
        assert_eq!(
            response.header("ratelimit-policy"),
            Some("\"two\";q=2;w=60")
        );
        // The upstream's echo: the service's value, the client's copy replaced (both would be
        // joined as "forged, gold").
        assert_eq!(response.json()["headers"]["x-tenant-tier"], "gold");
    }
    let limited = send();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "rate_limited");
    assert_eq!(limited.header("x-ratelimit-service"), Some("limitador"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert!(limited.header("x-ratelimit-reset").is_some());
    assert_eq!(service.calls(), 3);

    assert_eq!(upstream.attempts(), 2, "the 429 reached no upstream");
}
