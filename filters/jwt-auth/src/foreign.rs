//! RSA PKCS#1 v1.5 and ECDSA verification through Envoy's `verify_signature` foreign function
//! (BoringSSL on the host), with the pure-Rust path as the fallback.
//!
//! Arguments and result are the protobuf messages `VerifySignatureArguments`
//! (`hash_function` = 1, `public_key` = 2 as SubjectPublicKeyInfo DER, `signature` = 3,
//! `text` = 4) and `VerifySignatureResult` (`result` = 1, `error` = 2). JWS ECDSA signatures are
//! raw `r || s`; they are range-checked and converted to DER first. RSA-PSS, HMAC and Ed25519
//! always use the pure-Rust path (the host function has no PSS padding option).

use crate::jwks::{Jwk, KeyMaterial};
use crate::jws::{key_fits, Alg, SignatureVerifier};
use std::cell::Cell;
use wasmgate_core::host::Host;

/// Name of the host function.
pub const FUNCTION: &str = "verify_signature";

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encodes `VerifySignatureArguments`.
pub fn encode_args(hash: &str, public_key_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(public_key_der.len() + signature.len() + text.len() + 32);
    put_bytes(&mut out, 1, hash.as_bytes());
    put_bytes(&mut out, 2, public_key_der);
    put_bytes(&mut out, 3, signature);
    put_bytes(&mut out, 4, text);
    out
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Decodes `VerifySignatureResult.result` (absent means false, as in proto3).
pub fn decode_result(bytes: &[u8]) -> Option<bool> {
    let mut pos = 0;
    let mut result = false;
    while pos < bytes.len() {
        let key = get_varint(bytes, &mut pos)?;
        match key & 7 {
            0 => {
                let v = get_varint(bytes, &mut pos)?;
                if key >> 3 == 1 {
                    result = v != 0;
                }
            }
            2 => {
                let len = usize::try_from(get_varint(bytes, &mut pos)?).ok()?;
                pos = pos.checked_add(len)?;
                if pos > bytes.len() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(result)
}

/// The SubjectPublicKeyInfo DER the host takes, for the key types it can check.
pub fn public_key_der(key: &KeyMaterial) -> Option<Vec<u8>> {
    use p256::pkcs8::EncodePublicKey;
    let der = match key {
        KeyMaterial::Rsa(k) => k.to_public_key_der(),
        KeyMaterial::P256(k) => k.to_public_key_der(),
        KeyMaterial::P384(k) => k.to_public_key_der(),
        _ => return None,
    };
    der.ok().map(|d| d.into_vec())
}

/// The host arguments for a signature, or `None` when the host cannot check this algorithm.
pub fn host_args(alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> Option<Vec<u8>> {
    if !key_fits(alg, &key.key) {
        return None;
    }
    let der = key.public_der.as_deref()?;
    let (hash, sig) = match (alg, &key.key) {
        (Alg::RS256, KeyMaterial::Rsa(_)) => ("sha256", signature.to_vec()),
        (Alg::RS384, KeyMaterial::Rsa(_)) => ("sha384", signature.to_vec()),
        (Alg::RS512, KeyMaterial::Rsa(_)) => ("sha512", signature.to_vec()),
        (Alg::ES256, KeyMaterial::P256(_)) => {
            // from_slice rejects a wrong length and r, s outside [1, n-1], as the pure path does.
            let sig = p256::ecdsa::Signature::from_slice(signature).ok()?;
            ("sha256", sig.to_der().as_bytes().to_vec())
        }
        (Alg::ES384, KeyMaterial::P384(_)) => {
            let sig = p384::ecdsa::Signature::from_slice(signature).ok()?;
            ("sha384", sig.to_der().as_bytes().to_vec())
        }
        _ => return None,
    };
    Some(encode_args(hash, der, &sig, input))
}

/// Asks the host first for RS*/ES256/ES384; falls back to pure Rust when the host has no such
/// function or refuses the arguments. Malformed ECDSA signatures are rejected without a call.
pub struct HostVerifier<'a, H: Host + ?Sized> {
    host: &'a H,
    enabled: bool,
    verified: Cell<u32>,
    failed: Cell<u32>,
}

impl<'a, H: Host + ?Sized> HostVerifier<'a, H> {
    /// A verifier using `host` when `enabled`.
    pub fn new(host: &'a H, enabled: bool) -> Self {
        Self {
            host,
            enabled,
            verified: Cell::new(0),
            failed: Cell::new(0),
        }
    }

    /// Signatures the host checked.
    pub fn verified(&self) -> u32 {
        self.verified.get()
    }

    /// Host calls that failed (the function is absent or refused the arguments).
    pub fn failed(&self) -> u32 {
        self.failed.get()
    }
}

impl<H: Host + ?Sized> SignatureVerifier for HostVerifier<'_, H> {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> bool {
        if self.enabled {
            let ecdsa = matches!(alg, Alg::ES256 | Alg::ES384);
            match host_args(alg, key, input, signature) {
                Some(args) => {
                    if let Some(result) = self
                        .host
                        .call_foreign(FUNCTION, &args)
                        .and_then(|out| decode_result(&out))
                    {
                        self.verified.set(self.verified.get() + 1);
                        return result;
                    }
                    self.failed.set(self.failed.get() + 1);
                }
                // An ECDSA signature that is not 2 x field size or has r/s out of range.
                None if ecdsa && key_fits(alg, &key.key) => return false,
                None => {}
            }
        }
        crate::crypto::verify(alg, &key.key, input, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_core::host::FakeHost;

    #[test]
    fn protobuf_round_trip() {
        let args = encode_args("sha256", &[1, 2], &[3], b"t");
        assert_eq!(
            args,
            vec![
                0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', 0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 1,
                b't'
            ]
        );
        assert_eq!(decode_result(&[0x08, 1]), Some(true));
        assert_eq!(decode_result(&[0x08, 0, 0x12, 2, b'n', b'o']), Some(false));
        assert_eq!(decode_result(&[0x12, 2, b'n', b'o']), Some(false));
        assert_eq!(decode_result(&[]), Some(false));
        assert_eq!(decode_result(&[0x12, 9]), None);
        let mut long = Vec::new();
        put_varint(&mut long, 300);
        assert_eq!(long, vec![0xac, 0x02]);
    }

    fn p256_key() -> Jwk {
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/vectors/rfc7515.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let jwk = doc["examples"][2]["jwk"].to_string();
        crate::jwks::Jwks::parse(&format!("{{\"keys\":[{jwk}]}}"))
            .unwrap()
            .keys
            .remove(0)
    }

    #[test]
    fn the_host_verdict_is_used_and_ecdsa_goes_as_der() {
        let key = p256_key();
        let mut host = FakeHost::default();
        host.foreign.insert(FUNCTION.into(), vec![0x08, 1]);
        let verifier = HostVerifier::new(&host, true);
        // Any in-range r||s: the (fake) host says valid.
        let mut sig = vec![0u8; 64];
        sig[31] = 1;
        sig[63] = 1;
        assert!(verifier.verify(Alg::ES256, &key, b"x", &sig));
        assert_eq!(verifier.verified(), 1);
        let args = host_args(Alg::ES256, &key, b"x", &sig).unwrap();
        // DER of SEQUENCE { INTEGER 1, INTEGER 1 } is inside the arguments.
        assert!(args.windows(8).any(|w| w == [0x30, 6, 2, 1, 1, 2, 1, 1]));
        // r = 0 or a wrong length never reaches the host.
        assert!(!verifier.verify(Alg::ES256, &key, b"x", &[0u8; 64]));
        assert!(!verifier.verify(Alg::ES256, &key, b"x", &sig[..63]));
        assert_eq!(verifier.verified(), 1);
        // A host answer that is not a result falls back to the pure-Rust check.
        host.foreign.insert(FUNCTION.into(), vec![0xff]);
        let verifier = HostVerifier::new(&host, true);
        assert!(!verifier.verify(Alg::ES256, &key, b"x", &sig));
        assert_eq!(verifier.failed(), 1);
        // Disabled: never asks.
        let verifier = HostVerifier::new(&host, false);
        assert!(!verifier.verify(Alg::ES256, &key, b"x", &sig));
        assert_eq!(verifier.failed(), 0);
    }

    #[test]
    fn falls_back_without_the_host_function() {
        let key = Jwk::new(None, None, KeyMaterial::Oct(vec![7; 32]));
        let host = FakeHost::default();
        let verifier = HostVerifier::new(&host, true);
        assert!(!verifier.verify(Alg::HS256, &key, b"x", &[0; 32]));
        assert_eq!(verifier.verified(), 0);
        assert_eq!(verifier.failed(), 0, "HMAC never asks the host");
    }
}
