//! Public keys for asymmetric signatures (Standard Webhooks `v1a`, Discord, RFC 9421 `ed25519`,
//! `ecdsa-p256-sha256`, `rsa-pss-sha512`): decoded once at configuration time from the forms
//! senders publish (`whpk_` base64, hex, PEM SubjectPublicKeyInfo, JWK), verified with RustCrypto.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::Sha512;
use std::fmt;

/// Smallest RSA modulus accepted (bits): smaller keys are factorable.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bits): bounds the cost of one verification.
pub const MAX_RSA_BITS: usize = 8192;

/// SubjectPublicKeyInfo prefix of an Ed25519 key (RFC 8410), followed by the 32 key bytes.
const ED25519_SPKI: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// SubjectPublicKeyInfo prefix of a P-256 key, followed by the 65-byte uncompressed point.
const P256_SPKI: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A decoded public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// Ed25519 (RFC 8032).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// RSA, verified as RSASSA-PSS with SHA-512 (RFC 9421 `rsa-pss-sha512`).
    Rsa(rsa::RsaPublicKey),
}

/// A configured public key and the id operators (and RFC 9421 `keyid`) know it by.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The id (the RFC 9421 `keyid`; names the `matched_<id>` counter).
    pub id: String,
    /// The key.
    pub key: KeyMaterial,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.id, self.key.alg())
    }
}

impl KeyMaterial {
    /// The RFC 9421 algorithm name this key verifies (the only one it is used with).
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "ed25519",
            Self::EcdsaP256(_) => "ecdsa-p256-sha256",
            Self::Rsa(_) => "rsa-pss-sha512",
        }
    }

    /// True when `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        match self {
            Self::Ed25519(key) => match ed25519_dalek::Signature::from_slice(signature) {
                Ok(sig) => key.verify_strict(message, &sig).is_ok(),
                Err(_) => false,
            },
            Self::EcdsaP256(key) => match p256::ecdsa::Signature::from_slice(signature) {
                Ok(sig) => key.verify(message, &sig).is_ok(),
                Err(_) => false,
            },
            Self::Rsa(key) => {
                if signature.len() != key.size() {
                    return false;
                }
                let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                    return false;
                };
                // RFC 9421 says a 64-byte salt; signers using their library's default (OpenSSL's
                // and Node's: the largest salt that fits) are accepted too. Both are RSASSA-PSS
                // with SHA-512 and MGF1-SHA-512; the salt length does not weaken it.
                let em_len = (key.n().bits() + 6) / 8;
                let largest = em_len.saturating_sub(64 + 2);
                [64, largest].iter().any(|&salt| {
                    rsa::pss::VerifyingKey::<Sha512>::new_with_salt_len(key.clone(), salt)
                        .verify(message, &sig)
                        .is_ok()
                })
            }
        }
    }
}

fn ed25519(bytes: &[u8]) -> Result<KeyMaterial, String> {
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&raw)
        .map(KeyMaterial::Ed25519)
        .map_err(|_| "not a valid Ed25519 public key".to_string())
}

fn p256_point(point: &[u8]) -> Result<KeyMaterial, String> {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .map(KeyMaterial::EcdsaP256)
        .map_err(|_| "not a valid P-256 public key".to_string())
}

fn rsa_key(key: rsa::RsaPublicKey) -> Result<KeyMaterial, String> {
    let bits = key.size() * 8;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits is refused: {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
        ));
    }
    Ok(KeyMaterial::Rsa(key))
}

/// A key written as text: `whpk_<base64>` (Standard Webhooks), 64 hex digits (Discord), or PEM
/// (`PUBLIC KEY`: Ed25519, P-256 or RSA SubjectPublicKeyInfo; `RSA PUBLIC KEY`: PKCS #1).
pub fn parse_text(text: &str) -> Result<KeyMaterial, String> {
    let text = text.trim();
    if let Some(b64) = text.strip_prefix("whpk_") {
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "a whpk_ key is not valid base64".to_string())?;
        return ed25519(&bytes);
    }
    if text.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        let key = rsa::RsaPublicKey::from_pkcs1_pem(text)
            .map_err(|_| "not a valid PKCS #1 RSA public key".to_string())?;
        return rsa_key(key);
    }
    if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        let der = pem_body(text)?;
        if let Some(raw) = der.strip_prefix(&ED25519_SPKI[..]) {
            return ed25519(raw);
        }
        if let Some(point) = der.strip_prefix(&P256_SPKI[..]) {
            return p256_point(point);
        }
        return match rsa::RsaPublicKey::from_public_key_der(&der) {
            Ok(key) => rsa_key(key),
            Err(_) => {
                Err("the PEM key is not an Ed25519, P-256 or RSA SubjectPublicKeyInfo".to_string())
            }
        };
    }
    if text.starts_with("-----BEGIN") {
        return Err(
            "a PEM public key must be \"PUBLIC KEY\" or \"RSA PUBLIC KEY\" (never a private key)"
                .into(),
        );
    }
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes = hex::decode(text).map_err(|_| "not valid hex".to_string())?;
        return ed25519(&bytes);
    }
    Err("expected \"whpk_<base64>\", 64 hex digits (Ed25519) or a PEM public key".into())
}

/// An Ed25519 private key for signing: `whsk_<base64>` (Standard Webhooks; the 32-byte seed, or
/// the 64-byte seed and public key) or PEM `PRIVATE KEY` (PKCS #8, RFC 8410).
pub fn parse_signing_key(text: &str) -> Result<ed25519_dalek::SigningKey, String> {
    let text = text.trim();
    let bytes = if let Some(b64) = text.strip_prefix("whsk_") {
        STANDARD
            .decode(b64)
            .map_err(|_| "a whsk_ key is not valid base64".to_string())?
    } else if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        let der = pem_body(text)?;
        // PKCS #8 v1 for Ed25519: a fixed 16-byte header, then the 32-byte seed.
        const HEADER: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.strip_prefix(&HEADER[..])
            .ok_or_else(|| "the PEM key is not an Ed25519 PKCS #8 private key".to_string())?
            .to_vec()
    } else {
        return Err("expected \"whsk_<base64>\" or a PEM Ed25519 private key".into());
    };
    let seed: [u8; 32] = match bytes.len() {
        32 | 64 => bytes[..32]
            .try_into()
            .map_err(|_| "an Ed25519 private key is 32 bytes".to_string())?,
        _ => return Err("an Ed25519 private key is 32 bytes (or 64 with its public key)".into()),
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    if bytes.len() == 64 && bytes[32..] != key.verifying_key().to_bytes() {
        return Err("the public half of the 64-byte key does not belong to its seed".into());
    }
    Ok(key)
}

fn pem_body(text: &str) -> Result<Vec<u8>, String> {
    let inner: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let ends = text
        .lines()
        .filter(|l| l.trim().starts_with("-----END"))
        .count();
    if ends != 1 {
        return Err("the PEM text must hold exactly one key".into());
    }
    STANDARD
        .decode(inner)
        .map_err(|_| "the PEM body is not valid base64".into())
}

fn jwk_field(jwk: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk[name]
        .as_str()
        .ok_or_else(|| format!("the JWK has no \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("the JWK \"{name}\" is not base64url"))
}

/// A JWK (RFC 7517): `OKP`/`Ed25519`, `EC`/`P-256` or `RSA`. Private keys (`d`) are refused.
pub fn parse_jwk(jwk: &serde_json::Value) -> Result<KeyMaterial, String> {
    if !jwk.is_object() {
        return Err("a JWK is a JSON object".into());
    }
    if jwk.get("d").is_some() || jwk.get("p").is_some() {
        return Err("the JWK holds a private key: configure the public key only".into());
    }
    match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("OKP"), Some("Ed25519")) => ed25519(&jwk_field(jwk, "x")?),
        (Some("EC"), Some("P-256")) => {
            let (x, y) = (jwk_field(jwk, "x")?, jwk_field(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates are 32 bytes".into());
            }
            let point = [&[4u8][..], &x, &y].concat();
            p256_point(&point)
        }
        (Some("RSA"), _) => {
            let n = rsa::BigUint::from_bytes_be(&jwk_field(jwk, "n")?);
            let e = rsa::BigUint::from_bytes_be(&jwk_field(jwk, "e")?);
            let key = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
                .map_err(|_| "not a valid RSA public key".to_string())?;
            rsa_key(key)
        }
        _ => Err("unsupported JWK: kty OKP with crv Ed25519, EC with P-256, or RSA".into()),
    }
}

#[cfg(test)]
mod tests;
