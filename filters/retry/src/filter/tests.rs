//! The filter's hooks driven through the frame with a fake host.

use super::*;
use wasmgate_core::shared::{Namespace, SharedStore};
use wasmgate_core::Callout;
use wasmgate_host::fake::{FakeEnv, Sent};
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;
use wasmgate_host::Direction;

const START_MS: u64 = 1_700_000_000_000;
const ATTEMPTS: &str = "x-wasmgate-retry-attempts";

fn configure(env: &FakeEnv, json: &str) -> Rc<Worker<Retry>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "p".into(), Some(json.as_bytes())));
    worker
}

fn stream(worker: &Rc<Worker<Retry>>, id: u32) -> Bound<Retry> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

fn request(env: &FakeEnv, method: &str, path: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![(":method", method), (":path", path), (":authority", "h")];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Request, &headers);
}

fn request_header(env: &FakeEnv, name: &str) -> Option<String> {
    env.header(HeaderMap::Request, name)
}

fn respond_upstream(env: &FakeEnv, headers: &[(&str, &str)]) {
    env.set_map(HeaderMap::Response, headers);
}

/// Delivers an HTTP answer to the last callout.
fn answer(env: &FakeEnv, worker: &Worker<Retry>, headers: &[(&str, &str)], body: &[u8]) {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let count = headers.len();
    *env.answer.borrow_mut() = Some(Answer::Http {
        headers,
        body: body.to_vec(),
    });
    let (_, token) = env.callouts().pop().expect("a callout to answer");
    worker.deliver_http(env, token, count, body.len());
}

/// Lets a backoff wait (if any) run out, so that call number `expected` has been sent.
fn await_call(env: &FakeEnv, worker: &Worker<Retry>, expected: usize) -> Callout {
    if env.callouts().len() < expected {
        env.advance_ms(1_000);
        worker.tick(env);
    }
    let calls = env.callouts();
    assert_eq!(calls.len(), expected, "attempt {expected} sent");
    calls[expected - 1].0.clone()
}

fn sent(env: &FakeEnv) -> Sent {
    env.last_response().expect("a response to the client")
}

fn error_of(sent: &Sent) -> String {
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

const FILTER_MODE: &str = r#"{
    "mode": "filter", "max_retries": 2, "retry_on": ["5xx"],
    "backoff": {"base": "10ms", "max": "100ms"},
    "budget": {"ratio": 1.0, "min_per_second": 100},
    "filter_mode": {"cluster": "backend", "timeout": "5s", "max_body_bytes": 16}
}"#;

#[test]
fn router_mode_hands_the_policy_to_the_router_and_counts_its_retries() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"max_retries": 2, "retry_on": ["5xx"], "per_try_timeout": "500ms"}"#,
    );
    let s = stream(&worker, 1);
    request(&env, "GET", "/r", &[]);
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    assert_eq!(
        request_header(&env, "x-envoy-retry-on").as_deref(),
        Some("5xx")
    );
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("2")
    );
    assert_eq!(
        request_header(&env, "x-envoy-upstream-rq-per-try-timeout-ms").as_deref(),
        Some("500")
    );
    respond_upstream(&env, &[(":status", "200")]);
    env.set_property("upstream.request_attempt_count", &3u64.to_le_bytes());
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(
        env.header(HeaderMap::Response, ATTEMPTS).as_deref(),
        Some("3")
    );
    assert_eq!(env.metric("wasmgate_retry_retries"), 2);
    // The budget lives under this configuration's namespace.
    let json = br#"{"max_retries": 2, "retry_on": ["5xx"], "per_try_timeout": "500ms"}"#;
    let key = Namespace::configuration("retry", "p", json).key("budget");
    assert!(env.get_shared(&key).unwrap().0.is_some(), "{key}");
}

#[test]
fn router_mode_without_retries_switches_the_router_off() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, r#"{"max_retries": 2, "retry_on": ["5xx"]}"#);
    let s = stream(&worker, 1);
    request(&env, "POST", "/orders", &[("x-envoy-retry-on", "5xx")]);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    assert_eq!(request_header(&env, "x-envoy-retry-on"), None);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    assert_eq!(env.metric("wasmgate_retry_retries_denied_idempotency"), 1);
    respond_upstream(&env, &[(":status", "503"), ("x-envoy-attempt-count", "1")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(env.header(HeaderMap::Response, ATTEMPTS), None);
    // With the idempotency key, the same request is retried.
    let s = stream(&worker, 2);
    request(&env, "POST", "/orders", &[("idempotency-key", "k")]);
    s.request_headers(&env, false);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("2")
    );
}

#[test]
fn a_disabled_rule_leaves_the_request_alone() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"rules": [{"match": {"path_prefix": "/off"}, "enabled": false}]}"#,
    );
    let s = stream(&worker, 1);
    request(&env, "GET", "/off", &[]);
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    assert_eq!(request_header(&env, "x-envoy-max-retries"), None);
    respond_upstream(&env, &[(":status", "200"), ("x-envoy-attempt-count", "3")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(env.header(HeaderMap::Response, ATTEMPTS), None);
    assert_eq!(env.metric("wasmgate_retry_retries"), 0);
}

#[test]
fn an_open_circuit_answers_503_until_a_probe_succeeds() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"max_retries": 0, "circuit_breaker": {"failure_threshold": 1, "open_for": "1s"}}"#,
    );
    request(&env, "GET", "/cb", &[]);
    let s = stream(&worker, 1);
    s.request_headers(&env, true);
    respond_upstream(&env, &[(":status", "502")]);
    s.response_headers(&env, false);
    assert_eq!(env.metric("wasmgate_retry_circuit_opened"), 1);

    let s = stream(&worker, 2);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (503, "circuit_open".into())
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(env.metric("wasmgate_retry_short_circuited"), 1);
    assert_eq!(s.response_headers(&env, false), Action::Continue);

    env.now_ms.set(START_MS + 1_100);
    let s = stream(&worker, 3);
    assert_eq!(s.request_headers(&env, true), Action::Continue, "the probe");
    respond_upstream(&env, &[(":status", "200")]);
    s.response_headers(&env, false);
    assert_eq!(env.metric("wasmgate_retry_circuit_closed"), 1);
}

#[test]
fn filter_mode_sends_attempts_until_one_succeeds() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f?x=1", &[("content-length", "0")]);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    let Callout::Http {
        cluster,
        headers,
        body,
        timeout,
        ..
    } = await_call(&env, &worker, 1)
    else {
        panic!("an HTTP callout");
    };
    assert_eq!(cluster, "backend");
    assert!(headers.iter().any(|(n, v)| n == ":path" && v == "/f?x=1"));
    assert!(!headers.iter().any(|(n, _)| n == "content-length"));
    assert_eq!(body, None);
    assert_eq!(timeout, Duration::from_secs(5));
    answer(&env, &worker, &[(":status", "503")], b"first");
    await_call(&env, &worker, 2);
    answer(&env, &worker, &[(":status", "503")], b"second");
    await_call(&env, &worker, 3);
    answer(
        &env,
        &worker,
        &[
            (":status", "200"),
            ("x-upstream", "final"),
            ("content-length", "5"),
        ],
        b"third",
    );
    let response = sent(&env);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"third");
    assert_eq!(response.header("x-upstream"), Some("final"));
    assert_eq!(response.header(ATTEMPTS), Some("3"));
    assert_eq!(response.header("content-length"), None);
    assert_eq!(env.metric("wasmgate_retry_retries"), 2);
    assert_eq!(env.callouts().len(), 3);
}

#[test]
fn filter_mode_without_any_answer_replies_upstream_unavailable() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    for attempt in 1..=3 {
        await_call(&env, &worker, attempt);
        answer(&env, &worker, &[], b"");
    }
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (503, "upstream_unavailable".into())
    );
    assert_eq!(reply.header(ATTEMPTS), Some("3"));
}

#[test]
fn filter_mode_refused_callouts_count_as_attempts_without_answer() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    *env.refuse_dispatch.borrow_mut() = Some("BadArgument".into());
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    for _ in 0..3 {
        if env.last_response().is_none() {
            env.advance_ms(1_000);
            worker.tick(&env);
        }
    }
    let reply = sent(&env);
    assert_eq!(error_of(&reply), "upstream_unavailable");
    assert_eq!(reply.header(ATTEMPTS), Some("3"));
}

#[test]
fn filter_mode_waits_what_retry_after_asks() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    answer(
        &env,
        &worker,
        &[(":status", "503"), ("retry-after", "1")],
        b"",
    );
    assert_eq!(env.timer.get(), Duration::from_secs(1));
    env.now_ms.set(START_MS + 999);
    worker.tick(&env);
    assert_eq!(env.callouts().len(), 1, "still waiting");
    env.now_ms.set(START_MS + 1_000);
    worker.tick(&env);
    assert_eq!(env.callouts().len(), 2);
    answer(&env, &worker, &[(":status", "200")], b"");
    assert_eq!(sent(&env).header(ATTEMPTS), Some("2"));
}

#[test]
fn filter_mode_budget_refusal_answers_with_the_last_response() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        &FILTER_MODE.replace(r#""ratio": 1.0, "min_per_second": 100"#, r#""ratio": 0.0"#),
    );
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    answer(&env, &worker, &[(":status", "503")], b"busy");
    let response = sent(&env);
    assert_eq!(
        (response.status, response.body.as_slice()),
        (503, &b"busy"[..])
    );
    assert_eq!(response.header(ATTEMPTS), None, "one attempt");
    assert_eq!(env.metric("wasmgate_retry_retries_denied_budget"), 1);
    assert_eq!(env.metric("wasmgate_retry_retries"), 0);
}

#[test]
fn filter_mode_with_a_body_retries_the_routers_attempt() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        &FILTER_MODE.replace(
            r#""max_retries": 2"#,
            r#""max_retries": 1, "per_try_timeout": "200ms""#,
        ),
    );
    let s = stream(&worker, 1);
    request(&env, "PUT", "/f", &[("content-length", "7")]);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    assert_eq!(
        request_header(&env, "x-envoy-upstream-rq-per-try-timeout-ms").as_deref(),
        Some("200")
    );
    env.set_body(Direction::Request, b"payload");
    assert_eq!(s.request_body(&env, 7, false), Action::Continue);
    env.set_map(HeaderMap::RequestTrailers, &[("x-checksum", "c")]);
    assert_eq!(s.request_trailers(&env), Action::Continue);
    respond_upstream(&env, &[(":status", "504")]);
    env.set_property("response.code_details", b"upstream_per_try_timeout");
    assert_eq!(s.response_headers(&env, false), Action::Pause, "held back");
    let Callout::Http {
        headers,
        body,
        trailers,
        timeout,
        ..
    } = await_call(&env, &worker, 1)
    else {
        panic!("an HTTP callout");
    };
    assert_eq!(body.as_deref(), Some(&b"payload"[..]));
    assert_eq!(trailers, vec![("x-checksum".to_string(), "c".to_string())]);
    assert!(!headers.iter().any(|(n, _)| n == "content-length"));
    assert_eq!(timeout, Duration::from_millis(200));
    answer(&env, &worker, &[(":status", "200")], b"ok");
    let response = sent(&env);
    assert_eq!(
        (response.status, response.header(ATTEMPTS)),
        (200, Some("2"))
    );
}

#[test]
fn filter_mode_passes_an_upstream_response_to_a_body_request_it_does_not_retry() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, &FILTER_MODE.replace(r#"["5xx"]"#, r#"["reset"]"#));
    let s = stream(&worker, 1);
    request(&env, "PUT", "/f", &[]);
    s.request_headers(&env, false);
    env.set_body(Direction::Request, b"data");
    s.request_body(&env, 4, true);
    respond_upstream(&env, &[(":status", "503")]);
    env.set_property("response.code_details", b"via_upstream");
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert!(env.callouts().is_empty());
    assert!(env.responses().is_empty());
}

#[test]
fn filter_mode_gives_large_bodies_one_attempt() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    // Declared too large: not even copied.
    let s = stream(&worker, 1);
    request(&env, "PUT", "/big", &[("content-length", "17")]);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    // Found too large while copied.
    let s = stream(&worker, 2);
    request(&env, "PUT", "/big", &[]);
    s.request_headers(&env, false);
    env.set_body(Direction::Request, &[b'a'; 17]);
    assert_eq!(s.request_body(&env, 17, true), Action::Continue);
    respond_upstream(&env, &[(":status", "503")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    // A response before the body ended.
    let s = stream(&worker, 3);
    s.request_headers(&env, false);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert!(env.callouts().is_empty());
}
