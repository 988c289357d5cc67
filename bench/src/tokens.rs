//! Signed inputs for the benchmark: JWTs (RS256, ES256) signed with the RFC 7515 example keys
//! from `../shared/vectors/rfc7515.json`, and GitHub webhook signatures.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::{BigUint, RsaPrivateKey};
use sha2::Sha256;

/// The issuer every benchmark token carries.
pub const ISSUER: &str = "https://bench.wasmgate.local";
/// The HMAC secret of the github-scheme variants.
pub const WEBHOOK_SECRET: &str = "bench-webhook-secret";

/// Signs a JWS signing input.
type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A signing key and the public JWKS that verifies it.
pub struct JwtKey {
    alg: &'static str,
    sign: SignFn,
    /// `{"keys": [public JWK]}` as a string.
    pub jwks: String,
}

fn example_jwk(alg: &str) -> serde_json::Value {
    let path = wasmgate_e2e::repo_root().join("../shared/vectors/rfc7515.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("rfc7515.json is JSON");
    doc["examples"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["alg"] == alg)
        .map(|e| e["jwk"].clone())
        .unwrap_or_else(|| panic!("no {alg} example in rfc7515.json"))
}

fn b64(jwk: &serde_json::Value, field: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwk[field].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("jwk.{field}: {e}"))
}

impl JwtKey {
    /// The RFC 7515 A.2 RSA-2048 key, signing RS256.
    pub fn rs256() -> Self {
        let jwk = example_jwk("RS256");
        let int = |f: &str| BigUint::from_bytes_be(&b64(&jwk, f));
        let key =
            RsaPrivateKey::from_components(int("n"), int("e"), int("d"), vec![int("p"), int("q")])
                .expect("valid RSA example key");
        let signer = RsaSigningKey::<Sha256>::new(key);
        let public = serde_json::json!({"kty": "RSA", "kid": "bench-rsa", "alg": "RS256", "use": "sig",
            "n": jwk["n"], "e": jwk["e"]});
        Self {
            alg: "RS256",
            sign: Box::new(move |input| signer.sign(input).to_vec()),
            jwks: serde_json::json!({"keys": [public]}).to_string(),
        }
    }

    /// The RFC 7515 A.3 P-256 key, signing ES256 (deterministic RFC 6979 signatures).
    pub fn es256() -> Self {
        let jwk = example_jwk("ES256");
        let signer =
            p256::ecdsa::SigningKey::from_slice(&b64(&jwk, "d")).expect("valid P-256 example key");
        let public = serde_json::json!({"kty": "EC", "kid": "bench-ec", "alg": "ES256", "use": "sig",
            "crv": "P-256", "x": jwk["x"], "y": jwk["y"]});
        Self {
            alg: "ES256",
            sign: Box::new(move |input| {
                let signature: p256::ecdsa::Signature = signer.sign(input);
                signature.to_bytes().to_vec()
            }),
            jwks: serde_json::json!({"keys": [public]}).to_string(),
        }
    }

    /// A token for the bench issuer and audience; `jti` makes each one unique.
    pub fn token(&self, jti: usize) -> String {
        let kid = if self.alg == "RS256" {
            "bench-rsa"
        } else {
            "bench-ec"
        };
        let header = serde_json::json!({"alg": self.alg, "typ": "JWT", "kid": kid});
        let claims = serde_json::json!({"iss": ISSUER, "sub": "bench-user", "aud": "bench",
            "exp": 4_102_444_800u64, "iat": 1_700_000_000u64, "jti": format!("bench-{jti}")});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = (self.sign)(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// `sha256=<hex>` of the body under [`WEBHOOK_SECRET`], as GitHub sends it.
pub fn github_signature(body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
