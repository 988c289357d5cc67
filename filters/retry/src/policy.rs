//! Pure retry decisions: idempotency, what is retriable, backoff with full jitter, `Retry-After`,
//! and the `x-envoy-*` headers that hand a decision to Envoy's router.

use crate::config::{is_grpc_condition, NonIdempotent, Policy, RetryOn};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Methods that RFC 9110 defines as idempotent and that this filter retries without a key.
pub const IDEMPOTENT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];

/// True when `method` is idempotent.
pub fn is_idempotent(method: &str) -> bool {
    IDEMPOTENT_METHODS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// May this request be retried at all, given its method and whether it carries an idempotency key?
pub fn retries_allowed(method: &str, has_idempotency_key: bool, rule: NonIdempotent) -> bool {
    is_idempotent(method)
        || match rule {
            NonIdempotent::Never => false,
            NonIdempotent::WithIdempotencyKey => has_idempotency_key,
            NonIdempotent::Always => true,
        }
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// A gRPC answer with its `grpc-status` in the headers (a trailers-only response: how gRPC
    /// servers answer errors): the HTTP status and the gRPC status.
    Grpc(u16, u32),
    /// No response: connection failure, reset or per-try timeout.
    NoResponse,
}

/// Envoy answers a `dispatch_http_call` that got no upstream response (per-try timeout,
/// connection failure, reset) with its own 504/503 and a fixed text body; such an answer is an
/// [`Outcome::NoResponse`], not an upstream status.
pub fn is_envoy_no_response(status: u16, body: &[u8]) -> bool {
    (status == 504 && body.starts_with(b"upstream request timeout"))
        || (status == 503 && body.starts_with(b"upstream connect error or disconnect/reset"))
        || (status == 503 && body.starts_with(b"no healthy upstream"))
}

/// Is this outcome retriable under `retry_on` (Envoy's meaning of each condition)?
pub fn is_retriable(outcome: &Outcome, retry_on: &RetryOn) -> bool {
    match outcome {
        Outcome::NoResponse => ["5xx", "gateway-error", "connect-failure", "reset"]
            .iter()
            .any(|c| retry_on.has(c)),
        Outcome::Grpc(status, grpc) => {
            retry_on.has_grpc_status(*grpc) || is_retriable(&Outcome::Status(*status), retry_on)
        }
        Outcome::Status(status) => {
            let status = *status;
            (retry_on.has("5xx") && (500..=599).contains(&status))
                || (retry_on.has("gateway-error") && matches!(status, 502..=504))
                || (retry_on.has("retriable-4xx") && status == 409)
                || (retry_on.has("retriable-status-codes")
                    && retry_on.status_codes.contains(&status))
        }
    }
}

/// The upper bound of the wait before retry number `retry` (1 for the first retry):
/// `min(max, base * 2^(retry-1))`.
pub fn backoff_ceiling(retry: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// Exponential backoff with full jitter: uniform in `[0, ceiling]`, from a random number.
pub fn backoff(retry: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let ceiling = u64::try_from(backoff_ceiling(retry, base, max).as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(random % ceiling.saturating_add(1))
}

/// Parses `Retry-After` (delay-seconds or an HTTP-date) into a wait from `now`.
/// A date in the past means no wait; anything unparseable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Above this, an `X-RateLimit-Reset` value is a Unix time; at or below, seconds.
pub const UNIX_TIME_THRESHOLD: u64 = 1_000_000_000;

fn seconds(value: &str) -> Option<u64> {
    let value = value.trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().unwrap_or(u64::MAX))
}

/// The `t` (or older drafts' `reset`) of a `RateLimit` field: the longest among its policies
/// with nothing remaining (`r=0`), or without a remaining count. `"day";r=0;t=3600, "s";r=5;t=1`
/// asks for 3600 s.
pub fn parse_ratelimit_reset(value: &str) -> Option<Duration> {
    let mut wait: Option<u64> = None;
    for item in value.split(',') {
        let (mut remaining, mut reset) = (None, None);
        for param in item.split(';') {
            let Some((name, v)) = param.split_once('=') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "r" | "remaining" => remaining = seconds(v),
                "t" | "reset" => reset = seconds(v),
                _ => {}
            }
        }
        if let (Some(t), None | Some(0)) = (reset, remaining) {
            wait = Some(wait.map_or(t, |w| w.max(t)));
        }
    }
    wait.map(Duration::from_secs)
}

/// `X-RateLimit-Reset`: above [`UNIX_TIME_THRESHOLD`] a Unix time (in the past: no wait), else
/// seconds.
pub fn parse_ratelimit_reset_header(value: &str, now: SystemTime) -> Option<Duration> {
    let n = seconds(value)?;
    if n <= UNIX_TIME_THRESHOLD {
        return Some(Duration::from_secs(n));
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Some(Duration::from_secs(n).saturating_sub(now))
}

/// The wait a response asks for before the next request: `Retry-After` (seconds or HTTP-date),
/// else `RateLimit`'s `t`, else `X-RateLimit-Reset`; the first that parses counts. `header`
/// looks a response header up by lowercase name.
pub fn asked_wait<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    now: SystemTime,
) -> Option<Duration> {
    header("retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| header("ratelimit").and_then(parse_ratelimit_reset))
        .or_else(|| header("x-ratelimit-reset").and_then(|v| parse_ratelimit_reset_header(v, now)))
}

/// The wait before retry number `retry` (1 for the first): what the upstream asked for
/// (`asked`, see [`asked_wait`]) when honoured, else jittered exponential backoff. `None`: the
/// upstream asked for a longer wait than `max_retry_after`, so there is no retry.
pub fn next_delay(
    policy: &Policy,
    retry: u32,
    asked: Option<Duration>,
    random: u64,
) -> Option<Duration> {
    match asked {
        Some(wait) if policy.honor_retry_after => (wait <= policy.max_retry_after).then_some(wait),
        _ => Some(backoff(
            retry,
            policy.backoff.base,
            policy.backoff.max,
            random,
        )),
    }
}

/// After attempt number `attempts` (1 for the first) ended with `outcome`: the wait before the
/// next attempt, or `None` when this one is final (not retriable, no retry left, the upstream
/// asked for a wait over `max_retry_after`, or the wait would not end before the request's
/// remaining time, `remaining_ms`). Budget and circuit are checked by the caller, against
/// shared state.
pub fn plan_retry(
    policy: &Policy,
    outcome: &Outcome,
    attempts: u32,
    max_retries: u32,
    asked: Option<Duration>,
    remaining_ms: u64,
    random: u64,
) -> Option<Duration> {
    if !is_retriable(outcome, &policy.retry_on) || attempts > max_retries {
        return None;
    }
    let delay = next_delay(policy, attempts, asked, random)?;
    (delay.as_millis() < u128::from(remaining_ms)).then_some(delay)
}

/// The request headers that hand this policy to Envoy's router, for `retries` retries.
/// With no retries, `x-envoy-max-retries: 0` also overrides any retry policy on the route.
pub fn router_headers(policy: &Policy, retries: u32) -> Vec<(&'static str, String)> {
    if retries == 0 {
        return vec![("x-envoy-max-retries", "0".into())];
    }
    let (grpc, http): (Vec<&str>, Vec<&str>) = policy
        .retry_on
        .names
        .iter()
        .map(String::as_str)
        .partition(|n| is_grpc_condition(n));
    let mut headers = vec![("x-envoy-max-retries", retries.to_string())];
    if !http.is_empty() {
        headers.push(("x-envoy-retry-on", http.join(",")));
    }
    if !grpc.is_empty() {
        headers.push(("x-envoy-retry-grpc-on", grpc.join(",")));
    }
    if !policy.retry_on.status_codes.is_empty() {
        let codes: Vec<String> = policy
            .retry_on
            .status_codes
            .iter()
            .map(u16::to_string)
            .collect();
        headers.push(("x-envoy-retriable-status-codes", codes.join(",")));
    }
    if let Some(t) = policy.per_try_timeout {
        headers.push((
            "x-envoy-upstream-rq-per-try-timeout-ms",
            t.as_millis().to_string(),
        ));
        if policy.hedge_on_per_try_timeout {
            headers.push(("x-envoy-hedge-on-per-try-timeout", "true".into()));
        }
    }
    headers
}

/// True when a request's `content-length` says its body is larger than filter mode copies: such
/// a request gets a single attempt through the router.
pub fn declared_too_large(content_length: Option<&str>, max_body_bytes: usize) -> bool {
    content_length
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| n > max_body_bytes)
}

/// True when the router answered itself (connect failure, reset, per-try timeout) rather than
/// passing an upstream response on: the `response.code_details` attribute is then anything but
/// `via_upstream`.
pub fn is_router_no_response(code_details: Option<&[u8]>) -> bool {
    code_details.is_some_and(|d| !d.is_empty() && d != b"via_upstream")
}

/// How many upstream attempts the router made, from the `upstream.request_attempt_count`
/// attribute (an 8-byte little-endian integer, or text), else from the `x-envoy-attempt-count`
/// response header (`header` is only read when the attribute says nothing).
pub fn router_attempts(
    attribute: Option<&[u8]>,
    header: impl FnOnce() -> Option<String>,
) -> Option<u32> {
    attribute
        .and_then(attempts_attribute)
        .or_else(|| header().and_then(|v| v.parse().ok()))
}

fn attempts_attribute(bytes: &[u8]) -> Option<u32> {
    if let Ok(raw) = <[u8; 8]>::try_from(bytes) {
        return u32::try_from(u64::from_le_bytes(raw)).ok();
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The timeout of one attempt the filter sends: its per-try timeout, but never past the
/// request's overall deadline (`remaining_ms` of it left, at least 1 ms).
pub fn attempt_timeout(per_try: Option<Duration>, remaining_ms: u64) -> Duration {
    let remaining = remaining_ms.max(1);
    let per_try = per_try.map_or(remaining, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
    });
    Duration::from_millis(per_try.min(remaining))
}

/// When a wait of `delay` that starts at `now_ms` ends, in Unix milliseconds.
pub fn wake_at_ms(now_ms: u64, delay: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(0))
}

/// A small, fast pseudo-random generator for jitter (not for anything secret).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from anything that varies (time, context id).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::time::UNIX_EPOCH;

    fn policy(json: &str) -> Policy {
        config::parse(json.as_bytes())
            .unwrap()
            .policies
            .default_policy()
            .clone()
    }

    #[test]
    fn idempotency() {
        for m in ["GET", "head", "OPTIONS", "PUT", "DELETE"] {
            assert!(retries_allowed(m, false, NonIdempotent::Never), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!retries_allowed(
                m,
                false,
                NonIdempotent::WithIdempotencyKey
            ));
            assert!(retries_allowed(m, true, NonIdempotent::WithIdempotencyKey));
            assert!(!retries_allowed(m, true, NonIdempotent::Never));
            assert!(retries_allowed(m, false, NonIdempotent::Always));
        }
    }

    #[test]
    fn retriable_outcomes() {
        let p = policy(r#"{"retry_on": ["gateway-error"]}"#);
        assert!(is_retriable(&Outcome::Status(503), &p.retry_on));
        assert!(!is_retriable(&Outcome::Status(500), &p.retry_on));
        assert!(is_retriable(&Outcome::NoResponse, &p.retry_on));
        let p = policy(r#"{"retry_on": ["5xx"]}"#);
        assert!(is_retriable(&Outcome::Status(500), &p.retry_on));
        assert!(!is_retriable(&Outcome::Status(429), &p.retry_on));
        let p =
            policy(r#"{"retry_on": ["retriable-status-codes"], "retriable_status_codes": [429]}"#);
        assert!(is_retriable(&Outcome::Status(429), &p.retry_on));
        assert!(!is_retriable(&Outcome::Status(503), &p.retry_on));
        assert!(!is_retriable(&Outcome::NoResponse, &p.retry_on));
        let p = policy(r#"{"retry_on": ["retriable-4xx"]}"#);
        assert!(is_retriable(&Outcome::Status(409), &p.retry_on));
        assert!(!is_retriable(&Outcome::Status(200), &p.retry_on));
        let p = policy(r#"{"retry_on": ["unavailable", "resource-exhausted", "gateway-error"]}"#);
        assert!(is_retriable(&Outcome::Grpc(200, 14), &p.retry_on));
        assert!(is_retriable(&Outcome::Grpc(200, 8), &p.retry_on));
        assert!(!is_retriable(&Outcome::Grpc(200, 13), &p.retry_on));
        assert!(!is_retriable(&Outcome::Grpc(200, 0), &p.retry_on));
        assert!(
            is_retriable(&Outcome::Grpc(503, 0), &p.retry_on),
            "HTTP conditions too"
        );
    }

    #[test]
    fn envoy_answers_without_upstream_response() {
        assert!(is_envoy_no_response(504, b"upstream request timeout"));
        assert!(is_envoy_no_response(
            503,
            b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        ));
        assert!(is_envoy_no_response(503, b"no healthy upstream"));
        assert!(!is_envoy_no_response(504, b"gateway timeout from the app"));
        assert!(!is_envoy_no_response(503, b""));
    }

    #[test]
    fn backoff_bounds_grow_and_cap() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        let ceilings: Vec<u128> = (1..=6)
            .map(|r| backoff_ceiling(r, base, max).as_millis())
            .collect();
        assert_eq!(ceilings, vec![25, 50, 100, 200, 250, 250]);
        assert_eq!(backoff_ceiling(0, base, max), base);
        assert_eq!(backoff_ceiling(200, base, max), max);
    }

    #[test]
    fn full_jitter_stays_in_bounds_and_spreads() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        let mut rng = Jitter::new(42);
        for retry in 1..=8 {
            let ceiling = backoff_ceiling(retry, base, max);
            let samples: Vec<Duration> = (0..500)
                .map(|_| backoff(retry, base, max, rng.next_u64()))
                .collect();
            assert!(samples.iter().all(|d| *d <= ceiling));
            let low = samples.iter().filter(|d| **d < ceiling / 4).count();
            let high = samples.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                low > 50 && high > 50,
                "retry {retry}: {low} low, {high} high"
            );
        }
        assert_eq!(backoff(1, base, max, 0), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 32 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert!(parse_retry_after("99999999999999999999999", now).is_some());
    }

    #[test]
    fn delay_honours_retry_after_up_to_max_retry_after() {
        let secs = Duration::from_secs;
        let p = policy(r#"{"backoff": {"base": "10ms", "max": "100ms"}}"#);
        assert_eq!(next_delay(&p, 1, Some(secs(1)), 7), Some(secs(1)));
        // Not shortened to the backoff bounds: the server's wait is kept...
        assert_eq!(next_delay(&p, 1, Some(secs(10)), 7), Some(secs(10)));
        // ...and a longer one than max_retry_after (10 s by default) means no retry.
        assert_eq!(next_delay(&p, 1, Some(secs(11)), 7), None);
        assert_eq!(next_delay(&p, 1, Some(Duration::MAX), 7), None);
        assert!(next_delay(&p, 1, None, u64::MAX).unwrap() <= Duration::from_millis(10));
        let p = policy(r#"{"max_retry_after": "2s"}"#);
        assert_eq!(next_delay(&p, 1, Some(secs(2)), 7), Some(secs(2)));
        assert_eq!(next_delay(&p, 1, Some(secs(3)), 7), None);
        let p = policy(r#"{"honor_retry_after": false}"#);
        assert!(next_delay(&p, 1, Some(secs(3600)), 7).unwrap() <= Duration::from_millis(25));
    }

    #[test]
    fn asked_wait_reads_retry_after_then_ratelimit_then_x_ratelimit_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secs = Duration::from_secs;
        let asked = |headers: &[(&str, &str)]| {
            asked_wait(
                |name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
                now,
            )
        };
        assert_eq!(asked(&[]), None);
        assert_eq!(asked(&[("retry-after", "3")]), Some(secs(3)));
        assert_eq!(
            asked(&[("retry-after", "3"), ("ratelimit", "\"a\";r=0;t=30")]),
            Some(secs(3)),
            "Retry-After first"
        );
        assert_eq!(
            asked(&[("retry-after", "soon"), ("ratelimit", "\"a\";r=0;t=30")]),
            Some(secs(30)),
            "an unparseable Retry-After is skipped"
        );
        assert_eq!(asked(&[("x-ratelimit-reset", "20")]), Some(secs(20)));
        assert_eq!(
            asked(&[("x-ratelimit-reset", "1700000045")]),
            Some(secs(45)),
            "a Unix time"
        );
        assert_eq!(
            asked(&[("x-ratelimit-reset", "1600000000")]),
            Some(Duration::ZERO),
            "in the past"
        );
        assert_eq!(
            asked(&[("x-ratelimit-reset", "1000000000")]),
            Some(secs(1_000_000_000))
        );
        assert_eq!(asked(&[("x-ratelimit-reset", "-5")]), None);
    }

    #[test]
    fn ratelimit_field_waits_for_the_exhausted_policy() {
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(
            parse_ratelimit_reset("\"day\";r=0;t=3600, \"s\";r=5;t=1"),
            secs(3600)
        );
        assert_eq!(parse_ratelimit_reset("\"s\";r=5;t=1"), None, "quota left");
        assert_eq!(parse_ratelimit_reset("\"a\";t=7"), secs(7));
        assert_eq!(
            parse_ratelimit_reset("\"a\";r=0;t=2, \"b\";r=0;t=9"),
            secs(9)
        );
        assert_eq!(
            parse_ratelimit_reset("limit=10, remaining=0, reset=30"),
            secs(30),
            "older drafts: one item per parameter"
        );
        assert_eq!(parse_ratelimit_reset("\"a\";r=0;t=-1"), None);
        assert_eq!(parse_ratelimit_reset("\"a\";r=0;t=1.5"), None);
        assert_eq!(
            parse_ratelimit_reset("\"a\";r=0;t=99999999999999999999999"),
            secs(u64::MAX)
        );
        assert_eq!(parse_ratelimit_reset(""), None);
    }

    #[test]
    fn plan_retry_stops_when_it_should() {
        let p = policy(r#"{"retry_on": ["5xx"], "backoff": {"base": "10ms", "max": "100ms"}}"#);
        let s503 = Outcome::Status(503);
        // 503, 503, 200 with two retries: attempt 1 and 2 are retried, 3 is final.
        assert!(plan_retry(&p, &s503, 1, 2, None, 5000, 3).is_some());
        assert!(plan_retry(&p, &s503, 2, 2, None, 5000, 3).is_some());
        assert_eq!(plan_retry(&p, &s503, 3, 2, None, 5000, 3), None);
        assert_eq!(
            plan_retry(&p, &Outcome::Status(200), 1, 2, None, 5000, 3),
            None
        );
        assert_eq!(
            plan_retry(&p, &Outcome::Status(404), 1, 2, None, 5000, 3),
            None
        );
        assert!(plan_retry(&p, &Outcome::NoResponse, 1, 2, None, 5000, 3).is_some());
        // Retry-After 1 s: retried after 1 s, unless less than that is left.
        let one = Some(Duration::from_secs(1));
        assert_eq!(
            plan_retry(&p, &s503, 1, 2, one, 5000, 3),
            Some(Duration::from_secs(1))
        );
        assert_eq!(plan_retry(&p, &s503, 1, 2, one, 900, 3), None);
        assert_eq!(plan_retry(&p, &s503, 1, 0, None, 5000, 3), None);
        // Retry-After 30 s: not shortened, not retried.
        let thirty = Some(Duration::from_secs(30));
        assert_eq!(plan_retry(&p, &s503, 1, 2, thirty, u64::MAX, 3), None);
    }

    #[test]
    fn router_headers_carry_the_policy() {
        let p = policy(
            r#"{"retry_on": ["5xx", "retriable-status-codes"], "retriable_status_codes": [503, 429],
                "per_try_timeout": "500ms"}"#,
        );
        let h = router_headers(&p, 3);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-envoy-retry-on"), Some("5xx,retriable-status-codes"));
        assert_eq!(get("x-envoy-max-retries"), Some("3"));
        assert_eq!(get("x-envoy-retriable-status-codes"), Some("503,429"));
        assert_eq!(get("x-envoy-upstream-rq-per-try-timeout-ms"), Some("500"));
        assert_eq!(get("x-envoy-retry-grpc-on"), None);
        assert_eq!(get("x-envoy-hedge-on-per-try-timeout"), None);
        let p = policy(r#"{"per_try_timeout": "200ms", "hedge_on_per_try_timeout": true}"#);
        let h = router_headers(&p, 1);
        assert!(h.contains(&("x-envoy-hedge-on-per-try-timeout", "true".into())));
        assert!(
            !router_headers(&p, 0)
                .iter()
                .any(|(k, _)| *k == "x-envoy-hedge-on-per-try-timeout"),
            "no hedging without retries (a non-idempotent request)"
        );
        let p = policy(r#"{"retry_on": ["unavailable", "reset", "cancelled"]}"#);
        let h = router_headers(&p, 1);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-envoy-retry-on"), Some("reset"));
        assert_eq!(get("x-envoy-retry-grpc-on"), Some("unavailable,cancelled"));
        let p = policy(r#"{"retry_on": ["unavailable"]}"#);
        let h = router_headers(&p, 1);
        assert!(!h.iter().any(|(k, _)| *k == "x-envoy-retry-on"), "{h:?}");
        assert_eq!(
            router_headers(&p, 0),
            vec![("x-envoy-max-retries", "0".into())]
        );
    }

    #[test]
    fn declared_body_size() {
        assert!(declared_too_large(Some(" 4096 "), 1024));
        assert!(!declared_too_large(Some("1024"), 1024));
        assert!(!declared_too_large(Some("lots"), 1024));
        assert!(!declared_too_large(None, 0));
    }

    #[test]
    fn router_answers_without_upstream_response() {
        assert!(is_router_no_response(Some(b"upstream_per_try_timeout")));
        assert!(!is_router_no_response(Some(b"via_upstream")));
        assert!(!is_router_no_response(Some(b"")));
        assert!(!is_router_no_response(None));
    }

    #[test]
    fn router_attempt_count_from_attribute_or_header() {
        let header = || Some("5".to_string());
        assert_eq!(router_attempts(Some(&3u64.to_le_bytes()), header), Some(3));
        assert_eq!(router_attempts(Some(b"2"), header), Some(2));
        assert_eq!(router_attempts(Some(b"x"), header), Some(5));
        assert_eq!(router_attempts(None, header), Some(5));
        assert_eq!(router_attempts(None, || Some("many".into())), None);
        let unread = || -> Option<String> { unreachable!("the attribute answered") };
        assert_eq!(router_attempts(Some(b"1"), unread), Some(1));
    }

    #[test]
    fn attempt_timeout_is_capped_by_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(attempt_timeout(Some(ms(200)), 5000), ms(200));
        assert_eq!(attempt_timeout(Some(ms(200)), 150), ms(150));
        assert_eq!(attempt_timeout(None, 5000), ms(5000));
        assert_eq!(
            attempt_timeout(None, 0),
            ms(1),
            "never zero (no timeout at all)"
        );
        assert_eq!(wake_at_ms(1000, Duration::from_micros(1500)), 1001);
        assert_eq!(wake_at_ms(u64::MAX, ms(5)), u64::MAX);
    }
}
