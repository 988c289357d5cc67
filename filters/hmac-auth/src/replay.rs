//! Replay protection in Envoy shared data (one map for every worker), with bounded memory.
//!
//! Ids are fingerprinted (16 bytes of SHA-256) and spread over `ceil(max_entries / SLOTS)`
//! buckets, one shared-data key each, holding at most [`SLOTS`] entries: the table never holds
//! more than about `max_entries` ids, whatever the traffic. A full bucket drops its expired
//! entries first, then the entry that expires soonest. Every change is a compare-and-swap
//! read-modify-write ([`wasmgate_core::shared::update`]), so concurrent workers never lose an entry.
//!
//! An id is *claimed* (in flight) when its request is verified, and *settled* when the upstream
//! answers: kept as done for `ttl` after a 2xx, released otherwise so that the sender's retry
//! passes. A duplicate of an id in flight and one of an id done are told apart ([`Claim`]).

use crate::crypto;
use wasmgate_core::shared::{update, SharedStore, UpdateError};

/// Entries per bucket (25 bytes each).
pub const SLOTS: usize = 32;
const ENTRY: usize = 25;
const IN_FLIGHT: u8 = 1;
const DONE: u8 = 2;

/// An id's fingerprint.
pub type Fingerprint = [u8; 16];

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First sighting: the request may go on.
    Claimed,
    /// A copy of a message still in flight (no answer from the upstream yet).
    InFlight,
    /// A copy of a message the upstream accepted within the ttl.
    Done,
}

/// The replay table for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    prefix: String,
    buckets: u64,
    ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    fingerprint: Fingerprint,
    expires: u64,
    state: u8,
}

fn decode(bytes: &[u8]) -> Vec<Entry> {
    bytes
        .as_chunks::<ENTRY>()
        .0
        .iter()
        .filter_map(|c| {
            let fingerprint: Fingerprint = c.get(..16)?.try_into().ok()?;
            let expires = u64::from_be_bytes(c.get(16..24)?.try_into().ok()?);
            Some(Entry {
                fingerprint,
                expires,
                state: c[24],
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for e in entries {
        out.extend_from_slice(&e.fingerprint);
        out.extend_from_slice(&e.expires.to_be_bytes());
        out.push(e.state);
    }
    out
}

impl Table {
    /// A table whose keys start with `<namespace>/replay/` (a configuration's namespace: a new
    /// configuration starts with an empty table).
    pub fn new(namespace: &str, ttl_secs: u64, max_entries: u64) -> Self {
        let slots = SLOTS as u64;
        Self {
            prefix: format!("{namespace}/replay/"),
            buckets: max_entries.div_ceil(slots).max(1),
            ttl_secs,
        }
    }

    /// The fingerprint of a replay id within a policy.
    pub fn fingerprint(policy_index: usize, scheme: &str, id: &str) -> Fingerprint {
        let digest = crypto::sha256(format!("{policy_index}\n{scheme}\n{id}").as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    fn key(&self, fp: &Fingerprint) -> String {
        let mut n = [0u8; 8];
        n.copy_from_slice(&fp[8..16]);
        format!("{}{}", self.prefix, u64::from_be_bytes(n) % self.buckets)
    }

    /// Claims an id as in flight, or reports it as a replay.
    pub fn claim<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        fp: &Fingerprint,
        now: u64,
    ) -> Result<Claim, UpdateError> {
        let expires = now.saturating_add(self.ttl_secs);
        update(store, &self.key(fp), |value| {
            let mut entries = decode(value);
            let before = entries.len();
            entries.retain(|e| e.expires > now);
            if let Some(seen) = entries.iter().find(|e| e.fingerprint == *fp) {
                let claim = if seen.state == DONE {
                    Claim::Done
                } else {
                    Claim::InFlight
                };
                let pruned = (entries.len() != before).then(|| encode(&entries));
                return (pruned, claim);
            }
            if entries.len() >= SLOTS {
                if let Some(i) = entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| (e.state == IN_FLIGHT, e.expires))
                    .map(|(i, _)| i)
                {
                    entries.remove(i);
                }
            }
            entries.push(Entry {
                fingerprint: *fp,
                expires,
                state: IN_FLIGHT,
            });
            (Some(encode(&entries)), Claim::Claimed)
        })
    }

    /// Settles a claimed id: done for `ttl` after a success, forgotten otherwise.
    pub fn settle<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        fp: &Fingerprint,
        now: u64,
        success: bool,
    ) -> Result<(), UpdateError> {
        let expires = now.saturating_add(self.ttl_secs);
        update(store, &self.key(fp), |value| {
            let mut entries = decode(value);
            let Some(i) = entries
                .iter()
                .position(|e| e.fingerprint == *fp && e.state == IN_FLIGHT)
            else {
                return (None, ());
            };
            if success {
                entries[i].state = DONE;
                entries[i].expires = expires;
            } else {
                entries.remove(i);
            }
            (Some(encode(&entries)), ())
        })
    }

    /// Number of buckets (shared-data keys) the table may use.
    pub fn buckets(&self) -> u64 {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_core::host::FakeHost;

    fn fp(n: u32) -> Fingerprint {
        Table::fingerprint(0, "github", &n.to_string())
    }

    #[test]
    fn claim_settle_replay() {
        let host = FakeHost::default();
        let t = Table::new("t", 600, 1000);
        assert_eq!(t.claim(&host, &fp(1), 100).unwrap(), Claim::Claimed);
        // Concurrent duplicate while in flight.
        assert_eq!(t.claim(&host, &fp(1), 101).unwrap(), Claim::InFlight);
        t.settle(&host, &fp(1), 102, true).unwrap();
        assert_eq!(t.claim(&host, &fp(1), 200).unwrap(), Claim::Done);
        // Done entries live for ttl after the answer.
        assert_eq!(t.claim(&host, &fp(1), 702).unwrap(), Claim::Claimed);
    }

    #[test]
    fn failure_releases_for_retry() {
        let host = FakeHost::default();
        let t = Table::new("t", 600, 1000);
        assert_eq!(t.claim(&host, &fp(2), 100).unwrap(), Claim::Claimed);
        t.settle(&host, &fp(2), 101, false).unwrap();
        assert_eq!(t.claim(&host, &fp(2), 102).unwrap(), Claim::Claimed);
        // Settling an id that is not in flight changes nothing.
        t.settle(&host, &fp(3), 103, true).unwrap();
        assert_eq!(t.claim(&host, &fp(3), 104).unwrap(), Claim::Claimed);
    }

    #[test]
    fn memory_is_bounded() {
        let host = FakeHost::default();
        let t = Table::new("t", 600, 64);
        assert_eq!(t.buckets(), 2);
        for n in 0..10_000 {
            assert_eq!(t.claim(&host, &fp(n), 100).unwrap(), Claim::Claimed);
            t.settle(&host, &fp(n), 100, true).unwrap();
        }
        let mut total = 0;
        for b in 0..t.buckets() {
            let (value, _) = host.get_shared(&format!("t/replay/{b}")).unwrap();
            let len = value.unwrap().len();
            assert!(len <= SLOTS * ENTRY);
            total += len / ENTRY;
        }
        assert!(total <= 64);
        // The most recent ids are still remembered.
        assert_eq!(t.claim(&host, &fp(9_999), 101).unwrap(), Claim::Done);
    }

    #[test]
    fn fingerprints_separate_policies_and_schemes() {
        assert_ne!(
            Table::fingerprint(0, "github", "a"),
            Table::fingerprint(1, "github", "a")
        );
        assert_ne!(
            Table::fingerprint(0, "github", "a"),
            Table::fingerprint(0, "slack", "a")
        );
    }
}
