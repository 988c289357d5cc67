//! Key forms and verification: the RFC 9421 B.2.6 Ed25519 key and signature, and P-256 and
//! RSA-PSS-SHA512 keys and signatures made by Node's crypto (`keys.json`, generated once).

use super::*;
use crate::verify::tests::vectors;

fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("keys.json")).unwrap()
}

#[test]
fn rfc9421_ed25519_key_and_signature() {
    let v = vectors("rfc9421.json");
    let b26 = &v["B.2.6_ed25519"];
    let key = parse_text(b26["public_key_spki_pem"].as_str().unwrap()).unwrap();
    assert_eq!(key.alg(), "ed25519");
    let base = b26["signature_base_exact"].as_str().unwrap();
    let sig_header = b26["Signature"].as_str().unwrap();
    let b64 = sig_header.split(':').nth(1).unwrap();
    let sig = STANDARD.decode(b64).unwrap();
    assert!(key.verify(base.as_bytes(), &sig));
    let mut tampered = base.as_bytes().to_vec();
    tampered[0] ^= 1;
    assert!(!key.verify(&tampered, &sig));
    assert!(!key.verify(base.as_bytes(), &sig[..63]));
    // The private key is refused where a public key is expected.
    let private = b26["private_key_pkcs8_pem"].as_str().unwrap();
    assert!(parse_text(private)
        .unwrap_err()
        .contains("never a private key"));
}

#[test]
fn ed25519_forms_agree() {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let raw = signing.verifying_key().to_bytes();
    let forms = [
        format!("whpk_{}", STANDARD.encode(raw)),
        hex::encode(raw),
        hex::encode(raw).to_ascii_uppercase(),
    ];
    for form in &forms {
        assert_eq!(
            parse_text(form).unwrap(),
            KeyMaterial::Ed25519(signing.verifying_key()),
            "{form}"
        );
    }
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(raw)});
    assert_eq!(
        parse_jwk(&jwk).unwrap(),
        KeyMaterial::Ed25519(signing.verifying_key())
    );
    for bad in ["whpk_AAAA", "whpk_!!", "abcd", "", &hex::encode([0u8; 31])] {
        assert!(parse_text(bad).is_err(), "{bad}");
    }
}

#[test]
fn p256_pem_and_jwk_verify_ieee_p1363_signatures() {
    let f = fixture();
    let msg = f["msg"].as_str().unwrap().as_bytes();
    let sig = STANDARD.decode(f["ec_sig"].as_str().unwrap()).unwrap();
    let pem = parse_text(f["ec_pem"].as_str().unwrap()).unwrap();
    let jwk = parse_jwk(&f["ec_jwk"]).unwrap();
    assert_eq!(pem, jwk);
    assert_eq!(pem.alg(), "ecdsa-p256-sha256");
    assert!(pem.verify(msg, &sig));
    assert!(!pem.verify(b"other", &sig));
    // A DER-encoded signature is not the RFC 9421 form.
    assert!(!pem.verify(msg, &sig[..40]));
}

#[test]
fn rsa_pss_sha512_from_spki_pkcs1_and_jwk() {
    let f = fixture();
    let msg = f["msg"].as_str().unwrap().as_bytes();
    let sig = STANDARD.decode(f["rsa_sig"].as_str().unwrap()).unwrap();
    let spki = parse_text(f["rsa_pem"].as_str().unwrap()).unwrap();
    let pkcs1 = parse_text(f["rsa_pkcs1"].as_str().unwrap()).unwrap();
    let jwk = parse_jwk(&f["rsa_jwk"]).unwrap();
    assert_eq!(spki, pkcs1);
    assert_eq!(spki, jwk);
    assert_eq!(spki.alg(), "rsa-pss-sha512");
    assert!(spki.verify(msg, &sig));
    assert!(!spki.verify(b"other", &sig));
    let mut flipped = sig.clone();
    flipped[10] ^= 1;
    assert!(!spki.verify(msg, &flipped));
    assert!(!spki.verify(msg, &[]));
    // Node's and OpenSSL's default salt (the largest) is accepted; other salts and PKCS #1 v1.5
    // signatures are not this algorithm.
    let decode = |name: &str| STANDARD.decode(f[name].as_str().unwrap()).unwrap();
    assert!(spki.verify(msg, &decode("rsa_sig_max_salt")));
    assert!(!spki.verify(msg, &decode("rsa_sig_salt_20")));
    assert!(!spki.verify(msg, &decode("rsa_sig_pkcs1v15")));
    // Keys under 2048 bits are refused.
    let small = parse_text(f["small_rsa"].as_str().unwrap()).unwrap_err();
    assert!(small.contains("1024 bits"), "{small}");
}

#[test]
fn wrong_key_types_and_private_jwks_are_refused() {
    let f = fixture();
    let mut private = f["ec_jwk"].clone();
    private["d"] = serde_json::json!("AAAA");
    assert!(parse_jwk(&private).unwrap_err().contains("private"));
    for bad in [
        serde_json::json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
        serde_json::json!({"kty": "oct", "k": "AAAA"}),
        serde_json::json!("not an object"),
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
    ] {
        assert!(parse_jwk(&bad).is_err(), "{bad}");
    }
    // Two keys in one PEM text are refused.
    let two = format!(
        "{}\n{}",
        f["ec_pem"].as_str().unwrap(),
        f["ec_pem"].as_str().unwrap()
    );
    assert!(parse_text(&two).is_err());
}
