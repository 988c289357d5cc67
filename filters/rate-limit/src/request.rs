//! One request's rate-limit verdict: rule, key, slot update, headers, reply. No proxy-wasm
//! import: it runs against [`wasmgate_core::host::Host`], so it is unit-tested with `FakeHost`.

use crate::config::{Config, OnMissingKey, Rule};
use crate::key::KeyPart;
use crate::{headers, key, store};
use wasmgate_core::host::Host;
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
    /// The counter to add one to, if any.
    pub count: Option<Count>,
    /// The request's key took the entry of an idle key in the slot table.
    pub evicted: bool,
    /// The request's key found no room in the slot table: the rule's overflow entry decided.
    pub overflow: bool,
    /// Global mode: ask the rate limit service, then decide with [`crate::global::verdict`].
    pub call: Option<Call>,
}

/// True when a rule matches on route names or keys on the route: only then is it read.
pub fn needs_route(config: &Config) -> bool {
    config.policies.reads_route()
        || config
            .policies
            .all()
            .any(|r| r.key.contains(&KeyPart::Route))
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
    // A property read costs microseconds: the source address only for a client_ip key.
    let source = rule
        .key
        .contains(&KeyPart::ClientIp)
        .then(|| host.property_string(&["source", "address"]))
        .flatten();
    let input = key::KeyInput {
        info,
        source_address: source.as_deref(),
        xff_num_trusted_hops: config.xff_num_trusted_hops,
    };
    let key = match key::build(&rule.key, &input) {
        Ok(key) => key,
        Err(part) => match rule.on_missing_key {
            OnMissingKey::Allow => {
                log::debug!("wasmgate rate-limit: no {part} for the key; passing unlimited");
                return Verdict::default();
            }
            OnMissingKey::Shared => "\u{0}missing".to_string(),
            OnMissingKey::Deny => {
                return Verdict {
                    reply: Some(LocalReply::new(
                        400,
                        "missing_rate_limit_key",
                        format!("The request has no {part} to rate-limit it by."),
                    )),
                    count: Some(Count::MissingKey),
                    ..Verdict::default()
                };
            }
        },
    };
    let call = rule.global.as_ref().map(|global| Call {
        rule: index,
        message: crate::global::encode_request(
            &global.domain,
            rule.key
                .iter()
                .map(|part| {
                    // A missing part (with on_missing_key "shared") is sent empty: one shared count.
                    let value = key::value(part, &input).unwrap_or_default();
                    (key::descriptor_key(part).to_string(), value)
                })
                .collect(),
        ),
    });
    if call.is_some() && rule.limits.is_empty() {
        return Verdict {
            call,
            ..Verdict::default()
        };
    }
    let now = wasmgate_core::clock::unix_nanos(host.now());
    let counted = store::seed(host, prefix, &config.seed)
        .map_err(|err| format!("the slot table's seed is not available ({err:?})"))
        .and_then(|seed| {
            let table = store::Table::new(prefix, config.max_keys, seed);
            let key = store::Key {
                rule: index,
                fingerprint: &rule.fingerprint,
                value: &key,
            };
            store::decide(host, &table, &key, &rule.limits, now)
                .map_err(|err| format!("shared data update failed ({err:?})"))
        });
    let decision = match counted {
        Ok(decision) => decision,
        Err(err) => {
            // Fail open: a shared-data failure must not turn into an outage.
            log::warn!("wasmgate rate-limit: {err}; passing the request");
            return Verdict {
                count: Some(Count::Error),
                ..Verdict::default()
            };
        }
    };
    if decision.overflow {
        log::debug!(
            "wasmgate rate-limit: every entry of the key's bucket is held by an active key; counted in the rule's overflow entry"
        );
    }
    let headers =
        headers::rate_limit_headers(rule.response_headers, &rule.limits, &decision.reports);
    let (evicted, overflow) = (decision.evicted, decision.overflow);
    if call.is_some() && (decision.allowed || rule.shadow) {
        // local_first: the local pre-check passed; the rate limit service decides (and its
        // answer gives the headers).
        if !decision.allowed {
            log::debug!(
                "wasmgate rate-limit: over the local pre-check in shadow mode; asking the service"
            );
        }
        return Verdict {
            call,
            evicted,
            overflow,
            ..Verdict::default()
        };
    }
    if decision.allowed || rule.shadow {
        if !decision.allowed {
            log::debug!("wasmgate rate-limit: over the limit in shadow mode; passing");
        }
        return Verdict {
            reply: None,
            response_headers: headers,
            count: Some(if decision.allowed {
                Count::Allowed
            } else {
                Count::ShadowLimited
            }),
            evicted,
            overflow,
            call: None,
        };
    }
    let retry_after = headers::retry_after(decision.retry_after_ns);
    let mut reply = LocalReply::new(
        429,
        "rate_limited",
        format!("Too many requests; retry after {retry_after} seconds."),
    )
    .with_header("retry-after", retry_after);
    for (name, value) in headers {
        reply = reply.with_header(name, value);
    }
    Verdict {
        reply: Some(reply),
        response_headers: Vec::new(),
        count: Some(Count::Limited),
        evicted,
        overflow,
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
                "limits": [{"name": "m", "requests": 2, "window": "1m"}]}]}"#,
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
            reply.headers[2],
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
                {"match": {"path_prefix": "/u/"}, "key": [{"header": "x-user"}],
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
}
