//! The filter's hooks driven through the frame with the fake host: a request waiting for the
//! first token, tokens shared and refreshed, the endpoint down, a purge on 401, static headers,
//! `overwrite`, and no secret in any reply, header or log-facing reason.

use super::*;
use wasmgate_core::Callout;
use wasmgate_host::fake::FakeEnv;
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;
use wasmgate_host::Direction;

const NOW_MS: u64 = 1_800_000_000_000;
const SECRET: &str = "client-secret-for-tests";
/// The label of the `payments` credential's metrics.
const PAYMENTS: (&str, &str) = ("credential", "payments");

fn config(extra: &str) -> String {
    format!(
        r#"{{"credentials": {{
              "payments": {{"oauth2": {{"token_endpoint": {{"cluster": "idp", "uri": "https://idp.example/oauth/token", "timeout": "2s"}},
                                       "client_id": "svc-orders", "client_secret": {{"value": "{SECRET}"}},
                                       "scopes": ["payments:write"]}}}},
              "crm": {{"header": {{"name": "x-api-key", "value": {{"value": "crm-key-value"}}}}}}
            }},
            "use": "payments",
            "rules": [{{"match": {{"hosts": ["api.crm.example"]}}, "use": "crm"}},
                      {{"match": {{"path_prefix": "/public"}}, "enabled": false}}]{extra}}}"#
    )
}

fn configure(env: &FakeEnv, json: &str) -> Rc<Worker<CredentialInject>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(json.as_bytes())));
    worker
}

fn stream(worker: &Rc<Worker<CredentialInject>>, id: u32) -> Bound<CredentialInject> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

fn request(env: &FakeEnv, host: &str, extra: &[(&str, &str)]) {
    let mut headers = vec![
        (":method", "POST"),
        (":authority", host),
        (":path", "/v1/charges"),
    ];
    headers.extend_from_slice(extra);
    env.set_map(HeaderMap::Request, &headers);
}

fn authorization(env: &FakeEnv) -> Option<String> {
    env.header(HeaderMap::Request, "authorization")
}

/// The sum of metric `wasmgate_credential_inject_<what>` over its series carrying `labels`.
fn metric(env: &FakeEnv, what: &str, labels: &[(&str, &str)]) -> i64 {
    env.metric_with(&format!("wasmgate_credential_inject_{what}"), labels)
}

/// The tick's one token request and its callout token.
fn token_request(env: &FakeEnv, worker: &Rc<Worker<CredentialInject>>) -> u32 {
    env.take_calls();
    worker.tick(env);
    let callouts = env.callouts();
    let [(
        Callout::Http {
            cluster,
            headers,
            body,
            ..
        },
        token,
    )] = &callouts[..]
    else {
        panic!("one token request: {callouts:?}");
    };
    assert_eq!(cluster, "idp");
    assert!(headers.contains(&(":path".into(), "/oauth/token".into())));
    let body = String::from_utf8(body.clone().unwrap_or_default()).unwrap();
    assert_eq!(body, "grant_type=client_credentials&scope=payments%3Awrite");
    *token
}

fn answer(
    env: &FakeEnv,
    worker: &Rc<Worker<CredentialInject>>,
    token: u32,
    status: &str,
    body: &str,
) {
    *env.answer.borrow_mut() = Some(Answer::Http {
        headers: vec![(":status".into(), status.into())],
        body: body.as_bytes().to_vec(),
    });
    worker.deliver_http(env, token, 1, body.len());
}

fn respond(env: &FakeEnv, s: &Bound<CredentialInject>, status: &str) {
    env.set_map(HeaderMap::Response, &[(":status", status)]);
    assert_eq!(s.response_headers(env, false), Action::Continue);
}

/// A worker with token `value` fetched (valid `lifetime` seconds).
fn with_token(env: &FakeEnv, value: &str, lifetime: u64) -> Rc<Worker<CredentialInject>> {
    let worker = configure(env, &config(""));
    let token = token_request(env, &worker);
    answer(
        env,
        &worker,
        token,
        "200",
        &format!(
            r#"{{"access_token": "{value}", "token_type": "Bearer", "expires_in": {lifetime}}}"#
        ),
    );
    worker
}

#[test]
fn the_first_request_waits_for_the_first_token() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env, &config(""));
    let s = stream(&worker, 1);
    request(&env, "api.payments.example", &[]);
    assert_eq!(s.request_headers(&env, true), Action::Pause, "waits");
    let token = token_request(&env, &worker);
    answer(
        &env,
        &worker,
        token,
        "200",
        r#"{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}"#,
    );
    assert_eq!(env.resumed(), [Direction::Request]);
    assert_eq!(authorization(&env).as_deref(), Some("Bearer tok-1"));
    assert_eq!(
        metric(
            &env,
            "token_fetches_total",
            &[("outcome", "success"), PAYMENTS]
        ),
        1
    );
    assert_eq!(metric(&env, "injected_total", &[PAYMENTS]), 1);
    // The next request gets it at once, with no new fetch.
    env.take_calls();
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(authorization(&env).as_deref(), Some("Bearer tok-1"));
    worker.tick(&env);
    assert!(
        env.callouts().is_empty(),
        "no fetch while the token is fresh"
    );
    env.advance_ms(30_000);
    worker.tick(&env);
    let age = env.gauge_with("wasmgate_credential_inject_token_age_seconds", &[PAYMENTS]);
    assert_eq!(age, Some(30));
}

#[test]
fn another_worker_uses_the_shared_token_without_fetching() {
    let env = FakeEnv::at(NOW_MS);
    let _first = with_token(&env, "tok-shared", 3600);
    let second = configure(&env, &config(""));
    env.take_calls();
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        stream(&second, 1).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(authorization(&env).as_deref(), Some("Bearer tok-shared"));
    second.tick(&env);
    assert!(env.callouts().is_empty());
}

#[test]
fn refreshed_ahead_of_expiry_and_kept_while_the_endpoint_is_down() {
    let env = FakeEnv::at(NOW_MS);
    let worker = with_token(&env, "tok-1", 120);
    env.advance_ms(60_000);
    let refresh = token_request(&env, &worker);
    answer(&env, &worker, refresh, "503", "down");
    assert_eq!(
        metric(
            &env,
            "token_fetches_total",
            &[("outcome", "failure"), PAYMENTS]
        ),
        1
    );
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(
        authorization(&env).as_deref(),
        Some("Bearer tok-1"),
        "the current token stays"
    );
    // Expired, the endpoint still down: 503 at once, no wait.
    env.advance_ms(60_000);
    env.take_calls();
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, true),
        Action::Pause
    );
    let reply = env.last_response().unwrap();
    assert_eq!(reply.status, 503);
    assert!(String::from_utf8_lossy(&reply.body).contains("credential_unavailable"));
    assert_eq!(
        metric(
            &env,
            "unavailable_total",
            &[("outcome", "refused"), PAYMENTS]
        ),
        1
    );
}

#[test]
fn on_unavailable_pass_forwards_without_a_credential() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env, &config(r#", "on_unavailable": "pass""#));
    let s = stream(&worker, 1);
    request(&env, "api.payments.example", &[]);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    let token = token_request(&env, &worker);
    answer(
        &env,
        &worker,
        token,
        "401",
        r#"{"error": "invalid_client"}"#,
    );
    assert_eq!(env.resumed(), [Direction::Request]);
    assert_eq!(authorization(&env), None);
    assert_eq!(
        metric(
            &env,
            "unavailable_total",
            &[("outcome", "passed"), PAYMENTS]
        ),
        1
    );
}

#[test]
fn a_401_drops_the_token_and_a_new_one_is_fetched() {
    let env = FakeEnv::at(NOW_MS);
    let worker = with_token(&env, "tok-1", 3600);
    request(&env, "api.payments.example", &[]);
    let s = stream(&worker, 1);
    assert_eq!(s.request_headers(&env, true), Action::Continue);
    respond(&env, &s, "401");
    assert_eq!(metric(&env, "token_purged_total", &[PAYMENTS]), 1);
    let s2 = stream(&worker, 2);
    env.advance_ms(5_000);
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        s2.request_headers(&env, true),
        Action::Pause,
        "waits for the new token"
    );
    let token = token_request(&env, &worker);
    answer(
        &env,
        &worker,
        token,
        "200",
        r#"{"access_token": "tok-2", "expires_in": 3600}"#,
    );
    assert_eq!(authorization(&env).as_deref(), Some("Bearer tok-2"));
    // A late 401 for the old token does not drop the new one.
    env.take_calls();
    respond(&env, &s, "401");
    assert_eq!(metric(&env, "token_purged_total", &[PAYMENTS]), 0);
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        stream(&worker, 3).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(authorization(&env).as_deref(), Some("Bearer tok-2"));
}

#[test]
fn static_headers_per_host_and_overwrite() {
    let env = FakeEnv::at(NOW_MS);
    let worker = configure(&env, &config(""));
    request(&env, "api.crm.example", &[("x-api-key", "client-own")]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(
        env.header(HeaderMap::Request, "x-api-key").as_deref(),
        Some("client-own"),
        "kept"
    );
    assert_eq!(metric(&env, "kept_client_credential_total", &[]), 1);
    request(&env, "api.crm.example", &[]);
    assert_eq!(
        stream(&worker, 2).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(
        env.header(HeaderMap::Request, "x-api-key").as_deref(),
        Some("crm-key-value")
    );
    assert_eq!(metric(&env, "injected_total", &[("credential", "crm")]), 1);
    assert_eq!(metric(&env, "injected_total", &[PAYMENTS]), 0);
    let names = env.metric_names();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("credential=.=crm;.;") && n.contains("token")),
        "a static header has no token metrics: {names:?}"
    );
    let worker = configure(&env, &config(r#", "overwrite": true"#));
    request(&env, "api.crm.example", &[("x-api-key", "client-own")]);
    assert_eq!(
        stream(&worker, 3).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(
        env.header(HeaderMap::Request, "x-api-key").as_deref(),
        Some("crm-key-value")
    );
}

#[test]
fn switched_off_routes_get_nothing() {
    let env = FakeEnv::at(NOW_MS);
    let worker = with_token(&env, "tok-1", 3600);
    env.set_map(
        HeaderMap::Request,
        &[
            (":method", "GET"),
            (":authority", "api.payments.example"),
            (":path", "/public/x"),
        ],
    );
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Continue
    );
    assert_eq!(authorization(&env), None);
}

#[test]
fn no_secret_or_token_in_replies() {
    let env = FakeEnv::at(NOW_MS);
    let worker = with_token(&env, "tok-secret-value", 1);
    env.advance_ms(2_000);
    let refresh = token_request(&env, &worker);
    answer(&env, &worker, refresh, "500", "oops");
    request(&env, "api.payments.example", &[]);
    assert_eq!(
        stream(&worker, 1).request_headers(&env, true),
        Action::Pause
    );
    let reply = env.last_response().unwrap();
    let text = format!(
        "{:?} {}",
        reply.headers,
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        !text.contains("tok-secret-value") && !text.contains(SECRET),
        "{text}"
    );
}
