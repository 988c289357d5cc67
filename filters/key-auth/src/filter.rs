//! The key-auth filter on the wasmgate frame: find the request's key, look its digest up, check
//! the route's requirements, and forward the client's identity or answer with a JSON reply.

use crate::config::{self, Client, Config, Policy, Source};
use crate::extract::{self, Presented};
use crate::keys::Lookup;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasmgate_core::host::{request_info, was_lossy};
use wasmgate_core::{ConfigError, LocalReply, Outcome, RequestInfo, Selected};
use wasmgate_host::{select, Counter, Cx, Filter, MetricNames, Setup, Uses};

/// The filter's name in logs, metrics and Envoy config.
pub const FILTER: &str = "key-auth";

/// Why a request was refused; each is a reply code and a metric's `reason`. The order of
/// [`Denial::ALL`] is the order of the variants (a denial indexes its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No key where one is required.
    Missing,
    /// A key no client has, or one outside its validity period.
    Invalid,
    /// Two different keys.
    Ambiguous,
    /// The client lacks a scope the route requires.
    InsufficientScope,
    /// The route allows other clients only.
    ClientNotAllowed,
}

impl Denial {
    /// Every denial, for metric definitions.
    pub const ALL: [Self; 5] = [
        Self::Missing,
        Self::Invalid,
        Self::Ambiguous,
        Self::InsufficientScope,
        Self::ClientNotAllowed,
    ];

    /// The reply's `error` and the metric's `reason` label.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_api_key",
            Self::Invalid => "invalid_api_key",
            Self::Ambiguous => "ambiguous_credentials",
            Self::InsufficientScope => "insufficient_scope",
            Self::ClientNotAllowed => "client_not_allowed",
        }
    }

    fn status(self) -> u32 {
        match self {
            Self::Missing | Self::Invalid => 401,
            Self::Ambiguous => 400,
            Self::InsufficientScope | Self::ClientNotAllowed => 403,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::Missing => "An API key is required.",
            Self::Invalid => "The API key is not valid.",
            Self::Ambiguous => "The request carries more than one API key.",
            Self::InsufficientScope => "The API key's client lacks a scope this route requires.",
            Self::ClientNotAllowed => "The API key's client is not allowed on this route.",
        }
    }
}

/// The challenge of one source: `Bearer` for an `Authorization` header read after `Bearer `,
/// otherwise `ApiKey` naming where the key goes.
fn challenge(source: &Source) -> String {
    match source {
        Source::Header { name, prefix }
            if name == "authorization"
                && prefix
                    .as_deref()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("bearer")) =>
        {
            "Bearer".into()
        }
        Source::Header { name, .. } => format!("ApiKey header=\"{name}\""),
        Source::Query(name) => format!("ApiKey query=\"{name}\""),
        Source::Cookie(name) => format!("ApiKey cookie=\"{name}\""),
    }
}

/// The reply to a denial; `found_in` is the source the key came from, when there was one.
fn reply(denial: Denial, sources: &[Source], found_in: Option<&Source>) -> LocalReply {
    let reply = LocalReply::new(denial.status(), denial.code(), denial.message());
    let challenges = match (denial, found_in) {
        (Denial::Missing, _) => {
            let mut all: Vec<String> = Vec::new();
            for c in sources.iter().map(challenge) {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
            all.join(", ")
        }
        (Denial::Invalid, Some(source)) => match challenge(source) {
            bearer if bearer == "Bearer" => "Bearer error=\"invalid_token\"".into(),
            other => other,
        },
        (Denial::InsufficientScope, Some(source)) if challenge(source) == "Bearer" => {
            "Bearer error=\"insufficient_scope\"".into()
        }
        _ => return reply,
    };
    reply.with_header("www-authenticate", challenges)
}

/// The filter's counters: `requests_total` by outcome (and reason when denied), and
/// `client_requests_total` by client and outcome, defined when a worker first sees the client.
struct Metrics {
    allowed: Counter,
    allowed_anonymous: Counter,
    /// One per [`Denial::ALL`], in its order.
    denied: [Counter; Denial::ALL.len()],
    names: MetricNames,
    /// Per client index: (allowed, denied).
    clients: RefCell<BTreeMap<u32, (Counter, Counter)>>,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        let requests = |labels: &[(&str, &str)]| setup.counter_with("requests_total", labels);
        Self {
            allowed: requests(&[("outcome", "allowed")]),
            allowed_anonymous: requests(&[("outcome", "allowed_anonymous")]),
            denied: Denial::ALL.map(|d| requests(&[("outcome", "denied"), ("reason", d.code())])),
            names: setup.metric_names(),
            clients: RefCell::default(),
        }
    }

    /// The counter of a denial.
    fn denied(&self, denial: Denial) -> Counter {
        self.denied[denial as usize]
    }

    /// The (allowed, denied) counters of a client, defined on first use.
    fn client(&self, cx: &Cx<'_>, index: u32, client: &Client) -> (Counter, Counter) {
        *self.clients.borrow_mut().entry(index).or_insert_with(|| {
            let define = |outcome| {
                let labels = [("outcome", outcome), ("client", client.id.as_str())];
                cx.define_counter(&self.names, "client_requests_total", &labels)
            };
            (define("allowed"), define("denied"))
        })
    }
}

/// One configuration on one worker.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
}

/// One stream.
pub struct KeyAuth {
    plugin: Rc<Plugin>,
}

impl Filter for KeyAuth {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses::HEADERS;

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let config = config::parse(json)?;
        log::info!(
            "wasmgate {FILTER}: configured {} clients with {} keys",
            config.clients.len(),
            config.keys.len()
        );
        Ok(Plugin {
            metrics: Metrics::define(setup),
            config,
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
        }
    }

    fn unconfigured() -> Option<LocalReply> {
        Some(LocalReply::new(
            500,
            "filter_not_configured",
            "The API key filter has no valid configuration.",
        ))
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _end_of_stream: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let config = &plugin.config;
        let mut info = request_info(cx.host(), config.policies.reads_route());
        let selected = match select(cx, &config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        // The identity headers are this filter's to set: a client's copies are removed on every
        // route, a route where the filter is off included (its upstream may trust them too).
        for name in [&config.forward.client_header, &config.forward.scopes_header] {
            if info.header(name).is_some() {
                cx.request.remove(name.clone());
            }
        }
        let policy = match selected {
            Selected::Disabled => return Outcome::Continue,
            Selected::Default(policy) | Selected::Rule { policy, .. } => policy,
        };
        match self.decide(cx, policy, &info) {
            Ok(()) => Outcome::Continue,
            Err(reply) => Outcome::Reply(reply),
        }
    }
}

impl KeyAuth {
    /// Allows the request (queuing the identity headers and the key's removal) or says why not.
    fn decide(
        &self,
        cx: &mut Cx<'_>,
        policy: &Policy,
        info: &RequestInfo,
    ) -> Result<(), LocalReply> {
        let config = &self.plugin.config;
        let metrics = &self.plugin.metrics;
        let sources = &config.sources;
        let deny = |cx: &Cx<'_>, denial: Denial, found_in: Option<&Source>| {
            cx.count(metrics.denied(denial));
            log::debug!(
                "wasmgate {FILTER}: denied {} ({})",
                info.path,
                denial.code()
            );
            reply(denial, sources, found_in)
        };
        let (key, found_in) = match extract::presented(sources, info) {
            Presented::Missing if policy.allow_missing => {
                cx.count(metrics.allowed_anonymous);
                return Ok(());
            }
            Presented::Missing => return Err(deny(cx, Denial::Missing, None)),
            Presented::Ambiguous => return Err(deny(cx, Denial::Ambiguous, None)),
            Presented::Key { key, sources } => (key, sources),
        };
        let first = found_in.first().and_then(|&i| sources.get(i));
        // A key that was not UTF-8 reads as U+FFFD replacements: many byte strings would read
        // the same, so it matches nothing.
        if was_lossy(&key) {
            return Err(deny(cx, Denial::Invalid, first));
        }
        let now = cx.host().now_ms() / 1000;
        let index = match config.keys.lookup(&key, now) {
            Lookup::Valid(index) => index,
            Lookup::Retired | Lookup::Unknown => return Err(deny(cx, Denial::Invalid, first)),
        };
        let Some(client) = config.clients.get(index as usize) else {
            return Err(deny(cx, Denial::Invalid, first));
        };
        let (client_allowed, client_denied) = metrics.client(cx, index, client);
        let refusal = if !policy
            .allowed_clients
            .as_ref()
            .is_none_or(|allowed| allowed.binary_search(&index).is_ok())
        {
            Some(Denial::ClientNotAllowed)
        } else if !policy
            .required_scopes
            .iter()
            .all(|scope| client.scopes.contains(scope))
        {
            Some(Denial::InsufficientScope)
        } else {
            None
        };
        if let Some(denial) = refusal {
            cx.count(client_denied);
            log::debug!(
                "wasmgate {FILTER}: client {} refused: {}",
                client.id,
                denial.code()
            );
            return Err(deny(cx, denial, first));
        }
        let forward = &config.forward;
        if forward.hide_credentials {
            extract::hide(sources, &found_in, &key, info, &mut cx.request);
        }
        cx.request
            .set(forward.client_header.clone(), client.id.clone());
        if !client.scopes_header.is_empty() {
            cx.request
                .set(forward.scopes_header.clone(), client.scopes_header.clone());
        }
        cx.count(metrics.allowed);
        cx.count(client_allowed);
        log::debug!(
            "wasmgate {FILTER}: allowed client {} on {}",
            client.id,
            info.path
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
