//! A bounded per-worker cache of tokens that passed every check of their provider.
//!
//! Keyed by the token itself (as `jwt_authn`'s cache is), then by provider and key-set
//! generation; the value is the token's parsed claims and payload, so a hit skips parsing as
//! well as the signature. A lookup hashes only the token's length and its last 32
//! bytes (its signature) with a keyed hash (SipHash, random key per cache, so
//! nobody can aim tokens at one bucket), then compares the whole token with the bucket's: two
//! different tokens never share an entry, whatever their hash (hashing all of a 600-byte
//! token, SHA-256 before, cost more than everything else a hit does). Holding the token costs
//! about what its payload, held already, costs.
//!
//! An entry lives until the token's `exp` (plus skew), or [`TokenCache::NO_EXP_TTL`] for tokens
//! without `exp`. A hit gives the same verdict as a miss: the provider's checks (format,
//! issuer, audience, subjects, signature) depend only on the token, the provider's
//! configuration (the cache is rebuilt on every configuration) and its keys (their generation
//! is part of the entry); `nbf` held when the entry was made and stays held, `max_lifetime`
//! only gets easier to meet as time passes, and the entry ends when `exp` would fail.

use crate::claims::Claims;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::rc::Rc;

/// What a hit returns: the token's claims and its payload as sent (base64url).
pub type Verified = Rc<(Claims, String)>;

/// Bytes at the end of a token that pick its bucket (with its length): the signature's, which
/// differ between any two tokens a key signed. Only a bucket: a hit compares the whole token.
const HASHED_TAIL: usize = 32;

/// One provider's verdict on one token.
#[derive(Debug)]
struct Slot {
    token: Rc<str>,
    provider: usize,
    generation: u64,
    /// Valid while `now <= until`.
    until: u64,
    verified: Verified,
}

impl Slot {
    fn is(&self, token: &str, provider: usize, generation: u64) -> bool {
        self.provider == provider && self.generation == generation && same(&self.token, token)
    }
}

/// `a == b`, eight bytes at a time (the module's `memcmp` compares byte by byte, and a hit
/// compares the whole token).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let ((x, x_rest), (y, y_rest)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    x.iter()
        .zip(y)
        .all(|(p, q)| u64::from_ne_bytes(*p) == u64::from_ne_bytes(*q))
        && x_rest == y_rest
}

/// The cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    /// Keyed hash of the token's length and tail (see [`HASHED_TAIL`]).
    hasher: RandomState,
    /// By bucket: the verdicts on the tokens of that bucket (almost always one).
    entries: HashMap<u64, Vec<Slot>>,
    /// Number of slots over every bucket.
    len: usize,
    /// Insertion order of the slots, oldest first (evicted first).
    order: VecDeque<(u64, Rc<str>, usize, u64)>,
}

impl TokenCache {
    /// Lifetime of an entry for a token without `exp`, in seconds.
    pub const NO_EXP_TTL: u64 = 300;

    /// A cache holding at most `capacity` verdicts (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The bucket of a token: hashing the whole token would cost more than the rest of a hit.
    fn bucket(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(HASHED_TAIL)..];
        self.hasher.hash_one((bytes.len(), tail))
    }

    /// The claims and payload of `token` when `provider` accepted it with the keys of
    /// `generation` and the entry is still valid at `now`.
    pub fn get(&self, provider: usize, generation: u64, token: &str, now: u64) -> Option<Verified> {
        self.entries
            .get(&self.bucket(token))?
            .iter()
            .find(|s| s.is(token, provider, generation) && now <= s.until)
            .map(|s| Rc::clone(&s.verified))
    }

    /// Whether the token has a valid entry at `now`.
    pub fn contains(&self, provider: usize, generation: u64, token: &str, now: u64) -> bool {
        self.get(provider, generation, token, now).is_some()
    }

    /// Records that `provider` accepted `token` with the keys of `generation`, valid until
    /// `until`; evicts the oldest entries when full.
    pub fn insert(
        &mut self,
        (provider, generation, token): (usize, u64, &str),
        until: u64,
        now: u64,
        verified: Verified,
    ) {
        if self.capacity == 0 || until < now {
            return;
        }
        let bucket = self.bucket(token);
        let slots = self.entries.entry(bucket).or_default();
        if let Some(old) = slots.iter_mut().find(|s| s.is(token, provider, generation)) {
            old.until = until;
            old.verified = verified;
            return;
        }
        let token: Rc<str> = Rc::from(token);
        slots.push(Slot {
            token: Rc::clone(&token),
            provider,
            generation,
            until,
            verified,
        });
        self.len += 1;
        self.order.push_back((bucket, token, provider, generation));
        while self.len > self.capacity {
            let Some((bucket, token, provider, generation)) = self.order.pop_front() else {
                break;
            };
            self.remove(bucket, &token, provider, generation);
        }
    }

    /// Drops one slot (and its bucket when nothing is left in it).
    fn remove(&mut self, bucket: u64, token: &str, provider: usize, generation: u64) {
        let Some(slots) = self.entries.get_mut(&bucket) else {
            return;
        };
        let before = slots.len();
        slots.retain(|s| !s.is(token, provider, generation));
        self.len -= before - slots.len();
        if slots.is_empty() {
            self.entries.remove(&bucket);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(sub: &str) -> Verified {
        let claims = Claims::parse(format!(r#"{{"sub":"{sub}"}}"#).as_bytes()).unwrap();
        Rc::new((claims, "eyJzdWIiOiJhIn0".to_string()))
    }

    #[test]
    fn bounded_and_expiring() {
        let mut cache = TokenCache::new(2);
        cache.insert((0, 1, "a"), 100, 10, verified("a"));
        cache.insert((0, 1, "b"), 100, 10, verified("b"));
        assert!(cache.contains(0, 1, "a", 100));
        assert!(!cache.contains(0, 1, "a", 101));
        cache.insert((0, 1, "c"), 100, 10, verified("c"));
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(0, 1, "a", 10), "oldest evicted");
        assert!(cache.contains(0, 1, "c", 10));
        assert_eq!(
            cache.get(0, 1, "c", 10).unwrap().0.all["sub"],
            "c",
            "claims kept"
        );
        assert!(!cache.contains(0, 2, "c", 10), "generation matters");
        assert!(!cache.contains(1, 1, "c", 10), "provider matters");
        let mut off = TokenCache::new(0);
        off.insert((0, 1, "a"), 100, 10, verified("a"));
        assert!(off.is_empty());
        // Already expired: not kept.
        cache.insert((0, 1, "d"), 9, 10, verified("d"));
        assert!(!cache.contains(0, 1, "d", 9));
    }

    #[test]
    fn same_compares_every_byte() {
        let base = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        assert!(same(base, base));
        assert!(same("", ""));
        for i in 0..base.len() {
            let mut other = base.as_bytes().to_vec();
            other[i] ^= 1;
            let other = String::from_utf8(other).unwrap();
            assert!(!same(base, &other), "byte {i}");
        }
        assert!(!same(base, &base[..base.len() - 1]));
        assert!(!same("abcdefgh", "abcdefghi"));
    }

    #[test]
    fn tokens_sharing_length_and_signature_do_not_share_an_entry() {
        // Same length and same tail (so the same bucket): only the payload differs.
        let alice =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";
        let admin =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";
        let mut cache = TokenCache::new(8);
        assert_eq!(cache.bucket(alice), cache.bucket(admin));
        cache.insert((0, 0, alice), 100, 10, verified("alice"));
        assert!(cache.get(0, 0, admin, 10).is_none());
        cache.insert((0, 0, admin), 100, 10, verified("admin"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(0, 0, alice, 10).unwrap().0.all["sub"], "alice");
        assert_eq!(cache.get(0, 0, admin, 10).unwrap().0.all["sub"], "admin");
    }

    #[test]
    fn only_the_exact_token_hits() {
        let mut cache = TokenCache::new(8);
        cache.insert((0, 0, "aaa.bbb.ccc"), 100, 10, verified("a"));
        for other in [
            "aaa.bbb.cc",
            "aaa.bbb.ccc ",
            "aaa.bbb.ccd",
            "AAA.bbb.ccc",
            "",
            "aaa",
        ] {
            assert!(cache.get(0, 0, other, 10).is_none(), "{other:?}");
        }
        assert!(cache.get(0, 0, "aaa.bbb.ccc", 10).is_some());
    }

    #[test]
    fn providers_of_one_token_have_their_own_slots() {
        let mut cache = TokenCache::new(3);
        cache.insert((0, 0, "t"), 100, 10, verified("zero"));
        cache.insert((1, 0, "t"), 50, 10, verified("one"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(0, 0, "t", 60).unwrap().0.all["sub"], "zero");
        assert!(
            cache.get(1, 0, "t", 60).is_none(),
            "provider 1's entry ended"
        );
        // Re-inserting a slot replaces it without growing the cache.
        cache.insert((1, 0, "t"), 200, 10, verified("one"));
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(1, 0, "t", 150));
        // Eviction drops the oldest slot, then the token once it has none.
        cache.insert((0, 0, "u"), 100, 10, verified("u"));
        cache.insert((0, 0, "v"), 100, 10, verified("v"));
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains(0, 0, "t", 10), "oldest slot evicted");
        assert!(cache.contains(1, 0, "t", 10));
        cache.insert((0, 0, "w"), 100, 10, verified("w"));
        assert!(!cache.contains(1, 0, "t", 10));
        assert_eq!(cache.len(), 3);
    }
}
