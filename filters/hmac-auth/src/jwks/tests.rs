//! Key sets as fetched: what is used, skipped or refused, and `jwks` configuration errors.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

fn ed(kid: &str) -> serde_json::Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid})
}

fn fixtures() -> serde_json::Value {
    serde_json::from_str(include_str!("../pubkey/keys.json")).unwrap()
}

fn with(mut jwk: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    jwk[field] = value;
    jwk
}

fn doc(keys: &[serde_json::Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn ids(text: &str) -> Result<Vec<String>, String> {
    parse_document(text, 8).map(|keys| keys.into_iter().map(|k| k.id).collect())
}

#[test]
fn usable_keys_are_kept_by_kid_with_their_algorithm() {
    let f = fixtures();
    let ec = with(f["ec_jwk"].clone(), "kid", "ec".into());
    let rsa = with(f["rsa_jwk"].clone(), "kid", "rsa".into());
    let keys = parse_document(&doc(&[ed("ed"), ec, rsa]), 8).unwrap();
    let algs: Vec<(&str, &str)> = keys.iter().map(|k| (k.id.as_str(), k.key.alg())).collect();
    assert_eq!(
        algs,
        [
            ("ed", "ed25519"),
            ("ec", "ecdsa-p256-sha256"),
            ("rsa", "rsa-pss-sha512")
        ]
    );
}

#[test]
fn keys_published_for_another_use_or_algorithm_are_skipped() {
    let f = fixtures();
    let rsa = with(f["rsa_jwk"].clone(), "kid", "rs256".into());
    let skipped = [
        with(ed("no-kid"), "kid", serde_json::Value::Null),
        with(ed("enc"), "use", "enc".into()),
        with(ed("ops"), "key_ops", json!(["sign"])),
        with(ed("es256"), "alg", "ES256".into()),
        with(rsa, "alg", "RS256".into()),
        with(ed("bad\"kid"), "kid", "bad\"kid".into()),
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        json!({"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x"}),
    ];
    let mut keys = skipped.to_vec();
    keys.push(with(ed("ok"), "alg", "EdDSA".into()));
    let kept = parse_document(&doc(&keys), 16).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id, "ok");
    assert_eq!(ids(&doc(&skipped)).unwrap_err(), "no usable key");
}

#[test]
fn documents_over_their_bounds_or_with_bad_keys_are_refused_whole() {
    let f = fixtures();
    let nine: Vec<_> = (0..9).map(|i| ed(&format!("k{i}"))).collect();
    assert!(ids(&doc(&nine)).unwrap_err().contains("max_keys"));
    assert!(ids(&doc(&[ed("a"), ed("a")]))
        .unwrap_err()
        .contains("two keys"));
    assert!(ids(&doc(&[with(ed("a"), "d", "AAAA".into())]))
        .unwrap_err()
        .contains("private"));
    assert!(ids(&doc(&[with(ed("a"), "x", "AAAA".into())])).is_err());
    let big_e = with(
        with(f["rsa_jwk"].clone(), "kid", "r".into()),
        "e",
        URL_SAFE_NO_PAD.encode([1, 0, 0, 0, 1]).into(),
    );
    assert!(ids(&doc(&[big_e])).unwrap_err().contains("exponent"));
    let small =
        json!({"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode([0xc5; 128]), "e": "AQAB"});
    assert!(ids(&doc(&[small])).is_err(), "RSA under 2048 bits");
    let huge =
        json!({"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode([0xc5; 640]), "e": "AQAB"});
    assert!(ids(&doc(&[huge])).is_err(), "RSA over 4096 bits");
    for text in ["", "[]", "{\"keys\": {}}", "<html>"] {
        assert!(ids(text).is_err(), "{text}");
    }
}

fn source(value: serde_json::Value) -> Result<JwksSource, ConfigError> {
    let raw: RawJwks = serde_json::from_value(value).unwrap();
    compile("jwks", &raw)
}

#[test]
fn a_jwks_block_compiles_with_defaults() {
    let s = source(
        json!({"uri": "https://idp.example.com:8443/.well-known/jwks.json",
                          "cluster": "idp"}),
    )
    .unwrap();
    assert_eq!(s.authority, "idp.example.com:8443");
    assert_eq!(s.path, "/.well-known/jwks.json");
    assert_eq!(s.scheme, "https");
    assert_eq!(
        (s.timeout_ms, s.cache_ms, s.max_stale_ms),
        (DEFAULT_TIMEOUT_MS, DEFAULT_CACHE_MS, None)
    );
    assert_eq!(
        (s.max_bytes, s.max_keys),
        (DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS)
    );
    let bare = source(json!({"uri": "http://idp", "cluster": "idp"})).unwrap();
    assert_eq!((bare.authority.as_str(), bare.path.as_str()), ("idp", "/"));
}

#[test]
fn bad_jwks_blocks_are_refused_with_their_path() {
    let cases = [
        (
            json!({"uri": "idp.example.com/jwks", "cluster": "idp"}),
            "jwks.uri",
        ),
        (
            json!({"uri": "ftp://idp/jwks", "cluster": "idp"}),
            "jwks.uri",
        ),
        (
            json!({"uri": "https:///jwks", "cluster": "idp"}),
            "jwks.uri",
        ),
        (
            json!({"uri": "https://user@idp/jwks", "cluster": "idp"}),
            "jwks.uri",
        ),
        (
            json!({"uri": "https://idp/jw ks", "cluster": "idp"}),
            "jwks.uri",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": " "}),
            "jwks.cluster",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "timeout": "11s"}),
            "jwks.timeout",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "timeout": "0s"}),
            "jwks.timeout",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "cache_duration": "10ms"}),
            "jwks.cache_duration",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "max_bytes": 0}),
            "jwks.max_bytes",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "max_bytes": 2_000_000}),
            "jwks.max_bytes",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "max_keys": 0}),
            "jwks.max_keys",
        ),
        (
            json!({"uri": "https://idp/jwks", "cluster": "i", "max_keys": 1000}),
            "jwks.max_keys",
        ),
    ];
    for (block, path) in cases {
        let err = source(block.clone()).unwrap_err();
        assert_eq!(err.path, path, "{block}: {err:?}");
    }
}

#[test]
fn jwks_in_a_configuration_is_checked_where_it_is_written() {
    let parse = |v: serde_json::Value| crate::config::parse(v.to_string().as_bytes());
    let jwks = json!({"uri": "https://idp.example.com/jwks.json", "cluster": "idp"});
    // Missing cluster: the JSON path of the block.
    let err =
        parse(json!({"scheme": "http_signature", "jwks": {"uri": "https://idp/j"}})).unwrap_err();
    assert_eq!(err.path, "jwks.cluster", "{err:?}");
    // Unknown fields are refused.
    let err = parse(json!({"scheme": "http_signature",
                           "jwks": {"uri": "https://idp/j", "cluster": "c", "url": "x"}}))
    .unwrap_err();
    assert!(err.path.starts_with("jwks"), "{err:?}");
    // Keys from a JWKS alone are enough for http_signature.
    let config = parse(json!({"scheme": "http_signature", "jwks": jwks})).unwrap();
    assert_eq!(config.jwks.len(), 1);
    assert_eq!(config.policies.get(None).unwrap().jwks, Some(0));
    // Nothing uses it: refused rather than silently ignored.
    let err = parse(
        json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                           "jwks": jwks}),
    )
    .unwrap_err();
    assert_eq!(err.path, "jwks");
    let err = parse(
        json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                           "rules": [{"match": {}, "jwks": jwks}]}),
    )
    .unwrap_err();
    assert_eq!(err.path, "rules[0].jwks");
    let err = parse(
        json!({"scheme": "http_signature", "jwks": {"uri": "x", "cluster": "c"},
                           "rules": [{"match": {}, "scheme": "github"}]}),
    )
    .unwrap_err();
    assert_eq!(err.path, "jwks.uri");
    let err = parse(json!({"scheme": "http_signature", "secrets": [{"id": "a", "value": "s"}],
                           "rules": [{"match": {}, "jwks": {"uri": "https://i/j", "cluster": ""}}]}))
    .unwrap_err();
    assert_eq!(err.path, "rules[0].jwks.cluster");
    // A rule inherits the top-level source; the same block written twice is fetched once.
    let config = parse(json!({"scheme": "http_signature", "jwks": jwks,
                              "rules": [{"match": {"path_prefix": "/a"}},
                                        {"match": {"path_prefix": "/b"}, "jwks": jwks},
                                        {"match": {"path_prefix": "/c"},
                                         "jwks": {"uri": "https://other/j", "cluster": "o"}}]}))
    .unwrap();
    assert_eq!(config.jwks.len(), 2);
    let sources: Vec<_> = (0..3)
        .map(|i| config.policies.get(Some(i)).unwrap().jwks)
        .collect();
    assert_eq!(sources, [Some(0), Some(0), Some(1)]);
}
