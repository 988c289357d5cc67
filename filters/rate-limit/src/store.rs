//! The slot table in Envoy shared data: bounded memory, exact counts across workers, and no key
//! able to reset another key's counters.
//!
//! Shared data cannot delete keys, so the filter never creates one shared-data key per client.
//! It owns a table of `max_keys` entries in buckets of [`BUCKET`] entries, one shared-data key
//! per bucket (`<prefix>/<bucket>`). A key goes to one bucket, chosen with a keyed hash
//! (SipHash-1-3, 128 bits) under a secret seed that every worker of the Envoy process shares
//! (`<prefix>/seed`, created once, see [`seed`]); its entry holds the 128-bit keyed digest of the
//! key (never the key itself, so an entry's size does not depend on the key's), the instant from
//! which its state counts nothing (`idle_at`), and the state of every limit of its rule.
//!
//! A key missing from its bucket takes a free entry, or the entry of a key that is idle (whose
//! state counts nothing any more: replacing it loses nothing, counted as an eviction). An
//! *active* entry is never replaced: when every entry of the bucket is active, the request is
//! counted in its rule's overflow entry (`<prefix>/overflow/<rule>`), one entry shared by every
//! key that found no room, counted with the rule's limits like any key. A flood of new keys
//! therefore shares one quota, and a client refused under one key gains nothing from sending
//! others.
//!
//! Exactness: a key lives in exactly one bucket and appears there at most once (it is looked up
//! in the same read that would insert it), and every read-modify-write of a bucket goes through
//! `wasmgate_core::shared::update`: the new bucket is written with the CAS token of the bucket
//! it was computed from, and recomputed on a conflict, so two workers can never both take the
//! last unit of a quota nor both insert a key. Each bucket also keeps the latest instant any
//! decision on it used, and a decision uses the later of that and its own clock, so a worker
//! whose clock read was a little older can never see a state "from the future", or recreate a
//! key whose idle entry another worker has just replaced.
//!
//! A rule whose limits use several keys has one entry per key (a *group*, with its own
//! fingerprint and overflow entry). Its request is first checked under every key with [`peek`]
//! (one read each, no write), then counted under each with [`decide_cost`]; when a concurrent
//! request took the room of a later key in between, [`refund`] gives back what the earlier keys
//! counted, so a refused request is counted under none of them.

use crate::algorithm::{Limit, Report, State};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::cell::OnceCell;
use std::hash::Hasher;
use wasmgate_core::shared::{update, SharedStore, UpdateError};

/// Entries per bucket: a key has this many places in the table before it overflows.
pub const BUCKET: u64 = 8;

/// The layout version of a bucket; any other value reads as an empty bucket.
const VERSION: u8 = 2;
/// version, time, entry count.
const HEADER: usize = 1 + 8 + 1;
/// digest, idle_at, limit count (then 24 bytes per limit).
const ENTRY_HEADER: usize = 16 + 8 + 1;

/// The secret key of the table's hash: 128 random bits, one per plugin in an Envoy process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed([u8; 16]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

impl Seed {
    /// A seed with these bytes (tests, and the value read from shared data).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

/// The seed once this VM has read it (it never changes once created): kept in the compiled
/// configuration, so a request does not read it again. Compares equal to any other cell.
#[derive(Clone, Default)]
pub struct SeedCell(OnceCell<Seed>);

impl std::fmt::Debug for SeedCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedCell(<redacted>)")
    }
}

impl PartialEq for SeedCell {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SeedCell {}

/// Why the seed is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedError {
    /// Shared data failed.
    Shared(UpdateError),
    /// The host gave no random bytes.
    Random,
}

/// The shared-data key of the plugin's seed.
pub fn seed_key(prefix: &str) -> String {
    format!("{prefix}/seed")
}

/// The plugin's seed: read from shared data, or created there with CAS by whichever worker comes
/// first (the others read the winner's), so every worker of the process hashes keys alike.
pub fn seed<S: SharedStore + ?Sized>(
    store: &S,
    prefix: &str,
    cell: &SeedCell,
) -> Result<Seed, SeedError> {
    if let Some(seed) = cell.0.get() {
        return Ok(*seed);
    }
    let key = seed_key(prefix);
    let (stored, _) = store
        .get_shared(&key)
        .map_err(|_| SeedError::Shared(UpdateError::HostError))?;
    let seed = match stored.as_deref().and_then(Seed::parse) {
        Some(seed) => seed,
        None => {
            let mut fresh = [0u8; 16];
            getrandom::fill(&mut fresh).map_err(|_| SeedError::Random)?;
            // A seed already there (another worker's) is kept: it is never replaced.
            update(store, &key, |current| match Seed::parse(current) {
                Some(seed) => (None, seed),
                None => (Some(fresh.to_vec()), Seed(fresh)),
            })
            .map_err(SeedError::Shared)?
        }
    };
    Ok(*cell.0.get_or_init(|| seed))
}

/// A plugin's table: where its buckets live, how many entries it has, and the hash seed.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    prefix: &'a str,
    max_keys: u64,
    seed: Seed,
}

/// Which key a request counts under: the rule (its index and its fingerprint, so a changed rule
/// starts afresh) and the key built from the request.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    /// The rule's index in the configuration.
    pub rule: usize,
    /// The rule's group of limits sharing one key (0 for the rule's own key).
    pub group: usize,
    /// The rule's fingerprint (index, key parts, limits).
    pub fingerprint: &'a str,
    /// The key built from the request's key parts.
    pub value: &'a str,
}

/// Where one key lives: the shared-data key of its bucket, the bucket's capacity and the key's
/// digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The bucket's shared-data key.
    pub bucket: String,
    /// How many entries the bucket holds (the last bucket may hold fewer than [`BUCKET`]).
    pub capacity: usize,
    /// The keyed digest that identifies the key in the bucket.
    pub digest: [u8; 16],
}

impl<'a> Table<'a> {
    /// The table of `max_keys` entries under `prefix`, hashed with `seed`.
    pub fn new(prefix: &'a str, max_keys: u64, seed: Seed) -> Self {
        Self {
            prefix,
            max_keys: max_keys.max(1),
            seed,
        }
    }

    /// Number of buckets.
    pub fn buckets(&self) -> u64 {
        self.max_keys.div_ceil(BUCKET)
    }

    fn digest(&self, parts: &[&str]) -> (u64, [u8; 16]) {
        let (k0, k1) = self.seed.0.split_at(8);
        let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or_default();
        let mut hasher = SipHasher13::new_with_keys(word(k0), word(k1));
        for part in parts {
            // Length-prefixed, so no two lists of parts hash the same input.
            hasher.write(&(part.len() as u64).to_le_bytes());
            hasher.write(part.as_bytes());
        }
        let hash = hasher.finish128();
        (hash.h1, hash.as_bytes())
    }

    /// The bucket and digest of a key.
    pub fn place(&self, key: &Key<'_>) -> Place {
        let (h, digest) = self.digest(&[key.fingerprint, key.value]);
        let bucket = h % self.buckets();
        let capacity = self.max_keys.saturating_sub(bucket * BUCKET).min(BUCKET);
        Place {
            bucket: format!("{}/{bucket}", self.prefix),
            capacity: usize::try_from(capacity).unwrap_or(1),
            digest,
        }
    }

    /// The overflow entry of a key's rule: one shared-data key per rule index, holding one
    /// entry (the rule's fingerprint decides whether it is the current rule's).
    pub fn overflow(&self, key: &Key<'_>) -> Place {
        let (_, digest) = self.digest(&[key.fingerprint]);
        // Each group has its own overflow entry: two groups sharing one would replace each
        // other's entry (an overflow entry may replace any entry).
        let bucket = match key.group {
            0 => format!("{}/overflow/{}", self.prefix, key.rule),
            group => format!("{}/overflow/{}.{group}", self.prefix, key.rule),
        };
        Place {
            bucket,
            capacity: 1,
            digest,
        }
    }
}

/// The outcome of one request against every limit of its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Every limit had room (the request was counted).
    pub allowed: bool,
    /// One report per limit, in the rule's order, after counting.
    pub reports: Vec<Report>,
    /// When refused: nanoseconds until every limit has room again.
    pub retry_after_ns: u64,
    /// Bit `i`: `limits[i]` had no room for the request.
    pub refusing: u8,
    /// The key took the entry of an idle key (whose state counted nothing any more).
    pub evicted: bool,
    /// The key's bucket had no room (every entry active): the request was decided by the rule's
    /// shared overflow entry.
    pub overflow: bool,
}

/// Counts one request for `key` against `limits` at `now` (ns since the epoch): in the key's own
/// entry, or, when its bucket has no room, in the rule's overflow entry.
pub fn decide<S: SharedStore + ?Sized>(
    store: &S,
    table: &Table<'_>,
    key: &Key<'_>,
    limits: &[Limit],
    now: u64,
) -> Result<Decision, UpdateError> {
    decide_cost(store, table, key, limits, now, 1)
}

/// [`decide`] for a request costing `cost` units.
pub fn decide_cost<S: SharedStore + ?Sized>(
    store: &S,
    table: &Table<'_>,
    key: &Key<'_>,
    limits: &[Limit],
    now: u64,
    cost: u64,
) -> Result<Decision, UpdateError> {
    let mode = Mode::Count(cost);
    own_then_overflow(table, key, |place, replace_any| {
        count(store, place, limits, now, replace_any, mode)
    })
}

/// Decides in the key's own entry, or, when its bucket has no room, in the rule's overflow
/// entry (which may replace any entry, so it always has room).
fn own_then_overflow(
    table: &Table<'_>,
    key: &Key<'_>,
    mut decide_in: impl FnMut(&Place, bool) -> Result<Option<Decision>, UpdateError>,
) -> Result<Decision, UpdateError> {
    if let Some(decision) = decide_in(&table.place(key), false)? {
        return Ok(decision);
    }
    let decision = decide_in(&table.overflow(key), true)?.ok_or(UpdateError::HostError)?;
    Ok(Decision {
        overflow: true,
        evicted: false,
        ..decision
    })
}

/// What [`decide_cost`] would decide, without writing anything (one read per bucket): a rule
/// whose limits use several keys checks every key before it counts any, so a request refused
/// under one key is counted under none.
pub fn peek<S: SharedStore + ?Sized>(
    store: &S,
    table: &Table<'_>,
    key: &Key<'_>,
    limits: &[Limit],
    now: u64,
    cost: u64,
) -> Result<Decision, UpdateError> {
    own_then_overflow(table, key, |place, replace_any| {
        let (stored, _) = store
            .get_shared(&place.bucket)
            .map_err(|_| UpdateError::HostError)?;
        let stored = stored.unwrap_or_default();
        Ok(step(&stored, place, limits, now, replace_any, Mode::Peek(cost)).1)
    })
}

/// Gives back a request's `cost` that [`decide_cost`] counted for `key` at `now` (`overflow`:
/// it was counted in the overflow entry), when another key of the same request refused it.
pub fn refund<S: SharedStore + ?Sized>(
    store: &S,
    table: &Table<'_>,
    key: &Key<'_>,
    limits: &[Limit],
    now: u64,
    cost: u64,
    overflow: bool,
) -> Result<(), UpdateError> {
    let place = if overflow {
        table.overflow(key)
    } else {
        table.place(key)
    };
    update(store, &place.bucket, |stored| {
        let Some(bucket) = parse(stored) else {
            return (None, ());
        };
        let at = now.max(bucket.time);
        let Some(i) = bucket.entries.iter().position(|e| e.digest == place.digest) else {
            return (None, ());
        };
        let entry = &bucket.entries[i];
        let Some(states) = states_of(stored, entry).filter(|s| s.len() == limits.len()) else {
            return (None, ());
        };
        let states: Vec<State> = limits
            .iter()
            .zip(states)
            .map(|(limit, state)| limit.refund(state, at, cost))
            .collect();
        let idle_at = limits
            .iter()
            .zip(&states)
            .map(|(limit, state)| limit.idle_at(state))
            .max()
            .unwrap_or(0);
        let entry = encode_entry(&place.digest, idle_at, &states);
        (Some(encode(stored, &bucket, at, Some(i), &entry)), ())
    })
}

/// Whether a step counts the request or only looks.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Count a request of this cost when it fits.
    Count(u64),
    /// Decide for a request of this cost, write nothing.
    Peek(u64),
}

/// One CAS read-modify-write of a bucket (see [`step`]).
fn count<S: SharedStore + ?Sized>(
    store: &S,
    place: &Place,
    limits: &[Limit],
    now: u64,
    replace_any: bool,
    mode: Mode,
) -> Result<Option<Decision>, UpdateError> {
    update(store, &place.bucket, |stored| {
        step(stored, place, limits, now, replace_any, mode)
    })
}

/// One entry as stored: where its bytes are in the bucket.
#[derive(Debug, Clone, Copy)]
struct Stored {
    start: usize,
    end: usize,
    digest: [u8; 16],
    idle_at: u64,
    count: usize,
}

/// A bucket as stored: the latest decision time and its entries.
#[derive(Debug, Default)]
struct Bucket {
    time: u64,
    entries: Vec<Stored>,
}

/// One decision on a bucket: the new bucket to write (`None`: unchanged) and the decision, or
/// `None` when the key is not in the bucket and the bucket has no room for it.
fn step(
    stored: &[u8],
    place: &Place,
    limits: &[Limit],
    now: u64,
    replace_any: bool,
    mode: Mode,
) -> (Option<Vec<u8>>, Option<Decision>) {
    let (cost, commit) = match mode {
        Mode::Count(cost) => (cost, true),
        Mode::Peek(cost) => (cost, false),
    };
    // Anything unreadable (another layout version) is an empty bucket, overwritten by our write.
    let bucket = parse(stored).unwrap_or_default();
    let at = now.max(bucket.time);
    let found = bucket.entries.iter().position(|e| e.digest == place.digest);
    let (slot, states, evicted) = match found {
        Some(i) => {
            let states = states_of(stored, &bucket.entries[i])
                .filter(|s| s.len() == limits.len())
                .unwrap_or_else(|| vec![[0; 3]; limits.len()]);
            (Some(i), states, false)
        }
        None if bucket.entries.len() < place.capacity => (None, vec![[0; 3]; limits.len()], false),
        None => {
            let idle = bucket
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| replace_any || e.idle_at <= at)
                .min_by_key(|(_, e)| e.idle_at)
                .map(|(i, _)| i);
            match idle {
                Some(i) => (Some(i), vec![[0; 3]; limits.len()], !replace_any),
                // Every entry is active: this key gets no entry.
                None => return (None, None),
            }
        }
    };
    let states: Vec<State> = limits
        .iter()
        .zip(states)
        .map(|(limit, state)| limit.normalize(state, at))
        .collect();
    let mut refusing = 0u8;
    let mut retry_after_ns = 0;
    for (i, (limit, state)) in limits.iter().zip(&states).enumerate() {
        let wait = limit.retry_after_cost_ns(state, at, cost);
        if wait > 0 {
            refusing |= 1u8
                .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(0);
        }
        retry_after_ns = retry_after_ns.max(wait);
    }
    let allowed = retry_after_ns == 0;
    // A peek reports the state without this request (it counts nothing).
    let states: Vec<State> = if allowed && commit {
        limits
            .iter()
            .zip(states)
            .map(|(limit, state)| limit.consume_cost(state, at, cost))
            .collect()
    } else {
        states
    };
    let reports = limits
        .iter()
        .zip(&states)
        .map(|(limit, state)| limit.report(state, at))
        .collect();
    // A refused request changes nothing: no write, so a flood of refusals stays cheap. (A key
    // new to the bucket always has room in every limit, so it is always written.)
    let write = (allowed && commit).then(|| {
        let idle_at = limits
            .iter()
            .zip(&states)
            .map(|(limit, state)| limit.idle_at(state))
            .max()
            .unwrap_or(0);
        let entry = encode_entry(&place.digest, idle_at, &states);
        encode(stored, &bucket, at, slot, &entry)
    });
    let decision = Decision {
        allowed,
        reports,
        retry_after_ns,
        refusing,
        evicted: evicted && allowed,
        overflow: false,
    };
    (write, Some(decision))
}

fn encode_entry(digest: &[u8; 16], idle_at: u64, states: &[State]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER + states.len() * 24);
    out.extend_from_slice(digest);
    out.extend_from_slice(&idle_at.to_le_bytes());
    out.push(u8::try_from(states.len()).unwrap_or(u8::MAX));
    for state in states {
        for word in state {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// The bucket with `entry` replacing entry `slot` (or appended), and `time`.
fn encode(stored: &[u8], bucket: &Bucket, time: u64, slot: Option<usize>, entry: &[u8]) -> Vec<u8> {
    let count = bucket.entries.len() + usize::from(slot.is_none());
    let mut out = Vec::with_capacity(HEADER + stored.len() + entry.len());
    out.push(VERSION);
    out.extend_from_slice(&time.to_le_bytes());
    out.push(u8::try_from(count).unwrap_or(u8::MAX));
    for (i, e) in bucket.entries.iter().enumerate() {
        if Some(i) == slot {
            out.extend_from_slice(entry);
        } else {
            out.extend_from_slice(stored.get(e.start..e.end).unwrap_or_default());
        }
    }
    if slot.is_none() {
        out.extend_from_slice(entry);
    }
    out
}

fn word(bytes: &[u8], at: usize) -> Option<u64> {
    let bytes = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A stored bucket's entries; `None` for anything but a well-formed bucket of this version.
fn parse(bytes: &[u8]) -> Option<Bucket> {
    if bytes.first() != Some(&VERSION) {
        return None;
    }
    let time = word(bytes, 1)?;
    let n = usize::from(*bytes.get(9)?);
    let mut entries = Vec::with_capacity(n);
    let mut at = HEADER;
    for _ in 0..n {
        let digest: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
        let idle_at = word(bytes, at + 16)?;
        let count = usize::from(*bytes.get(at + 24)?);
        let end = at + ENTRY_HEADER + count * 24;
        if end > bytes.len() {
            return None;
        }
        entries.push(Stored {
            start: at,
            end,
            digest,
            idle_at,
            count,
        });
        at = end;
    }
    (at == bytes.len()).then_some(Bucket { time, entries })
}

fn states_of(bytes: &[u8], entry: &Stored) -> Option<Vec<State>> {
    (0..entry.count)
        .map(|i| {
            let at = entry.start + ENTRY_HEADER + i * 24;
            Some([
                word(bytes, at)?,
                word(bytes, at + 8)?,
                word(bytes, at + 16)?,
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests;
