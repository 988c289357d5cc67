//! A whole filter driven through the frame with the fake host: configure, then one request with
//! its body, every callout answered with the input's answer, timers run, the response with its
//! body. What the filter sends and replies is not checked here, only that nothing panics.

use crate::input::{split_all, Message};
use std::rc::Rc;
use wasmgate_core::host::HeaderMap;
use wasmgate_core::outcome::{Answer, Callout};
use wasmgate_host::fake::FakeEnv;
use wasmgate_host::frame::{Bound, StreamOps, Worker};
use wasmgate_host::{Direction, Filter};

/// The clock when the input sets none: 2025-01-01T00:00:00Z.
pub const DEFAULT_NOW_MS: u64 = 1_735_689_600_000;

/// A fresh worker configured with `config`, or `None` when the filter refuses it.
pub fn configure<F: Filter>(env: &FakeEnv, config: &[u8]) -> Option<Rc<Worker<F>>> {
    let worker = Rc::new(Worker::<F>::default());
    worker
        .configure(env, "fuzz".into(), Some(config))
        .then_some(worker)
}

/// Only the configuration loader.
pub fn config<F: Filter>(data: &[u8]) {
    let env = FakeEnv::at(DEFAULT_NOW_MS);
    let _ = configure::<F>(&env, data);
}

/// One request through a filter configured with `config`. `data` is up to three messages
/// ([`Message`]) separated by a line `--`: the request, the answer to every callout (`:status`
/// among its headers; none: no response arrived), the upstream response.
pub fn request<F: Filter>(config: &[u8], data: &[u8]) {
    let sections = split_all(data, b"\n--\n");
    let section = |i: usize| sections.get(i).map(|s| Message::parse(s));
    let request = section(0).unwrap_or_default();
    let env = FakeEnv::at(request.now_ms.unwrap_or(DEFAULT_NOW_MS));
    env.set_property("source.address", b"10.1.2.3:51234");
    env.set_property("xds.route_name", b"fuzz-route");
    let Some(worker) = configure::<F>(&env, config) else {
        return;
    };
    // Two streams: the second sees what the first left in shared data and caches.
    for id in [2u32, 3] {
        one_stream(&env, &worker, id, &request, section(1), section(2));
        env.advance_ms(1_500);
    }
}

fn one_stream<F: Filter>(
    env: &FakeEnv,
    worker: &Rc<Worker<F>>,
    id: u32,
    request: &Message,
    answer: Option<Message>,
    response: Option<Message>,
) {
    let Some(stream) = worker.new_stream(id) else {
        return;
    };
    let bound = Bound {
        stream,
        worker: Rc::clone(worker),
    };
    env.set_map(HeaderMap::Request, &request.pairs());
    env.set_body(Direction::Request, &request.body);
    let has_body = !request.body.is_empty();
    bound.request_headers(env, !has_body);
    if has_body {
        // In two chunks, as a body arrives.
        let half = request.body.len() / 2;
        bound.request_body(env, half, false);
        bound.request_body(env, request.body.len(), true);
    }
    answer_callouts(env, worker, answer.as_ref());
    let response = response.unwrap_or_else(|| Message {
        headers: vec![(":status".into(), "200".into())],
        ..Message::default()
    });
    env.set_map(HeaderMap::Response, &response.pairs());
    env.set_body(Direction::Response, &response.body);
    let has_body = !response.body.is_empty();
    bound.response_headers(env, !has_body);
    if has_body {
        bound.response_body(env, response.body.len(), true);
    }
    bound.done(env);
    worker.forget(id);
}

/// Answers each callout sent so far (and those the answers lead to, a few rounds) with `answer`,
/// running the timer between rounds so that waits end and plugin fetches start.
fn answer_callouts<F: Filter>(env: &FakeEnv, worker: &Worker<F>, answer: Option<&Message>) {
    let mut answered = 0;
    for _ in 0..4 {
        let calls = env.callouts();
        for (callout, token) in calls.iter().skip(answered) {
            match (callout, answer) {
                (Callout::Http { .. }, Some(a)) => {
                    *env.answer.borrow_mut() = Some(Answer::Http {
                        headers: a.headers.clone(),
                        body: a.body.clone(),
                    });
                    worker.deliver_http(env, *token, a.headers.len(), a.body.len());
                }
                (Callout::Http { .. }, None) => worker.deliver_http(env, *token, 0, 0),
                (Callout::Grpc { .. }, Some(a)) => {
                    let status = a.header("grpc-status").parse().unwrap_or(0);
                    *env.answer.borrow_mut() = Some(Answer::Grpc {
                        status,
                        message: a.body.clone(),
                    });
                    worker.deliver_grpc(env, *token, status, a.body.len());
                }
                (Callout::Grpc { .. }, None) => worker.deliver_grpc(env, *token, 14, 0),
            }
        }
        answered = calls.len();
        env.advance_ms(1_000);
        worker.tick(env);
        if env.callouts().len() == answered {
            break;
        }
    }
}

/// Whether each filter accepts its rich configuration (a refused one would make its request
/// targets test nothing).
pub fn rich_configs_accepted() -> Vec<(&'static str, bool)> {
    use crate::targets::configs;
    let env = FakeEnv::at(DEFAULT_NOW_MS);
    vec![
        (
            "hmac_auth",
            configure::<hmac_auth::filter::HmacAuth>(&env, configs::HMAC_AUTH).is_some(),
        ),
        (
            "jwt_auth",
            configure::<jwt_auth::filter::JwtAuth>(&env, configs::JWT_AUTH).is_some(),
        ),
        (
            "rate_limit",
            configure::<rate_limit::filter::RateLimit>(&env, configs::RATE_LIMIT).is_some(),
        ),
        (
            "transform",
            configure::<transform::filter::Transform>(&env, configs::TRANSFORM).is_some(),
        ),
        (
            "key_auth",
            configure::<key_auth::filter::KeyAuth>(
                &env,
                crate::credentials::credential_configs::KEY_AUTH,
            )
            .is_some(),
        ),
        (
            "credential_inject",
            configure::<credential_inject::filter::CredentialInject>(
                &env,
                crate::credentials::credential_configs::CREDENTIAL_INJECT,
            )
            .is_some(),
        ),
        (
            "retry",
            configure::<retry::filter::Retry>(&env, configs::RETRY).is_some(),
        ),
        (
            "retry_router",
            configure::<retry::filter::Retry>(&env, configs::RETRY_ROUTER).is_some(),
        ),
    ]
}
