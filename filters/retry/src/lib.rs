//! wasmgate retry: proxy-wasm glue. Decisions live in [`policy`], [`budget`] and [`breaker`].
//!
//! Router mode sets `x-envoy-*` retry headers for Envoy's router. Filter mode keeps each
//! buffered request as a job in a per-VM registry: attempts are sent with `dispatch_http_call`,
//! waits between them are timers of the root context (`set_tick_period`, re-armed to the next
//! due job), and the final upstream response is answered with `send_http_response` on the
//! request's own context (`set_effective_context`).

pub mod breaker;
pub mod budget;
pub mod config;
pub mod policy;

use crate::breaker::{Admission, Transition};
use crate::config::{Config, Mode, Policy};
use crate::policy::{Jitter, Outcome};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::clock::{unix_nanos, Clock};
use wasmgate_core::host::{header_map, header_value, request_info_reading, Host, ProxyHost};
use wasmgate_core::metrics::{metric_name, Counter};
use wasmgate_core::LocalReply;

const FILTER: &str = "retry";

// The module entry point is exported only in the Wasm build: natively (unit tests, the
// `wasmgate` CLI linking every filter) several `_initialize` symbols would collide.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    init();
}}

/// Registers the root context (called from `_initialize`).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn init() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RetryRoot::default()) });
}

struct Metrics {
    retries: Counter,
    denied_budget: Counter,
    denied_idempotency: Counter,
    circuit_opened: Counter,
    circuit_closed: Counter,
    short_circuited: Counter,
}

impl Metrics {
    fn define() -> Self {
        let c = |what: &str| Counter::define(&metric_name(FILTER, what));
        Self {
            retries: c("retries"),
            denied_budget: c("retries_denied_budget"),
            denied_idempotency: c("retries_denied_idempotency"),
            circuit_opened: c("circuit_opened"),
            circuit_closed: c("circuit_closed"),
            short_circuited: c("short_circuited"),
        }
    }

    fn transition(&self, t: Option<Transition>) {
        match t {
            Some(Transition::Opened) => self.circuit_opened.inc(),
            Some(Transition::Closed) => self.circuit_closed.inc(),
            None => {}
        }
    }
}

/// What every context of one plugin configuration shares.
struct Shared {
    config: Config,
    metrics: Metrics,
    /// Shared-data key prefix, unique per configuration so two plugins never share a circuit.
    key_prefix: String,
}

impl Shared {
    fn budget_key(&self) -> String {
        format!("{}.budget", self.key_prefix)
    }

    fn breaker_key(&self, policy: &Policy) -> String {
        format!("{}.breaker.{}", self.key_prefix, policy.breaker_id)
    }

    /// Records a request's final result in its rule's circuit.
    fn record_result(&self, policy: &Policy, status: Option<u16>, probe: bool) {
        let Some(cb) = &policy.breaker else { return };
        let success = status.is_some_and(|s| !cb.failure_status_codes.contains(&s));
        match breaker::record(
            &ProxyHost,
            &self.breaker_key(policy),
            cb,
            now_ms(),
            success,
            probe,
        ) {
            Ok(t) => {
                if t.is_some() {
                    log::info!("wasmgate retry: circuit {} {t:?}", policy.breaker_id);
                }
                self.metrics.transition(t);
            }
            Err(e) => log::warn!("wasmgate retry: circuit breaker not updated: {e:?}"),
        }
    }
}

fn now_ms() -> u64 {
    unix_nanos(ProxyHost.now()) / 1_000_000
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Default)]
struct RetryRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for RetryRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _: usize) {
        on_attempt_response(token, headers, body);
    }
}

impl RootContext for RetryRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("{}", wasmgate_core::build_identity!());
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let json = self.get_plugin_configuration();
        let Some(config) = wasmgate_core::config::load(FILTER, json.as_deref(), config::compile)
        else {
            return false;
        };
        let key_prefix = format!(
            "wasmgate.retry.{:016x}",
            fnv1a(json.as_deref().unwrap_or_default())
        );
        self.shared = Some(Rc::new(Shared {
            config,
            metrics: Metrics::define(),
            key_prefix,
        }));
        true
    }

    fn on_tick(&mut self) {
        on_tick();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RetryHttp {
            id: context_id,
            shared: self.shared.clone(),
            stage: Stage::Idle,
            policy: None,
            probe: false,
            reserved: 0,
            max_retries: 0,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            body_complete: false,
            body_overflow: false,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    /// Disabled for this request.
    Passthrough,
    /// Envoy's router sends the request; the response is watched for the breaker.
    Forwarded,
    /// Filter mode with a request body: the first attempt goes through Envoy's router while the
    /// filter copies the body (bounded), so later attempts can be sent with `dispatch_http_call`.
    /// (Envoy's Wasm host turns a paused request-headers phase into "stop all", so a filter
    /// cannot read the body while it holds the headers back from the router.)
    Streaming,
    /// Filter mode, attempts under way (the job registry owns the request).
    Job,
    /// Answered locally.
    Replied,
}

struct RetryHttp {
    id: u32,
    shared: Option<Rc<Shared>>,
    stage: Stage,
    policy: Option<Policy>,
    probe: bool,
    /// Router mode: retries reserved from the budget.
    reserved: u32,
    /// Filter mode: retries this request may make.
    max_retries: u32,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    body_complete: bool,
    body_overflow: bool,
}

impl Context for RetryHttp {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _: usize) {
        on_attempt_response(token, headers, body);
    }
}

impl Drop for RetryHttp {
    fn drop(&mut self) {
        if self.stage == Stage::Job {
            JOBS.with(|jobs| {
                if let Ok(mut jobs) = jobs.try_borrow_mut() {
                    jobs.jobs.remove(&self.id);
                }
            });
        }
    }
}

impl HttpContext for RetryHttp {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let host = ProxyHost;
        let info = request_info_reading(
            &host,
            wasmgate_core::rules::needs_route(&shared.config.rules),
            &shared.config.header_needs,
        );
        let policy = shared.config.policy_for(&info).clone();
        if !policy.enabled {
            self.stage = Stage::Passthrough;
            return Action::Continue;
        }
        if let Some(cb) = &policy.breaker {
            match breaker::admit(&host, &shared.breaker_key(&policy), cb, now_ms()) {
                Ok(Admission::Allow) => {}
                Ok(Admission::Probe) => self.probe = true,
                Ok(Admission::Reject { retry_after_secs }) => {
                    shared.metrics.short_circuited.inc();
                    log::debug!("wasmgate retry: circuit {} open", policy.breaker_id);
                    host.send_reply(
                        &LocalReply::new(
                            503,
                            "circuit_open",
                            "The upstream is failing, so the circuit breaker is not sending requests to it for now.",
                        )
                        .with_header("retry-after", retry_after_secs.to_string()),
                    );
                    self.stage = Stage::Replied;
                    return Action::Pause;
                }
                Err(e) => log::warn!("wasmgate retry: circuit breaker unavailable: {e:?}"),
            }
        }
        let now_s = host.unix_seconds();
        let mut retries = policy.max_retries;
        let has_key = info.header(&shared.config.idempotency_key_header).is_some();
        if retries > 0 && !policy::retries_allowed(&info.method, has_key, policy.non_idempotent) {
            shared.metrics.denied_idempotency.inc();
            log::debug!(
                "wasmgate retry: {} without idempotency key: one attempt",
                info.method
            );
            retries = 0;
        }
        // Count the request in the budget; router mode also reserves its retries, in the same
        // shared-data write.
        let reserve = if shared.config.mode == Mode::Router {
            retries
        } else {
            0
        };
        if let Some(b) = &shared.config.budget {
            match budget::record_and_reserve(&host, &shared.budget_key(), now_s, b, reserve) {
                Ok(got) => {
                    if got < reserve {
                        shared.metrics.denied_budget.inc();
                    }
                    if reserve > 0 {
                        retries = got;
                    }
                }
                Err(e) => log::warn!("wasmgate retry: budget not updated: {e:?}"),
            }
        }
        match shared.config.mode {
            Mode::Router => {
                self.reserved = retries;
                if retries == 0 {
                    self.set_http_request_header("x-envoy-retry-on", None);
                    self.set_http_request_header("x-envoy-retriable-status-codes", None);
                }
                for (name, value) in policy::router_headers(&policy, retries) {
                    self.set_http_request_header(name, Some(&value));
                }
                self.stage = Stage::Forwarded;
                self.policy = Some(policy);
                Action::Continue
            }
            Mode::Filter => {
                let max_body = shared
                    .config
                    .filter_mode
                    .as_ref()
                    .map_or(0, |f| f.max_body_bytes);
                let too_large = info
                    .header("content-length")
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .is_some_and(|n| n > max_body);
                self.policy = Some(policy);
                // The router never retries on its own in filter mode: the filter does.
                self.set_http_request_header("x-envoy-max-retries", Some("0"));
                if retries == 0 || too_large {
                    self.stage = Stage::Forwarded;
                    return Action::Continue;
                }
                self.max_retries = retries;
                self.headers = info.headers;
                if end_of_stream {
                    self.start_job();
                    Action::Pause
                } else {
                    self.stage = Stage::Streaming;
                    if let Some(t) = self.policy.as_ref().and_then(|p| p.per_try_timeout) {
                        let ms = t.as_millis().to_string();
                        self.set_http_request_header(
                            "x-envoy-upstream-rq-per-try-timeout-ms",
                            Some(&ms),
                        );
                    }
                    Action::Continue
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.stage != Stage::Streaming {
            return Action::Continue;
        }
        let max_body = self
            .shared
            .as_ref()
            .and_then(|s| s.config.filter_mode.as_ref())
            .map_or(0, |f| f.max_body_bytes);
        if !self.body_overflow && body_size > 0 {
            let chunk = self.get_http_request_body(0, body_size).unwrap_or_default();
            if self.body.len() + chunk.len() > max_body {
                log::debug!("wasmgate retry: body over max_body_bytes: one attempt");
                self.body_overflow = true;
                self.body = Vec::new();
            } else {
                self.body.extend_from_slice(&chunk);
            }
        }
        if end_of_stream {
            self.body_complete = true;
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        if self.stage == Stage::Streaming {
            self.trailers = header_map(MapType::HttpRequestTrailers);
            self.body_complete = true;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.stage == Stage::Streaming {
            return self.after_router_attempt();
        }
        if self.stage != Stage::Forwarded {
            return Action::Continue;
        }
        let (Some(shared), Some(policy)) = (self.shared.clone(), self.policy.clone()) else {
            return Action::Continue;
        };
        let status = header_value(MapType::HttpResponseHeaders, ":status")
            .and_then(|s| s.parse::<u16>().ok());
        shared.record_result(&policy, status, self.probe);
        if shared.config.mode == Mode::Router {
            let attempts = self.router_attempts();
            if let Some(attempts) = attempts {
                let retries = attempts.saturating_sub(1);
                if retries > 0 {
                    shared.metrics.retries.add(i64::from(retries));
                    let header = shared.config.attempts_header.clone();
                    self.set_http_response_header(&header, Some(&attempts.to_string()));
                }
                let unused = self.reserved.saturating_sub(retries);
                if unused > 0 {
                    let now_s = ProxyHost.unix_seconds();
                    let _ = budget::refund(&ProxyHost, &shared.budget_key(), now_s, unused);
                }
            }
        }
        self.stage = Stage::Passthrough;
        Action::Continue
    }
}

impl RetryHttp {
    /// How many upstream attempts the router made: the `upstream.request_attempt_count`
    /// attribute, else the `x-envoy-attempt-count` response header.
    fn router_attempts(&self) -> Option<u32> {
        if let Some(bytes) = self.get_property(vec!["upstream", "request_attempt_count"]) {
            if let Ok(raw) = <[u8; 8]>::try_from(bytes.as_slice()) {
                return u32::try_from(u64::from_le_bytes(raw)).ok();
            }
            if let Some(n) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                return Some(n);
            }
        }
        header_value(MapType::HttpResponseHeaders, "x-envoy-attempt-count")
            .and_then(|v| v.parse().ok())
    }

    /// Filter mode, request without body: every attempt is a `dispatch_http_call`.
    fn start_job(&mut self) {
        if self.insert_job(0) {
            dispatch(self.id);
        }
    }

    /// Filter mode, request with a body: the router's response to the first attempt arrived.
    /// If it is to be retried, the response is held back and later attempts are dispatched;
    /// else it goes to the client untouched.
    fn after_router_attempt(&mut self) -> Action {
        if self.body_overflow || !self.body_complete || !self.insert_job(1) {
            self.stage = Stage::Forwarded;
            return self.on_http_response_headers(0, false);
        }
        let headers = header_map(MapType::HttpResponseHeaders);
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok())
            .unwrap_or(502);
        // A response the router made itself (connect failure, reset, per-try timeout) is "no
        // response"; one from the upstream has the details `via_upstream`.
        let no_response = self
            .get_property(vec!["response", "code_details"])
            .is_some_and(|d| !d.is_empty() && d != b"via_upstream");
        let attempt = Attempt {
            status,
            headers,
            body: Vec::new(),
            no_response,
        };
        match plan_next(self.id, Some(&attempt)) {
            Some(Next::Retry(delay)) => {
                schedule_retry(self.id, delay);
                Action::Pause
            }
            _ => {
                let job = with_jobs(|jobs| jobs.jobs.remove(&self.id)).flatten();
                self.stage = Stage::Passthrough;
                if let Some(job) = job {
                    job.shared
                        .record_result(&job.policy, Some(status), job.probe);
                }
                Action::Continue
            }
        }
    }

    /// Registers this request as a job that has made `attempts` attempts already.
    fn insert_job(&mut self, attempts: u32) -> bool {
        let (Some(shared), Some(policy)) = (self.shared.clone(), self.policy.clone()) else {
            return false;
        };
        let Some(filter_mode) = shared.config.filter_mode.clone() else {
            return false;
        };
        self.stage = Stage::Job;
        let body = Some(std::mem::take(&mut self.body));
        let trailers = std::mem::take(&mut self.trailers);
        let headers = std::mem::take(&mut self.headers)
            .into_iter()
            .filter(|(n, _)| n != "transfer-encoding" && n != "content-length")
            .collect();
        let body = body.filter(|b| !b.is_empty());
        let job = Job {
            shared,
            policy,
            cluster: filter_mode.cluster,
            headers,
            body,
            trailers,
            attempts,
            max_retries: self.max_retries,
            deadline_ms: now_ms()
                .saturating_add(u64::try_from(filter_mode.timeout.as_millis()).unwrap_or(u64::MAX)),
            wake_at_ms: None,
            probe: self.probe,
        };
        with_jobs(|jobs| jobs.jobs.insert(self.id, job)).is_some()
    }
}

/// One buffered request in filter mode.
struct Job {
    shared: Rc<Shared>,
    policy: Policy,
    cluster: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    trailers: Vec<(String, String)>,
    /// Attempts sent so far.
    attempts: u32,
    max_retries: u32,
    deadline_ms: u64,
    wake_at_ms: Option<u64>,
    probe: bool,
}

#[derive(Default)]
struct Jobs {
    /// By HTTP context id.
    jobs: HashMap<u32, Job>,
    /// Callout token -> HTTP context id.
    tokens: HashMap<u32, u32>,
    jitter: Option<Jitter>,
}

thread_local! {
    static JOBS: RefCell<Jobs> = RefCell::new(Jobs::default());
}

fn with_jobs<T>(f: impl FnOnce(&mut Jobs) -> T) -> Option<T> {
    JOBS.with(|jobs| jobs.try_borrow_mut().ok().map(|mut jobs| f(&mut jobs)))
}

/// Sends the next attempt of the job of context `ctx`.
fn dispatch(ctx: u32) {
    let now = now_ms();
    let request = with_jobs(|jobs| {
        let job = jobs.jobs.get_mut(&ctx)?;
        job.wake_at_ms = None;
        job.attempts += 1;
        let remaining = job.deadline_ms.saturating_sub(now).max(1);
        let per_try = job.policy.per_try_timeout.map_or(remaining, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
        });
        Some((
            job.cluster.clone(),
            job.headers.clone(),
            job.body.clone(),
            job.trailers.clone(),
            Duration::from_millis(per_try.min(remaining)),
        ))
    })
    .flatten();
    let Some((cluster, headers, body, trailers, timeout)) = request else {
        return;
    };
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let trailers: Vec<(&str, &str)> = trailers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    match hostcalls::dispatch_http_call(&cluster, headers, body.as_deref(), trailers, timeout) {
        Ok(token) => {
            with_jobs(|jobs| jobs.tokens.insert(token, ctx));
        }
        Err(status) => {
            log::warn!("wasmgate retry: dispatch to cluster {cluster} failed: {status:?}");
            after_attempt(ctx, None);
        }
    }
}

/// A response (or failure) of an attempt: read it in the callback's context, then decide.
fn on_attempt_response(token: u32, num_headers: usize, body_size: usize) {
    let Some(ctx) = with_jobs(|jobs| jobs.tokens.remove(&token)).flatten() else {
        return;
    };
    let response = if num_headers == 0 {
        None
    } else {
        let headers = header_map(MapType::HttpCallResponseHeaders);
        let body = if body_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok())
            .unwrap_or(502);
        Some(Attempt {
            no_response: policy::is_envoy_no_response(status, &body),
            status,
            headers,
            body,
        })
    };
    after_attempt(ctx, response);
}

/// An upstream response to one attempt.
struct Attempt {
    /// Envoy's own answer for "no upstream response" (timeout, connect failure, reset).
    no_response: bool,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

enum Next {
    Finish,
    Retry(Duration),
}

/// Decides between another attempt and the final answer.
fn after_attempt(ctx: u32, response: Option<Attempt>) {
    match plan_next(ctx, response.as_ref()) {
        Some(Next::Retry(delay)) => schedule_retry(ctx, delay),
        Some(Next::Finish) => finish(ctx, response),
        None => {}
    }
}

/// Whether the job of `ctx` gets another attempt after `response`, and after what wait: the
/// policy, the attempts left, the overall deadline, the circuit and the budget all agree.
/// `None` when the job is gone.
fn plan_next(ctx: u32, response: Option<&Attempt>) -> Option<Next> {
    let now_time = ProxyHost.now();
    let now = now_ms();
    let outcome = match response {
        Some(r) if !r.no_response => Outcome::Status(r.status),
        _ => Outcome::NoResponse,
    };
    let retry_after = response.and_then(|r| {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
            .map(|(_, v)| v.clone())
    });
    let (next, shared, policy) = with_jobs(|jobs| {
        let seed = unix_nanos(now_time) ^ u64::from(ctx);
        let random = jobs
            .jitter
            .get_or_insert_with(|| Jitter::new(seed))
            .next_u64();
        let job = jobs.jobs.get(&ctx)?;
        let next = match policy::plan_retry(
            &job.policy,
            &outcome,
            job.attempts,
            job.max_retries,
            retry_after.as_deref(),
            now_time,
            job.deadline_ms.saturating_sub(now),
            random,
        ) {
            Some(delay) => Next::Retry(delay),
            None => Next::Finish,
        };
        Some((next, Rc::clone(&job.shared), job.policy.clone()))
    })
    .flatten()?;
    let Next::Retry(delay) = next else {
        return Some(Next::Finish);
    };
    if policy.breaker.is_some() && breaker::is_open(&ProxyHost, &shared.breaker_key(&policy), now) {
        return Some(Next::Finish);
    }
    if let Some(b) = &shared.config.budget {
        let now_s = now / 1000;
        if budget::reserve(&ProxyHost, &shared.budget_key(), now_s, b, 1).unwrap_or(0) == 0 {
            shared.metrics.denied_budget.inc();
            return Some(Next::Finish);
        }
    }
    shared.metrics.retries.inc();
    Some(Next::Retry(delay))
}

/// Sends the next attempt of `ctx` now, or arms the root timer for it.
fn schedule_retry(ctx: u32, delay: Duration) {
    if delay.is_zero() {
        if hostcalls::set_effective_context(ctx).is_ok() {
            dispatch(ctx);
        }
        return;
    }
    let now = now_ms();
    let wake = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(0));
    with_jobs(|jobs| {
        if let Some(job) = jobs.jobs.get_mut(&ctx) {
            job.wake_at_ms = Some(wake);
        }
    });
    arm_timer(now);
}

/// Answers the client with the final upstream response (or 503 when there was none).
fn finish(ctx: u32, response: Option<Attempt>) {
    let Some(job) = with_jobs(|jobs| jobs.jobs.remove(&ctx)).flatten() else {
        return;
    };
    job.shared
        .record_result(&job.policy, response.as_ref().map(|r| r.status), job.probe);
    if hostcalls::set_effective_context(ctx).is_err() {
        return;
    }
    let attempts = job.attempts.to_string();
    let attempts_header = (job.attempts > 1).then_some((
        job.shared.config.attempts_header.as_str(),
        attempts.as_str(),
    ));
    let result = match &response {
        Some(r) => {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .filter(|(n, _)| {
                    !n.starts_with(':')
                        && !matches!(
                            n.as_str(),
                            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
                        )
                })
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .chain(attempts_header)
                .collect();
            let body = (!r.body.is_empty()).then_some(r.body.as_slice());
            hostcalls::send_http_response(u32::from(r.status), headers, body)
        }
        None => {
            let reply = LocalReply::new(
                503,
                "upstream_unavailable",
                "The upstream did not answer any attempt.",
            );
            let body = reply.body();
            let headers: Vec<(&str, &str)> = reply
                .all_headers()
                .into_iter()
                .chain(attempts_header)
                .collect();
            hostcalls::send_http_response(503, headers, Some(&body))
        }
    };
    if let Err(status) = result {
        log::warn!("wasmgate retry: could not answer the client: {status:?}");
    }
}

/// Points the root context's tick at the earliest waiting job (or stops it).
fn arm_timer(now: u64) {
    let earliest =
        with_jobs(|jobs| jobs.jobs.values().filter_map(|j| j.wake_at_ms).min()).flatten();
    let period = earliest.map_or(Duration::ZERO, |at| {
        Duration::from_millis(at.saturating_sub(now).max(1))
    });
    let _ = hostcalls::set_tick_period(period);
}

/// Root tick: sends every attempt whose wait is over, then re-arms the timer.
fn on_tick() {
    let now = now_ms();
    let due: Vec<u32> = with_jobs(|jobs| {
        jobs.jobs
            .iter()
            .filter(|(_, j)| j.wake_at_ms.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect()
    })
    .unwrap_or_default();
    for ctx in due {
        if hostcalls::set_effective_context(ctx).is_ok() {
            dispatch(ctx);
        } else {
            with_jobs(|jobs| jobs.jobs.remove(&ctx));
        }
    }
    arm_timer(now);
}
