//! The slot table in Envoy shared data: bounded memory, exact counts across workers.
//!
//! Shared data cannot delete keys, so the filter never creates one key per client. It owns a
//! fixed table of `max_keys` slots (`wasmgate_rate_limit/<plugin>/<slot>`); a request's key goes
//! to slot `fnv1a(key) % max_keys`, and the slot holds that full key plus the state of every
//! limit of its rule. A different key landing in an occupied slot replaces the entry (counted as
//! an eviction), so memory is bounded by `max_keys` entries whatever the number of distinct keys.
//!
//! Every read-modify-write of a slot goes through `wasmgate_core::shared::update`: the new state
//! is written with the CAS token of the state it was computed from, and recomputed on a
//! conflict, so two workers can never both take the last unit of a quota.

use crate::algorithm::{Limit, Report, State};
use wasmgate_core::shared::{update, SharedStore, UpdateError};

const VERSION: u8 = 1;

/// The outcome of one request against every limit of its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Every limit had room (the request was counted).
    pub allowed: bool,
    /// One report per limit, in the rule's order, after counting.
    pub reports: Vec<Report>,
    /// When refused: nanoseconds until every limit has room again.
    pub retry_after_ns: u64,
    /// The slot held another key, which this request replaced.
    pub evicted: bool,
}

/// The shared-data key of the slot that holds `full_key`.
pub fn slot_key(prefix: &str, full_key: &str, max_keys: u64) -> String {
    format!(
        "{prefix}/{}",
        wasmgate_core::fnv1a(full_key.as_bytes()) % max_keys.max(1)
    )
}

/// Counts one request for `full_key` against `limits` at `now` (ns since the epoch).
pub fn decide<S: SharedStore + ?Sized>(
    store: &S,
    slot: &str,
    full_key: &str,
    limits: &[Limit],
    now: u64,
) -> Result<Decision, UpdateError> {
    update(store, slot, |stored| {
        let (states, evicted) = match decode(stored, full_key, limits.len()) {
            Entry::Same(states) => (states, false),
            Entry::Empty => (vec![[0; 3]; limits.len()], false),
            Entry::Other => (vec![[0; 3]; limits.len()], true),
        };
        let states: Vec<State> = limits
            .iter()
            .zip(states)
            .map(|(limit, state)| limit.normalize(state, now))
            .collect();
        let retry_after_ns = limits
            .iter()
            .zip(&states)
            .map(|(limit, state)| limit.retry_after_ns(state, now))
            .max()
            .unwrap_or(0);
        let allowed = retry_after_ns == 0;
        let states: Vec<State> = if allowed {
            limits
                .iter()
                .zip(states)
                .map(|(limit, state)| limit.consume(state, now))
                .collect()
        } else {
            states
        };
        let reports = limits
            .iter()
            .zip(&states)
            .map(|(limit, state)| limit.report(state, now))
            .collect();
        // A refused request changes nothing: no write, so a flood of refusals stays cheap.
        let write = allowed.then(|| encode(full_key, &states));
        let decision = Decision {
            allowed,
            reports,
            retry_after_ns,
            evicted: evicted && allowed,
        };
        (write, decision)
    })
}

enum Entry {
    Same(Vec<State>),
    Empty,
    Other,
}

fn encode(full_key: &str, states: &[State]) -> Vec<u8> {
    let key = full_key.as_bytes();
    let mut out = Vec::with_capacity(6 + key.len() + states.len() * 24);
    out.push(VERSION);
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(key);
    out.push(u8::try_from(states.len()).unwrap_or(u8::MAX));
    for state in states {
        for word in state {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8], full_key: &str, count: usize) -> Entry {
    if bytes.is_empty() {
        return Entry::Empty;
    }
    let parse = || -> Option<(&[u8], Vec<State>)> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let (len, rest) = rest.split_at_checked(4)?;
        let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let (key, rest) = rest.split_at_checked(len)?;
        let (&n, mut rest) = rest.split_first()?;
        let mut states = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let mut state = [0u64; 3];
            for word in &mut state {
                let (w, r) = rest.split_at_checked(8)?;
                *word = u64::from_le_bytes(w.try_into().ok()?);
                rest = r;
            }
            states.push(state);
        }
        rest.is_empty().then_some((key, states))
    };
    match parse() {
        Some((key, states)) if key == full_key.as_bytes() && states.len() == count => {
            Entry::Same(states)
        }
        _ => Entry::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Algorithm, NANOS_PER_SECOND as S};
    use wasmgate_core::host::FakeHost;

    const T0: u64 = 1_700_000_040 * S;

    fn limits() -> Vec<Limit> {
        vec![
            Limit {
                name: "burst".into(),
                requests: 3,
                window_ns: S,
                algorithm: Algorithm::TokenBucket { burst: 3 },
            },
            Limit {
                name: "minute".into(),
                requests: 5,
                window_ns: 60 * S,
                algorithm: Algorithm::FixedWindow,
            },
        ]
    }

    #[test]
    fn encode_decode_roundtrip() {
        let states = vec![[1, 2, 3], [u64::MAX, 0, 7]];
        let bytes = encode("k", &states);
        assert!(matches!(decode(&bytes, "k", 2), Entry::Same(s) if s == states));
        assert!(matches!(decode(&bytes, "other", 2), Entry::Other));
        assert!(matches!(decode(&bytes, "k", 3), Entry::Other));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], "k", 2),
            Entry::Other
        ));
        assert!(matches!(decode(b"", "k", 2), Entry::Empty));
        assert!(matches!(decode(b"\x02junk", "k", 2), Entry::Other));
    }

    #[test]
    fn every_limit_must_pass_and_refusals_do_not_count() {
        let host = FakeHost::default();
        let l = limits();
        let slot = slot_key("p", "k", 10);
        let results: Vec<bool> = (0..5)
            .map(|_| decide(&host, &slot, "k", &l, T0).unwrap().allowed)
            .collect();
        assert_eq!(results, [true, true, true, false, false], "the bucket of 3");
        // 2 s later the bucket is full again, but the minute has only 2 left.
        let later: Vec<Decision> = (0..3)
            .map(|_| decide(&host, &slot, "k", &l, T0 + 2 * S).unwrap())
            .collect();
        assert!(later[0].allowed && later[1].allowed && !later[2].allowed);
        assert_eq!(later[1].reports[0].remaining, 1);
        assert_eq!(later[1].reports[1].remaining, 0);
        assert_eq!(later[2].retry_after_ns, 58 * S, "the minute decides");
    }

    #[test]
    fn colliding_keys_evict_and_start_fresh() {
        let host = FakeHost::default();
        let l = limits();
        // With one slot, every key collides.
        let a = decide(&host, &slot_key("p", "a", 1), "a", &l, T0).unwrap();
        assert!(!a.evicted);
        assert_eq!(a.reports[1].remaining, 4);
        let b = decide(&host, &slot_key("p", "b", 1), "b", &l, T0).unwrap();
        assert!(b.evicted);
        assert_eq!(b.reports[1].remaining, 4, "b did not inherit a's count");
        let a = decide(&host, &slot_key("p", "a", 1), "a", &l, T0).unwrap();
        assert!(a.evicted);
        assert_eq!(a.reports[1].remaining, 4, "a was evicted and starts again");
    }

    #[test]
    fn slots_are_bounded() {
        let slots: std::collections::HashSet<String> = (0..10_000)
            .map(|i| slot_key("p", &format!("key-{i}"), 100))
            .collect();
        assert_eq!(
            slots.len(),
            100,
            "10,000 keys spread over exactly 100 slots"
        );
    }
}
