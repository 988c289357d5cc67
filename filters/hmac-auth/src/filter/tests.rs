//! The filter's hooks driven through the frame with the fake host: a GitHub delivery verified
//! over its buffered body, bad and missing signatures, oversized bodies, and replays.

use super::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmgate_core::host::Host;
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
fn a_delivered_message_redelivered_with_a_new_delivery_id_is_acknowledged_not_forwarded() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let signature = github_signature(SECRET, BODY);
    let (s, _) = deliver(&env, &worker, 1, &signature, BODY);
    upstream_answers(&env, &s, "200");
    s.done(&env);
    env.advance_ms(60_000);
    let (_s, action) = deliver(&env, &worker, 2, &signature, BODY);
    assert_eq!(action, Action::Pause, "answered by the filter");
    let sent = reply(&env);
    assert_eq!(sent.status, 200);
    assert!(sent
        .headers
        .contains(&("x-wasmgate-duplicate".into(), "true".into())));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["duplicate"], true);
    assert_eq!(metric(&env, "duplicates"), 1);
    assert_eq!(metric(&env, "replays"), 0);
    assert_eq!(
        metric(&env, "matched_current"),
        2,
        "a duplicate still matched the secret"
    );
    assert_eq!(metric(&env, "verified"), 1);
}

#[test]
fn duplicate_status_409_refuses_a_copy_of_a_delivered_message() {
    let env = FakeEnv::at(NOW_MS);
    let worker = Rc::new(Worker::default());
    let config = r#"{"scheme": "github", "secrets": [{"id": "current", "value": "demo-github-secret"}],
        "replay": {"duplicate_status": 409}}"#;
    assert!(worker.configure(&env, "plugin".into(), Some(config.as_bytes())));
    let signature = github_signature(SECRET, BODY);
    let (s, _) = deliver(&env, &worker, 1, &signature, BODY);
    upstream_answers(&env, &s, "200");
    let (_s, action) = deliver(&env, &worker, 2, &signature, BODY);
    assert_eq!(action, Action::Pause);
    assert_eq!(status_and_error(&reply(&env)), (409, "replayed".into()));
    assert_eq!(metric(&env, "replays"), 1);
    assert_eq!(metric(&env, "duplicates"), 0);
}

#[test]
fn a_forged_key_id_header_is_removed_and_the_matched_id_set_after_verification() {
    let env = FakeEnv::at(NOW_MS);
    let worker = Rc::new(Worker::default());
    let config = r#"{"scheme": "github", "secrets": [{"id": "current", "value": "demo-github-secret"}],
        "key_id_header": "X-Webhook-Key-Id", "hold_headers": true, "hide_credentials": true,
        "rules": [{"match": {"path_prefix": "/open"}, "enabled": false}]}"#;
    assert!(worker.configure(&env, "plugin".into(), Some(config.as_bytes())));
    let signature = github_signature(SECRET, BODY);
    let length = BODY.len().to_string();
    request(
        &env,
        &[
            ("x-hub-signature-256", &signature),
            ("x-webhook-key-id", "forged"),
            ("content-length", &length),
        ],
    );
    let s = stream(&worker, 1);
    assert_eq!(
        s.request_headers(&env, false),
        Action::Pause,
        "the headers wait for the verified body"
    );
    assert_eq!(env.header(HeaderMap::Request, "x-webhook-key-id"), None);
    assert_eq!(
        env.header(HeaderMap::Request, "x-hub-signature-256"),
        None,
        "hidden from the upstream"
    );
    env.set_body(Direction::Request, BODY);
    assert_eq!(s.request_body(&env, BODY.len(), true), Action::Continue);
    assert_eq!(
        env.header(HeaderMap::Request, "x-webhook-key-id")
            .as_deref(),
        Some("current")
    );
    // A route where verification is off: the forged value is removed too.
    env.set_map(
        HeaderMap::Request,
        &[
            (":method", "POST"),
            (":authority", "hooks.example.com"),
            (":path", "/open"),
            ("x-webhook-key-id", "forged"),
        ],
    );
    let open = stream(&worker, 2);
    assert_eq!(open.request_headers(&env, true), Action::Continue);
    assert_eq!(env.header(HeaderMap::Request, "x-webhook-key-id"), None);
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

/// `replay.global`: the first copy is asked about, forwarded when the service has not seen it,
/// refused (409, released here) when it has, and the service's silence follows `failure_mode`.
#[test]
fn global_replay_asks_the_rate_limit_service() {
    use prost::Message;
    use wasmgate_core::rls::{RateLimitRequest, RateLimitResponse};
    use wasmgate_core::{Answer, Callout};
    for failure_mode in ["deny", "allow"] {
        let env = FakeEnv::at(NOW_MS);
        let worker = Rc::new(Worker::default());
        let config = format!(
            r#"{{"scheme": "github", "secrets": [{{"id": "current", "value": "demo-github-secret"}}],
                "replay": {{"global": {{"cluster": "rls", "domain": "hooks", "failure_mode": "{failure_mode}"}}}}}}"#
        );
        assert!(worker.configure(&env, "plugin".into(), Some(config.as_bytes())));
        let answer = |id: u32, body: &[u8], status: u32, code: i32| {
            let (s, action) = deliver(&env, &worker, id, &github_signature(SECRET, body), body);
            assert_eq!(action, Action::Pause, "waiting for the service");
            let (callout, token) = env.callouts().pop().unwrap();
            let Callout::Grpc {
                cluster, message, ..
            } = callout
            else {
                panic!("a gRPC call");
            };
            assert_eq!(cluster, "rls");
            let request = RateLimitRequest::decode(message.as_slice()).unwrap();
            assert_eq!(request.domain, "hooks");
            assert_eq!(request.descriptors[0].entries[0].key, "hmac_replay_id");
            let reply = RateLimitResponse {
                overall_code: code,
                ..Default::default()
            }
            .encode_to_vec();
            *env.answer.borrow_mut() = Some(Answer::Grpc {
                status,
                message: reply.clone(),
            });
            worker.deliver_grpc(&env, token, status, reply.len());
            s
        };
        // Not seen anywhere: forwarded.
        let s = answer(1, BODY, 0, 1);
        assert!(env.responses().is_empty());
        let replies = || env.responses().len();
        assert_eq!(metric(&env, "verified"), 1);
        upstream_answers(&env, &s, "200");
        // Seen at another Envoy: 409, and the id is released here.
        let other = br#"{"action": "closed"}"#;
        answer(2, other, 0, 2);
        assert_eq!(status_and_error(&reply(&env)), (409, "replayed".into()));
        // The service fails: failure_mode decides.
        let third = br#"{"action": "reopened"}"#;
        answer(3, third, 14, 0);
        if failure_mode == "deny" {
            assert_eq!(
                status_and_error(&reply(&env)),
                (503, "replay_unavailable".into())
            );
        } else {
            assert_eq!(metric(&env, "verified"), 2);
        }
        // The copy refused as seen elsewhere was released here: asked again, not 409 locally.
        let before = replies();
        let s = answer(4, other, 0, 1);
        assert_eq!(replies(), before, "forwarded");
        upstream_answers(&env, &s, "200");
    }
}
