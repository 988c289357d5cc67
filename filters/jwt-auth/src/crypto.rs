//! Pure-Rust signature checks (RustCrypto), one per JWS algorithm.

use crate::jwks::KeyMaterial;
use crate::jws::{key_fits, Alg};
use hmac::{Hmac, Mac};
use rsa::{Pkcs1v15Sign, Pss};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// True when `signature` is a valid `alg` signature of `input` under `key`.
pub fn verify(alg: Alg, key: &KeyMaterial, input: &[u8], signature: &[u8]) -> bool {
    if !key_fits(alg, key) {
        return false;
    }
    match (alg, key) {
        (Alg::HS256, KeyMaterial::Oct(k)) => hmac_ok::<Hmac<Sha256>>(k, input, signature),
        (Alg::HS384, KeyMaterial::Oct(k)) => hmac_ok::<Hmac<Sha384>>(k, input, signature),
        (Alg::HS512, KeyMaterial::Oct(k)) => hmac_ok::<Hmac<Sha512>>(k, input, signature),
        (Alg::RS256, KeyMaterial::Rsa(k)) => k
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(input),
                signature,
            )
            .is_ok(),
        (Alg::RS384, KeyMaterial::Rsa(k)) => k
            .verify(
                Pkcs1v15Sign::new::<Sha384>(),
                &Sha384::digest(input),
                signature,
            )
            .is_ok(),
        (Alg::RS512, KeyMaterial::Rsa(k)) => k
            .verify(
                Pkcs1v15Sign::new::<Sha512>(),
                &Sha512::digest(input),
                signature,
            )
            .is_ok(),
        // Pss::new fixes the salt length to the hash length, as RFC 7518 3.5 requires.
        (Alg::PS256, KeyMaterial::Rsa(k)) => k
            .verify(Pss::new::<Sha256>(), &Sha256::digest(input), signature)
            .is_ok(),
        (Alg::PS384, KeyMaterial::Rsa(k)) => k
            .verify(Pss::new::<Sha384>(), &Sha384::digest(input), signature)
            .is_ok(),
        (Alg::PS512, KeyMaterial::Rsa(k)) => k
            .verify(Pss::new::<Sha512>(), &Sha512::digest(input), signature)
            .is_ok(),
        (Alg::ES256, KeyMaterial::P256(k)) => {
            use p256::ecdsa::signature::Verifier;
            p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(input, &sig).is_ok())
        }
        (Alg::ES384, KeyMaterial::P384(k)) => {
            use p384::ecdsa::signature::Verifier;
            p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(input, &sig).is_ok())
        }
        (Alg::ES512, KeyMaterial::P521(k)) => {
            use p521::ecdsa::signature::Verifier;
            p521::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(input, &sig).is_ok())
        }
        (Alg::EdDSA, KeyMaterial::Ed25519(k)) => ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| k.verify_strict(input, &sig).is_ok()),
        _ => false,
    }
}

fn hmac_ok<M: Mac + hmac::digest::KeyInit>(key: &[u8], input: &[u8], tag: &[u8]) -> bool {
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(input);
            // Constant-time, and the tag must have the full length (no truncated MACs).
            mac.verify_slice(tag).is_ok()
        }
        Err(_) => false,
    }
}

/// Signing, for the end-to-end tests and the unit tests (feature `sign`).
#[cfg(any(test, feature = "sign"))]
pub mod sign {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{Map, Value};

    fn field(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
        let text = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name} missing"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Signs `header` and `claims` (JSON texts) with a private JWK and returns the compact JWS.
    pub fn sign(private_jwk: &str, header: &str, claims: &str) -> Result<String, String> {
        let jwk: Map<String, Value> =
            serde_json::from_str(private_jwk).map_err(|e| e.to_string())?;
        let head: Map<String, Value> = serde_json::from_str(header).map_err(|e| e.to_string())?;
        let alg = head
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::parse)
            .ok_or("header alg")?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = sign_input(&jwk, alg, input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The raw JWS signature of `input`.
    pub fn sign_input(jwk: &Map<String, Value>, alg: Alg, input: &[u8]) -> Result<Vec<u8>, String> {
        use rsa::BigUint;
        let rsa_key = || -> Result<rsa::RsaPrivateKey, String> {
            let n = BigUint::from_bytes_be(&field(jwk, "n")?);
            let e = BigUint::from_bytes_be(&field(jwk, "e")?);
            let d = BigUint::from_bytes_be(&field(jwk, "d")?);
            let p = BigUint::from_bytes_be(&field(jwk, "p")?);
            let q = BigUint::from_bytes_be(&field(jwk, "q")?);
            rsa::RsaPrivateKey::from_components(n, e, d, vec![p, q]).map_err(|e| e.to_string())
        };
        let hmac = |k: Vec<u8>| -> Result<Vec<u8>, String> {
            fn mac<M: Mac + hmac::digest::KeyInit>(
                k: &[u8],
                input: &[u8],
            ) -> Result<Vec<u8>, String> {
                let mut m =
                    <M as hmac::digest::KeyInit>::new_from_slice(k).map_err(|e| e.to_string())?;
                m.update(input);
                Ok(m.finalize().into_bytes().to_vec())
            }
            match alg {
                Alg::HS256 => mac::<Hmac<Sha256>>(&k, input),
                Alg::HS384 => mac::<Hmac<Sha384>>(&k, input),
                _ => mac::<Hmac<Sha512>>(&k, input),
            }
        };
        let mut rng = SplitMix(0x5eed_1234_abcd_0042);
        Ok(match alg {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => hmac(field(jwk, "k")?)?,
            Alg::RS256 => rsa_key()?
                .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input))
                .map_err(|e| e.to_string())?,
            Alg::RS384 => rsa_key()?
                .sign(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input))
                .map_err(|e| e.to_string())?,
            Alg::RS512 => rsa_key()?
                .sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input))
                .map_err(|e| e.to_string())?,
            Alg::PS256 => rsa_key()?
                .sign_with_rng(&mut rng, Pss::new::<Sha256>(), &Sha256::digest(input))
                .map_err(|e| e.to_string())?,
            Alg::PS384 => rsa_key()?
                .sign_with_rng(&mut rng, Pss::new::<Sha384>(), &Sha384::digest(input))
                .map_err(|e| e.to_string())?,
            Alg::PS512 => rsa_key()?
                .sign_with_rng(&mut rng, Pss::new::<Sha512>(), &Sha512::digest(input))
                .map_err(|e| e.to_string())?,
            Alg::ES256 => {
                use p256::ecdsa::signature::Signer;
                let k = p256::ecdsa::SigningKey::from_slice(&field(jwk, "d")?)
                    .map_err(|e| e.to_string())?;
                let s: p256::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            Alg::ES384 => {
                use p384::ecdsa::signature::Signer;
                let k = p384::ecdsa::SigningKey::from_slice(&field(jwk, "d")?)
                    .map_err(|e| e.to_string())?;
                let s: p384::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            Alg::ES512 => {
                use p521::ecdsa::signature::Signer;
                let k = p521::ecdsa::SigningKey::from_slice(&field(jwk, "d")?)
                    .map_err(|e| e.to_string())?;
                let s: p521::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            Alg::EdDSA => {
                use ed25519_dalek::Signer;
                let d: [u8; 32] = field(jwk, "d")?.try_into().map_err(|_| "d length")?;
                ed25519_dalek::SigningKey::from_bytes(&d)
                    .sign(input)
                    .to_bytes()
                    .to_vec()
            }
        })
    }

    /// A tiny deterministic RNG for PSS salts in tests (not for production signing).
    struct SplitMix(u64);

    impl rsa::rand_core::RngCore for SplitMix {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let v = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rsa::rand_core::CryptoRng for SplitMix {}
}
