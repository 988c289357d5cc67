//! The retry filter on the wasmgate frame. Router mode sets the `x-envoy-*` retry headers and
//! charges the budget with the retries the router made; filter mode sends each request's first
//! attempt through the router and its retries back through the route table (the loopback
//! cluster) as callouts, waiting between them, and answers with the last one. The decisions live
//! in [`crate::policy`], [`crate::attempt`], [`crate::budget`] and [`crate::breaker`].

use crate::attempt::{self, Attempt, Job, Replay};
use crate::breaker::{self, Admission, Transition};
use crate::budget;
use crate::config::{self, Config, Mode, Policy, Scope, ATTEMPT_COUNT, ATTEMPT_MARKER, FILTER};
use crate::policy::{self, Jitter};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::clock::unix_nanos;
use wasmgate_core::host::{request_info_reading, route_name, HeaderMap, Host};
use wasmgate_core::outcome::parse_status;
use wasmgate_core::{
    Answer, Body, BodyMode, BodyNeed, ConfigError, LocalReply, Outcome, RequestInfo,
};
use wasmgate_host::{select, Counter, Cx, Filter, Gauge, MetricNames, RootCx, Setup};

/// Upstreams whose budget a worker keeps a local view of (their requests written once a
/// second); the budgets of further upstreams are written on every request.
const MAX_LOCAL_BUDGETS: usize = 64;

/// How often a worker writes the requests it counted (and the plugin tick runs).
const BUDGET_FLUSH: Duration = Duration::from_secs(1);

/// The filter's counters (`wasmgate_retry_<what>`, README "Metrics"); a circuit's are in
/// [`CircuitMetrics`].
#[derive(Debug, Clone, Copy)]
struct Metrics {
    retries: Counter,
    /// `retries_denied_total` by `reason`.
    denied_budget: Counter,
    denied_idempotency: Counter,
    denied_retry_after: Counter,
    denied_retried: Counter,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        let denied = |reason| setup.counter_with("retries_denied_total", &[("reason", reason)]);
        Self {
            retries: setup.counter("retries_total"),
            denied_budget: denied("budget"),
            denied_idempotency: denied("idempotency"),
            denied_retry_after: denied("retry_after"),
            denied_retried: denied("retried"),
        }
    }
}

/// One circuit's metrics, labelled `upstream` (and `rule` for a rule's own breaker), defined
/// the first time this worker sees the circuit: circuits are keyed by configured cluster or
/// route names, so they are bounded by the configuration.
#[derive(Debug)]
struct CircuitMetrics {
    /// The circuit's shared-data key.
    key: String,
    opened: Counter,
    closed: Counter,
    short_circuited: Counter,
    /// `circuit_open`: 1 from opening until closing again (half-open included), 0 closed.
    open: Gauge,
    /// What this worker last set `open` to: the gauge is written when that changes.
    recorded: Option<bool>,
}

impl CircuitMetrics {
    fn define(cx: &Cx<'_>, names: &MetricNames, policy: &Policy, circuit: &Circuit) -> Self {
        let rule = policy.breaker_id.strip_prefix("rule");
        let mut labels = vec![("upstream", circuit.upstream.as_str())];
        if let Some(rule) = rule {
            // Labels in the order of `metrics::LABELS`: `rule` before `upstream`.
            labels.insert(0, ("rule", rule));
        }
        let transition = |outcome| {
            let mut with = vec![("outcome", outcome)];
            with.extend_from_slice(&labels);
            cx.define_counter(names, "circuit_transitions_total", &with)
        };
        Self {
            key: circuit.key.clone(),
            opened: transition("opened"),
            closed: transition("closed"),
            short_circuited: cx.define_counter(names, "short_circuited_total", &labels),
            open: cx.define_gauge(names, "circuit_open", &labels),
            recorded: None,
        }
    }

    /// Sets `circuit_open` when this worker last set it otherwise (or never did).
    fn set_open(&mut self, cx: &Cx<'_>, open: bool) {
        if self.recorded != Some(open) {
            cx.record(self.open, u64::from(open));
            self.recorded = Some(open);
        }
    }
}

/// The upstream a request was routed to: the `xds.cluster_name` property (`-` when the host
/// does not say, so such requests share one circuit and one budget, as before).
fn upstream_cluster(host: &dyn Host) -> String {
    host.property_string(&["xds", "cluster_name"])
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// One configuration: the compiled config, the counters, the shared-data key prefixes of its
/// budgets and circuits (new with every configuration, so a change starts them afresh), and the
/// VM's jitter.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    /// Names the metrics of circuits, defined when first seen.
    names: MetricNames,
    /// The metrics of every circuit this worker has seen.
    circuits: RefCell<Vec<CircuitMetrics>>,
    budget_prefix: String,
    breaker_prefix: String,
    /// Per-VM random numbers for backoff jitter, seeded at first use.
    jitter: Cell<Option<Jitter>>,
    /// This worker's view of each upstream's budget (shared-data key, view).
    budgets: RefCell<Vec<(String, budget::Local)>>,
    /// Filter mode: the random token of this configuration's retries, the same on every worker
    /// (shared data), so a client cannot pass a request off as one of them.
    token: String,
}

/// 128 random bits as hex: the standard library's hasher keys come from the host's random
/// source (WASI `random_get` in the VM).
fn random_token() -> String {
    use std::hash::BuildHasher;
    let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
    format!("{:016x}{:016x}", random(), random())
}

/// The configuration's retry token: created by the first worker, read by the others. A host
/// that refuses shared data gets a token of this worker's own: its retries that land on another
/// worker are then treated as forged (one attempt, counted again), never retried again.
fn shared_token(host: &dyn Host, key: &str) -> String {
    let fresh = random_token();
    let token = wasmgate_core::shared::update(host, key, |stored| {
        if stored.is_empty() {
            (Some(fresh.clone().into_bytes()), fresh.clone())
        } else {
            (None, String::from_utf8_lossy(stored).into_owned())
        }
    });
    token.unwrap_or_else(|e| {
        log::warn!("wasmgate retry: retry token not shared: {e:?}");
        fresh
    })
}

/// A request's circuit: its shared-data key and the upstream (cluster or route) it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Circuit {
    key: String,
    upstream: String,
}

/// The shared-data keys of one request: its circuit and its budget (none when not configured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Keys {
    breaker: Option<Circuit>,
    budget: Option<String>,
}

impl Plugin {
    /// The policy a stream selected: the defaults (`None`) or an enabled rule's.
    fn policy(&self, rule: Option<usize>) -> Option<&Policy> {
        match rule {
            None => Some(self.config.policies.default_policy()),
            Some(i) => self.config.policies.rules().get(i)?.policy.as_ref(),
        }
    }

    /// The request's circuit (per cluster, or per route) and budget (per cluster). The cluster
    /// is read only when one of them is configured.
    fn keys(&self, host: &dyn Host, policy: &Policy, info: &RequestInfo) -> Keys {
        if self.config.budget.is_none() && policy.breaker.is_none() {
            return Keys::default();
        }
        let cluster = upstream_cluster(host);
        let breaker = policy.breaker.as_ref().map(|cb| {
            let (scope, upstream) = match cb.scope {
                Scope::Cluster => ("c", cluster.clone()),
                Scope::Route => match info.route.clone().or_else(|| route_name(host)) {
                    Some(route) => ("r", route),
                    // An unnamed route: its cluster's circuit.
                    None => ("c", cluster.clone()),
                },
            };
            let key = format!(
                "{}.{}.{scope}:{upstream}",
                self.breaker_prefix, policy.breaker_id
            );
            Circuit { key, upstream }
        });
        let budget = self
            .config
            .budget
            .map(|_| format!("{}.{cluster}", self.budget_prefix));
        Keys { breaker, budget }
    }

    /// The next jitter number; the generator is seeded from the clock the first time.
    fn random(&self, host: &dyn Host) -> u64 {
        let mut jitter = self
            .jitter
            .take()
            .unwrap_or_else(|| Jitter::new(unix_nanos(host.now())));
        let random = jitter.next_u64();
        self.jitter.set(Some(jitter));
        random
    }

    /// The breaker's answer for a new request: `Err` with the reply when its circuit is open,
    /// `Ok(true)` for a half-open probe.
    fn admit(
        &self,
        cx: &Cx<'_>,
        policy: &Policy,
        circuit: Option<&Circuit>,
    ) -> Result<bool, LocalReply> {
        let (Some(cb), Some(circuit)) = (&policy.breaker, circuit) else {
            return Ok(false);
        };
        let host = cx.host();
        let admission = breaker::admit(host, &circuit.key, cb, host.now_ms());
        if let Ok(admission) = admission {
            self.with_circuit(cx, policy, circuit, |m| {
                if matches!(admission, Admission::Reject { .. }) {
                    cx.count(m.short_circuited);
                }
                m.set_open(cx, admission != Admission::Allow);
            });
        }
        match admission {
            Ok(Admission::Allow) => Ok(false),
            Ok(Admission::Probe) => Ok(true),
            Ok(Admission::Reject { retry_after_secs }) => {
                log::debug!("wasmgate retry: circuit {} open", circuit.key);
                Err(circuit_open(retry_after_secs))
            }
            Err(e) => {
                log::warn!("wasmgate retry: circuit breaker unavailable: {e:?}");
                Ok(false)
            }
        }
    }

    /// Runs `f` on the metrics of `circuit`, defining them the first time this worker sees it.
    fn with_circuit(
        &self,
        cx: &Cx<'_>,
        policy: &Policy,
        circuit: &Circuit,
        f: impl FnOnce(&mut CircuitMetrics),
    ) {
        let mut circuits = self.circuits.borrow_mut();
        let index = match circuits.iter().position(|m| m.key == circuit.key) {
            Some(i) => i,
            None => {
                circuits.push(CircuitMetrics::define(cx, &self.names, policy, circuit));
                circuits.len() - 1
            }
        };
        f(&mut circuits[index]);
    }

    /// The retries the request allows: none for a non-idempotent request the policy does not
    /// let retry, nor (`skip_retried_requests`) for a request that already is a retry.
    fn idempotent_retries(&self, cx: &Cx<'_>, policy: &Policy, info: &RequestInfo) -> u32 {
        let has_key = info.header(&self.config.idempotency_key_header).is_some();
        if policy.max_retries > 0
            && !policy::retries_allowed(&info.method, has_key, policy.non_idempotent)
        {
            cx.count(self.metrics.denied_idempotency);
            log::debug!(
                "wasmgate retry: {} without idempotency key: one attempt",
                info.method
            );
            return 0;
        }
        if policy.max_retries > 0 && policy.skip_retried_requests {
            let attempt = info
                .header(ATTEMPT_COUNT)
                .and_then(|v| v.trim().parse::<u32>().ok());
            if attempt.is_some_and(|n| n > 1) {
                cx.count(self.metrics.denied_retried);
                log::debug!("wasmgate retry: already a retry upstream of this proxy: one attempt");
                return 0;
            }
        }
        policy.max_retries
    }

    /// Runs `f` on this worker's view of the budget at `key`, and whether the view is kept (a
    /// temporary one beyond [`MAX_LOCAL_BUDGETS`] upstreams must be written at once).
    fn with_local<T>(&self, key: &str, f: impl FnOnce(&mut budget::Local, bool) -> T) -> T {
        let mut budgets = self.budgets.borrow_mut();
        let index = match budgets.iter().position(|(k, _)| k == key) {
            Some(i) => Some(i),
            None if budgets.len() < MAX_LOCAL_BUDGETS => {
                budgets.push((key.to_string(), budget::Local::default()));
                Some(budgets.len() - 1)
            }
            None => None,
        };
        match index {
            Some(i) => f(&mut budgets[i].1, true),
            None => {
                drop(budgets);
                f(&mut budget::Local::default(), false)
            }
        }
    }

    /// Writes this worker's pending requests to the budget at `key` with `change`, in one
    /// shared-data write; `None` (logged) when the host refused it.
    fn write_budget<T>(
        &self,
        host: &dyn Host,
        key: &str,
        change: impl FnMut(&mut budget::Window) -> T,
    ) -> Option<T> {
        let now = host.unix_seconds();
        self.with_local(key, |local, _| budget::sync(host, key, local, now, change))
            .map_err(|e| log::warn!("wasmgate retry: budget not updated: {e:?}"))
            .ok()
    }

    /// Writes what this worker counted in every budget (the plugin tick).
    fn flush_budgets(&self, host: &dyn Host) {
        let now = host.unix_seconds();
        for (key, local) in self.budgets.borrow_mut().iter_mut() {
            if local.pending() > 0 {
                if let Err(e) = budget::sync(host, key, local, now, |_| ()) {
                    log::warn!("wasmgate retry: budget not updated: {e:?}");
                }
            }
        }
    }

    /// Counts the request in its upstream's budget, locally (written once a second). Router
    /// mode also learns how many of its retries fit the budget now, without taking them: the
    /// retries the router makes are charged after the response. The retries the request keeps.
    fn count_in_budget(&self, cx: &Cx<'_>, key: Option<&str>, retries: u32) -> u32 {
        let (Some(b), Some(key)) = (&self.config.budget, key) else {
            return retries;
        };
        let host = cx.host();
        let now = host.unix_seconds();
        let router = self.config.mode == Mode::Router;
        let got = self.with_local(key, |local, kept| {
            let mut written = Ok(());
            if kept && local.stale(now) {
                written = budget::sync(host, key, local, now, |_| ());
            }
            local.count_request(now);
            if !kept {
                written = budget::sync(host, key, local, now, |_| ());
            }
            if let Err(e) = written {
                log::warn!("wasmgate retry: budget not updated: {e:?}");
            }
            if router {
                local.view(now).allowance(now, b, retries)
            } else {
                retries
            }
        });
        if got < retries {
            cx.count(self.metrics.denied_budget);
        }
        got
    }

    /// Whether the job gets another attempt after `last`, and after what wait: the policy, the
    /// attempts left, the deadline, the wait the upstream asked for, the circuit and the budget
    /// (one retry taken) all agree.
    fn grant_retry(
        &self,
        cx: &Cx<'_>,
        policy: &Policy,
        keys: &Keys,
        job: &Job,
        last: Option<&Attempt>,
    ) -> Option<Duration> {
        let host = cx.host();
        let (now, now_ms) = (host.now(), host.now_ms());
        let outcome = Attempt::outcome(last);
        let asked = last.and_then(|a| a.asked_wait(now));
        let delay = policy::plan_retry(
            policy,
            &outcome,
            job.attempts,
            job.max_retries,
            asked,
            job.remaining_ms(now_ms),
            self.random(host),
        );
        let Some(delay) = delay else {
            if asked.is_some()
                && policy.honor_retry_after
                && job.attempts <= job.max_retries
                && policy::is_retriable(&outcome, &policy.retry_on)
            {
                log::debug!("wasmgate retry: the upstream asked for a longer wait: no retry");
                cx.count(self.metrics.denied_retry_after);
            }
            return None;
        };
        if let Some(circuit) = &keys.breaker {
            if breaker::is_open(host, &circuit.key, now_ms) {
                return None;
            }
        }
        if let (Some(b), Some(key)) = (&self.config.budget, &keys.budget) {
            let now = host.unix_seconds();
            let granted = self.write_budget(host, key, |w| w.try_retry(now, b));
            if granted != Some(true) {
                cx.count(self.metrics.denied_budget);
                return None;
            }
        }
        cx.count(self.metrics.retries);
        Some(delay)
    }

    /// Records a request's final result (`None`: nothing answered) in its circuit: whether it
    /// failed and, from when it started (`started_ms`), whether it was slow.
    fn record_result(&self, cx: &Cx<'_>, policy: &Policy, stream: &Retry, status: Option<u16>) {
        let (Some(cb), Some(circuit)) = (&policy.breaker, &stream.keys.breaker) else {
            return;
        };
        let key = &circuit.key;
        let host = cx.host();
        let now_ms = host.now_ms();
        let elapsed = Duration::from_millis(now_ms.saturating_sub(stream.started_ms));
        let call = breaker::Call {
            failed: !breaker::is_success(cb, status),
            slow: cb.slow_call_duration.is_some_and(|slow| elapsed > slow),
            probe: stream.probe,
        };
        match breaker::record(host, key, cb, now_ms, call, self.random(host)) {
            Ok(Some(transition)) => {
                log::info!("wasmgate retry: circuit {key} {transition:?}");
                self.with_circuit(cx, policy, circuit, |m| {
                    let opened = transition == Transition::Opened;
                    cx.count(if opened { m.opened } else { m.closed });
                    m.set_open(cx, opened);
                });
            }
            Ok(None) => {}
            Err(e) => log::warn!("wasmgate retry: circuit breaker not updated: {e:?}"),
        }
    }
}

/// Retry headers for the router that a request without retries must not carry (an internal
/// client's own, which Envoy does not strip).
const ROUTER_RETRY_HEADERS: &[&str] = &[
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-hedge-on-per-try-timeout",
];

/// The reply while a circuit is open.
fn circuit_open(retry_after_secs: u64) -> LocalReply {
    LocalReply::new(
        503,
        "circuit_open",
        "The upstream is failing, so the circuit breaker is not sending requests to it for now.",
    )
    .with_header("retry-after", retry_after_secs.to_string())
}

/// Where a stream is.
#[derive(Debug)]
enum Stage {
    /// Nothing (more) to do: disabled for this request, or already settled.
    Passthrough,
    /// Envoy's router sends the request; its response is recorded in the circuit (and in router
    /// mode, the retries it made are charged to the budget and reported).
    Forwarded,
    /// Filter mode with a request body: the first attempt goes through Envoy's router while the
    /// frame copies the body, so later attempts can be sent by the filter. (Envoy's Wasm host
    /// turns a paused request-headers phase into "stop all", so a filter cannot read the body
    /// while it holds the headers back from the router.) Holds the request headers.
    Copying(Vec<(String, String)>),
    /// The whole request is held (its body copied, if any): the router's response to the first
    /// attempt decides whether retries follow.
    Copied(Replay),
    /// Filter mode: the filter's own attempts are under way.
    Attempting(Job),
}

/// One stream: its stage, the policy it selected and what the request was granted.
pub struct Retry {
    plugin: Rc<Plugin>,
    stage: Stage,
    /// The selected rule (`None`: the defaults).
    rule: Option<usize>,
    /// The request's circuit and budget.
    keys: Keys,
    /// The request is a half-open probe of its circuit.
    probe: bool,
    /// When the request arrived (Unix ms), for slow calls.
    started_ms: u64,
    /// Filter mode: retries this request may make.
    max_retries: u32,
}

impl Retry {
    /// Router mode: hands the request's retries to Envoy's router.
    fn hand_to_router(&mut self, cx: &mut Cx<'_>, policy: &Policy, retries: u32) -> Outcome {
        if retries == 0 {
            for name in ROUTER_RETRY_HEADERS {
                cx.request.remove(*name);
            }
        }
        for (name, value) in policy::router_headers(policy, retries) {
            cx.request.set(name, value);
        }
        self.stage = Stage::Forwarded;
        Outcome::Continue
    }

    /// Filter mode: the first attempt goes through the router (its own retries off) while the
    /// filter keeps the request (and copies its body); retries are the filter's.
    fn take_over(
        &mut self,
        cx: &mut Cx<'_>,
        policy: &Policy,
        info: RequestInfo,
        retries: u32,
        end_of_stream: bool,
    ) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let max_body = plugin.config.max_body_bytes();
        let too_large = policy::declared_too_large(info.header("content-length"), max_body);
        cx.request.set("x-envoy-max-retries", "0");
        self.stage = Stage::Forwarded;
        // Envoy turns a filter's own answer to a gRPC request into a trailers-only error (the
        // message and trailers lost): gRPC requests get the router's one attempt here.
        let grpc = info
            .header("content-type")
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/grpc"));
        if retries == 0 || too_large || grpc {
            return Outcome::Continue;
        }
        self.max_retries = retries;
        if let Some(t) = policy.per_try_timeout {
            let ms = t.as_millis().to_string();
            cx.request.set("x-envoy-upstream-rq-per-try-timeout-ms", ms);
        }
        if end_of_stream {
            self.stage = Stage::Copied(Replay::new(info.headers, Vec::new(), Vec::new()));
            return Outcome::Continue;
        }
        self.stage = Stage::Copying(info.headers);
        Outcome::NeedBody(BodyNeed {
            limit: u64::try_from(max_body).unwrap_or(u64::MAX),
            mode: BodyMode::Copy,
            declared: None,
        })
    }

    /// The next attempt of the job, through the loopback cluster.
    fn send_attempt(&mut self, cx: &Cx<'_>, policy: &Policy) -> Outcome {
        let (Stage::Attempting(job), Some(fm)) = (&mut self.stage, &self.plugin.config.filter_mode)
        else {
            return Outcome::Continue;
        };
        let now_ms = cx.host().now_ms();
        let token = &self.plugin.token;
        Outcome::Call(job.next_attempt(&fm.loopback_cluster, token, policy.per_try_timeout, now_ms))
    }

    /// The next attempt now, or a wait for it.
    fn retry_in(&mut self, cx: &Cx<'_>, policy: &Policy, delay: Duration) -> Outcome {
        if delay.is_zero() {
            return self.send_attempt(cx, policy);
        }
        Outcome::Wait {
            until_ms: policy::wake_at_ms(cx.host().now_ms(), delay),
        }
    }

    /// Filter mode: the router's response to the first attempt. If it is to be retried it is
    /// held back and the next attempts are the filter's; else it goes to the client untouched.
    fn after_router_attempt(
        &mut self,
        cx: &mut Cx<'_>,
        policy: &Policy,
        replay: Replay,
    ) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let Some(fm) = &plugin.config.filter_mode else {
            self.after_forwarded(cx, policy);
            return Outcome::Continue;
        };
        let host = cx.host();
        let code_details = host.property(&["response", "code_details"]);
        let first =
            Attempt::from_router(host.headers(HeaderMap::Response), code_details.as_deref());
        // filter_mode.timeout counts from the request's arrival: the first attempt included.
        let job = Job::new(replay, 1, self.max_retries, fm.timeout, self.started_ms);
        match plugin.grant_retry(cx, policy, &self.keys, &job, Some(&first)) {
            Some(delay) => {
                self.stage = Stage::Attempting(job);
                self.retry_in(cx, policy, delay)
            }
            None => {
                plugin.record_result(cx, policy, self, Some(first.status));
                Outcome::Continue
            }
        }
    }

    /// The router's response to a forwarded request: recorded in the circuit; in router mode
    /// the retries it made are charged to the budget and reported.
    fn after_forwarded(&mut self, cx: &mut Cx<'_>, policy: &Policy) {
        let plugin = Rc::clone(&self.plugin);
        let status = parse_status(cx.host().header(HeaderMap::Response, ":status").as_deref());
        plugin.record_result(cx, policy, self, status);
        if plugin.config.mode == Mode::Router {
            if let Some(attempts) = self.settle_router(cx, &plugin, true) {
                let header = plugin.config.attempts_header.clone();
                cx.response.set(header, attempts.to_string());
            }
        }
    }

    /// Router mode: charges the retries the router made to the budget and counts them; the
    /// attempt count when retries were made. `with_header`: the response headers are there to
    /// fall back on (`x-envoy-attempt-count`).
    fn settle_router(&self, cx: &Cx<'_>, plugin: &Plugin, with_header: bool) -> Option<u32> {
        let host = cx.host();
        let attribute = host.property(&["upstream", "request_attempt_count"]);
        let attempts = policy::router_attempts(attribute.as_deref(), || {
            with_header
                .then(|| host.header(HeaderMap::Response, "x-envoy-attempt-count"))
                .flatten()
        })?;
        let retries = attempts.saturating_sub(1);
        if retries == 0 {
            return None;
        }
        if let Some(key) = &self.keys.budget {
            let now = host.unix_seconds();
            plugin.write_budget(host, key, |w| w.charge(now, u64::from(retries)));
        }
        cx.add(plugin.metrics.retries, i64::from(retries));
        Some(attempts)
    }

    /// The last attempt's answer goes to the client; the result is recorded in the circuit.
    fn finish(&mut self, cx: &Cx<'_>, policy: &Policy, last: Option<Attempt>) -> Outcome {
        let Stage::Attempting(job) = std::mem::replace(&mut self.stage, Stage::Passthrough) else {
            return Outcome::Continue;
        };
        let plugin = &self.plugin;
        let status = last.as_ref().map(|a| a.status);
        plugin.record_result(cx, policy, self, status);
        attempt::final_answer(last, job.attempts, &plugin.config.attempts_header)
    }

    /// Filter mode: a retry this filter sent re-entered the listener (the loopback cluster
    /// leads to a listener that runs this filter with the same configuration). It goes to the
    /// router once, with no retries of its own, whatever its rule: the outer request does the
    /// retrying, the counting and the recording; an open circuit still answers.
    fn pass_own_retry(&mut self, cx: &mut Cx<'_>, policy: Option<&Policy>) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        cx.request.remove(ATTEMPT_MARKER);
        for name in ROUTER_RETRY_HEADERS {
            cx.request.remove(*name);
        }
        cx.request.set("x-envoy-max-retries", "0");
        self.stage = Stage::Passthrough;
        let Some(policy) = policy else {
            return Outcome::Continue;
        };
        let info = RequestInfo::new(None, "", "", "", Vec::new());
        if let Some(circuit) = plugin.keys(cx.host(), policy, &info).breaker {
            let host = cx.host();
            if breaker::is_open(host, &circuit.key, host.now_ms()) {
                plugin.with_circuit(cx, policy, &circuit, |m| {
                    cx.count(m.short_circuited);
                    m.set_open(cx, true);
                });
                return Outcome::Reply(circuit_open(1));
            }
        }
        Outcome::Continue
    }
}

impl Filter for Retry {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let namespace = setup.configuration_namespace();
        let config = config::parse(json)?;
        let token = match config.mode {
            Mode::Filter => shared_token(setup.host(), &namespace.key("token")),
            Mode::Router => String::new(),
        };
        Ok(Plugin {
            token,
            config,
            metrics: Metrics::define(setup),
            names: setup.metric_names(),
            circuits: RefCell::new(Vec::new()),
            budget_prefix: namespace.key("budget"),
            breaker_prefix: namespace.key("breaker"),
            jitter: Cell::new(None),
            budgets: RefCell::new(Vec::new()),
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            stage: Stage::Passthrough,
            rule: None,
            keys: Keys::default(),
            probe: false,
            started_ms: 0,
            max_retries: 0,
        }
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, end_of_stream: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let config = &plugin.config;
        let mut info = request_info_reading(
            cx.host(),
            config.policies.reads_route(),
            &config.header_needs,
        );
        let selected = match select(cx, &config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        // A marked request is never retried again (the loop guard holds even where workers do
        // not agree on the token); only one with this configuration's token skips the counting.
        let marked = config.mode == Mode::Filter && info.header(ATTEMPT_MARKER).is_some();
        if marked && info.header(ATTEMPT_MARKER) == Some(plugin.token.as_str()) {
            return self.pass_own_retry(cx, selected.policy());
        }
        if marked {
            cx.request.remove(ATTEMPT_MARKER);
        }
        let Some(policy) = selected.policy() else {
            return Outcome::Continue;
        };
        self.rule = selected.rule_index();
        self.keys = plugin.keys(cx.host(), policy, &info);
        self.started_ms = cx.host().now_ms();
        match plugin.admit(cx, policy, self.keys.breaker.as_ref()) {
            Ok(probe) => self.probe = probe,
            Err(reply) => return Outcome::Reply(reply),
        }
        let retries = if marked {
            log::debug!("wasmgate retry: a retry marker without this configuration's token");
            0
        } else {
            plugin.idempotent_retries(cx, policy, &info)
        };
        let retries = plugin.count_in_budget(cx, self.keys.budget.as_deref(), retries);
        match config.mode {
            Mode::Router => self.hand_to_router(cx, policy, retries),
            Mode::Filter => self.take_over(cx, policy, info, retries, end_of_stream),
        }
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        let Stage::Copying(headers) = &mut self.stage else {
            return Outcome::Continue;
        };
        let headers = std::mem::take(headers);
        self.stage = match body {
            Body::Complete(bytes) => {
                let trailers = if cx.body_ended_with_trailers() {
                    cx.host().headers(HeaderMap::RequestTrailers)
                } else {
                    Vec::new()
                };
                Stage::Copied(Replay::new(headers, bytes.to_vec(), trailers))
            }
            Body::TooLarge => {
                log::debug!("wasmgate retry: body over max_body_bytes: one attempt");
                Stage::Forwarded
            }
        };
        Outcome::Continue
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let Some(policy) = plugin.policy(self.rule) else {
            return Outcome::Continue;
        };
        match std::mem::replace(&mut self.stage, Stage::Passthrough) {
            Stage::Copied(replay) => self.after_router_attempt(cx, policy, replay),
            // A response before the whole body was copied: that attempt is the only one.
            Stage::Forwarded | Stage::Copying(_) => {
                self.after_forwarded(cx, policy);
                Outcome::Continue
            }
            stage @ (Stage::Passthrough | Stage::Attempting(_)) => {
                self.stage = stage;
                Outcome::Continue
            }
        }
    }

    fn on_answer(&mut self, cx: &mut Cx<'_>, answer: Answer) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let (Some(policy), Stage::Attempting(job)) = (plugin.policy(self.rule), &self.stage) else {
            return Outcome::Continue;
        };
        let last = Attempt::from_answer(answer);
        match plugin.grant_retry(cx, policy, &self.keys, job, last.as_ref()) {
            Some(delay) => self.retry_in(cx, policy, delay),
            None => self.finish(cx, policy, last),
        }
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        match plugin.policy(self.rule) {
            Some(policy) => self.send_attempt(cx, policy),
            None => Outcome::Continue,
        }
    }

    /// The budgets' requests are written once a second.
    fn tick_period(plugin: &Plugin) -> Option<Duration> {
        plugin.config.budget.map(|_| BUDGET_FLUSH)
    }

    fn on_tick(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>) {
        plugin.flush_budgets(cx.host());
    }

    /// A router-mode stream that ended without response headers (reset, timed out): the
    /// retries the router made still count against the budget. Nothing is recorded in the
    /// circuit (a client that went away says nothing about the upstream).
    fn on_done(&mut self, cx: &mut Cx<'_>) {
        if self.plugin.config.mode == Mode::Router && matches!(self.stage, Stage::Forwarded) {
            self.stage = Stage::Passthrough;
            let plugin = Rc::clone(&self.plugin);
            self.settle_router(cx, &plugin, false);
        }
    }
}

#[cfg(test)]
mod tests;
