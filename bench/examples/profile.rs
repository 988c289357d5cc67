//! `make profile`: where a filter's own instructions go, by function. Runs requests through the
//! frame and its fake host natively (no Envoy, no Wasm), so callgrind can name every function;
//! `make bench-instructions` measures the same work in Envoy. The counts include the fake host's
//! bookkeeping (`wasmgate_host::fake`), which no deployment pays.
//!
//! `profile <scenario>`: `jwt_chain` (jwt-auth with a cached token, then rate-limit keyed on the
//! subject, then transform's header edits, as one chain), `jwt_auth`, `rate_limit`, `transform`.
//! Only [`requests`] is counted (`--toggle-collect`): [`REQUESTS`] requests after a warm-up.

// A profiling tool: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::rc::Rc;
use wasmgate_core::host::HeaderMap;
use wasmgate_host::chain::Chain;
use wasmgate_host::context::{set_bundle_entries, Entry};
use wasmgate_host::fake::FakeEnv;
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::Filter;

/// Requests counted; the totals callgrind prints are for this many.
const REQUESTS: u32 = 1_000;
/// The fake clock (ms since the epoch); tokens are valid around it.
const NOW_MS: u64 = 1_800_000_000_000;

/// The filters a chain may name here.
static ENTRIES: &[Entry] = &[
    Entry::of::<jwt_auth::filter::JwtAuth>(),
    Entry::of::<rate_limit::filter::RateLimit>(),
    Entry::of::<transform::filter::Transform>(),
    Entry::of::<Chain>(),
];

/// A symmetric key and a token it signed: the cached-token path never verifies again, so the
/// algorithm does not change what is counted.
fn jwt_auth_config() -> (Value, String) {
    let jwk = json!({"kty": "oct", "kid": "k1", "alg": "HS256",
        "k": "cHJvZmlsZS1rZXktcHJvZmlsZS1rZXktcHJvZmlsZS1rZXk"});
    let now = NOW_MS / 1000;
    let claims = json!({"iss": "https://issuer.example", "aud": "bench", "sub": "alice",
        "iat": now, "exp": now + 3600});
    let token = jwt_auth::crypto::sign::sign(
        &jwk.to_string(),
        &json!({"alg": "HS256", "kid": "k1", "typ": "JWT"}).to_string(),
        &claims.to_string(),
    )
    .expect("signed");
    let config = json!({"providers": {"bench": {"issuer": "https://issuer.example",
        "audiences": ["bench"], "local_jwks": {"inline_string": json!({"keys": [jwk]}).to_string()},
        "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}]}},
        "requires": {"provider_name": "bench"}});
    (config, token)
}

fn rate_limit_config() -> Value {
    json!({"rules": [{"match": {}, "key": [{"header": "x-jwt-sub"}],
        "limits": [{"name": "bench", "requests": 1_000_000_000u64, "window": "1s", "algorithm": "token_bucket"}]}],
        "response_headers": "none"})
}

fn transform_config() -> Value {
    json!({"request": {"headers": {"remove": ["x-remove-1", "x-remove-2", "x-remove-3"],
        "add": {"x-add-1": "one", "x-add-2": "two", "x-add-3": "three"}}}})
}

/// The request of every scenario: a browser-like GET with a token and three headers to remove.
fn set_request(env: &FakeEnv, authorization: &str) {
    env.set_map(
        HeaderMap::Request,
        &[
            (":method", "GET"),
            (":path", "/bench"),
            (":authority", "bench"),
            (":scheme", "http"),
            ("user-agent", "profile"),
            ("accept", "*/*"),
            ("authorization", authorization),
            ("x-jwt-sub", "alice"),
            ("x-remove-1", "drop-me"),
            ("x-remove-2", "drop-me"),
            ("x-remove-3", "drop-me"),
        ],
    );
    env.set_map(
        HeaderMap::Response,
        &[(":status", "200"), ("content-length", "0")],
    );
}

/// One request's whole life through the frame.
fn request<F: Filter>(worker: &Rc<Worker<F>>, env: &FakeEnv, authorization: &str, id: u32) {
    set_request(env, authorization);
    let stream = Bound {
        stream: worker.new_stream(id).expect("configured"),
        worker: Rc::clone(worker),
    };
    stream.request_headers(env, true);
    stream.response_headers(env, true);
    stream.done(env);
    worker.forget(id);
    env.take_calls();
}

/// The counted requests.
#[inline(never)]
fn requests<F: Filter>(worker: &Rc<Worker<F>>, env: &FakeEnv, authorization: &str) {
    for id in 0..REQUESTS {
        request(worker, env, authorization, id + 100);
    }
}

/// Configures `F` with `config`, warms it up (the token cached), then counts.
fn run<F: Filter>(config: &Value, authorization: &str) {
    let env = FakeEnv::at(NOW_MS);
    let worker: Rc<Worker<F>> = Rc::new(Worker::default());
    assert!(
        worker.configure(&env, "profile".into(), Some(config.to_string().as_bytes())),
        "configuration refused: {config}"
    );
    for id in 0..10 {
        request(&worker, &env, authorization, id + 2);
    }
    requests(&worker, &env, authorization);
}

fn main() {
    set_bundle_entries(ENTRIES);
    let scenario = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "jwt_chain".into());
    let (jwt, token) = jwt_auth_config();
    let bearer = format!("Bearer {token}");
    match scenario.as_str() {
        "jwt_chain" => {
            let stages = json!({"stages": [
                {"filter": "jwt-auth", "config": jwt},
                {"filter": "rate-limit", "config": rate_limit_config()},
                {"filter": "transform", "config": transform_config()},
            ]});
            run::<Chain>(&stages, &bearer);
        }
        "jwt_auth" => run::<jwt_auth::filter::JwtAuth>(&jwt, &bearer),
        "rate_limit" => run::<rate_limit::filter::RateLimit>(&rate_limit_config(), &bearer),
        "transform" => run::<transform::filter::Transform>(&transform_config(), &bearer),
        other => panic!("unknown scenario {other:?}: jwt_chain, jwt_auth, rate_limit or transform"),
    }
    println!("{scenario}: {REQUESTS} requests counted");
}
