//! The hmac-auth filter on the wasmgate frame: check the signature headers, buffer the body
//! within `max_body_bytes`, verify, claim the replay id, settle it when the upstream answers.

use crate::config::{self, Config, FILTER};
use crate::replay::{Claim, Fingerprint, Table};
use crate::verify::{self, Pending, Reject, Request};
use std::rc::Rc;
use wasmgate_core::host::{request_info, HeaderMap};
use wasmgate_core::outcome::parse_status;
use wasmgate_core::request::declared_length;
use wasmgate_core::{Body, BodyMode, BodyNeed, ConfigError, LocalReply, Outcome, Selected};
use wasmgate_host::{select, Counter, CounterSet, Cx, Direction, Filter, Setup, Uses};

/// The reject codes that have a `rejected_<code>` counter.
const REJECT_CODES: [&str; 6] = [
    "missing_signature",
    "invalid_signature",
    "wrong_credential_scope",
    "stale_timestamp",
    "malformed_signature",
    "body_too_large",
];

/// The metric name suffix for a secret id (`.` and `-` become `_`).
pub fn secret_metric(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("matched_{clean}")
}

/// The filter's counters.
struct Metrics {
    verified: Counter,
    skipped: Counter,
    replays: Counter,
    replay_unavailable: Counter,
    rejected: CounterSet,
    matched: CounterSet,
}

impl Metrics {
    fn define(setup: &Setup<'_>, config: &Config) -> Self {
        Self {
            verified: setup.counter("verified"),
            skipped: setup.counter("skipped"),
            replays: setup.counter("replays"),
            replay_unavailable: setup.counter("replay_unavailable"),
            rejected: CounterSet::define(
                setup,
                REJECT_CODES.map(|code| (code, format!("rejected_{code}"))),
            ),
            matched: CounterSet::define(
                setup,
                config.secret_ids().into_iter().map(|id| {
                    let what = secret_metric(&id);
                    (id, what)
                }),
            ),
        }
    }
}

/// One configuration: policies, counters and the replay table.
pub struct Plugin {
    config: Config,
    metrics: Metrics,
    table: Option<Table>,
}

/// One stream: the selected policy, the request waiting for its body, the claimed replay id.
pub struct HmacAuth {
    plugin: Rc<Plugin>,
    /// The matched rule; `None` for the defaults.
    rule: Option<usize>,
    request: Option<(Request, Pending)>,
    /// Replay id claimed as in flight, settled when the upstream answers.
    claimed: Option<Fingerprint>,
}

impl HmacAuth {
    fn reject(&mut self, cx: &Cx<'_>, reject: &Reject) -> Outcome {
        self.request = None;
        let metrics = &self.plugin.metrics;
        if let Reject::Replayed = reject {
            cx.count(metrics.replays);
        } else {
            cx.count(metrics.rejected.get(reject.code()));
        }
        log::debug!("wasmgate {FILTER}: rejected: {}", reject.code());
        Outcome::Reply(LocalReply::new(
            reject.status(),
            reject.code(),
            reject.message(),
        ))
    }

    /// Verifies the complete body, then claims the replay id.
    fn finish(&mut self, cx: &Cx<'_>, body: &[u8]) -> Outcome {
        let Some((request, pending)) = self.request.take() else {
            return Outcome::Continue;
        };
        let plugin = Rc::clone(&self.plugin);
        let Some(policy) = plugin.config.policies.get(self.rule) else {
            return Outcome::Continue;
        };
        let verified = match verify::verify(policy, &pending, &request, body) {
            Ok(verified) => verified,
            Err(reject) => return self.reject(cx, &reject),
        };
        let key_id = policy.keys.get(verified.key_index).map(|k| k.id.as_str());
        if let Some(id) = key_id {
            cx.count(plugin.metrics.matched.get(id));
        }
        if let Some(table) = &plugin.table {
            let fp = Table::fingerprint(policy.index, policy.scheme.name(), &verified.replay_id);
            let now = cx.host().unix_seconds();
            match table.claim(cx.host(), &fp, now) {
                Ok(Claim::Claimed) => self.claimed = Some(fp),
                Ok(Claim::Replayed) => return self.reject(cx, &Reject::Replayed),
                Err(err) => {
                    log::warn!("wasmgate {FILTER}: replay table unavailable: {err:?}");
                    cx.count(plugin.metrics.replay_unavailable);
                    return Outcome::Reply(LocalReply::new(
                        503,
                        "replay_unavailable",
                        "The replay check is unavailable; retry later.",
                    ));
                }
            }
        }
        cx.count(plugin.metrics.verified);
        log::debug!(
            "wasmgate {FILTER}: verified with secret {}",
            key_id.unwrap_or("?")
        );
        Outcome::Continue
    }

    /// Records the upstream's answer for the claimed replay id.
    fn settle(&mut self, cx: &Cx<'_>, success: bool) {
        if let (Some(fp), Some(table)) = (self.claimed.take(), self.plugin.table.as_ref()) {
            let now = cx.host().unix_seconds();
            if let Err(err) = table.settle(cx.host(), &fp, now, success) {
                log::warn!("wasmgate {FILTER}: could not settle a replay id: {err:?}");
            }
        }
    }
}

impl Filter for HmacAuth {
    const NAME: &'static str = FILTER;
    type Plugin = Plugin;
    const USES: Uses = Uses::BODIES;

    fn configure(setup: &Setup<'_>, json: &[u8]) -> Result<Plugin, ConfigError> {
        let config = config::parse(json)?;
        // Replay ids of different configurations never meet; one configuration on every worker
        // shares one table.
        let namespace = setup.configuration_namespace();
        let table = config
            .replay
            .map(|r| Table::new(namespace.prefix(), r.ttl_secs, r.max_entries));
        Ok(Plugin {
            metrics: Metrics::define(setup, &config),
            config,
            table,
        })
    }

    fn new_stream(plugin: &Rc<Plugin>) -> Self {
        Self {
            plugin: Rc::clone(plugin),
            rule: None,
            request: None,
            claimed: None,
        }
    }

    fn on_request_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        let plugin = Rc::clone(&self.plugin);
        let mut info = request_info(cx.host(), plugin.config.policies.reads_route());
        let selected = match select(cx, &plugin.config.policies, &mut info) {
            Ok(selected) => selected,
            Err(refused) => return refused,
        };
        let policy = match selected {
            Selected::Disabled => {
                cx.count(plugin.metrics.skipped);
                return Outcome::Continue;
            }
            Selected::Default(policy) => policy,
            Selected::Rule { index, policy } => {
                self.rule = Some(index);
                policy
            }
        };
        let declared = declared_length(&info.headers);
        let request = Request::from_headers(info.headers);
        match verify::prepare(policy, &request, cx.host().unix_seconds()) {
            Ok(pending) => self.request = Some((request, pending)),
            Err(reject) => return self.reject(cx, &reject),
        }
        // Envoy turns a paused header phase into "stop all iteration", which also withholds the
        // body from this filter; so headers go on and the body is held. A native
        // `envoy.filters.http.buffer` placed right after this filter keeps the headers from the
        // upstream until the body is verified (see README).
        Outcome::NeedBody(BodyNeed {
            limit: policy.max_body_bytes,
            mode: BodyMode::Buffer,
            declared,
        })
    }

    fn on_request_body(&mut self, cx: &mut Cx<'_>, body: Body<'_>) -> Outcome {
        match body {
            Body::Complete(bytes) => self.finish(cx, bytes),
            Body::TooLarge => Outcome::Continue,
        }
    }

    fn on_body_too_large(&mut self, cx: &mut Cx<'_>, _: Direction) {
        self.request = None;
        cx.count(self.plugin.metrics.rejected.get("body_too_large"));
    }

    fn on_response_headers(&mut self, cx: &mut Cx<'_>, _: bool) -> Outcome {
        if self.claimed.is_some() {
            let status = parse_status(cx.host().header(HeaderMap::Response, ":status").as_deref());
            self.settle(cx, status.is_some_and(|s| (200..300).contains(&s)));
        }
        Outcome::Continue
    }

    fn on_done(&mut self, cx: &mut Cx<'_>) {
        // A stream that ended without a response (reset, timeout) releases its id.
        self.settle(cx, false);
    }
}

#[cfg(test)]
mod tests;
