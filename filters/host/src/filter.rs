//! The [`Filter`] trait: what a filter declares and decides. The frame ([`crate::frame`]) owns
//! the contexts, buffering, callouts, waits, replies and header writes.

use crate::env::{Direction, Env};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::Host;
use wasmgate_core::metrics::metric_name;
use wasmgate_core::outcome::{Answer, Body, Callout, Outcome};
use wasmgate_core::path::PathVerdict;
use wasmgate_core::shared::Namespace;
use wasmgate_core::{ConfigError, HeaderEdits, LocalReply, Policies, RequestInfo, Selected};

/// A counter (see [`wasmgate_core::metrics`] for its name and labels), defined at configure
/// time; a no-op when the host refused to define it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter(Option<u32>);

/// A gauge (a value that goes up and down, such as an age); a no-op when the host refused to
/// define it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge(Option<u32>);

/// One metric's counters by the value of one label (a reject reason, a secret id): a short
/// list, which costs a module less than a map.
#[derive(Debug, Clone, Default)]
pub struct CounterSet(Vec<(String, Counter)>);

impl CounterSet {
    /// Defines `what` once per key, labelled `label=<key>` (and with the plugin's label).
    pub fn define<K: Into<String>>(
        setup: &Setup<'_>,
        what: &str,
        label: &str,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        Self(
            keys.into_iter()
                .map(|key| {
                    let key = key.into();
                    let counter = setup.counter_with(what, &[(label, &key)]);
                    (key, counter)
                })
                .collect(),
        )
    }

    /// The counter of `key`; a no-op counter for an unknown key.
    pub fn get(&self, key: &str) -> Counter {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Counter::default(), |(_, counter)| *counter)
    }
}

/// What names a plugin's metrics (filter and plugin), kept by a filter that defines counters
/// while requests are handled ([`Cx::define_counter`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricNames {
    filter: &'static str,
    plugin: String,
}

impl MetricNames {
    /// The stat name of `what` with `labels` (and the plugin's label).
    pub fn name(&self, what: &str, labels: &[(&str, &str)]) -> String {
        metric_name(self.filter, what, &self.plugin, labels)
    }
}

/// What `configure` may use: the host, the plugin's name, metric definitions and shared-data
/// namespaces.
pub struct Setup<'a> {
    pub(crate) env: &'a dyn Env,
    filter: &'static str,
    pub(crate) plugin: String,
    configuration: &'a [u8],
}

impl<'a> Setup<'a> {
    /// A setup for `filter`'s plugin `plugin` configured with `configuration`.
    pub fn new(
        env: &'a dyn Env,
        filter: &'static str,
        plugin: String,
        configuration: &'a [u8],
    ) -> Self {
        Self {
            env,
            filter,
            plugin,
            configuration,
        }
    }

    /// Defines the counter `wasmgate_<filter>_<what>` labelled with the plugin's name.
    pub fn counter(&self, what: &str) -> Counter {
        self.counter_with(what, &[])
    }

    /// Defines the counter `wasmgate_<filter>_<what>` with `labels` besides the plugin's
    /// (keys from [`wasmgate_core::metrics::LABELS`], values from the configuration only).
    pub fn counter_with(&self, what: &str, labels: &[(&str, &str)]) -> Counter {
        Counter(
            self.env
                .define_metric(&self.metric_names().name(what, labels)),
        )
    }

    /// Defines the gauge `wasmgate_<filter>_<what>` labelled with the plugin's name.
    pub fn gauge(&self, what: &str) -> Gauge {
        self.gauge_with(what, &[])
    }

    /// Defines the gauge `wasmgate_<filter>_<what>` with `labels` besides the plugin's.
    pub fn gauge_with(&self, what: &str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(
            self.env
                .define_gauge(&self.metric_names().name(what, labels)),
        )
    }

    /// What names this plugin's metrics, for counters defined while requests are handled.
    pub fn metric_names(&self) -> MetricNames {
        MetricNames {
            filter: self.filter,
            plugin: self.plugin.clone(),
        }
    }

    /// Shared-data keys that outlive configuration changes of this plugin.
    pub fn plugin_namespace(&self) -> Namespace {
        Namespace::plugin(self.filter, &self.plugin)
    }

    /// Shared-data keys of this configuration only.
    pub fn configuration_namespace(&self) -> Namespace {
        Namespace::configuration(self.filter, &self.plugin, self.configuration)
    }

    /// The host, for configuration that reads shared data.
    pub fn host(&self) -> &dyn Host {
        self.env
    }
}

/// A stream's view of the host during one hook, and the header edits and body replacement the
/// hook asks for. The frame writes them once the hook has returned.
pub struct Cx<'a> {
    pub(crate) env: &'a dyn Env,
    /// Edits to the request headers.
    pub request: HeaderEdits,
    /// Edits to the response headers.
    pub response: HeaderEdits,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) trailers: bool,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(env: &'a dyn Env) -> Self {
        Self {
            env,
            request: HeaderEdits::default(),
            response: HeaderEdits::default(),
            body: None,
            trailers: false,
        }
    }

    /// True in a body hook when the body ended with trailers: only then are there trailers to
    /// read (`host().headers(HeaderMap::RequestTrailers)`).
    pub fn body_ended_with_trailers(&self) -> bool {
        self.trailers
    }

    /// What the hook may read: headers, properties, shared data, the clock.
    pub fn host(&self) -> &dyn Host {
        self.env
    }

    /// Adds one to a counter.
    pub fn count(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds `n` to a counter; zero makes no host call (Envoy refuses it, and each call costs).
    pub fn add(&self, counter: Counter, n: i64) {
        if let (Some(id), true) = (counter.0, n != 0) {
            self.env.increment_metric(id, n);
        }
    }

    /// Defines a counter while a request is handled, for counters labelled with something
    /// configured that may be too numerous to define up front (one per client of 100,000); the
    /// caller keeps the counter so each is defined once per plugin.
    pub fn define_counter(
        &self,
        names: &MetricNames,
        what: &str,
        labels: &[(&str, &str)],
    ) -> Counter {
        Counter(self.env.define_metric(&names.name(what, labels)))
    }

    /// Defines a gauge while a request is handled (see [`Cx::define_counter`]).
    pub fn define_gauge(&self, names: &MetricNames, what: &str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.env.define_gauge(&names.name(what, labels)))
    }

    /// Sets a gauge.
    pub fn record(&self, gauge: Gauge, value: u64) {
        if let Some(id) = gauge.0 {
            self.env.record_metric(id, value);
        }
    }

    /// Replaces the body the body hook was given.
    pub fn replace_body(&mut self, body: Vec<u8>) {
        self.body = Some(body);
    }

    /// The edits of one direction's headers.
    pub fn edits(&mut self, direction: Direction) -> &mut HeaderEdits {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }
}

/// The plugin-level view during a tick or a plugin callout answer: calls to make and whether to
/// wake the waiting streams.
pub struct RootCx<'a> {
    pub(crate) env: &'a dyn Env,
    waiting: usize,
    pub(crate) calls: Vec<(u64, Callout, usize)>,
    pub(crate) wake: bool,
}

impl<'a> RootCx<'a> {
    pub(crate) fn new(env: &'a dyn Env, waiting: usize) -> Self {
        Self {
            env,
            waiting,
            calls: Vec::new(),
            wake: false,
        }
    }

    /// How many streams wait (see [`Outcome::Wait`]).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// What the plugin may read: shared data, properties, the clock.
    pub fn host(&self) -> &dyn Host {
        self.env
    }

    /// Adds `n` to a counter.
    pub fn add(&self, counter: Counter, n: i64) {
        if let (Some(id), true) = (counter.0, n != 0) {
            self.env.increment_metric(id, n);
        }
    }

    /// Sets a gauge.
    pub fn record(&self, gauge: Gauge, value: u64) {
        if let Some(id) = gauge.0 {
            self.env.record_metric(id, value);
        }
    }

    /// Sends a callout; its answer comes to [`Filter::on_plugin_answer`] with `key`. An answer
    /// body over `max_body` bytes is never read into the VM ([`Answer::TooLarge`]).
    pub fn call(&mut self, key: u64, callout: Callout, max_body: usize) {
        self.calls.push((key, callout, max_body));
    }

    /// Runs the wake hook of every waiting stream once this tick or answer is handled.
    pub fn wake_waiting(&mut self) {
        self.wake = true;
    }
}

/// The frame features a filter's hooks use. What a filter leaves out is compiled out of its
/// module (every worker of every sidecar downloads and compiles each module); an outcome it did
/// not declare is answered with a 500 reply, never skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uses {
    /// [`Outcome::NeedBody`] and the body hooks.
    pub bodies: bool,
    /// [`Outcome::Call`], [`RootCx::call`] and the answer hooks.
    pub callouts: bool,
    /// [`Outcome::Wait`], the plugin's timer and the calls it makes ([`RootCx::call`]).
    pub waits: bool,
}

impl Uses {
    /// Every feature.
    pub const ALL: Self = Self {
        bodies: true,
        callouts: true,
        waits: true,
    };
    /// Bodies, no callout, no wait (filters that read or edit bodies).
    pub const BODIES: Self = Self {
        bodies: true,
        callouts: false,
        waits: false,
    };
    /// Headers only: no body, no callout, no wait.
    pub const HEADERS: Self = Self {
        bodies: false,
        callouts: false,
        waits: false,
    };
}

/// A filter: its name, what one configuration compiles to, and its hooks. Each hook returns an
/// [`Outcome`] that the frame carries out; the defaults let everything pass.
pub trait Filter: Sized + 'static {
    /// The filter's name (`"rate-limit"`): metric names, log prefix, shared-data namespace.
    const NAME: &'static str;
    /// What one configuration builds once per VM: compiled config, counters, caches.
    type Plugin: 'static;
    /// The frame features the hooks use.
    const USES: Uses = Uses::ALL;

    /// Parses and compiles a configuration (`{}` when Envoy gives none); the error names the
    /// JSON path and Envoy rejects the configuration.
    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Self::Plugin, ConfigError>;

    /// The state of one new stream.
    fn new_stream(plugin: &Rc<Self::Plugin>) -> Self;

    /// The answer to requests that arrive while no configuration was accepted: `None` lets them
    /// pass; an authentication filter fails closed with a reply.
    fn unconfigured() -> Option<LocalReply> {
        None
    }

    /// The request headers arrived.
    fn on_request_headers(&mut self, _cx: &mut Cx<'_>, _end_of_stream: bool) -> Outcome {
        Outcome::Continue
    }

    /// The request body asked for with [`Outcome::NeedBody`].
    fn on_request_body(&mut self, _cx: &mut Cx<'_>, _body: Body<'_>) -> Outcome {
        Outcome::Continue
    }

    /// The response headers arrived (never for the filter's own replies).
    fn on_response_headers(&mut self, _cx: &mut Cx<'_>, _end_of_stream: bool) -> Outcome {
        Outcome::Continue
    }

    /// The response body asked for with [`Outcome::NeedBody`].
    fn on_response_body(&mut self, _cx: &mut Cx<'_>, _body: Body<'_>) -> Outcome {
        Outcome::Continue
    }

    /// The answer to the stream's [`Outcome::Call`].
    fn on_answer(&mut self, _cx: &mut Cx<'_>, _answer: Answer) -> Outcome {
        Outcome::Continue
    }

    /// The stream's [`Outcome::Wait`] is over, or the plugin woke the waiting streams.
    fn on_wake(&mut self, _cx: &mut Cx<'_>) -> Outcome {
        Outcome::Continue
    }

    /// A buffered body went over its limit; the frame answers 413 (request) or 502 (response).
    fn on_body_too_large(&mut self, _cx: &mut Cx<'_>, _direction: Direction) {}

    /// The stream ended (answered, reset or timed out).
    fn on_done(&mut self, _cx: &mut Cx<'_>) {}

    /// How often the plugin's [`Filter::on_tick`] runs; `None`: never.
    fn tick_period(_plugin: &Self::Plugin) -> Option<Duration> {
        None
    }

    /// Plugin-level periodic work (key fetches).
    fn on_tick(_plugin: &Rc<Self::Plugin>, _cx: &mut RootCx<'_>) {}

    /// The answer to a call the plugin made with [`RootCx::call`].
    fn on_plugin_answer(
        _plugin: &Rc<Self::Plugin>,
        _cx: &mut RootCx<'_>,
        _key: u64,
        _answer: Answer,
    ) {
    }
}

/// Selects the policy of a request after checking its path, the same way in every filter: a
/// path that is not in normal form is refused with 400 `invalid_path` or rewritten to its normal
/// form (`paths` options, see [`wasmgate_core::path`]), so the path a rule matched is the path
/// the upstream receives. A rewrite is queued on `cx.request` and written into `info.headers`,
/// for filters that pass the headers on.
pub fn select<'p, P>(
    cx: &mut Cx<'_>,
    policies: &'p Policies<P>,
    info: &mut RequestInfo,
) -> Result<Selected<'p, P>, Outcome> {
    match policies.path_verdict(info) {
        PathVerdict::Keep => {}
        PathVerdict::Rewrite(path) => {
            if let Some((_, value)) = info.headers.iter_mut().find(|(n, _)| n == ":path") {
                value.clone_from(&path);
            }
            cx.request.set(":path", path);
        }
        PathVerdict::Refuse(message) => {
            return Err(Outcome::Reply(LocalReply::new(
                400,
                "invalid_path",
                message,
            )));
        }
    }
    Ok(policies.select(info))
}
