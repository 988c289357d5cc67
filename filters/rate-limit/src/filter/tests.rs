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
     "limits": [{"name": "per_minute", "requests": 2, "window": "1m"}]},
    {"match": {"path_prefix": "/keyed/"}, "key": [{"header": "x-api-key"}],
     "limits": [{"name": "per_minute", "requests": 2, "window": "1m"}]}],
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

fn metric(env: &FakeEnv, what: &str) -> i64 {
    env.metric(&format!("wasmgate_rate_limit_{what}"))
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
    assert_eq!(metric(&env, "allowed"), 1);
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
    assert_eq!((metric(&env, "allowed"), metric(&env, "limited")), (2, 1));

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
    assert_eq!(metric(&env, "missing_key"), 1);

    request(&env, "10.0.0.1", "/other", &[]);
    assert_eq!(
        send(&env, &worker, 2, &[(":status", "200")]),
        Action::Continue
    );
    assert!(response_values(&env, "ratelimit").is_empty());
    assert!(response_values(&env, "x-ratelimit-remaining").is_empty());
}

/// Under pressure (the table's entries all held by active keys) new keys share the rule's
/// overflow entry, and `wasmgate_rate_limit_overflow` counts them; an active key keeps its count.
#[test]
fn new_keys_overflow_a_full_table_and_are_counted() {
    let env = FakeEnv::at(NOW_MS);
    let worker = Rc::new(Worker::default());
    let config = r#"{"max_keys": 2, "rules": [{"key": [{"header": "x-api-key"}],
        "limits": [{"name": "per_minute", "requests": 2, "window": "1m"}]}]}"#;
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
    assert_eq!(metric(&env, "overflow"), 9);
    assert_eq!(metric(&env, "keys_evicted"), 0);
    assert_eq!(send_key("victim"), Action::Pause, "still refused");
    assert_eq!(metric(&env, "limited"), 2 + 7);

    // A minute later every entry is idle: new keys take them (counted as evictions).
    env.advance_ms(60_000);
    assert_eq!(send_key("fresh"), Action::Continue);
    assert_eq!(metric(&env, "keys_evicted"), 1);
    assert_eq!(metric(&env, "overflow"), 9);
}
