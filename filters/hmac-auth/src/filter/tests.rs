//! The filter's hooks driven through the frame with the fake host: a GitHub delivery verified
//! over its buffered body, bad and missing signatures, oversized bodies, and replays.

use super::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmgate_host::fake::{FakeEnv, Sent};
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;

const NOW_MS: u64 = 1_700_000_000_000;
const SECRET: &str = "demo-github-secret";
const CONFIG: &str = r#"{"scheme": "github",
    "secrets": [{"id": "current", "value": "demo-github-secret"}],
    "max_body_bytes": 64}"#;
const BODY: &[u8] = br#"{"action": "opened"}"#;

fn configure(env: &FakeEnv) -> Rc<Worker<HmacAuth>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(CONFIG.as_bytes())));
    worker
}

fn stream(worker: &Rc<Worker<HmacAuth>>, id: u32) -> Bound<HmacAuth> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sets the request headers of a POST to `/hook` with these extra headers.
fn request(env: &FakeEnv, extra: &[(&str, &str)]) {
    let mut headers = vec![
        (":method", "POST"),
        (":authority", "hooks.example.com"),
        (":path", "/hook"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Request, &headers);
}

/// Sends a delivery (headers, then the whole body) on a new stream; the action of the body.
fn deliver(
    env: &FakeEnv,
    worker: &Rc<Worker<HmacAuth>>,
    id: u32,
    signature: &str,
    body: &[u8],
) -> (Bound<HmacAuth>, Action) {
    let length = body.len().to_string();
    request(
        env,
        &[
            ("x-hub-signature-256", signature),
            ("x-github-delivery", &format!("delivery-{id}")),
            ("content-length", &length),
        ],
    );
    let s = stream(worker, id);
    assert_eq!(
        s.request_headers(env, false),
        Action::Continue,
        "headers go on"
    );
    env.set_body(Direction::Request, body);
    let action = s.request_body(env, body.len(), true);
    (s, action)
}

fn upstream_answers(env: &FakeEnv, s: &Bound<HmacAuth>, status: &str) {
    env.set_map(HeaderMap::Response, &[(":status", status)]);
    assert_eq!(s.response_headers(env, false), Action::Continue);
}

fn reply(env: &FakeEnv) -> Sent {
    env.last_response().expect("a reply to the client")
}

fn status_and_error(sent: &Sent) -> (u32, String) {
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    let error = body["error"].as_str().unwrap_or_default().to_string();
    (sent.status, error)
}

fn metric(env: &FakeEnv, what: &str) -> i64 {
    env.metric(&format!("wasmgate_hmac_auth_{what}"))
}

#[test]
fn a_signed_delivery_is_verified_over_its_whole_body() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let (s, action) = deliver(&env, &worker, 1, &github_signature(SECRET, BODY), BODY);
    assert_eq!(action, Action::Continue);
    assert!(env.responses().is_empty());
    assert_eq!(*env.request_body.borrow(), BODY, "forwarded unchanged");
    assert_eq!(metric(&env, "verified"), 1);
    assert_eq!(metric(&env, "matched_current"), 1);
    upstream_answers(&env, &s, "200");
}

#[test]
fn the_body_is_held_until_it_is_complete() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    request(
        &env,
        &[("x-hub-signature-256", &github_signature(SECRET, BODY))],
    );
    let s = stream(&worker, 1);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    env.set_body(Direction::Request, &BODY[..5]);
    assert_eq!(
        s.request_body(&env, 5, false),
        Action::Pause,
        "a first chunk is held"
    );
    env.set_body(Direction::Request, BODY);
    assert_eq!(s.request_body(&env, BODY.len(), true), Action::Continue);
    assert_eq!(metric(&env, "verified"), 1);
}

#[test]
fn a_tampered_body_is_401_invalid_signature() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let signature = github_signature(SECRET, BODY);
    let (_s, action) = deliver(&env, &worker, 1, &signature, br#"{"action": "deleted"}"#);
    assert_eq!(action, Action::Pause);
    let sent = reply(&env);
    assert_eq!(status_and_error(&sent), (401, "invalid_signature".into()));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    let text = String::from_utf8_lossy(&sent.body).to_string();
    assert!(!text.contains(&signature[7..]), "no signature in a reply");
    assert_eq!(metric(&env, "rejected_invalid_signature"), 1);
    assert_eq!(metric(&env, "verified"), 0);
}

#[test]
fn wrong_missing_and_malformed_signatures_are_refused() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    deliver(&env, &worker, 1, &github_signature("guess", BODY), BODY);
    assert_eq!(
        status_and_error(&reply(&env)),
        (401, "invalid_signature".into())
    );

    request(&env, &[("content-length", "20")]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, false),
        Action::Pause
    );
    assert_eq!(
        status_and_error(&reply(&env)),
        (401, "missing_signature".into())
    );

    request(&env, &[("x-hub-signature-256", "md5=abc")]);
    assert_eq!(
        stream(&worker, 3).request_headers(&env, false),
        Action::Pause
    );
    assert_eq!(
        status_and_error(&reply(&env)),
        (400, "malformed_signature".into())
    );
    assert_eq!(metric(&env, "rejected_missing_signature"), 1);
    assert_eq!(metric(&env, "rejected_malformed_signature"), 1);
}

#[test]
fn a_body_over_max_body_bytes_is_413_by_length_or_while_it_streams() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let big = vec![b'a'; 65];
    let signature = github_signature(SECRET, &big);
    request(
        &env,
        &[
            ("x-hub-signature-256", &signature),
            ("content-length", "65"),
        ],
    );
    assert_eq!(
        stream(&worker, 1).request_headers(&env, false),
        Action::Pause
    );
    assert_eq!(
        status_and_error(&reply(&env)),
        (413, "body_too_large".into())
    );

    // No Content-Length (chunked): found while buffering.
    request(&env, &[("x-hub-signature-256", &signature)]);
    let s = stream(&worker, 2);
    assert_eq!(s.request_headers(&env, false), Action::Continue);
    env.set_body(Direction::Request, &big[..40]);
    assert_eq!(s.request_body(&env, 40, false), Action::Pause);
    env.set_body(Direction::Request, &big);
    assert_eq!(s.request_body(&env, 65, false), Action::Pause);
    assert_eq!(
        status_and_error(&reply(&env)),
        (413, "body_too_large".into())
    );
    assert_eq!(
        s.request_body(&env, 65, true),
        Action::Continue,
        "nothing after the reply"
    );
    assert_eq!(env.responses().len(), 2);
    assert_eq!(metric(&env, "rejected_body_too_large"), 2);
    assert_eq!(metric(&env, "verified"), 0);
}

#[test]
fn a_delivered_message_replayed_with_a_new_delivery_id_is_409() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let signature = github_signature(SECRET, BODY);
    let (s, _) = deliver(&env, &worker, 1, &signature, BODY);
    upstream_answers(&env, &s, "200");
    s.done(&env);
    env.advance_ms(60_000);
    let (_s, action) = deliver(&env, &worker, 2, &signature, BODY);
    assert_eq!(action, Action::Pause);
    assert_eq!(status_and_error(&reply(&env)), (409, "replayed".into()));
    assert_eq!(metric(&env, "replays"), 1);
    assert_eq!(
        metric(&env, "matched_current"),
        2,
        "a replay still matched the secret"
    );
    assert_eq!(metric(&env, "verified"), 1);
}

#[test]
fn a_copy_in_flight_is_409_and_a_failed_delivery_may_be_retried() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let signature = github_signature(SECRET, BODY);
    let (first, _) = deliver(&env, &worker, 1, &signature, BODY);
    let (_s, action) = deliver(&env, &worker, 2, &signature, BODY);
    assert_eq!(action, Action::Pause, "the first copy is still in flight");
    assert_eq!(status_and_error(&reply(&env)), (409, "replayed".into()));

    upstream_answers(&env, &first, "503");
    let (retry, action) = deliver(&env, &worker, 3, &signature, BODY);
    assert_eq!(
        action,
        Action::Continue,
        "released after the upstream failed"
    );

    // A stream that ends without a response (reset) releases its id too.
    retry.done(&env);
    let (_s, action) = deliver(&env, &worker, 4, &signature, BODY);
    assert_eq!(action, Action::Continue);
    assert_eq!(metric(&env, "verified"), 3);
}
