//! One OAuth2 grant's token as every worker of an Envoy process shares it (shared data, JSON),
//! with the fetch bookkeeping, as pure functions of the state and the time (milliseconds since
//! the epoch).
//!
//! A worker claims a fetch with a compare-and-swap on this value, so one fetch runs at a time per
//! process; every worker picks the token up from the same value.

use serde::{Deserialize, Serialize};

/// Longest wait between retries after failed fetches.
pub const MAX_RETRY_MS: u64 = 30_000;
/// A purged token is refetched at most this soon after it was fetched, so an upstream that
/// refuses every token cannot make the filter hammer the token endpoint.
pub const MIN_PURGE_REFETCH_MS: u64 = 5_000;

/// The shared value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedToken {
    /// Changes whenever `token` changes.
    pub generation: u64,
    /// The current access token.
    pub token: Option<String>,
    /// When `token` was fetched.
    pub fetched_at: u64,
    /// When `token` expires.
    pub expires_at: u64,
    /// When `token` should be replaced.
    pub refresh_at: u64,
    /// Completed fetches, successful or not (wakes requests waiting for a token).
    pub completed: u64,
    /// Consecutive failed fetches.
    pub failures: u32,
    /// No fetch before this time (backoff after failures, or after a purge).
    pub next_attempt: u64,
    /// A worker is fetching until this time (its claim expires then).
    pub in_flight_until: u64,
}

/// What a request can get from the token state at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// This token, of this generation.
    Ready(String, u64),
    /// No token yet, but one is being fetched or is about to be: worth waiting for.
    Pending,
    /// No usable token, and the last fetch failed: do not wait.
    Unavailable,
}

impl SharedToken {
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

    /// The token while it has not expired.
    pub fn usable(&self, now: u64) -> Option<&str> {
        self.token.as_deref().filter(|_| now < self.expires_at)
    }

    /// What a request gets at `now`.
    pub fn availability(&self, now: u64) -> Availability {
        match self.usable(now) {
            Some(token) => Availability::Ready(token.to_string(), self.generation),
            None if self.in_flight(now) || self.failures == 0 => Availability::Pending,
            None => Availability::Unavailable,
        }
    }

    /// Whether a fetch should start now: no usable token or time to refresh, nothing in
    /// flight, and not inside a backoff.
    pub fn due(&self, now: u64) -> bool {
        let wanted = self.usable(now).is_none() || now >= self.refresh_at;
        wanted && !self.in_flight(now) && now >= self.next_attempt
    }

    /// Claims the fetch for one worker until the timeout (plus a margin) has passed.
    pub fn claim(&mut self, now: u64, timeout_ms: u64) {
        self.in_flight_until = now.saturating_add(timeout_ms).saturating_add(1_000);
    }

    /// Records a new token valid for `lifetime_ms`, refreshed `refresh_before_ms` before its
    /// expiry but never before half its lifetime has passed (a short-lived token and a long
    /// `refresh_before` must not refetch continuously).
    pub fn succeeded(&mut self, now: u64, token: String, lifetime_ms: u64, refresh_before_ms: u64) {
        self.generation = self.generation.saturating_add(1);
        self.token = Some(token);
        self.fetched_at = now;
        self.expires_at = now.saturating_add(lifetime_ms);
        let refresh_after = lifetime_ms
            .saturating_sub(refresh_before_ms)
            .max(lifetime_ms / 2);
        self.refresh_at = now.saturating_add(refresh_after);
        self.completed = self.completed.saturating_add(1);
        self.failures = 0;
        self.next_attempt = 0;
        self.in_flight_until = 0;
    }

    /// Records a failed fetch: the current token stays in use until it expires; the next
    /// attempt after 1 s, 2 s, 4 s... up to 30 s.
    pub fn failed(&mut self, now: u64) {
        self.completed = self.completed.saturating_add(1);
        self.failures = self.failures.saturating_add(1);
        let backoff = 1_000u64
            .checked_shl(self.failures.saturating_sub(1).min(15))
            .unwrap_or(MAX_RETRY_MS)
            .min(MAX_RETRY_MS);
        self.next_attempt = now.saturating_add(backoff);
        self.in_flight_until = 0;
    }

    /// The upstream refused the token of `generation`: drop it (unless a newer one replaced it
    /// already) and fetch another, not sooner than [`MIN_PURGE_REFETCH_MS`] after it was
    /// fetched. Returns whether this call dropped it.
    pub fn purge(&mut self, generation: u64) -> bool {
        if generation != self.generation || self.token.is_none() {
            return false;
        }
        self.token = None;
        self.failures = 0;
        self.next_attempt = self
            .next_attempt
            .max(self.fetched_at.saturating_add(MIN_PURGE_REFETCH_MS));
        true
    }
}

#[cfg(test)]
mod tests;
