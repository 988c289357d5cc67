//! The retry filter on the wasmgate frame. Router mode sets the `x-envoy-*` retry headers and
//! settles the budget after the response; filter mode sends the attempts itself as callouts,
//! waiting between them, and answers with the last one. The decisions live in [`crate::policy`],
//! [`crate::attempt`], [`crate::budget`] and [`crate::breaker`].

use crate::attempt::{self, Attempt, Job, Replay};
use crate::breaker::{self, Admission, Transition};
use crate::budget;
use crate::config::{self, Config, Mode, Policy, FILTER};
use crate::policy::{self, Jitter};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::clock::unix_nanos;
use wasmgate_core::host::{request_info_reading, HeaderMap, Host};
use wasmgate_core::outcome::parse_status;
use wasmgate_core::{
    Answer, Body, BodyMode, BodyNeed, ConfigError, LocalReply, Outcome, RequestInfo,
};
use wasmgate_host::{select, Counter, Cx, Filter, Setup};

/// The filter's counters (`wasmgate_retry_<what>`).
#[derive(Debug, Clone, Copy)]
struct Metrics {
    retries: Counter,
    denied_budget: Counter,
    denied_idempotency: Counter,
    circuit_opened: Counter,
    circuit_closed: Counter,
    short_circuited: Counter,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        Self {
            retries: setup.counter("retries"),
            denied_budget: setup.counter("retries_denied_budget"),
            denied_idempotency: setup.counter("retries_denied_idempotency"),
            circuit_opened: setup.counter("circuit_opened"),
            circuit_closed: setup.counter("circuit_closed"),
            short_circuited: setup.counter("short_circuited"),
        }
    }
}

/// One configuration: the compiled config, the counters, the shared-data keys of its budget and
/// circuits (new with every configuration, so a change starts them afresh), and the VM's jitter.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    budget_key: String,
    breaker_prefix: String,
    /// Per-VM random numbers for backoff jitter, seeded at first use.
    jitter: Cell<Option<Jitter>>,
}

impl Plugin {
    /// The policy a stream selected: the defaults (`None`) or an enabled rule's.
    fn policy(&self, rule: Option<usize>) -> Option<&Policy> {
        match rule {
            None => Some(self.config.policies.default_policy()),
            Some(i) => self.config.policies.rules().get(i)?.policy.as_ref(),
        }
    }

    fn breaker_key(&self, policy: &Policy) -> String {
        format!("{}.{}", self.breaker_prefix, policy.breaker_id)
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
    fn admit(&self, cx: &Cx<'_>, policy: &Policy) -> Result<bool, LocalReply> {
        let Some(cb) = &policy.breaker else {
            return Ok(false);
        };
        let host = cx.host();
        match breaker::admit(host, &self.breaker_key(policy), cb, host.now_ms()) {
            Ok(Admission::Allow) => Ok(false),
            Ok(Admission::Probe) => Ok(true),
            Ok(Admission::Reject { retry_after_secs }) => {
                cx.count(self.metrics.short_circuited);
                log::debug!("wasmgate retry: circuit {} open", policy.breaker_id);
                Err(circuit_open(retry_after_secs))
            }
            Err(e) => {
                log::warn!("wasmgate retry: circuit breaker unavailable: {e:?}");
                Ok(false)
            }
        }
    }

    /// The retries the request's method allows: none for a non-idempotent request the policy
    /// does not let retry.
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
        policy.max_retries
    }

    /// Counts the request in the budget; router mode also reserves its retries, in the same
    /// shared-data write. The retries the request keeps.
    fn count_in_budget(&self, cx: &Cx<'_>, retries: u32) -> u32 {
        let Some(b) = &self.config.budget else {
            return retries;
        };
        let reserve = if self.config.mode == Mode::Router {
            retries
        } else {
            0
        };
        let host = cx.host();
        match budget::record_and_reserve(host, &self.budget_key, host.unix_seconds(), b, reserve) {
            Ok(got) => {
                if got < reserve {
                    cx.count(self.metrics.denied_budget);
                }
                if reserve > 0 {
                    got
                } else {
                    retries
                }
            }
            Err(e) => {
                log::warn!("wasmgate retry: budget not updated: {e:?}");
                retries
            }
        }
    }

    /// Whether the job gets another attempt after `last`, and after what wait: the policy, the
    /// attempts left, the deadline, the circuit and the budget (one retry taken) all agree.
    fn grant_retry(
        &self,
        cx: &Cx<'_>,
        policy: &Policy,
        job: &Job,
        last: Option<&Attempt>,
    ) -> Option<Duration> {
        let host = cx.host();
        let (now, now_ms) = (host.now(), host.now_ms());
        let delay = policy::plan_retry(
            policy,
            &Attempt::outcome(last),
            job.attempts,
            job.max_retries,
            last.and_then(Attempt::retry_after),
            now,
            job.remaining_ms(now_ms),
            self.random(host),
        )?;
        if policy.breaker.is_some() && breaker::is_open(host, &self.breaker_key(policy), now_ms) {
            return None;
        }
        if let Some(b) = &self.config.budget {
            if budget::reserve(host, &self.budget_key, now_ms / 1000, b, 1).unwrap_or(0) == 0 {
                cx.count(self.metrics.denied_budget);
                return None;
            }
        }
        cx.count(self.metrics.retries);
        Some(delay)
    }

    /// Records a request's final result (`None`: nothing answered) in its rule's circuit.
    fn record_result(&self, cx: &Cx<'_>, policy: &Policy, status: Option<u16>, probe: bool) {
        let Some(cb) = &policy.breaker else {
            return;
        };
        let host = cx.host();
        let success = breaker::is_success(cb, status);
        let key = self.breaker_key(policy);
        match breaker::record(host, &key, cb, host.now_ms(), success, probe) {
            Ok(transition) => {
                if let Some(t) = transition {
                    log::info!("wasmgate retry: circuit {} {t:?}", policy.breaker_id);
                }
                match transition {
                    Some(Transition::Opened) => cx.count(self.metrics.circuit_opened),
                    Some(Transition::Closed) => cx.count(self.metrics.circuit_closed),
                    None => {}
                }
            }
            Err(e) => log::warn!("wasmgate retry: circuit breaker not updated: {e:?}"),
        }
    }
}

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
    /// mode, the attempts it made are counted and unused budget reservations refunded).
    Forwarded,
    /// Filter mode with a request body: the first attempt goes through Envoy's router while the
    /// frame copies the body, so later attempts can be sent by the filter. (Envoy's Wasm host
    /// turns a paused request-headers phase into "stop all", so a filter cannot read the body
    /// while it holds the headers back from the router.) Holds the request headers.
    Copying(Vec<(String, String)>),
    /// The whole body was copied: the router's response decides whether attempts follow.
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
    /// The request is a half-open probe of its circuit.
    probe: bool,
    /// Router mode: retries reserved from the budget.
    reserved: u32,
    /// Filter mode: retries this request may make.
    max_retries: u32,
}

impl Retry {
    /// Router mode: hands the request's retries to Envoy's router.
    fn hand_to_router(&mut self, cx: &mut Cx<'_>, policy: &Policy, retries: u32) -> Outcome {
        self.reserved = retries;
        if retries == 0 {
            cx.request.remove("x-envoy-retry-on");
            cx.request.remove("x-envoy-retriable-status-codes");
        }
        for (name, value) in policy::router_headers(policy, retries) {
            cx.request.set(name, value);
        }
        self.stage = Stage::Forwarded;
        Outcome::Continue
    }

    /// Filter mode: the first attempt of a request without body is the filter's; one with a body
    /// goes through the router while the body is copied. The router never retries on its own.
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
        if retries == 0 || too_large {
            return Outcome::Continue;
        }
        self.max_retries = retries;
        if end_of_stream {
            let replay = Replay::new(info.headers, Vec::new(), Vec::new());
            return self.start_job(cx, policy, replay, 0);
        }
        if let Some(t) = policy.per_try_timeout {
            let ms = t.as_millis().to_string();
            cx.request.set("x-envoy-upstream-rq-per-try-timeout-ms", ms);
        }
        self.stage = Stage::Copying(info.headers);
        Outcome::NeedBody(BodyNeed {
            limit: u64::try_from(max_body).unwrap_or(u64::MAX),
            mode: BodyMode::Copy,
            declared: None,
        })
    }

    /// Starts the filter's attempts of a request that has made `attempts` already.
    fn start_job(
        &mut self,
        cx: &mut Cx<'_>,
        policy: &Policy,
        replay: Replay,
        attempts: u32,
    ) -> Outcome {
        let Some(fm) = &self.plugin.config.filter_mode else {
            return Outcome::Continue;
        };
        let now_ms = cx.host().now_ms();
        let job = Job::new(replay, attempts, self.max_retries, fm.timeout, now_ms);
        self.stage = Stage::Attempting(job);
        self.send_attempt(cx, policy)
    }

    /// The next attempt of the job.
    fn send_attempt(&mut self, cx: &Cx<'_>, policy: &Policy) -> Outcome {
        let (Stage::Attempting(job), Some(fm)) = (&mut self.stage, &self.plugin.config.filter_mode)
        else {
            return Outcome::Continue;
        };
        let now_ms = cx.host().now_ms();
        Outcome::Call(job.next_attempt(&fm.cluster, policy.per_try_timeout, now_ms))
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

    /// Filter mode: the router's response to the first attempt of a request with a body. If it
    /// is to be retried it is held back and the next attempts are the filter's; else it goes to
    /// the client untouched.
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
        let job = Job::new(replay, 1, self.max_retries, fm.timeout, host.now_ms());
        match plugin.grant_retry(cx, policy, &job, Some(&first)) {
            Some(delay) => {
                self.stage = Stage::Attempting(job);
                self.retry_in(cx, policy, delay)
            }
            None => {
                plugin.record_result(cx, policy, Some(first.status), self.probe);
                Outcome::Continue
            }
        }
    }

    /// The router's response to a forwarded request: recorded in the circuit; in router mode
    /// the attempts it made are counted and reported, unused reservations refunded.
    fn after_forwarded(&mut self, cx: &mut Cx<'_>, policy: &Policy) {
        let plugin = Rc::clone(&self.plugin);
        let status = parse_status(cx.host().header(HeaderMap::Response, ":status").as_deref());
        plugin.record_result(cx, policy, status, self.probe);
        if plugin.config.mode == Mode::Router {
            self.settle_router(cx, &plugin);
        }
    }

    fn settle_router(&self, cx: &mut Cx<'_>, plugin: &Plugin) {
        let host = cx.host();
        let attribute = host.property(&["upstream", "request_attempt_count"]);
        let Some(attempts) = policy::router_attempts(attribute.as_deref(), || {
            host.header(HeaderMap::Response, "x-envoy-attempt-count")
        }) else {
            return;
        };
        let (retries, unused) = policy::router_settlement(attempts, self.reserved);
        if unused > 0 {
            let _ = budget::refund(host, &plugin.budget_key, host.unix_seconds(), unused);
        }
        if retries > 0 {
            cx.add(plugin.metrics.retries, i64::from(retries));
            let header = plugin.config.attempts_header.clone();
            cx.response.set(header, attempts.to_string());
        }
    }

    /// The last attempt's answer goes to the client; the result is recorded in the circuit.
    fn finish(&mut self, cx: &Cx<'_>, policy: &Policy, last: Option<Attempt>) -> Outcome {
        let Stage::Attempting(job) = std::mem::replace(&mut self.stage, Stage::Passthrough) else {
            return Outcome::Continue;
        };
        let plugin = &self.plugin;
        plugin.record_result(cx, policy, last.as_ref().map(|a| a.status), self.probe);
        attempt::final_answer(last, job.attempts, &plugin.config.attempts_header)
    }
}

impl Filter for Retry {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let namespace = setup.configuration_namespace();
        Ok(Plugin {
            config: config::parse(json)?,
            metrics: Metrics::define(setup),
            budget_key: namespace.key("budget"),
            breaker_prefix: namespace.key("breaker"),
            jitter: Cell::new(None),
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            stage: Stage::Passthrough,
            rule: None,
            probe: false,
            reserved: 0,
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
        let Some(policy) = selected.policy() else {
            return Outcome::Continue;
        };
        self.rule = selected.rule_index();
        match plugin.admit(cx, policy) {
            Ok(probe) => self.probe = probe,
            Err(reply) => return Outcome::Reply(reply),
        }
        let retries = plugin.idempotent_retries(cx, policy, &info);
        let retries = plugin.count_in_budget(cx, retries);
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
        match plugin.grant_retry(cx, policy, job, last.as_ref()) {
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
}

#[cfg(test)]
mod tests;
