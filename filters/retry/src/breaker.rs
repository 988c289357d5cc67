//! The circuit breaker: closed, open, half-open, stored in shared data so every worker sees the
//! same circuit (one per upstream cluster, or per route). It trips on consecutive failures, on
//! the failure rate or the slow-call rate over a sliding time window with a minimum number of
//! calls (resilience4j and Polly semantics), whichever is configured; repeated trips keep it
//! open longer (doubling, jittered, capped). Pure state machine; clock and randomness passed in.

use crate::config::BreakerConfig;
use wasmgate_core::shared::{update, SharedStore, UpdateError};

/// Buckets of the sliding window (each `window / WINDOW_BUCKETS` long).
pub const WINDOW_BUCKETS: u64 = 10;

/// One bucket of the sliding window: its slot (`now_ms / bucket_ms`) and its counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Which slot of time the bucket counts.
    pub slot: u64,
    /// Requests recorded.
    pub calls: u32,
    /// Of them, failed.
    pub failures: u32,
    /// Of them, slower than `slow_call_duration`.
    pub slow: u32,
}

/// The circuit's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Requests flow; counts consecutive failed requests and the recent window.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
        /// The sliding window, oldest first (only with rate tripping).
        window: Vec<Bucket>,
    },
    /// Requests are short-circuited until `until_ms`.
    Open {
        /// When probing may start.
        until_ms: u64,
        /// Trips in a row without closing in between (1 for the first).
        trips: u32,
    },
    /// A few probes are let through to decide.
    HalfOpen {
        /// Probes admitted since `since_ms`.
        probes: u32,
        /// Probes that succeeded.
        successes: u32,
        /// When half-open started (a probe that never reports is given up after `open_for`).
        since_ms: u64,
        /// Trips in a row so far.
        trips: u32,
    },
}

impl Default for State {
    fn default() -> Self {
        Self::Closed {
            failures: 0,
            window: Vec::new(),
        }
    }
}

/// Whether a request may go upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Normal request.
    Allow,
    /// A half-open probe: its result decides the circuit.
    Probe,
    /// Short-circuited; the client may come back after this many seconds.
    Reject {
        /// Seconds for `Retry-After` (at least 1).
        retry_after_secs: u64,
    },
}

/// A state change worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened (from closed or half-open).
    Opened,
    /// The circuit closed after successful probes.
    Closed,
}

/// A request's result as the circuit counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Its final status is a failure (or nothing answered).
    pub failed: bool,
    /// It took longer than `slow_call_duration`.
    pub slow: bool,
    /// It was a half-open probe.
    pub probe: bool,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

fn bucket_ms(config: &BreakerConfig) -> u64 {
    (ms(config.window) / WINDOW_BUCKETS).max(1)
}

/// How long the circuit stays open after trip number `trips` (1 for the first): `open_for`
/// doubled for each further trip in a row, capped at `max_open_for`, less up to a fifth at random
/// so circuits that opened together do not probe together.
pub fn open_time_ms(config: &BreakerConfig, trips: u32, random: u64) -> u64 {
    let factor = 1u64
        .checked_shl(trips.saturating_sub(1).min(63))
        .unwrap_or(u64::MAX);
    let full = ms(config.open_for)
        .saturating_mul(factor)
        .min(ms(config.max_open_for));
    let jitter = (full / 5).saturating_mul(random % 1001) / 1000;
    full - jitter
}

fn rate_reached(part: u32, calls: u32, threshold: Option<f64>) -> bool {
    threshold.is_some_and(|t| f64::from(part) >= t * f64::from(calls))
}

impl State {
    /// Reads the shared-data encoding; garbage reads as closed.
    pub fn decode(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let (head, tail) = text.split_once('|').unwrap_or((text, ""));
        let mut parts = head.split(':');
        let kind = parts.next();
        let mut num = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        match kind {
            Some("closed") => Self::Closed {
                failures: num().map_or(0, small),
                window: tail
                    .split(';')
                    .filter_map(|b| {
                        let mut f = b.split(',').map(|n| n.parse::<u64>().ok());
                        Some(Bucket {
                            slot: f.next()??,
                            calls: small(f.next()??),
                            failures: small(f.next()??),
                            slow: small(f.next()??),
                        })
                    })
                    .take(usize::try_from(WINDOW_BUCKETS).unwrap_or(10))
                    .collect(),
            },
            Some("open") => match num() {
                Some(until_ms) => Self::Open {
                    until_ms,
                    trips: num().map_or(1, small),
                },
                None => Self::default(),
            },
            Some("half") => match (num(), num(), num()) {
                (Some(p), Some(s), Some(since_ms)) => Self::HalfOpen {
                    probes: small(p),
                    successes: small(s),
                    since_ms,
                    trips: num().map_or(1, small),
                },
                _ => Self::default(),
            },
            _ => Self::default(),
        }
    }

    /// The shared-data encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Closed { failures, window } => {
                let buckets: Vec<String> = window
                    .iter()
                    .map(|b| format!("{},{},{},{}", b.slot, b.calls, b.failures, b.slow))
                    .collect();
                if buckets.is_empty() {
                    format!("closed:{failures}")
                } else {
                    format!("closed:{failures}|{}", buckets.join(";"))
                }
            }
            Self::Open { until_ms, trips } => format!("open:{until_ms}:{trips}"),
            Self::HalfOpen {
                probes,
                successes,
                since_ms,
                trips,
            } => format!("half:{probes}:{successes}:{since_ms}:{trips}"),
        }
        .into_bytes()
    }

    /// Decides whether a new request may go upstream, and the state after admitting it.
    pub fn admit(self, config: &BreakerConfig, now_ms: u64) -> (Self, Admission) {
        match self {
            Self::Closed { .. } => (self, Admission::Allow),
            Self::Open { until_ms, .. } if now_ms < until_ms => {
                let retry_after_secs = ceil_secs(until_ms - now_ms);
                (self, Admission::Reject { retry_after_secs })
            }
            Self::Open { trips, .. } => (
                Self::HalfOpen {
                    probes: 1,
                    successes: 0,
                    since_ms: now_ms,
                    trips,
                },
                Admission::Probe,
            ),
            Self::HalfOpen {
                probes,
                successes,
                since_ms,
                trips,
            } => {
                if probes < config.half_open_requests {
                    let next = Self::HalfOpen {
                        probes: probes + 1,
                        successes,
                        since_ms,
                        trips,
                    };
                    (next, Admission::Probe)
                } else if now_ms.saturating_sub(since_ms) >= ms(config.open_for) {
                    // Probes that never reported (reset streams): start probing afresh.
                    let next = Self::HalfOpen {
                        probes: 1,
                        successes: 0,
                        since_ms: now_ms,
                        trips,
                    };
                    (next, Admission::Probe)
                } else {
                    let reject = Admission::Reject {
                        retry_after_secs: 1,
                    };
                    (self, reject)
                }
            }
        }
    }

    /// Records a request's final result; `random` jitters the open time if it trips.
    pub fn record(
        self,
        config: &BreakerConfig,
        now_ms: u64,
        call: Call,
        random: u64,
    ) -> (Self, Option<Transition>) {
        let open = |trips: u32| Self::Open {
            until_ms: now_ms.saturating_add(open_time_ms(config, trips, random)),
            trips,
        };
        match self {
            Self::Closed { failures, window } => {
                let failures = if call.failed {
                    failures.saturating_add(1)
                } else {
                    0
                };
                let consecutive = config.failure_threshold.is_some_and(|t| failures >= t);
                let window = Self::count(config, window, now_ms, call);
                let (calls, failed, slow) = window.iter().fold((0u32, 0u32, 0u32), |t, b| {
                    (
                        t.0.saturating_add(b.calls),
                        t.1.saturating_add(b.failures),
                        t.2.saturating_add(b.slow),
                    )
                });
                let rate = calls >= config.minimum_calls
                    && (rate_reached(failed, calls, config.failure_rate)
                        || rate_reached(slow, calls, config.slow_call_rate));
                if consecutive || rate {
                    (open(1), Some(Transition::Opened))
                } else {
                    (Self::Closed { failures, window }, None)
                }
            }
            Self::HalfOpen { .. } if !call.probe => (self, None),
            Self::HalfOpen { trips, .. } if call.failed || call.slow => {
                (open(trips.saturating_add(1)), Some(Transition::Opened))
            }
            Self::HalfOpen {
                probes,
                successes,
                since_ms,
                trips,
            } => {
                let successes = successes.saturating_add(1);
                if successes >= config.half_open_requests {
                    (Self::default(), Some(Transition::Closed))
                } else {
                    let next = Self::HalfOpen {
                        probes,
                        successes,
                        since_ms,
                        trips,
                    };
                    (next, None)
                }
            }
            Self::Open { .. } => (self, None),
        }
    }

    /// The window with `call` counted, buckets older than the window dropped (kept empty when
    /// no rate trips the circuit).
    fn count(
        config: &BreakerConfig,
        mut window: Vec<Bucket>,
        now_ms: u64,
        call: Call,
    ) -> Vec<Bucket> {
        if config.failure_rate.is_none() && config.slow_call_rate.is_none() {
            return Vec::new();
        }
        let slot = now_ms / bucket_ms(config);
        window.retain(|b| b.slot <= slot && slot - b.slot < WINDOW_BUCKETS);
        if window.last().is_none_or(|b| b.slot != slot) {
            window.push(Bucket {
                slot,
                ..Bucket::default()
            });
        }
        if let Some(b) = window.last_mut() {
            b.calls = b.calls.saturating_add(1);
            b.failures = b.failures.saturating_add(u32::from(call.failed));
            b.slow = b.slow.saturating_add(u32::from(call.slow));
        }
        window
    }

    /// True while requests are short-circuited (used to stop retrying mid-request).
    pub fn is_open(&self, now_ms: u64) -> bool {
        matches!(self, Self::Open { until_ms, .. } if now_ms < *until_ms)
    }
}

/// True when a request's final status (`None`: nothing answered) does not count as a failure.
pub fn is_success(config: &BreakerConfig, status: Option<u16>) -> bool {
    status.is_some_and(|s| !config.failure_status_codes.contains(&s))
}

/// Admits a request against the shared circuit.
pub fn admit<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    config: &BreakerConfig,
    now_ms: u64,
) -> Result<Admission, UpdateError> {
    update(store, key, |bytes| {
        let state = State::decode(bytes);
        let (next, admission) = state.clone().admit(config, now_ms);
        let write = (next != state).then(|| next.encode());
        (write, admission)
    })
}

/// Records a final result in the shared circuit; returns the transition, if any.
pub fn record<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    config: &BreakerConfig,
    now_ms: u64,
    call: Call,
    random: u64,
) -> Result<Option<Transition>, UpdateError> {
    update(store, key, |bytes| {
        let state = State::decode(bytes);
        let (next, transition) = state.clone().record(config, now_ms, call, random);
        let write = (next != state).then(|| next.encode());
        (write, transition)
    })
}

/// Is the shared circuit open right now?
pub fn is_open<S: SharedStore + ?Sized>(store: &S, key: &str, now_ms: u64) -> bool {
    match store.get_shared(key) {
        Ok((Some(bytes), _)) => State::decode(&bytes).is_open(now_ms),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scope;
    use std::time::Duration;
    use wasmgate_core::host::FakeHost;

    /// Consecutive tripping at 3, open for 1 s (no growth).
    fn config(half_open: u32) -> BreakerConfig {
        BreakerConfig {
            scope: Scope::Cluster,
            failure_threshold: Some(3),
            failure_rate: None,
            slow_call_duration: None,
            slow_call_rate: None,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(1),
            half_open_requests: half_open,
            failure_status_codes: vec![503],
        }
    }

    /// Rate tripping: half of at least 4 calls over 10 s (buckets of 1 s).
    fn rates() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: None,
            failure_rate: Some(0.5),
            minimum_calls: 4,
            ..config(1)
        }
    }

    fn ok() -> Call {
        Call {
            failed: false,
            slow: false,
            probe: false,
        }
    }

    fn failed() -> Call {
        Call {
            failed: true,
            ..ok()
        }
    }

    fn probe(failed: bool) -> Call {
        Call {
            failed,
            slow: false,
            probe: true,
        }
    }

    fn open(until_ms: u64, trips: u32) -> State {
        State::Open { until_ms, trips }
    }

    /// Found by fuzzing (fuzz/artifacts/state_breaker): a stored half-open state with
    /// `successes` at `u32::MAX` overflowed when a probe succeeded.
    #[test]
    fn half_open_counts_saturate() {
        let stored = format!("half:{}:{}:{}", u32::MAX, u32::MAX, u64::MAX);
        let state = State::decode(stored.as_bytes());
        let (next, transition) = state.record(&config(u32::MAX), 0, probe(false), 0);
        assert_eq!(transition, Some(Transition::Closed));
        assert_eq!(next, State::default());
        let stored = format!("half:1:0:0:{}", u32::MAX);
        let (next, _) = State::decode(stored.as_bytes()).record(&config(1), 5, probe(true), 0);
        assert_eq!(
            next,
            open(1005, u32::MAX),
            "trips saturate, the open time is capped"
        );
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let c = config(1);
        let mut s = State::default();
        for _ in 0..2 {
            let (next, t) = s.record(&c, 0, failed(), 0);
            assert_eq!(t, None);
            s = next;
        }
        // A success in between resets the count.
        s = s.record(&c, 0, ok(), 0).0;
        assert_eq!(s, State::default());
        for _ in 0..2 {
            s = s.record(&c, 0, failed(), 0).0;
        }
        let (s, t) = s.record(&c, 10, failed(), 0);
        assert_eq!(t, Some(Transition::Opened));
        assert_eq!(s, open(1010, 1));
        assert!(s.is_open(1009));
        assert!(!s.is_open(1010));
    }

    #[test]
    fn a_failure_rate_trips_where_consecutive_counting_never_would() {
        // Every other request fails: never 2 in a row, but half of them.
        let c = rates();
        let mut s = State::default();
        for (i, call) in [failed(), ok(), failed()].into_iter().enumerate() {
            let (next, t) = s.record(&c, 100 * i as u64, call, 0);
            assert_eq!(t, None, "fewer than minimum_calls decide nothing");
            s = next;
        }
        let (s, t) = s.record(&c, 400, ok(), 0);
        assert_eq!(t, Some(Transition::Opened), "2 of 4 failed");
        assert_eq!(s, open(1400, 1));
        // Below the rate: stays closed.
        let mut s = State::default();
        for (i, call) in [failed(), ok(), ok(), ok(), failed(), ok()]
            .into_iter()
            .enumerate()
        {
            let (next, t) = s.record(&c, 100 * i as u64, call, 0);
            assert_eq!(t, None);
            s = next;
        }
    }

    #[test]
    fn the_window_slides() {
        let c = rates();
        let mut s = State::default();
        // Three failures long ago, then healthy calls: the old ones leave the window.
        for t in [0, 10, 20] {
            s = s.record(&c, t, failed(), 0).0;
        }
        let (s, t) = s.record(&c, 10_000, ok(), 0);
        assert_eq!(
            t, None,
            "the failures at 0-20 ms are out of the 10 s window"
        );
        let State::Closed { window, .. } = &s else {
            panic!("closed");
        };
        assert_eq!(window.len(), 1);
        // Within the window they would have tripped it.
        let mut s = State::default();
        for t in [0, 10, 20] {
            s = s.record(&c, t, failed(), 0).0;
        }
        assert_eq!(s.record(&c, 9_999, ok(), 0).1, Some(Transition::Opened));
    }

    #[test]
    fn slow_calls_trip_the_circuit() {
        let c = BreakerConfig {
            failure_rate: None,
            slow_call_duration: Some(Duration::from_secs(2)),
            slow_call_rate: Some(0.75),
            ..rates()
        };
        let slow = Call { slow: true, ..ok() };
        let mut s = State::default();
        for call in [slow, slow, ok()] {
            s = s.record(&c, 0, call, 0).0;
        }
        assert_eq!(s.clone().record(&c, 0, ok(), 0).1, None, "2 of 4 slow");
        assert_eq!(
            s.record(&c, 0, slow, 0).1,
            Some(Transition::Opened),
            "3 of 4"
        );
    }

    #[test]
    fn consecutive_mode_writes_nothing_for_healthy_calls() {
        let c = config(1);
        let (s, _) = State::default().record(&c, 0, ok(), 0);
        assert_eq!(s, State::default(), "the same state: no shared-data write");
        assert_eq!(s.encode(), b"closed:0");
    }

    #[test]
    fn repeated_trips_stay_open_longer_with_jitter_capped() {
        let c = BreakerConfig {
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(60),
            ..config(1)
        };
        let times: Vec<u64> = (1..=5).map(|t| open_time_ms(&c, t, 0)).collect();
        assert_eq!(times, vec![10_000, 20_000, 40_000, 60_000, 60_000]);
        assert_eq!(open_time_ms(&c, 1, 1000), 8_000, "at most a fifth less");
        assert_eq!(open_time_ms(&c, 1, 500), 9_000);
        assert_eq!(
            open_time_ms(&c, u32::MAX, u64::MAX),
            60_000 - 12_000 * (u64::MAX % 1001) / 1000
        );
        // A failed probe opens it again for twice as long.
        let (s, _) = open(0, 1).admit(&c, 100);
        let (s, t) = s.record(&c, 200, probe(true), 0);
        assert_eq!(t, Some(Transition::Opened));
        assert_eq!(s, open(20_200, 2));
        // Closing forgets the trips.
        let (s, _) = open(0, 3).admit(&c, 0);
        let (s, t) = s.record(&c, 1, probe(false), 0);
        assert_eq!((s, t), (State::default(), Some(Transition::Closed)));
    }

    #[test]
    fn open_rejects_with_retry_after_then_probes() {
        let c = config(1);
        let s = open(2500, 1);
        assert_eq!(
            s.clone().admit(&c, 0).1,
            Admission::Reject {
                retry_after_secs: 3
            }
        );
        assert_eq!(
            s.clone().admit(&c, 2499).1,
            Admission::Reject {
                retry_after_secs: 1
            }
        );
        let (s, a) = s.admit(&c, 2500);
        assert_eq!(a, Admission::Probe);
        // Only one probe at a time.
        assert_eq!(
            s.clone().admit(&c, 2600).1,
            Admission::Reject {
                retry_after_secs: 1
            }
        );
        // A non-probe result (admitted before the circuit opened) decides nothing.
        assert_eq!(s.clone().record(&c, 2600, ok(), 0), (s.clone(), None));
        let (closed, t) = s.record(&c, 2700, probe(false), 0);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!(closed, State::default());
        assert_eq!(closed.admit(&c, 2700).1, Admission::Allow);
    }

    #[test]
    fn all_probes_must_succeed_to_close() {
        let c = config(2);
        let (s, a1) = open(0, 1).admit(&c, 0);
        let (s, a2) = s.admit(&c, 0);
        assert_eq!((a1, a2), (Admission::Probe, Admission::Probe));
        assert!(matches!(s.clone().admit(&c, 0).1, Admission::Reject { .. }));
        let (s, t) = s.record(&c, 1, probe(false), 0);
        assert_eq!(t, None);
        let (_, t) = s.record(&c, 2, probe(false), 0);
        assert_eq!(t, Some(Transition::Closed));
    }

    #[test]
    fn lost_probes_are_replaced_after_open_for() {
        let c = config(1);
        let (s, _) = open(0, 1).admit(&c, 0);
        assert!(matches!(
            s.clone().admit(&c, 999).1,
            Admission::Reject { .. }
        ));
        assert_eq!(s.admit(&c, 1000).1, Admission::Probe);
    }

    #[test]
    fn encoding_round_trips() {
        for s in [
            State::Closed {
                failures: 4,
                window: vec![],
            },
            State::Closed {
                failures: 0,
                window: vec![
                    Bucket {
                        slot: 7,
                        calls: 3,
                        failures: 1,
                        slow: 2,
                    },
                    Bucket {
                        slot: 8,
                        calls: 1,
                        failures: 0,
                        slow: 0,
                    },
                ],
            },
            open(123_456, 2),
            State::HalfOpen {
                probes: 2,
                successes: 1,
                since_ms: 99,
                trips: 3,
            },
        ] {
            assert_eq!(State::decode(&s.encode()), s);
        }
        assert_eq!(State::decode(b"open:x"), State::default());
        assert_eq!(State::decode(b""), State::default());
        assert_eq!(State::decode(b"half:1"), State::default());
        // The previous module's encodings still read.
        assert_eq!(State::decode(b"open:5"), open(5, 1));
        assert_eq!(
            State::decode(b"closed:2|1,2,x,4;5,6,7,8"),
            State::Closed {
                failures: 2,
                window: vec![Bucket {
                    slot: 5,
                    calls: 6,
                    failures: 7,
                    slow: 8
                }]
            },
            "a bad bucket is dropped"
        );
        let many = (0..50)
            .map(|i| format!("{i},1,1,1"))
            .collect::<Vec<_>>()
            .join(";");
        let State::Closed { window, .. } = State::decode(format!("closed:0|{many}").as_bytes())
        else {
            panic!("closed");
        };
        assert_eq!(window.len(), 10, "never more buckets than the window has");
    }

    #[test]
    fn shared_circuit() {
        let host = FakeHost::default();
        let c = config(1);
        for _ in 0..2 {
            assert_eq!(record(&host, "k", &c, 0, failed(), 0).unwrap(), None);
        }
        assert_eq!(
            record(&host, "k", &c, 0, failed(), 0).unwrap(),
            Some(Transition::Opened)
        );
        assert!(is_open(&host, "k", 10));
        assert!(!is_open(&host, "other", 10), "one circuit per key");
        assert!(matches!(
            admit(&host, "k", &c, 10).unwrap(),
            Admission::Reject { .. }
        ));
        assert_eq!(admit(&host, "k", &c, 1000).unwrap(), Admission::Probe);
        assert_eq!(
            record(&host, "k", &c, 1001, probe(false), 0).unwrap(),
            Some(Transition::Closed)
        );
        assert_eq!(admit(&host, "k", &c, 1002).unwrap(), Admission::Allow);
        assert!(!is_open(&host, "missing", 0));
    }

    #[test]
    fn success_is_a_status_outside_the_failure_codes() {
        let c = config(1);
        assert!(is_success(&c, Some(200)));
        assert!(is_success(&c, Some(500)), "only the listed codes fail");
        assert!(!is_success(&c, Some(503)));
        assert!(!is_success(&c, None), "no answer at all fails");
    }
}
