//! A document fetched by one worker and shared by every worker of an Envoy process (a JWKS, a
//! discovery document), as pure functions of the shared state and the time.
//!
//! One shared value (JSON) per document holds the last good copy and the fetch bookkeeping.
//! Workers claim a fetch with a compare-and-swap on that value ([`crate::shared::update`]), so
//! one fetch runs at a time per Envoy process; a failed fetch keeps the last good copy and backs
//! off; a refetch asked for by a request (an unknown key id) is allowed at most once per
//! interval, so no request an attacker can send causes a fetch of its own.

/// The shared value: one line of numbers, then the document (a compact text form, which costs a
/// module far less than a serde derive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedFetch {
    /// Changes whenever `document` changes.
    pub generation: u64,
    /// The last good document.
    pub document: Option<String>,
    /// When `document` was last fetched successfully (ms since the epoch).
    pub fetched_at: u64,
    /// Completed fetches, successful or not (wakes requests waiting for a fetch).
    pub completed: u64,
    /// Consecutive failed fetches.
    pub failures: u32,
    /// No fetch before this time (backoff after failures).
    pub next_attempt: u64,
    /// A worker is fetching until this time (its claim expires then).
    pub in_flight_until: u64,
    /// A request asked for a refetch.
    pub refetch_requested: bool,
    /// When the last request-triggered refetch was asked for.
    pub last_refetch: u64,
}

impl SharedFetch {
    /// Decodes the shared bytes (empty or garbage: the initial state).
    pub fn decode(bytes: &[u8]) -> Self {
        Self::parse(bytes).unwrap_or_default()
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (line, document) = text.split_once('\n')?;
        let mut numbers = line.strip_prefix("f1 ")?.split(' ').map(str::parse::<u64>);
        let mut next = || numbers.next()?.ok();
        let state = Self {
            generation: next()?,
            fetched_at: next()?,
            completed: next()?,
            failures: u32::try_from(next()?).ok()?,
            next_attempt: next()?,
            in_flight_until: next()?,
            refetch_requested: next()? == 1,
            last_refetch: next()?,
            document: (next()? == 1).then(|| document.to_string()),
        };
        next().is_none().then_some(state)
    }

    /// Encodes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let flag = |b: bool| if b { 1 } else { 0 };
        format!(
            "f1 {} {} {} {} {} {} {} {} {}\n{}",
            self.generation,
            self.fetched_at,
            self.completed,
            self.failures,
            self.next_attempt,
            self.in_flight_until,
            flag(self.refetch_requested),
            self.last_refetch,
            flag(self.document.is_some()),
            self.document.as_deref().unwrap_or_default()
        )
        .into_bytes()
    }

    /// Whether a fetch is in flight at `now`.
    pub fn in_flight(&self, now: u64) -> bool {
        now < self.in_flight_until
    }

    /// Whether a fetch should start now: no document, an old one or a refetch asked for, no
    /// fetch in flight, and not inside the backoff after a failure.
    pub fn due(&self, now: u64, cache_ms: u64) -> bool {
        let wanted = self.document.is_none()
            || self.refetch_requested
            || now >= self.fetched_at.saturating_add(cache_ms);
        wanted && !self.in_flight(now) && now >= self.next_attempt
    }

    /// Claims the fetch for one worker until its timeout (plus a second) has passed.
    pub fn claim(&mut self, now: u64, timeout_ms: u64) {
        self.in_flight_until = now.saturating_add(timeout_ms).saturating_add(1_000);
    }

    /// Records a successful fetch.
    pub fn succeeded(&mut self, now: u64, document: String) {
        if self.document.as_deref() != Some(document.as_str()) {
            self.generation += 1;
            self.document = Some(document);
        }
        self.fetched_at = now;
        self.completed += 1;
        self.failures = 0;
        self.next_attempt = 0;
        self.in_flight_until = 0;
        self.refetch_requested = false;
    }

    /// Records a failed fetch: the last good document stays; the next attempt waits `base_ms`,
    /// twice that after the next failure, and so on up to `max_ms`.
    pub fn failed(&mut self, now: u64, base_ms: u64, max_ms: u64) {
        self.completed += 1;
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(30);
        let backoff = base_ms
            .checked_shl(shift)
            .filter(|b| b >> shift == base_ms)
            .unwrap_or(max_ms)
            .min(max_ms);
        self.next_attempt = now.saturating_add(backoff);
        self.in_flight_until = 0;
        self.refetch_requested = false;
    }

    /// Whether a document fetched at `fetched_at` is too old to use at `now`: older than
    /// `cache_ms` plus `max_stale_ms` (a refresh kept failing that long; `None`: never).
    pub fn too_stale(fetched_at: u64, now: u64, cache_ms: u64, max_stale_ms: Option<u64>) -> bool {
        max_stale_ms
            .is_some_and(|stale| now > fetched_at.saturating_add(cache_ms).saturating_add(stale))
    }

    /// A request asks for a refetch (it named a key the document lacks): granted unless one was
    /// granted less than `interval_ms` ago. A granted refetch starts at the next tick, even
    /// inside a failure backoff. Returns whether this call was granted.
    pub fn request_refetch(&mut self, now: u64, interval_ms: u64) -> bool {
        if self.last_refetch != 0 && now < self.last_refetch.saturating_add(interval_ms) {
            return false;
        }
        self.last_refetch = now;
        self.refetch_requested = true;
        self.next_attempt = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: u64 = 600_000;

    #[test]
    fn first_fetch_then_refresh() {
        let mut s = SharedFetch::decode(b"");
        assert!(s.due(1_000, CACHE));
        s.claim(1_000, 1_000);
        assert!(s.in_flight(2_000));
        assert!(!s.due(2_000, CACHE), "one fetch at a time");
        assert!(s.due(3_000, CACHE), "an abandoned claim expires");
        s.succeeded(2_500, "d".into());
        assert_eq!(s.generation, 1);
        assert!(!s.due(3_000, CACHE));
        assert!(
            s.due(2_500 + CACHE, CACHE),
            "refresh after the cache duration"
        );
        s.succeeded(2_500 + CACHE, "d".into());
        assert_eq!(s.generation, 1, "same document, same generation");
        assert_eq!(s.completed, 2);
        assert_eq!(SharedFetch::decode(&s.encode()), s);
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_the_initial_state() {
        let mut s = SharedFetch::default();
        assert_eq!(SharedFetch::decode(&s.encode()), s);
        s.succeeded(5, "{\"keys\": []}\nline two".into());
        s.request_refetch(9, 1);
        s.failed(10, 1, 2);
        assert_eq!(SharedFetch::decode(&s.encode()), s);
        for garbage in [
            &b""[..],
            b"{}",
            b"f1 1 2\n",
            b"f1 1 2 3 4 5 6 7 8 9 10\n",
            b"\xff\n",
        ] {
            assert_eq!(SharedFetch::decode(garbage), SharedFetch::default());
        }
    }

    #[test]
    fn failures_keep_the_document_and_back_off() {
        let mut s = SharedFetch::default();
        s.succeeded(0, "d1".into());
        s.failed(CACHE, 200, 500);
        assert_eq!(s.next_attempt, CACHE + 200);
        assert!(!s.due(CACHE + 199, CACHE));
        s.failed(CACHE, 200, 500);
        assert_eq!(s.next_attempt, CACHE + 400);
        s.failed(CACHE, 200, 500);
        assert_eq!(s.next_attempt, CACHE + 500);
        for _ in 0..100 {
            s.failed(CACHE, u64::MAX / 2, u64::MAX);
        }
        assert_eq!(s.next_attempt, u64::MAX, "no overflow");
        assert_eq!(s.document.as_deref(), Some("d1"), "last good document kept");
        assert!(!SharedFetch::too_stale(0, CACHE + 1_000, CACHE, None));
        assert!(!SharedFetch::too_stale(
            0,
            CACHE + 1_000,
            CACHE,
            Some(1_000)
        ));
        assert!(SharedFetch::too_stale(0, CACHE + 1_001, CACHE, Some(1_000)));
    }

    #[test]
    fn requested_refetches_are_rate_limited() {
        let mut s = SharedFetch::default();
        s.succeeded(1_000, "d1".into());
        assert!(!s.due(2_000, CACHE));
        assert!(s.request_refetch(2_000, 30_000));
        assert!(s.due(2_000, CACHE));
        assert!(!s.request_refetch(20_000, 30_000), "one per interval");
        s.succeeded(3_000, "d2".into());
        assert_eq!(s.generation, 2);
        assert!(!s.request_refetch(31_999, 30_000));
        assert!(s.request_refetch(32_000, 30_000));
    }
}
