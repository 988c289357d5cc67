//! A bounded per-worker cache of tokens that passed every check of their provider.
//!
//! Keyed by provider, key-set generation and SHA-256 of the token (the token itself is never
//! stored); the value is the token's parsed claims and payload, so a hit skips parsing as well
//! as the signature. An entry lives until the token's `exp` (plus skew), or
//! [`TokenCache::NO_EXP_TTL`] for tokens without `exp`. A hit gives the same verdict as a miss:
//! the provider's checks (format, issuer, audience, signature) depend only on the token, the
//! provider's configuration (the cache is rebuilt on every configuration) and its keys (their
//! generation is in the key); `nbf` held when the entry was made and stays held, and the entry
//! ends when `exp` would fail.

use crate::claims::Claims;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// What a hit returns: the token's claims and its payload as sent (base64url).
pub type Verified = Rc<(Claims, String)>;

/// Cache key: provider index, key-set generation, token hash.
pub type CacheKey = (usize, u64, [u8; 32]);

/// The cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<CacheKey, (u64, Verified)>,
    order: VecDeque<CacheKey>,
}

impl TokenCache {
    /// Lifetime of an entry for a token without `exp`, in seconds.
    pub const NO_EXP_TTL: u64 = 300;

    /// A cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The key of a token.
    pub fn key(provider: usize, generation: u64, token: &str) -> CacheKey {
        (
            provider,
            generation,
            Sha256::digest(token.as_bytes()).into(),
        )
    }

    /// The token's claims and payload when it passed before and its entry is still valid at
    /// `now`.
    pub fn get(&self, key: &CacheKey, now: u64) -> Option<Verified> {
        self.entries
            .get(key)
            .filter(|(until, _)| now <= *until)
            .map(|(_, verified)| Rc::clone(verified))
    }

    /// Whether the token has a valid entry at `now`.
    pub fn contains(&self, key: &CacheKey, now: u64) -> bool {
        self.get(key, now).is_some()
    }

    /// Records a verified token valid until `until`; evicts the oldest entries when full.
    pub fn insert(&mut self, key: CacheKey, until: u64, now: u64, verified: Verified) {
        if self.capacity == 0 || until < now {
            return;
        }
        if self.entries.insert(key, (until, verified)).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        // Keep the order queue from growing with keys already evicted or re-inserted.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified() -> Verified {
        let claims = Claims::parse(br#"{"sub":"a"}"#).unwrap();
        Rc::new((claims, "eyJzdWIiOiJhIn0".to_string()))
    }

    #[test]
    fn bounded_and_expiring() {
        let mut cache = TokenCache::new(2);
        let (a, b, c) = (
            TokenCache::key(0, 1, "a"),
            TokenCache::key(0, 1, "b"),
            TokenCache::key(0, 1, "c"),
        );
        cache.insert(a, 100, 10, verified());
        cache.insert(b, 100, 10, verified());
        assert!(cache.contains(&a, 100));
        assert!(!cache.contains(&a, 101));
        cache.insert(c, 100, 10, verified());
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&a, 10), "oldest evicted");
        assert!(cache.contains(&c, 10));
        assert_eq!(cache.get(&c, 10).unwrap().0.all["sub"], "a", "claims kept");
        assert!(
            !cache.contains(&TokenCache::key(0, 2, "c"), 10),
            "generation matters"
        );
        let mut off = TokenCache::new(0);
        off.insert(a, 100, 10, verified());
        assert!(off.is_empty());
    }
}
