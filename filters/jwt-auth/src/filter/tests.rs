//! The filter's hooks driven through the frame with the fake host: allowed and denied tokens,
//! forged output headers, the wait for the first remote JWKS fetch and its size cap.

use super::*;
use crate::crypto::sign::sign;
use crate::filter::INTROSPECTION_POLL_MS;
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

/// The sum of metric `wasmgate_jwt_auth_<what>` over its series carrying `labels`.
fn metric(env: &FakeEnv, what: &str, labels: &[(&str, &str)]) -> i64 {
    env.metric_with(&format!("wasmgate_jwt_auth_{what}"), labels)
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
    assert_eq!(metric(&env, "requests_total", &[("outcome", "allowed")]), 1);
    assert_eq!(metric(&env, "requests_total", &[("outcome", "denied")]), 0);
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
    assert_eq!(metric(&env, "requests_total", &[("outcome", "denied")]), 1);
    assert_eq!(
        metric(
            &env,
            "requests_total",
            &[("outcome", "denied"), ("reason", "invalid_signature")]
        ),
        1
    );
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
    assert_eq!(
        metric(
            &env,
            "requests_total",
            &[("outcome", "denied"), ("reason", "missing_token")]
        ),
        1
    );
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
    assert_eq!(
        metric(
            &env,
            "jwks_fetches_total",
            &[("outcome", "success"), ("provider", "main")]
        ),
        1
    );
    assert_eq!(env.resumed(), [Direction::Request]);
    assert!(env.responses().is_empty());
    assert_eq!(request_header(&env, "x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(metric(&env, "requests_total", &[("outcome", "allowed")]), 1);

    // The next request uses the fetched keys at once.
    env.take_calls();
    request(&env, "/api", &[("authorization", &bearer(&good_token()))]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(metric(&env, "requests_total", &[("outcome", "allowed")]), 1);
}

#[test]
fn the_key_age_gauge_counts_from_the_last_fetch() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &remote_config(4096));
    let (_s, token) = waiting_for_the_first_fetch(&env, &worker);
    let body = jwks().into_bytes();
    *env.answer.borrow_mut() = Some(Answer::Http {
        headers: vec![(":status".into(), "200".into())],
        body: body.clone(),
    });
    worker.deliver_http(&env, token, 1, body.len());
    env.advance_ms(42_000);
    worker.tick(&env);
    assert_eq!(
        env.gauge_with(
            "wasmgate_jwt_auth_jwks_age_seconds",
            &[("provider", "main")]
        ),
        Some(42)
    );
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
    assert_eq!(
        metric(
            &env,
            "jwks_fetches_total",
            &[("outcome", "failure"), ("provider", "main")]
        ),
        1
    );
    assert_eq!(
        metric(
            &env,
            "jwks_fetches_total",
            &[("outcome", "success"), ("provider", "main")]
        ),
        0
    );
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

fn answer(env: &FakeEnv, worker: &Rc<Worker<JwtAuth>>, token: u32, status: &str, body: &[u8]) {
    *env.answer.borrow_mut() = Some(Answer::Http {
        headers: vec![(":status".into(), status.into())],
        body: body.to_vec(),
    });
    worker.deliver_http(env, token, 1, body.len());
}

fn only_callout(env: &FakeEnv) -> (String, String, String, u32) {
    let callouts = env.take_callouts_for_test();
    let [(
        Callout::Http {
            cluster, headers, ..
        },
        token,
    )] = &callouts[..]
    else {
        panic!("one HTTP fetch: {callouts:?}");
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    (
        cluster.clone(),
        header(":authority"),
        header(":path"),
        *token,
    )
}

trait TakeCallouts {
    fn take_callouts_for_test(&self) -> Vec<(Callout, u32)>;
}

impl TakeCallouts for FakeEnv {
    fn take_callouts_for_test(&self) -> Vec<(Callout, u32)> {
        let callouts = self.callouts();
        self.take_calls();
        callouts
    }
}

fn discovery_config() -> String {
    config(
        r#""remote_jwks": {"http_uri": {"uri": "https://issuer.example.com/.well-known/openid-configuration",
                                       "cluster": "idp", "timeout": "1s"},
                          "jwks_clusters": {"keys.example.net": "keys"}}"#,
    )
}

#[test]
fn oidc_discovery_fetches_the_document_then_the_keys_it_names() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &discovery_config());
    let s = stream(&worker, 1);
    request(&env, "/api", &[("authorization", &bearer(&good_token()))]);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    worker.tick(&env);
    let (cluster, authority, path, token) = only_callout(&env);
    assert_eq!(
        (cluster.as_str(), authority.as_str(), path.as_str()),
        (
            "idp",
            "issuer.example.com",
            "/.well-known/openid-configuration"
        )
    );
    let doc =
        format!(r#"{{"issuer": "{ISSUER}", "jwks_uri": "https://keys.example.net/tenant/keys"}}"#);
    answer(&env, &worker, token, "200", doc.as_bytes());
    let (cluster, authority, path, token) = only_callout(&env);
    assert_eq!(
        (cluster.as_str(), authority.as_str(), path.as_str()),
        ("keys", "keys.example.net", "/tenant/keys")
    );
    assert!(env.responses().is_empty(), "still waiting for the keys");
    answer(&env, &worker, token, "200", jwks().as_bytes());
    assert_eq!(
        metric(
            &env,
            "jwks_fetches_total",
            &[("outcome", "success"), ("provider", "main")]
        ),
        1
    );
    assert_eq!(env.resumed(), [Direction::Request]);
    assert_eq!(request_header(&env, "x-jwt-sub").as_deref(), Some("alice"));
}

#[test]
fn a_discovery_document_of_another_issuer_is_a_failed_fetch() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &discovery_config());
    let s = stream(&worker, 1);
    request(&env, "/api", &[("authorization", &bearer(&good_token()))]);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    worker.tick(&env);
    let (_, _, _, token) = only_callout(&env);
    let doc =
        r#"{"issuer": "https://evil.example.com", "jwks_uri": "https://issuer.example.com/k"}"#;
    answer(&env, &worker, token, "200", doc.as_bytes());
    assert!(
        env.callouts().is_empty(),
        "no key fetch from a foreign document"
    );
    assert_eq!(
        metric(
            &env,
            "jwks_fetches_total",
            &[("outcome", "failure"), ("provider", "main")]
        ),
        1
    );
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "jwks_unavailable".into())
    );
}

#[test]
fn keys_older_than_max_stale_are_dropped_when_refreshes_keep_failing() {
    let env = FakeEnv::at(NOW_S * 1000);
    let json = config(
        r#""remote_jwks": {"http_uri": {"uri": "https://issuer.example.com/keys/jwks.json",
                                       "cluster": "jwks_cluster", "timeout": "1s"},
                          "cache_duration": "60s", "max_stale": "30s",
                          "retry_back_off": {"base_interval": "1s", "max_interval": "1s"}}"#,
    );
    let worker = configure(&env, &json);
    let s = stream(&worker, 1);
    request(&env, "/api", &[("authorization", &bearer(&good_token()))]);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    worker.tick(&env);
    let (_, _, _, token) = only_callout(&env);
    answer(&env, &worker, token, "200", jwks().as_bytes());
    assert_eq!(env.resumed(), [Direction::Request]);
    // Refreshes fail from now on; within cache_duration + max_stale the keys still serve.
    let attempt = |env: &FakeEnv, now_ms: u64| {
        env.advance_ms(now_ms);
        worker.tick(env);
        let callouts = env.take_callouts_for_test();
        assert_eq!(callouts.len(), 1, "a refresh is due at every step");
        for (_, token) in callouts {
            answer(env, &worker, token, "503", b"down");
        }
        env.take_calls();
        request(env, "/api", &[("authorization", &bearer(&good_token()))]);
        let mut s = stream(&worker, 2);
        let action = s.request_headers(env, true);
        let _ = &mut s;
        action
    };
    assert_eq!(attempt(&env, 60_000), Action::Continue);
    assert_eq!(
        attempt(&env, 30_000),
        Action::Continue,
        "exactly at the bound"
    );
    assert_eq!(attempt(&env, 1_000), Action::Pause);
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "jwks_unavailable".into())
    );
}

fn introspection_config() -> String {
    format!(
        r#"{{
          "providers": {{"opaque": {{
            "issuer": "{ISSUER}",
            "audiences": ["api.example.com"],
            "introspection": {{"http_uri": {{"uri": "https://issuer.example.com/token/introspection",
                                             "cluster": "idp", "timeout": "1s"}},
                               "client_id": "gateway", "client_secret": {{"value": "gw-secret"}}}},
            "claim_to_headers": [{{"header_name": "x-jwt-sub", "claim_name": "sub"}}]
          }}}}
        }}"#
    )
}

/// Sends a request with `token`; returns the introspection callout's token and body, if any.
fn opaque_request(
    env: &FakeEnv,
    worker: &Rc<Worker<JwtAuth>>,
    id: u32,
    token: &str,
) -> (Action, Option<(u32, String)>, Bound<JwtAuth>) {
    env.take_calls();
    request(env, "/api", &[("authorization", &bearer(token))]);
    let s = stream(worker, id);
    let action = s.request_headers(env, true);
    let callouts = env.callouts();
    let call = callouts.into_iter().next().map(|(callout, t)| {
        let Callout::Http {
            cluster,
            headers,
            body,
            ..
        } = callout
        else {
            panic!("an HTTP callout")
        };
        assert_eq!(cluster, "idp");
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(header(":method").as_deref(), Some("POST"));
        assert_eq!(header(":path").as_deref(), Some("/token/introspection"));
        // base64("gateway:gw-secret")
        assert_eq!(
            header("authorization").as_deref(),
            Some("Basic Z2F0ZXdheTpndy1zZWNyZXQ=")
        );
        (t, String::from_utf8(body.unwrap_or_default()).unwrap())
    });
    (action, call, s)
}

#[test]
fn opaque_tokens_are_introspected_once_and_cached_for_every_worker() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &introspection_config());
    let (action, call, _s) = opaque_request(&env, &worker, 1, "opaque-token-1");
    assert_eq!(action, Action::Pause);
    let (token, body) = call.expect("asks the endpoint");
    assert_eq!(body, "token=opaque-token-1&token_type_hint=access_token");
    let answer_body = format!(
        r#"{{"active": true, "iss": "{ISSUER}", "aud": "api.example.com", "sub": "svc", "exp": {}}}"#,
        NOW_S + 600
    );
    answer(&env, &worker, token, "200", answer_body.as_bytes());
    assert_eq!(env.resumed(), [Direction::Request]);
    assert_eq!(request_header(&env, "x-jwt-sub").as_deref(), Some("svc"));
    assert_eq!(
        request_header(&env, "authorization"),
        None,
        "token stripped"
    );
    // Another worker (a new worker on the same shared data): no second call.
    let other = configure(&env, &introspection_config());
    let (action, call, _s) = opaque_request(&env, &other, 2, "opaque-token-1");
    assert_eq!(action, Action::Continue);
    assert!(call.is_none(), "answered from the shared cache");
    // After exp the cache entry is gone: asked again.
    env.advance_ms(601_000);
    let (_, call, _s) = opaque_request(&env, &worker, 3, "opaque-token-1");
    assert!(call.is_some());
}

#[test]
fn inactive_tokens_and_endpoint_failures_are_denied() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &introspection_config());
    // Each request forgets the calls seen before it.
    let introspections = |outcome| {
        let labels = [("outcome", outcome), ("provider", "opaque")];
        metric(&env, "introspections_total", &labels)
    };
    // Inactive: 401 token_inactive, briefly cached.
    let (_, call, _s) = opaque_request(&env, &worker, 1, "revoked");
    answer(
        &env,
        &worker,
        call.unwrap().0,
        "200",
        br#"{"active": false}"#,
    );
    assert_eq!(
        (introspections("success"), introspections("failure")),
        (1, 0)
    );
    let reply = sent(&env);
    assert_eq!(
        (reply.status, error_of(&reply)),
        (401, "token_inactive".into())
    );
    let (action, call, _s) = opaque_request(&env, &worker, 2, "revoked");
    assert!(call.is_none(), "negative cache");
    assert_eq!(action, Action::Pause);
    assert_eq!(error_of(&sent(&env)), "token_inactive");
    // A failing endpoint: denied (fail closed), never cached.
    for (id, status, body) in [
        (3, "500", &b"{}"[..]),
        (6, "200", b"<html>"),
        (7, "200", br#"{"active": "yes"}"#),
    ] {
        let (_, call, _s) = opaque_request(&env, &worker, id, "unlucky");
        answer(&env, &worker, call.unwrap().0, status, body);
        let reply = sent(&env);
        assert_eq!(
            (reply.status, error_of(&reply)),
            (401, "introspection_failed".into()),
            "{status} {body:?}"
        );
        assert_eq!(
            (introspections("success"), introspections("failure")),
            (0, 1)
        );
    }
    // Active for another issuer or audience: the same checks as a JWT.
    let (_, call, _s) = opaque_request(&env, &worker, 4, "foreign");
    answer(
        &env,
        &worker,
        call.unwrap().0,
        "200",
        br#"{"active": true, "iss": "https://evil.example.com", "aud": "api.example.com"}"#,
    );
    assert_eq!(error_of(&sent(&env)), "unknown_issuer");
    // A JWT is never sent to the introspection endpoint.
    let (_, call, _s) = opaque_request(&env, &worker, 5, &good_token());
    assert!(call.is_none());
    assert_eq!(error_of(&sent(&env)), "missing_token");
}

#[test]
fn concurrent_requests_with_one_token_share_one_introspection() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &introspection_config());
    let other = configure(&env, &introspection_config());
    let (first, call, _s1) = opaque_request(&env, &worker, 1, "shared-token");
    assert_eq!(first, Action::Pause);
    let (token, _) = call.expect("the first request asks");
    // The same token on another worker meanwhile: it waits, it does not ask.
    let (second, call, _s2) = opaque_request(&env, &other, 2, "shared-token");
    assert_eq!(second, Action::Pause);
    assert!(call.is_none(), "one question per token");
    let body = format!(
        r#"{{"active": true, "iss": "{ISSUER}", "aud": "api.example.com", "sub": "svc", "exp": {}}}"#,
        NOW_S + 600
    );
    env.take_calls();
    answer(&env, &worker, token, "200", body.as_bytes());
    assert_eq!(env.resumed(), [Direction::Request]);
    // The waiting request finds the answer at its next look.
    env.take_calls();
    env.advance_ms(INTROSPECTION_POLL_MS);
    // The fake host has one request header map: the second request's headers again.
    request(&env, "/api", &[("authorization", &bearer("shared-token"))]);
    other.tick(&env);
    assert_eq!(env.resumed(), [Direction::Request]);
    assert!(env.callouts().is_empty());
    assert_eq!(request_header(&env, "x-jwt-sub").as_deref(), Some("svc"));
}

#[test]
fn a_failed_introspection_lets_waiting_requests_ask_themselves() {
    let env = FakeEnv::at(NOW_S * 1000);
    let worker = configure(&env, &introspection_config());
    let other = configure(&env, &introspection_config());
    let (_, call, _s1) = opaque_request(&env, &worker, 1, "t");
    let (token, _) = call.unwrap();
    let (_, call, _s2) = opaque_request(&env, &other, 2, "t");
    assert!(call.is_none());
    env.take_calls();
    answer(&env, &worker, token, "503", b"");
    assert_eq!(error_of(&sent(&env)), "introspection_failed");
    env.take_calls();
    env.advance_ms(INTROSPECTION_POLL_MS);
    request(&env, "/api", &[("authorization", &bearer("t"))]);
    other.tick(&env);
    assert_eq!(env.callouts().len(), 1, "the waiting request asks now");
}
