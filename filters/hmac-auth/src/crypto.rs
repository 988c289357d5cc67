//! HMAC computation and constant-time comparison, over messages given in parts so a buffered body
//! is never copied to build a signed payload.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The hash function under the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1 (legacy custom senders only).
    Sha1,
    /// HMAC-SHA256, what every preset uses.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

fn mac_of<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; an empty MAC never
    // matches a signature, so the fallback is safe.
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// HMAC of the concatenation of `parts` under `key`.
pub fn mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha1 => mac_of::<Hmac<Sha1>>(key, parts),
        Algorithm::Sha256 => mac_of::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => mac_of::<Hmac<Sha512>>(key, parts),
    }
}

/// True when `expected` equals one of `candidates`; each comparison is constant-time.
pub fn matches_any(expected: &[u8], candidates: &[Vec<u8>]) -> bool {
    let mut found = subtle::Choice::from(0u8);
    for candidate in candidates {
        if !expected.is_empty() && candidate.len() == expected.len() {
            found |= candidate.as_slice().ct_eq(expected);
        }
    }
    bool::from(found)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-512 of `data`.
pub fn sha512(data: &[u8]) -> Vec<u8> {
    Sha512::digest(data).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(name: &str) -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/vectors")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn rfc4231_hmac_sha256() {
        let v = vectors("rfc4231.json");
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 7);
        for case in cases {
            let key = hex::decode(case["key_hex"].as_str().unwrap()).unwrap();
            let data = hex::decode(case["data_hex"].as_str().unwrap()).unwrap();
            let expected = hex::decode(case["hmac_sha256_hex"].as_str().unwrap()).unwrap();
            // Split the message in two parts to prove incremental hashing is the same.
            let (a, b) = data.split_at(data.len() / 2);
            let got = mac(Algorithm::Sha256, &key, &[a, b]);
            if case["test_case"] == 5 {
                assert_eq!(got[..16], expected[..16]);
            } else {
                assert_eq!(got, expected, "case {}", case["test_case"]);
            }
            assert!(matches_any(&got, &[vec![1, 2], got.clone()]));
            assert!(!matches_any(&got, &[got[..16].to_vec()]));
        }
    }

    #[test]
    fn empty_never_matches() {
        assert!(!matches_any(&[], &[Vec::new()]));
    }

    #[test]
    fn other_algorithms_have_their_lengths() {
        assert_eq!(mac(Algorithm::Sha1, b"k", &[b"m"]).len(), 20);
        assert_eq!(mac(Algorithm::Sha512, b"k", &[b"m"]).len(), 64);
    }
}
