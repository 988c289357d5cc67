//! The key table: every configured key as its SHA-256 digest, sorted, with the client it belongs
//! to and when it is valid. A presented key is hashed once and found by binary search, so the
//! work per request does not depend on how many keys there are, and comparisons run on digests
//! a client cannot choose (learning how a guess's digest compares to the stored ones tells
//! nothing about any key).

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type KeyDigest = [u8; 32];

/// The digest of a key as presented.
pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// One key: whose it is and when it may be used (Unix seconds, `not_before` inclusive,
/// `not_after` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The key's digest.
    pub digest: KeyDigest,
    /// Index of the client in the configuration's `clients`.
    pub client: u32,
    /// First second the key is valid (0: always was).
    pub not_before: u64,
    /// First second the key is no longer valid (`u64::MAX`: never retires).
    pub not_after: u64,
}

impl Entry {
    /// Whether the key may be used at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// What looking up a presented key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A key valid now, of this client.
    Valid(u32),
    /// A configured key outside its validity period.
    Retired,
    /// No such key.
    Unknown,
}

/// Every configured key, sorted by digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTable(Vec<Entry>);

impl KeyTable {
    /// Sorts the entries; a digest given twice is an error naming both positions (as indices
    /// into `entries`), because one key belonging to two clients (or twice to one) is always a
    /// mistake.
    pub fn new(mut entries: Vec<(usize, Entry)>) -> Result<Self, (usize, usize)> {
        entries.sort_unstable_by(|a, b| a.1.digest.cmp(&b.1.digest).then(a.0.cmp(&b.0)));
        if let Some(pair) = entries.windows(2).find(|w| w[0].1.digest == w[1].1.digest) {
            return Err((pair[0].0, pair[1].0));
        }
        Ok(Self(entries.into_iter().map(|(_, entry)| entry).collect()))
    }

    /// Looks a presented key up at `now` (Unix seconds).
    pub fn lookup(&self, key: &str, now: u64) -> Lookup {
        let wanted = digest(key);
        match self.0.binary_search_by(|entry| entry.digest.cmp(&wanted)) {
            Ok(i) if self.0[i].valid_at(now) => Lookup::Valid(self.0[i].client),
            Ok(_) => Lookup::Retired,
            Err(_) => Lookup::Unknown,
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
