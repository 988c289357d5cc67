//! Compact JWS parsing (RFC 7515) and signature verification against a JWKS.
//!
//! Parsing is strict: exactly three dot-separated parts, canonical unpadded base64url in every
//! part, a JSON object header with a supported `alg` (never `none`), a string `kid` if any, and
//! no `crit` header (this verifier understands no extensions, so RFC 7515 4.1.11 says reject).

use crate::failure::Failure;
use crate::jwks::{Jwk, Jwks, KeyMaterial};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// The JWS algorithms this filter verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256, MGF1 SHA-256, salt 32.
    PS256,
    /// RSASSA-PSS SHA-384, MGF1 SHA-384, salt 48.
    PS384,
    /// RSASSA-PSS SHA-512, MGF1 SHA-512, salt 64.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// ECDSA P-521 SHA-512.
    ES512,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// The algorithm named by a JWS `alg` header (`none` and unknown names give `None`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "ES512" => Self::ES512,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    /// The JWS name of the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// A parsed compact JWS; borrowed parts point into the token.
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    /// The header's `alg`.
    pub alg: Alg,
    /// The header's `kid`, when present.
    pub kid: Option<String>,
    /// The whole header object.
    pub header: Map<String, Value>,
    /// `<header>.<payload>` exactly as received: what the signature covers.
    pub signing_input: &'a str,
    /// The payload part, still base64url encoded (forwarded as is).
    pub payload_b64: &'a str,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    /// The decoded signature bytes.
    pub signature: Vec<u8>,
}

/// Strict base64url: no padding, no whitespace, no non-zero unused bits.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Parses a compact JWS without looking at its claims or signature.
pub fn parse(token: &str) -> Result<Jws<'_>, Failure> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Malformed(
            "the token is not three dot-separated parts",
        ));
    };
    let header_bytes =
        b64url_decode(header_b64).ok_or(Failure::Malformed("the token header is not base64url"))?;
    // Duplicate names are refused: `{"alg": "RS256", "alg": "HS256"}` must not mean one
    // algorithm here and another to a parser that keeps the first.
    let header = crate::claims::strict_object(&header_bytes).ok_or(Failure::Malformed(
        "the token header is not a JSON object without duplicate names",
    ))?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::parse(name).ok_or(Failure::UnsupportedAlg)?,
        _ => return Err(Failure::Malformed("the token header has no alg")),
    };
    if header.contains_key("crit") {
        return Err(Failure::Malformed(
            "the token header has critical parameters this verifier does not understand",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Failure::Malformed("the token kid is not a string")),
    };
    let payload = b64url_decode(payload_b64)
        .ok_or(Failure::Malformed("the token payload is not base64url"))?;
    let signature = b64url_decode(signature_b64)
        .ok_or(Failure::Malformed("the token signature is not base64url"))?;
    if signature.is_empty() {
        return Err(Failure::Malformed("the token has no signature"));
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Jws {
        alg,
        kid,
        header,
        signing_input,
        payload_b64,
        payload,
        signature,
    })
}

/// Whether a key may be used with an algorithm (no RSA key as an HMAC secret, no P-256 key for
/// ES384, HMAC keys at least as long as the hash, RFC 7518 3.2).
pub fn key_fits(alg: Alg, key: &KeyMaterial) -> bool {
    match (alg, key) {
        (Alg::HS256, KeyMaterial::Oct(k)) => k.len() >= 32,
        (Alg::HS384, KeyMaterial::Oct(k)) => k.len() >= 48,
        (Alg::HS512, KeyMaterial::Oct(k)) => k.len() >= 64,
        (
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
            KeyMaterial::Rsa(_),
        ) => true,
        (Alg::ES256, KeyMaterial::P256(_))
        | (Alg::ES384, KeyMaterial::P384(_))
        | (Alg::ES512, KeyMaterial::P521(_))
        | (Alg::EdDSA, KeyMaterial::Ed25519(_)) => true,
        _ => false,
    }
}

/// A pluggable signature check: the pure-Rust one, or one that asks the host first.
pub trait SignatureVerifier {
    /// True when `signature` is a valid `alg` signature of `input` under `key`.
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> bool;
}

/// RustCrypto verification inside the VM.
#[derive(Debug, Clone, Copy, Default)]
pub struct PureRust;

impl SignatureVerifier for PureRust {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], signature: &[u8]) -> bool {
        crate::crypto::verify(alg, &key.key, input, signature)
    }
}

/// Picks the keys that may have signed the token (jwt_verify_lib's rules: a key is skipped when
/// both it and the token have a `kid` and they differ, when it names another `alg`, or when its
/// type does not fit the token's `alg`) and checks the signature with each, at most
/// `max_tries` of them (jwt_verify_lib tries them all: a forged token without `kid` would cost
/// one signature check per key of the set).
///
/// No candidate: [`Failure::UnknownKey`]; candidates but no valid signature: [`Failure::BadSignature`].
pub fn verify_with(
    jws: &Jws<'_>,
    jwks: &Jwks,
    verifier: &dyn SignatureVerifier,
    max_tries: usize,
) -> Result<(), Failure> {
    let mut candidates = 0usize;
    for jwk in &jwks.keys {
        if let (Some(token_kid), Some(key_kid)) = (&jws.kid, &jwk.kid) {
            if token_kid != key_kid {
                continue;
            }
        }
        if jwk.alg.as_deref().is_some_and(|a| a != jws.alg.name()) {
            continue;
        }
        if !key_fits(jws.alg, &jwk.key) {
            continue;
        }
        if candidates == max_tries {
            log::debug!(
                "wasmgate jwt-auth: stopped after {max_tries} keys (max_keys_tried) without a valid signature"
            );
            break;
        }
        candidates += 1;
        if verifier.verify(jws.alg, jwk, jws.signing_input.as_bytes(), &jws.signature) {
            return Ok(());
        }
    }
    if candidates == 0 {
        Err(Failure::UnknownKey)
    } else {
        Err(Failure::BadSignature)
    }
}

/// [`verify_with`] using the pure-Rust verifier, trying every fitting key (tests and tools).
pub fn verify(jws: &Jws<'_>, jwks: &Jwks) -> Result<(), Failure> {
    verify_with(jws, jwks, &PureRust, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sign::sign;

    const OCT: &str = r#"{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#;

    fn jwks(json: &str) -> Jwks {
        Jwks::parse(&format!("{{\"keys\":[{json}]}}")).unwrap()
    }

    fn hs256(header: &str, claims: &str) -> String {
        sign(OCT, header, claims).unwrap()
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn valid_hs256() {
        let token = hs256(r#"{"alg":"HS256"}"#, r#"{"sub":"a"}"#);
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.alg, Alg::HS256);
        assert_eq!(verify(&parsed, &jwks(OCT)), Ok(()));
    }

    #[test]
    fn structure_attacks() {
        let token = hs256(r#"{"alg":"HS256"}"#, "{}");
        let trailing_dot = format!("{token}.");
        let extra_segment = format!("{token}.AAAA");
        let (head, _) = token.rsplit_once('.').unwrap();
        let no_sig = format!("{head}.");
        for bad in [
            trailing_dot.as_str(),
            extra_segment.as_str(),
            no_sig.as_str(),
            head,
            "",
            "..",
            "a.b.c",
        ] {
            assert!(matches!(parse(bad), Err(Failure::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn non_canonical_base64() {
        let token = hs256(r#"{"alg":"HS256"}"#, "{}");
        let parts: Vec<&str> = token.split('.').collect();
        // Padding, standard alphabet, whitespace, and non-zero unused bits are all refused.
        let padded = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
        let plus = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            parts[2].replace('-', "+").replace('_', "/") + "+"
        );
        let space = format!("{} .{}.{}", parts[0], parts[1], parts[2]);
        assert!(parse(&padded).is_err());
        assert!(parse(&plus).is_err());
        assert!(parse(&space).is_err());
        // "e30" is "{}"; "e31" decodes to the same bytes with non-zero trailing bits.
        assert!(b64url_decode("e30").is_some());
        assert!(b64url_decode("e31").is_none());
    }

    #[test]
    fn alg_none_and_unknown_algs() {
        for alg in ["none", "None", "HS1", "RSA-OAEP", ""] {
            let token = format!(
                "{}.{}.c2ln",
                b64(&format!("{{\"alg\":\"{alg}\"}}")),
                b64("{}")
            );
            assert_eq!(parse(&token).unwrap_err(), Failure::UnsupportedAlg, "{alg}");
        }
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(parse(&token).unwrap_err(), Failure::UnsupportedAlg);
        let token = format!("{}.{}.c2ln", b64(r#"{"typ":"JWT"}"#), b64("{}"));
        assert!(matches!(parse(&token), Err(Failure::Malformed(_))));
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":5}"#), b64("{}"));
        assert!(matches!(parse(&token), Err(Failure::Malformed(_))));
    }

    #[test]
    fn crit_is_rejected() {
        for crit in [r#"["exp"]"#, "[]", r#"["b64"]"#] {
            let token = hs256(&format!(r#"{{"alg":"HS256","crit":{crit},"exp":1}}"#), "{}");
            assert!(matches!(parse(&token), Err(Failure::Malformed(m)) if m.contains("critical")));
        }
    }

    #[test]
    fn key_selection_by_kid_and_alg() {
        let keys = jwks(&format!(
            r#"{{"kty":"oct","kid":"other","k":"{}"}}, {},
               {{"kty":"oct","kid":"k384","alg":"HS384","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}}"#,
            b64("another-secret-another-secret-another"),
            OCT.replace("{\"kty\"", "{\"kid\":\"main\",\"kty\"")
        ));
        let token = hs256(r#"{"alg":"HS256","kid":"main"}"#, "{}");
        assert_eq!(verify(&parse(&token).unwrap(), &keys), Ok(()));
        let token = hs256(r#"{"alg":"HS256"}"#, "{}");
        assert_eq!(
            verify(&parse(&token).unwrap(), &keys),
            Ok(()),
            "no kid: every key tried"
        );
        let token = hs256(r#"{"alg":"HS256","kid":"missing"}"#, "{}");
        assert_eq!(
            verify(&parse(&token).unwrap(), &keys),
            Err(Failure::UnknownKey)
        );
        let token = hs256(r#"{"alg":"HS256","kid":"other"}"#, "{}");
        assert_eq!(
            verify(&parse(&token).unwrap(), &keys),
            Err(Failure::BadSignature)
        );
        // kid names the HS384 key but the token says HS256: the key's alg excludes it.
        let token = hs256(r#"{"alg":"HS256","kid":"k384"}"#, "{}");
        assert_eq!(
            verify(&parse(&token).unwrap(), &keys),
            Err(Failure::UnknownKey)
        );
    }

    #[test]
    fn no_key_type_confusion() {
        // An RSA public key must never serve as an HMAC secret (the classic RS256 -> HS256).
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../../shared/vectors/rfc7515.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let rsa_jwk = doc["examples"][1]["jwk"].to_string();
        let rsa = Jwks::parse(&format!("{{\"keys\":[{rsa_jwk}]}}")).unwrap();
        let n = doc["examples"][1]["jwk"]["n"].as_str().unwrap();
        let as_secret = format!(r#"{{"kty":"oct","k":"{n}"}}"#);
        let token = sign(&as_secret, r#"{"alg":"HS256"}"#, "{}").unwrap();
        assert_eq!(
            verify(&parse(&token).unwrap(), &rsa),
            Err(Failure::UnknownKey)
        );
        // And an HMAC key never verifies an RS256 token.
        let token = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(
            verify(&parse(&token).unwrap(), &jwks(OCT)),
            Err(Failure::UnknownKey)
        );
    }

    #[test]
    fn short_hmac_keys_do_not_fit() {
        let short = r#"{"kty":"oct","k":"c2hvcnQ"}"#;
        let token = sign(short, r#"{"alg":"HS256"}"#, "{}").unwrap();
        assert_eq!(
            verify(&parse(&token).unwrap(), &jwks(short)),
            Err(Failure::UnknownKey)
        );
    }

    #[test]
    fn truncated_mac_is_rejected() {
        let token = hs256(r#"{"alg":"HS256"}"#, "{}");
        let (head, sig) = token.rsplit_once('.').unwrap();
        let sig = b64url_decode(sig).unwrap();
        let truncated = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig[..16]));
        assert_eq!(
            verify(&parse(&truncated).unwrap(), &jwks(OCT)),
            Err(Failure::BadSignature)
        );
    }
}
