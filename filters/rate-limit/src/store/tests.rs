//! The slot table against the fake host's shared data, thinking like an attacker: a refused key
//! must stay refused whatever other keys arrive (many of them, keys computed to land in its
//! bucket, keys at the table's capacity), only idle entries are ever replaced, and memory stays
//! bounded by `max_keys`.

use super::*;
use crate::algorithm::{Algorithm, NANOS_PER_SECOND as S};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use wasmgate_core::host::FakeHost;
use wasmgate_core::shared::SetError;

const T0: u64 = 1_700_000_040 * S;
const PREFIX: &str = "wasmgate/rate-limit/test";
const SEED: Seed = Seed([7; 16]);

fn fixed(requests: u64, window_ns: u64) -> Limit {
    Limit {
        name: "f".into(),
        requests,
        window_ns,
        algorithm: Algorithm::FixedWindow,
    }
}

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

fn key(value: &str) -> Key<'_> {
    Key {
        rule: 0,
        group: 0,
        fingerprint: "0.fp",
        value,
    }
}

/// Shared data that records every key written and the largest value, to check the bounds.
#[derive(Default)]
struct Recording {
    host: FakeHost,
    keys: RefCell<HashSet<String>>,
    largest: RefCell<HashMap<String, usize>>,
}

impl SharedStore for Recording {
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
        self.host.get_shared(key)
    }
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.keys.borrow_mut().insert(key.to_string());
        let mut largest = self.largest.borrow_mut();
        let size = largest.entry(key.to_string()).or_default();
        *size = (*size).max(value.len());
        self.host.set_shared(key, value, cas)
    }
}

fn hit<S: SharedStore + ?Sized>(
    store: &S,
    table: &Table<'_>,
    value: &str,
    limits: &[Limit],
    now: u64,
) -> Decision {
    decide(store, table, &key(value), limits, now).unwrap()
}

/// `n` keys (besides `avoid`) whose entries go to `bucket`.
fn keys_in_bucket(table: &Table<'_>, bucket: &str, n: usize, avoid: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("collider-{i}"))
        .filter(|k| k != avoid && table.place(&key(k)).bucket == bucket)
        .take(n)
        .collect()
}

#[test]
fn parse_and_encode_round_trip() {
    let place = Place {
        bucket: "b".into(),
        capacity: 8,
        digest: [1; 16],
    };
    let l = limits();
    let (written, decision) = step(b"", &place, &l, T0, false, Mode::Count(1));
    let written = written.unwrap();
    assert!(decision.unwrap().allowed);
    let bucket = parse(&written).unwrap();
    assert_eq!(bucket.time, T0);
    assert_eq!(bucket.entries.len(), 1);
    let entry = bucket.entries[0];
    assert_eq!(entry.digest, [1; 16]);
    assert_eq!(
        states_of(&written, &entry).unwrap(),
        vec![[T0 + S / 3 + 1, 0, 0], [T0, 1, 0]]
    );
    assert_eq!(entry.idle_at, T0 + 60 * S, "the minute counts longest");
    // Truncated, padded, other versions: nothing readable (an empty bucket, overwritten).
    assert!(parse(&written[..written.len() - 1]).is_none());
    assert!(parse(&[written.as_slice(), b"x"].concat()).is_none());
    assert!(
        parse(b"\x01\x00\x00\x00\x01k\x01").is_none(),
        "version 1 slot"
    );
    assert!(parse(b"").is_none());
    let (rewritten, _) = step(b"\x01junk", &place, &l, T0, false, Mode::Count(1));
    assert_eq!(parse(&rewritten.unwrap()).unwrap().entries.len(), 1);
}

#[test]
fn every_limit_must_pass_and_refusals_do_not_count() {
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 10, SEED);
    let l = limits();
    let results: Vec<bool> = (0..5)
        .map(|_| hit(&host, &table, "k", &l, T0).allowed)
        .collect();
    assert_eq!(results, [true, true, true, false, false], "the bucket of 3");
    // 2 s later the bucket is full again, but the minute has only 2 left.
    let later: Vec<Decision> = (0..3)
        .map(|_| hit(&host, &table, "k", &l, T0 + 2 * S))
        .collect();
    assert!(later[0].allowed && later[1].allowed && !later[2].allowed);
    assert_eq!(later[1].reports[0].remaining, 1);
    assert_eq!(later[1].reports[1].remaining, 0);
    assert_eq!(later[2].retry_after_ns, 58 * S, "the minute decides");
    assert!(later.iter().all(|d| !d.evicted && !d.overflow));
}

/// The attack: a client refused under one key sends thousands of other keys into a
/// small table. Its own entry is active, so nothing replaces it; the other keys fill the free
/// entries and then share one overflow quota.
#[test]
fn a_refused_key_stays_refused_while_5000_other_keys_arrive_in_a_table_of_16() {
    let store = Recording::default();
    let table = Table::new(PREFIX, 16, SEED);
    let l = [fixed(3, 3600 * S)];
    let now = T0 + 10 * S;
    for _ in 0..3 {
        assert!(hit(&store, &table, "victim", &l, now).allowed);
    }
    assert!(!hit(&store, &table, "victim", &l, now).allowed);

    let (mut admitted, mut overflowed, mut evicted) = (0, 0, 0);
    for i in 0..5_000 {
        let d = hit(&store, &table, &format!("other-{i}"), &l, now + i);
        admitted += usize::from(d.allowed);
        overflowed += usize::from(d.overflow);
        evicted += usize::from(d.evicted);
        if i % 500 == 0 {
            let victim = hit(&store, &table, "victim", &l, now + i);
            assert!(!victim.allowed && !victim.overflow, "after {i} other keys");
        }
    }
    assert_eq!(
        evicted, 0,
        "every entry is active for the hour: none replaced"
    );
    // The 15 other entries of the table, plus one quota (3) for all the keys that found none.
    assert_eq!(admitted, 15 + 3);
    assert_eq!(overflowed, 5_000 - 15);
    let victim = hit(&store, &table, "victim", &l, now + 5 * S);
    assert!(!victim.allowed);
    assert_eq!(victim.reports[0].remaining, 0);

    // Bounded: two buckets of 8 entries, the seed is not written here, one overflow entry.
    let keys = store.keys.borrow();
    let mut expected: Vec<String> = vec![
        format!("{PREFIX}/0"),
        format!("{PREFIX}/1"),
        format!("{PREFIX}/overflow/0"),
    ];
    expected.sort();
    let mut written: Vec<String> = keys.iter().cloned().collect();
    written.sort();
    assert_eq!(written, expected);
    let entry = ENTRY_HEADER + 24;
    for (name, size) in store.largest.borrow().iter() {
        assert!(*size <= HEADER + 8 * entry, "{name}: {size} bytes");
    }
}

/// Keys computed to land in the victim's bucket (as an attacker who knew the seed could):
/// the bucket fills, the rest overflow, and no active entry in it is reset.
#[test]
fn colliding_keys_never_reset_an_active_key() {
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 1_000, SEED);
    let l = [fixed(2, 60 * S)];
    let victim = table.place(&key("victim"));
    for _ in 0..2 {
        assert!(hit(&host, &table, "victim", &l, T0).allowed);
    }
    let colliders = keys_in_bucket(&table, &victim.bucket, 200, "victim");
    for (i, k) in colliders.iter().enumerate() {
        let d = hit(&host, &table, k, &l, T0 + 1);
        assert!(!d.evicted, "{k}");
        // The first 7 take the bucket's free entries; the others share the overflow entry.
        assert_eq!(d.overflow, i >= 7, "collider {i}");
        assert_eq!(d.allowed, i < 7 + 2, "collider {i}");
    }
    assert!(!hit(&host, &table, "victim", &l, T0 + 2).allowed);
    // The first colliders kept their own counts too.
    let first = hit(&host, &table, &colliders[0], &l, T0 + 3);
    assert!(first.allowed && !first.overflow);
    assert_eq!(first.reports[0].remaining, 0);
    assert!(!hit(&host, &table, &colliders[0], &l, T0 + 4).allowed);
}

/// Keys built to collide in the old table (FNV-1a of the key modulo the table size, public and
/// unseeded) spread over the keyed hash's buckets.
#[test]
fn keys_colliding_under_fnv_spread_over_the_buckets() {
    let table = Table::new(PREFIX, 8_000, SEED);
    let target = wasmgate_core::fnv1a(b"0.fp|victim") % 8_000;
    let fnv_colliders: Vec<String> = (0..)
        .map(|i| format!("x{i}"))
        .filter(|k| wasmgate_core::fnv1a(format!("0.fp|{k}").as_bytes()) % 8_000 == target)
        .take(50)
        .collect();
    let buckets: HashSet<String> = fnv_colliders
        .iter()
        .map(|k| table.place(&key(k)).bucket)
        .collect();
    // 50 keys over 1,000 buckets: about 49 distinct buckets when the hash spreads them.
    assert!(buckets.len() > 40, "{} buckets", buckets.len());
}

/// An entry is replaced only once every limit of it counts nothing; a key with one limit still
/// counting keeps its entry.
#[test]
fn only_idle_entries_are_replaced() {
    let host = FakeHost::default();
    // One bucket of 2 entries: every key collides.
    let table = Table::new(PREFIX, 2, SEED);
    let second = [fixed(1, S)];
    let both = [fixed(1, S), fixed(100, 3600 * S)];
    assert!(hit(&host, &table, "short", &second, T0).allowed);
    assert!(hit(&host, &table, "long", &both, T0).allowed);
    assert!(!hit(&host, &table, "short", &second, T0).allowed);
    // Still within the second: both entries active, a new key overflows.
    let d = hit(&host, &table, "new", &second, T0 + S / 2);
    assert!(d.overflow && !d.evicted);
    // A second later "short" counts nothing any more; "long" still counts its hour.
    let d = hit(&host, &table, "new", &second, T0 + S);
    assert!(d.allowed && d.evicted && !d.overflow, "{d:?}");
    let d = hit(&host, &table, "long", &both, T0 + S);
    assert!(d.allowed && !d.overflow);
    assert_eq!(d.reports[1].remaining, 98, "the hour kept its count");
    // "short" is gone (it had nothing counted); "new" is active in its entry: short overflows.
    let d = hit(&host, &table, "short", &second, T0 + S);
    assert!(d.overflow, "{d:?}");
}

/// A key that took an idle key's entry starts from nothing; the idle key, back later, finds room
/// again and starts from nothing too, as it would have in its own entry.
#[test]
fn a_replaced_idle_key_loses_nothing() {
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 1, SEED);
    let l = [fixed(2, 60 * S)];
    assert!(hit(&host, &table, "a", &l, T0).allowed);
    assert!(hit(&host, &table, "a", &l, T0).allowed);
    assert!(!hit(&host, &table, "a", &l, T0 + 59 * S).allowed);
    let b = hit(&host, &table, "b", &l, T0 + 60 * S);
    assert!(b.allowed && b.evicted);
    assert_eq!(b.reports[0].remaining, 1);
    // "b" is active now: "a" overflows until "b" is idle, then takes the entry back.
    assert!(hit(&host, &table, "a", &l, T0 + 61 * S).overflow);
    let a = hit(&host, &table, "a", &l, T0 + 120 * S);
    assert!(a.allowed && a.evicted && !a.overflow);
    assert_eq!(a.reports[0].remaining, 1);
}

/// The overflow entry is counted with the rule's limits like any key, and a changed rule (new
/// fingerprint) starts it afresh.
#[test]
fn the_overflow_entry_counts_like_a_key_and_follows_the_rule() {
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 1, SEED);
    let l = [fixed(2, 60 * S)];
    assert!(hit(&host, &table, "holder", &l, T0).allowed);
    let flood: Vec<Decision> = (0..10)
        .map(|i| hit(&host, &table, &format!("k{i}"), &l, T0 + i))
        .collect();
    assert!(flood.iter().all(|d| d.overflow && !d.evicted));
    assert_eq!(flood.iter().filter(|d| d.allowed).count(), 2);
    assert_eq!(flood[1].reports[0].remaining, 0);
    assert_eq!(flood[9].retry_after_ns, 60 * S - 9);
    // The next window: the holder counts again (its entry stays active), the overflow quota is
    // back.
    assert!(hit(&host, &table, "holder", &l, T0 + 60 * S).allowed);
    let d = hit(&host, &table, "k0", &l, T0 + 60 * S);
    assert!(d.allowed && d.overflow);
    assert_eq!(d.reports[0].remaining, 1);
    // Same rule index, another fingerprint (the rule changed): a fresh overflow entry.
    let changed = Key {
        rule: 0,
        group: 0,
        fingerprint: "0.changed",
        value: "k0",
    };
    let d = decide(&host, &table, &changed, &l, T0 + 61 * S).unwrap();
    assert!(d.overflow && d.allowed);
    assert_eq!(d.reports[0].remaining, 1);
}

/// A decision never goes back in time on a bucket: a worker whose clock read a little earlier
/// decides at the bucket's latest time.
#[test]
fn a_late_clock_decides_at_the_buckets_time() {
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 8, SEED);
    let l = [fixed(1, 60 * S)];
    assert!(hit(&host, &table, "a", &l, T0 + 61 * S).allowed);
    let late = hit(&host, &table, "a", &l, T0 + 59 * S);
    assert!(!late.allowed, "the next window's count holds");
    assert_eq!(
        late.retry_after_ns,
        59 * S,
        "measured from the bucket's time"
    );
}

/// Honest keys in a large table: each gets exactly its quota, nothing overflows.
#[test]
fn many_honest_keys_each_get_exactly_their_quota() {
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 1_000_000, SEED);
    let l = [fixed(3, 3600 * S)];
    let mut admitted = vec![0; 20_000];
    for round in 0..5 {
        for (i, count) in admitted.iter_mut().enumerate() {
            let d = hit(&host, &table, &format!("client-{i}"), &l, T0 + round);
            assert!(!d.overflow && !d.evicted, "client-{i}");
            *count += usize::from(d.allowed);
        }
    }
    assert!(admitted.iter().all(|&n| n == 3));
}

/// With the table a quarter full of active keys, nearly every new key finds an entry; full to
/// `max_keys`, a share of keys overflows (why `max_keys` should stay well above the active keys).
#[test]
fn a_table_with_room_rarely_overflows() {
    let overflowed = |max_keys: u64, keys: u64| {
        let host = FakeHost::default();
        let seed = Seed::from_bytes(*b"0123456789abcdef");
        let table = Table::new(PREFIX, max_keys, seed);
        let l = [fixed(3, 3600 * S)];
        (0..keys)
            .filter(|i| hit(&host, &table, &format!("c{i}"), &l, T0).overflow)
            .count() as u64
    };
    let quarter = overflowed(20_000, 5_000);
    assert!(quarter < 25, "{quarter} of 5,000 overflowed (0.5% or more)");
    let full = overflowed(2_000, 2_000);
    assert!(full > 0 && full < 2_000 / 4, "{full} of 2,000 overflowed");
}

#[test]
fn buckets_cover_exactly_max_keys_entries() {
    for max_keys in [1, 7, 8, 9, 16, 100, 100_001] {
        let table = Table::new(PREFIX, max_keys, SEED);
        let capacities: HashMap<String, usize> = (0..20_000)
            .map(|i| {
                let place = table.place(&key(&format!("k{i}")));
                (place.bucket, place.capacity)
            })
            .collect();
        assert!(capacities.len() as u64 <= table.buckets());
        assert!(capacities.values().all(|&c| (1..=8).contains(&c)));
        let last = format!("{PREFIX}/{}", table.buckets() - 1);
        if let Some(&c) = capacities.get(&last) {
            assert_eq!(c as u64, max_keys - (table.buckets() - 1) * BUCKET);
        }
        let total: u64 = (0..table.buckets())
            .map(|b| (max_keys - b * BUCKET).min(BUCKET))
            .sum();
        assert_eq!(total, max_keys);
    }
}

#[test]
fn the_seed_decides_the_buckets() {
    let a = Table::new(PREFIX, 1_000, Seed([1; 16]));
    let b = Table::new(PREFIX, 1_000, Seed([2; 16]));
    let same = (0..200)
        .filter(|i| {
            let k = format!("k{i}");
            a.place(&key(&k)) == b.place(&key(&k))
        })
        .count();
    assert!(same < 10, "{same} of 200 keys in the same place");
    assert_eq!(format!("{:?}", Seed([1; 16])), "Seed(<redacted>)");
}

#[test]
fn the_seed_is_created_once_and_shared_by_every_worker() {
    let host = FakeHost::default();
    let (worker1, worker2) = (SeedCell::default(), SeedCell::default());
    let s1 = seed(&host, PREFIX, &worker1).unwrap();
    let s2 = seed(&host, PREFIX, &worker2).unwrap();
    assert_eq!(s1, s2);
    let (stored, _) = host.get_shared(&seed_key(PREFIX)).unwrap();
    assert_eq!(stored.unwrap().len(), 16);
    // Random: another Envoy (another shared data) gets another seed.
    let other = seed(&FakeHost::default(), PREFIX, &SeedCell::default()).unwrap();
    assert_ne!(s1, other);
    // A seed already stored is used as it is.
    let host = FakeHost::default();
    host.set_shared(&seed_key(PREFIX), &[9; 16], None).unwrap();
    assert_eq!(seed(&host, PREFIX, &SeedCell::default()), Ok(Seed([9; 16])));
}

/// Two workers find no seed; the other creates its seed between our read and our write: ours
/// must not replace it.
#[test]
fn a_racing_creator_seed_wins_once() {
    struct Racing<'a> {
        host: &'a FakeHost,
        first: std::cell::Cell<bool>,
    }
    impl SharedStore for Racing<'_> {
        fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
            if self.first.replace(false) {
                // We read nothing; then the other worker creates its seed.
                seed(self.host, PREFIX, &SeedCell::default()).unwrap();
                return Ok((None, None));
            }
            self.host.get_shared(key)
        }
        fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            self.host.set_shared(key, value, cas)
        }
    }
    let host = FakeHost::default();
    let racing = Racing {
        host: &host,
        first: std::cell::Cell::new(true),
    };
    let ours = seed(&racing, PREFIX, &SeedCell::default()).unwrap();
    let theirs = seed(&host, PREFIX, &SeedCell::default()).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn a_cached_seed_is_not_read_again() {
    let host = FakeHost::default();
    let cell = SeedCell::default();
    let first = seed(&host, PREFIX, &cell).unwrap();
    host.set_shared(&seed_key(PREFIX), &[3; 16], None).unwrap();
    assert_eq!(seed(&host, PREFIX, &cell), Ok(first));
    assert_eq!(format!("{cell:?}"), "SeedCell(<redacted>)");
}

/// Two workers counting the same keys, their updates interleaved by CAS conflicts: every
/// request counted exactly once, and a key inserted by one worker is found by the other.
#[test]
fn racing_workers_insert_a_key_once() {
    struct Interleaved<'a> {
        host: &'a FakeHost,
        table: &'a Table<'a>,
        armed: std::cell::Cell<bool>,
    }
    impl SharedStore for Interleaved<'_> {
        fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
            let read = self.host.get_shared(key);
            if self.armed.replace(false) {
                // After our read, the other worker inserts the same key and counts it.
                let l = [fixed(2, 60 * S)];
                assert!(decide(self.host, self.table, &key_of("k"), &l, T0).is_ok());
            }
            read
        }
        fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            self.host.set_shared(key, value, cas)
        }
    }
    fn key_of(v: &str) -> Key<'_> {
        key(v)
    }
    let host = FakeHost::default();
    let table = Table::new(PREFIX, 8, SEED);
    // The bucket exists (another key), so both workers read it before either inserts "k".
    assert!(hit(&host, &table, "other", &[fixed(2, 60 * S)], T0).allowed);
    let racing = Interleaved {
        host: &host,
        table: &table,
        armed: std::cell::Cell::new(true),
    };
    let l = [fixed(2, 60 * S)];
    let ours = decide(&racing, &table, &key("k"), &l, T0).unwrap();
    assert!(ours.allowed);
    assert_eq!(
        ours.reports[0].remaining, 0,
        "the other worker's count kept"
    );
    assert!(!hit(&host, &table, "k", &l, T0).allowed);
    let bucket = host.get_shared(&table.place(&key("k")).bucket).unwrap().0;
    assert_eq!(parse(&bucket.unwrap()).unwrap().entries.len(), 2);
}
