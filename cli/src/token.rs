//! `wasmgate token` and `wasmgate keys`: JWTs signed with jwt-auth's own signing code (feature
//! `sign`), from PEM or JWK keys; key pairs with their JWKS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jwt_auth::jws::Alg;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `wasmgate token`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    wasmgate keys --alg RS256 --kid k1 --out k1\n  \
    wasmgate token --key k1.pem --kid k1 --iss https://issuer.example --aud api --claim sub=alice --exp 1h\n  \
    wasmgate token --secret \"$HS_SECRET\" --kid demo --aud demo --claim scope=\"read admin\"\n\n\
    A --claim value is JSON when it parses as JSON (numbers, true, arrays, objects), else a string.")]
pub struct TokenArgs {
    /// Private key: PEM (PKCS#8, PKCS#1 RSA, SEC1 EC) or JSON (a private JWK or JWK set).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "secret",
        required_unless_present = "secret"
    )]
    key: Option<PathBuf>,
    /// HMAC secret text for HS256/HS384/HS512 (the bytes of the JWKS "oct" key).
    #[arg(long, value_name = "TEXT")]
    secret: Option<String>,
    /// Algorithm (RS256..512, PS256..512, ES256, ES384, ES512, EdDSA, HS256..512); default: the
    /// JWK's "alg", else the key type's usual one.
    #[arg(long)]
    alg: Option<String>,
    /// Key id: put in the header and, for a JWK set, selects the key.
    #[arg(long)]
    kid: Option<String>,
    /// Issuer claim (iss).
    #[arg(long)]
    iss: Option<String>,
    /// Subject claim (sub).
    #[arg(long)]
    sub: Option<String>,
    /// Audience claim (aud); repeat for several.
    #[arg(long)]
    aud: Vec<String>,
    /// Lifetime ("30s", "5m", "1h"); exp = now + this. A negative "-1h" mints an expired token.
    #[arg(long, default_value = "1h", allow_hyphen_values = true)]
    exp: String,
    /// Any claim, NAME=VALUE; repeat for several.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
}

/// Arguments of `wasmgate keys`.
#[derive(clap::Args)]
#[command(
    after_help = "Without --out, prints {\"jwks\": <public JWK set>, \"private_jwks\": \
    <private JWK set>}. With --out PREFIX, writes PREFIX.jwks.json (public, for the jwt-auth \
    provider's local_jwks), PREFIX.private.jwks.json and PREFIX.pem (private, for wasmgate token \
    --key; no PEM for HS*) and prints the public JWK set. For HS*, the \"public\" set holds the \
    secret itself: keep it private."
)]
pub struct KeysArgs {
    /// Algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512.
    #[arg(long, default_value = "RS256")]
    alg: String,
    /// Key id.
    #[arg(long, default_value = "wasmgate")]
    kid: String,
    /// RSA modulus size in bits.
    #[arg(long, default_value_t = 2048)]
    bits: usize,
    /// File name prefix to write the key files to.
    #[arg(long, value_name = "PREFIX")]
    out: Option<PathBuf>,
}

/// Mints a token and prints it.
pub fn run_token(args: &TokenArgs) -> Result<ExitCode, String> {
    let jwk = match (&args.key, &args.secret) {
        (_, Some(secret)) => oct_jwk(secret.as_bytes()),
        (Some(path), None) => load_key(&crate::read(path)?, args.kid.as_deref())?,
        (None, None) => return Err("give --key FILE or --secret TEXT".into()),
    };
    let alg = match args
        .alg
        .as_deref()
        .or_else(|| jwk.get("alg").and_then(Value::as_str))
    {
        Some(name) => name.to_string(),
        None => default_alg(&jwk)?.to_string(),
    };
    let parsed = Alg::parse(&alg).ok_or_else(|| format!("unknown algorithm {alg:?}"))?;
    let min = match parsed {
        Alg::HS256 => 32,
        Alg::HS384 => 48,
        Alg::HS512 => 64,
        _ => 0,
    };
    if let Some(secret) = &args.secret {
        if secret.len() < min {
            return Err(format!(
                "jwt-auth refuses {alg} keys shorter than {min} bytes: use a longer --secret"
            ));
        }
    }
    if !matches!(parsed, Alg::HS256 | Alg::HS384 | Alg::HS512) && jwk.get("d").is_none() {
        return Err("the key has no private part (\"d\"): give the private key".into());
    }
    let kid = args
        .kid
        .clone()
        .or_else(|| jwk.get("kid").and_then(Value::as_str).map(String::from));
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg));
    header.insert("typ".into(), json!("JWT"));
    if let Some(kid) = kid {
        header.insert("kid".into(), json!(kid));
    }
    let now = crate::now();
    let lifetime = signed_duration(&args.exp)?;
    let mut claims = Map::new();
    if let Some(iss) = &args.iss {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(sub) = &args.sub {
        claims.insert("sub".into(), json!(sub));
    }
    match args.aud.as_slice() {
        [] => {}
        [one] => {
            claims.insert("aud".into(), json!(one));
        }
        many => {
            claims.insert("aud".into(), json!(many));
        }
    }
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now.saturating_add_signed(lifetime)));
    for claim in &args.claims {
        let (name, value) = claim
            .split_once('=')
            .ok_or_else(|| format!("--claim {claim:?}: expected NAME=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        claims.insert(name.to_string(), value);
    }
    let token = jwt_auth::crypto::sign::sign(
        &Value::Object(jwk).to_string(),
        &Value::Object(header).to_string(),
        &Value::Object(claims).to_string(),
    )
    .map_err(|e| format!("cannot sign: {e}"))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `"1h"` or `"-1h"` in seconds.
fn signed_duration(text: &str) -> Result<i64, String> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let secs = wasmgate_core::config::Duration::parse(text)
        .map_err(|e| format!("--exp: {e}"))?
        .0
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| "--exp is too large".to_string())?;
    Ok(if negative { -secs } else { secs })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn oct_jwk(secret: &[u8]) -> Map<String, Value> {
    let mut jwk = Map::new();
    jwk.insert("kty".into(), json!("oct"));
    jwk.insert("k".into(), json!(b64(secret)));
    jwk
}

fn default_alg(jwk: &Map<String, Value>) -> Result<&'static str, String> {
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
    let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
    Ok(match (kty, crv) {
        ("RSA", _) => "RS256",
        ("EC", "P-256") => "ES256",
        ("EC", "P-384") => "ES384",
        ("EC", "P-521") => "ES512",
        ("OKP", "Ed25519") => "EdDSA",
        ("oct", _) => "HS256",
        _ => return Err(format!("unsupported key type {kty:?} {crv:?}: give --alg")),
    })
}

/// A private JWK from a PEM or JSON (JWK or JWK set) file.
fn load_key(bytes: &[u8], kid: Option<&str>) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the key file is not text".to_string())?;
    if text.contains("-----BEGIN") {
        return pem_jwk(text);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the key is neither PEM nor JSON: {e}"))?;
    let candidates: Vec<&Map<String, Value>> = match value.get("keys") {
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_object).collect(),
        _ => value.as_object().into_iter().collect(),
    };
    let chosen = match kid {
        Some(kid) => candidates
            .into_iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .ok_or_else(|| format!("no key with kid {kid:?} in the file"))?,
        None => candidates
            .into_iter()
            .next()
            .ok_or_else(|| "the JWK set has no keys".to_string())?,
    };
    Ok(chosen.clone())
}

fn pem_jwk(text: &str) -> Result<Map<String, Value>, String> {
    if text.contains("BEGIN RSA PRIVATE KEY") {
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(text).map_err(|e| format!("RSA PEM: {e}"))?;
        return Ok(rsa_jwk(&key));
    }
    if text.contains("BEGIN EC PRIVATE KEY") {
        if let Ok(key) = p256::SecretKey::from_sec1_pem(text) {
            return Ok(p256_jwk(&key));
        }
        let key = p384::SecretKey::from_sec1_pem(text).map_err(|e| format!("EC PEM: {e}"))?;
        return Ok(p384_jwk(&key));
    }
    if text.contains("BEGIN PRIVATE KEY") {
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
            return Ok(rsa_jwk(&key));
        }
        if let Ok(key) = p256::SecretKey::from_pkcs8_pem(text) {
            return Ok(p256_jwk(&key));
        }
        if let Ok(key) = p384::SecretKey::from_pkcs8_pem(text) {
            return Ok(p384_jwk(&key));
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            return Ok(ed25519_jwk(&key));
        }
        return Err("unsupported PKCS#8 key (RSA, P-256, P-384 and Ed25519 are)".into());
    }
    Err(
        "the PEM holds no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
            .into(),
    )
}

fn object(pairs: &[(&str, String)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect()
}

fn rsa_jwk(key: &rsa::RsaPrivateKey) -> Map<String, Value> {
    let mut pairs = vec![
        ("kty", "RSA".to_string()),
        ("n", b64(&key.n().to_bytes_be())),
        ("e", b64(&key.e().to_bytes_be())),
        ("d", b64(&key.d().to_bytes_be())),
    ];
    if let [p, q] = key.primes() {
        pairs.push(("p", b64(&p.to_bytes_be())));
        pairs.push(("q", b64(&q.to_bytes_be())));
        if let (Some(dp), Some(dq), Some(qi)) = (key.dp(), key.dq(), key.qinv()) {
            pairs.push(("dp", b64(&dp.to_bytes_be())));
            pairs.push(("dq", b64(&dq.to_bytes_be())));
            pairs.push(("qi", b64(&qi.to_bytes_be().1)));
        }
    }
    object(&pairs)
}

fn p256_jwk(key: &p256::SecretKey) -> Map<String, Value> {
    let point = key.public_key().to_encoded_point(false);
    let coord = |c: Option<&p256::FieldBytes>| c.map(|c| b64(c)).unwrap_or_default();
    object(&[
        ("kty", "EC".into()),
        ("crv", "P-256".into()),
        ("x", coord(point.x())),
        ("y", coord(point.y())),
        ("d", b64(&key.to_bytes())),
    ])
}

fn p384_jwk(key: &p384::SecretKey) -> Map<String, Value> {
    let point = key.public_key().to_encoded_point(false);
    let coord = |c: Option<&p384::FieldBytes>| c.map(|c| b64(c)).unwrap_or_default();
    object(&[
        ("kty", "EC".into()),
        ("crv", "P-384".into()),
        ("x", coord(point.x())),
        ("y", coord(point.y())),
        ("d", b64(&key.to_bytes())),
    ])
}

fn ed25519_jwk(key: &ed25519_dalek::SigningKey) -> Map<String, Value> {
    object(&[
        ("kty", "OKP".into()),
        ("crv", "Ed25519".into()),
        ("x", b64(key.verifying_key().as_bytes())),
        ("d", b64(&key.to_bytes())),
    ])
}

/// Makes a key pair and prints or writes it.
pub fn run_keys(args: &KeysArgs) -> Result<ExitCode, String> {
    let alg = Alg::parse(&args.alg).ok_or_else(|| format!("unknown algorithm {:?}", args.alg))?;
    let lf = rsa::pkcs8::LineEnding::LF;
    let (mut private, pem) = match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, args.bits)
                .map_err(|e| format!("RSA key generation: {e}"))?;
            let pem =
                rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, lf).map_err(|e| e.to_string())?;
            (rsa_jwk(&key), Some(pem.to_string()))
        }
        Alg::ES256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            let pem =
                p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, lf).map_err(|e| e.to_string())?;
            (p256_jwk(&key), Some(pem.to_string()))
        }
        Alg::ES384 => {
            let key = p384::SecretKey::random(&mut OsRng);
            let pem =
                p384::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, lf).map_err(|e| e.to_string())?;
            (p384_jwk(&key), Some(pem.to_string()))
        }
        Alg::EdDSA => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let pem = key.to_pkcs8_pem(lf).map_err(|e| e.to_string())?;
            (ed25519_jwk(&key), Some(pem.to_string()))
        }
        Alg::HS256 | Alg::HS384 | Alg::HS512 => {
            let len = match alg {
                Alg::HS256 => 32,
                Alg::HS384 => 48,
                _ => 64,
            };
            let mut secret = vec![0u8; len];
            OsRng.fill_bytes(&mut secret);
            (oct_jwk(&secret), None)
        }
        Alg::ES512 => return Err("keys does not make ES512 keys (use ES256 or ES384)".into()),
    };
    private.insert("kid".into(), json!(args.kid));
    private.insert("alg".into(), json!(args.alg));
    private.insert("use".into(), json!("sig"));
    let mut public = private.clone();
    if !matches!(alg, Alg::HS256 | Alg::HS384 | Alg::HS512) {
        for member in ["d", "p", "q", "dp", "dq", "qi"] {
            public.remove(member);
        }
    }
    let jwks = json!({"keys": [public]});
    let private_jwks = json!({"keys": [private]});
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match &args.out {
        None => println!(
            "{}",
            pretty(&json!({"jwks": jwks, "private_jwks": private_jwks}))
        ),
        Some(prefix) => {
            let with = |suffix: &str| {
                let mut name = prefix.clone().into_os_string();
                name.push(suffix);
                PathBuf::from(name)
            };
            let write = |path: PathBuf, text: String| {
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            };
            write(with(".jwks.json"), pretty(&jwks) + "\n")?;
            write(with(".private.jwks.json"), pretty(&private_jwks) + "\n")?;
            if let Some(pem) = pem {
                write(with(".pem"), pem)?;
            }
            println!("{}", pretty(&jwks));
        }
    }
    Ok(ExitCode::SUCCESS)
}
