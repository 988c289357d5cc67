//! The frame driven through the fake host: edits written once, body limits, callout
//! correlation and timeouts, waits, replies and their headers, metrics, plugin callouts.

use super::*;
use crate::fake::{Call, FakeEnv};
use crate::filter::Counter;
use std::collections::VecDeque;
use wasmgate_core::host::{HeaderMap, Host};
use wasmgate_core::ConfigError;

type Step = Box<dyn Fn(&mut Cx<'_>, &str) -> Outcome>;

/// The plugin of a filter whose hooks run the steps a test queued, in order, and record
/// their names.
#[derive(Default)]
struct Steps {
    queue: RefCell<VecDeque<Step>>,
    seen: RefCell<Vec<String>>,
    hits: Cell<Counter>,
}

impl Steps {
    fn next(&self, cx: &mut Cx<'_>, hook: &str) -> Outcome {
        self.seen.borrow_mut().push(hook.to_string());
        let step = self.queue.borrow_mut().pop_front();
        step.map_or(Outcome::Continue, |step| step(cx, hook))
    }
}

struct ScriptStream(Rc<Steps>);

impl Filter for ScriptStream {
    const NAME: &'static str = "script";
    type Plugin = Steps;

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Steps, ConfigError> {
        if json != b"{}" {
            return Err(ConfigError::new("$", "only {} is valid"));
        }
        let steps = Steps::default();
        steps.hits.set(setup.counter("hits"));
        Ok(steps)
    }

    fn new_stream(plugin: &Rc<Steps>) -> Self {
        Self(Rc::clone(plugin))
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        self.0.next(cx, "request_headers")
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        let name = match body {
            Body::Complete(bytes) => format!("request_body {}", String::from_utf8_lossy(bytes)),
            Body::TooLarge => "request_body too large".to_string(),
        };
        self.0.next(cx, &name)
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        self.0.next(cx, "response_headers")
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_>, _: Body<'_>) -> Outcome {
        self.0.next(cx, "response_body")
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        let name = match answer {
            Answer::Http { headers, .. } if headers.is_empty() => "answer none".to_string(),
            Answer::Http { .. } => "answer http".to_string(),
            Answer::Grpc { status, .. } => format!("answer grpc {status}"),
            Answer::NotSent(reason) => format!("answer not sent: {reason}"),
            Answer::TooLarge { size, .. } => format!("answer too large {size}"),
        };
        self.0.next(cx, &name)
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        self.0.next(cx, "wake")
    }

    fn on_body_too_large(&mut self, cx: &mut Cx<'_>, direction: Direction) {
        self.0.next(cx, &format!("too large {direction:?}"));
    }

    fn on_done(&mut self, cx: &mut Cx<'_>) {
        self.0.next(cx, "done");
    }

    fn tick_period(_: &Steps) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn on_tick(plugin: &Rc<Steps>, cx: &mut RootCx<'_>) {
        plugin.seen.borrow_mut().push("tick".into());
        cx.call(7, http_call(), 10);
    }

    fn on_plugin_answer(plugin: &Rc<Steps>, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        let what = match answer {
            Answer::TooLarge { size, limit } => {
                format!("plugin answer {key} too large {size}>{limit}")
            }
            _ => format!("plugin answer {key}"),
        };
        plugin.seen.borrow_mut().push(what);
        cx.wake_waiting();
    }
}

fn http_call() -> Callout {
    Callout::Http {
        cluster: "c".into(),
        headers: vec![(":path".into(), "/".into())],
        body: None,
        trailers: Vec::new(),
        timeout: Duration::from_millis(50),
    }
}

struct Setup1 {
    env: FakeEnv,
    worker: Rc<Worker<ScriptStream>>,
}

impl Setup1 {
    fn new() -> Self {
        let env = FakeEnv::with_request("POST", "example.com", "/p");
        let worker = Rc::new(Worker::default());
        assert!(
            worker.configure(&env, "plugin".into(), None),
            "{{}} by default"
        );
        env.take_calls();
        Self { env, worker }
    }

    fn steps(&self) -> Rc<Steps> {
        self.worker.plugin().unwrap()
    }

    fn queue(&self, step: impl Fn(&mut Cx<'_>, &str) -> Outcome + 'static) {
        self.steps().queue.borrow_mut().push_back(Box::new(step));
    }

    fn stream(&self, id: u32) -> Bound<ScriptStream> {
        Bound {
            stream: self.worker.new_stream(id).unwrap(),
            worker: Rc::clone(&self.worker),
        }
    }

    fn seen(&self) -> Vec<String> {
        std::mem::take(&mut self.steps().seen.borrow_mut())
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_invalid_configuration_is_refused_and_the_previous_one_stays() {
    let t = Setup1::new();
    let before = t.steps();
    assert!(!t.worker.configure(&t.env, "plugin".into(), Some(b"[]")));
    assert!(Rc::ptr_eq(&before, &t.steps()));
    let unconfigured: Worker<ScriptStream> = Worker::default();
    assert!(
        unconfigured.new_stream(1).is_none(),
        "no stream before a configuration"
    );
}

#[test]
fn header_edits_are_written_once_after_the_hook() {
    let t = Setup1::new();
    t.queue(|cx, _| {
        cx.request.set("x-a", "1");
        cx.request.remove("x-b");
        cx.request.add("x-c", "2");
        cx.response.set("x-r", "3");
        assert!(
            cx.request.edits.len() == 3,
            "nothing written while the hook runs"
        );
        Outcome::Continue
    });
    let s = t.stream(1);
    assert_eq!(s.request_headers(&t.env, true), Action::Continue);
    assert_eq!(
        t.env.take_calls(),
        vec![
            Call::WriteHeader(HeaderMap::Request, "x-a".into(), Some("1".into())),
            Call::WriteHeader(HeaderMap::Request, "x-b".into(), None),
            Call::AddHeader(HeaderMap::Request, "x-c".into(), "2".into()),
            Call::WriteHeader(HeaderMap::Response, "x-r".into(), Some("3".into())),
        ]
    );
    let fake = &t.env;
    assert_eq!(
        fake.header(HeaderMap::Request, "x-a").as_deref(),
        Some("1"),
        "the fake applies writes"
    );
    assert_eq!(fake.header(HeaderMap::Request, "x-c").as_deref(), Some("2"));
    assert_eq!(
        fake.header(HeaderMap::Response, "x-r").as_deref(),
        Some("3")
    );
}

#[test]
fn a_whole_map_is_one_call_unless_a_value_was_not_utf8() {
    let t = Setup1::new();
    let old = pairs(&[("x-a", "1"), ("x-b", "caf\u{fffd}")]);
    let new = pairs(&[("x-a", "2"), ("x-b", "caf\u{fffd}")]);
    let (o, n) = (old.clone(), pairs(&[("x-a", "2")]));
    t.queue(move |cx, _| {
        cx.request.replace_all(o.clone(), n.clone());
        Outcome::Continue
    });
    t.stream(1).request_headers(&t.env, true);
    assert_eq!(
        t.env.take_calls(),
        vec![Call::WriteMap(HeaderMap::Request, pairs(&[("x-a", "2")]))]
    );
    t.queue(move |cx, _| {
        cx.request.replace_all(old.clone(), new.clone());
        Outcome::Continue
    });
    t.stream(2).request_headers(&t.env, true);
    assert_eq!(
        t.env.take_calls(),
        vec![Call::WriteHeader(
            HeaderMap::Request,
            "x-a".into(),
            Some("2".into())
        )],
        "the unchanged non-UTF-8 value is never written back"
    );
}

#[test]
fn a_reply_is_json_with_its_headers_and_hides_the_response_from_the_filter() {
    let t = Setup1::new();
    let hits = t.steps().hits.get();
    t.queue(move |cx, _| {
        cx.count(hits);
        Outcome::Reply(
            LocalReply::new(429, "rate_limited", "Slow down.").with_header("retry-after", "3"),
        )
    });
    let s = t.stream(1);
    assert_eq!(s.request_headers(&t.env, true), Action::Pause);
    let calls = t.env.take_calls();
    assert_eq!(
        calls[0],
        Call::Metric("plugin=.=plugin;.;wasmgate_script_hits".into(), 1)
    );
    let Call::Respond(status, headers, body) = &calls[1] else {
        panic!("{calls:?}");
    };
    assert_eq!(*status, 429);
    assert_eq!(
        headers,
        &pairs(&[("content-type", "application/json"), ("retry-after", "3")])
    );
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(s.response_headers(&t.env, false), Action::Continue);
    assert_eq!(
        t.seen(),
        ["request_headers"],
        "its own reply is not shown to the filter"
    );
}

#[test]
fn counters_count_and_zero_makes_no_call() {
    let t = Setup1::new();
    let hits = t.steps().hits.get();
    t.queue(move |cx, _| {
        cx.add(hits, 0);
        cx.add(hits, 2);
        cx.count(Counter::default());
        Outcome::Continue
    });
    t.stream(1).request_headers(&t.env, true);
    assert_eq!(
        t.env.take_calls(),
        vec![Call::Metric(
            "plugin=.=plugin;.;wasmgate_script_hits".into(),
            2
        )]
    );
}

fn need(limit: u64, mode: BodyMode) -> Outcome {
    Outcome::NeedBody(BodyNeed {
        limit,
        mode,
        declared: None,
    })
}

#[test]
fn a_buffered_body_is_held_until_complete_then_replaced() {
    let t = Setup1::new();
    t.queue(|_, _| need(10, BodyMode::Buffer));
    t.queue(|cx, _| {
        cx.replace_body(b"new".to_vec());
        // The headers went on before the body: this edit cannot be written any more.
        cx.request.set("content-length", "3");
        Outcome::Continue
    });
    let s = t.stream(1);
    assert_eq!(
        s.request_headers(&t.env, false),
        Action::Continue,
        "headers go on"
    );
    t.env.set_body(Direction::Request, b"01234");
    assert_eq!(s.request_body(&t.env, 5, false), Action::Pause);
    t.env.set_body(Direction::Request, b"0123456789");
    assert_eq!(s.request_body(&t.env, 10, true), Action::Continue);
    assert_eq!(t.seen(), ["request_headers", "request_body 0123456789"]);
    assert_eq!(
        t.env.take_calls(),
        vec![Call::ReplaceBody(Direction::Request, 10, b"new".to_vec())],
        "the body is replaced; the late header edit is dropped"
    );
    assert_eq!(
        *t.env.request_body.borrow(),
        b"new",
        "the fake holds the new body"
    );
}

#[test]
fn held_headers_pause_and_trailers_end_the_body() {
    let t = Setup1::new();
    t.queue(|_, _| need(10, BodyMode::HoldHeaders));
    let s = t.stream(1);
    assert_eq!(s.request_headers(&t.env, false), Action::Pause);
    t.env.set_body(Direction::Request, b"abc");
    assert_eq!(s.request_body(&t.env, 3, false), Action::Pause);
    assert_eq!(s.request_trailers(&t.env), Action::Continue);
    assert_eq!(t.seen(), ["request_headers", "request_body abc"]);
}

#[test]
fn no_body_at_all_is_an_empty_body_now() {
    let t = Setup1::new();
    t.queue(|_, _| need(10, BodyMode::Buffer));
    assert_eq!(t.stream(1).request_headers(&t.env, true), Action::Continue);
    assert_eq!(t.seen(), ["request_headers", "request_body "]);
}

fn assert_too_large(calls: &[Call], status: u32) {
    let Some(Call::Respond(got, _, body)) = calls.last() else {
        panic!("{calls:?}");
    };
    assert_eq!(*got, status);
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["error"], "body_too_large");
}

#[test]
fn a_body_over_its_limit_is_413_by_length_or_by_bytes() {
    let t = Setup1::new();
    let env = FakeEnv::default();
    t.queue(|cx, _| {
        // The filter read the declared length before its own edits dropped the header.
        cx.request.remove("content-length");
        Outcome::NeedBody(BodyNeed {
            limit: 10,
            mode: BodyMode::Buffer,
            declared: Some(11),
        })
    });
    assert_eq!(t.stream(1).request_headers(&env, false), Action::Pause);
    assert_too_large(&env.take_calls(), 413);
    assert_eq!(t.seen(), ["request_headers", "too large Request"]);

    t.queue(|_, _| need(10, BodyMode::Buffer));
    let s = t.stream(2);
    s.request_headers(&t.env, false);
    assert_eq!(s.request_body(&t.env, 11, false), Action::Pause);
    assert_too_large(&t.env.take_calls(), 413);
    assert_eq!(
        s.request_body(&t.env, 20, true),
        Action::Continue,
        "nothing after the reply"
    );
    assert_eq!(t.seen(), ["request_headers", "too large Request"]);
}

#[test]
fn a_response_body_over_its_limit_is_502() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Continue);
    t.queue(|_, _| need(4, BodyMode::Buffer));
    let s = t.stream(1);
    s.request_headers(&t.env, true);
    s.response_headers(&t.env, false);
    s.response_body(&t.env, 5, false);
    assert_too_large(&t.env.take_calls(), 502);
}

#[test]
fn a_copied_body_streams_on_and_arrives_whole_or_too_large() {
    let t = Setup1::new();
    t.queue(|_, _| need(6, BodyMode::Copy));
    let s = t.stream(1);
    assert_eq!(s.request_headers(&t.env, false), Action::Continue);
    t.env.set_body(Direction::Request, b"abc");
    assert_eq!(s.request_body(&t.env, 3, false), Action::Continue);
    t.env.set_body(Direction::Request, b"def");
    assert_eq!(s.request_body(&t.env, 3, true), Action::Continue);
    assert_eq!(t.seen(), ["request_headers", "request_body abcdef"]);

    t.queue(|_, _| need(4, BodyMode::Copy));
    let s = t.stream(2);
    let env = FakeEnv::default();
    env.set_map(HeaderMap::Request, &[("content-length", "100")]);
    assert_eq!(
        s.request_headers(&env, false),
        Action::Continue,
        "no 413 in copy mode"
    );
    env.set_body(Direction::Request, b"abcde");
    assert_eq!(s.request_body(&env, 5, true), Action::Continue);
    assert_eq!(t.seen(), ["request_headers", "request_body too large"]);
}

#[test]
fn a_callout_answer_reaches_its_stream_by_token_and_resumes_it() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|cx, _| {
        cx.request.set("x-answered", "yes");
        Outcome::Continue
    });
    let s = t.stream(5);
    assert_eq!(s.request_headers(&t.env, true), Action::Pause);
    assert!(matches!(t.env.take_calls()[..], [Call::Dispatch(_, 1)]));
    t.worker.deliver_http(&t.env, 99, 1, 0);
    assert!(t.env.take_calls().is_empty(), "an unknown token is ignored");
    *t.env.answer.borrow_mut() = Some(Answer::Http {
        headers: pairs(&[(":status", "200")]),
        body: Vec::new(),
    });
    t.worker.deliver_http(&t.env, 1, 1, 0);
    assert_eq!(
        t.env.take_calls(),
        vec![
            Call::EffectiveContext(5),
            Call::WriteHeader(HeaderMap::Request, "x-answered".into(), Some("yes".into())),
            Call::Resume(Direction::Request),
        ]
    );
    t.worker.deliver_http(&t.env, 1, 1, 0);
    assert!(t.env.take_calls().is_empty(), "an answer is delivered once");
    assert_eq!(t.seen(), ["request_headers", "answer http"]);
}

#[test]
fn a_timed_out_callout_is_an_answer_without_headers() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|_, _| Outcome::Reply(LocalReply::new(503, "unavailable", "No answer.")));
    let s = t.stream(1);
    s.request_headers(&t.env, true);
    t.env.take_calls();
    t.worker.deliver_http(&t.env, 1, 0, 0);
    let calls = t.env.take_calls();
    assert!(
        matches!(
            calls[..],
            [Call::EffectiveContext(1), Call::Respond(503, _, _)]
        ),
        "{calls:?}"
    );
    assert_eq!(t.seen(), ["request_headers", "answer none"]);
}

#[test]
fn a_refused_callout_is_answered_at_once_without_a_pause() {
    let t = Setup1::new();
    *t.env.refuse_dispatch.borrow_mut() = Some("BadArgument".into());
    t.queue(|_, _| Outcome::Call(http_call()));
    let s = t.stream(1);
    assert_eq!(s.request_headers(&t.env, true), Action::Continue);
    assert!(
        t.env.take_calls().is_empty(),
        "no resume of a stream that never paused"
    );
    assert_eq!(
        t.seen(),
        ["request_headers", "answer not sent: BadArgument"]
    );
}

#[test]
fn a_finished_stream_gets_no_answer() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Call(http_call()));
    let s = t.stream(1);
    s.request_headers(&t.env, true);
    s.done(&t.env);
    t.env.take_calls();
    t.worker.deliver_http(&t.env, 1, 1, 0);
    assert!(t.env.take_calls().is_empty());
    assert_eq!(t.seen(), ["request_headers", "done"]);
}

#[test]
fn a_wait_arms_the_timer_and_a_call_from_the_timer_comes_back_to_the_stream() {
    let t = Setup1::new();
    t.queue(|cx, _| Outcome::Wait {
        until_ms: cx.host().now_ms() + 250,
    });
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|_, _| {
        Outcome::Respond(Response {
            status: 200,
            headers: pairs(&[("x-from", "callout")]),
            body: b"ok".to_vec(),
        })
    });
    let s = t.stream(3);
    assert_eq!(s.request_headers(&t.env, true), Action::Pause);
    assert_eq!(
        t.env.take_calls(),
        vec![Call::Tick(Duration::from_millis(250))],
        "the earliest of the wait and the plugin's 1 s tick"
    );
    t.worker.tick(&t.env);
    assert!(!t.seen().contains(&"wake".to_string()), "not due yet");
    t.env.take_calls();
    t.env.advance_ms(300);
    let env = &t.env;
    t.worker.tick(env);
    let calls = env.take_calls();
    assert_eq!(calls[0], Call::EffectiveContext(3));
    let Call::Dispatch(_, token) = calls[1] else {
        panic!("{calls:?}");
    };
    t.worker.deliver_http(env, token, 1, 0);
    let calls = env.take_calls();
    assert!(
        matches!(&calls[..], [Call::EffectiveContext(3), Call::Respond(200, h, b)] if h == &pairs(&[("x-from", "callout")]) && b == b"ok"),
        "{calls:?}"
    );
    let seen = t.seen();
    assert!(
        seen.ends_with(&["wake".to_string(), "answer none".to_string()]),
        "{seen:?}"
    );
}

#[test]
fn the_plugin_tick_calls_out_with_a_size_limit_and_wakes_the_waiting() {
    let t = Setup1::new();
    t.queue(|cx, _| Outcome::Wait {
        until_ms: cx.host().now_ms() + 60_000,
    });
    let s = t.stream(4);
    s.request_headers(&t.env, true);
    t.worker.tick(&t.env);
    let calls = t.env.take_calls();
    assert!(
        calls.iter().any(|c| matches!(c, Call::Dispatch(_, 1))),
        "{calls:?}"
    );
    t.worker.deliver_http(&t.env, 1, 1, 11);
    assert_eq!(
        t.seen(),
        [
            "request_headers",
            "tick",
            "plugin answer 7 too large 11>10",
            "wake"
        ]
    );
}

/// A filter that declares no frame feature but asks for a body anyway.
struct Undeclared;

impl Filter for Undeclared {
    const NAME: &'static str = "undeclared";
    type Plugin = ();
    const USES: crate::filter::Uses = crate::filter::Uses::HEADERS;

    fn configure(_: &Setup<'_>, _: &[u8]) -> Result<(), ConfigError> {
        Ok(())
    }

    fn new_stream(_: &Rc<()>) -> Self {
        Self
    }

    fn on_request_headers(&mut self, _: &mut Cx<'_>, _: bool) -> Outcome {
        need(10, BodyMode::Buffer)
    }
}

#[test]
fn an_undeclared_outcome_is_a_500_never_a_skipped_check() {
    let env = FakeEnv::default();
    let worker: Rc<Worker<Undeclared>> = Rc::new(Worker::default());
    assert!(worker.configure(&env, "p".into(), None));
    let stream = Bound {
        stream: worker.new_stream(1).unwrap(),
        worker: Rc::clone(&worker),
    };
    assert_eq!(stream.request_headers(&env, false), Action::Pause);
    let calls = env.take_calls();
    assert!(
        matches!(calls.last(), Some(Call::Respond(500, _, _))),
        "{calls:?}"
    );
}

fn answer_http(t: &Setup1, token: u32) {
    *t.env.answer.borrow_mut() = Some(Answer::Http {
        headers: pairs(&[(":status", "200")]),
        body: Vec::new(),
    });
    t.worker.deliver_http(&t.env, token, 1, 0);
}

#[test]
fn a_body_arriving_during_a_callout_is_held_and_can_be_asked_for_after_it() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|_, _| need(10, BodyMode::Buffer));
    t.queue(|cx, _| {
        cx.replace_body(b"new".to_vec());
        cx.request.set("content-length", "3");
        Outcome::Continue
    });
    let s = t.stream(3);
    assert_eq!(s.request_headers(&t.env, false), Action::Pause);
    t.env.set_body(Direction::Request, b"0123");
    assert_eq!(
        s.request_body(&t.env, 4, true),
        Action::Pause,
        "nothing goes on while the stream waits"
    );
    t.env.take_calls();
    answer_http(&t, 1);
    assert_eq!(
        t.seen(),
        ["request_headers", "answer http", "request_body 0123"]
    );
    assert_eq!(
        t.env.take_calls(),
        vec![
            Call::EffectiveContext(3),
            Call::WriteHeader(
                HeaderMap::Request,
                "content-length".into(),
                Some("3".into())
            ),
            Call::ReplaceBody(Direction::Request, 4, b"new".to_vec()),
            Call::Resume(Direction::Request),
        ],
        "the headers were held all along: the edit is written, then the stream resumes"
    );
}

#[test]
fn a_body_asked_for_after_a_callout_is_collected_until_its_end() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|_, _| need(10, BodyMode::Buffer));
    let s = t.stream(4);
    assert_eq!(s.request_headers(&t.env, false), Action::Pause);
    t.env.set_body(Direction::Request, b"01");
    assert_eq!(s.request_body(&t.env, 2, false), Action::Pause);
    answer_http(&t, 1);
    assert!(
        !t.env
            .take_calls()
            .contains(&Call::Resume(Direction::Request)),
        "still paused: the body is not all there"
    );
    t.env.set_body(Direction::Request, b"0123456789ab");
    assert_eq!(s.request_body(&t.env, 12, true), Action::Pause);
    assert_too_large(&t.env.take_calls(), 413);
    assert_eq!(
        t.seen(),
        ["request_headers", "answer http", "too large Request"]
    );
}

#[test]
fn a_held_body_can_be_replaced_after_a_callout_from_its_hook() {
    let t = Setup1::new();
    t.queue(|_, _| need(10, BodyMode::HoldHeaders));
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|cx, _| {
        cx.replace_body(b"xyz".to_vec());
        Outcome::Continue
    });
    let s = t.stream(6);
    assert_eq!(s.request_headers(&t.env, false), Action::Pause);
    t.env.set_body(Direction::Request, b"abcde");
    assert_eq!(s.request_body(&t.env, 5, true), Action::Pause);
    t.env.take_calls();
    answer_http(&t, 1);
    assert_eq!(
        t.env.take_calls(),
        vec![
            Call::EffectiveContext(6),
            Call::ReplaceBody(Direction::Request, 5, b"xyz".to_vec()),
            Call::Resume(Direction::Request),
        ]
    );
}

#[test]
fn a_withheld_body_asked_for_after_a_callout_comes_after_resuming() {
    let t = Setup1::new();
    t.queue(|_, _| Outcome::Call(http_call()));
    t.queue(|_, _| need(10, BodyMode::Buffer));
    let s = t.stream(8);
    assert_eq!(s.request_headers(&t.env, false), Action::Pause);
    t.env.take_calls();
    answer_http(&t, 1);
    assert_eq!(
        t.env.take_calls(),
        vec![Call::EffectiveContext(8), Call::Resume(Direction::Request)],
        "Envoy gives a paused header phase's body only once it resumes"
    );
    t.env.set_body(Direction::Request, b"abc");
    assert_eq!(s.request_body(&t.env, 3, false), Action::Pause, "held");
    assert_eq!(s.request_body(&t.env, 3, true), Action::Continue);
    assert_eq!(
        t.seen(),
        ["request_headers", "answer http", "request_body abc"]
    );
}
