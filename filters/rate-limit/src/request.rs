//! One request's rate-limit verdict: rule, key, slot update, headers, reply. No proxy-wasm
//! import: it runs against [`wasmgate_core::host::Host`], so it is unit-tested with `FakeHost`.

use crate::algorithm::{Limit, Report};
use crate::config::{Config, Group, OnMissingKey, Reply, Rule};
use crate::key::KeyPart;
use crate::{headers, key, store};
use wasmgate_core::host::Host;
use wasmgate_core::shared::UpdateError;
use wasmgate_core::{LocalReply, RequestInfo};

/// Which counter a request adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Within every limit.
    Allowed,
    /// Refused with 429.
    Limited,
    /// Over a limit in shadow mode, passed.
    ShadowLimited,
    /// Refused with 400 for a missing key part.
    MissingKey,
    /// Shared data failed; passed.
    Error,
    /// Global mode: the rate limit service failed or timed out; passed (`failure_mode: allow`).
    FailedOpen,
    /// Global mode: the rate limit service failed or timed out; 503 (`failure_mode: deny`).
    Unavailable,
}

/// Global mode: the `ShouldRateLimit` call to make before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Index of the rule in the configuration (its verdict is read with it).
    pub rule: usize,
    /// The serialized `RateLimitRequest`.
    pub message: Vec<u8>,
}

/// What the glue does with a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Answer locally with this reply (and stop the request); `None`: continue upstream.
    pub reply: Option<LocalReply>,
    /// Headers to add to the upstream's response.
    pub response_headers: Vec<(String, String)>,
    /// Headers to set on the request going upstream: the shadow marker, a rate limit
    /// service's `request_headers_to_add`.
    pub request_headers: Vec<(String, String)>,
    /// The counter to add one to, if any.
    pub count: Option<Count>,
    /// The request's key took the entry of an idle key in the slot table.
    pub evicted: bool,
    /// The request's key found no room in the slot table: the rule's overflow entry decided.
    pub overflow: bool,
    /// Bit `i`: the rule's limit `i` refused the request (or would have, in shadow mode).
    pub refused: u8,
    /// Global mode: ask the rate limit service, then decide with [`crate::global::verdict`].
    pub call: Option<Call>,
}

/// True when a rule matches on route names or keys on the route: only then is it read.
pub fn needs_route(config: &Config) -> bool {
    config.policies.reads_route()
        || config
            .policies
            .all()
            .any(|r| r.key_parts().any(|p| *p == KeyPart::Route))
}

/// The key of a request whose key parts are missing, with `on_missing_key: "shared"`.
const SHARED_MISSING: &str = "\u{0}missing";

fn missing_key(part: &str) -> Verdict {
    Verdict {
        reply: Some(LocalReply::new(
            400,
            "missing_rate_limit_key",
            format!("The request has no {part} to rate-limit it by."),
        )),
        count: Some(Count::MissingKey),
        ..Verdict::default()
    }
}

/// The reply to a refused request: the rule's status, error code and message (default: 429
/// `rate_limited`, "Too many requests; retry after N seconds."), `Retry-After` when the retry
/// time is known, `x-envoy-ratelimited: true` (Envoy's own rate limit filters send it, and an
/// Envoy in front that retries on 429 does not retry a reply carrying it), then `headers`.
pub fn refusal(
    reply: &Reply,
    retry_after_ns: Option<u64>,
    headers: Vec<(String, String)>,
) -> LocalReply {
    let retry_after = retry_after_ns.map(headers::retry_after);
    let message = match (&reply.message, &retry_after) {
        (Some(message), _) => message.clone(),
        (None, Some(seconds)) => format!("Too many requests; retry after {seconds} seconds."),
        (None, None) => "Too many requests.".to_string(),
    };
    let mut out = LocalReply::new(reply.status, reply.error.clone(), message);
    out.headers.reserve(2 + headers.len());
    if let Some(seconds) = retry_after {
        out.headers.push(("retry-after".into(), seconds));
    }
    out.headers
        .push(("x-envoy-ratelimited".into(), "true".into()));
    out.headers.extend(headers);
    out
}

/// The names of the limits whose bits are set, for the shadow marker: `per_second, hourly`.
fn limit_names(limits: &[Limit], refused: u8) -> String {
    let mut names = String::new();
    for (i, limit) in limits.iter().enumerate() {
        if refused & (1 << i) != 0 {
            if !names.is_empty() {
                names.push_str(", ");
            }
            names.push_str(&limit.name);
        }
    }
    names
}

/// The local limits' verdict, over every group of the rule.
#[derive(Debug)]
struct Counted {
    allowed: bool,
    /// The limits that applied (`None`: all of the rule's), and one report for each.
    limits: Option<Vec<Limit>>,
    reports: Vec<Report>,
    retry_after_ns: u64,
    evicted: bool,
    overflow: bool,
    /// Bit `i`: the rule's limit `i` refused.
    refused: u8,
}

/// Several groups' decisions, gathered in the rule's order.
#[derive(Debug, Default)]
struct Gathered {
    allowed: bool,
    /// One per limit of the rule (`None`: the limit's group was skipped).
    reports: Vec<Option<Report>>,
    retry_after_ns: u64,
    evicted: bool,
    overflow: bool,
    refused: u8,
}

impl Gathered {
    fn merge(&mut self, group: &Group, decision: &store::Decision) {
        self.set_reports(group, decision);
        self.evicted |= decision.evicted;
        self.overflow |= decision.overflow;
        if !decision.allowed {
            self.retry_after_ns = self.retry_after_ns.max(decision.retry_after_ns);
            for (bit, j) in group.indices.iter().enumerate() {
                if decision.refusing & (1 << bit) != 0 {
                    self.refused |= 1 << j;
                }
            }
        }
    }

    fn set_reports(&mut self, group: &Group, decision: &store::Decision) {
        for (j, report) in group.indices.iter().zip(&decision.reports) {
            if let Some(slot) = self.reports.get_mut(*j) {
                *slot = Some(*report);
            }
        }
    }

    fn finish(self, rule: &Rule) -> Counted {
        let (limits, reports) = if self.reports.iter().all(Option::is_some) {
            (None, self.reports.into_iter().flatten().collect())
        } else {
            // Some limits were skipped (their key was missing, `on_missing_key: "allow"`).
            let (limits, reports) = rule
                .limits
                .iter()
                .zip(&self.reports)
                .filter_map(|(l, r)| r.map(|r| (l.clone(), r)))
                .unzip();
            (Some(limits), reports)
        };
        Counted {
            allowed: self.allowed,
            limits,
            reports,
            retry_after_ns: self.retry_after_ns,
            evicted: self.evicted,
            overflow: self.overflow,
            refused: self.refused,
        }
    }
}

fn store_key<'a>(index: usize, rule: &'a Rule, g: usize, value: &'a str) -> store::Key<'a> {
    store::Key {
        rule: index,
        group: g,
        fingerprint: rule.groups.get(g).map_or("", |group| &group.fingerprint),
        value,
    }
}

/// Counts the request under the rule's one group (one CAS update, as before limits could
/// name keys).
fn count_one<H: Host + ?Sized>(
    host: &H,
    table: &store::Table<'_>,
    index: usize,
    rule: &Rule,
    key: &str,
    now: u64,
    cost: u64,
) -> Result<Counted, UpdateError> {
    let limits = rule.groups.first().map_or(&[][..], |g| &g.limits);
    let decision = store::decide_cost(
        host,
        table,
        &store_key(index, rule, 0, key),
        limits,
        now,
        cost,
    )?;
    Ok(Counted {
        allowed: decision.allowed,
        limits: None,
        reports: decision.reports,
        retry_after_ns: decision.retry_after_ns,
        evicted: decision.evicted,
        overflow: decision.overflow,
        // The one group holds every limit, in the rule's order.
        refused: decision.refusing,
    })
}

/// Counts the request under every group whose key it has (`keys[g]`, `None`: skipped).
/// Several groups are first checked without writing (a flood refused under one key writes
/// nothing under the others), then counted one by one; if a concurrent request took the room
/// of a later group in between, what the earlier ones counted is given back, so a refused
/// request is counted by none.
fn count_groups<H: Host + ?Sized>(
    host: &H,
    table: &store::Table<'_>,
    index: usize,
    rule: &Rule,
    keys: &[Option<String>],
    now: u64,
    cost: u64,
) -> Result<Counted, UpdateError> {
    let mut gathered = Gathered {
        allowed: true,
        reports: vec![None; rule.limits.len()],
        ..Gathered::default()
    };
    let active = || {
        rule.groups
            .iter()
            .zip(keys)
            .enumerate()
            .filter_map(|(g, (group, key))| key.as_deref().map(|key| (g, group, key)))
    };
    let mut peeks: Vec<store::Decision> = Vec::with_capacity(keys.len());
    for (g, group, key) in active() {
        let decision = store::peek(
            host,
            table,
            &store_key(index, rule, g, key),
            &group.limits,
            now,
            cost,
        )?;
        gathered.allowed &= decision.allowed;
        gathered.merge(group, &decision);
        peeks.push(decision);
    }
    if !gathered.allowed {
        // Refused by a peek: nothing was written (so no entry was taken from an idle key).
        gathered.evicted = false;
        return Ok(gathered.finish(rule));
    }
    gathered.evicted = false;
    gathered.overflow = false;
    let mut done: Vec<(usize, bool)> = Vec::with_capacity(keys.len());
    for (g, group, key) in active() {
        let decision = store::decide_cost(
            host,
            table,
            &store_key(index, rule, g, key),
            &group.limits,
            now,
            cost,
        )?;
        gathered.merge(group, &decision);
        if !decision.allowed {
            gathered.allowed = false;
            for (done_g, overflow) in &done {
                let (Some(done_group), Some(Some(done_key))) =
                    (rule.groups.get(*done_g), keys.get(*done_g))
                else {
                    continue;
                };
                let key = store_key(index, rule, *done_g, done_key);
                store::refund(host, table, &key, &done_group.limits, now, cost, *overflow)?;
            }
            // The refunded groups report what they held before this request (their peeks).
            for (peek, (_, group, _)) in peeks.iter().zip(active()).take(done.len()) {
                gathered.set_reports(group, peek);
            }
            return Ok(gathered.finish(rule));
        }
        done.push((g, decision.overflow));
    }
    Ok(gathered.finish(rule))
}

/// A group's key, or what `on_missing_key` makes of a missing part: `Ok(None)` skips the
/// group, `Err(part)` refuses the request (400).
fn group_key<H: Host + ?Sized>(
    host: &H,
    config: &Config,
    rule: &Rule,
    group: &Group,
    input: &key::KeyInput<'_>,
    fallback: &mut Option<Option<String>>,
) -> Result<Option<String>, &'static str> {
    match key::build(&group.key, input) {
        Ok(key) => Ok(Some(key)),
        Err(missing) => match rule.on_missing_key {
            OnMissingKey::Deny => Err(missing),
            OnMissingKey::Allow => {
                log::debug!("wasmgate rate-limit: no {missing} for a key; skipping its limits");
                Ok(None)
            }
            OnMissingKey::Shared => Ok(Some(SHARED_MISSING.to_string())),
            OnMissingKey::ClientIp => {
                let ip = fallback.get_or_insert_with(|| fallback_ip(host, config, input));
                Ok(Some(match ip {
                    Some(ip) => key::build_with_fallback(&group.key, input, ip),
                    None => SHARED_MISSING.to_string(),
                }))
            }
        },
    }
}

/// The client address standing in for a missing key part (`on_missing_key: "client_ip"`),
/// read only on this path: the source address if the key did not need it, and every
/// X-Forwarded-For line behind trusted proxies (the request view may hold only the key's
/// headers).
fn fallback_ip<H: Host + ?Sized>(
    host: &H,
    config: &Config,
    input: &key::KeyInput<'_>,
) -> Option<String> {
    let source = match input.source_address {
        Some(source) => Some(source.to_string()),
        None => host.property_string(&["source", "address"]),
    };
    let all;
    let info = if config.xff_num_trusted_hops > 0 {
        all = RequestInfo::new(None, "", "/", "", host.request_headers());
        &all
    } else {
        input.info
    };
    key::fallback(&key::KeyInput {
        info,
        source_address: source.as_deref(),
        ..input.clone()
    })
}

/// Decides one request under the rule `index` it selected: `prefix` names this plugin's slot
/// table in shared data.
pub fn check<H: Host + ?Sized>(
    config: &Config,
    prefix: &str,
    host: &H,
    info: &RequestInfo,
    index: usize,
    rule: &Rule,
) -> Verdict {
    // A property read costs microseconds: the source address only for a client_ip key part.
    let source = rule
        .reads_client_ip
        .then(|| host.property_string(&["source", "address"]))
        .flatten();
    let input = key::KeyInput {
        info,
        source_address: source.as_deref(),
        xff_num_trusted_hops: config.xff_num_trusted_hops,
        prefixes: config.prefixes,
    };
    let cost = match &rule.cost.header {
        None => rule.cost.units,
        Some(name) => rule.cost.of(info.header(name)),
    };
    let mut fallback: Option<Option<String>> = None;
    let call = match &rule.global {
        None => None,
        Some(global) => {
            let mut entries = Vec::with_capacity(rule.key.len());
            for part in &rule.key {
                let value = match key::value(part, &input) {
                    Ok(value) => value,
                    Err(missing) => match rule.on_missing_key {
                        OnMissingKey::Deny => return missing_key(missing),
                        OnMissingKey::Allow => {
                            log::debug!(
                                "wasmgate rate-limit: no {missing} for the key; passing unlimited"
                            );
                            return Verdict::default();
                        }
                        // Sent empty: one shared count.
                        OnMissingKey::Shared => String::new(),
                        OnMissingKey::ClientIp => fallback
                            .get_or_insert_with(|| fallback_ip(host, config, &input))
                            .clone()
                            .unwrap_or_default(),
                    },
                };
                entries.push((key::descriptor_key(part).to_string(), value));
            }
            Some(Call {
                rule: index,
                message: crate::global::encode_request(&global.domain, entries, cost),
            })
        }
    };
    // The keys first (a missing one may answer 400), then the slot table. One group (every
    // limit on one key, the usual rule) needs no list of keys.
    enum Keys {
        One(String),
        Many(Vec<Option<String>>),
    }
    let keys = match rule.groups.as_slice() {
        [group] => match group_key(host, config, rule, group, &input, &mut fallback) {
            Ok(Some(key)) => Some(Keys::One(key)),
            Ok(None) => None,
            Err(missing) => return missing_key(missing),
        },
        groups => {
            let keys: Result<Vec<Option<String>>, &str> = groups
                .iter()
                .map(|group| group_key(host, config, rule, group, &input, &mut fallback))
                .collect();
            match keys {
                Ok(keys) if keys.iter().all(Option::is_none) => None,
                Ok(keys) => Some(Keys::Many(keys)),
                Err(missing) => return missing_key(missing),
            }
        }
    };
    let Some(keys) = keys else {
        // No local limit applies (none, or every key missing with "allow").
        return Verdict {
            call,
            ..Verdict::default()
        };
    };
    let now = wasmgate_core::clock::unix_nanos(host.now());
    let counted = store::seed(host, prefix, &config.seed)
        .map_err(|err| format!("the slot table's seed is not available ({err:?})"))
        .and_then(|seed| {
            let table = store::Table::new(prefix, config.max_keys, seed);
            match &keys {
                Keys::One(key) => count_one(host, &table, index, rule, key, now, cost),
                Keys::Many(keys) => count_groups(host, &table, index, rule, keys, now, cost),
            }
            .map_err(|err| format!("shared data update failed ({err:?})"))
        });
    let counted = match counted {
        Ok(counted) => counted,
        Err(err) => {
            // Fail open: a shared-data failure must not turn into an outage (a global rule
            // still asks its service).
            log::warn!("wasmgate rate-limit: {err}; passing the request");
            return Verdict {
                count: Some(Count::Error),
                call,
                ..Verdict::default()
            };
        }
    };
    if counted.overflow {
        log::debug!(
            "wasmgate rate-limit: every entry of the key's bucket is held by an active key; counted in the rule's overflow entry"
        );
    }
    let limits = counted.limits.as_deref().unwrap_or(&rule.limits);
    let headers = headers::rate_limit_headers(rule.response_headers, limits, &counted.reports);
    let Counted {
        allowed,
        evicted,
        overflow,
        refused,
        retry_after_ns,
        ..
    } = counted;
    let shadow_pass = !allowed && rule.shadow.as_ref().is_some_and(|s| s.passes());
    let mut request_headers = Vec::new();
    if shadow_pass {
        log::debug!("wasmgate rate-limit: over the limit in shadow mode; passing");
        if let Some(name) = rule.shadow.as_ref().and_then(|s| s.header.as_ref()) {
            request_headers.push((name.clone(), limit_names(&rule.limits, refused)));
        }
    }
    if call.is_some() && (allowed || shadow_pass) {
        // local_first: the local pre-check passed; the rate limit service decides (and its
        // answer gives the headers).
        return Verdict {
            call,
            evicted,
            overflow,
            refused,
            request_headers,
            ..Verdict::default()
        };
    }
    if allowed || shadow_pass {
        return Verdict {
            reply: None,
            response_headers: headers,
            request_headers,
            count: Some(if allowed {
                Count::Allowed
            } else {
                Count::ShadowLimited
            }),
            evicted,
            overflow,
            refused,
            call: None,
        };
    }
    Verdict {
        reply: Some(refusal(&rule.reply, Some(retry_after_ns), headers)),
        response_headers: Vec::new(),
        request_headers: Vec::new(),
        count: Some(Count::Limited),
        evicted,
        overflow,
        refused,
        call: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use wasmgate_core::host::FakeHost;

    const PREFIX: &str = "wasmgate_rate_limit/test";

    /// Selects the rule as the filter does, then decides.
    fn check(config: &Config, prefix: &str, host: &FakeHost) -> Verdict {
        let info = wasmgate_core::host::request_info_reading(
            host,
            needs_route(config),
            &config.header_needs,
        );
        match config.policies.select(&info) {
            wasmgate_core::Selected::Rule { index, policy } => {
                super::check(config, prefix, host, &info, index, policy)
            }
            _ => Verdict::default(),
        }
    }

    fn config(json: &str) -> Config {
        config::parse(json.as_bytes()).unwrap()
    }

    fn host(path: &str, at_unix: u64) -> FakeHost {
        let mut host = FakeHost::with_request("GET", "example.com", path);
        host.now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at_unix);
        host.properties
            .insert("source.address".into(), b"10.1.2.3:4567".to_vec());
        host
    }

    #[test]
    fn allows_then_replies_429_with_headers() {
        let config = config(
            r#"{"rules": [{"match": {"path_prefix": "/api/"},
                "limits": [{"name": "m", "requests": 2, "window": "1m", "algorithm": "fixed_window"}]}]}"#,
        );
        let mut host = host("/api/x", 1_700_000_040);
        for remaining in ["1", "0"] {
            let verdict = check(&config, PREFIX, &host);
            assert_eq!(verdict.reply, None);
            assert_eq!(verdict.count, Some(Count::Allowed));
            assert_eq!(
                verdict.response_headers,
                vec![
                    ("ratelimit-policy".to_string(), "\"m\";q=2;w=60".to_string()),
                    ("ratelimit".to_string(), format!("\"m\";r={remaining};t=60")),
                ]
            );
        }
        let verdict = check(&config, PREFIX, &host);
        assert_eq!(verdict.count, Some(Count::Limited));
        assert!(
            verdict.response_headers.is_empty(),
            "the reply carries them"
        );
        let reply = verdict.reply.unwrap();
        assert_eq!((reply.status, reply.error.as_str()), (429, "rate_limited"));
        assert_eq!(reply.headers[0], ("retry-after".into(), "60".into()));
        assert_eq!(
            reply.headers[1],
            ("x-envoy-ratelimited".into(), "true".into())
        );
        assert_eq!(
            reply.headers[3],
            ("ratelimit".into(), "\"m\";r=0;t=60".into())
        );
        // Another client IP (same shared data) has its own quota.
        host.properties
            .insert("source.address".into(), b"10.9.9.9:1".to_vec());
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Allowed));
    }

    #[test]
    fn unmatched_disabled_and_missing_keys() {
        let config = config(
            r#"{"rules": [
                {"match": {"path_prefix": "/off"}, "enabled": false},
                {"match": {"path_prefix": "/u/"}, "key": [{"header": "x-user"}], "on_missing_key": "deny",
                 "limits": [{"name": "m", "requests": 1, "window": "1m"}]}]}"#,
        );
        for path in ["/off", "/elsewhere"] {
            assert_eq!(
                check(&config, PREFIX, &host(path, 1_700_000_040)),
                Verdict::default()
            );
        }
        let verdict = check(&config, PREFIX, &host("/u/1", 1_700_000_040));
        assert_eq!(verdict.count, Some(Count::MissingKey));
        let reply = verdict.reply.unwrap();
        assert_eq!(
            (reply.status, reply.error.as_str()),
            (400, "missing_rate_limit_key")
        );
    }

    #[test]
    fn shadow_passes_over_the_limit() {
        let config = config(
            r#"{"response_headers": "x-ratelimit", "rules": [{"shadow": true,
                "limits": [{"name": "m", "requests": 1, "window": "1m"}]}]}"#,
        );
        let host = host("/", 1_700_000_040);
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Allowed));
        for _ in 0..2 {
            let verdict = check(&config, PREFIX, &host);
            assert_eq!(verdict.reply, None);
            assert_eq!(verdict.count, Some(Count::ShadowLimited));
            assert!(verdict
                .response_headers
                .contains(&("x-ratelimit-remaining".to_string(), "0".to_string())));
        }
    }

    /// A client refused under its API key sends thousands of other key values (the issue's
    /// "Hostile requests"): they fill the small table's free entries and then share one overflow
    /// quota; the refused key stays refused, and the seed of the keyed hash sits in shared data.
    #[test]
    fn other_key_values_do_not_reset_a_refused_key() {
        let config = config(
            r#"{"max_keys": 16, "rules": [{"key": [{"header": "x-api-key"}],
                "limits": [{"name": "h", "requests": 3, "window": "1h"}]}]}"#,
        );
        let with_key = |value: &str| {
            let mut host = host("/", 1_700_002_800);
            host.headers.push(("x-api-key".into(), value.into()));
            host
        };
        let victim = with_key("victim");
        for _ in 0..3 {
            assert_eq!(check(&config, PREFIX, &victim).count, Some(Count::Allowed));
        }
        assert_eq!(check(&config, PREFIX, &victim).count, Some(Count::Limited));
        let mut host = victim;
        let (mut allowed, mut overflow) = (0, 0);
        for i in 0..5_000 {
            host.headers.pop();
            host.headers
                .push(("x-api-key".into(), format!("other-{i}")));
            let verdict = check(&config, PREFIX, &host);
            allowed += usize::from(verdict.count == Some(Count::Allowed));
            overflow += usize::from(verdict.overflow);
            assert!(!verdict.evicted);
        }
        assert_eq!(
            allowed,
            15 + 3,
            "the free entries, then one quota for all the others"
        );
        assert_eq!(overflow, 5_000 - 15);
        host.headers.pop();
        host.headers.push(("x-api-key".into(), "victim".into()));
        let verdict = check(&config, PREFIX, &host);
        assert_eq!(verdict.count, Some(Count::Limited));
        assert!(!verdict.overflow);
        use wasmgate_core::shared::SharedStore;
        let (seed, _) = host.get_shared(&format!("{PREFIX}/seed")).unwrap();
        assert_eq!(seed.map(|s| s.len()), Some(16));
    }

    /// The next request on `host` (whose shared data persists): from `source`, with `headers`.
    fn next<'a>(host: &'a mut FakeHost, source: &str, headers: &[(&str, &str)]) -> &'a FakeHost {
        host.properties.insert(
            "source.address".into(),
            format!("{source}:4567").into_bytes(),
        );
        host.headers.truncate(3);
        for (name, value) in headers {
            host.headers.push((name.to_string(), value.to_string()));
        }
        host
    }

    fn remaining(verdict: &Verdict) -> String {
        let from = verdict
            .reply
            .as_ref()
            .map_or(&verdict.response_headers, |r| &r.headers);
        from.iter()
            .find(|(n, _)| n == "ratelimit")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    const TWO_KEYS: &str = r#"{"rules": [{"key": ["client_ip"], "limits": [
        {"name": "per_ip", "requests": 2, "window": "1h", "algorithm": "fixed_window"},
        {"name": "per_tenant", "requests": 3, "window": "1h", "algorithm": "fixed_window",
         "key": [{"header": "x-tenant"}]}]}]}"#;

    /// Per-IP and per-tenant limits on one request: an IP over its limit costs its tenant
    /// nothing (others of the tenant keep the tenant's whole quota), and a tenant over its
    /// limit costs the IP nothing.
    #[test]
    fn a_request_refused_under_one_key_is_counted_under_none() {
        let config = config(TWO_KEYS);
        let mut h = host("/", 1_700_002_800);
        for _ in 0..2 {
            let host = next(&mut h, "10.0.0.1", &[("x-tenant", "acme")]);
            assert_eq!(check(&config, PREFIX, host).count, Some(Count::Allowed));
        }
        for _ in 0..5 {
            let host = next(&mut h, "10.0.0.1", &[("x-tenant", "acme")]);
            let refused = check(&config, PREFIX, host);
            assert_eq!(refused.count, Some(Count::Limited));
            assert_eq!(refused.refused, 0b01, "per_ip refused, per_tenant did not");
            assert_eq!(
                remaining(&refused),
                "\"per_ip\";r=0;t=3600, \"per_tenant\";r=1;t=3600",
                "both limits listed, the tenant's count unchanged"
            );
        }
        // Another IP of the tenant: the tenant has exactly one unit left.
        let passed = check(
            &config,
            PREFIX,
            next(&mut h, "10.0.0.2", &[("x-tenant", "acme")]),
        );
        assert_eq!(passed.count, Some(Count::Allowed));
        assert_eq!(
            remaining(&passed),
            "\"per_ip\";r=1;t=3600, \"per_tenant\";r=0;t=3600"
        );
        // The tenant refuses now: 10.0.0.2's own count is not charged by these refusals.
        for _ in 0..5 {
            let host = next(&mut h, "10.0.0.2", &[("x-tenant", "acme")]);
            let refused = check(&config, PREFIX, host);
            assert_eq!(refused.count, Some(Count::Limited));
            assert_eq!(refused.refused, 0b10);
        }
        let host = next(&mut h, "10.0.0.2", &[("x-tenant", "globex")]);
        let passed = check(&config, PREFIX, host);
        assert_eq!(passed.count, Some(Count::Allowed));
        assert_eq!(
            remaining(&passed),
            "\"per_ip\";r=0;t=3600, \"per_tenant\";r=2;t=3600",
            "10.0.0.2's second unit was still there"
        );
    }

    /// A client rotating its key value under one limit's key gains nothing against the other.
    #[test]
    fn rotating_one_key_does_not_escape_the_other() {
        let config = config(TWO_KEYS);
        let mut h = host("/", 1_700_002_800);
        let mut admitted = 0;
        for i in 0..50 {
            let tenant = format!("t{i}");
            let host = next(&mut h, "10.0.0.9", &[("x-tenant", &tenant)]);
            admitted += usize::from(check(&config, PREFIX, host).count == Some(Count::Allowed));
        }
        assert_eq!(admitted, 2, "the per-IP limit holds whatever the tenant");
    }

    /// A request counted under its first key whose second key is taken by a concurrent
    /// request in between: what the first counted is given back.
    #[test]
    fn a_refund_gives_back_exactly_what_was_counted() {
        let config = config(TWO_KEYS);
        let rule = config.rule(0).unwrap();
        let h = host("/", 1_700_002_800);
        let seed = store::seed(&h, PREFIX, &config.seed).unwrap();
        let table = store::Table::new(PREFIX, config.max_keys, seed);
        let now = 1_700_002_800 * crate::algorithm::NANOS_PER_SECOND;
        let group = &rule.groups[0];
        let key = store::Key {
            rule: 0,
            group: 0,
            fingerprint: &group.fingerprint,
            value: "k",
        };
        let before = store::peek(&h, &table, &key, &group.limits, now, 1).unwrap();
        let counted = store::decide_cost(&h, &table, &key, &group.limits, now, 1).unwrap();
        assert_eq!(
            counted.reports[0].remaining,
            before.reports[0].remaining - 1
        );
        store::refund(&h, &table, &key, &group.limits, now, 1, counted.overflow).unwrap();
        let after = store::peek(&h, &table, &key, &group.limits, now, 1).unwrap();
        assert_eq!(after.reports, before.reports);
    }

    #[test]
    fn cost_from_a_header_is_bounded() {
        let config = config(
            r#"{"rules": [{"cost_header": "x-cost", "max_cost": 4, "key": [{"header": "x-user"}],
                "limits": [{"name": "units", "requests": 10, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
        );
        let mut h = host("/", 1_700_002_800);
        let mut send = |cost: &str| {
            let host = next(&mut h, "10.0.0.1", &[("x-user", "a"), ("x-cost", cost)]);
            check(&config, PREFIX, host)
        };
        // Huge, negative, fractional and non-numeric costs: max_cost or 1, never 0, never a
        // wrap-around.
        let r = send("99999999999999999999999999");
        assert_eq!(
            (r.count, remaining(&r).as_str()),
            (Some(Count::Allowed), "\"units\";r=6;t=3600")
        );
        for (cost, left) in [("-5", 5), ("abc", 4), ("2.5", 3), ("0", 2), ("", 1)] {
            let r = send(cost);
            assert_eq!(r.count, Some(Count::Allowed), "{cost:?}");
            assert_eq!(
                remaining(&r),
                format!("\"units\";r={left};t=3600"),
                "{cost:?}"
            );
        }
        // 1 unit left: a request costing 2 is refused and takes nothing; one costing 1 passes.
        let refused = send("2");
        assert_eq!(refused.count, Some(Count::Limited));
        assert_eq!(remaining(&refused), "\"units\";r=1;t=3600");
        assert_eq!(send("1").count, Some(Count::Allowed));
        assert_eq!(send("1").count, Some(Count::Limited));
        // A constant cost.
        let config = config_with_cost();
        let host = host("/", 1_700_002_800);
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Allowed));
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Allowed));
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Limited));
    }

    fn config_with_cost() -> Config {
        config(
            r#"{"rules": [{"cost": 3, "limits": [{"name": "u", "requests": 7, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
        )
    }

    /// An IPv6 client owning a /64 gets one quota, however many of its addresses it uses.
    #[test]
    fn an_ipv6_client_rotating_addresses_in_its_64_shares_one_quota() {
        let config = config(
            r#"{"rules": [{"limits": [{"name": "h", "requests": 3, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
        );
        let mut h = host("/", 1_700_002_800);
        let mut admitted = 0;
        for i in 0..40 {
            let host = next(&mut h, &format!("[2001:db8:aa:bb:{i:x}::{i:x}]"), &[]);
            admitted += usize::from(check(&config, PREFIX, host).count == Some(Count::Allowed));
        }
        assert_eq!(admitted, 3);
        let neighbour = next(&mut h, "[2001:db8:aa:bc::1]", &[]);
        assert_eq!(
            check(&config, PREFIX, neighbour).count,
            Some(Count::Allowed),
            "the next /64 is another client"
        );
    }

    /// The default `on_missing_key` ("client_ip"): a request without the key's header is
    /// neither refused (a health check or internal client keeps working when a limit is added)
    /// nor unlimited (an attacker dropping the header is limited by address).
    #[test]
    fn a_keyless_request_is_limited_by_its_address_by_default() {
        let config = config(
            r#"{"rules": [{"key": [{"header": "x-api-key"}],
                "limits": [{"name": "h", "requests": 2, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
        );
        let mut h = host("/", 1_700_002_800);
        for _ in 0..2 {
            let host = next(&mut h, "10.0.0.1", &[]);
            assert_eq!(check(&config, PREFIX, host).count, Some(Count::Allowed));
        }
        let host = next(&mut h, "10.0.0.1", &[]);
        assert_eq!(check(&config, PREFIX, host).count, Some(Count::Limited));
        let host = next(&mut h, "10.0.0.2", &[]);
        assert_eq!(
            check(&config, PREFIX, host).count,
            Some(Count::Allowed),
            "another address, another quota"
        );
        // Sending the address as the key value is another key, not the keyless quota.
        let forged = next(&mut h, "10.0.0.1", &[("x-api-key", "10.0.0.1")]);
        assert_eq!(check(&config, PREFIX, forged).count, Some(Count::Allowed));
    }

    /// `on_missing_key: "allow"` skips only the limits whose key is missing.
    #[test]
    fn allow_skips_only_the_limits_whose_key_is_missing() {
        let config = config(
            r#"{"rules": [{"on_missing_key": "allow", "key": ["client_ip"], "limits": [
                {"name": "ip", "requests": 1, "window": "1h", "algorithm": "fixed_window"},
                {"name": "user", "requests": 5, "window": "1h", "algorithm": "fixed_window",
                 "key": [{"header": "x-user"}]}]}]}"#,
        );
        let host = host("/", 1_700_002_800);
        let first = check(&config, PREFIX, &host);
        assert_eq!(first.count, Some(Count::Allowed));
        assert_eq!(
            remaining(&first),
            "\"ip\";r=0;t=3600",
            "only the limit that applied"
        );
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Limited));
    }

    #[test]
    fn shadow_percentage_and_marker() {
        let config = config(
            r#"{"rules": [{"shadow": true, "shadow_percentage": 50, "key": [{"constant": "all"}],
                "limits": [{"name": "m", "requests": 1, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
        );
        let host = host("/", 1_700_002_800);
        assert_eq!(check(&config, PREFIX, &host).count, Some(Count::Allowed));
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let v = check(&config, PREFIX, &host);
            outcomes.push(v.count);
            if v.count == Some(Count::ShadowLimited) {
                assert_eq!(
                    v.request_headers,
                    vec![("x-ratelimit-shadow".to_string(), "m".to_string())]
                );
                assert_eq!(v.refused, 1);
            } else {
                assert!(v.request_headers.is_empty());
            }
        }
        assert_eq!(
            outcomes,
            [
                Count::Limited,
                Count::ShadowLimited,
                Count::Limited,
                Count::ShadowLimited
            ]
            .map(Some)
        );
    }

    #[test]
    fn configured_reply() {
        let config = config(
            r#"{"reply": {"status": 503, "error": "slow_down", "message": "Please slow down."},
                "rules": [{"limits": [{"name": "m", "requests": 1, "window": "1h", "algorithm": "fixed_window"}]}]}"#,
        );
        let host = host("/", 1_700_002_800);
        check(&config, PREFIX, &host);
        let reply = check(&config, PREFIX, &host).reply.unwrap();
        assert_eq!(
            (reply.status, reply.error.as_str(), reply.message.as_str()),
            (503, "slow_down", "Please slow down.")
        );
        assert!(reply
            .headers
            .contains(&("x-envoy-ratelimited".into(), "true".into())));
        assert!(reply
            .headers
            .contains(&("retry-after".into(), "3600".into())));
    }

    /// Global mode: the cost goes to the service as `hits_addend`; a missing part falls back to
    /// the client address by default.
    #[test]
    fn global_calls_carry_the_cost() {
        use prost::Message;
        let config = config(
            r#"{"rules": [{"mode": "global", "global": {"cluster": "rl", "domain": "d"},
                "cost_header": "x-cost", "max_cost": 100, "key": [{"header": "x-api-key"}]}]}"#,
        );
        let mut h = host("/", 1_700_002_800);
        let host = next(&mut h, "10.0.0.1", &[("x-cost", "7")]);
        let call = check(&config, PREFIX, host).call.unwrap();
        let request = crate::global::RateLimitRequest::decode(call.message.as_slice()).unwrap();
        assert_eq!(request.hits_addend, 7);
        let entry = &request.descriptors[0].entries[0];
        assert_eq!(
            (entry.key.as_str(), entry.value.as_str()),
            ("x-api-key", "10.0.0.1")
        );
    }

    /// The default algorithm is the sliding window: no double burst across a window edge.
    #[test]
    fn the_default_algorithm_has_no_double_burst_at_window_edges() {
        let config =
            config(r#"{"rules": [{"limits": [{"name": "m", "requests": 10, "window": "1m"}]}]}"#);
        let mut host = host("/", 0);
        let mut admitted = |at: u64| {
            host.now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
            (0..20)
                .filter(|_| check(&config, PREFIX, &host).count == Some(Count::Allowed))
                .count()
        };
        // The last second of one minute, then the first second of the next.
        let edge = 1_700_000_040 + 60;
        assert_eq!(admitted(edge - 1), 10);
        assert!(
            admitted(edge) <= 1,
            "a fixed window would admit 10 more here"
        );
    }

    /// A host whose `race_at`-th shared-data read first lets another request through the
    /// tenant limit (another worker taking the tenant's last unit between our check and our
    /// count).
    struct Racing<'a> {
        inner: FakeHost,
        config: &'a Config,
        reads: std::cell::Cell<usize>,
        race_at: usize,
    }

    impl wasmgate_core::shared::SharedStore for Racing<'_> {
        fn get_shared(
            &self,
            key: &str,
        ) -> Result<(Option<Vec<u8>>, Option<u32>), wasmgate_core::shared::SetError> {
            let n = self.reads.get() + 1;
            self.reads.set(n);
            if n == self.race_at {
                let mut other = host("/", 1_700_002_800);
                other.headers.push(("x-tenant".into(), "acme".into()));
                other
                    .properties
                    .insert("source.address".into(), b"10.0.0.7:1".to_vec());
                // The other request, against the same shared data.
                let info = wasmgate_core::host::request_info_reading(
                    &self.inner_with(&other),
                    false,
                    &self.config.header_needs,
                );
                let rule = self.config.rule(0).unwrap();
                let verdict = super::check(
                    self.config,
                    PREFIX,
                    &self.inner_with(&other),
                    &info,
                    0,
                    rule,
                );
                assert_eq!(verdict.count, Some(Count::Allowed), "the racing request");
            }
            self.inner.get_shared(key)
        }
        fn set_shared(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), wasmgate_core::shared::SetError> {
            self.inner.set_shared(key, value, cas)
        }
    }

    impl wasmgate_core::clock::Clock for Racing<'_> {
        fn now(&self) -> std::time::SystemTime {
            self.inner.now
        }
    }

    impl Host for Racing<'_> {
        fn headers(&self, map: wasmgate_core::host::HeaderMap) -> Vec<(String, String)> {
            self.inner.headers(map)
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.inner.property(path)
        }
        fn call_foreign(&self, _: &str, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
    }

    /// Another request's view (headers, address) over this host's shared data.
    struct Other<'a> {
        shared: &'a FakeHost,
        request: &'a FakeHost,
    }

    impl wasmgate_core::shared::SharedStore for Other<'_> {
        fn get_shared(
            &self,
            key: &str,
        ) -> Result<(Option<Vec<u8>>, Option<u32>), wasmgate_core::shared::SetError> {
            self.shared.get_shared(key)
        }
        fn set_shared(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), wasmgate_core::shared::SetError> {
            self.shared.set_shared(key, value, cas)
        }
    }

    impl wasmgate_core::clock::Clock for Other<'_> {
        fn now(&self) -> std::time::SystemTime {
            self.request.now
        }
    }

    impl Host for Other<'_> {
        fn headers(&self, map: wasmgate_core::host::HeaderMap) -> Vec<(String, String)> {
            self.request.headers(map)
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.request.property(path)
        }
        fn call_foreign(&self, _: &str, _: &[u8]) -> Option<Vec<u8>> {
            None
        }
    }

    impl Racing<'_> {
        fn inner_with<'a>(&'a self, request: &'a FakeHost) -> Other<'a> {
            Other {
                shared: &self.inner,
                request,
            }
        }
    }

    /// Between our check of both keys and our count of the second, another worker takes the
    /// tenant's last unit: our request is refused, and what it counted under its IP is given
    /// back (its IP can still make exactly its 2 requests).
    #[test]
    fn a_request_refused_by_a_race_gives_back_what_it_counted() {
        let config = config(TWO_KEYS);
        let mut warm = host("/", 1_700_002_800);
        // Two units of the tenant's three go to 10.0.0.5; the seed is created on the way.
        for _ in 0..2 {
            let h = next(&mut warm, "10.0.0.5", &[("x-tenant", "acme")]);
            assert_eq!(check(&config, PREFIX, h).count, Some(Count::Allowed));
        }
        let mut inner = warm;
        next(&mut inner, "10.0.0.1", &[("x-tenant", "acme")]);
        // Reads: the seed is cached; peek per_ip, peek per_tenant, count per_ip, then the
        // fourth read is our count of per_tenant: the other request comes first.
        let racing = Racing {
            inner,
            config: &config,
            reads: std::cell::Cell::new(0),
            race_at: 4,
        };
        let info = wasmgate_core::host::request_info_reading(&racing, false, &config.header_needs);
        let verdict = super::check(&config, PREFIX, &racing, &info, 0, config.rule(0).unwrap());
        assert_eq!(verdict.count, Some(Count::Limited));
        assert_eq!(verdict.refused, 0b10, "the tenant refused");
        assert_eq!(
            remaining(&verdict),
            "\"per_ip\";r=2;t=3600, \"per_tenant\";r=0;t=3600",
            "10.0.0.1's unit given back"
        );
        // 10.0.0.1 under another tenant: both of its units are there.
        let mut after = racing.inner;
        for _ in 0..2 {
            let h = next(&mut after, "10.0.0.1", &[("x-tenant", "globex")]);
            assert_eq!(check(&config, PREFIX, h).count, Some(Count::Allowed));
        }
        let h = next(&mut after, "10.0.0.1", &[("x-tenant", "globex")]);
        assert_eq!(check(&config, PREFIX, h).count, Some(Count::Limited));
    }
}
