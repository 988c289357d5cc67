//! JSON Web Key Sets (RFC 7517) decoded into verification keys.
//!
//! Keys of a type this filter does not verify with (`kty` other than RSA/EC/OKP/oct, curves
//! such as X25519, keys whose `use` is not `sig` or whose `key_ops` lack `verify`) are skipped;
//! a key of a supported type that is malformed (bad base64url, a point not on the curve, an RSA
//! modulus under 2048 bits, an empty HMAC secret) makes the whole set invalid, so an operator
//! notices at load time instead of at the first request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted.
pub const MAX_RSA_BITS: usize = 8192;
/// Largest RSA public exponent accepted (the `rsa` crate's own bound, 2^33 - 1).
pub const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;
/// Largest `jwks_limits.max_keys` accepted.
pub const MAX_MAX_KEYS: usize = 1024;

/// Bounds on a key set, so that the work one forged token can cause stays small: a set with
/// more keys than `max_keys`, an RSA modulus over `max_rsa_bits` or a public exponent over
/// `max_rsa_exponent` is refused as a whole (a configuration error for `local_jwks`, a failed
/// fetch for `remote_jwks`, which keeps the last good keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// Keys per set (usable or not) at most.
    pub max_keys: usize,
    /// RSA modulus size at most, in bits.
    pub max_rsa_bits: usize,
    /// RSA public exponent at most.
    pub max_rsa_exponent: u64,
}

impl Default for KeyLimits {
    /// 64 keys, RSA up to 4096 bits with an exponent up to 65537: what identity providers
    /// publish (Entra ID, Google, Auth0, Okta, Keycloak, Cognito: a handful of RSA-2048 keys
    /// with e = 65537).
    fn default() -> Self {
        Self {
            max_keys: 64,
            max_rsa_bits: 4096,
            max_rsa_exponent: 65_537,
        }
    }
}

impl KeyLimits {
    /// The widest limits (for published test vectors and tools, never the filter's default).
    pub const PERMISSIVE: Self = Self {
        max_keys: MAX_MAX_KEYS,
        max_rsa_bits: MAX_RSA_BITS,
        max_rsa_exponent: MAX_RSA_EXPONENT,
    };
}

/// Decoded public (or, for `oct`, secret) key material.
#[derive(Clone)]
pub enum KeyMaterial {
    /// RSA public key.
    Rsa(rsa::RsaPublicKey),
    /// P-256 public key.
    P256(p256::ecdsa::VerifyingKey),
    /// P-384 public key.
    P384(p384::ecdsa::VerifyingKey),
    /// P-521 public key.
    P521(Box<p521::ecdsa::VerifyingKey>),
    /// Ed25519 public key.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// HMAC secret.
    Oct(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rsa(_) => "Rsa",
            Self::P256(_) => "P256",
            Self::P384(_) => "P384",
            Self::P521(_) => "P521",
            Self::Ed25519(_) => "Ed25519",
            Self::Oct(_) => "Oct(<redacted>)",
        })
    }
}

/// One usable key.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// `kid`, when the key has one.
    pub kid: Option<String>,
    /// `alg`, when the key is restricted to one algorithm.
    pub alg: Option<String>,
    /// The key itself.
    pub key: KeyMaterial,
    /// SubjectPublicKeyInfo DER of an RSA or EC key, encoded once when the key set loads, for
    /// the host's `verify_signature` (encoding it per request cost more than the call).
    pub public_der: Option<Vec<u8>>,
}

impl Jwk {
    /// A key with its public DER encoded.
    pub fn new(kid: Option<String>, alg: Option<String>, key: KeyMaterial) -> Self {
        let public_der = crate::foreign::public_key_der(&key);
        Self {
            kid,
            alg,
            key,
            public_der,
        }
    }
}

/// A key set.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    /// Usable keys in document order.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses `{"keys": [...]}` under [`KeyLimits::PERMISSIVE`].
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_limited(text, &KeyLimits::PERMISSIVE)
    }

    /// Parses `{"keys": [...]}`, refusing a set over `limits`.
    pub fn parse_limited(text: &str, limits: &KeyLimits) -> Result<Self, String> {
        let doc: Map<String, Value> =
            serde_json::from_str(text).map_err(|_| "the JWKS is not a JSON object".to_string())?;
        let Some(Value::Array(raw_keys)) = doc.get("keys") else {
            return Err("the JWKS has no \"keys\" array".into());
        };
        if raw_keys.len() > limits.max_keys {
            return Err(format!(
                "the JWKS has {} keys, more than max_keys ({})",
                raw_keys.len(),
                limits.max_keys
            ));
        }
        let mut keys = Vec::new();
        for (index, raw) in raw_keys.iter().enumerate() {
            let Value::Object(raw) = raw else {
                return Err(format!("key {index} is not a JSON object"));
            };
            match parse_key(raw, limits) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => {}
                Err(reason) => return Err(format!("key {index}: {reason}")),
            }
        }
        Ok(Self { keys })
    }

    /// Whether some key carries this `kid` (for the rotation refetch decision).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn string_field<'a>(raw: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match raw.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

fn b64_field(raw: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = string_field(raw, name)?.ok_or_else(|| format!("\"{name}\" is missing"))?;
    // Some issuers pad JWK members; the value must otherwise be canonical base64url.
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("\"{name}\" is not base64url"))
}

fn parse_key(raw: &Map<String, Value>, limits: &KeyLimits) -> Result<Option<Jwk>, String> {
    let kty = string_field(raw, "kty")?.ok_or("\"kty\" is missing")?;
    if string_field(raw, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = raw.get("key_ops") {
        let Value::Array(ops) = ops else {
            return Err("\"key_ops\" is not an array".into());
        };
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let kid = string_field(raw, "kid")?.map(str::to_string);
    let alg = string_field(raw, "alg")?.map(str::to_string);
    let key = match kty {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&b64_field(raw, "n")?);
            // Checked before any arithmetic on the key, so an oversized key costs nothing.
            if n.bits() > limits.max_rsa_bits {
                return Err(format!(
                    "the RSA modulus has {} bits, more than max_rsa_bits ({})",
                    n.bits(),
                    limits.max_rsa_bits
                ));
            }
            let e = rsa::BigUint::from_bytes_be(&b64_field(raw, "e")?);
            if e > rsa::BigUint::from(limits.max_rsa_exponent) {
                return Err(format!(
                    "the RSA public exponent is larger than max_rsa_exponent ({})",
                    limits.max_rsa_exponent
                ));
            }
            let key = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
                .map_err(|e| format!("invalid RSA key: {e}"))?;
            if rsa::traits::PublicKeyParts::n(&key).bits() < MIN_RSA_BITS {
                return Err(format!("RSA keys must have at least {MIN_RSA_BITS} bits"));
            }
            KeyMaterial::Rsa(key)
        }
        "EC" => {
            let crv = string_field(raw, "crv")?.ok_or("\"crv\" is missing")?;
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                "P-521" => 66,
                _ => return Ok(None),
            };
            let (x, y) = (b64_field(raw, "x")?, b64_field(raw, "y")?);
            // RFC 7518 wants full-length coordinates; some issuers drop leading zero bytes
            // (BoringSSL, and so jwt_authn, accepts that), so shorter ones are left-padded.
            if x.is_empty() || y.is_empty() || x.len() > size || y.len() > size {
                return Err(format!("{crv} coordinates must be {size} bytes"));
            }
            let mut point = vec![0u8; 1 + 2 * size];
            point[0] = 4;
            point[1 + size - x.len()..1 + size].copy_from_slice(&x);
            point[1 + 2 * size - y.len()..].copy_from_slice(&y);
            let invalid = |_| format!("the {crv} point is not on the curve");
            match crv {
                "P-256" => KeyMaterial::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?,
                ),
                "P-384" => KeyMaterial::P384(
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?,
                ),
                _ => KeyMaterial::P521(Box::new(
                    p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?,
                )),
            }
        }
        "OKP" => {
            let crv = string_field(raw, "crv")?.ok_or("\"crv\" is missing")?;
            if crv != "Ed25519" {
                return Ok(None);
            }
            let x: [u8; 32] = b64_field(raw, "x")?
                .try_into()
                .map_err(|_| "Ed25519 keys must be 32 bytes".to_string())?;
            KeyMaterial::Ed25519(
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| "invalid Ed25519 public key".to_string())?,
            )
        }
        "oct" => {
            let k = b64_field(raw, "k")?;
            if k.is_empty() {
                return Err("the HMAC secret \"k\" is empty".into());
            }
            KeyMaterial::Oct(k)
        }
        _ => return Ok(None),
    };
    Ok(Some(Jwk::new(kid, alg, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_documents() {
        assert!(Jwks::parse("[]").is_err());
        assert!(Jwks::parse("{}").is_err());
        assert!(Jwks::parse(r#"{"keys": [1]}"#).is_err());
        assert!(Jwks::parse(r#"{"keys": [{"kty": "oct", "k": ""}]}"#).is_err());
        assert!(Jwks::parse(r#"{"keys": [{"kty": "oct", "k": "a+b"}]}"#).is_err());
        assert!(
            Jwks::parse(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn limits_refuse_oversized_sets_keys_and_exponents() {
        let n4096 = URL_SAFE_NO_PAD.encode([0xC5u8; 512]);
        let n4104 = URL_SAFE_NO_PAD.encode([0xC5u8; 513]);
        let rsa = |n: &str, e: &str| format!(r#"{{"kty":"RSA","n":"{n}","e":"{e}"}}"#);
        let set = |keys: &[String]| format!(r#"{{"keys":[{}]}}"#, keys.join(","));
        let limits = KeyLimits::default();
        // At the limits: accepted.
        assert!(Jwks::parse_limited(&set(&[rsa(&n4096, "AQAB")]), &limits).is_ok());
        // One bit over: refused before the key is built, with the reason.
        let e = Jwks::parse_limited(&set(&[rsa(&n4104, "AQAB")]), &limits).unwrap_err();
        assert!(e.contains("max_rsa_bits"), "{e}");
        // e = 65539 and a huge exponent: refused.
        for big in ["AQAD", "AQAAAAAAAAAB"] {
            let e = Jwks::parse_limited(&set(&[rsa(&n4096, big)]), &limits).unwrap_err();
            assert!(e.contains("max_rsa_exponent"), "{e}");
        }
        // More keys than max_keys, even unusable ones: refused.
        let many: Vec<String> = (0..65).map(|_| r#"{"kty":"AES"}"#.to_string()).collect();
        let e = Jwks::parse_limited(&set(&many), &limits).unwrap_err();
        assert!(e.contains("max_keys"), "{e}");
        assert!(Jwks::parse_limited(&set(&many[..64]), &limits).is_ok());
    }

    #[test]
    fn skips_unusable_keys() {
        let jwks = Jwks::parse(
            r#"{"keys": [
                {"kty": "oct", "k": "c2VjcmV0", "use": "enc"},
                {"kty": "oct", "k": "c2VjcmV0", "key_ops": ["sign"]},
                {"kty": "OKP", "crv": "X25519", "x": "AA"},
                {"kty": "AES"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(jwks.keys.len(), 1);
        assert!(jwks.has_kid("k1"));
        assert!(!jwks.has_kid("k2"));
        assert_eq!(format!("{:?}", jwks.keys[0].key), "Oct(<redacted>)");
    }
}
