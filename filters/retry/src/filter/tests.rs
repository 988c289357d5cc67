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
    "filter_mode": {"loopback_cluster": "retry_loopback", "timeout": "5s", "max_body_bytes": 16}
}"#;

/// `retries_denied_total` of one reason.
fn denied(env: &FakeEnv, reason: &str) -> i64 {
    env.metric_with("wasmgate_retry_retries_denied_total", &[("reason", reason)])
}

/// `circuit_transitions_total` of one outcome (`opened`, `closed`), every upstream.
fn transitions(env: &FakeEnv, outcome: &str) -> i64 {
    env.metric_with(
        "wasmgate_retry_circuit_transitions_total",
        &[("outcome", outcome)],
    )
}

/// The router's response to a filter-mode request's first attempt.
fn router_answers(env: &FakeEnv, headers: &[(&str, &str)]) {
    respond_upstream(env, headers);
    env.set_property("response.code_details", b"via_upstream");
}

/// The key of a shared-data entry of plugin "p" configured with `json`.
fn shared_key(json: &str, what: &str) -> String {
    Namespace::configuration("retry", "p", json.as_bytes()).key(what)
}

#[test]
fn router_mode_hands_the_policy_to_the_router_and_counts_its_retries() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"max_retries": 2, "retry_on": ["5xx"], "per_try_timeout": "500ms"}"#,
    );
    let s = stream(&worker, 1);
    request(&env, "GET", "/r", &[]);
    env.set_property("xds.cluster_name", b"backend");
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
    assert_eq!(env.metric("wasmgate_retry_retries_total"), 2);
    // The budget of the routed cluster lives under this configuration's namespace, and holds
    // the request and the two retries the router made.
    let json = r#"{"max_retries": 2, "retry_on": ["5xx"], "per_try_timeout": "500ms"}"#;
    let key = shared_key(json, "budget") + ".backend";
    let stored = env
        .get_shared(&key)
        .unwrap()
        .0
        .expect("the cluster's budget");
    assert_eq!(
        crate::budget::Window::decode(&stored).totals(START_MS / 1000),
        (1, 2),
        "{key}"
    );
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
    assert_eq!(denied(&env, "idempotency"), 1);
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
    assert_eq!(env.metric("wasmgate_retry_retries_total"), 0);
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
    assert_eq!(transitions(&env, "opened"), 1);
    // Without a routed cluster the circuit's upstream is `-`.
    let open = || env.gauge_with("wasmgate_retry_circuit_open", &[("upstream", "-")]);
    assert_eq!(open(), Some(1));

    let s = stream(&worker, 2);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (503, "circuit_open".into())
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(env.metric("wasmgate_retry_short_circuited_total"), 1);
    assert_eq!(s.response_headers(&env, false), Action::Continue);

    env.now_ms.set(START_MS + 1_100);
    let s = stream(&worker, 3);
    assert_eq!(s.request_headers(&env, true), Action::Continue, "the probe");
    assert_eq!(open(), Some(1), "half-open counts as open");
    respond_upstream(&env, &[(":status", "200")]);
    s.response_headers(&env, false);
    assert_eq!(transitions(&env, "closed"), 1);
    assert_eq!(open(), Some(0));
}

#[test]
fn filter_mode_retries_through_the_loopback_cluster_until_one_succeeds() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f?x=1", &[("content-length", "0")]);
    // The first attempt is the router's, through the route table, without its own retries.
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    assert!(env.callouts().is_empty());
    router_answers(&env, &[(":status", "503")]);
    assert_eq!(s.response_headers(&env, false), Action::Pause, "held back");
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
    // Retries re-enter the route table through the loopback cluster, marked, router retries
    // off.
    assert_eq!(cluster, "retry_loopback");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":path"), Some("/f?x=1"));
    assert_eq!(header(":authority"), Some("h"));
    let token = worker.plugin().unwrap().token.clone();
    assert_eq!(header("x-wasmgate-retry-attempt"), Some(token.as_str()));
    assert_eq!(header("x-envoy-max-retries"), Some("0"));
    assert_eq!(header("content-length"), None);
    assert_eq!(body, None);
    assert_eq!(
        timeout,
        Duration::from_secs(4),
        "what is left of filter_mode.timeout after the backoff (await_call waited 1 s)"
    );
    answer(&env, &worker, &[(":status", "503")], b"second");
    await_call(&env, &worker, 2);
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
    assert_eq!(env.metric("wasmgate_retry_retries_total"), 2);
    assert_eq!(env.callouts().len(), 2);
}

#[test]
fn filter_mode_a_first_success_costs_no_callout() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    router_answers(&env, &[(":status", "200")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert!(env.callouts().is_empty());
    assert!(env.responses().is_empty(), "the router's response goes on");
}

#[test]
fn filter_mode_its_own_retry_is_routed_once_and_a_forged_one_gains_nothing() {
    let json = FILTER_MODE.replace(
        r#""budget""#,
        r#""circuit_breaker": {"failure_threshold": 1, "open_for": "10s"}, "budget""#,
    );
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, &json);
    env.set_property("xds.cluster_name", b"backend");
    let budget = || {
        let stored = env
            .get_shared(&(shared_key(&json, "budget") + ".backend"))
            .unwrap()
            .0
            .unwrap_or_default();
        crate::budget::Window::decode(&stored).totals(START_MS / 1000)
    };
    // A first attempt that fails: its retry carries this configuration's token.
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    router_answers(&env, &[(":status", "503")]);
    assert_eq!(s.response_headers(&env, false), Action::Pause);
    let Callout::Http { headers, .. } = await_call(&env, &worker, 1) else {
        panic!("an HTTP callout");
    };
    let token = headers
        .iter()
        .find(|(n, _)| n == "x-wasmgate-retry-attempt")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(token.len(), 32, "128 random bits");
    assert_eq!(budget(), (1, 1));
    // That retry re-entering this filter: one attempt through the router, no retries of its
    // own, nothing counted, the marker not passed upstream.
    let inner = stream(&worker, 2);
    request(
        &env,
        "GET",
        "/f",
        &[
            ("x-wasmgate-retry-attempt", &token),
            ("x-envoy-retry-on", "5xx"),
        ],
    );
    assert_eq!(inner.request_headers(&env, true), Action::Continue);
    assert_eq!(request_header(&env, "x-wasmgate-retry-attempt"), None);
    assert_eq!(request_header(&env, "x-envoy-retry-on"), None);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    router_answers(&env, &[(":status", "503")]);
    assert_eq!(inner.response_headers(&env, false), Action::Continue);
    assert_eq!(env.callouts().len(), 1, "no retry of its own");
    assert_eq!(transitions(&env, "opened"), 0, "not recorded");
    assert_eq!(budget(), (1, 1), "not counted");
    // A client forging the marker: never retried, but counted and recorded like any request.
    let forged = stream(&worker, 3);
    request(&env, "GET", "/f", &[("x-wasmgate-retry-attempt", "guess")]);
    assert_eq!(forged.request_headers(&env, true), Action::Continue);
    assert_eq!(request_header(&env, "x-wasmgate-retry-attempt"), None);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    router_answers(&env, &[(":status", "503")]);
    assert_eq!(forged.response_headers(&env, false), Action::Continue);
    assert_eq!(env.callouts().len(), 1);
    assert_eq!(transitions(&env, "opened"), 1, "recorded");
    // The circuit is open now: it answers forged and own retries alike.
    for (id, marker) in [(4, "guess"), (5, token.as_str())] {
        let s = stream(&worker, id);
        request(&env, "GET", "/f", &[("x-wasmgate-retry-attempt", marker)]);
        assert_eq!(s.request_headers(&env, true), Action::Pause);
        assert_eq!(error_of(&sent(&env)), "circuit_open");
    }
    // Another worker of the same Envoy (same shared data) uses the same token.
    let other = configure(&env, &json);
    assert_eq!(other.plugin().unwrap().token, token);
}

#[test]
fn filter_mode_without_any_answer_replies_upstream_unavailable() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    respond_upstream(&env, &[(":status", "504")]);
    env.set_property("response.code_details", b"upstream_per_try_timeout");
    assert_eq!(s.response_headers(&env, false), Action::Pause);
    for attempt in 1..=2 {
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
    s.request_headers(&env, true);
    router_answers(&env, &[(":status", "503")]);
    s.response_headers(&env, false);
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
    router_answers(&env, &[(":status", "503"), ("retry-after", "3")]);
    assert_eq!(s.response_headers(&env, false), Action::Pause);
    // Not shortened to backoff.max x 10 (1 s here): the server asked for 3 s.
    env.now_ms.set(START_MS + 2_999);
    worker.tick(&env);
    assert_eq!(env.callouts().len(), 0, "still waiting");
    env.now_ms.set(START_MS + 3_000);
    worker.tick(&env);
    assert_eq!(env.callouts().len(), 1);
    answer(&env, &worker, &[(":status", "200")], b"");
    assert_eq!(sent(&env).header(ATTEMPTS), Some("2"));
}

#[test]
fn filter_mode_returns_at_once_what_asks_for_a_longer_wait_than_allowed() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        &FILTER_MODE.replace(
            r#""max_retries": 2"#,
            r#""max_retries": 2, "max_retry_after": "2s""#,
        ),
    );
    // Retry-After over max_retry_after, a RateLimit reset, an X-RateLimit-Reset Unix time, an
    // absurd value: none is shortened into an early retry; the response goes on at once.
    let far = (START_MS / 1000 + 60).to_string();
    let cases: [&[(&str, &str)]; 4] = [
        &[(":status", "503"), ("retry-after", "30")],
        &[(":status", "503"), ("ratelimit", "\"default\";r=0;t=30")],
        &[(":status", "503"), ("x-ratelimit-reset", &far)],
        &[
            (":status", "503"),
            ("retry-after", "99999999999999999999999"),
        ],
    ];
    for (i, headers) in cases.iter().enumerate() {
        let s = stream(&worker, u32::try_from(i).unwrap() + 1);
        request(&env, "GET", "/f", &[]);
        s.request_headers(&env, true);
        router_answers(&env, headers);
        assert_eq!(
            s.response_headers(&env, false),
            Action::Continue,
            "{headers:?}"
        );
    }
    assert!(env.callouts().is_empty());
    assert_eq!(denied(&env, "retry_after"), 4);
    // Within max_retry_after, the wait is what the server asked for.
    let s = stream(&worker, 9);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    router_answers(&env, &[(":status", "503"), ("x-ratelimit-reset", "2")]);
    assert_eq!(s.response_headers(&env, false), Action::Pause);
    env.now_ms.set(START_MS + 1_999);
    worker.tick(&env);
    assert!(env.callouts().is_empty(), "still waiting");
    env.now_ms.set(START_MS + 2_000);
    worker.tick(&env);
    assert_eq!(env.callouts().len(), 1);
}

#[test]
fn filter_mode_budget_refusal_passes_the_response_on() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        &FILTER_MODE.replace(r#""ratio": 1.0, "min_per_second": 100"#, r#""ratio": 0.0"#),
    );
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    router_answers(&env, &[(":status", "503")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert!(env.responses().is_empty(), "the router's response goes on");
    assert_eq!(
        env.header(HeaderMap::Response, ATTEMPTS),
        None,
        "one attempt"
    );
    assert_eq!(denied(&env, "budget"), 1);
    assert_eq!(env.metric("wasmgate_retry_retries_total"), 0);
}

#[test]
fn filter_mode_budget_is_per_upstream() {
    // No ratio, one retry per second per upstream: a failing upstream spending its retry does
    // not leave a healthy one without.
    let json = FILTER_MODE.replace(
        r#""ratio": 1.0, "min_per_second": 100"#,
        r#""ratio": 0.0, "min_per_second": 1"#,
    );
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, &json);
    let fails_on = |id: u32, cluster: &[u8]| {
        env.set_property("xds.cluster_name", cluster);
        let s = stream(&worker, id);
        request(&env, "GET", "/f", &[]);
        s.request_headers(&env, true);
        router_answers(&env, &[(":status", "503")]);
        (s.response_headers(&env, false), s)
    };
    let (action, _first) = fails_on(1, b"bad");
    assert_eq!(action, Action::Pause, "bad's retry");
    assert_eq!(
        fails_on(2, b"bad").0,
        Action::Continue,
        "bad's budget is spent"
    );
    assert_eq!(
        fails_on(3, b"good").0,
        Action::Pause,
        "good still has its own"
    );
    assert_eq!(denied(&env, "budget"), 1);
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
        cluster,
        headers,
        body,
        trailers,
        timeout,
        ..
    } = await_call(&env, &worker, 1)
    else {
        panic!("an HTTP callout");
    };
    assert_eq!(cluster, "retry_loopback");
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

#[test]
fn router_mode_budget_is_no_concurrency_cap() {
    // Slow but healthy: many requests in flight at once. Nothing is reserved on arrival, so
    // each one keeps its retries while nothing fails.
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"max_retries": 2, "budget": {"ratio": 0.2, "min_per_second": 5}}"#,
    );
    let streams: Vec<_> = (1..=30).map(|id| stream(&worker, id)).collect();
    for s in &streams {
        request(&env, "GET", "/slow", &[]);
        s.request_headers(&env, true);
        assert_eq!(
            request_header(&env, "x-envoy-max-retries").as_deref(),
            Some("2")
        );
    }
    assert_eq!(denied(&env, "budget"), 0);
    for s in &streams {
        respond_upstream(&env, &[(":status", "200"), ("x-envoy-attempt-count", "1")]);
        s.response_headers(&env, false);
    }
    assert_eq!(env.metric("wasmgate_retry_retries_total"), 0);
}

#[test]
fn router_mode_charges_the_retries_made_even_when_the_stream_is_reset() {
    let json = r#"{"max_retries": 2, "budget": {"ratio": 0.5, "min_per_second": 0}}"#;
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, json);
    env.set_property("xds.cluster_name", b"backend");
    let key = shared_key(json, "budget") + ".backend";
    let totals = || {
        let stored = env.get_shared(&key).unwrap().0.unwrap_or_default();
        crate::budget::Window::decode(&stored).totals(START_MS / 1000)
    };
    // Reset before any response, after the router made two retries: they count.
    let s = stream(&worker, 1);
    request(&env, "GET", "/r", &[]);
    s.request_headers(&env, true);
    env.set_property("upstream.request_attempt_count", &3u64.to_le_bytes());
    s.done(&env);
    assert_eq!(totals(), (1, 2));
    assert_eq!(env.metric("wasmgate_retry_retries_total"), 2);
    // Reset after one attempt: nothing to charge, and nothing was held on arrival. The worker
    // writes the requests it counted with its next write (here its tick).
    env.set_property("upstream.request_attempt_count", &1u64.to_le_bytes());
    for id in 2..=5 {
        let s = stream(&worker, id);
        s.request_headers(&env, true);
        s.done(&env);
    }
    assert_eq!(totals(), (1, 2), "counted locally, not written yet");
    worker.tick(&env);
    assert_eq!(totals(), (5, 2));
    // A stream answered normally is settled once, not again when it ends.
    env.set_property("upstream.request_attempt_count", &2u64.to_le_bytes());
    let s = stream(&worker, 6);
    s.request_headers(&env, true);
    respond_upstream(&env, &[(":status", "200")]);
    s.response_headers(&env, false);
    s.done(&env);
    assert_eq!(totals(), (6, 3));
}

const BREAKER: &str = r#"{"max_retries": 0,
    "circuit_breaker": {"failure_threshold": 2, "open_for": "10s"},
    "rules": [{"match": {"methods": ["PUT"]}, "max_retries": 1},
              {"match": {"path_prefix": "/own/"},
               "circuit_breaker": {"failure_threshold": 1, "scope": "route"}}]}"#;

/// Sends one request to `cluster` (and `route`) answered `status`; the client's status.
fn call(
    env: &FakeEnv,
    worker: &Rc<Worker<Retry>>,
    id: u32,
    (method, path, cluster, route): (&str, &str, &str, &str),
    status: &str,
) -> u32 {
    env.set_property("xds.cluster_name", cluster.as_bytes());
    env.set_property("xds.route_name", route.as_bytes());
    let before = env.responses().len();
    let s = stream(worker, id);
    request(env, method, path, &[]);
    if s.request_headers(env, true) == Action::Pause {
        assert_eq!(env.responses().len(), before + 1);
        return sent(env).status;
    }
    respond_upstream(env, &[(":status", status)]);
    s.response_headers(env, false);
    status.parse().unwrap()
}

#[test]
fn one_bad_upstream_opens_only_its_own_circuit() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, BREAKER);
    let bad = ("GET", "/x", "bad", "r1");
    let good = ("GET", "/x", "good", "r1");
    assert_eq!(call(&env, &worker, 1, bad, "503"), 503);
    assert_eq!(call(&env, &worker, 2, good, "200"), 200);
    assert_eq!(call(&env, &worker, 3, bad, "503"), 503);
    assert_eq!(transitions(&env, "opened"), 1);
    assert_eq!(
        call(&env, &worker, 4, bad, "200"),
        503,
        "bad's circuit is open"
    );
    assert_eq!(call(&env, &worker, 5, good, "200"), 200, "good's is not");
    // A rule that inherits the top-level breaker shares the upstream's circuit.
    assert_eq!(
        call(&env, &worker, 6, ("PUT", "/x", "bad", "r1"), "200"),
        503
    );
    assert_eq!(
        call(&env, &worker, 7, ("PUT", "/x", "good", "r1"), "200"),
        200
    );
    assert_eq!(env.metric("wasmgate_retry_short_circuited_total"), 2);
    // Per upstream: bad's circuit opened and short-circuited, good's did neither.
    let bad = [("upstream", "bad")];
    let good = [("upstream", "good")];
    let opened = |labels: &[(&str, &str)]| {
        let mut labels = labels.to_vec();
        labels.push(("outcome", "opened"));
        env.metric_with("wasmgate_retry_circuit_transitions_total", &labels)
    };
    assert_eq!((opened(&bad), opened(&good)), (1, 0));
    let short = |labels| env.metric_with("wasmgate_retry_short_circuited_total", labels);
    assert_eq!((short(&bad), short(&good)), (2, 0));
    let open = |labels| env.gauge_with("wasmgate_retry_circuit_open", labels);
    assert_eq!((open(&bad), open(&good)), (Some(1), Some(0)));
}

#[test]
fn a_route_scoped_circuit_is_per_route() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, BREAKER);
    // /own/ has its own breaker per route: r2 opens on one failure, r3 on the same cluster
    // stays closed, and the cluster's top-level circuit saw nothing.
    assert_eq!(
        call(&env, &worker, 1, ("GET", "/own/a", "c", "r2"), "503"),
        503
    );
    assert_eq!(
        call(&env, &worker, 2, ("GET", "/own/a", "c", "r2"), "200"),
        503
    );
    assert_eq!(
        call(&env, &worker, 3, ("GET", "/own/a", "c", "r3"), "200"),
        200
    );
    assert_eq!(call(&env, &worker, 4, ("GET", "/x", "c", "r2"), "503"), 503);
    assert_eq!(call(&env, &worker, 5, ("GET", "/x", "c", "r2"), "200"), 200);
    // The rule's own circuits carry its index besides the route; the top level's, the cluster.
    let open = |labels: &[(&str, &str)]| env.gauge_with("wasmgate_retry_circuit_open", labels);
    assert_eq!(open(&[("rule", "1"), ("upstream", "r2")]), Some(1));
    assert_eq!(open(&[("rule", "1"), ("upstream", "r3")]), Some(0));
    assert_eq!(open(&[("upstream", "c")]), Some(0));
    assert!(env.metric_names().contains(
        &"plugin=.=p;.;outcome=.=opened;.;rule=.=1;.;upstream=.=r2;.;wasmgate_retry_circuit_transitions_total"
            .to_string()
    ));
    assert_eq!(
        env.metric_with(
            "wasmgate_retry_short_circuited_total",
            &[("rule", "1"), ("upstream", "r2")]
        ),
        1
    );
}

#[test]
fn a_request_that_already_is_a_retry_is_not_retried_again() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, r#"{"max_retries": 2, "skip_retried_requests": true}"#);
    for (id, count, expected) in [(1, "2", "0"), (2, "1", "2"), (3, "junk", "2")] {
        let s = stream(&worker, id);
        request(&env, "GET", "/r", &[("x-envoy-attempt-count", count)]);
        s.request_headers(&env, true);
        assert_eq!(
            request_header(&env, "x-envoy-max-retries").as_deref(),
            Some(expected),
            "x-envoy-attempt-count: {count}"
        );
    }
    assert_eq!(denied(&env, "retried"), 1);
    // Off by default: the header changes nothing.
    let worker = configure(&env, r#"{"max_retries": 2}"#);
    let s = stream(&worker, 4);
    request(&env, "GET", "/r", &[("x-envoy-attempt-count", "3")]);
    s.request_headers(&env, true);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("2")
    );
}

#[test]
fn router_mode_hedges_only_requests_it_may_retry() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"max_retries": 1, "per_try_timeout": "200ms", "hedge_on_per_try_timeout": true,
            "retry_on": ["unavailable", "reset"]}"#,
    );
    let s = stream(&worker, 1);
    request(&env, "GET", "/r", &[]);
    s.request_headers(&env, true);
    let hedge = || request_header(&env, "x-envoy-hedge-on-per-try-timeout");
    assert_eq!(hedge().as_deref(), Some("true"));
    assert_eq!(
        request_header(&env, "x-envoy-retry-grpc-on").as_deref(),
        Some("unavailable")
    );
    assert_eq!(
        request_header(&env, "x-envoy-retry-on").as_deref(),
        Some("reset")
    );
    let s = stream(&worker, 2);
    request(
        &env,
        "POST",
        "/r",
        &[("x-envoy-hedge-on-per-try-timeout", "true")],
    );
    s.request_headers(&env, true);
    assert_eq!(hedge(), None, "not idempotent: no hedging");
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
}

#[test]
fn filter_mode_gives_grpc_requests_one_attempt() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    let grpc = [("content-type", "application/grpc+proto")];
    request(&env, "GET", "/pkg.Service/Method", &grpc);
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("0")
    );
    router_answers(&env, &[(":status", "503"), ("grpc-status", "14")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert!(env.callouts().is_empty());
    // A 5xx retried for a plain request, as before.
    let s = stream(&worker, 2);
    request(&env, "GET", "/plain", &[]);
    s.request_headers(&env, true);
    router_answers(&env, &[(":status", "503"), ("grpc-status", "14")]);
    assert_eq!(s.response_headers(&env, false), Action::Pause);
}

#[test]
fn slow_calls_and_a_failure_rate_open_the_circuit() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(
        &env,
        r#"{"max_retries": 0, "circuit_breaker": {"slow_call_duration": "1s",
            "slow_call_rate": 1.0, "minimum_calls": 2, "open_for": "10s"}}"#,
    );
    env.set_property("xds.cluster_name", b"slow");
    for id in 1..=2 {
        let s = stream(&worker, id);
        request(&env, "GET", "/x", &[]);
        assert_eq!(s.request_headers(&env, true), Action::Continue);
        env.advance_ms(1_500);
        respond_upstream(&env, &[(":status", "200")]);
        s.response_headers(&env, false);
    }
    assert_eq!(transitions(&env, "opened"), 1, "two slow 200s");
    let s = stream(&worker, 3);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    assert_eq!(error_of(&sent(&env)), "circuit_open");

    // Half of the calls failing, never two in a row: the default rate tripping opens it.
    let worker = configure(
        &env,
        r#"{"max_retries": 0, "circuit_breaker": {"minimum_calls": 4}}"#,
    );
    env.set_property("xds.cluster_name", b"flaky");
    for (id, status) in [(4, "503"), (5, "200"), (6, "503"), (7, "200")] {
        let s = stream(&worker, id);
        request(&env, "GET", "/x", &[]);
        assert_eq!(s.request_headers(&env, true), Action::Continue);
        respond_upstream(&env, &[(":status", status)]);
        s.response_headers(&env, false);
    }
    assert_eq!(transitions(&env, "opened"), 2);
}

#[test]
fn the_budget_is_written_once_a_second_not_on_every_request() {
    let json = r#"{"max_retries": 2, "budget": {"ratio": 0.5, "min_per_second": 0}}"#;
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, json);
    env.set_property("xds.cluster_name", b"backend");
    let key = shared_key(json, "budget") + ".backend";
    let cas = || env.get_shared(&key).unwrap().1;
    let s = stream(&worker, 1);
    request(&env, "GET", "/r", &[]);
    s.request_headers(&env, true);
    let first = cas();
    assert!(
        first.is_some(),
        "the first request reads (and creates) the window"
    );
    for id in 2..=50 {
        let s = stream(&worker, id);
        s.request_headers(&env, true);
    }
    assert_eq!(
        cas(),
        first,
        "49 more requests in the same second: no write"
    );
    // They still count in this worker's decisions: 50 requests allow 25 retries.
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("2")
    );
    env.advance_ms(1_000);
    let s = stream(&worker, 51);
    s.request_headers(&env, true);
    assert_ne!(cas(), first, "a new second: one write");
    let stored = crate::budget::Window::decode(&env.get_shared(&key).unwrap().0.unwrap());
    assert_eq!(stored.totals(START_MS / 1000 + 1), (50, 0));
}

#[test]
fn filter_mode_timeout_counts_the_first_attempt() {
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, FILTER_MODE);
    let s = stream(&worker, 1);
    request(&env, "GET", "/f", &[]);
    s.request_headers(&env, true);
    // The first attempt took all of filter_mode.timeout (5 s): no retry starts after it.
    env.advance_ms(5_000);
    router_answers(&env, &[(":status", "503")]);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert!(env.callouts().is_empty());
}

#[test]
fn budgets_beyond_the_local_views_are_written_on_every_request() {
    let json = r#"{"max_retries": 1, "budget": {"ratio": 0.5, "min_per_second": 0}}"#;
    let env = FakeEnv::at(START_MS);
    let worker = configure(&env, json);
    let totals = |cluster: &str| {
        let key = format!("{}.{cluster}", shared_key(json, "budget"));
        let stored = env.get_shared(&key).unwrap().0.unwrap_or_default();
        crate::budget::Window::decode(&stored).totals(START_MS / 1000)
    };
    let mut id = 0;
    let mut send = |cluster: &str| {
        id += 1;
        env.set_property("xds.cluster_name", cluster.as_bytes());
        let s = stream(&worker, id);
        request(&env, "GET", "/r", &[]);
        s.request_headers(&env, true);
    };
    for i in 0..MAX_LOCAL_BUDGETS {
        send(&format!("c{i}"));
    }
    send("c0");
    assert_eq!(
        totals("c0"),
        (0, 0),
        "a local view: written with the next second"
    );
    send("extra");
    send("extra");
    assert_eq!(
        totals("extra"),
        (2, 0),
        "no local view left: written at once"
    );
    assert_eq!(
        request_header(&env, "x-envoy-max-retries").as_deref(),
        Some("1"),
        "2 requests allow 1 retry"
    );
}
