//! Remote JWKS state shared by every worker of an Envoy process (through shared data), as pure
//! functions of the state and the time.
//!
//! One shared value per remote provider holds the last good key set and the fetch bookkeeping.
//! Workers claim a fetch with a compare-and-swap on that value, so one fetch runs at a time per
//! Envoy process; every worker picks the new keys up from the same value.

use serde::{Deserialize, Serialize};

/// Minimum time between two refetches triggered by an unknown `kid`.
pub const KID_REFETCH_INTERVAL_MS: u64 = 30_000;
/// Longest wait between retries after failed fetches (default of `retry_back_off.max_interval`).
pub const MAX_RETRY_MS: u64 = 30_000;
/// First wait after a failed fetch (default of `retry_back_off.base_interval`).
pub const BASE_RETRY_MS: u64 = 1_000;

/// The shared value (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedJwks {
    /// Changes whenever `jwks` changes.
    pub generation: u64,
    /// Last good JWKS document.
    pub jwks: Option<String>,
    /// When `jwks` was last fetched successfully (ms since the epoch).
    pub fetched_at: u64,
    /// Completed fetches, successful or not (wakes requests waiting for a fetch).
    pub completed: u64,
    /// Consecutive failed fetches.
    pub failures: u32,
    /// No fetch before this time (backoff after failures).
    pub next_attempt: u64,
    /// A worker is fetching until this time (its claim expires then).
    pub in_flight_until: u64,
    /// An unknown `kid` asked for a refetch.
    pub refetch_requested: bool,
    /// When the last `kid`-triggered refetch was requested.
    pub last_kid_refetch: u64,
}

impl SharedJwks {
    /// Decodes the shared bytes (empty or garbage: the initial state).
    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Encodes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether a fetch is in flight at `now`.
    pub fn in_flight(&self, now: u64) -> bool {
        now < self.in_flight_until
    }

    /// Whether a fetch should start now: keys missing, stale or a refetch asked for, no fetch
    /// in flight, and not inside the backoff after a failure.
    pub fn due(&self, now: u64, cache_duration_ms: u64) -> bool {
        let wanted = self.jwks.is_none()
            || self.refetch_requested
            || now >= self.fetched_at.saturating_add(cache_duration_ms);
        wanted && !self.in_flight(now) && now >= self.next_attempt
    }

    /// Claims the fetch for one worker until the timeout (plus a margin) has passed.
    pub fn claim(&mut self, now: u64, timeout_ms: u64) {
        self.in_flight_until = now.saturating_add(timeout_ms).saturating_add(1_000);
    }

    /// Records a successful fetch.
    pub fn succeeded(&mut self, now: u64, jwks: String) {
        if self.jwks.as_deref() != Some(jwks.as_str()) {
            self.generation += 1;
            self.jwks = Some(jwks);
        }
        self.fetched_at = now;
        self.completed += 1;
        self.failures = 0;
        self.next_attempt = 0;
        self.in_flight_until = 0;
        self.refetch_requested = false;
    }

    /// Records a failed fetch: the last good keys stay; retry after 1 s, 2 s, 4 s... up to 30 s.
    pub fn failed(&mut self, now: u64) {
        self.failed_with(now, BASE_RETRY_MS, MAX_RETRY_MS);
    }

    /// Records a failed fetch: the last good keys stay; retry after `base_ms`, twice that, and
    /// so on up to `max_ms`.
    pub fn failed_with(&mut self, now: u64, base_ms: u64, max_ms: u64) {
        self.completed += 1;
        self.failures = self.failures.saturating_add(1);
        let backoff = base_ms
            .checked_shl(self.failures.saturating_sub(1).min(30))
            .filter(|b| b >> self.failures.saturating_sub(1).min(30) == base_ms)
            .unwrap_or(max_ms)
            .min(max_ms);
        self.next_attempt = now.saturating_add(backoff);
        self.in_flight_until = 0;
        self.refetch_requested = false;
    }

    /// Whether the last good keys are too old to use at `now`: older than `cache_duration`
    /// plus `max_stale` (a refresh kept failing that long).
    pub fn too_stale(&self, now: u64, cache_duration_ms: u64, max_stale_ms: Option<u64>) -> bool {
        max_stale_ms.is_some_and(|stale| {
            now > self
                .fetched_at
                .saturating_add(cache_duration_ms)
                .saturating_add(stale)
        })
    }

    /// An unknown `kid` was seen: asks for a refetch unless one was asked for in the last 30 s.
    /// Returns whether this call asked.
    pub fn request_refetch(&mut self, now: u64) -> bool {
        if self.last_kid_refetch != 0
            && now
                < self
                    .last_kid_refetch
                    .saturating_add(KID_REFETCH_INTERVAL_MS)
        {
            return false;
        }
        self.last_kid_refetch = now;
        self.refetch_requested = true;
        // A rotation is worth fetching right away, even inside a failure backoff.
        self.next_attempt = 0;
        true
    }
}

/// Validates a fetched body: status 200, within the size cap, a JWKS with a usable key.
pub fn accept_response(
    status: Option<&str>,
    body: Option<&[u8]>,
    max_bytes: usize,
    limits: &crate::jwks::KeyLimits,
) -> Result<String, String> {
    if status != Some("200") {
        return Err(format!("status {}", status.unwrap_or("none")));
    }
    let body = body.ok_or("empty body")?;
    if body.len() > max_bytes {
        return Err(format!("body over {max_bytes} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let jwks = crate::jwks::Jwks::parse_limited(text, limits)?;
    if jwks.keys.is_empty() {
        return Err("no usable key".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: u64 = 600_000;

    #[test]
    fn first_fetch_then_refresh() {
        let mut s = SharedJwks::decode(b"");
        assert!(s.due(1_000, CACHE));
        s.claim(1_000, 1_000);
        assert!(s.in_flight(2_000));
        assert!(!s.due(2_000, CACHE), "one fetch at a time");
        assert!(s.due(3_000, CACHE), "an abandoned claim expires");
        s.succeeded(2_500, "{\"keys\":[]}".into());
        assert_eq!(s.generation, 1);
        assert!(!s.due(3_000, CACHE));
        assert!(s.due(2_500 + CACHE, CACHE), "refresh after cache_duration");
        s.succeeded(2_500 + CACHE, "{\"keys\":[]}".into());
        assert_eq!(s.generation, 1, "same document, same generation");
        assert_eq!(s.completed, 2);
        assert_eq!(SharedJwks::decode(&s.encode()), s);
    }

    #[test]
    fn failures_keep_keys_and_back_off() {
        let mut s = SharedJwks::default();
        s.succeeded(0, "k1".into());
        s.failed(CACHE);
        assert_eq!(s.jwks.as_deref(), Some("k1"));
        assert!(!s.due(CACHE + 999, CACHE));
        assert!(s.due(CACHE + 1_000, CACHE));
        s.failed(CACHE + 1_000);
        assert!(!s.due(CACHE + 2_999, CACHE));
        assert!(s.due(CACHE + 3_000, CACHE));
        for _ in 0..20 {
            s.failed(0);
        }
        assert_eq!(s.next_attempt, MAX_RETRY_MS);
    }

    #[test]
    fn configured_backoff_and_max_stale() {
        let mut s = SharedJwks::default();
        s.succeeded(0, "k1".into());
        s.failed_with(CACHE, 200, 500);
        assert_eq!(s.next_attempt, CACHE + 200);
        s.failed_with(CACHE, 200, 500);
        assert_eq!(s.next_attempt, CACHE + 400);
        s.failed_with(CACHE, 200, 500);
        assert_eq!(s.next_attempt, CACHE + 500);
        for _ in 0..100 {
            s.failed_with(CACHE, u64::MAX / 2, u64::MAX);
        }
        assert_eq!(s.next_attempt, u64::MAX, "no overflow");
        assert_eq!(s.jwks.as_deref(), Some("k1"), "last good keys kept");
        assert!(!s.too_stale(CACHE + 1_000, CACHE, None));
        assert!(!s.too_stale(CACHE + 1_000, CACHE, Some(1_000)));
        assert!(s.too_stale(CACHE + 1_001, CACHE, Some(1_000)));
    }

    #[test]
    fn kid_refetch_at_most_every_30s() {
        let mut s = SharedJwks::default();
        s.succeeded(1_000, "k1".into());
        assert!(!s.due(2_000, CACHE));
        assert!(s.request_refetch(2_000));
        assert!(s.due(2_000, CACHE));
        assert!(!s.request_refetch(20_000));
        s.succeeded(3_000, "k2".into());
        assert_eq!(s.generation, 2);
        assert!(!s.request_refetch(31_999));
        assert!(s.request_refetch(32_000));
    }

    #[test]
    fn responses_are_checked() {
        let l = crate::jwks::KeyLimits::default();
        let ok = br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        assert!(accept_response(Some("200"), Some(ok), 1024, &l).is_ok());
        assert!(accept_response(Some("503"), Some(ok), 1024, &l).is_err());
        assert!(accept_response(Some("200"), Some(ok), 10, &l).is_err());
        assert!(accept_response(Some("200"), Some(b"{\"keys\": []}"), 1024, &l).is_err());
        assert!(accept_response(Some("200"), Some(b"<html>"), 1024, &l).is_err());
        assert!(accept_response(Some("200"), None, 1024, &l).is_err());
        let one_key = crate::jwks::KeyLimits { max_keys: 1, ..l };
        let two =
            br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "oct", "k": "c2VjcmV0"}]}"#;
        let e = accept_response(Some("200"), Some(two), 1024, &one_key).unwrap_err();
        assert!(e.contains("max_keys"), "{e}");
    }
}
