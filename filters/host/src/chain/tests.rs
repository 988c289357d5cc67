//! Chains driven through the frame and the fake host: configuration paths, the view the stages
//! share, edits written once, replies, bodies, callouts and plugin calls routed to their stage.

// Test-only code: failing loudly is the point.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::fake::{Call, FakeEnv};
use crate::frame::{Bound, StreamOps, Worker};
use proxy_wasm::types::Action;
use wasmgate_core::host::{HeaderMap, Host};
use wasmgate_core::outcome::Callout;

thread_local! {
    /// What the stages did, in order.
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn seen() -> Vec<String> {
    SEEN.with(|seen| std::mem::take(&mut *seen.borrow_mut()))
}

fn record(line: String) {
    SEEN.with(|seen| seen.borrow_mut().push(line));
}

/// What a probe stage does, from its configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    tag: String,
    /// Reads this request header and records it.
    #[serde(default)]
    read: Option<String>,
    /// Sets `x-<tag>` to `<tag>` on the request.
    #[serde(default)]
    set: bool,
    /// Asks for the request body with this limit.
    #[serde(default)]
    body: Option<u64>,
    /// Holds the headers for the body (else lets them go on before it).
    #[serde(default)]
    hold: bool,
    /// Reads the whole request map and rewrites it, adding `x-<tag>-rewritten`.
    #[serde(default)]
    rewrite: bool,
    /// Replaces the body with this text.
    #[serde(default)]
    replace: Option<String>,
    /// Calls out from the request headers hook.
    #[serde(default)]
    call: bool,
    /// Replies with this status.
    #[serde(default)]
    reply: Option<u32>,
    /// Calls out from the plugin's tick with this key.
    #[serde(default)]
    tick_key: Option<u64>,
    /// Its configuration as given (numbers unchanged).
    #[serde(skip)]
    raw: String,
}

struct Probe(Rc<Script>);

fn callout() -> Callout {
    Callout::Http {
        cluster: "c".into(),
        headers: vec![(":path".into(), "/".into())],
        body: None,
        trailers: Vec::new(),
        timeout: Duration::from_millis(50),
    }
}

impl Filter for Probe {
    const NAME: &'static str = "probe";
    type Plugin = Script;

    fn configure(_: &Setup<'_>, json: &[u8]) -> Result<Script, ConfigError> {
        let mut script: Script = wasmgate_core::config::parse(json)?;
        script.raw = String::from_utf8_lossy(json).into_owned();
        record(format!("configured {}", script.raw));
        Ok(script)
    }

    fn new_stream(plugin: &Rc<Script>) -> Self {
        Self(Rc::clone(plugin))
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        let s = &self.0;
        if let Some(name) = &s.read {
            let value = cx.host().request_header(name);
            record(format!("{} read {name}={value:?}", s.tag));
        } else {
            record(format!("{} headers", s.tag));
        }
        if s.set {
            cx.request.set(format!("x-{}", s.tag), s.tag.clone());
        }
        if s.rewrite {
            let read = cx.host().request_headers();
            let mut new = read.clone();
            new.push((format!("x-{}-rewritten", s.tag), "yes".into()));
            cx.request.replace_all(read, new);
        }
        if let Some(status) = s.reply {
            return Outcome::Reply(LocalReply::new(status, "refused", "no"));
        }
        if s.call {
            return Outcome::Call(callout());
        }
        self.need()
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        let text = match body {
            Body::Complete(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Body::TooLarge => "(too large)".into(),
        };
        record(format!("{} body {text}", self.0.tag));
        if self.0.hold {
            cx.request.set(format!("x-{}-body", self.0.tag), text);
        }
        if let Some(new) = &self.0.replace {
            cx.replace_body(new.clone().into_bytes());
        }
        Outcome::Continue
    }

    fn on_response_headers(&mut self, _: &mut Cx<'_>, _: bool) -> Outcome {
        record(format!("{} response", self.0.tag));
        Outcome::Continue
    }

    fn on_answer(&mut self, _: &mut Cx<'_>, _: Answer) -> Outcome {
        record(format!("{} answer", self.0.tag));
        self.need()
    }

    fn on_body_too_large(&mut self, _: &mut Cx<'_>, _: Direction) {
        record(format!("{} too large", self.0.tag));
    }

    fn tick_period(plugin: &Script) -> Option<Duration> {
        plugin.tick_key.map(|_| Duration::from_secs(1))
    }

    fn on_tick(plugin: &Rc<Script>, cx: &mut RootCx<'_>) {
        if let Some(key) = plugin.tick_key {
            cx.call(key, callout(), 100);
        }
    }

    fn on_plugin_answer(plugin: &Rc<Script>, _: &mut RootCx<'_>, key: u64, _: Answer) {
        record(format!("{} plugin answer {key}", plugin.tag));
    }
}

impl Probe {
    fn need(&self) -> Outcome {
        match self.0.body {
            Some(limit) => Outcome::NeedBody(BodyNeed {
                limit,
                mode: if self.0.hold {
                    BodyMode::HoldHeaders
                } else {
                    BodyMode::Buffer
                },
                declared: None,
            }),
            None => Outcome::Continue,
        }
    }
}

/// A filter of another type that needs no body and declares none.
struct Other;

impl Filter for Other {
    const NAME: &'static str = "other";
    type Plugin = ();
    const USES: crate::filter::Uses = crate::filter::Uses::HEADERS;

    fn configure(_: &Setup<'_>, _: &[u8]) -> Result<(), ConfigError> {
        Ok(())
    }

    fn new_stream(_: &Rc<()>) -> Self {
        Self
    }

    fn on_request_headers(&mut self, _: &mut Cx<'_>, _: bool) -> Outcome {
        record("other headers".into());
        // Not declared in its USES: a bug the chain must answer with 500, never skip.
        Outcome::Call(callout())
    }
}

static ENTRIES: &[Entry] = &[
    Entry::of::<Probe>(),
    Entry::of::<Other>(),
    Entry::of::<Chain>(),
];

fn worker(env: &FakeEnv, config: serde_json::Value) -> Rc<Worker<Chain>> {
    crate::context::set_bundle_entries(ENTRIES);
    let worker = Rc::new(Worker::default());
    assert!(
        worker.configure(env, "edge".into(), Some(config.to_string().as_bytes())),
        "{config}"
    );
    env.take_calls();
    seen();
    worker
}

fn stream(worker: &Rc<Worker<Chain>>, id: u32) -> Bound<Chain> {
    Bound {
        stream: worker.new_stream(id).unwrap(),
        worker: Rc::clone(worker),
    }
}

fn refused(config: serde_json::Value) -> String {
    crate::context::set_bundle_entries(ENTRIES);
    let env = FakeEnv::default();
    let setup = Setup::new(&env, NAME, "edge".into(), b"");
    match Chain::configure(&setup, config.to_string().as_bytes()) {
        Ok(_) => panic!("accepted: {config}"),
        Err(err) => err.to_string(),
    }
}

fn probe(config: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"filter": "probe", "config": config})
}

#[test]
fn invalid_stages_are_refused_with_their_json_path() {
    use serde_json::json;
    assert_eq!(
        refused(json!({"stages": []})),
        "stages: a chain needs at least one stage"
    );
    assert!(
        refused(json!({"stages": [probe(json!({"tag": "a"})), {"filter": "nope"}]}))
            .starts_with("stages[1].filter: unknown filter \"nope\": one of probe, other"),
    );
    assert!(refused(json!({"stages": [{"filter": "chain"}]}))
        .starts_with("stages[0].filter: \"chain\" cannot be a stage"));
    assert!(refused(json!({"stages": [{"filter": "retry"}]}))
        .starts_with("stages[0].filter: \"retry\" cannot be a stage"));
    assert!(
        refused(json!({"stages": [probe(json!({"tag": "a", "tga": 1}))]}))
            .starts_with("stages[0].config.tga: unknown field")
    );
    assert!(refused(json!({"stages": [probe(json!([]))]})).starts_with("stages[0].config: "));
    assert!(refused(json!({"stages": [{"filter": "probe", "cfg": {}}]}))
        .starts_with("stages[0].cfg: unknown field"));
    assert!(refused(json!({
        "stages": [probe(json!({"tag": "a"})), probe(json!({"tag": "b"}))]
    }))
    .starts_with("stages[1].name: probe appears twice with the plugin name \"edge\""));
}

#[test]
fn a_stage_gets_its_configuration_block_as_written() {
    let env = FakeEnv::default();
    let raw = r#"{"tag":"a","body":123456789012345}"#;
    let config = format!(r#"{{"stages": [{{"filter": "probe", "config": {raw}}}]}}"#);
    crate::context::set_bundle_entries(ENTRIES);
    let setup = Setup::new(&env, NAME, "edge".into(), b"");
    seen();
    let plugin = Chain::configure(&setup, config.as_bytes()).unwrap();
    assert_eq!(plugin.filters(), ["probe"]);
    assert_eq!(seen(), [format!("configured {raw}")]);
    let two = serde_json::json!({"stages": [
        probe(serde_json::json!({"tag": "a"})),
        {"filter": "probe", "name": "second", "config": {"tag": "b"}},
    ]});
    assert!(Chain::configure(&setup, two.to_string().as_bytes()).is_ok());
}

#[test]
fn stages_share_one_view_and_their_edits_are_written_once() {
    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "read": ":path", "set": true})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "read": "x-a", "set": true}},
            {"filter": "probe", "name": "c", "config": {"tag": "c", "read": "x-b"}},
        ]}),
    );
    env.reads.set(0);
    assert_eq!(stream(&w, 1).request_headers(&env, true), Action::Continue);
    assert_eq!(
        seen(),
        [
            "a read :path=Some(\"/p\")",
            "b read x-a=Some(\"a\")",
            "c read x-b=Some(\"b\")"
        ]
    );
    assert_eq!(
        env.reads.get(),
        2,
        "one single read, then the map once an edited header is read"
    );
    assert_eq!(
        env.take_calls(),
        vec![
            Call::WriteHeader(HeaderMap::Request, "x-a".into(), Some("a".into())),
            Call::WriteHeader(HeaderMap::Request, "x-b".into(), Some("b".into())),
        ],
        "written once, after the chain's hook"
    );
}

#[test]
fn a_whole_map_rewrite_after_single_edits_writes_only_what_it_changed() {
    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "set": true})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "rewrite": true}},
            {"filter": "probe", "name": "c", "config": {"tag": "c", "set": true}},
        ]}),
    );
    env.reads.set(0);
    assert_eq!(stream(&w, 1).request_headers(&env, true), Action::Continue);
    assert_eq!(
        env.reads.get(),
        1,
        "the map read once, by the rewriting stage"
    );
    assert_eq!(
        env.take_calls(),
        vec![
            Call::WriteHeader(HeaderMap::Request, "x-a".into(), Some("a".into())),
            Call::WriteHeader(
                HeaderMap::Request,
                "x-b-rewritten".into(),
                Some("yes".into())
            ),
            Call::WriteHeader(HeaderMap::Request, "x-c".into(), Some("c".into())),
        ]
    );
    assert_eq!(
        Host::header(&env, HeaderMap::Request, "x-a").as_deref(),
        Some("a")
    );

    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "rewrite": true})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "read": "x-a-rewritten", "set": true}},
        ]}),
    );
    env.reads.set(0);
    assert_eq!(stream(&w, 1).request_headers(&env, true), Action::Continue);
    assert_eq!(seen().last().unwrap(), "b read x-a-rewritten=Some(\"yes\")");
    assert_eq!(env.reads.get(), 1);
    let calls = env.take_calls();
    assert!(
        matches!(&calls[..], [Call::WriteMap(HeaderMap::Request, map), Call::WriteHeader(_, name, _)]
            if map.iter().any(|(n, _)| n == "x-a-rewritten") && name == "x-b"),
        "{calls:?}"
    );
}

#[test]
fn a_reply_ends_the_chain_and_no_response_hook_runs() {
    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "reply": 401})),
            {"filter": "probe", "name": "b", "config": {"tag": "b"}},
        ]}),
    );
    let s = stream(&w, 1);
    assert_eq!(s.request_headers(&env, true), Action::Pause);
    assert_eq!(env.last_response().unwrap().status, 401);
    s.response_headers(&env, true);
    assert_eq!(seen(), ["a headers"]);
}

#[test]
fn responses_run_the_stages_in_reverse() {
    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a"})),
            {"filter": "probe", "name": "b", "config": {"tag": "b"}},
        ]}),
    );
    let s = stream(&w, 1);
    s.request_headers(&env, true);
    s.response_headers(&env, true);
    assert_eq!(
        seen(),
        ["a headers", "b headers", "b response", "a response"]
    );
}

#[test]
fn body_hooks_run_in_order_after_every_headers_hook_within_each_limit() {
    let env = FakeEnv::with_request("POST", "example.com", "/p");
    let config = |limit: u64| {
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "body": 100, "replace": "0123456789"})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "set": true}},
            {"filter": "probe", "name": "c", "config": {"tag": "c", "body": limit, "replace": "done"}},
        ]})
    };
    let w = worker(&env, config(10));
    let s = stream(&w, 1);
    assert_eq!(
        s.request_headers(&env, false),
        Action::Continue,
        "headers go on, as through separate filters"
    );
    assert_eq!(
        env.take_calls(),
        vec![Call::WriteHeader(
            HeaderMap::Request,
            "x-b".into(),
            Some("b".into())
        )]
    );
    env.set_body(Direction::Request, b"abc");
    assert_eq!(s.request_body(&env, 3, false), Action::Pause, "body held");
    assert_eq!(s.request_body(&env, 3, true), Action::Continue);
    assert_eq!(
        seen(),
        [
            "a headers",
            "b headers",
            "c headers",
            "a body abc",
            "c body 0123456789"
        ]
    );
    assert_eq!(
        env.take_calls(),
        vec![Call::ReplaceBody(Direction::Request, 3, b"done".to_vec())],
        "the final body written once"
    );

    let w = worker(&env, config(9));
    let s = stream(&w, 2);
    s.request_headers(&env, false);
    env.set_body(Direction::Request, b"abc");
    assert_eq!(s.request_body(&env, 3, true), Action::Pause);
    assert_eq!(env.last_response().unwrap().status, 413);
    assert_eq!(
        seen(),
        [
            "a headers",
            "b headers",
            "c headers",
            "a body abc",
            "c too large"
        ]
    );
}

#[test]
fn a_stage_holding_the_headers_runs_its_body_hook_before_later_stages() {
    let env = FakeEnv::with_request("POST", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "body": 10, "hold": true})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "read": "x-a-body", "body": 10}},
        ]}),
    );
    let s = stream(&w, 1);
    assert_eq!(
        s.request_headers(&env, false),
        Action::Pause,
        "headers held"
    );
    env.set_body(Direction::Request, b"abc");
    assert_eq!(s.request_body(&env, 3, true), Action::Continue);
    assert_eq!(
        seen(),
        [
            "a headers",
            "a body abc",
            "b read x-a-body=Some(\"abc\")",
            "b body abc"
        ]
    );
    assert_eq!(
        env.take_calls(),
        vec![Call::WriteHeader(
            HeaderMap::Request,
            "x-a-body".into(),
            Some("abc".into())
        )]
    );
}

#[test]
fn an_undeclared_outcome_of_a_stage_is_a_500() {
    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(&env, serde_json::json!({"stages": [{"filter": "other"}]}));
    assert_eq!(stream(&w, 1).request_headers(&env, true), Action::Pause);
    assert_eq!(env.last_response().unwrap().status, 500);
}

#[test]
fn plugin_calls_come_back_to_the_stage_that_made_them() {
    let env = FakeEnv::with_request("GET", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "tick_key": 5})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "tick_key": 5}},
        ]}),
    );
    w.tick(&env);
    let tokens: Vec<u32> = env.callouts().iter().map(|(_, token)| *token).collect();
    assert_eq!(tokens.len(), 2, "each stage ticked once");
    for token in tokens.iter().rev() {
        w.deliver_http(&env, *token, 0, 0);
    }
    assert_eq!(seen(), ["b plugin answer 5", "a plugin answer 5"]);
}

#[test]
fn a_body_withheld_during_a_stage_callout_reaches_a_later_stage_after_it() {
    let env = FakeEnv::with_request("POST", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "call": true})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "body": 10}},
        ]}),
    );
    let s = stream(&w, 7);
    assert_eq!(s.request_headers(&env, false), Action::Pause);
    env.take_calls();
    w.deliver_http(&env, 1, 0, 0);
    assert_eq!(
        env.take_calls(),
        vec![Call::EffectiveContext(7), Call::Resume(Direction::Request)],
        "Envoy gives a paused header phase's body only once it resumes"
    );
    env.set_body(Direction::Request, b"xyz");
    assert_eq!(s.request_body(&env, 3, true), Action::Continue);
    assert_eq!(seen(), ["a headers", "a answer", "b headers", "b body xyz"]);
}

/// With the plugin's `allow_on_headers_stop_iteration`, Envoy gives the body during the pause.
#[test]
fn a_body_arriving_during_a_stage_callout_reaches_a_later_stage() {
    let env = FakeEnv::with_request("POST", "example.com", "/p");
    let w = worker(
        &env,
        serde_json::json!({"stages": [
            probe(serde_json::json!({"tag": "a", "call": true})),
            {"filter": "probe", "name": "b", "config": {"tag": "b", "body": 10, "replace": "new"}},
        ]}),
    );
    let s = stream(&w, 7);
    assert_eq!(s.request_headers(&env, false), Action::Pause);
    env.set_body(Direction::Request, b"xyz");
    assert_eq!(s.request_body(&env, 3, true), Action::Pause);
    env.take_calls();
    w.deliver_http(&env, 1, 0, 0);
    assert_eq!(seen(), ["a headers", "a answer", "b headers", "b body xyz"]);
    assert_eq!(
        env.take_calls(),
        vec![
            Call::EffectiveContext(7),
            Call::ReplaceBody(Direction::Request, 3, b"new".to_vec()),
            Call::Resume(Direction::Request)
        ]
    );
}
