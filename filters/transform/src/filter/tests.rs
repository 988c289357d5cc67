//! The filter's hooks driven through the frame with the fake host: request header edits in one
//! whole-map write, JSON body edits with their Content-Length, and the body size limits.

use super::*;
use wasmgate_core::host::Host;
use wasmgate_host::fake::{Call, FakeEnv, Sent};
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;

const HEADERS: &str = r#"{"request": {
    "headers": {"remove": ["x-internal"], "set": {"x-user": "{{header.x-jwt-sub}}",
                "x-q": "{{query.q}}"}, "add": {"x-source": "gateway"}},
    "path": {"replace_prefix": {"from": "/v1/", "to": "/api/v1/"}}}}"#;

const REQUEST_BODY: &str = r#"{"request": {"body": {
    "json": {"remove": ["/password"], "set": {"/meta/source": "gateway"}},
    "max_body_bytes": 64}}, "hold_headers": HOLD}"#;

const RESPONSE_BODY: &str = r#"{"response": {
    "headers": {"set": {"x-served-by": "wasmgate"}},
    "body": {"json": {"remove": ["/internal"]}, "max_body_bytes": 32}}}"#;

fn configure(env: &FakeEnv, json: &str) -> Rc<Worker<Transform>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(json.as_bytes())));
    env.take_calls();
    worker
}

fn request_body_config(hold: bool) -> String {
    REQUEST_BODY.replace("HOLD", &hold.to_string())
}

fn stream(worker: &Rc<Worker<Transform>>, id: u32) -> Bound<Transform> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

fn request(env: &FakeEnv, method: &str, path: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![
        (":method", method),
        (":authority", "api.example.com"),
        (":path", path),
    ];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Request, &headers);
}

/// A JSON POST of `body` with its Content-Length.
fn post_json(env: &FakeEnv, body: &[u8]) {
    let length = body.len().to_string();
    request(
        env,
        "POST",
        "/users",
        &[
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
    );
    env.set_body(Direction::Request, body);
}

fn header(env: &FakeEnv, map: HeaderMap, name: &str) -> Option<String> {
    env.header(map, name)
}

fn status_and_error(sent: &Sent) -> (u32, String) {
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    let error = body["error"].as_str().unwrap_or_default().to_string();
    (sent.status, error)
}

/// Metric `wasmgate_transform_<what>` summed over its series carrying `labels`.
fn metric(env: &FakeEnv, what: &str, labels: &[(&str, &str)]) -> i64 {
    env.metric_with(&format!("wasmgate_transform_{what}"), labels)
}

/// `body_errors_total` of one reason in one direction (`""`: both).
fn body_errors(env: &FakeEnv, direction: &str, reason: &str) -> i64 {
    let mut labels = vec![("reason", reason)];
    if !direction.is_empty() {
        labels.push(("direction", direction));
    }
    metric(env, "body_errors_total", &labels)
}

#[test]
fn request_header_edits_are_one_whole_map_write() {
    let env = FakeEnv::default();
    let worker = configure(&env, HEADERS);
    request(
        &env,
        "GET",
        "/v1/users?q=1",
        &[("x-internal", "secret"), ("x-jwt-sub", "alice")],
    );
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    let calls = env.take_calls();
    let writes: Vec<&Call> = calls
        .iter()
        .filter(|c| !matches!(c, Call::Metric(..)))
        .collect();
    let [Call::WriteMap(HeaderMap::Request, written)] = writes[..] else {
        panic!("one whole-map write: {calls:?}");
    };
    let get = |name: &str| {
        written
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get(":path"), Some("/api/v1/users?q=1"));
    assert_eq!(get(":method"), Some("GET"), "pseudo-headers kept");
    assert_eq!(get("x-user"), Some("alice"));
    assert_eq!(get("x-q"), Some("1"));
    assert_eq!(get("x-source"), Some("gateway"));
    assert_eq!(get("x-internal"), None);
    assert!(calls.contains(&Call::Metric(
        "plugin=.=plugin;.;direction=.=request;.;wasmgate_transform_transformed_total".into(),
        1
    )));
}

#[test]
fn a_few_header_edits_are_single_writes() {
    let env = FakeEnv::default();
    let worker = configure(
        &env,
        r#"{"request": {"headers": {"remove": ["x-remove-1", "x-remove-2"],
            "add": {"x-add-1": "one", "x-add-2": "two"}, "append": {"x-trace": "gw"}}}}"#,
    );
    request(
        &env,
        "GET",
        "/bench",
        &[
            ("x-remove-1", "drop-me"),
            ("x-add-2", "client"),
            ("x-trace", "client"),
        ],
    );
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    let calls = env.take_calls();
    let map = HeaderMap::Request;
    let writes: Vec<&Call> = calls
        .iter()
        .filter(|c| !matches!(c, Call::Metric(..)))
        .collect();
    assert_eq!(
        writes,
        [
            &Call::WriteHeader(map, "x-remove-1".into(), None),
            &Call::AddHeader(map, "x-add-1".into(), "one".into()),
            &Call::AddHeader(map, "x-trace".into(), "gw".into()),
        ],
        "absent names are not removed, present ones not added"
    );
    assert_eq!(
        env.headers(map)
            .iter()
            .filter(|(n, _)| !n.starts_with(':'))
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>(),
        [
            "x-add-2=client",
            "x-trace=client",
            "x-add-1=one",
            "x-trace=gw"
        ]
    );
    assert!(calls.contains(&Call::Metric(
        "plugin=.=plugin;.;direction=.=request;.;wasmgate_transform_transformed_total".into(),
        1
    )));

    // Nothing to change: nothing written, nothing counted.
    request(&env, "GET", "/bench", &[("x-add-1", "a"), ("x-add-2", "b")]);
    let unchanged = configure(
        &env,
        r#"{"request": {"headers": {"remove": ["x-remove-1"], "add": {"x-add-1": "one"}}}}"#,
    );
    stream(&unchanged, 2).request_headers(&env, true);
    assert_eq!(env.take_calls(), []);
}

#[test]
fn many_header_edits_or_a_rewritten_path_are_one_whole_map_write() {
    let env = FakeEnv::default();
    let names: Vec<String> = (0..=MAX_SINGLE_EDITS).map(|i| format!("x-r{i}")).collect();
    let config = format!(r#"{{"request": {{"headers": {{"remove": {names:?}}}}}}}"#);
    let worker = configure(&env, &config);
    let mut extra: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    extra.push(("x-kept", "1"));
    request(&env, "GET", "/bench", &extra);
    stream(&worker, 1).request_headers(&env, true);
    let calls = env.take_calls();
    let writes: Vec<&Call> = calls
        .iter()
        .filter(|c| !matches!(c, Call::Metric(..)))
        .collect();
    let [Call::WriteMap(HeaderMap::Request, written)] = writes[..] else {
        panic!("one whole-map write: {calls:?}");
    };
    let regular: Vec<&str> = written
        .iter()
        .filter(|(n, _)| !n.starts_with(':'))
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(regular, ["x-kept"]);

    // A path the frame rewrote to its normal form is written before the single edits.
    let worker = configure(
        &env,
        r#"{"paths": {"unnormalized": "rewrite"},
            "request": {"headers": {"remove": ["x-r0"]}}}"#,
    );
    request(&env, "GET", "/a//b", &[("x-r0", "1")]);
    stream(&worker, 2).request_headers(&env, true);
    let calls = env.take_calls();
    let writes: Vec<&Call> = calls
        .iter()
        .filter(|c| !matches!(c, Call::Metric(..)))
        .collect();
    assert_eq!(
        writes,
        [
            &Call::WriteHeader(HeaderMap::Request, ":path".into(), Some("/a/b".into())),
            &Call::WriteHeader(HeaderMap::Request, "x-r0".into(), None),
        ]
    );
}

#[test]
fn a_template_cannot_inject_a_header_line() {
    let env = FakeEnv::default();
    let worker = configure(&env, HEADERS);
    request(
        &env,
        "GET",
        "/v1/users?q=a%0D%0Ax-admin:%20true",
        &[("x-jwt-sub", "alice")],
    );
    stream(&worker, 1).request_headers(&env, true);
    assert_eq!(header(&env, HeaderMap::Request, "x-q"), None, "skipped");
    assert_eq!(header(&env, HeaderMap::Request, "x-admin"), None);
    assert!(env
        .headers(HeaderMap::Request)
        .iter()
        .all(|(_, v)| !v.contains('\r') && !v.contains('\n')));
    assert_eq!(metric(&env, "operations_skipped_total", &[]), 1);
    assert_eq!(
        header(&env, HeaderMap::Request, "x-user").as_deref(),
        Some("alice"),
        "the other operations still apply"
    );
}

#[test]
fn held_headers_get_the_length_of_the_edited_json_body() {
    let env = FakeEnv::default();
    let worker = configure(&env, &request_body_config(true));
    let body = br#"{"user": "bob", "password": "hunter2"}"#;
    post_json(&env, body);
    let s = stream(&worker, 1);
    assert_eq!(
        s.request_headers(&env, false),
        Action::Pause,
        "headers wait for the body"
    );
    assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
    let edited = env.request_body.borrow().clone();
    assert_eq!(edited, br#"{"user": "bob", "meta": {"source":"gateway"}}"#);
    assert_eq!(
        header(&env, HeaderMap::Request, "content-length"),
        Some(edited.len().to_string())
    );
    assert_eq!(
        metric(&env, "transformed_total", &[("direction", "request")]),
        1
    );
}

#[test]
fn without_held_headers_an_edited_body_travels_without_a_length() {
    let env = FakeEnv::default();
    let worker = configure(&env, &request_body_config(false));
    let body = br#"{"user": "bob", "password": "hunter2"}"#;
    post_json(&env, body);
    let s = stream(&worker, 1);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    assert_eq!(header(&env, HeaderMap::Request, "content-length"), None);
    assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
    assert!(!String::from_utf8_lossy(&env.request_body.borrow()).contains("hunter2"));
    assert_eq!(header(&env, HeaderMap::Request, "content-length"), None);
}

#[test]
fn request_bodies_over_the_limit_or_not_json_are_refused() {
    let env = FakeEnv::default();
    let worker = configure(&env, &request_body_config(true));
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(64));
    post_json(&env, big.as_bytes());
    assert_eq!(
        stream(&worker, 1).request_headers(&env, false),
        Action::Pause
    );
    let sent = env.last_response().expect("a reply");
    assert_eq!(status_and_error(&sent), (413, "body_too_large".into()));

    // No length announced: counted while it arrives.
    request(
        &env,
        "POST",
        "/users",
        &[("content-type", "application/json")],
    );
    let s = stream(&worker, 2);
    assert_eq!(s.request_headers(&env, false), Action::Pause);
    assert_eq!(s.request_body(&env, big.len(), false), Action::Pause);
    assert_eq!(env.responses().len(), 2);

    post_json(&env, b"{not json");
    let s = stream(&worker, 3);
    s.request_headers(&env, false);
    assert_eq!(s.request_body(&env, 9, true), Action::Pause);
    let sent = env.last_response().expect("a reply");
    assert_eq!(status_and_error(&sent), (400, "invalid_json".into()));
    assert_eq!(body_errors(&env, "request", "too_large"), 2);
    assert_eq!(body_errors(&env, "request", "invalid_json"), 1);
    assert_eq!(metric(&env, "body_errors_total", &[]), 3);
}

/// A POST of `body` with these headers (and its Content-Length) on a new stream; the stream.
fn post(
    env: &FakeEnv,
    worker: &Rc<Worker<Transform>>,
    id: u32,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (Bound<Transform>, Action) {
    let length = body.len().to_string();
    let mut headers = vec![("content-length", length.as_str())];
    headers.extend_from_slice(extra);
    request(env, "POST", "/users", &headers);
    env.set_body(Direction::Request, body);
    let s = stream(worker, id);
    let action = s.request_headers(env, false);
    (s, action)
}

#[test]
fn request_bodies_the_edits_cannot_apply_to_are_refused_by_default() {
    let env = FakeEnv::default();
    let worker = configure(&env, &request_body_config(false));
    let body = br#"{"password": "hunter2"}"#;
    let cases: [&[(&str, &str)]; 4] = [
        &[("content-type", "text/plain")],
        &[],
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &[
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ],
    ];
    for (id, extra) in (1..).zip(cases) {
        let (_, action) = post(&env, &worker, id, extra, body);
        assert_eq!(action, Action::Pause, "{extra:?}");
        let sent = env.last_response().expect("a reply");
        assert_eq!(
            status_and_error(&sent),
            (415, "unsupported_media_type".into()),
            "{extra:?}"
        );
    }
    assert_eq!(body_errors(&env, "request", "unsupported_media_type"), 4);
    assert_eq!(metric(&env, "body_errors_total", &[]), 4);
    // JSON media types with parameters, other case and +json suffixes are edited.
    for (id, content_type) in (10..).zip([
        "Application/JSON; charset=utf-8",
        "application/vnd.api+json",
    ]) {
        let (s, action) = post(&env, &worker, id, &[("content-type", content_type)], body);
        assert_eq!(action, Action::Continue, "{content_type}");
        assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
        assert!(!String::from_utf8_lossy(&env.request_body.borrow()).contains("hunter2"));
    }
    // An empty body has nothing to edit, whatever its type.
    let (_, action) = post(&env, &worker, 20, &[("content-type", "text/plain")], b"");
    assert_eq!(action, Action::Continue);
    request(
        &env,
        "POST",
        "/users",
        &[("content-type", "application/json")],
    );
    env.set_body(Direction::Request, b"");
    let s = stream(&worker, 21);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    assert_eq!(s.request_body(&env, 0, true), Action::Continue);
    assert_eq!(env.responses().len(), 4);
}

#[test]
fn with_pass_such_bodies_stream_untouched_and_are_counted() {
    let env = FakeEnv::default();
    let config = REQUEST_BODY
        .replace(
            "\"max_body_bytes\"",
            "\"on_unsupported\": \"pass\", \"max_body_bytes\"",
        )
        .replace("HOLD", "true");
    let worker = configure(&env, &config);
    let body = br#"{"password": "hunter2"}"#;
    for (id, extra) in (1..).zip([
        &[("content-type", "text/plain")][..],
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    ]) {
        let (s, action) = post(&env, &worker, id, extra, body);
        assert_eq!(action, Action::Continue, "{extra:?}");
        assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
        assert_eq!(*env.request_body.borrow(), body, "{extra:?}");
    }
    // Invalid JSON and duplicate names pass unchanged too.
    for (id, bad) in (3..).zip([&b"{not json"[..], br#"{"password": 1, "password": 2}"#]) {
        let (s, action) = post(
            &env,
            &worker,
            id,
            &[("content-type", "application/json")],
            bad,
        );
        assert_eq!(action, Action::Pause, "held");
        assert_eq!(s.request_body(&env, bad.len(), true), Action::Continue);
        assert_eq!(*env.request_body.borrow(), bad);
    }
    assert!(env.responses().is_empty());
    assert_eq!(body_errors(&env, "request", "unsupported_media_type"), 2);
    assert_eq!(body_errors(&env, "request", "invalid_json"), 2);
    assert_eq!(metric(&env, "body_errors_total", &[]), 4);
    assert_eq!(
        metric(&env, "transformed_total", &[("direction", "request")]),
        0
    );
}

#[test]
fn duplicate_member_names_are_refused() {
    let env = FakeEnv::default();
    let worker = configure(&env, &request_body_config(true));
    // The filter would remove one "password" and the upstream might read the other.
    for (id, body) in (1..).zip([
        &br#"{"password": "a", "password": "b"}"#[..],
        br#"{"role": "user", "r\u006fle": "admin"}"#,
    ]) {
        post_json(&env, body);
        let s = stream(&worker, id);
        assert_eq!(s.request_headers(&env, false), Action::Pause);
        assert_eq!(s.request_body(&env, body.len(), true), Action::Pause);
        let sent = env.last_response().expect("a reply");
        assert_eq!(status_and_error(&sent), (400, "invalid_json".into()));
        let reply: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
        assert!(
            reply["message"].as_str().unwrap().contains("same name"),
            "{reply}"
        );
    }
    assert_eq!(body_errors(&env, "request", "invalid_json"), 2);
}

#[test]
fn edited_bodies_keep_every_byte_the_edits_do_not_name() {
    let env = FakeEnv::default();
    let worker = configure(&env, &request_body_config(true).replace("64", "1024"));
    let body = "{\n  \"amount\": 1.50,\n  \"id\": 12345678901234567890123,\n  \"password\": \"x\",\n  \"z\": \"caf\\u00e9\"\n}";
    post_json(&env, body.as_bytes());
    let s = stream(&worker, 1);
    s.request_headers(&env, false);
    assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
    assert_eq!(
        String::from_utf8_lossy(&env.request_body.borrow()),
        "{\n  \"amount\": 1.50,\n  \"id\": 12345678901234567890123,\n  \"z\": \"caf\\u00e9\",\n  \"meta\": {\"source\":\"gateway\"}\n}"
    );
}

const RESPONSE_REFUSE: &str = r#"{"response": {
    "body": {"json": {"remove": ["/internal"]}, "on_unsupported": "refuse"}}}"#;

fn respond(env: &FakeEnv, s: &Bound<Transform>, extra: &[(&str, &str)], body: &[u8]) -> Action {
    let length = body.len().to_string();
    let mut headers = vec![(":status", "200"), ("content-length", length.as_str())];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Response, &headers);
    env.set_body(Direction::Response, body);
    s.response_headers(env, false)
}

#[test]
fn responses_pass_by_default_or_are_refused_with_502() {
    let env = FakeEnv::default();
    let worker = configure(&env, RESPONSE_BODY);
    let html = b"<html>internal</html>";
    request(&env, "GET", "/users", &[]);
    let s = stream(&worker, 1);
    s.request_headers(&env, true);
    assert_eq!(
        respond(&env, &s, &[("content-type", "text/html")], html),
        Action::Continue
    );
    assert_eq!(body_errors(&env, "response", "unsupported_media_type"), 1);
    let s = stream(&worker, 2);
    s.request_headers(&env, true);
    let bad = b"{\"internal\": 1,";
    respond(&env, &s, &[("content-type", "application/json")], bad);
    assert_eq!(s.response_body(&env, bad.len(), true), Action::Continue);
    assert_eq!(*env.response_body.borrow(), bad);
    assert_eq!(body_errors(&env, "response", "invalid_json"), 1);
    assert!(env.responses().is_empty());
    assert_eq!(metric(&env, "body_errors_total", &[]), 2);

    let env = FakeEnv::default();
    let worker = configure(&env, RESPONSE_REFUSE);
    let s = stream(&worker, 3);
    s.request_headers(&env, true);
    assert_eq!(
        respond(&env, &s, &[("content-type", "text/html")], html),
        Action::Pause
    );
    let sent = env.last_response().expect("a reply");
    assert_eq!(
        status_and_error(&sent),
        (502, "unsupported_media_type".into())
    );
    let s = stream(&worker, 4);
    s.request_headers(&env, true);
    let dup = br#"{"internal": 1, "internal": 2}"#;
    respond(&env, &s, &[("content-type", "application/json")], dup);
    assert_eq!(s.response_body(&env, dup.len(), true), Action::Pause);
    let sent = env.last_response().expect("a reply");
    assert_eq!(status_and_error(&sent), (502, "invalid_json".into()));
    assert_eq!(metric(&env, "body_errors_total", &[]), 2);
}

#[test]
fn a_response_announced_over_the_limit_is_502() {
    let env = FakeEnv::default();
    let worker = configure(&env, RESPONSE_BODY);
    request(&env, "GET", "/users", &[]);
    let s = stream(&worker, 1);
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    env.set_map(
        HeaderMap::Response,
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "33"),
        ],
    );
    assert_eq!(s.response_headers(&env, false), Action::Pause);
    let sent = env.last_response().expect("a reply");
    assert_eq!(status_and_error(&sent), (502, "body_too_large".into()));
    assert_eq!(
        sent.header("x-served-by"),
        None,
        "its own reply is not transformed"
    );
    assert_eq!(body_errors(&env, "response", "too_large"), 1);
    assert_eq!(body_errors(&env, "request", "too_large"), 0);
}

#[test]
fn internal_fields_are_removed_from_a_json_response() {
    let env = FakeEnv::default();
    let worker = configure(&env, RESPONSE_BODY);
    request(&env, "GET", "/users", &[]);
    let s = stream(&worker, 1);
    s.request_headers(&env, true);
    let body = br#"{"id": 1, "internal": "x"}"#;
    let length = body.len().to_string();
    env.set_map(
        HeaderMap::Response,
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
    );
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(header(&env, HeaderMap::Response, "content-length"), None);
    assert_eq!(
        header(&env, HeaderMap::Response, "x-served-by").as_deref(),
        Some("wasmgate")
    );
    env.set_body(Direction::Response, body);
    assert_eq!(s.response_body(&env, body.len(), true), Action::Continue);
    assert_eq!(*env.response_body.borrow(), br#"{"id": 1}"#);
    assert_eq!(
        metric(&env, "transformed_total", &[("direction", "response")]),
        1
    );
}

const TO_HEADERS: &str = r#"{"hold_headers": true, "request": {"body": {
    "json": {"to_headers": {"/tenant/id": "x-tenant", "/plan": "x-plan"}, "remove": ["/secret"]},
    "form": {"to_headers": {"tenant": "x-tenant"}, "remove": ["secret"]},
    "max_body_bytes": 4096}}}"#;

/// A held POST of `body` with `content_type` (and a forged `x-tenant`); the stream after its
/// body hook ran.
fn post_held(
    env: &FakeEnv,
    worker: &Rc<Worker<Transform>>,
    id: u32,
    content_type: &str,
    body: &[u8],
) {
    let length = body.len().to_string();
    request(
        env,
        "POST",
        "/orders",
        &[
            ("content-type", content_type),
            ("content-length", &length),
            ("x-tenant", "forged"),
            ("x-plan", "forged"),
        ],
    );
    env.set_body(Direction::Request, body);
    let s = stream(worker, id);
    assert_eq!(s.request_headers(env, false), Action::Pause, "held");
    assert_eq!(
        header(env, HeaderMap::Request, "x-tenant"),
        None,
        "the forged header is gone before the body arrives"
    );
    assert_eq!(s.request_body(env, body.len(), true), Action::Continue);
}

#[test]
fn body_values_go_into_headers_and_forged_ones_never_pass() {
    let env = FakeEnv::default();
    let worker = configure(&env, TO_HEADERS);
    post_held(
        &env,
        &worker,
        1,
        "application/json",
        br#"{"tenant": {"id": "acme"}, "plan": 3, "secret": "s"}"#,
    );
    assert_eq!(
        header(&env, HeaderMap::Request, "x-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(
        header(&env, HeaderMap::Request, "x-plan").as_deref(),
        Some("3")
    );
    assert_eq!(
        *env.request_body.borrow(),
        br#"{"tenant": {"id": "acme"}, "plan": 3}"#
    );
    assert_eq!(
        header(&env, HeaderMap::Request, "content-length"),
        Some(env.request_body.borrow().len().to_string())
    );
    // Form fields too, decoded.
    post_held(
        &env,
        &worker,
        2,
        "application/x-www-form-urlencoded",
        b"tenant=acme%20eu&secret=s",
    );
    assert_eq!(
        header(&env, HeaderMap::Request, "x-tenant").as_deref(),
        Some("acme eu")
    );
    assert_eq!(*env.request_body.borrow(), b"tenant=acme%20eu");
    assert_eq!(
        header(&env, HeaderMap::Request, "x-plan"),
        None,
        "forged one removed"
    );
}

#[test]
fn unsafe_body_values_never_become_headers() {
    let env = FakeEnv::default();
    let worker = configure(&env, TO_HEADERS);
    let huge = "a".repeat(MAX_HEADER_VALUE + 1);
    let cases: [(&str, &[u8]); 6] = [
        (
            "application/json",
            br#"{"tenant": {"id": "a\r\nx-admin: 1"}}"#,
        ),
        ("application/json", br#"{"tenant": {"id": "a\u0000"}}"#),
        (
            "application/json",
            br#"{"tenant": {"id": {"nested": 1}}, "plan": null}"#,
        ),
        ("application/json", br#"{"tenant": {"id": ""}}"#),
        (
            "application/x-www-form-urlencoded",
            b"tenant=a%0D%0Ax-admin%3A%201",
        ),
        (
            "application/json",
            format!(r#"{{"tenant": {{"id": "{huge}"}}}}"#)
                .leak()
                .as_bytes(),
        ),
    ];
    for (id, (content_type, body)) in (1..).zip(cases) {
        post_held(&env, &worker, id, content_type, body);
        assert_eq!(header(&env, HeaderMap::Request, "x-tenant"), None, "{id}");
        assert_eq!(header(&env, HeaderMap::Request, "x-admin"), None, "{id}");
    }
    assert!(metric(&env, "operations_skipped_total", &[]) >= 6);
    assert!(env.responses().is_empty(), "the bodies themselves pass");
}

#[test]
fn a_repeated_form_field_copied_into_a_header_is_refused() {
    let env = FakeEnv::default();
    let worker = configure(&env, TO_HEADERS);
    let body = b"tenant=acme&tenant=evil";
    request(
        &env,
        "POST",
        "/orders",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "23"),
        ],
    );
    env.set_body(Direction::Request, body);
    let s = stream(&worker, 1);
    s.request_headers(&env, false);
    assert_eq!(s.request_body(&env, body.len(), true), Action::Pause);
    let sent = env.last_response().expect("a reply");
    assert_eq!(status_and_error(&sent), (400, "invalid_form".into()));
    assert_eq!(body_errors(&env, "request", "invalid_form"), 1);
}

const STATUS: &str = r#"{"response": {
    "status": {"404": 204, "200": 202},
    "headers": {"set": {"x-default": "1"}},
    "by_status": {"5xx": {"headers": {"set": {"x-error": "upstream"}, "remove": ["x-debug"]}}}}}"#;

#[test]
fn status_rewrites_and_edits_by_status() {
    let env = FakeEnv::default();
    let worker = configure(&env, STATUS);
    request(&env, "GET", "/x", &[]);
    let s = stream(&worker, 1);
    s.request_headers(&env, true);
    env.set_map(
        HeaderMap::Response,
        &[(":status", "200"), ("content-length", "0")],
    );
    assert_eq!(s.response_headers(&env, true), Action::Continue);
    assert_eq!(
        header(&env, HeaderMap::Response, ":status").as_deref(),
        Some("202")
    );
    assert_eq!(
        header(&env, HeaderMap::Response, "x-default").as_deref(),
        Some("1")
    );
    // 5xx: the class's edits replace the default ones.
    let s = stream(&worker, 2);
    s.request_headers(&env, true);
    env.set_map(
        HeaderMap::Response,
        &[(":status", "503"), ("x-debug", "trace")],
    );
    s.response_headers(&env, true);
    assert_eq!(
        header(&env, HeaderMap::Response, ":status").as_deref(),
        Some("503")
    );
    assert_eq!(
        header(&env, HeaderMap::Response, "x-error").as_deref(),
        Some("upstream")
    );
    assert_eq!(header(&env, HeaderMap::Response, "x-debug"), None);
    assert_eq!(header(&env, HeaderMap::Response, "x-default"), None);
    // 404 -> 204: the body is dropped and its length with it.
    let s = stream(&worker, 3);
    s.request_headers(&env, true);
    let page = b"<html>not found</html>";
    env.set_map(
        HeaderMap::Response,
        &[
            (":status", "404"),
            ("content-type", "text/html"),
            ("content-length", "22"),
        ],
    );
    env.set_body(Direction::Response, page);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(
        header(&env, HeaderMap::Response, ":status").as_deref(),
        Some("204")
    );
    assert_eq!(header(&env, HeaderMap::Response, "content-length"), None);
    assert_eq!(s.response_body(&env, page.len(), true), Action::Continue);
    assert!(env.response_body.borrow().is_empty());
    assert_eq!(metric(&env, "status_rewritten_total", &[]), 2);
}

#[test]
fn method_and_authority_are_rewritten() {
    let env = FakeEnv::default();
    let worker = configure(
        &env,
        r#"{"request": {"method": "POST", "authority": "legacy.internal:8080"}}"#,
    );
    request(&env, "GET", "/x", &[]);
    stream(&worker, 1).request_headers(&env, true);
    assert_eq!(
        header(&env, HeaderMap::Request, ":method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        header(&env, HeaderMap::Request, ":authority").as_deref(),
        Some("legacy.internal:8080")
    );
    assert_eq!(
        metric(&env, "transformed_total", &[("direction", "request")]),
        1
    );
}

const SOAP: &str = r#"{"request": {"body": {"convert": "json_to_xml",
      "xml": {"wrap": ["soap:Envelope", "soap:Body"],
              "declare": {"soap": "http://schemas.xmlsoap.org/soap/envelope/"},
              "content_type": "text/xml; charset=utf-8"}}},
    "response": {"body": {"convert": "xml_to_json",
      "xml": {"strip_prefixes": true, "unwrap": ["Envelope", "Body"]}}}, "hold_headers": HOLD}"#;

#[test]
fn json_in_xml_upstream_json_out() {
    for hold in [true, false] {
        let env = FakeEnv::default();
        let worker = configure(&env, &SOAP.replace("HOLD", &hold.to_string()));
        let body = br#"{"GetPrice": {"Item": "Apple"}}"#;
        post_json(&env, body);
        let s = stream(&worker, 1);
        s.request_headers(&env, false);
        assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
        let sent = String::from_utf8(env.request_body.borrow().clone()).unwrap();
        assert!(
            sent.ends_with(
                "<soap:Body><GetPrice><Item>Apple</Item></GetPrice></soap:Body></soap:Envelope>"
            ),
            "{sent}"
        );
        assert_eq!(
            header(&env, HeaderMap::Request, "content-type").as_deref(),
            Some("text/xml; charset=utf-8"),
            "hold {hold}"
        );
        let answer = b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'>\
                       <s:Body><GetPriceResponse><Price>1.90</Price></GetPriceResponse></s:Body></s:Envelope>";
        respond(
            &env,
            &s,
            &[("content-type", "text/xml; charset=utf-8")],
            answer,
        );
        assert_eq!(s.response_body(&env, answer.len(), true), Action::Continue);
        assert_eq!(
            *env.response_body.borrow(),
            br#"{"GetPriceResponse":{"Price":"1.90"}}"#
        );
        assert_eq!(
            header(&env, HeaderMap::Response, "content-type").as_deref(),
            Some("application/json")
        );
    }
}

#[test]
fn invalid_xml_passes_on_the_response_and_json_that_has_no_xml_form_is_400() {
    let env = FakeEnv::default();
    let worker = configure(&env, &SOAP.replace("HOLD", "true"));
    let body = br#"{"a": 1, "b": 2}"#;
    post_json(&env, body);
    let s = stream(&worker, 1);
    s.request_headers(&env, false);
    // With a wrap, several members are fine; a name that is no XML name is not.
    assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
    let bad = br#"{"a><b": 1}"#;
    post_json(&env, bad);
    let s = stream(&worker, 2);
    s.request_headers(&env, false);
    assert_eq!(s.request_body(&env, bad.len(), true), Action::Pause);
    let sent = env.last_response().expect("a reply");
    assert_eq!(status_and_error(&sent), (400, "invalid_json".into()));
    let lolz = b"<!DOCTYPE l [<!ENTITY l 'lol'>]><Envelope><Body>&l;</Body></Envelope>";
    respond(&env, &s, &[("content-type", "application/xml")], lolz);
    let s = stream(&worker, 3);
    s.request_headers(&env, true);
    respond(&env, &s, &[("content-type", "application/soap+xml")], lolz);
    assert_eq!(s.response_body(&env, lolz.len(), true), Action::Continue);
    assert_eq!(*env.response_body.borrow(), lolz, "passed unchanged");
    assert_eq!(body_errors(&env, "response", "invalid_xml"), 1);
    assert_eq!(body_errors(&env, "request", "invalid_json"), 1);
}

#[test]
fn a_legacy_200_carrying_an_error_becomes_502() {
    let env = FakeEnv::default();
    let worker = configure(
        &env,
        r#"{"hold_headers": true, "response": {"body": {"json": {
            "status_when": {"/error": 502, "/fault": 503}, "remove": ["/trace"]}}}}"#,
    );
    for (id, body, status) in [
        (1, &br#"{"error": {"code": 7}, "trace": "x"}"#[..], "502"),
        (2, br#"{"fault": "busy", "error": null}"#, "503"),
        (3, br#"{"data": 1, "error": null}"#, "200"),
    ] {
        request(&env, "GET", "/x", &[]);
        let s = stream(&worker, id);
        s.request_headers(&env, true);
        assert_eq!(
            respond(&env, &s, &[("content-type", "application/json")], body),
            Action::Pause,
            "held"
        );
        assert_eq!(s.response_body(&env, body.len(), true), Action::Continue);
        assert_eq!(
            header(&env, HeaderMap::Response, ":status").as_deref(),
            Some(status),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        *env.response_body.borrow(),
        br#"{"data": 1, "error": null}"#
    );
    assert_eq!(metric(&env, "status_rewritten_total", &[]), 2);
}

#[test]
fn invalid_xml_on_the_request_is_400() {
    let env = FakeEnv::default();
    let worker = configure(
        &env,
        r#"{"request": {"body": {"convert": "xml_to_json", "xml": {"arrays": ["item"]}}}}"#,
    );
    for (id, body) in (1..).zip([
        &b"<!DOCTYPE r [<!ENTITY a 'x'>]><r>&a;</r>"[..],
        b"<r><item>1</r>",
        b"<r/><r/>",
    ]) {
        let length = body.len().to_string();
        request(
            &env,
            "POST",
            "/x",
            &[
                ("content-type", "application/xml"),
                ("content-length", &length),
            ],
        );
        env.set_body(Direction::Request, body);
        let s = stream(&worker, id);
        s.request_headers(&env, false);
        assert_eq!(s.request_body(&env, body.len(), true), Action::Pause);
        let sent = env.last_response().expect("a reply");
        assert_eq!(status_and_error(&sent), (400, "invalid_xml".into()));
    }
    assert_eq!(body_errors(&env, "request", "invalid_xml"), 3);
    // A well-formed document is converted, and its content-type follows.
    let body = b"<r><item>1</item></r>";
    request(
        &env,
        "POST",
        "/x",
        &[("content-type", "text/xml"), ("content-length", "21")],
    );
    env.set_body(Direction::Request, body);
    let s = stream(&worker, 9);
    s.request_headers(&env, false);
    assert_eq!(s.request_body(&env, body.len(), true), Action::Continue);
    assert_eq!(*env.request_body.borrow(), br#"{"r":{"item":["1"]}}"#);
    assert_eq!(
        header(&env, HeaderMap::Request, "content-type").as_deref(),
        Some("application/json")
    );
}
