//! The generic frame: one [`Worker`] per VM and plugin, one [`Stream`] per HTTP stream. It turns
//! the filter's [`Outcome`]s into host calls: header edits written once after each hook, bodies
//! buffered within their limit, replies sent, callouts dispatched and their answers routed back
//! by token, waits woken by the root context's timer.

use crate::env::{Direction, Env};
use crate::filter::{Cx, Filter, RootCx, Setup};
use crate::logging;
use proxy_wasm::types::Action;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasmgate_core::edits::{diff, Edit};
use wasmgate_core::host::{was_lossy, HeaderMap};
use wasmgate_core::outcome::{Answer, Body, BodyMode, BodyNeed, Callout, Outcome, Response};
use wasmgate_core::{HeaderEdits, LocalReply};

/// Where a callout's answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The stream with this context id.
    Stream(u32),
    /// The plugin, with the key it gave the call.
    Plugin(u64),
}

/// What one root context holds: the configured plugin and the streams the root must reach (those
/// waiting for a callout answer or a wake-up).
pub struct Worker<F: Filter> {
    plugin: RefCell<Option<Rc<F::Plugin>>>,
    streams: RefCell<Ids<Weak<RefCell<Stream<F>>>>>,
    /// Callouts in flight: who gets the answer, and the largest answer body read.
    callouts: RefCell<Ids<(Target, usize)>>,
    waits: RefCell<Ids<u64>>,
    next_plugin_tick_ms: Cell<u64>,
    tick: Cell<Duration>,
}

impl<F: Filter> Default for Worker<F> {
    fn default() -> Self {
        Self {
            plugin: RefCell::new(None),
            streams: RefCell::new(Ids::default()),
            callouts: RefCell::new(Ids::default()),
            waits: RefCell::new(Ids::default()),
            next_plugin_tick_ms: Cell::new(0),
            tick: Cell::new(Duration::ZERO),
        }
    }
}

impl<F: Filter> Worker<F> {
    /// Compiles a configuration; on an error logs the one contract line and returns `false`, so
    /// Envoy rejects the configuration and the previous plugin (if any) stays.
    pub fn configure(&self, env: &dyn Env, plugin_name: String, json: Option<&[u8]>) -> bool {
        let json = json.filter(|j| !j.is_empty()).unwrap_or(b"{}");
        let setup = Setup::new(env, F::NAME, plugin_name, json);
        match F::configure(&setup, json) {
            Ok(plugin) => {
                *self.plugin.borrow_mut() = Some(Rc::new(plugin));
                self.next_plugin_tick_ms.set(0);
                self.arm(env);
                true
            }
            Err(err) => {
                log::error!("{}", err.log_line(F::NAME));
                false
            }
        }
    }

    /// The configured plugin.
    pub fn plugin(&self) -> Option<Rc<F::Plugin>> {
        self.plugin.borrow().clone()
    }

    /// A new stream, or `None` before a configuration was accepted (the stream then passes).
    pub fn new_stream(&self, context_id: u32) -> Option<Rc<RefCell<Stream<F>>>> {
        let plugin = self.plugin()?;
        Some(Rc::new(RefCell::new(Stream {
            filter: F::new_stream(&plugin),
            context_id,
            replied: false,
            paused: None,
            request_id: None,
            request: BodyState::default(),
            response: BodyState::default(),
        })))
    }

    /// Routes an HTTP callout's answer, read in its response callback, to whoever called.
    pub fn deliver_http(&self, env: &dyn Env, token: u32, num_headers: usize, body_size: usize) {
        if !F::USES.callouts {
            return;
        }
        let Some((target, limit)) = self.callouts.borrow_mut().remove(token) else {
            return;
        };
        let answer = if body_size > limit {
            Answer::TooLarge {
                size: body_size,
                limit,
            }
        } else {
            env.http_answer(num_headers, body_size)
        };
        self.deliver(env, target, answer);
    }

    /// Routes a gRPC callout's answer to whoever called.
    pub fn deliver_grpc(&self, env: &dyn Env, token: u32, status: u32, size: usize) {
        if !F::USES.callouts {
            return;
        }
        let Some((target, limit)) = self.callouts.borrow_mut().remove(token) else {
            return;
        };
        let answer = if size > limit {
            Answer::TooLarge { size, limit }
        } else {
            env.grpc_answer(status, size)
        };
        self.deliver(env, target, answer);
    }

    fn deliver(&self, env: &dyn Env, target: Target, answer: Answer) {
        match target {
            Target::Stream(id) => {
                if let Some(stream) = self.reach(env, id) {
                    if let Ok(mut stream) = stream.try_borrow_mut() {
                        stream.answer(env, self, answer);
                    };
                }
            }
            Target::Plugin(key) => {
                // Plugin calls start from the plugin's timer, which only waits enable.
                let (true, Some(plugin)) = (F::USES.waits, self.plugin()) else {
                    return;
                };
                let mut cx = RootCx::new(env, self.waits.borrow().len());
                F::on_plugin_answer(&plugin, &mut cx, key, answer);
                self.finish_root(env, cx);
            }
        }
    }

    /// The root context's timer: wakes streams whose wait is over, runs the plugin's tick when
    /// due, then sets the timer to the next thing due.
    pub fn tick(&self, env: &dyn Env) {
        if !F::USES.waits {
            return;
        }
        let now = env.now_ms();
        let due: Vec<u32> = self
            .waits
            .borrow()
            .0
            .iter()
            .filter(|(_, until)| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        self.wake(env, &due);
        if let Some(plugin) = self.plugin() {
            if let Some(period) = F::tick_period(&plugin) {
                if now >= self.next_plugin_tick_ms.get() {
                    self.next_plugin_tick_ms
                        .set(now.saturating_add(millis(period)));
                    let mut cx = RootCx::new(env, self.waits.borrow().len());
                    F::on_tick(&plugin, &mut cx);
                    self.finish_root(env, cx);
                }
            }
        }
        self.arm(env);
    }

    fn finish_root(&self, env: &dyn Env, cx: RootCx<'_>) {
        for (key, callout, limit) in cx.calls {
            match env.dispatch(&callout) {
                Ok(token) => {
                    self.callouts
                        .borrow_mut()
                        .insert(token, (Target::Plugin(key), limit));
                }
                Err(reason) => {
                    log::warn!(
                        "wasmgate {}: callout to cluster {} not sent: {reason}",
                        F::NAME,
                        callout.cluster()
                    );
                    self.deliver(env, Target::Plugin(key), Answer::NotSent(reason));
                }
            }
        }
        if cx.wake {
            let all: Vec<u32> = self.waits.borrow().0.iter().map(|(id, _)| *id).collect();
            self.wake(env, &all);
        }
        self.arm(env);
    }

    fn wake(&self, env: &dyn Env, ids: &[u32]) {
        for id in ids {
            self.waits.borrow_mut().remove(*id);
            let Some(stream) = self.reach(env, *id) else {
                continue;
            };
            if let Ok(mut stream) = stream.try_borrow_mut() {
                stream.wake(env, self);
            };
        }
    }

    /// The stream of context `id`, made the host's current context.
    fn reach(&self, env: &dyn Env, id: u32) -> Option<Rc<RefCell<Stream<F>>>> {
        let stream = self.streams.borrow().get(id).and_then(Weak::upgrade);
        let Some(stream) = stream else {
            self.forget(id);
            return None;
        };
        if let Ok(reached) = stream.try_borrow() {
            logging::set_request_id(reached.request_id.clone());
        }
        env.set_effective_context(id).then_some(stream)
    }

    fn register(&self, stream: &Rc<RefCell<Stream<F>>>, id: u32) {
        if self.streams.borrow().get(id).is_some() {
            return;
        }
        self.streams.borrow_mut().insert(id, Rc::downgrade(stream));
    }

    /// Drops every reference to a finished stream.
    pub fn forget(&self, id: u32) {
        self.streams.borrow_mut().remove(id);
        self.waits.borrow_mut().remove(id);
        self.callouts
            .borrow_mut()
            .0
            .retain(|(_, (target, _))| *target != Target::Stream(id));
    }

    /// Sets the timer to the earliest wait or plugin tick, or stops it.
    fn arm(&self, env: &dyn Env) {
        if !F::USES.waits {
            return;
        }
        let now = env.now_ms();
        let plugin_period = self.plugin().and_then(|plugin| F::tick_period(&plugin));
        let earliest_wait = self.waits.borrow().0.iter().map(|(_, at)| *at).min();
        let until_wait =
            earliest_wait.map(|at| Duration::from_millis(at.saturating_sub(now).max(1)));
        let period = match (plugin_period, until_wait) {
            (Some(p), Some(w)) => p.min(w),
            (Some(p), None) => p,
            (None, Some(w)) => w,
            (None, None) => Duration::ZERO,
        };
        if period != self.tick.get() {
            self.tick.set(period);
            env.set_tick_period(period);
        }
    }
}

/// Values by context id or callout token: a few entries at a time (the streams waiting or
/// calling out on one worker), so a list is smaller in the module than a hash map and as fast.
struct Ids<V>(Vec<(u32, V)>);

impl<V> Default for Ids<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Ids<V> {
    fn get(&self, id: u32) -> Option<&V> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    fn insert(&mut self, id: u32, value: V) {
        self.remove(id);
        self.0.push((id, value));
    }

    fn remove(&mut self, id: u32) -> Option<V> {
        let at = self.0.iter().position(|(i, _)| *i == id)?;
        Some(self.0.swap_remove(at).1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A body being collected for the filter.
#[derive(Debug, Default)]
struct BodyState {
    need: Option<BodyNeed>,
    /// Bytes buffered by the host so far (buffered modes).
    size: usize,
    /// The copy (copy mode).
    copy: Vec<u8>,
    overflow: bool,
    /// The headers of this direction went on before its body (buffer and copy modes): header
    /// edits of a body hook can no longer be written (Envoy refuses them and the SDK aborts the
    /// VM), so the frame drops them with a warning.
    headers_gone: bool,
    /// The whole body is in the host's buffer: the stream ended at its headers, or its last
    /// chunk or trailers arrived while the direction was paused for a callout or a wait.
    ended: bool,
    /// It ended with trailers.
    trailers: bool,
    /// A held body a hook has seen that has not gone on yet (its size): a hook resumed after a
    /// callout or a wait may still replace it.
    held: Option<usize>,
}

/// One HTTP stream: the filter's state and what the frame is doing for it.
pub struct Stream<F: Filter> {
    filter: F,
    context_id: u32,
    /// The stream was answered locally; the hooks see nothing more.
    replied: bool,
    /// A direction paused for a callout or a wait, resumed when the filter continues.
    paused: Option<Direction>,
    /// The request's `x-request-id` as its log lines print it, read with the request headers
    /// (Envoy drops the request header map once they went on).
    request_id: Option<Rc<str>>,
    request: BodyState,
    response: BodyState,
}

/// Where in a direction a hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Headers {
        end_of_stream: bool,
    },
    /// A buffered body of `size` bytes is held: it may be replaced.
    Body {
        size: usize,
    },
    /// A copied body (or none at all) that already went on: it cannot be replaced.
    Passed,
    Resumed,
}

impl<F: Filter> Stream<F> {
    /// The filter's state (for tests).
    pub fn filter(&self) -> &F {
        &self.filter
    }

    fn body_state(&mut self, direction: Direction) -> &mut BodyState {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }
}

/// The frame's entry points for one stream, called by the HTTP context with the real host and
/// by the frame's tests with a fake one.
pub trait StreamOps {
    /// `on_http_request_headers`.
    fn request_headers(&self, env: &dyn Env, end_of_stream: bool) -> Action;
    /// `on_http_request_body`.
    fn request_body(&self, env: &dyn Env, size: usize, end_of_stream: bool) -> Action;
    /// `on_http_request_trailers`.
    fn request_trailers(&self, env: &dyn Env) -> Action;
    /// `on_http_response_headers`.
    fn response_headers(&self, env: &dyn Env, end_of_stream: bool) -> Action;
    /// `on_http_response_body`.
    fn response_body(&self, env: &dyn Env, size: usize, end_of_stream: bool) -> Action;
    /// `on_http_response_trailers`.
    fn response_trailers(&self, env: &dyn Env) -> Action;
    /// `on_log`: the stream is over.
    fn done(&self, env: &dyn Env);
}

/// A stream with the worker it belongs to.
pub struct Bound<F: Filter> {
    /// The stream.
    pub stream: Rc<RefCell<Stream<F>>>,
    /// Its worker.
    pub worker: Rc<Worker<F>>,
}

impl<F: Filter> Bound<F> {
    /// Runs one callback on the stream; a stream left waiting for an answer or a wake-up is
    /// made reachable from the root context (one that only buffers a body needs not be).
    fn with(&self, f: impl FnOnce(&mut Stream<F>, &Worker<F>) -> Action) -> Action {
        let (action, reachable) = match self.stream.try_borrow_mut() {
            Ok(mut stream) => {
                logging::set_request_id(stream.request_id.clone());
                let action = f(&mut stream, &self.worker);
                let reachable = stream.paused.is_some().then_some(stream.context_id);
                (action, reachable)
            }
            Err(_) => (Action::Continue, None),
        };
        if let Some(id) = reachable {
            self.worker.register(&self.stream, id);
        }
        action
    }
}

impl<F: Filter> StreamOps for Bound<F> {
    fn request_headers(&self, env: &dyn Env, end_of_stream: bool) -> Action {
        self.with(|s, w| s.headers(env, w, Direction::Request, end_of_stream))
    }

    fn request_body(&self, env: &dyn Env, size: usize, end_of_stream: bool) -> Action {
        self.with(|s, w| s.body_chunk(env, w, Direction::Request, size, end_of_stream))
    }

    fn request_trailers(&self, env: &dyn Env) -> Action {
        self.with(|s, w| s.trailers(env, w, Direction::Request))
    }

    fn response_headers(&self, env: &dyn Env, end_of_stream: bool) -> Action {
        self.with(|s, w| s.headers(env, w, Direction::Response, end_of_stream))
    }

    fn response_body(&self, env: &dyn Env, size: usize, end_of_stream: bool) -> Action {
        self.with(|s, w| s.body_chunk(env, w, Direction::Response, size, end_of_stream))
    }

    fn response_trailers(&self, env: &dyn Env) -> Action {
        self.with(|s, w| s.trailers(env, w, Direction::Response))
    }

    fn done(&self, env: &dyn Env) {
        if let Ok(mut stream) = self.stream.try_borrow_mut() {
            logging::set_request_id(stream.request_id.clone());
            let mut cx = Cx::new(env);
            stream.filter.on_done(&mut cx);
            self.worker.forget(stream.context_id);
        }
    }
}

impl<F: Filter> Stream<F> {
    fn headers(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        direction: Direction,
        end_of_stream: bool,
    ) -> Action {
        if self.replied {
            return Action::Continue;
        }
        // Reading the id costs a host call per request (about 14,000 instructions): only when
        // debug lines are on. Otherwise a line written in this hook reads it itself.
        self.body_state(direction).ended = end_of_stream;
        logging::set_request_headers_readable(direction == Direction::Request);
        if direction == Direction::Request && log::log_enabled!(log::Level::Debug) {
            let id = env.header(HeaderMap::Request, "x-request-id");
            let field: Rc<str> = logging::request_id_field(id.as_deref().map(str::as_bytes)).into();
            logging::set_request_id(Some(Rc::clone(&field)));
            self.request_id = Some(field);
        }
        let mut cx = Cx::new(env);
        let outcome = match direction {
            Direction::Request => self.filter.on_request_headers(&mut cx, end_of_stream),
            Direction::Response => self.filter.on_response_headers(&mut cx, end_of_stream),
        };
        logging::set_request_headers_readable(false);
        let phase = Phase::Headers { end_of_stream };
        self.carry_out(env, worker, cx, outcome, direction, phase)
    }

    fn answer(&mut self, env: &dyn Env, worker: &Worker<F>, answer: Answer) {
        let Some(direction) = self.paused else {
            return;
        };
        let mut cx = Cx::new(env);
        let outcome = self.filter.on_answer(&mut cx, answer);
        self.carry_out(env, worker, cx, outcome, direction, Phase::Resumed);
    }

    fn wake(&mut self, env: &dyn Env, worker: &Worker<F>) {
        let Some(direction) = self.paused else {
            return;
        };
        let mut cx = Cx::new(env);
        let outcome = self.filter.on_wake(&mut cx);
        self.carry_out(env, worker, cx, outcome, direction, Phase::Resumed);
    }

    fn body_chunk(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        direction: Direction,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.replied || !F::USES.bodies {
            return Action::Continue;
        }
        let paused = self.paused == Some(direction);
        let state = self.body_state(direction);
        let Some(need) = state.need else {
            // The direction waits for a callout or a wake-up: the body stays in the host's
            // buffer, so a hook resumed later may still ask for it (and nothing goes on early).
            if paused {
                state.size = size;
                state.ended = end_of_stream;
                return Action::Pause;
            }
            return Action::Continue;
        };
        let limit = usize::try_from(need.limit).unwrap_or(usize::MAX);
        if need.mode == BodyMode::Copy {
            if !state.overflow && size > 0 {
                if state.copy.len().saturating_add(size) > limit {
                    state.overflow = true;
                    state.copy = Vec::new();
                } else {
                    let chunk = env.body(direction, size);
                    state.copy.extend_from_slice(&chunk);
                }
            }
            if end_of_stream {
                return self.deliver_copy(env, worker, direction, false);
            }
            return Action::Continue;
        }
        if size > limit {
            state.need = None;
            return self.too_large(env, direction, need.limit);
        }
        state.size = size;
        if !end_of_stream {
            return Action::Pause;
        }
        self.deliver_buffered(env, worker, direction, false)
    }

    fn trailers(&mut self, env: &dyn Env, worker: &Worker<F>, direction: Direction) -> Action {
        if self.replied || !F::USES.bodies {
            return Action::Continue;
        }
        let paused = self.paused == Some(direction);
        let state = self.body_state(direction);
        match state.need {
            None if paused => {
                (state.ended, state.trailers) = (true, true);
                Action::Pause
            }
            None => Action::Continue,
            Some(need) if need.mode == BodyMode::Copy => {
                self.deliver_copy(env, worker, direction, true)
            }
            Some(_) => self.deliver_buffered(env, worker, direction, true),
        }
    }

    fn deliver_buffered(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        direction: Direction,
        trailers: bool,
    ) -> Action {
        let state = self.body_state(direction);
        state.need = None;
        let size = state.size;
        state.held = Some(size);
        let body = env.body(direction, size);
        let mut cx = Cx::new(env);
        cx.trailers = trailers;
        let outcome = self.body_hook(&mut cx, direction, Body::Complete(&body));
        self.carry_out(env, worker, cx, outcome, direction, Phase::Body { size })
    }

    /// Delivers a body that arrived whole while the direction was paused, to a hook resumed
    /// after a callout or a wait that asked for it: a held body it may replace, after which the
    /// direction resumes.
    fn deliver_held(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        direction: Direction,
        limit: u64,
    ) -> Action {
        let state = self.body_state(direction);
        let (size, trailers) = (state.size, state.trailers);
        if u64::try_from(size).unwrap_or(u64::MAX) > limit {
            return self.too_large(env, direction, limit);
        }
        state.held = Some(size);
        let body = if size == 0 {
            Vec::new()
        } else {
            env.body(direction, size)
        };
        let mut cx = Cx::new(env);
        cx.trailers = trailers;
        let outcome = self.body_hook(&mut cx, direction, Body::Complete(&body));
        self.carry_out(env, worker, cx, outcome, direction, Phase::Resumed)
    }

    fn deliver_copy(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        direction: Direction,
        trailers: bool,
    ) -> Action {
        let state = self.body_state(direction);
        state.need = None;
        let copy = std::mem::take(&mut state.copy);
        let body = if state.overflow {
            Body::TooLarge
        } else {
            Body::Complete(&copy)
        };
        let mut cx = Cx::new(env);
        cx.trailers = trailers;
        let outcome = self.body_hook(&mut cx, direction, body);
        self.carry_out(env, worker, cx, outcome, direction, Phase::Passed)
    }

    fn body_hook(&mut self, cx: &mut Cx<'_>, direction: Direction, body: Body<'_>) -> Outcome {
        match direction {
            Direction::Request => self.filter.on_request_body(cx, body),
            Direction::Response => self.filter.on_response_body(cx, body),
        }
    }

    fn too_large(&mut self, env: &dyn Env, direction: Direction, limit: u64) -> Action {
        let mut cx = Cx::new(env);
        self.filter.on_body_too_large(&mut cx, direction);
        log::debug!("wasmgate {}: body over its limit ({limit} bytes)", F::NAME);
        let reply = LocalReply::body_too_large(direction == Direction::Request, limit);
        self.reply(env, &reply);
        Action::Pause
    }

    fn reply(&mut self, env: &dyn Env, reply: &LocalReply) {
        self.replied = true;
        self.paused = None;
        send_reply(env, reply);
    }

    fn respond(&mut self, env: &dyn Env, response: &Response) {
        self.replied = true;
        self.paused = None;
        env.respond(response.status, &response.headers, &response.body);
    }

    /// Writes the hook's edits and carries its outcome out; the action for the host.
    fn carry_out(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        cx: Cx<'_>,
        outcome: Outcome,
        direction: Direction,
        phase: Phase,
    ) -> Action {
        let Cx {
            mut request,
            mut response,
            body,
            ..
        } = cx;
        // Once this direction's headers went on (a body buffered or copied after them), no
        // header map can be written from its hooks any more.
        if self.body_state(direction).headers_gone && !(request.is_empty() && response.is_empty()) {
            log::warn!(
                "wasmgate {}: header edits asked for after the headers went on were dropped",
                F::NAME
            );
            request = HeaderEdits::default();
            response = HeaderEdits::default();
        }
        apply(env, HeaderMap::Request, request);
        apply(env, HeaderMap::Response, response);
        let held = self.body_state(direction).held;
        match (body, phase) {
            (Some(body), Phase::Body { size }) => {
                env.replace_body(direction, size, &body);
                self.body_state(direction).held = Some(body.len());
            }
            (Some(body), Phase::Resumed) if held.is_some() => {
                env.replace_body(direction, held.unwrap_or_default(), &body);
                self.body_state(direction).held = Some(body.len());
            }
            (Some(_), _) => log::warn!(
                "wasmgate {}: a body that already went on cannot be replaced",
                F::NAME
            ),
            (None, _) => {}
        }
        let resumed = phase == Phase::Resumed;
        match outcome {
            Outcome::Continue => {
                self.body_state(direction).held = None;
                if resumed {
                    self.paused = None;
                    env.resume(direction);
                }
                Action::Continue
            }
            Outcome::Reply(reply) => {
                self.reply(env, &reply);
                Action::Pause
            }
            Outcome::Respond(response) => {
                self.respond(env, &response);
                Action::Pause
            }
            Outcome::NeedBody(_) if !F::USES.bodies => self.undeclared(env, "NeedBody"),
            Outcome::Call(_) if !F::USES.callouts => self.undeclared(env, "Call"),
            Outcome::Wait { .. } if !F::USES.waits => self.undeclared(env, "Wait"),
            Outcome::NeedBody(need) => self.need_body(env, worker, need, direction, phase),
            Outcome::Call(callout) => self.call(env, worker, callout, direction, phase),
            Outcome::Wait { until_ms } => {
                self.paused = Some(direction);
                worker.waits.borrow_mut().insert(self.context_id, until_ms);
                worker.arm(env);
                Action::Pause
            }
        }
    }

    /// An outcome the filter did not declare in [`Filter::USES`]: a bug, answered with 500
    /// rather than letting the request skip the filter's check.
    fn undeclared(&mut self, env: &dyn Env, outcome: &str) -> Action {
        log::error!(
            "wasmgate {}: outcome {outcome} is not declared in Filter::USES",
            F::NAME
        );
        let reply = LocalReply::new(
            500,
            "internal_error",
            "The filter failed; the request was not forwarded.",
        );
        self.reply(env, &reply);
        Action::Pause
    }

    fn need_body(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        need: BodyNeed,
        direction: Direction,
        phase: Phase,
    ) -> Action {
        match phase {
            Phase::Headers {
                end_of_stream: true,
            } => {
                let mut cx = Cx::new(env);
                let outcome = self.body_hook(&mut cx, direction, Body::Complete(&[]));
                self.carry_out(env, worker, cx, outcome, direction, Phase::Passed)
            }
            Phase::Headers {
                end_of_stream: false,
            } => {
                let held = need.mode != BodyMode::Copy;
                if held && need.declared.is_some_and(|len| len > need.limit) {
                    return self.too_large(env, direction, need.limit);
                }
                let state = self.body_state(direction);
                state.need = Some(need);
                state.headers_gone = need.mode != BodyMode::HoldHeaders;
                if need.mode == BodyMode::HoldHeaders {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            Phase::Resumed => self.need_body_resumed(env, worker, need, direction),
            Phase::Body { .. } | Phase::Passed => {
                log::warn!(
                    "wasmgate {}: a body was asked for after the headers",
                    F::NAME
                );
                Action::Continue
            }
        }
    }

    /// A hook resumed after a callout or a wait asks for this direction's body. Envoy withholds
    /// the body of a paused header phase from the filter (it turns the pause into "stop all
    /// iteration") unless the plugin sets `allow_on_headers_stop_iteration`, which the held
    /// mode requires; with it, chunks that came during the pause are in the host's buffer (see
    /// [`Stream::body_chunk`]). So: a body all there is delivered now; one arriving while held
    /// is collected with the headers still held; a withheld one is collected after resuming,
    /// the headers going on (buffer and copy modes).
    fn need_body_resumed(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        need: BodyNeed,
        direction: Direction,
    ) -> Action {
        if self.body_state(direction).held.is_some() {
            log::warn!(
                "wasmgate {}: a body was asked for after the body hook",
                F::NAME
            );
            self.paused = None;
            env.resume(direction);
            return Action::Continue;
        }
        if self.body_state(direction).ended {
            return self.deliver_held(env, worker, direction, need.limit);
        }
        let held = need.mode != BodyMode::Copy;
        if held && need.declared.is_some_and(|len| len > need.limit) {
            return self.too_large(env, direction, need.limit);
        }
        self.paused = None;
        let state = self.body_state(direction);
        if state.size > 0 || need.mode == BodyMode::HoldHeaders {
            // The direction stays paused; its next body callback carries the collection on,
            // and the last one lets headers and body go on together.
            state.need = Some(BodyNeed {
                mode: BodyMode::HoldHeaders,
                ..need
            });
            return Action::Pause;
        }
        state.need = Some(need);
        state.headers_gone = true;
        env.resume(direction);
        Action::Continue
    }

    fn call(
        &mut self,
        env: &dyn Env,
        worker: &Worker<F>,
        callout: Callout,
        direction: Direction,
        phase: Phase,
    ) -> Action {
        match env.dispatch(&callout) {
            Ok(token) => {
                self.paused = Some(direction);
                worker
                    .callouts
                    .borrow_mut()
                    .insert(token, (Target::Stream(self.context_id), usize::MAX));
                Action::Pause
            }
            Err(reason) => {
                log::warn!(
                    "wasmgate {}: callout to cluster {} not sent: {reason}",
                    F::NAME,
                    callout.cluster()
                );
                let mut cx = Cx::new(env);
                let outcome = self.filter.on_answer(&mut cx, Answer::NotSent(reason));
                self.carry_out(env, worker, cx, outcome, direction, phase)
            }
        }
    }
}

/// Sends a JSON local reply with its headers, `content-type` first.
pub(crate) fn send_reply(env: &dyn Env, reply: &LocalReply) {
    let headers: Vec<(String, String)> = reply
        .all_headers()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    env.respond(reply.status, &headers, &reply.body());
}

/// Writes one map's edits: a whole-map replacement in one host call (or, when a value read was
/// not UTF-8 and so must not be written back, name by name), then the single edits.
fn apply(env: &dyn Env, map: HeaderMap, edits: HeaderEdits) {
    if edits.is_empty() {
        return;
    }
    if let Some((old, new)) = edits.replace {
        let whole = !new.iter().any(|(_, v)| was_lossy(v)) && env.write_map(map, &new);
        if !whole {
            for (name, values) in diff(&old, &new) {
                match values.as_slice() {
                    [one] => env.write_header(map, &name, Some(one)),
                    many => {
                        env.write_header(map, &name, None);
                        for value in many {
                            env.add_header(map, &name, value);
                        }
                    }
                }
            }
        }
    }
    for edit in edits.edits {
        match edit {
            Edit::Set(name, value) => env.write_header(map, &name, Some(&value)),
            Edit::Remove(name) => env.write_header(map, &name, None),
            Edit::Add(name, value) => env.add_header(map, &name, &value),
        }
    }
}

#[cfg(test)]
mod tests;
