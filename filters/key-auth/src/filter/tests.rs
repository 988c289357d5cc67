//! The filter's hooks driven through the frame with the fake host: every decision, the replies'
//! challenges, forged identity headers, hidden credentials and the metrics.

use super::*;
use crate::keys;
use wasmgate_core::host::{HeaderMap, Host};
use wasmgate_host::fake::{FakeEnv, Sent};
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::proxy_wasm::types::Action;

/// The metrics the tests read: `requests_total{outcome, reason}`, and
/// `client_requests_total{outcome, client}`.
const REQUESTS: &str = "wasmgate_key_auth_requests_total";
const CLIENT_REQUESTS: &str = "wasmgate_key_auth_client_requests_total";

const NOW_MS: u64 = 1_800_000_000_000;
const TEAM_A: &str = "team-a-key-0123456789";
const PARTNER: &str = "partner-x-key-012345";
const RETIRED: &str = "team-a-old-key-012345";

fn config() -> String {
    format!(
        r#"{{"clients": [
            {{"id": "team-a", "keys": [{{"sha256": "{}"}},
                                       {{"secret": {{"value": "{RETIRED}"}}, "not_after": "2027-01-01T00:00:00Z"}}],
             "scopes": ["orders:read", "orders:write"]}},
            {{"id": "partner-x", "keys": [{{"secret": {{"value": "{PARTNER}"}}}}], "scopes": ["orders:read"]}}
          ],
          "key_sources": [{{"header": "x-api-key"}}, {{"header": "authorization", "value_prefix": "Bearer "}},
                          {{"query": "api_key"}}, {{"cookie": "api_key"}}],
          "rules": [
            {{"match": {{"path_prefix": "/health"}}, "enabled": false}},
            {{"match": {{"path_prefix": "/orders", "methods": ["POST"]}}, "required_scopes": ["orders:write"]}},
            {{"match": {{"path_prefix": "/admin"}}, "allowed_clients": ["team-a"]}},
            {{"match": {{"path_prefix": "/public"}}, "allow_missing": true}}
          ]}}"#,
        hex::encode(keys::digest(TEAM_A))
    )
}

fn worker(env: &FakeEnv) -> Rc<Worker<KeyAuth>> {
    let worker = Rc::new(Worker::default());
    assert!(worker.configure(env, "plugin".into(), Some(config().as_bytes())));
    worker
}

/// Sends a request's headers on a new stream: the action and the reply, if one was sent.
fn send(method: &str, path: &str, headers: &[(&str, &str)]) -> (FakeEnv, Action, Option<Sent>) {
    let env = FakeEnv::at(NOW_MS);
    let worker = worker(&env);
    let mut all = vec![
        (":method", method),
        (":authority", "api.example.com"),
        (":path", path),
    ];
    all.extend_from_slice(headers);
    env.set_map(HeaderMap::Request, &all);
    let stream = Bound {
        stream: worker.new_stream(1).unwrap(),
        worker: Rc::clone(&worker),
    };
    let action = stream.request_headers(&env, true);
    let reply = env.last_response();
    (env, action, reply)
}

fn error_of(reply: &Sent) -> String {
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    body["error"].as_str().unwrap().to_string()
}

fn refused(method: &str, path: &str, headers: &[(&str, &str)]) -> (u32, String, Option<String>) {
    let (_, action, reply) = send(method, path, headers);
    assert_eq!(action, Action::Pause, "{path} {headers:?}");
    let reply = reply.unwrap();
    let challenge = reply.header("www-authenticate").map(str::to_string);
    (reply.status, error_of(&reply), challenge)
}

fn allowed(method: &str, path: &str, headers: &[(&str, &str)]) -> FakeEnv {
    let (env, action, reply) = send(method, path, headers);
    assert_eq!(action, Action::Continue, "{path} {headers:?}: {reply:?}");
    env
}

fn upstream_header(env: &FakeEnv, name: &str) -> Option<String> {
    env.header(HeaderMap::Request, name)
}

#[test]
fn a_valid_key_from_each_source_forwards_the_identity() {
    let bearer = format!("Bearer {TEAM_A}");
    let cookie = format!("api_key={TEAM_A}");
    let query = format!("/orders?api_key={TEAM_A}");
    for (path, headers) in [
        ("/orders", vec![("x-api-key", TEAM_A)]),
        ("/orders", vec![("authorization", bearer.as_str())]),
        (query.as_str(), vec![]),
        ("/orders", vec![("cookie", cookie.as_str())]),
    ] {
        let env = allowed("GET", path, &headers);
        assert_eq!(
            upstream_header(&env, "x-client-id").as_deref(),
            Some("team-a")
        );
        assert_eq!(
            upstream_header(&env, "x-client-scopes").as_deref(),
            Some("orders:read orders:write")
        );
        assert_eq!(env.metric_with(REQUESTS, &[("outcome", "allowed")]), 1);
        assert_eq!(env.metric(REQUESTS), 1);
        assert_eq!(
            env.metric_with(
                CLIENT_REQUESTS,
                &[("client", "team-a"), ("outcome", "allowed")]
            ),
            1
        );
    }
}

#[test]
fn credentials_are_hidden_from_the_upstream() {
    let env = allowed("GET", "/orders?page=2", &[("x-api-key", TEAM_A)]);
    assert_eq!(upstream_header(&env, "x-api-key"), None);
    let query = format!("/orders?page=2&api_key={TEAM_A}");
    let env = allowed("GET", &query, &[]);
    assert_eq!(
        upstream_header(&env, ":path").as_deref(),
        Some("/orders?page=2")
    );
    let cookie = format!("theme=dark; api_key={TEAM_A}");
    let env = allowed("GET", "/orders", &[("cookie", &cookie)]);
    assert_eq!(
        upstream_header(&env, "cookie").as_deref(),
        Some("theme=dark")
    );
}

#[test]
fn missing_invalid_and_retired_keys() {
    let (status, error, challenge) = refused("GET", "/orders", &[]);
    assert_eq!((status, error.as_str()), (401, "missing_api_key"));
    assert_eq!(
        challenge.as_deref(),
        Some(
            r#"ApiKey header="x-api-key", Bearer, ApiKey query="api_key", ApiKey cookie="api_key""#
        )
    );
    let (status, error, challenge) =
        refused("GET", "/orders", &[("x-api-key", "guess-0123456789abc")]);
    assert_eq!((status, error.as_str()), (401, "invalid_api_key"));
    assert_eq!(challenge.as_deref(), Some(r#"ApiKey header="x-api-key""#));
    let bearer = format!("Bearer {RETIRED}");
    let (status, error, challenge) = refused("GET", "/orders", &[("authorization", &bearer)]);
    assert_eq!((status, error.as_str()), (401, "invalid_api_key"));
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
}

#[test]
fn an_invalid_key_is_never_treated_as_missing() {
    let env = allowed("GET", "/public/page", &[]);
    assert_eq!(upstream_header(&env, "x-client-id"), None);
    assert_eq!(
        env.metric_with(REQUESTS, &[("outcome", "allowed_anonymous")]),
        1
    );
    let (status, error, _) = refused(
        "GET",
        "/public/page",
        &[("x-api-key", "wrong-0123456789abcd")],
    );
    assert_eq!((status, error.as_str()), (401, "invalid_api_key"));
    let (status, error, _) = refused("GET", "/public/page", &[("x-api-key", "")]);
    assert_eq!((status, error.as_str()), (401, "invalid_api_key"));
    // A valid key on an optional route still identifies the client.
    let env = allowed("GET", "/public/page", &[("x-api-key", PARTNER)]);
    assert_eq!(
        upstream_header(&env, "x-client-id").as_deref(),
        Some("partner-x")
    );
}

#[test]
fn two_keys_are_ambiguous() {
    let query = format!("/orders?api_key={PARTNER}");
    let (status, error, _) = refused("GET", &query, &[("x-api-key", TEAM_A)]);
    assert_eq!((status, error.as_str()), (400, "ambiguous_credentials"));
    let (status, error, _) = refused(
        "GET",
        "/orders",
        &[("x-api-key", TEAM_A), ("x-api-key", PARTNER)],
    );
    assert_eq!((status, error.as_str()), (400, "ambiguous_credentials"));
}

#[test]
fn scopes_and_allowed_clients() {
    allowed("POST", "/orders", &[("x-api-key", TEAM_A)]);
    let bearer = format!("Bearer {PARTNER}");
    let (status, error, challenge) = refused("POST", "/orders", &[("authorization", &bearer)]);
    assert_eq!((status, error.as_str()), (403, "insufficient_scope"));
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer error="insufficient_scope""#)
    );
    allowed("GET", "/orders", &[("x-api-key", PARTNER)]);
    allowed("GET", "/admin/users", &[("x-api-key", TEAM_A)]);
    let (env, _, reply) = send("GET", "/admin/users", &[("x-api-key", PARTNER)]);
    let reply = reply.unwrap();
    assert_eq!(
        (reply.status, error_of(&reply).as_str()),
        (403, "client_not_allowed")
    );
    assert_eq!(reply.header("www-authenticate"), None);
    let denied = [("outcome", "denied"), ("reason", "client_not_allowed")];
    assert_eq!(env.metric_with(REQUESTS, &denied), 1);
    assert_eq!(env.metric_with(REQUESTS, &[("outcome", "denied")]), 1);
    assert_eq!(
        env.metric_with(
            CLIENT_REQUESTS,
            &[("client", "partner-x"), ("outcome", "denied")]
        ),
        1
    );
    assert_eq!(
        env.metric_with(
            CLIENT_REQUESTS,
            &[("client", "partner-x"), ("outcome", "allowed")]
        ),
        0
    );
}

#[test]
fn forged_identity_headers_are_removed_on_every_route() {
    let forged = [("x-client-id", "team-a"), ("x-client-scopes", "admin")];
    let env = allowed("GET", "/health", &forged);
    assert_eq!(upstream_header(&env, "x-client-id"), None);
    assert_eq!(upstream_header(&env, "x-client-scopes"), None);
    let env = allowed("GET", "/public", &forged);
    assert_eq!(upstream_header(&env, "x-client-id"), None);
    let mut with_key = forged.to_vec();
    with_key.push(("x-api-key", PARTNER));
    let env = allowed("GET", "/orders", &with_key);
    assert_eq!(
        upstream_header(&env, "x-client-id").as_deref(),
        Some("partner-x")
    );
    assert_eq!(
        upstream_header(&env, "x-client-scopes").as_deref(),
        Some("orders:read")
    );
}

#[test]
fn paths_that_dodge_rules_are_refused() {
    // `/health/../admin` would skip the /admin rule if matched as sent.
    let (status, error, _) = refused("GET", "/health/../admin", &[]);
    assert_eq!((status, error.as_str()), (400, "invalid_path"));
    let (status, error, _) = refused("GET", "/health%2F..%2Fadmin", &[]);
    assert_eq!(status, 400, "{error}");
}

#[test]
fn no_key_reaches_a_reply() {
    for key in [TEAM_A, "guess-0123456789abc", RETIRED] {
        for path in ["/orders", "/admin", "/public"] {
            let (_, _, reply) = send("POST", path, &[("x-api-key", key)]);
            if let Some(reply) = reply {
                let text = format!(
                    "{:?} {}",
                    reply.headers,
                    String::from_utf8_lossy(&reply.body)
                );
                assert!(!text.contains(key), "{text}");
            }
        }
    }
}

#[test]
fn a_key_that_was_not_utf8_matches_nothing() {
    // The frame reads such bytes as U+FFFD; a configured key holding U+FFFD must not match them.
    let (status, error, _) = refused(
        "GET",
        "/orders",
        &[("x-api-key", "team-a-key-\u{FFFD}\u{FFFD}")],
    );
    assert_eq!((status, error.as_str()), (401, "invalid_api_key"));
}

#[test]
fn a_client_counter_is_defined_once_per_worker_with_its_labels() {
    let env = FakeEnv::at(NOW_MS);
    let worker = worker(&env);
    for id in 1..=2 {
        env.set_map(
            HeaderMap::Request,
            &[
                (":method", "GET"),
                (":authority", "api.example.com"),
                (":path", "/orders"),
                ("x-api-key", TEAM_A),
            ],
        );
        let stream = Bound {
            stream: worker.new_stream(id).unwrap(),
            worker: Rc::clone(&worker),
        };
        assert_eq!(stream.request_headers(&env, true), Action::Continue);
    }
    let name = "plugin=.=plugin;.;outcome=.=allowed;.;client=.=team-a;.;\
                wasmgate_key_auth_client_requests_total";
    let names = env.metric_names();
    assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{names:?}");
    assert!(names.contains(
        &"plugin=.=plugin;.;outcome=.=denied;.;reason=.=invalid_api_key;.;\
          wasmgate_key_auth_requests_total"
            .to_string()
    ));
    let labels = [("client", "team-a"), ("outcome", "allowed")];
    assert_eq!(env.metric_with(CLIENT_REQUESTS, &labels), 2);
}
