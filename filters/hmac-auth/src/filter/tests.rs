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

/// `requests_total` with `outcome` (and, for `rejected`, any reason).
fn requests(env: &FakeEnv, outcome: &str) -> i64 {
    env.metric_with("wasmgate_hmac_auth_requests_total", &[("outcome", outcome)])
}

/// `requests_total{outcome="rejected", reason}`.
fn rejected(env: &FakeEnv, reason: &str) -> i64 {
    env.metric_with(
        "wasmgate_hmac_auth_requests_total",
        &[("outcome", "rejected"), ("reason", reason)],
    )
}

/// `key_matched_total{key_id}`.
fn matched(env: &FakeEnv, key_id: &str) -> i64 {
    env.metric_with(
        "wasmgate_hmac_auth_key_matched_total",
        &[("key_id", key_id)],
    )
}

#[test]
fn a_signed_delivery_is_verified_over_its_whole_body() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env);
    let (s, action) = deliver(&env, &worker, 1, &github_signature(SECRET, BODY), BODY);
    assert_eq!(action, Action::Continue);
    assert!(env.responses().is_empty());
    assert_eq!(*env.request_body.borrow(), BODY, "forwarded unchanged");
    assert_eq!(requests(&env, "verified"), 1);
    assert_eq!(matched(&env, "current"), 1);
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
    assert_eq!(requests(&env, "verified"), 1);
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
    assert_eq!(rejected(&env, "invalid_signature"), 1);
    assert_eq!(requests(&env, "verified"), 0);
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
    assert_eq!(rejected(&env, "missing_signature"), 1);
    assert_eq!(rejected(&env, "malformed_signature"), 1);
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
    assert_eq!(rejected(&env, "body_too_large"), 2);
    assert_eq!(requests(&env, "verified"), 0);
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
    assert_eq!(metric(&env, "duplicates_total"), 1);
    assert_eq!(metric(&env, "replays_total"), 0);
    assert_eq!(
        matched(&env, "current"),
        2,
        "a duplicate still matched the secret"
    );
    assert_eq!(requests(&env, "verified"), 1);
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
    assert_eq!(metric(&env, "replays_total"), 1);
    assert_eq!(rejected(&env, "replayed"), 1);
    assert_eq!(metric(&env, "duplicates_total"), 0);
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
    assert_eq!(requests(&env, "verified"), 3);
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
        assert_eq!(requests(&env, "verified"), 1);
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
            assert_eq!(requests(&env, "verified"), 2);
        }
        // The copy refused as seen elsewhere was released here: asked again, not 409 locally.
        let before = replies();
        let s = answer(4, other, 0, 1);
        assert_eq!(replies(), before, "forwarded");
        upstream_answers(&env, &s, "200");
    }
}

/// Public keys from a JWKS URL: fetched from the plugin's timer, shared, selected by `keyid`.
mod jwks {
    use super::*;
    use crate::httpsig::signature_base;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use ed25519_dalek::Signer;
    use wasmgate_core::Callout;

    const JWKS_CONFIG: &str = r#"{"scheme": "http_signature",
        "http_signature": {"required_components": ["@method", "@path"]},
        "jwks": {"uri": "https://idp.example.com/keys/jwks.json", "cluster": "idp",
                 "timeout": "1s", "cache_duration": "60s", "max_stale": "30s",
                 "max_bytes": 2048}}"#;

    fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    fn jwk(kid: &str, seed: u8) -> serde_json::Value {
        let x = URL_SAFE_NO_PAD.encode(key(seed).verifying_key().to_bytes());
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"})
    }

    fn document(keys: &[serde_json::Value]) -> Vec<u8> {
        serde_json::json!({ "keys": keys }).to_string().into_bytes()
    }

    fn configure_jwks(env: &FakeEnv) -> Rc<Worker<HmacAuth>> {
        let worker = Rc::new(Worker::default());
        assert!(worker.configure(env, "plugin".into(), Some(JWKS_CONFIG.as_bytes())));
        worker
    }

    /// A GET `/hook/<id>` signed over `@method` and `@path` with key `seed` as `kid`, no body
    /// (the path differs per request, so no two are replays).
    fn signed_request(env: &FakeEnv, id: u32, kid: &str, seed: u8, alg: &str) {
        let created = NOW_MS / 1000;
        let params =
            format!("(\"@method\" \"@path\");created={created};keyid=\"{kid}\";alg=\"{alg}\"");
        let headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":authority".to_string(), "hooks.example.com".to_string()),
            (":path".to_string(), format!("/hook/{id}")),
        ];
        let req = Request::from_headers(headers.clone());
        let covered = ["@method".to_string(), "@path".to_string()];
        let base = signature_base(&req, &covered, &params).unwrap();
        let sig = STANDARD.encode(key(seed).sign(base.as_bytes()).to_bytes());
        let input = format!("sig1={params}");
        let signature = format!("sig1=:{sig}:");
        let mut all: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        all.push(("signature-input", &input));
        all.push(("signature", &signature));
        env.set_map(HeaderMap::Request, &all);
    }

    /// Sends a signed request on a new stream (headers end the stream), kept in `live` (the
    /// frame holds streams weakly, as the host owns them).
    fn send(
        env: &FakeEnv,
        worker: &Rc<Worker<HmacAuth>>,
        live: &mut Vec<Bound<HmacAuth>>,
        id: u32,
        kid: &str,
        seed: u8,
    ) -> Action {
        signed_request(env, id, kid, seed, "ed25519");
        let s = stream(worker, id);
        let action = s.request_headers(env, true);
        live.push(s);
        action
    }

    /// Runs the plugin's tick (its period, 100 ms, later); the fetch tokens it sent.
    fn tick(env: &FakeEnv, worker: &Rc<Worker<HmacAuth>>) -> Vec<u32> {
        env.take_calls();
        env.advance_ms(100);
        worker.tick(env);
        env.callouts()
            .into_iter()
            .map(|(callout, token)| {
                let Callout::Http {
                    cluster, headers, ..
                } = callout
                else {
                    panic!("an HTTP fetch");
                };
                assert_eq!(cluster, "idp");
                assert!(headers.contains(&(":path".into(), "/keys/jwks.json".into())));
                assert!(headers.contains(&(":authority".into(), "idp.example.com".into())));
                token
            })
            .collect()
    }

    fn answer(env: &FakeEnv, worker: &Rc<Worker<HmacAuth>>, token: u32, status: &str, body: &[u8]) {
        *env.answer.borrow_mut() = Some(Answer::Http {
            headers: vec![(":status".into(), status.into())],
            body: body.to_vec(),
        });
        worker.deliver_http(env, token, 1, body.len());
    }

    /// Configured, with `keys` fetched.
    fn ready(env: &FakeEnv, keys: &[serde_json::Value]) -> Rc<Worker<HmacAuth>> {
        let worker = configure_jwks(env);
        let tokens = tick(env, &worker);
        assert_eq!(tokens.len(), 1, "the first tick fetches");
        answer(env, &worker, tokens[0], "200", &document(keys));
        env.take_calls();
        worker
    }

    fn fetches(env: &FakeEnv, outcome: &str) -> i64 {
        env.metric_with(
            "wasmgate_hmac_auth_jwks_fetches_total",
            &[("outcome", outcome)],
        )
    }

    fn last_error(env: &FakeEnv) -> (u32, String) {
        status_and_error(&reply(env))
    }

    #[test]
    fn a_request_before_the_first_fetch_waits_then_verifies() {
        let env = FakeEnv::at(NOW_MS);
        let worker = configure_jwks(&env);
        let mut live = Vec::new();
        assert_eq!(
            send(&env, &worker, &mut live, 1, "k1", 1),
            Action::Pause,
            "waits for keys"
        );
        assert!(env.responses().is_empty());
        let tokens = tick(&env, &worker);
        assert_eq!(tokens.len(), 1);
        answer(&env, &worker, tokens[0], "200", &document(&[jwk("k1", 1)]));
        assert_eq!(
            env.resumed(),
            [Direction::Request],
            "verified once the keys came"
        );
        assert!(env.responses().is_empty());
        assert_eq!(requests(&env, "verified"), 1);
        assert_eq!(matched(&env, "jwks:idp.example.com"), 1);
        assert_eq!(fetches(&env, "success"), 1);
        // The next request is verified at once, without another fetch.
        env.take_calls();
        assert_eq!(send(&env, &worker, &mut live, 2, "k1", 1), Action::Continue);
        assert!(tick(&env, &worker).is_empty());
        env.advance_ms(5_000);
        worker.tick(&env);
        assert_eq!(env.gauge("wasmgate_hmac_auth_jwks_age_seconds"), Some(5));
    }

    #[test]
    fn a_wait_for_keys_ends_with_its_own_key_set_only() {
        let env = FakeEnv::at(NOW_MS);
        let worker = Rc::new(Worker::default());
        let config = r#"{"scheme": "http_signature",
            "http_signature": {"required_components": ["@method", "@path"]},
            "jwks": {"uri": "https://idp.example.com/keys/jwks.json", "cluster": "idp"},
            "rules": [{"match": {"path_prefix": "/b"},
                       "jwks": {"uri": "https://b.example.com/jwks.json", "cluster": "b"}}]}"#;
        assert!(worker.configure(&env, "plugin".into(), Some(config.as_bytes())));
        let mut live = Vec::new();
        assert_eq!(send(&env, &worker, &mut live, 1, "k1", 1), Action::Pause);
        env.take_calls();
        env.advance_ms(100);
        worker.tick(&env);
        let mut fetches = env.callouts();
        assert_eq!(fetches.len(), 2, "one fetch per key set");
        // The other set's fetch completes first.
        fetches.sort_by_key(|(callout, _)| callout.cluster() != "b");
        for (callout, token) in fetches {
            let Callout::Http { cluster, .. } = callout else {
                panic!("an HTTP fetch");
            };
            if cluster == "b" {
                answer(&env, &worker, token, "200", &document(&[jwk("b1", 2)]));
                assert!(env.responses().is_empty(), "still waiting for its own set");
                assert!(env.resumed().is_empty());
            } else {
                answer(&env, &worker, token, "200", &document(&[jwk("k1", 1)]));
            }
        }
        assert_eq!(env.resumed(), [Direction::Request]);
        assert_eq!(requests(&env, "verified"), 1);
        assert_eq!(matched(&env, "jwks:idp.example.com"), 1);
    }

    #[test]
    fn a_wait_for_keys_is_bounded_by_the_timeout() {
        let env = FakeEnv::at(NOW_MS);
        let worker = configure_jwks(&env);
        let mut live = Vec::new();
        assert_eq!(send(&env, &worker, &mut live, 1, "k1", 1), Action::Pause);
        let _fetch_never_answers = tick(&env, &worker);
        // Timeout (1s) plus a second for another worker's fetch to be seen.
        env.advance_ms(1_899);
        worker.tick(&env);
        assert!(env.responses().is_empty(), "still waiting");
        env.advance_ms(1);
        worker.tick(&env);
        assert_eq!(last_error(&env), (401, "invalid_signature".into()));
    }

    #[test]
    fn an_unknown_kid_flood_causes_one_refetch_per_interval() {
        let env = FakeEnv::at(NOW_MS);
        let worker = ready(&env, &[jwk("k1", 1)]);
        let mut live = Vec::new();
        // 50 requests name kids the set lacks: one refetch is asked for; they wait for it.
        for id in 0..50 {
            assert_eq!(
                send(
                    &env,
                    &worker,
                    &mut live,
                    10 + id,
                    &format!("forged-{id}"),
                    9
                ),
                Action::Pause
            );
        }
        let tokens = tick(&env, &worker);
        assert_eq!(tokens.len(), 1, "one fetch for the whole flood");
        answer(&env, &worker, tokens[0], "200", &document(&[jwk("k1", 1)]));
        assert_eq!(
            env.responses().len(),
            50,
            "each refused once the refetch came"
        );
        assert!(env
            .responses()
            .iter()
            .all(|r| status_and_error(r) == (401, "invalid_signature".into())));
        // Within the interval: refused at once, nothing fetched.
        env.take_calls();
        env.advance_ms(29_000);
        for id in 0..50 {
            assert_eq!(
                send(&env, &worker, &mut live, 100 + id, "forged", 9),
                Action::Pause
            );
            assert_eq!(last_error(&env), (401, "invalid_signature".into()));
        }
        assert!(
            tick(&env, &worker).is_empty(),
            "no fetch an attacker can trigger"
        );
        // After the interval, one more.
        env.advance_ms(1_000);
        assert_eq!(
            send(&env, &worker, &mut live, 200, "forged", 9),
            Action::Pause
        );
        assert_eq!(tick(&env, &worker).len(), 1);
    }

    #[test]
    fn a_rotated_key_is_fetched_when_a_signature_names_it() {
        let env = FakeEnv::at(NOW_MS);
        let worker = ready(&env, &[jwk("k1", 1)]);
        let mut live = Vec::new();
        assert_eq!(
            send(&env, &worker, &mut live, 1, "k2", 2),
            Action::Pause,
            "k2 is new"
        );
        let tokens = tick(&env, &worker);
        answer(
            &env,
            &worker,
            tokens[0],
            "200",
            &document(&[jwk("k1", 1), jwk("k2", 2)]),
        );
        assert_eq!(env.resumed(), [Direction::Request]);
        assert_eq!(requests(&env, "verified"), 1);
        // k1 removed at the next refresh: its signatures are refused.
        env.advance_ms(60_000);
        let tokens = tick(&env, &worker);
        assert_eq!(tokens.len(), 1, "refresh after cache_duration");
        answer(&env, &worker, tokens[0], "200", &document(&[jwk("k2", 2)]));
        env.take_calls();
        assert_eq!(send(&env, &worker, &mut live, 2, "k2", 2), Action::Continue);
        assert_eq!(send(&env, &worker, &mut live, 3, "k1", 1), Action::Pause);
        assert!(
            env.responses().is_empty(),
            "waits for the refetch k1 asked for"
        );
        let tokens = tick(&env, &worker);
        answer(&env, &worker, tokens[0], "200", &document(&[jwk("k2", 2)]));
        assert_eq!(last_error(&env), (401, "invalid_signature".into()));
    }

    #[test]
    fn a_key_of_another_type_than_the_signature_alg_is_refused() {
        let env = FakeEnv::at(NOW_MS);
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../pubkey/keys.json")).unwrap();
        let mut ec = f["ec_jwk"].clone();
        ec["kid"] = "k1".into();
        let worker = ready(&env, &[ec, jwk("k2", 2)]);
        let mut live = Vec::new();
        // The signature says ed25519 for the EC key k1 (signed with an Ed25519 key): refused,
        // after the one refetch it may ask for.
        assert_eq!(send(&env, &worker, &mut live, 1, "k1", 1), Action::Pause);
        let tokens = tick(&env, &worker);
        answer(&env, &worker, tokens[0], "200", &document(&[jwk("k2", 2)]));
        assert_eq!(last_error(&env), (401, "invalid_signature".into()));
        assert_eq!(requests(&env, "verified"), 0);
    }

    #[test]
    fn an_oversize_or_broken_jwks_is_a_failed_fetch_and_the_last_good_keys_stay() {
        let big: Vec<serde_json::Value> = (0..40).map(|i| jwk(&format!("k{i}"), 1)).collect();
        let private = {
            let mut k = jwk("k1", 1);
            k["d"] = "AAAA".into();
            k
        };
        for body in [
            document(&big),
            b"<html>".to_vec(),
            document(&[]),
            document(&[private]),
        ] {
            let env = FakeEnv::at(NOW_MS);
            let worker = ready(&env, &[jwk("k1", 1)]);
            let mut live = Vec::new();
            env.advance_ms(60_000);
            let tokens = tick(&env, &worker);
            assert_eq!(tokens.len(), 1, "refresh after cache_duration");
            answer(&env, &worker, tokens[0], "200", &body);
            assert_eq!(fetches(&env, "failure"), 1);
            env.take_calls();
            assert_eq!(
                send(&env, &worker, &mut live, 1, "k1", 1),
                Action::Continue,
                "the last good keys still verify"
            );
        }
    }

    #[test]
    fn keys_are_dropped_after_max_stale_when_fetches_keep_failing() {
        let env = FakeEnv::at(NOW_MS);
        let worker = ready(&env, &[jwk("k1", 1)]);
        let mut live = Vec::new();
        // cache_duration 60s + max_stale 30s.
        env.advance_ms(60_000);
        for token in tick(&env, &worker) {
            answer(&env, &worker, token, "503", b"down");
        }
        assert_eq!(fetches(&env, "failure"), 1);
        env.take_calls();
        // Fetched at +100 ms; now +90.1 s.
        env.advance_ms(29_900);
        assert_eq!(
            send(&env, &worker, &mut live, 1, "k1", 1),
            Action::Continue,
            "at the bound"
        );
        env.advance_ms(1);
        assert_eq!(
            send(&env, &worker, &mut live, 2, "k1", 1),
            Action::Pause,
            "one refetch is tried"
        );
        for token in tick(&env, &worker) {
            answer(&env, &worker, token, "503", b"down");
        }
        assert_eq!(last_error(&env), (401, "invalid_signature".into()));
    }
}
