//! The credential-inject filter on the wasmgate frame: pick the route's credential, set its
//! header (a static value, or `Bearer` with the shared OAuth2 token), wait briefly for a first
//! token, and drop a token the upstream refuses. The plugin fetches tokens on its timer.

use crate::config::{self, Config, Credential, Kind, Oauth2, OnUnavailable};
use crate::fetch;
use crate::token::{Availability, SharedToken};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::host::{request_info_reading, HeaderMap, HeaderNeeds, Host};
use wasmgate_core::{fnv1a, Answer, ConfigError, LocalReply, Outcome, Selected};
use wasmgate_host::{select, Counter, Cx, Filter, Gauge, RootCx, Setup, Uses};

/// The filter's name in logs, metrics and Envoy config.
pub const FILTER: &str = "credential-inject";
/// The plugin's timer: wakes waiting requests and starts fetches.
const TICK: Duration = Duration::from_millis(100);
/// When nothing waits and every token is there, shared data is read this often.
const IDLE_SYNC_MS: u64 = 1_000;

/// One credential's metrics, labelled with its name; those of a token are no-ops for a static
/// header.
#[derive(Clone, Copy, Default)]
struct CredentialMetrics {
    injected: Counter,
    fetched: Counter,
    fetch_failed: Counter,
    purged: Counter,
    /// `unavailable_total` with the outcome `on_unavailable` gives: `refused` or `passed`.
    unavailable: Counter,
    token_age: Gauge,
}

/// The filter's metrics: per credential, and the requests whose own credential was kept.
struct Metrics {
    kept_client_credential: Counter,
    by_credential: Vec<CredentialMetrics>,
}

impl Metrics {
    fn define(setup: &Setup<'_>, config: &Config) -> Self {
        let unavailable = match config.on_unavailable {
            OnUnavailable::Deny => "refused",
            OnUnavailable::Pass => "passed",
        };
        let per = |c: &Credential| {
            let name = ("credential", c.name.as_str());
            let injected = setup.counter_with("injected_total", &[name]);
            if !matches!(c.kind, Kind::Oauth2(_)) {
                return CredentialMetrics {
                    injected,
                    ..CredentialMetrics::default()
                };
            }
            let with_outcome =
                |what, outcome| setup.counter_with(what, &[("outcome", outcome), name]);
            CredentialMetrics {
                injected,
                fetched: with_outcome("token_fetches_total", "success"),
                fetch_failed: with_outcome("token_fetches_total", "failure"),
                purged: setup.counter_with("token_purged_total", &[name]),
                unavailable: with_outcome("unavailable_total", unavailable),
                token_age: setup.gauge_with("token_age_seconds", &[name]),
            }
        };
        Self {
            kept_client_credential: setup.counter("kept_client_credential_total"),
            by_credential: config.credentials.iter().map(per).collect(),
        }
    }

    /// The metrics of credential `index`.
    fn of(&self, index: usize) -> CredentialMetrics {
        self.by_credential.get(index).copied().unwrap_or_default()
    }
}

/// One configuration on one worker: the credentials, this worker's copy of each token's shared
/// state (by credential index; static credentials keep an empty one), its fetches in flight.
pub struct Plugin {
    config: Config,
    needs: HeaderNeeds,
    metrics: Metrics,
    tokens: RefCell<Vec<SharedToken>>,
    fetching: RefCell<Vec<usize>>,
    last_sync_ms: Cell<u64>,
}

/// One stream: the token it injected (credential index and generation), or the credential it
/// waits for and until when.
pub struct CredentialInject {
    plugin: Rc<Plugin>,
    injected: Option<(usize, u64)>,
    waiting: Option<(usize, u64)>,
}

/// The OAuth2 grants with their credential index.
fn grants(config: &Config) -> impl Iterator<Item = (usize, &Oauth2)> {
    config
        .credentials
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.kind {
            Kind::Oauth2(grant) => Some((i, grant.as_ref())),
            Kind::Header { .. } => None,
        })
}

/// A grant's shared-data key: the grant's identity (endpoint, client, scopes, parameters; not
/// the secret) under the plugin's namespace, so an unchanged grant keeps its token across
/// configuration changes and a changed one fetches a new one.
fn shared_key(setup: &Setup<'_>, name: &str, grant: &Oauth2) -> String {
    let identity = format!(
        "{}\n{}\n{}\n{}\n{}\n{:?}\n{:?}\n{:?}",
        grant.cluster,
        grant.scheme,
        grant.authority,
        grant.path,
        grant.client_id,
        grant.auth,
        grant.scopes,
        grant.params
    );
    setup
        .plugin_namespace()
        .key(&format!("token/{name}/{:016x}", fnv1a(identity.as_bytes())))
}

impl Plugin {
    /// Reads one grant's shared token state into this worker's copy.
    fn sync(&self, host: &dyn Host, index: usize, grant: &Oauth2) {
        let bytes = host
            .get_shared(&grant.shared_key)
            .ok()
            .and_then(|(b, _)| b)
            .unwrap_or_default();
        if let Some(slot) = self.tokens.borrow_mut().get_mut(index) {
            *slot = SharedToken::decode(&bytes);
        }
    }

    /// What a request can get from this worker's copy of a grant's token.
    fn availability(&self, index: usize, now: u64) -> Availability {
        self.tokens
            .borrow()
            .get(index)
            .map_or(Availability::Unavailable, |t| t.availability(now))
    }

    /// True when the timer's work can be skipped: nothing waits or is fetched, every token is
    /// usable, and shared data was read less than [`IDLE_SYNC_MS`] ago.
    fn idle(&self, waiting: usize, now: u64) -> bool {
        let all_usable = grants(&self.config).all(|(i, _)| {
            self.tokens
                .borrow()
                .get(i)
                .is_some_and(|t| t.usable(now).is_some() && now < t.refresh_at)
        });
        let busy = waiting > 0 || !self.fetching.borrow().is_empty();
        !busy && all_usable && now < self.last_sync_ms.get().saturating_add(IDLE_SYNC_MS)
    }

    /// Claims a grant's fetch when it is due (CAS, so one worker of the process fetches).
    fn claim(&self, host: &dyn Host, index: usize, grant: &Oauth2, now: u64) -> bool {
        if self.fetching.borrow().contains(&index) {
            return false;
        }
        let won = wasmgate_core::shared::update(host, &grant.shared_key, |bytes| {
            let mut state = SharedToken::decode(bytes);
            if state.due(now) {
                state.claim(now, grant.timeout_ms);
                (Some(state.encode()), true)
            } else {
                (None, false)
            }
        })
        .unwrap_or(false);
        if won {
            self.fetching.borrow_mut().push(index);
        }
        won
    }

    /// Stores a fetch's result for every worker, then in this worker's copy.
    fn finish(
        &self,
        host: &dyn Host,
        index: usize,
        grant: &Oauth2,
        result: &Result<fetch::Token, String>,
    ) {
        self.fetching.borrow_mut().retain(|i| *i != index);
        let now = host.now_ms();
        let refresh_before = self.config.refresh_before_ms;
        let _ = wasmgate_core::shared::update(host, &grant.shared_key, |bytes| {
            let mut state = SharedToken::decode(bytes);
            match result {
                Ok(token) => {
                    state.succeeded(now, token.value.clone(), token.lifetime_ms, refresh_before)
                }
                Err(_) => state.failed(now),
            }
            (Some(state.encode()), ())
        });
        self.sync(host, index, grant);
    }

    /// Drops the token of `generation` for every worker; true when this call dropped it.
    fn purge(&self, host: &dyn Host, index: usize, grant: &Oauth2, generation: u64) -> bool {
        let dropped = wasmgate_core::shared::update(host, &grant.shared_key, |bytes| {
            let mut state = SharedToken::decode(bytes);
            if state.purge(generation) {
                (Some(state.encode()), true)
            } else {
                (None, false)
            }
        })
        .unwrap_or(false);
        self.sync(host, index, grant);
        dropped
    }
}

impl CredentialInject {
    /// Injects an OAuth2 token, waits for a first one, or answers that none is available.
    fn oauth2(&mut self, cx: &mut Cx<'_>, index: usize, may_wait: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let now = cx.host().now_ms();
        match plugin.availability(index, now) {
            Availability::Ready(token, generation) => {
                cx.request.set("authorization", format!("Bearer {token}"));
                self.injected = Some((index, generation));
                self.waiting = None;
                self.count_injected(cx, index);
                Outcome::Continue
            }
            Availability::Pending if may_wait => {
                let timeout = match plugin.config.credentials.get(index).map(|c| &c.kind) {
                    Some(Kind::Oauth2(grant)) => grant.timeout_ms,
                    _ => 0,
                };
                let until_ms = now.saturating_add(timeout);
                self.waiting = Some((index, until_ms));
                Outcome::Wait { until_ms }
            }
            Availability::Pending | Availability::Unavailable => self.unavailable(cx, index),
        }
    }

    fn count_injected(&self, cx: &Cx<'_>, index: usize) {
        cx.count(self.plugin.metrics.of(index).injected);
    }

    /// No credential to inject: 503, or on with nothing injected (`on_unavailable`).
    fn unavailable(&mut self, cx: &mut Cx<'_>, index: usize) -> Outcome {
        self.waiting = None;
        let plugin = &self.plugin;
        let name = plugin
            .config
            .credentials
            .get(index)
            .map_or("", |c| c.name.as_str());
        cx.count(plugin.metrics.of(index).unavailable);
        match plugin.config.on_unavailable {
            OnUnavailable::Deny => {
                log::debug!("wasmgate {FILTER}: credential {name} unavailable");
                Outcome::Reply(LocalReply::new(
                    503,
                    "credential_unavailable",
                    "The credential for this upstream is not available.",
                ))
            }
            OnUnavailable::Pass => {
                log::debug!("wasmgate {FILTER}: credential {name} unavailable; passed without it");
                Outcome::Continue
            }
        }
    }
}

impl Filter for CredentialInject {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses {
        bodies: false,
        callouts: true,
        waits: true,
    };

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let mut config = config::parse(json)?;
        for credential in &mut config.credentials {
            if let Kind::Oauth2(grant) = &mut credential.kind {
                grant.shared_key = shared_key(setup, &credential.name, grant);
            }
        }
        let needs = config
            .policies
            .header_needs(config.credentials.iter().map(|c| c.header().to_string()));
        let plugin = Plugin {
            metrics: Metrics::define(setup, &config),
            needs,
            tokens: RefCell::new(vec![SharedToken::default(); config.credentials.len()]),
            fetching: RefCell::default(),
            last_sync_ms: Cell::new(0),
            config,
        };
        // A token another worker (or an earlier configuration) fetched is used at once.
        for (index, grant) in grants(&plugin.config) {
            plugin.sync(setup.host(), index, grant);
        }
        Ok(plugin)
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            injected: None,
            waiting: None,
        }
    }

    fn unconfigured() -> Option<LocalReply> {
        Some(LocalReply::new(
            503,
            "credential_unavailable",
            "The credential filter has no valid configuration.",
        ))
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _end_of_stream: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let config = &plugin.config;
        let mut info =
            request_info_reading(cx.host(), config.policies.reads_route(), &plugin.needs);
        let selected = match select(cx, &config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        let index = match selected {
            Selected::Disabled => return Outcome::Continue,
            Selected::Default(policy) | Selected::Rule { policy, .. } => match policy.credential {
                Some(index) => index,
                None => return Outcome::Continue,
            },
        };
        let Some(credential) = config.credentials.get(index) else {
            return Outcome::Continue;
        };
        if !config.overwrite && info.header(credential.header()).is_some() {
            cx.count(plugin.metrics.kept_client_credential);
            return Outcome::Continue;
        }
        match &credential.kind {
            Kind::Header { name, value } => {
                cx.request.set(name.clone(), value.expose().to_string());
                self.count_injected(cx, index);
                Outcome::Continue
            }
            Kind::Oauth2(_) => self.oauth2(cx, index, true),
        }
    }

    fn on_wake(&mut self, cx: &mut Cx<'_>) -> Outcome {
        let Some((index, until_ms)) = self.waiting else {
            return Outcome::Continue;
        };
        let now = cx.host().now_ms();
        match self.plugin.availability(index, now) {
            Availability::Pending if now < until_ms => Outcome::Wait { until_ms },
            _ => self.oauth2(cx, index, false),
        }
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _end_of_stream: bool) -> Outcome {
        let Some((index, generation)) = self.injected else {
            return Outcome::Continue;
        };
        let plugin = Rc::clone(&self.plugin);
        let status = cx
            .host()
            .header(HeaderMap::Response, ":status")
            .and_then(|s| s.parse::<u16>().ok());
        let Some(status) = status.filter(|s| plugin.config.purge_on_status.contains(s)) else {
            return Outcome::Continue;
        };
        let Some(credential) = plugin.config.credentials.get(index) else {
            return Outcome::Continue;
        };
        if let Kind::Oauth2(grant) = &credential.kind {
            if plugin.purge(cx.host(), index, grant, generation) {
                cx.count(plugin.metrics.of(index).purged);
                log::info!(
                    "wasmgate {FILTER}: the upstream answered {status}; token of {} dropped, a new one will be fetched",
                    credential.name
                );
            }
        }
        Outcome::Continue
    }

    fn tick_period(plugin: &Plugin) -> Option<Duration> {
        grants(&plugin.config).next().map(|_| TICK)
    }

    fn on_tick(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>) {
        let now = cx.host().now_ms();
        if plugin.idle(cx.waiting(), now) {
            return;
        }
        plugin.last_sync_ms.set(now);
        for (index, grant) in grants(&plugin.config) {
            plugin.sync(cx.host(), index, grant);
            if plugin.claim(cx.host(), index, grant, now) {
                let key = u64::try_from(index).unwrap_or(u64::MAX);
                cx.call(key, fetch::request(grant), fetch::MAX_ANSWER_BYTES);
            }
            let fetched_at = plugin
                .tokens
                .borrow()
                .get(index)
                .map_or(0, |t| t.fetched_at);
            if fetched_at > 0 {
                let age = now.saturating_sub(fetched_at) / 1000;
                cx.record(plugin.metrics.of(index).token_age, age);
            }
        }
        cx.wake_waiting();
    }

    fn on_plugin_answer(plugin: &Rc<Plugin>, cx: &mut RootCx<'_>, key: u64, answer: Answer) {
        let Ok(index) = usize::try_from(key) else {
            return;
        };
        let Some(credential) = plugin.config.credentials.get(index) else {
            return;
        };
        let Kind::Oauth2(grant) = &credential.kind else {
            return;
        };
        let result = fetch::token(answer);
        let metrics = plugin.metrics.of(index);
        match &result {
            Ok(token) => {
                cx.add(metrics.fetched, 1);
                cx.record(metrics.token_age, 0);
                log::info!(
                    "wasmgate {FILTER}: fetched a token for {} (valid {} s)",
                    credential.name,
                    token.lifetime_ms / 1000
                );
            }
            Err(reason) => {
                cx.add(metrics.fetch_failed, 1);
                log::warn!(
                    "wasmgate {FILTER}: token fetch for {} failed: {reason}; the current token (if any) stays in use until it expires",
                    credential.name
                );
            }
        }
        plugin.finish(cx.host(), index, grant, &result);
        cx.wake_waiting();
    }
}

#[cfg(test)]
mod tests;
