//! The circuit breaker: closed, open, half-open, stored in shared data so every worker sees one
//! circuit per rule. Pure state machine; the clock (milliseconds) is passed in.

use crate::config::BreakerConfig;
use wasmgate_core::shared::{update, SharedStore, UpdateError};

/// The circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow; counts consecutive failed requests.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Requests are short-circuited until `until_ms`.
    Open {
        /// When probing may start.
        until_ms: u64,
    },
    /// A few probes are let through to decide.
    HalfOpen {
        /// Probes admitted since `since_ms`.
        probes: u32,
        /// Probes that succeeded.
        successes: u32,
        /// When half-open started (a probe that never reports is given up after `open_for`).
        since_ms: u64,
    },
}

impl Default for State {
    fn default() -> Self {
        Self::Closed { failures: 0 }
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

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl State {
    /// Reads the shared-data encoding; garbage reads as closed.
    pub fn decode(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let mut parts = text.split(':');
        let mut num = || parts.next().and_then(|p| p.parse::<u64>().ok());
        match text.split(':').next() {
            Some("closed") => {
                num();
                Self::Closed {
                    failures: num().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                }
            }
            Some("open") => {
                num();
                match num() {
                    Some(until_ms) => Self::Open { until_ms },
                    None => Self::default(),
                }
            }
            Some("half") => {
                num();
                match (num(), num(), num()) {
                    (Some(p), Some(s), Some(since_ms)) => Self::HalfOpen {
                        probes: u32::try_from(p).unwrap_or(u32::MAX),
                        successes: u32::try_from(s).unwrap_or(u32::MAX),
                        since_ms,
                    },
                    _ => Self::default(),
                }
            }
            _ => Self::default(),
        }
    }

    /// The shared-data encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Closed { failures } => format!("closed:{failures}"),
            Self::Open { until_ms } => format!("open:{until_ms}"),
            Self::HalfOpen {
                probes,
                successes,
                since_ms,
            } => format!("half:{probes}:{successes}:{since_ms}"),
        }
        .into_bytes()
    }

    /// Decides whether a new request may go upstream, and the state after admitting it.
    pub fn admit(self, config: &BreakerConfig, now_ms: u64) -> (Self, Admission) {
        match self {
            Self::Closed { .. } => (self, Admission::Allow),
            Self::Open { until_ms } if now_ms < until_ms => (
                self,
                Admission::Reject {
                    retry_after_secs: ceil_secs(until_ms - now_ms),
                },
            ),
            Self::Open { .. } => (
                Self::HalfOpen {
                    probes: 1,
                    successes: 0,
                    since_ms: now_ms,
                },
                Admission::Probe,
            ),
            Self::HalfOpen {
                probes,
                successes,
                since_ms,
            } => {
                if probes < config.half_open_requests {
                    let next = Self::HalfOpen {
                        probes: probes + 1,
                        successes,
                        since_ms,
                    };
                    (next, Admission::Probe)
                } else if now_ms.saturating_sub(since_ms) >= ms(config.open_for) {
                    // Probes that never reported (reset streams): start probing afresh.
                    let next = Self::HalfOpen {
                        probes: 1,
                        successes: 0,
                        since_ms: now_ms,
                    };
                    (next, Admission::Probe)
                } else {
                    (
                        self,
                        Admission::Reject {
                            retry_after_secs: 1,
                        },
                    )
                }
            }
        }
    }

    /// Records a request's final result.
    pub fn record(
        self,
        config: &BreakerConfig,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> (Self, Option<Transition>) {
        let open = Self::Open {
            until_ms: now_ms.saturating_add(ms(config.open_for)),
        };
        match self {
            Self::Closed { .. } if success => (Self::Closed { failures: 0 }, None),
            Self::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= config.failure_threshold {
                    (open, Some(Transition::Opened))
                } else {
                    (Self::Closed { failures }, None)
                }
            }
            Self::HalfOpen { .. } if !probe => (self, None),
            Self::HalfOpen { .. } if !success => (open, Some(Transition::Opened)),
            Self::HalfOpen {
                probes,
                successes,
                since_ms,
            } => {
                let successes = successes.saturating_add(1);
                if successes >= config.half_open_requests {
                    (Self::Closed { failures: 0 }, Some(Transition::Closed))
                } else {
                    let next = Self::HalfOpen {
                        probes,
                        successes,
                        since_ms,
                    };
                    (next, None)
                }
            }
            Self::Open { .. } => (self, None),
        }
    }

    /// True while requests are short-circuited (used to stop retrying mid-request).
    pub fn is_open(&self, now_ms: u64) -> bool {
        matches!(self, Self::Open { until_ms } if now_ms < *until_ms)
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
        let (next, admission) = state.admit(config, now_ms);
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
    success: bool,
    probe: bool,
) -> Result<Option<Transition>, UpdateError> {
    update(store, key, |bytes| {
        let state = State::decode(bytes);
        let (next, transition) = state.record(config, now_ms, success, probe);
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
    use std::time::Duration;
    use wasmgate_core::host::FakeHost;

    fn config(half_open: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
            half_open_requests: half_open,
            failure_status_codes: vec![503],
        }
    }

    /// Found by fuzzing (fuzz/artifacts/state_breaker): a stored half-open state with
    /// `successes` at `u32::MAX` overflowed when a probe succeeded.
    #[test]
    fn half_open_counts_saturate() {
        let stored = format!("half:{}:{}:{}", u32::MAX, u32::MAX, u64::MAX);
        let state = State::decode(stored.as_bytes());
        let (next, transition) = state.record(&config(u32::MAX), 0, true, true);
        assert_eq!(transition, Some(Transition::Closed));
        assert_eq!(next, State::Closed { failures: 0 });
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let c = config(1);
        let mut s = State::default();
        for _ in 0..2 {
            let (next, t) = s.record(&c, 0, false, false);
            assert_eq!(t, None);
            s = next;
        }
        // A success in between resets the count.
        s = s.record(&c, 0, true, false).0;
        assert_eq!(s, State::Closed { failures: 0 });
        for _ in 0..2 {
            s = s.record(&c, 0, false, false).0;
        }
        let (s, t) = s.record(&c, 10, false, false);
        assert_eq!(t, Some(Transition::Opened));
        assert_eq!(s, State::Open { until_ms: 1010 });
        assert!(s.is_open(1009));
        assert!(!s.is_open(1010));
    }

    #[test]
    fn open_rejects_with_retry_after_then_probes() {
        let c = config(1);
        let s = State::Open { until_ms: 2500 };
        assert_eq!(
            s.admit(&c, 0).1,
            Admission::Reject {
                retry_after_secs: 3
            }
        );
        assert_eq!(
            s.admit(&c, 2499).1,
            Admission::Reject {
                retry_after_secs: 1
            }
        );
        let (s, a) = s.admit(&c, 2500);
        assert_eq!(a, Admission::Probe);
        // Only one probe at a time.
        assert_eq!(
            s.admit(&c, 2600).1,
            Admission::Reject {
                retry_after_secs: 1
            }
        );
        // A non-probe result (admitted before the circuit opened) decides nothing.
        assert_eq!(s.record(&c, 2600, true, false), (s, None));
        let (closed, t) = s.record(&c, 2700, true, true);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!(closed, State::Closed { failures: 0 });
        assert_eq!(closed.admit(&c, 2700).1, Admission::Allow);
    }

    #[test]
    fn failed_probe_reopens() {
        let c = config(1);
        let (s, _) = State::Open { until_ms: 0 }.admit(&c, 100);
        let (s, t) = s.record(&c, 200, false, true);
        assert_eq!(t, Some(Transition::Opened));
        assert_eq!(s, State::Open { until_ms: 1200 });
    }

    #[test]
    fn all_probes_must_succeed_to_close() {
        let c = config(2);
        let (s, a1) = State::Open { until_ms: 0 }.admit(&c, 0);
        let (s, a2) = s.admit(&c, 0);
        assert_eq!((a1, a2), (Admission::Probe, Admission::Probe));
        assert!(matches!(s.admit(&c, 0).1, Admission::Reject { .. }));
        let (s, t) = s.record(&c, 1, true, true);
        assert_eq!(t, None);
        let (_, t) = s.record(&c, 2, true, true);
        assert_eq!(t, Some(Transition::Closed));
    }

    #[test]
    fn lost_probes_are_replaced_after_open_for() {
        let c = config(1);
        let (s, _) = State::Open { until_ms: 0 }.admit(&c, 0);
        assert!(matches!(s.admit(&c, 999).1, Admission::Reject { .. }));
        assert_eq!(s.admit(&c, 1000).1, Admission::Probe);
    }

    #[test]
    fn encoding_round_trips() {
        for s in [
            State::Closed { failures: 4 },
            State::Open { until_ms: 123_456 },
            State::HalfOpen {
                probes: 2,
                successes: 1,
                since_ms: 99,
            },
        ] {
            assert_eq!(State::decode(&s.encode()), s);
        }
        assert_eq!(State::decode(b"open:x"), State::default());
        assert_eq!(State::decode(b""), State::default());
        assert_eq!(State::decode(b"half:1"), State::default());
    }

    #[test]
    fn shared_circuit() {
        let host = FakeHost::default();
        let c = config(1);
        for _ in 0..2 {
            assert_eq!(record(&host, "k", &c, 0, false, false).unwrap(), None);
        }
        assert_eq!(
            record(&host, "k", &c, 0, false, false).unwrap(),
            Some(Transition::Opened)
        );
        assert!(is_open(&host, "k", 10));
        assert!(matches!(
            admit(&host, "k", &c, 10).unwrap(),
            Admission::Reject { .. }
        ));
        assert_eq!(admit(&host, "k", &c, 1000).unwrap(), Admission::Probe);
        assert_eq!(
            record(&host, "k", &c, 1001, true, true).unwrap(),
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
