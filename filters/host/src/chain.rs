//! The chain: one plugin configuration that runs several filters in order on one request view,
//! in the bundle module (root id `chain`). Each stage takes the same configuration block as the
//! filter on its own; the stages read the headers through one view and their edits are written
//! once per hook (docs/CONVENTIONS.md "Chains").
//!
//! How a stream runs through the stages, per direction (request: in order; response: in
//! reverse, as Envoy runs a filter chain's response side):
//! - each stage's headers hook sees the header edits of the stages before it;
//! - a reply from a stage ends the stream: no later stage and no response hook sees it;
//! - a callout or a wait pauses the chain at its stage, which resumes it with its answer;
//! - a stage asking for the body as Envoy runs separate filters: with the headers held (its
//!   `hold_headers` option), later stages run once its body hook has; otherwise the later
//!   headers hooks run first, the headers go on, and the body hooks run in order once the whole
//!   body is there, held until the last one passed it. Each stage's own limit applies; later
//!   stages see the body as the earlier ones left it.

pub mod stage;
pub mod view;

use crate::context::{bundle_entries, Entry};
use crate::env::Direction;
use crate::filter::{Cx, Filter, RootCx, Setup};
use serde::Deserialize;
use serde_json::value::RawValue;
use stage::{StagePlugin, StageStream};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use view::{Overlay, Views};
use wasmgate_core::outcome::{Answer, Body, BodyMode, BodyNeed, Outcome};
use wasmgate_core::{ConfigError, LocalReply};

/// The chain's root id in the bundle module, and its name in log lines and shared data.
pub const NAME: &str = "chain";

/// Filters that cannot be a stage, and why.
const NOT_A_STAGE: &[(&str, &str)] = &[
    (
        NAME,
        "a chain cannot hold a chain: list its stages in this one",
    ),
    (
        "retry",
        "retry replays the request and must sit next to the router: configure it as its own filter after the chain",
    ),
];

/// The configuration as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    stages: Vec<RawStage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    /// The filter, by its root id in the bundle (`jwt-auth`).
    filter: String,
    /// The plugin name the stage's metrics and shared data carry (default: the chain's own
    /// plugin name); needed when one filter appears twice.
    #[serde(default)]
    name: Option<String>,
    /// The filter's own configuration block (default `{}`).
    #[serde(default)]
    config: Option<Box<RawValue>>,
}

/// One configured stage.
struct StageSlot {
    filter: &'static str,
    plugin: Box<dyn StagePlugin>,
    period: Option<Duration>,
    next_tick_ms: Cell<u64>,
}

/// A configured chain: its stages in order, and the plugin calls in flight.
pub struct ChainPlugin {
    stages: Vec<StageSlot>,
    /// Plugin calls by the chain's key: the stage that made it and the key it gave.
    calls: RefCell<Vec<(u64, usize, u64)>>,
    next_key: Cell<u64>,
}

impl ChainPlugin {
    /// The filters of the stages, in order.
    pub fn filters(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.filter).collect()
    }
}

/// Compiles a chain configuration whose stages are filters of `entries`.
pub fn configure(
    setup: &Setup<'_>,
    json: &[u8],
    entries: &[Entry],
) -> Result<ChainPlugin, ConfigError> {
    let raw: RawChain = wasmgate_core::config::parse(json)?;
    if raw.stages.is_empty() {
        return Err(ConfigError::new(
            "stages",
            "a chain needs at least one stage",
        ));
    }
    let mut stages: Vec<StageSlot> = Vec::with_capacity(raw.stages.len());
    let mut names: Vec<(&'static str, String)> = Vec::new();
    for (index, stage) in raw.stages.iter().enumerate() {
        let at = |field: &str| format!("stages[{index}].{field}");
        let entry =
            stage_entry(entries, &stage.filter).map_err(|e| ConfigError::new(at("filter"), e))?;
        let plugin_name = stage.name.clone().unwrap_or_else(|| setup.plugin.clone());
        if names.contains(&(entry.root_id(), plugin_name.clone())) {
            return Err(ConfigError::new(
                at("name"),
                format!(
                    "{} appears twice with the plugin name {plugin_name:?}: give each a distinct name, so their metrics and shared data stay apart",
                    entry.root_id()
                ),
            ));
        }
        names.push((entry.root_id(), plugin_name.clone()));
        let config = stage.config.as_ref().map_or("{}", |c| c.get());
        let stage_setup = Setup::new(setup.env, entry.root_id(), plugin_name, config.as_bytes());
        let plugin = entry
            .configure_stage(&stage_setup, config.as_bytes())
            .map_err(|err| {
                let path = if err.path == "$" {
                    at("config")
                } else {
                    format!("{}.{}", at("config"), err.path)
                };
                ConfigError::new(path, err.reason)
            })?;
        stages.push(StageSlot {
            filter: entry.root_id(),
            period: plugin.tick_period(),
            plugin,
            next_tick_ms: Cell::new(0),
        });
    }
    Ok(ChainPlugin {
        stages,
        calls: RefCell::new(Vec::new()),
        next_key: Cell::new(1),
    })
}

/// The entry of a stage's filter, or why it cannot be one.
fn stage_entry<'e>(entries: &'e [Entry], filter: &str) -> Result<&'e Entry, String> {
    if let Some((_, why)) = NOT_A_STAGE.iter().find(|(name, _)| *name == filter) {
        return Err(format!("{filter:?} cannot be a stage: {why}"));
    }
    entries
        .iter()
        .find(|entry| entry.root_id() == filter)
        .ok_or_else(|| {
            let valid: Vec<&str> = entries
                .iter()
                .map(Entry::root_id)
                .filter(|id| !NOT_A_STAGE.iter().any(|(name, _)| name == id))
                .collect();
            format!("unknown filter {filter:?}: one of {}", valid.join(", "))
        })
}

/// What the running hook of a direction is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Step {
    /// The headers hook of the stage at the pass's position.
    #[default]
    Headers,
    /// The body hook of the stage at the pass's position, which holds the headers.
    Held,
    /// The body hook of a stage whose body need was deferred, at this position.
    Deferred(usize),
}

/// Where one direction of a chain stream is.
#[derive(Debug, Default)]
struct Pass {
    /// Position of the stage whose headers hook runs (or ran last), in this direction's order.
    at: usize,
    step: Step,
    /// The stream ends at this direction's headers.
    end_of_stream: bool,
    /// The body, once the frame delivered it, as the stages so far left it.
    body: Option<Vec<u8>>,
    /// It ended with trailers.
    trailers: bool,
    /// Stages that asked for the body letting the headers go on (buffer and copy modes): their
    /// body hooks run, in order, once every headers hook has run and the body is there.
    deferred: VecDeque<(usize, BodyNeed)>,
    /// The limit of the body asked of the frame, while it collects it.
    asked: Option<u64>,
    /// The pass waits for a callout's answer or a wake-up.
    waiting: bool,
}

/// A chain's stream: each stage's state, where each direction is, and the header view.
pub struct Chain {
    stages: Vec<Box<dyn StageStream>>,
    request: Pass,
    response: Pass,
    views: RefCell<Views>,
    /// The time of the running hook, read once for every stage.
    now: Cell<Option<SystemTime>>,
}

impl Chain {
    fn pass(&mut self, direction: Direction) -> &mut Pass {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// The stage at position `at` of `direction`'s order.
    fn index(&self, direction: Direction, at: usize) -> usize {
        match direction {
            Direction::Request => at,
            Direction::Response => self.stages.len().saturating_sub(at + 1),
        }
    }

    /// The position of the stage the running hook belongs to.
    fn running(&mut self, direction: Direction) -> usize {
        let pass = self.pass(direction);
        match pass.step {
            Step::Deferred(at) => at,
            Step::Headers | Step::Held => pass.at,
        }
    }

    /// Runs one hook of the stage at position `at` through the view, then takes its header
    /// edits and body into the chain's `cx`.
    fn run(
        &mut self,
        cx: &mut Cx<'_>,
        direction: Direction,
        at: usize,
        hook: impl FnOnce(&mut dyn StageStream, &mut Cx<'_>) -> Outcome,
    ) -> Outcome {
        let index = self.index(direction, at);
        let trailers = self.pass(direction).trailers;
        let Some(stage) = self.stages.get_mut(index) else {
            return Outcome::Continue;
        };
        let overlay = Overlay {
            env: cx.env,
            views: &self.views,
            now: &self.now,
        };
        let mut stage_cx = Cx::new(&overlay);
        stage_cx.trailers = trailers;
        let outcome = hook(stage.as_mut(), &mut stage_cx);
        let Cx {
            request,
            response,
            body,
            ..
        } = stage_cx;
        let mut views = self.views.borrow_mut();
        views.request.merge(&mut cx.request, request);
        views.response.merge(&mut cx.response, response);
        drop(views);
        if let Some(body) = body {
            cx.replace_body(body.clone());
            self.pass(direction).body = Some(body);
        }
        outcome
    }

    /// Starts a direction: the headers hooks of its stages, in order.
    fn start(&mut self, cx: &mut Cx<'_>, direction: Direction, end_of_stream: bool) -> Outcome {
        *self.pass(direction) = Pass {
            end_of_stream,
            body: end_of_stream.then(Vec::new),
            ..Pass::default()
        };
        self.headers_from_here(cx, direction)
    }

    /// The headers hook of the stage at the pass's position, and on; after the last one, the
    /// deferred body hooks.
    fn headers_from_here(&mut self, cx: &mut Cx<'_>, direction: Direction) -> Outcome {
        let pass = self.pass(direction);
        pass.step = Step::Headers;
        let (at, end_of_stream) = (pass.at, pass.end_of_stream);
        if at >= self.stages.len() {
            return self.deferred_from_here(cx, direction);
        }
        let outcome = self.run(cx, direction, at, |stage, cx| {
            stage.headers(cx, direction, end_of_stream)
        });
        self.advance(cx, direction, outcome)
    }

    /// Carries the running hook's outcome on: the next hook, the body, or back to the frame.
    fn advance(&mut self, cx: &mut Cx<'_>, direction: Direction, outcome: Outcome) -> Outcome {
        let pass = self.pass(direction);
        match (outcome, pass.step) {
            (Outcome::Continue, Step::Headers | Step::Held) => {
                pass.at += 1;
                self.headers_from_here(cx, direction)
            }
            (Outcome::Continue, Step::Deferred(_)) => self.deferred_from_here(cx, direction),
            (Outcome::NeedBody(need), Step::Headers) => self.need_body(cx, direction, need),
            (Outcome::NeedBody(_), _) => {
                log::warn!("wasmgate {NAME}: a body was asked for after the body hook");
                self.advance(cx, direction, Outcome::Continue)
            }
            (outcome @ (Outcome::Call(_) | Outcome::Wait { .. }), _) => {
                pass.waiting = true;
                outcome
            }
            (outcome @ (Outcome::Reply(_) | Outcome::Respond(_)), _) => outcome,
        }
    }

    /// The stage at the pass's position asked for the body in its headers hook. A held body
    /// (the headers wait for it) stops the pass until it is there; otherwise, as Envoy runs
    /// separate filters, the later headers hooks run first and the body hook once the body is
    /// there.
    fn need_body(&mut self, cx: &mut Cx<'_>, direction: Direction, need: BodyNeed) -> Outcome {
        let pass = self.pass(direction);
        let at = pass.at;
        if need.mode != BodyMode::HoldHeaders {
            pass.deferred.push_back((at, need));
            pass.at += 1;
            return self.headers_from_here(cx, direction);
        }
        pass.step = Step::Held;
        if pass.body.is_some() {
            return self.body_hook(cx, direction, at, need);
        }
        pass.asked = Some(need.limit);
        Outcome::NeedBody(need)
    }

    /// The deferred body hooks, in order, once the body is there (asked of the frame if not).
    fn deferred_from_here(&mut self, cx: &mut Cx<'_>, direction: Direction) -> Outcome {
        let pass = self.pass(direction);
        if pass.deferred.is_empty() {
            return Outcome::Continue;
        }
        if pass.body.is_none() {
            let limit = pass.deferred.iter().map(|(_, need)| need.limit).max();
            let declared = pass.deferred.iter().find_map(|(_, need)| need.declared);
            let limit = limit.unwrap_or_default();
            pass.asked = Some(limit);
            return Outcome::NeedBody(BodyNeed {
                limit,
                mode: BodyMode::Buffer,
                declared,
            });
        }
        let Some((at, need)) = pass.deferred.pop_front() else {
            return Outcome::Continue;
        };
        pass.step = Step::Deferred(at);
        self.body_hook(cx, direction, at, need)
    }

    /// The body hook of the stage at `at`, within its own limit.
    fn body_hook(
        &mut self,
        cx: &mut Cx<'_>,
        direction: Direction,
        at: usize,
        need: BodyNeed,
    ) -> Outcome {
        let body = self.pass(direction).body.take().unwrap_or_default();
        let over = u64::try_from(body.len()).unwrap_or(u64::MAX) > need.limit;
        if over && need.mode != BodyMode::Copy {
            self.pass(direction).body = Some(body);
            return self.too_large(cx, direction, need.limit);
        }
        let outcome = self.run(cx, direction, at, |stage, cx| {
            let given = if over {
                Body::TooLarge
            } else {
                Body::Complete(&body)
            };
            stage.body(cx, direction, given)
        });
        let pass = self.pass(direction);
        if pass.body.is_none() {
            pass.body = Some(body);
        }
        self.advance(cx, direction, outcome)
    }

    /// A body over the running stage's limit: the frame's own answer to one.
    fn too_large(&mut self, cx: &mut Cx<'_>, direction: Direction, limit: u64) -> Outcome {
        let at = self.running(direction);
        self.run(cx, direction, at, |stage, cx| {
            stage.body_too_large(cx, direction);
            Outcome::Continue
        });
        Outcome::Reply(LocalReply::body_too_large(
            direction == Direction::Request,
            limit,
        ))
    }

    /// The frame delivered the body the chain asked for.
    fn body(&mut self, cx: &mut Cx<'_>, direction: Direction, body: Body<'_>) -> Outcome {
        let trailers = cx.body_ended_with_trailers();
        let pass = self.pass(direction);
        let Some(limit) = pass.asked.take() else {
            return Outcome::Continue;
        };
        let Body::Complete(bytes) = body else {
            return self.too_large(cx, direction, limit);
        };
        pass.trailers = trailers;
        pass.body = Some(bytes.to_vec());
        if pass.step == Step::Held {
            let at = pass.at;
            let need = BodyNeed {
                limit,
                mode: BodyMode::HoldHeaders,
                declared: None,
            };
            return self.body_hook(cx, direction, at, need);
        }
        self.deferred_from_here(cx, direction)
    }

    /// The direction that waits for an answer or a wake-up.
    fn waiting(&mut self) -> Option<Direction> {
        [Direction::Request, Direction::Response]
            .into_iter()
            .find(|direction| self.pass(*direction).waiting)
    }

    /// Resumes the stage that waits with `hook` (its answer or wake-up), then carries on.
    fn resume(
        &mut self,
        cx: &mut Cx<'_>,
        hook: impl FnOnce(&mut dyn StageStream, &mut Cx<'_>) -> Outcome,
    ) -> Outcome {
        let Some(direction) = self.waiting() else {
            return Outcome::Continue;
        };
        self.pass(direction).waiting = false;
        self.settle();
        let at = self.running(direction);
        let outcome = self.run(cx, direction, at, hook);
        self.advance(cx, direction, outcome)
    }

    /// The frame wrote the edits of the last hook: the views match the host again, and the
    /// clock moved on.
    fn settle(&self) {
        self.now.set(None);
        let mut views = self.views.borrow_mut();
        views.request.settle();
        views.response.settle();
    }
}

impl Filter for Chain {
    const NAME: &'static str = NAME;
    type Plugin = ChainPlugin;

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<ChainPlugin, ConfigError> {
        configure(setup, json, bundle_entries())
    }

    fn new_stream(plugin: &Rc<ChainPlugin>) -> Self {
        Self {
            stages: plugin
                .stages
                .iter()
                .map(|s| s.plugin.new_stream())
                .collect(),
            request: Pass::default(),
            response: Pass::default(),
            views: RefCell::new(Views::default()),
            now: Cell::new(None),
        }
    }

    /// Fails closed: a chain usually holds an authentication stage.
    fn unconfigured() -> Option<LocalReply> {
        Some(LocalReply::new(
            503,
            "not_configured",
            "The filter chain has no valid configuration.",
        ))
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, end_of_stream: bool) -> Outcome {
        self.now.set(None);
        self.start(cx, Direction::Request, end_of_stream)
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        self.settle();
        self.body(cx, Direction::Request, body)
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, end_of_stream: bool) -> Outcome {
        self.settle();
        self.start(cx, Direction::Response, end_of_stream)
    }

    fn on_response_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        self.settle();
        self.body(cx, Direction::Response, body)
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        self.resume(cx, |stage, cx| stage.answer(cx, answer))
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        self.resume(cx, |stage, cx| stage.wake(cx))
    }

    fn on_body_too_large(&mut self, cx: &mut Cx<'_>, direction: Direction) {
        self.pass(direction).asked = None;
        let at = self.running(direction);
        self.run(cx, direction, at, |stage, cx| {
            stage.body_too_large(cx, direction);
            Outcome::Continue
        });
    }

    fn on_done(&mut self, cx: &mut Cx<'_>) {
        for stage in &mut self.stages {
            stage.done(cx);
        }
    }

    fn tick_period(plugin: &ChainPlugin) -> Option<Duration> {
        plugin.stages.iter().filter_map(|s| s.period).min()
    }

    fn on_tick(plugin: &Rc<ChainPlugin>, cx: &mut RootCx<'_>) {
        let now = cx.host().now_ms();
        for (index, slot) in plugin.stages.iter().enumerate() {
            let Some(period) = slot.period else {
                continue;
            };
            if now < slot.next_tick_ms.get() {
                continue;
            }
            let millis = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
            slot.next_tick_ms.set(now.saturating_add(millis));
            plugin.for_stage(cx, index, |stage, cx| stage.on_tick(cx));
        }
    }

    fn on_plugin_answer(plugin: &Rc<ChainPlugin>, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        let found = {
            let mut calls = plugin.calls.borrow_mut();
            let at = calls.iter().position(|(k, _, _)| *k == key);
            at.map(|at| calls.swap_remove(at))
        };
        if let Some((_, index, stage_key)) = found {
            plugin.for_stage(cx, index, |stage, cx| {
                stage.on_plugin_answer(cx, stage_key, answer);
            });
        }
    }
}

impl ChainPlugin {
    /// Runs a plugin-level hook of one stage, its calls keyed so their answers come back to it.
    fn for_stage(
        &self,
        cx: &mut RootCx<'_>,
        index: usize,
        hook: impl FnOnce(&dyn StagePlugin, &mut RootCx<'_>),
    ) {
        let Some(slot) = self.stages.get(index) else {
            return;
        };
        let mut stage_cx = RootCx::new(cx.env, cx.waiting());
        hook(slot.plugin.as_ref(), &mut stage_cx);
        for (stage_key, callout, limit) in stage_cx.calls {
            let key = self.next_key.get();
            self.next_key.set(key.wrapping_add(1));
            self.calls.borrow_mut().push((key, index, stage_key));
            cx.call(key, callout, limit);
        }
        if stage_cx.wake {
            cx.wake_waiting();
        }
    }
}

#[cfg(test)]
mod tests;
