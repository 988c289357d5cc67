//! Global mode: the `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` messages and
//! the verdict read from the service's answer. No proxy-wasm import: unit-tested natively.
//!
//! The messages are `wasmgate_core::rls`'s (shared with hmac-auth's global replay memory).

use crate::algorithm::{Limit, Report, NANOS_PER_SECOND};
use crate::config::{FailureMode, Global, Rule};
use crate::headers;
use crate::request::{refusal, Count, Verdict};
pub use wasmgate_core::rls::{
    DescriptorStatus, Entry, HeaderValue, ProtoDuration, RateLimit, RateLimitDescriptor,
    RateLimitRequest, RateLimitResponse, CODE_OK, CODE_OVER_LIMIT, METHOD, SERVICE,
};
use wasmgate_core::LocalReply;

/// Most headers taken from one answer, per direction (the rest are dropped, with a debug line).
pub const MAX_SERVICE_HEADERS: usize = 16;

/// The service's headers a filter may write: names that are header tokens (lowercased), not
/// pseudo-headers, not hop-by-hop or framing headers (`content-length`, `transfer-encoding`,
/// `connection`, `host`...), values without control characters; at most
/// [`MAX_SERVICE_HEADERS`]. The service is trusted, but a header it sends must not be able to
/// break the message it is written into.
fn service_headers(headers: &[HeaderValue]) -> Vec<(String, String)> {
    const FORBIDDEN: &[&str] = &[
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "host",
        "content-type",
    ];
    let valid = |h: &&HeaderValue| {
        !h.key.is_empty()
            && h.key.len() <= 256
            && h.key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            && !FORBIDDEN.iter().any(|f| h.key.eq_ignore_ascii_case(f))
            && h.value.len() <= 8192
            && !h.value.chars().any(|c| c.is_control() && c != '\t')
    };
    let kept: Vec<(String, String)> = headers
        .iter()
        .filter(valid)
        .take(MAX_SERVICE_HEADERS)
        .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
        .collect();
    if kept.len() < headers.len() {
        log::debug!(
            "wasmgate rate-limit: {} of the rate limit service's headers dropped (invalid or too many)",
            headers.len() - kept.len()
        );
    }
    kept
}

/// The serialized `RateLimitRequest` for one request: one descriptor with `entries`, and the
/// request's cost as `hits_addend`.
pub fn encode_request(domain: &str, entries: Vec<(String, String)>, cost: u64) -> Vec<u8> {
    let request = RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .into_iter()
                .map(|(key, value)| Entry { key, value })
                .collect(),
        }],
        hits_addend: u32::try_from(cost.max(1)).unwrap_or(u32::MAX),
    };
    prost::Message::encode_to_vec(&request)
}

/// Seconds in a `RateLimit.Unit` (month and year as envoyproxy/ratelimit counts them).
fn unit_seconds(unit: i32) -> Option<u64> {
    match unit {
        1 => Some(1),
        2 => Some(60),
        3 => Some(3_600),
        4 => Some(86_400),
        5 => Some(30 * 86_400),
        6 => Some(365 * 86_400),
        7 => Some(7 * 86_400),
        _ => None,
    }
}

/// A header-safe policy name: the service's limit name with characters outside
/// `A-Z a-z 0-9 _ - .` replaced by `_`, or the domain when the service names none.
fn policy_name(name: &str, domain: &str) -> String {
    let name = if name.is_empty() { domain } else { name };
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn duration_ns(duration: Option<ProtoDuration>) -> Option<u64> {
    let duration = duration?;
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u64::try_from(duration.nanos).unwrap_or(0);
    Some(
        seconds
            .saturating_mul(NANOS_PER_SECOND)
            .saturating_add(nanos),
    )
}

/// The limits and reports the answer's statuses describe, for the header formats of local mode.
fn limits_and_reports(
    response: &RateLimitResponse,
    domain: &str,
) -> (Vec<Limit>, Vec<Report>, Option<u64>) {
    let mut limits = Vec::new();
    let mut reports = Vec::new();
    let mut retry_after_ns: Option<u64> = None;
    for status in &response.statuses {
        let reset_ns = duration_ns(status.duration_until_reset);
        if status.code == CODE_OVER_LIMIT {
            if let Some(reset) = reset_ns {
                retry_after_ns = Some(retry_after_ns.unwrap_or(0).max(reset));
            }
        }
        let Some(limit) = &status.current_limit else {
            continue;
        };
        let window_ns = unit_seconds(limit.unit).map_or(0, |s| s * NANOS_PER_SECOND);
        limits.push(Limit {
            name: policy_name(&limit.name, domain),
            requests: u64::from(limit.requests_per_unit),
            window_ns,
            algorithm: crate::algorithm::Algorithm::FixedWindow,
        });
        reports.push(Report {
            remaining: u64::from(status.limit_remaining),
            reset_ns,
        });
    }
    (limits, reports, retry_after_ns)
}

/// Why there is no answer to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be sent (e.g. unknown cluster).
    Dispatch(String),
    /// The call ended with a gRPC status other than OK (4: the timeout passed; 14: unavailable).
    Status(u32),
}

/// The verdict from the service's answer (`Ok(body)`) or a failure.
pub fn verdict(rule: &Rule, global: &Global, answer: Result<&[u8], Failure>) -> Verdict {
    let response = match answer {
        Ok(body) => match <RateLimitResponse as prost::Message>::decode(body) {
            Ok(response) if matches!(response.overall_code, CODE_OK | CODE_OVER_LIMIT) => {
                Ok(response)
            }
            Ok(response) => Err(format!("overall_code {}", response.overall_code)),
            Err(err) => Err(format!("undecodable answer: {err}")),
        },
        Err(Failure::Dispatch(err)) => Err(format!("call not sent: {err}")),
        Err(Failure::Status(status)) => Err(format!("gRPC status {status}")),
    };
    let response = match response {
        Ok(response) => response,
        Err(reason) => return failure(global, &reason),
    };
    let (limits, reports, retry_after_ns) = limits_and_reports(&response, &global.domain);
    let headers = if limits.is_empty() {
        // The answer describes no limit (Limitador's own server sends no statuses).
        Vec::new()
    } else {
        headers::rate_limit_headers(rule.response_headers, &limits, &reports)
    };
    let mut headers = headers;
    headers.extend(service_headers(&response.response_headers_to_add));
    let allowed = response.overall_code == CODE_OK;
    let shadow_pass = !allowed && rule.shadow.as_ref().is_some_and(|s| s.passes());
    if allowed || shadow_pass {
        let mut request_headers = service_headers(&response.request_headers_to_add);
        if shadow_pass {
            if let Some(name) = rule.shadow.as_ref().and_then(|s| s.header.as_ref()) {
                request_headers.push((name.clone(), global.domain.clone()));
            }
        }
        return Verdict {
            response_headers: headers,
            request_headers,
            count: Some(if allowed {
                Count::Allowed
            } else {
                Count::ShadowLimited
            }),
            ..Verdict::default()
        };
    }
    // The service gave no reset time: no Retry-After rather than a guessed one.
    Verdict {
        reply: Some(refusal(&rule.reply, retry_after_ns, headers)),
        count: Some(Count::Limited),
        ..Verdict::default()
    }
}

/// A failed or timed-out call: `failure_mode` decides.
fn failure(global: &Global, reason: &str) -> Verdict {
    log::debug!(
        "rate-limit: rate limit service on cluster {:?} failed ({reason}); failure_mode {:?}",
        global.cluster,
        global.failure_mode
    );
    match global.failure_mode {
        FailureMode::Allow => Verdict {
            count: Some(Count::FailedOpen),
            ..Verdict::default()
        },
        FailureMode::Deny => Verdict {
            reply: Some(LocalReply::new(
                503,
                "rate_limit_unavailable",
                "The rate limit service is unavailable.",
            )),
            count: Some(Count::Unavailable),
            ..Verdict::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use prost::Message;

    fn rule(json: &str) -> (Rule, Global) {
        let config = config::parse(json.as_bytes()).unwrap();
        let rule = config.rule(0).unwrap().clone();
        let global = rule.global.clone().unwrap();
        (rule, global)
    }

    const RULE: &str = r#"{"rules": [{"mode": "global",
        "global": {"cluster": "ratelimit", "domain": "edge", "failure_mode": "deny"}}]}"#;

    fn status(
        code: i32,
        name: &str,
        rpu: u32,
        unit: i32,
        remaining: u32,
        reset_s: i64,
    ) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: Some(RateLimit {
                requests_per_unit: rpu,
                unit,
                name: name.into(),
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration {
                seconds: reset_s,
                nanos: 500_000_000,
            }),
        }
    }

    fn body(overall_code: i32, statuses: Vec<DescriptorStatus>) -> Vec<u8> {
        RateLimitResponse {
            overall_code,
            statuses,
            ..RateLimitResponse::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn request_encoding_matches_rls_proto() {
        let bytes = encode_request(
            "edge",
            vec![("remote_address".into(), "10.0.0.1".into())],
            1,
        );
        // Hand-assembled from rls.proto: domain (1), descriptors (2) { entries (1) { key (1),
        // value (2) } }, hits_addend (3) = 1.
        let mut expected = vec![0x0a, 4];
        expected.extend(b"edge");
        let entry: Vec<u8> = [&[0x0a, 14][..], b"remote_address", &[0x12, 8], b"10.0.0.1"].concat();
        let descriptor: Vec<u8> = [&[0x0a, entry.len() as u8][..], &entry].concat();
        expected.extend([0x12, descriptor.len() as u8]);
        expected.extend(&descriptor);
        expected.extend([0x18, 1]);
        assert_eq!(bytes, expected);
    }

    /// rls.proto fields the filter does not declare (response_headers_to_add, raw_body, a
    /// status's quota), which a decoder must skip.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FullResponse {
        #[prost(int32, tag = "1")]
        overall_code: i32,
        #[prost(message, repeated, tag = "2")]
        statuses: Vec<FullStatus>,
        #[prost(message, repeated, tag = "3")]
        response_headers_to_add: Vec<Entry>,
        #[prost(bytes = "vec", tag = "5")]
        raw_body: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct FullStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(message, optional, tag = "2")]
        current_limit: Option<RateLimit>,
        #[prost(uint32, tag = "3")]
        limit_remaining: u32,
        #[prost(message, optional, tag = "4")]
        duration_until_reset: Option<ProtoDuration>,
        #[prost(message, optional, tag = "5")]
        quota: Option<Entry>,
    }

    #[test]
    fn answers_with_undeclared_fields_and_truncated_answers() {
        let status = status(CODE_OVER_LIMIT, "per_minute", 100, 2, 0, 12);
        let full = FullResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![FullStatus {
                code: status.code,
                current_limit: status.current_limit.clone(),
                limit_remaining: status.limit_remaining,
                duration_until_reset: status.duration_until_reset,
                quota: Some(Entry {
                    key: "q".into(),
                    value: "7".into(),
                }),
            }],
            response_headers_to_add: vec![Entry {
                key: "x-extra".into(),
                value: "1".into(),
            }],
            raw_body: b"ignored".to_vec(),
        }
        .encode_to_vec();
        assert_eq!(
            RateLimitResponse::decode(full.as_slice()).unwrap(),
            RateLimitResponse {
                overall_code: CODE_OVER_LIMIT,
                statuses: vec![status],
                response_headers_to_add: vec![HeaderValue {
                    key: "x-extra".into(),
                    value: "1".into(),
                }],
                request_headers_to_add: Vec::new(),
            }
        );
        // Truncated anywhere: a failure (failure_mode), never a panic.
        let (rule, global) = rule(RULE);
        for len in 0..full.len() {
            let _ = verdict(&rule, &global, Ok(&full[..len]));
        }
        let truncated = verdict(&rule, &global, Ok(&full[..full.len() - 1]));
        assert_eq!(truncated.count, Some(Count::Unavailable));
    }

    #[test]
    fn request_round_trips() {
        let entries = vec![
            ("remote_address".to_string(), "10.0.0.1".to_string()),
            ("x-api-key".to_string(), "v".repeat(300)),
            ("generic_key".to_string(), "é".to_string()),
            ("path".to_string(), String::new()),
        ];
        let decoded =
            RateLimitRequest::decode(encode_request("edge", entries.clone(), 1).as_slice())
                .unwrap();
        assert_eq!(decoded.domain, "edge");
        assert_eq!(decoded.hits_addend, 1);
        let sent: Vec<(String, String)> = decoded.descriptors[0]
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        assert_eq!(sent, entries);
    }

    #[test]
    fn ok_answer_passes_with_headers_from_the_answer() {
        let (rule, global) = rule(RULE);
        let answer = body(CODE_OK, vec![status(CODE_OK, "per_minute", 100, 2, 41, 12)]);
        let verdict = verdict(&rule, &global, Ok(&answer));
        assert_eq!(verdict.reply, None);
        assert_eq!(verdict.count, Some(Count::Allowed));
        assert_eq!(
            verdict.response_headers,
            vec![
                (
                    "ratelimit-policy".into(),
                    "\"per_minute\";q=100;w=60".into()
                ),
                ("ratelimit".into(), "\"per_minute\";r=41;t=13".into()),
            ]
        );
    }

    #[test]
    fn over_limit_answers_429_with_retry_after_from_the_reset() {
        let (mut rule, global) = rule(RULE);
        rule.response_headers = config::ResponseHeaders::XRatelimit;
        let answer = body(
            CODE_OVER_LIMIT,
            vec![status(CODE_OVER_LIMIT, "a b\"", 100, 2, 0, 7)],
        );
        let verdict = verdict(&rule, &global, Ok(&answer));
        assert_eq!(verdict.count, Some(Count::Limited));
        let reply = verdict.reply.unwrap();
        assert_eq!((reply.status, reply.error.as_str()), (429, "rate_limited"));
        assert_eq!(
            reply.headers,
            vec![
                ("retry-after".to_string(), "8".to_string()),
                ("x-envoy-ratelimited".to_string(), "true".to_string()),
                (
                    "x-ratelimit-limit".into(),
                    "100, 100;w=60;name=\"a_b_\"".into()
                ),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-reset".into(), "8".into()),
            ]
        );
    }

    #[test]
    fn over_limit_without_statuses_and_shadow() {
        let (mut rule, global) = rule(RULE);
        let answer = body(CODE_OVER_LIMIT, Vec::new());
        let reply = verdict(&rule, &global, Ok(&answer)).reply.unwrap();
        assert_eq!(reply.status, 429);
        assert_eq!(
            reply.headers,
            vec![("x-envoy-ratelimited".to_string(), "true".to_string())],
            "no guessed Retry-After"
        );
        rule.shadow = Some(config::Shadow {
            percentage: 100,
            header: None,
            credit: Default::default(),
        });
        let shadow = verdict(&rule, &global, Ok(&answer));
        assert_eq!(
            (shadow.reply, shadow.count),
            (None, Some(Count::ShadowLimited))
        );
        // A nameless limit is named after the domain.
        let answer = body(CODE_OK, vec![status(CODE_OK, "", 5, 1, 4, 0)]);
        let ok = verdict(&rule, &global, Ok(&answer));
        assert_eq!(ok.response_headers[0].1, "\"edge\";q=5;w=1");
    }

    #[test]
    fn failures_follow_failure_mode() {
        let (rule, deny) = rule(RULE);
        let allow = Global {
            failure_mode: FailureMode::Allow,
            ..deny.clone()
        };
        let garbage = [0xff_u8, 0xff, 0xff];
        let unknown = body(0, Vec::new());
        let answers: [Result<&[u8], Failure>; 4] = [
            Err(Failure::Status(4)),
            Err(Failure::Dispatch("NotFound".into())),
            Ok(&garbage),
            Ok(&unknown),
        ];
        for answer in answers {
            let denied = verdict(&rule, &deny, answer.clone());
            assert_eq!(denied.count, Some(Count::Unavailable), "{answer:?}");
            let reply = denied.reply.unwrap();
            assert_eq!(
                (reply.status, reply.error.as_str()),
                (503, "rate_limit_unavailable")
            );
            let passed = verdict(&rule, &allow, answer.clone());
            assert_eq!(
                (passed.reply, passed.count, passed.response_headers.len()),
                (None, Some(Count::FailedOpen), 0)
            );
        }
    }
}
