//! The filter's hooks driven through the frame with the fake host: allowed requests get their
//! rate-limit headers on the response, the one over the limit a 429 with `Retry-After`.

use super::*;
use wasmgate_core::host::{HeaderMap, Host};
use wasmgate_host::fake::{FakeEnv, Sent};
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;

/// 15 s into a minute: a fixed one-minute window resets in 45 s.
const NOW_MS: u64 = 1_700_000_055_000;
const CONFIG: &str = r#"{"rules": [
    {"match": {"path_prefix": "/api/"},
     "limits": [{"name": "per_minute", "requests": 2, "window": "1m", "algorithm": "fixed_window"}]},
    {"match": {"path_prefix": "/keyed/"}, "key": [{"header": "x-api-key"}], "on_missing_key": "deny",
     "limits": [{"name": "per_minute", "requests": 2, "window": "1m", "algorithm": "fixed_window"}]}],
  "response_headers": "both"}"#;

fn configure(env: &FakeEnv) -> Rc<Worker<RateLimit>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(CONFIG.as_bytes())));
    worker
}

fn stream(worker: &Rc<Worker<RateLimit>>, id: u32) -> Bound<RateLimit> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

/// A GET from `client` (the downstream address Envoy saw) with these extra headers.
fn request(env: &FakeEnv, client: &str, path: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![(":method", "GET"), (":authority", "h"), (":path", path)];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Request, &headers);
    env.set_property("source.address", format!("{client}:5555").as_bytes());
}

/// Sends one request on a new stream; on `Continue` the upstream answers with `upstream`.
fn send(
    env: &FakeEnv,
    worker: &Rc<Worker<RateLimit>>,
    id: u32,
    upstream: &[(&str, &str)],
) -> Action {
    let s = stream(worker, id);
    let action = s.request_headers(env, true);
    if action == Action::Continue {
        env.set_map(HeaderMap::Response, upstream);
        assert_eq!(s.response_headers(env, false), Action::Continue);
    }
    action
}

fn response_values(env: &FakeEnv, name: &str) -> Vec<String> {
    env.headers(HeaderMap::Response)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

fn reply(env: &FakeEnv) -> Sent {
    env.last_response().expect("a reply to the client")
}

fn error_of(sent: &Sent) -> String {
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

/// Metric `wasmgate_rate_limit_<what>` summed over its series carrying `labels`.
fn metric(env: &FakeEnv, what: &str, labels: &[(&str, &str)]) -> i64 {
    env.metric_with(&format!("wasmgate_rate_limit_{what}"), labels)
}

/// `requests_total` of one outcome.
fn requests(env: &FakeEnv, outcome: &str) -> i64 {
    metric(env, "requests_total", &[("outcome", outcome)])
}

#[test]
fn allowed_responses_get_the_rate_limit_headers() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    request(&env, "10.0.0.1", "/api/x", &[]);
    assert_eq!(
        send(&env, &worker, 1, &[(":status", "200")]),
        Action::Continue
    );
    assert_eq!(
        response_values(&env, "ratelimit-policy"),
        [r#""per_minute";q=2;w=60"#]
    );
    assert_eq!(
        response_values(&env, "ratelimit"),
        [r#""per_minute";r=1;t=45"#]
    );
    assert_eq!(response_values(&env, "x-ratelimit-remaining"), ["1"]);
    assert_eq!(response_values(&env, "x-ratelimit-reset"), ["45"]);
    assert_eq!(requests(&env, "allowed"), 1);
}

#[test]
fn an_upstreams_x_ratelimit_values_are_replaced_and_its_draft_lines_kept() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    request(&env, "10.0.0.1", "/api/x", &[]);
    let upstream = [
        (":status", "200"),
        ("x-ratelimit-remaining", "999"),
        ("x-ratelimit-limit", "1000"),
        ("ratelimit", r#""upstream";r=50"#),
    ];
    send(&env, &worker, 1, &upstream);
    assert_eq!(response_values(&env, "x-ratelimit-remaining"), ["1"]);
    assert_eq!(response_values(&env, "x-ratelimit-limit").len(), 1);
    assert_ne!(response_values(&env, "x-ratelimit-limit"), ["1000"]);
    assert_eq!(
        response_values(&env, "ratelimit"),
        [r#""upstream";r=50"#, r#""per_minute";r=1;t=45"#]
    );
}

#[test]
fn the_request_over_the_limit_is_429_with_retry_after() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    request(&env, "10.0.0.1", "/api/x", &[]);
    for id in 1..=2 {
        assert_eq!(
            send(&env, &worker, id, &[(":status", "200")]),
            Action::Continue
        );
    }
    let s = stream(&worker, 3);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    let sent = reply(&env);
    assert_eq!((sent.status, error_of(&sent)), (429, "rate_limited".into()));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("retry-after"), Some("45"));
    assert_eq!(sent.header("ratelimit"), Some(r#""per_minute";r=0;t=45"#));
    assert_eq!(sent.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        s.response_headers(&env, false),
        Action::Continue,
        "nothing after the reply"
    );
    assert_eq!(
        (requests(&env, "allowed"), requests(&env, "limited")),
        (2, 1)
    );

    // The window ends: the client has its quota again.
    env.advance_ms(45_000);
    assert_eq!(
        send(&env, &worker, 4, &[(":status", "200")]),
        Action::Continue
    );
}

#[test]
fn a_forged_x_forwarded_for_does_not_give_a_client_a_new_quota() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    for (id, forged) in [(1, "1.1.1.1"), (2, "2.2.2.2"), (3, "3.3.3.3")] {
        request(&env, "10.0.0.1", "/api/x", &[("x-forwarded-for", forged)]);
        let action = send(&env, &worker, id, &[(":status", "200")]);
        assert_eq!(action == Action::Continue, id < 3, "request {id}");
    }
    request(&env, "10.0.0.2", "/api/x", &[]);
    assert_eq!(
        send(&env, &worker, 4, &[(":status", "200")]),
        Action::Continue,
        "another client has its own quota"
    );
}

#[test]
fn a_missing_key_part_is_400_and_unmatched_requests_get_no_headers() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    request(&env, "10.0.0.1", "/keyed/x", &[]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Pause
    );
    let sent = reply(&env);
    assert_eq!(
        (sent.status, error_of(&sent)),
        (400, "missing_rate_limit_key".into())
    );
    assert_eq!(metric(&env, "missing_key_total", &[]), 1);

    request(&env, "10.0.0.1", "/other", &[]);
    assert_eq!(
        send(&env, &worker, 2, &[(":status", "200")]),
        Action::Continue
    );
    assert!(response_values(&env, "ratelimit").is_empty());
    assert!(response_values(&env, "x-ratelimit-remaining").is_empty());
}

/// Under pressure (the table's entries all held by active keys) new keys share the rule's
/// overflow entry, and `wasmgate_rate_limit_table_overflow_total` counts them; an active key keeps its count.
#[test]
fn new_keys_overflow_a_full_table_and_are_counted() {
    let env = FakeEnv::at(NOW_MS);
    let worker = Rc::new(Worker::default());
    let config = r#"{"max_keys": 2, "rules": [{"key": [{"header": "x-api-key"}],
        "limits": [{"name": "per_minute", "requests": 2, "window": "1m", "algorithm": "fixed_window"}]}]}"#;
    assert!(worker.configure(&env, "plugin".into(), Some(config.as_bytes())));
    let mut id = 0;
    let mut send_key = |key: &str| {
        id += 1;
        request(&env, "10.0.0.1", "/x", &[("x-api-key", key)]);
        send(&env, &worker, id, &[(":status", "200")])
    };
    for _ in 0..2 {
        assert_eq!(send_key("victim"), Action::Continue);
    }
    assert_eq!(send_key("victim"), Action::Pause);
    // One free entry, then the overflow entry's quota of 2, then 429s.
    let actions: Vec<Action> = (0..10).map(|i| send_key(&format!("k{i}"))).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == Action::Continue).count(),
        1 + 2
    );
    assert_eq!(metric(&env, "table_overflow_total", &[]), 9);
    assert_eq!(metric(&env, "keys_evicted_total", &[]), 0);
    assert_eq!(send_key("victim"), Action::Pause, "still refused");
    assert_eq!(requests(&env, "limited"), 2 + 7);

    // A minute later every entry is idle: new keys take them (counted as evictions).
    env.advance_ms(60_000);
    assert_eq!(send_key("fresh"), Action::Continue);
    assert_eq!(metric(&env, "keys_evicted_total", &[]), 1);
    assert_eq!(metric(&env, "table_overflow_total", &[]), 9);
}

/// Configures `config` on a fresh worker.
fn configure_with(env: &FakeEnv, config: &str) -> Rc<Worker<RateLimit>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(config.as_bytes())));
    worker
}

/// A gRPC request gets RESOURCE_EXHAUSTED (Envoy turns the local reply into a gRPC status and
/// keeps the grpc-status the reply sets), every 429 `x-envoy-ratelimited`; a gRPC-Web or
/// look-alike content type is an HTTP request.
#[test]
fn grpc_requests_get_resource_exhausted_and_every_refusal_x_envoy_ratelimited() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure_with(
        &env,
        r#"{"rules": [{"key": [{"header": "x-k"}],
            "limits": [{"name": "m", "requests": 1, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
    );
    let cases = [
        ("application/grpc", Some("8")),
        ("application/grpc+proto", Some("8")),
        ("Application/GRPC;charset=utf-8", Some("8")),
        ("application/grpc-web", None),
        ("application/grpcx", None),
        ("application/json", None),
    ];
    for (id, (content_type, grpc_status)) in (1u32..).step_by(2).zip(cases) {
        let key = format!("k{id}");
        let headers = [("x-k", key.as_str()), ("content-type", content_type)];
        request(&env, "10.0.0.1", "/svc/Method", &headers);
        assert_eq!(
            send(&env, &worker, id, &[(":status", "200")]),
            Action::Continue
        );
        assert_eq!(
            stream(&worker, id + 1).request_headers(&env, true),
            Action::Pause
        );
        let sent = reply(&env);
        assert_eq!(sent.status, 429, "{content_type}");
        assert_eq!(sent.header("grpc-status"), grpc_status, "{content_type}");
        assert_eq!(sent.header("x-envoy-ratelimited"), Some("true"));
    }
}

/// Shadow mode with a marker: a client's own copy of the marker never reaches the upstream;
/// an over-limit request carries the names of the limits it is over.
#[test]
fn the_shadow_marker_is_ours() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure_with(
        &env,
        r#"{"rules": [{"name": "s", "shadow": true, "key": [{"constant": "all"}],
            "limits": [{"name": "m", "requests": 1, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
    );
    request(&env, "10.0.0.1", "/", &[("x-ratelimit-shadow", "forged")]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(env.header(HeaderMap::Request, "x-ratelimit-shadow"), None);
    request(&env, "10.0.0.1", "/", &[("x-ratelimit-shadow", "forged")]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(
        env.headers(HeaderMap::Request)
            .into_iter()
            .filter(|(n, _)| n == "x-ratelimit-shadow")
            .map(|(_, v)| v)
            .collect::<Vec<_>>(),
        ["m"]
    );
    assert_eq!(requests(&env, "shadow_limited"), 1);
    let shadow = [("rule", "s"), ("outcome", "shadow_limited")];
    assert_eq!(metric(&env, "rule_requests_total", &shadow), 1);
    let limit = [("rule", "s"), ("limit", "m"), ("outcome", "shadow_limited")];
    assert_eq!(metric(&env, "limit_requests_total", &limit), 1);
    assert_eq!(
        metric(&env, "limit_requests_total", &[("outcome", "limited")]),
        0
    );
}

/// Counters per rule (`rule_requests_total{rule, outcome}`) and per limit
/// (`limit_requests_total{rule, limit, outcome}`), next to the totals.
#[test]
fn metrics_per_rule_and_per_limit() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure_with(
        &env,
        r#"{"rules": [
            {"match": {"path_prefix": "/off"}, "enabled": false},
            {"name": "api", "key": ["client_ip"], "limits": [
              {"name": "per.ip", "requests": 1, "window": "1h", "algorithm": "fixed_window"},
              {"name": "tenant", "requests": 5, "window": "1h", "algorithm": "fixed_window",
               "key": [{"header": "x-tenant"}]}]}]}"#,
    );
    for id in 1..=3 {
        request(&env, "10.0.0.1", "/x", &[("x-tenant", "acme")]);
        send(&env, &worker, id, &[(":status", "200")]);
    }
    let rule = |outcome| {
        metric(
            &env,
            "rule_requests_total",
            &[("rule", "api"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (rule("allowed"), rule("limited"), rule("shadow_limited")),
        (1, 2, 0)
    );
    let limit = |name, outcome| {
        let labels = [("rule", "api"), ("limit", name), ("outcome", outcome)];
        metric(&env, "limit_requests_total", &labels)
    };
    assert_eq!(limit("per.ip", "limited"), 2);
    assert_eq!(limit("tenant", "limited"), 0);
    assert_eq!(
        (requests(&env, "allowed"), requests(&env, "limited")),
        (1, 2)
    );
    // Without shadow mode, no shadow_limited series; a limit has no allowed series.
    let names = env.metric_names();
    assert!(names
        .iter()
        .all(|n| !n.contains("outcome=.=shadow_limited;.;rule=.=api")));
    assert!(names
        .iter()
        .all(|n| !(n.contains("outcome=.=allowed") && n.contains("limit="))));
    assert!(names.contains(&"plugin=.=plugin;.;outcome=.=limited;.;rule=.=api;.;limit=.=per.ip;.;wasmgate_rate_limit_limit_requests_total".to_string()));
    // An unnamed rule has no counters of its own (no extra update per request).
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    request(&env, "10.0.0.1", "/api/x", &[]);
    send(&env, &worker, 1, &[(":status", "200")]);
    assert_eq!(requests(&env, "allowed"), 1);
    assert_eq!(metric(&env, "rule_requests_total", &[]), 0);
    assert!(env.metric_names().iter().all(|n| !n.contains("rule=")));
}

/// Global mode: the service's `response_headers_to_add` reach the client (on the response and
/// on a 429), its `request_headers_to_add` replace what the client sent, and headers that
/// could break a message are dropped; the request's cost is sent as `hits_addend`.
#[test]
fn global_mode_applies_the_services_headers() {
    use crate::global::{
        HeaderValue, RateLimitRequest, RateLimitResponse, CODE_OK, CODE_OVER_LIMIT,
    };
    use prost::Message;
    use wasmgate_core::Callout;
    let env = FakeEnv::at(NOW_MS);
    let worker = configure_with(
        &env,
        r#"{"rules": [{"mode": "global", "global": {"cluster": "rl", "domain": "edge"},
            "cost": 2, "key": ["client_ip"]}]}"#,
    );
    let header = |key: &str, value: &str| HeaderValue {
        key: key.into(),
        value: value.into(),
    };
    let ask = |id: u32, code: i32| {
        request(&env, "10.0.0.1", "/", &[("x-tier", "forged")]);
        let s = stream(&worker, id);
        env.take_calls();
        assert_eq!(s.request_headers(&env, true), Action::Pause);
        let (callout, token) = env.callouts().pop().unwrap();
        let Callout::Grpc { message, .. } = callout else {
            panic!("a gRPC call");
        };
        assert_eq!(
            RateLimitRequest::decode(message.as_slice())
                .unwrap()
                .hits_addend,
            2
        );
        let answer = RateLimitResponse {
            overall_code: code,
            response_headers_to_add: vec![
                header("X-Quota-Note", "ok"),
                header("content-length", "0"),
                header(":status", "200"),
                header("x-bad", "a\r\nset-cookie: x"),
            ],
            request_headers_to_add: vec![header("x-tier", "bronze")],
            ..RateLimitResponse::default()
        }
        .encode_to_vec();
        *env.answer.borrow_mut() = Some(wasmgate_core::Answer::Grpc {
            status: 0,
            message: answer.clone(),
        });
        worker.deliver_grpc(&env, token, 0, answer.len());
        s
    };
    let s = ask(1, CODE_OK);
    assert_eq!(
        env.header(HeaderMap::Request, "x-tier"),
        Some("bronze".into())
    );
    env.set_map(HeaderMap::Response, &[(":status", "200")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(response_values(&env, "x-quota-note"), ["ok"]);
    for dropped in ["content-length", "x-bad"] {
        assert!(response_values(&env, dropped).is_empty(), "{dropped}");
    }
    ask(2, CODE_OVER_LIMIT);
    let sent = reply(&env);
    assert_eq!(sent.status, 429);
    assert_eq!(sent.header("x-quota-note"), Some("ok"));
    assert_eq!(sent.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(sent.header("x-bad"), None);
    // The calls before `ask`'s last `take_calls` are forgotten: the last answer only.
    let calls = |outcome| metric(&env, "global_calls_total", &[("outcome", outcome)]);
    assert_eq!((calls("success"), calls("failure")), (1, 0));
    assert_eq!(requests(&env, "limited"), 1);
}

/// Global mode: a failed call counts `global_calls_total{outcome="failure"}`, and with
/// `failure_mode: deny` the 503 `unavailable_total`.
#[test]
fn global_failures_are_counted() {
    for (mode, unavailable) in [("allow", 0), ("deny", 1)] {
        let env = FakeEnv::at(NOW_MS);
        let config = format!(
            r#"{{"rules": [{{"mode": "global", "key": ["client_ip"],
                "global": {{"cluster": "rl", "domain": "edge", "failure_mode": "{mode}"}}}}]}}"#
        );
        let worker = configure_with(&env, &config);
        request(&env, "10.0.0.1", "/", &[]);
        let s = stream(&worker, 1);
        assert_eq!(s.request_headers(&env, true), Action::Pause);
        let (_, token) = env.callouts().pop().unwrap();
        *env.answer.borrow_mut() = Some(wasmgate_core::Answer::Grpc {
            status: 14,
            message: Vec::new(),
        });
        worker.deliver_grpc(&env, token, 14, 0);
        let calls = |outcome| metric(&env, "global_calls_total", &[("outcome", outcome)]);
        assert_eq!((calls("success"), calls("failure")), (0, 1), "{mode}");
        assert_eq!(
            metric(&env, "unavailable_total", &[]),
            unavailable,
            "{mode}"
        );
        assert_eq!(metric(&env, "requests_total", &[]), 0, "{mode}");
        if unavailable == 1 {
            assert_eq!(reply(&env).status, 503);
        }
    }
}
