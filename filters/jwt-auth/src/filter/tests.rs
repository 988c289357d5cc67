//! The filter's hooks driven through the frame with the fake host: allowed and denied tokens,
//! forged output headers, the wait for the first remote JWKS fetch and its size cap.

use super::*;
use crate::crypto::sign::sign;
use wasmgate_core::host::HeaderMap;
use wasmgate_core::Callout;
use wasmgate_host::fake::{FakeEnv, Sent};
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;
use wasmgate_host::Direction;

const NOW_S: u64 = 1_700_000_000;
const ISSUER: &str = "https://issuer.example.com";
const K1: &str = r#"{"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#;
/// Same `kid` as K1, another secret: what an attacker who guessed the `kid` signs with.
const FORGED: &str =
    r#"{"kty":"oct","kid":"k1","k":"YXR0YWNrLWF0dGFjay1hdHRhY2stYXR0YWNrLWF0dGFjaw"}"#;

fn jwks() -> String {
    format!(r#"{{"keys":[{K1}]}}"#)
}

/// A provider block (JSON object text) with the given key source.
fn config(keys: &str) -> String {
    format!(
        r#"{{
          "providers": {{"main": {{
            "issuer": "{ISSUER}",
            "audiences": ["api.example.com"],
            {keys},
            "forward_payload_header": "x-jwt-payload",
            "claim_to_headers": [{{"header_name": "x-jwt-sub", "claim_name": "sub"}}]
          }}}},
          "rules": [{{"match": {{"path_prefix": "/maybe"}},
                     "requires": {{"allow_missing": {{}}}}}},
                    {{"match": {{"path_prefix": "/public"}}, "enabled": false}}]
        }}"#
    )
}

fn local_config() -> String {
    let inline = serde_json::to_string(&jwks()).unwrap();
    config(&format!(r#""local_jwks": {{"inline_string": {inline}}}"#))
}

fn remote_config(max_bytes: usize) -> String {
    config(&format!(
        r#""remote_jwks": {{"http_uri": {{"uri": "https://issuer.example.com/keys/jwks.json",
                                         "cluster": "jwks_cluster", "timeout": "1s"}},
                          "max_jwks_bytes": {max_bytes}}}"#
    ))
}

fn configure(env: &FakeEnv, json: &str) -> Rc<Worker<JwtAuth>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(json.as_bytes())));
    worker
}

fn stream(worker: &Rc<Worker<JwtAuth>>, id: u32) -> Bound<JwtAuth> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

fn request(env: &FakeEnv, path: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![
        (":method", "GET"),
        (":authority", "api.example.com"),
        (":path", path),
    ];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Request, &headers);
}

fn signed_with(key: &str, claims: &str) -> String {
    sign(key, r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, claims).unwrap()
}

fn good_token() -> String {
    signed_with(
        K1,
        &format!(
            r#"{{"iss":"{ISSUER}","aud":"api.example.com","sub":"alice","exp":{}}}"#,
            NOW_S + 3600
        ),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn request_header(env: &FakeEnv, name: &str) -> Option<String> {
    env.header(HeaderMap::Request, name)
}

fn sent(env: &FakeEnv) -> Sent {
    env.last_response().expect("a reply to the client")
}

fn error_of(sent: &Sent) -> String {
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

fn metric(env: &FakeEnv, what: &str) -> i64 {
    env.metric(&format!("wasmgate_jwt_auth_{what}"))
}

#[test]
fn a_valid_token_goes_upstream_with_its_headers_and_without_the_token() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &local_config());
    let token = good_token();
    request(&env, "/api", &[("authorization", &bearer(&token))]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert!(env.responses().is_empty());
    assert_eq!(request_header(&env, "x-jwt-sub").as_deref(), Some("alice"));
    let payload = token.split('.').nth(1).map(str::to_string);
    assert_eq!(request_header(&env, "x-jwt-payload"), payload);
    assert_eq!(
        request_header(&env, "authorization"),
        None,
        "forward is false"
    );
    assert_eq!(metric(&env, "allowed"), 1);
    assert_eq!(metric(&env, "denied"), 0);
}

#[test]
fn forged_output_headers_are_replaced_by_the_tokens_claims() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &local_config());
    let token = good_token();
    request(
        &env,
        "/api",
        &[
            ("x-jwt-sub", "admin"),
            ("x-jwt-sub", "root"),
            ("authorization", &bearer(&token)),
            ("x-jwt-payload", "e30"),
        ],
    );
    stream(&worker, 1).request_headers(&env, true);
    let request = env.headers(HeaderMap::Request);
    let values = |name: &str| -> Vec<&str> {
        request
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-jwt-sub"), ["alice"]);
    assert_eq!(values("x-jwt-payload").len(), 1);
    assert_ne!(values("x-jwt-payload"), ["e30"]);
}

#[test]
fn forged_output_headers_are_removed_when_no_token_is_needed() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &local_config());
    request(
        &env,
        "/maybe/profile",
        &[("x-jwt-sub", "admin"), ("x-jwt-payload", "e30")],
    );
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert!(env.responses().is_empty(), "allow_missing lets it pass");
    assert_eq!(request_header(&env, "x-jwt-sub"), None);
    assert_eq!(request_header(&env, "x-jwt-payload"), None);
}

#[test]
fn forged_output_headers_are_removed_where_the_filter_is_off() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &local_config());
    request(&env, "/public/page", &[("x-jwt-sub", "admin")]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert!(
        env.responses().is_empty(),
        "the rule switches the filter off"
    );
    assert_eq!(request_header(&env, "x-jwt-sub"), None);
}

#[test]
fn a_token_signed_with_another_secret_is_401_invalid_signature() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &local_config());
    let forged = signed_with(
        FORGED,
        &format!(r#"{{"iss":"{ISSUER}","aud":"api.example.com","sub":"admin"}}"#),
    );
    request(&env, "/api", &[("authorization", &bearer(&forged))]);
    let s = stream(&worker, 1);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "invalid_signature".into())
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="api.example.com", error="invalid_token""#)
    );
    assert!(
        !String::from_utf8_lossy(&reply.body).contains(&forged),
        "no token in a reply"
    );
    assert_eq!(metric(&env, "denied"), 1);
    assert_eq!(metric(&env, "denied_invalid_signature"), 1);
    assert_eq!(s.response_headers(&env, false), Action::Continue);
    assert_eq!(env.responses().len(), 1);
}

#[test]
fn a_missing_token_is_401_with_a_bare_challenge_and_a_safe_realm() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &local_config());
    env.set_map(
        HeaderMap::Request,
        &[
            (":method", "GET"),
            (":authority", "evil\", error=\"x"),
            (":path", "/api"),
        ],
    );
    stream(&worker, 1).request_headers(&env, true);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "missing_token".into())
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="evil,error=x""#),
        "the host cannot close the quoted realm or add a parameter"
    );
    assert_eq!(metric(&env, "denied_missing_token"), 1);
}

#[test]
fn before_any_configuration_requests_are_refused_with_503() {
    let reply = JwtAuth::unconfigured().expect("jwt-auth fails closed");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error, "not_configured");
}

/// A request that arrived before the first fetch: it waits, and the plugin's first tick sends
/// the fetch. Returns the stream and the fetch's token.
fn waiting_for_the_first_fetch(
    env: &FakeEnv,
    worker: &Rc<Worker<JwtAuth>>,
) -> (Bound<JwtAuth>, u32) {
    assert_eq!(env.timer.get(), Duration::from_millis(100), "a plugin tick");
    let s = stream(worker, 1);
    request(env, "/api", &[("authorization", &bearer(&good_token()))]);
    assert_eq!(
        s.request_headers(env, true),
        Action::Pause,
        "waits for the keys"
    );
    assert!(env.responses().is_empty());
    assert!(
        env.callouts().is_empty(),
        "the fetch starts from the plugin tick"
    );
    worker.tick(env);
    let callouts = env.callouts();
    let [(
        Callout::Http {
            cluster, headers, ..
        },
        token,
    )] = &callouts[..]
    else {
        panic!("one HTTP fetch: {callouts:?}");
    };
    assert_eq!(cluster, "jwks_cluster");
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("GET"));
    assert_eq!(header(":authority"), Some("issuer.example.com"));
    assert_eq!(header(":path"), Some("/keys/jwks.json"));
    assert!(
        env.resumed().is_empty() && env.responses().is_empty(),
        "still waiting"
    );
    (s, *token)
}

#[test]
fn a_request_waits_for_the_first_jwks_fetch_then_is_allowed() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &remote_config(4096));
    let (_s, token) = waiting_for_the_first_fetch(&env, &worker);
    let body = jwks().into_bytes();
    *env.answer.borrow_mut() = Some(Answer::Http {
        headers: vec![(":status".into(), "200".into())],
        body: body.clone(),
    });
    worker.deliver_http(&env, token, 1, body.len());
    assert_eq!(metric(&env, "jwks_fetch_success"), 1);
    assert_eq!(env.resumed(), [Direction::Request]);
    assert!(env.responses().is_empty());
    assert_eq!(request_header(&env, "x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(metric(&env, "allowed"), 1);

    // The next request uses the fetched keys at once.
    env.take_calls();
    request(&env, "/api", &[("authorization", &bearer(&good_token()))]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(metric(&env, "allowed"), 1);
}

#[test]
fn a_jwks_answer_over_max_jwks_bytes_is_refused_unread() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &remote_config(64));
    let (_s, token) = waiting_for_the_first_fetch(&env, &worker);
    let body = jwks().into_bytes();
    assert!(body.len() > 64);
    *env.answer.borrow_mut() = Some(Answer::Http {
        headers: vec![(":status".into(), "200".into())],
        body: body.clone(),
    });
    worker.deliver_http(&env, token, 1, body.len());
    assert!(
        env.answer.borrow().is_some(),
        "the body was never read into the VM"
    );
    assert_eq!(metric(&env, "jwks_fetch_failure"), 1);
    assert_eq!(metric(&env, "jwks_fetch_success"), 0);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "jwks_unavailable".into())
    );
}

#[test]
fn a_waiting_request_is_refused_once_the_fetch_timeout_passed() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &remote_config(4096));
    let (_s, _token) = waiting_for_the_first_fetch(&env, &worker);
    env.advance_ms(999);
    worker.tick(&env);
    assert!(env.responses().is_empty(), "within the timeout");
    env.advance_ms(1);
    worker.tick(&env);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "jwks_unavailable".into())
    );
    assert_eq!(
        env.callouts().len(),
        1,
        "no second fetch while one is in flight"
    );
}
