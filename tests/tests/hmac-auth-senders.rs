//! hmac-auth end-to-end with signatures made by the senders' own libraries (Node packages in
//! `tests/webhook-senders/`, installed with `npm ci` when absent): Standard Webhooks `v1`
//! (`standardwebhooks`) and `v1a` (Ed25519, `tweetnacl`), Svix-branded headers (`svix`), Discord
//! interactions (`tweetnacl`, checked with `discord-interactions`), RFC 9421 `ed25519`,
//! `ecdsa-p256-sha256` and `rsa-pss-sha512` (`http-message-signatures`); provider handshakes
//! (Slack, Zoom, Discord PING) answered only when signed; the matched key id forwarded (a forged
//! one removed); credentials hidden; several signatures in one header; duplicates acknowledged;
//! and outbound signing (`"mode": "sign"`), checked by the same libraries' verifiers
//! (`standardwebhooks`, `tweetnacl`, `@octokit/webhooks-methods`, `http-message-signatures`).

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Response, Upstream};

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_OLD_SECRET: &str = "whsec_cHJldmlvdXMtc3RhbmRhcmQta2V5";
const SLACK_SECRET: &str = "slack-signing-secret";
const ZOOM_SECRET: &str = "zoom-secret-token";
const KEY_ID_HEADER: &str = "x-wasmgate-key-id";

fn senders_dir() -> PathBuf {
    repo_root().join("tests/webhook-senders")
}

/// Installs the senders' libraries once (`npm ci`, from the committed lock file) when one of
/// the packages of `package.json` is not installed.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(senders_dir().join("package.json")).unwrap(),
        )
        .unwrap();
        let installed = manifest["dependencies"]
            .as_object()
            .unwrap()
            .keys()
            .all(|name| senders_dir().join("node_modules").join(name).is_dir());
        if installed {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(senders_dir())
            .status()
            .expect("npm (Node.js) is needed for the senders' libraries");
        assert!(status.success(), "npm ci failed in tests/webhook-senders");
    });
}

/// One job for `sign.js` (see there), its JSON answer.
fn node(job: serde_json::Value) -> serde_json::Value {
    install();
    let output = Command::new("node")
        .arg(senders_dir().join("sign.js"))
        .arg(job.to_string())
        .output()
        .expect("node (Node.js) is needed for the senders' libraries");
    assert!(
        output.status.success(),
        "sign.js {job}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

fn pairs(value: &serde_json::Value) -> Vec<(String, String)> {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn post(envoy: &Envoy, path: &str, headers: &[(String, String)], body: &str) -> Response {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    envoy.client().send("POST", path, &refs, body.as_bytes())
}

#[track_caller]
fn assert_reply(response: &Response, status: u16, error: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert_eq!(response.json()["error"], error, "{what}");
}

/// A request the upstream received, verified by `key_id`.
#[track_caller]
fn assert_forwarded(response: &Response, key_id: &str, what: &str) -> serde_json::Value {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    let echo = response.json();
    assert_eq!(echo["headers"][KEY_ID_HEADER], key_id, "{what}: {echo}");
    echo
}

struct Setup {
    keys: serde_json::Value,
    upstream: Upstream,
    envoy: Envoy,
}

fn start() -> Setup {
    start_with(verify_config)
}

fn start_with(config: impl Fn(&serde_json::Value) -> serde_json::Value) -> Setup {
    let keys = node(serde_json::json!({"kind": "keys"}));
    let config = config(&keys);
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "hmac-auth-hold.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config.to_string()),
            ("FIXED_ENV", "unused".to_string()),
        ],
        EnvoyOptions::default(),
    );
    Setup {
        keys,
        upstream,
        envoy,
    }
}

fn verify_config(keys: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "scheme": "standard_webhooks",
        "secrets": [{"id": "sw-hmac", "value": SW_SECRET}],
        "public_keys": [{"id": "sw-ed", "value": keys["ed25519"]["whpk"]}],
        "key_id_header": KEY_ID_HEADER,
        "hold_headers": true,
        "max_body_bytes": 4096,
        "rules": [
            {"match": {"path_prefix": "/sw-hidden"}, "hide_credentials": true},
            {"match": {"path_prefix": "/discord"}, "scheme": "discord", "handshake": true,
             "public_keys": [{"id": "discord-app", "value": keys["ed25519"]["hex"]}]},
            {"match": {"path_prefix": "/slack"}, "scheme": "slack", "handshake": true,
             "secrets": [{"id": "slack", "value": SLACK_SECRET}]},
            {"match": {"path_prefix": "/zoom"}, "scheme": "zoom", "handshake": true,
             "secrets": [{"id": "zoom", "value": ZOOM_SECRET}]},
            {"match": {"path_prefix": "/rfc9421"}, "scheme": "http_signature",
             "secrets": [{"id": "shared", "value": "hmac-shared-secret"}],
             "public_keys": [
                {"id": "ed", "value": keys["ed25519"]["pem"]},
                {"id": "ec", "jwk": keys["p256"]["jwk"]},
                {"id": "rsa", "value": keys["rsa"]["pem"]}]},
            {"match": {"path_prefix": "/twitch"}, "scheme": "twitch", "handshake": true,
             "secrets": [{"id": "twitch", "value": "twitch-eventsub-secret"}]},
            {"match": {"path_prefix": "/gitlab"}, "scheme": "gitlab", "hide_credentials": true,
             "secrets": [{"id": "gitlab", "value": "gitlab-token"}]},
            {"match": {"path_prefix": "/twilio"}, "scheme": "twilio",
             "secrets": [{"id": "twilio", "value": "twilio-auth-token"}],
             "twilio": {"public_url": "https://hooks.example.com"}},
            {"match": {"path_prefix": "/custom"}, "scheme": "custom",
             "secrets": [{"id": "new", "value": SW_SECRET, "encoding": "base64"},
                         {"id": "old", "value": SW_OLD_SECRET, "encoding": "base64"}],
             "custom": {"signature_header": "webhook-signature", "signature_prefix": "v1,",
                        "encoding": "base64", "timestamp_header": "webhook-timestamp",
                        "id_header": "webhook-id", "signed_payload": "{id}.{timestamp}.{body}"}},
        ],
    })
}

fn standard(kind: &str, secret: &str, id: &str, ts: u64, body: &str) -> Vec<(String, String)> {
    pairs(&node(serde_json::json!({
        "kind": kind, "secret": secret, "id": id, "ts": ts, "body": body,
    })))
}

fn v1a(setup: &Setup, id: &str, ts: u64, body: &str) -> String {
    node(serde_json::json!({
        "kind": "v1a", "seed": setup.keys["ed25519"]["seed"], "id": id, "ts": ts, "body": body,
    }))["signature"]
        .as_str()
        .unwrap()
        .to_string()
}

fn signature(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(n, _)| n == "webhook-signature")
        .unwrap()
        .1
        .clone()
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        headers.iter().filter(|(n, _)| n != name).cloned().collect();
    out.push((name.to_string(), value.to_string()));
    out
}

#[test]
fn standard_webhooks_v1_v1a_svix_and_duplicates() {
    let s = start();
    let t = now();
    let body = r#"{"type": "invoice.paid", "n": 1}"#;

    // v1 from the standardwebhooks library; a forged key-id header is replaced.
    let headers = standard("standardwebhooks", SW_SECRET, "msg_1", t, body);
    let forged = with(&headers, KEY_ID_HEADER, "sw-ed");
    let echo = assert_forwarded(&post(&s.envoy, "/sw", &forged, body), "sw-hmac", "v1");
    assert_eq!(echo["body"], body);
    // What the upstream received still verifies with the sender's library.
    let received: serde_json::Value = echo["headers"].clone();
    let check = node(serde_json::json!({
        "kind": "verify_standardwebhooks", "secret": SW_SECRET, "body": body,
        "headers": {"webhook-id": received["webhook-id"], "webhook-timestamp": received["webhook-timestamp"],
                    "webhook-signature": received["webhook-signature"]},
    }));
    assert_eq!(check["ok"], true, "{check}");

    // The same delivery again: acknowledged, not forwarded.
    let duplicate = post(&s.envoy, "/sw", &headers, body);
    assert_eq!(duplicate.status, 200, "{}", duplicate.text());
    assert_eq!(duplicate.header("x-wasmgate-duplicate"), Some("true"));
    assert_eq!(s.upstream.attempts(), 1);

    // v1a alone (Ed25519, the whpk_ key).
    let body2 = r#"{"type": "invoice.paid", "n": 2}"#;
    let sig = v1a(&s, "msg_2", t, body2);
    let headers2 = with(
        &standard("standardwebhooks", SW_SECRET, "msg_2", t, body2),
        "webhook-signature",
        &sig,
    );
    assert_forwarded(&post(&s.envoy, "/sw", &headers2, body2), "sw-ed", "v1a");

    // Svix-branded headers from the svix library.
    let body3 = r#"{"type": "invoice.paid", "n": 3}"#;
    let svix = standard("svix", SW_SECRET, "msg_3", t, body3);
    assert!(svix.iter().any(|(n, _)| n == "svix-signature"));
    assert_forwarded(&post(&s.envoy, "/sw", &svix, body3), "sw-hmac", "svix");

    // A valid v1 next to a forged v1a passes; forged entries of both versions do not.
    let body4 = r#"{"type": "invoice.paid", "n": 4}"#;
    let headers4 = standard("standardwebhooks", SW_SECRET, "msg_4", t, body4);
    let valid_v1 = headers4
        .iter()
        .find(|(n, _)| n == "webhook-signature")
        .unwrap()
        .1
        .clone();
    let forged_v1a = v1a(&s, "msg_4", t, "another body");
    let forged_v1 = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    let both_forged = with(
        &headers4,
        "webhook-signature",
        &format!("{forged_v1a} {forged_v1}"),
    );
    assert_reply(
        &post(&s.envoy, "/sw", &both_forged, body4),
        401,
        "invalid_signature",
        "forged v1a and v1",
    );
    let mixed = with(
        &headers4,
        "webhook-signature",
        &format!("{forged_v1a} {valid_v1}"),
    );
    assert_forwarded(
        &post(&s.envoy, "/sw", &mixed, body4),
        "sw-hmac",
        "forged v1a, valid v1",
    );
    // A header with many entries is refused before any verification.
    let body5 = r#"{"type": "invoice.paid", "n": 5}"#;
    let headers5 = standard("standardwebhooks", SW_SECRET, "msg_5", t, body5);
    let many = format!("{} {}", [forged_v1; 10].join(" "), signature(&headers5));
    assert_reply(
        &post(
            &s.envoy,
            "/sw",
            &with(&headers5, "webhook-signature", &many),
            body5,
        ),
        400,
        "malformed_signature",
        "eleven signatures",
    );

    // hide_credentials: the upstream sees the id and timestamp, not the signature.
    let body6 = r#"{"type": "invoice.paid", "n": 6}"#;
    let headers6 = standard("standardwebhooks", SW_SECRET, "msg_6", t, body6);
    let echo = assert_forwarded(
        &post(&s.envoy, "/sw-hidden", &headers6, body6),
        "sw-hmac",
        "hidden",
    );
    assert!(echo["headers"]["webhook-signature"].is_null(), "{echo}");
    assert_eq!(echo["headers"]["webhook-id"], "msg_6");

    assert_eq!(s.upstream.attempts(), 5);
    assert_eq!(
        s.envoy.metric(
            "wasmgate_hmac_auth_key_matched_total",
            &[("key_id", "sw-ed")]
        ),
        1
    );
    assert_eq!(
        s.envoy.metric("wasmgate_hmac_auth_duplicates_total", &[]),
        1
    );
}

#[test]
fn custom_header_with_two_rotated_signatures() {
    let s = start();
    let t = now();
    let body = r#"{"type": "rotation"}"#;
    // During a rotation the sender signs with both secrets, space-separated (the issue's case).
    let new = standard("standardwebhooks", SW_SECRET, "msg_r", t, body);
    let old = standard("standardwebhooks", SW_OLD_SECRET, "msg_r", t, body);
    let header = format!("{} {}", signature(&old), signature(&new));
    assert_forwarded(
        &post(
            &s.envoy,
            "/custom",
            &with(&new, "webhook-signature", &header),
            body,
        ),
        "new",
        "rotation header",
    );
    // Only the old secret's signature (next to a forged one): the old secret matched.
    let body = r#"{"type": "rotation", "n": 2}"#;
    let old = standard("standardwebhooks", SW_OLD_SECRET, "msg_r2", now(), body);
    let header = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {}",
        signature(&old)
    );
    assert_forwarded(
        &post(
            &s.envoy,
            "/custom",
            &with(&old, "webhook-signature", &header),
            body,
        ),
        "old",
        "old secret only",
    );
}

fn discord(s: &Setup, ts: u64, body: &str) -> Vec<(String, String)> {
    let headers = node(serde_json::json!({
        "kind": "discord", "seed": s.keys["ed25519"]["seed"], "ts": ts, "body": body,
    }));
    // Discord's own library accepts what the test sends.
    let check = node(serde_json::json!({
        "kind": "verify_discord", "public": s.keys["ed25519"]["hex"], "headers": headers,
        "body": body,
    }));
    assert_eq!(check["ok"], true);
    pairs(&headers)
}

#[test]
fn discord_ping_is_answered_only_when_signed() {
    let s = start();
    let t = now();
    let ping = r#"{"type": 1, "id": "ping-1"}"#;
    let pong = post(
        &s.envoy,
        "/discord/interactions",
        &discord(&s, t, ping),
        ping,
    );
    assert_eq!(pong.status, 200, "{}", pong.text());
    assert_eq!(pong.json(), serde_json::json!({"type": 1}));
    // Unsigned, or signed over another body: refused, never answered.
    assert_reply(
        &post(&s.envoy, "/discord/interactions", &[], ping),
        401,
        "missing_signature",
        "unsigned ping",
    );
    let other = discord(&s, t, r#"{"type": 1, "id": "other"}"#);
    assert_reply(
        &post(&s.envoy, "/discord/interactions", &other, ping),
        401,
        "invalid_signature",
        "ping with another body's signature",
    );
    // A signature by another key (an RFC 9421 Ed25519 key is not the Discord app key here).
    let forged: Vec<(String, String)> = other
        .iter()
        .map(|(n, v)| match n.as_str() {
            "x-signature-ed25519" => (n.clone(), "00".repeat(64)),
            _ => (n.clone(), v.clone()),
        })
        .collect();
    assert_reply(
        &post(&s.envoy, "/discord/interactions", &forged, ping),
        401,
        "invalid_signature",
        "zero signature",
    );
    // A command interaction is forwarded with the key id.
    let command = r#"{"type": 2, "id": "cmd-1"}"#;
    assert_forwarded(
        &post(
            &s.envoy,
            "/discord/interactions",
            &discord(&s, t, command),
            command,
        ),
        "discord-app",
        "command",
    );
    assert_eq!(
        s.upstream.attempts(),
        1,
        "only the command reached the upstream"
    );
    assert_eq!(
        s.envoy.metric("wasmgate_hmac_auth_handshakes_total", &[]),
        1
    );
}

#[test]
fn slack_and_zoom_handshakes_are_answered_only_when_signed() {
    let s = start();
    let t = now().to_string();
    let slack = |body: &str, secret: &str| {
        vec![
            ("x-slack-request-timestamp".to_string(), t.clone()),
            (
                "x-slack-signature".to_string(),
                format!(
                    "v0={}",
                    hmac_hex(secret.as_bytes(), format!("v0:{t}:{body}").as_bytes())
                ),
            ),
            ("content-type".to_string(), "application/json".to_string()),
        ]
    };
    let challenge = r#"{"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}"#;
    let answered = post(
        &s.envoy,
        "/slack/events",
        &slack(challenge, SLACK_SECRET),
        challenge,
    );
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(
        answered.json(),
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    assert_reply(
        &post(
            &s.envoy,
            "/slack/events",
            &slack(challenge, "wrong"),
            challenge,
        ),
        401,
        "invalid_signature",
        "slack challenge with a wrong secret",
    );
    assert_reply(
        &post(&s.envoy, "/slack/events", &[], challenge),
        401,
        "missing_signature",
        "unsigned slack challenge",
    );

    let zoom = |body: &str| {
        vec![
            ("x-zm-request-timestamp".to_string(), t.clone()),
            (
                "x-zm-signature".to_string(),
                format!(
                    "v0={}",
                    hmac_hex(ZOOM_SECRET.as_bytes(), format!("v0:{t}:{body}").as_bytes())
                ),
            ),
        ]
    };
    let validation = r#"{"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1654503849680, "event": "endpoint.url_validation"}"#;
    let answered = post(&s.envoy, "/zoom/webhook", &zoom(validation), validation);
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(
        answered.json(),
        serde_json::json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": hmac_hex(ZOOM_SECRET.as_bytes(), b"qgg8vlvZRS6UYooatFL8Aw"),
        })
    );
    let event = r#"{"event": "meeting.started", "payload": {}}"#;
    assert_forwarded(
        &post(&s.envoy, "/zoom/webhook", &zoom(event), event),
        "zoom",
        "zoom event",
    );
    assert_eq!(s.upstream.attempts(), 1);
    assert_eq!(
        s.envoy.metric("wasmgate_hmac_auth_handshakes_total", &[]),
        2
    );
}

#[test]
fn rfc9421_asymmetric_signatures_from_http_message_signatures() {
    let s = start();
    let port = s.envoy.port("main");
    let body = r#"{"event": "order.created"}"#;
    let digest = format!(
        "sha-256=:{}:",
        STANDARD.encode(Sha256::digest(body.as_bytes()))
    );
    let sign = |alg: &str, private: &serde_json::Value, keyid: &str, nonce: &str| {
        let signed = node(serde_json::json!({
            "kind": "httpsig", "alg": alg, "key": private, "keyid": keyid, "method": "POST",
            "url": format!("http://127.0.0.1:{port}/rfc9421/orders"),
            "headers": {"content-digest": digest},
            "fields": ["@method", "@authority", "@path", "content-digest"],
            "ts": now(), "nonce": nonce,
        }));
        vec![
            ("content-digest".to_string(), digest.clone()),
            (
                "signature".to_string(),
                signed["signature"].as_str().unwrap().to_string(),
            ),
            (
                "signature-input".to_string(),
                signed["signature-input"].as_str().unwrap().to_string(),
            ),
        ]
    };
    let cases = [
        ("ed25519", &s.keys["ed25519"]["private_pem"], "ed"),
        ("ecdsa-p256-sha256", &s.keys["p256"]["private_pem"], "ec"),
        ("rsa-pss-sha512", &s.keys["rsa"]["private_pem"], "rsa"),
    ];
    for (alg, private, keyid) in cases {
        let headers = sign(alg, private, keyid, &format!("n-{alg}"));
        assert_forwarded(
            &post(&s.envoy, "/rfc9421/orders", &headers, body),
            keyid,
            alg,
        );
        // The same signature on another body: Content-Digest no longer matches.
        let headers = sign(alg, private, keyid, &format!("t-{alg}"));
        assert_reply(
            &post(
                &s.envoy,
                "/rfc9421/orders",
                &headers,
                r#"{"event": "order.voided"}"#,
            ),
            401,
            "invalid_signature",
            &format!("{alg} tampered"),
        );
    }
    // Signed with the RSA private key, named as the Ed25519 key: the key decides the algorithm.
    let wrong = sign(
        "rsa-pss-sha512",
        &s.keys["rsa"]["private_pem"],
        "ed",
        "wrong-key",
    );
    assert_reply(
        &post(&s.envoy, "/rfc9421/orders", &wrong, body),
        401,
        "invalid_signature",
        "alg not the key's",
    );
    // An HMAC keyed with the Ed25519 public key's PEM, named as that key (algorithm confusion).
    let confused = sign("hmac-sha256", &s.keys["ed25519"]["pem"], "ed", "confused");
    assert_reply(
        &post(&s.envoy, "/rfc9421/orders", &confused, body),
        401,
        "invalid_signature",
        "hmac with the public key",
    );
    // A P-256 signature under the Ed25519 key's id, without alg.
    assert_eq!(s.upstream.attempts(), 3);
}

#[test]
fn gitlab_token_and_twilio_form_signature() {
    let s = start();
    let body = r#"{"object_kind": "push"}"#;
    let token = |t: &str| vec![("x-gitlab-token".to_string(), t.to_string())];
    let echo = assert_forwarded(
        &post(&s.envoy, "/gitlab/hook", &token("gitlab-token"), body),
        "gitlab",
        "gitlab",
    );
    assert!(
        echo["headers"]["x-gitlab-token"].is_null(),
        "the token is hidden: {echo}"
    );
    for bad in ["gitlab-toke", "gitlab-tokenx", ""] {
        let response = post(&s.envoy, "/gitlab/hook", &token(bad), body);
        assert_eq!(response.status, 401, "{bad:?}: {}", response.text());
    }
    // The same push again: acknowledged as a duplicate.
    let again = post(&s.envoy, "/gitlab/hook", &token("gitlab-token"), body);
    assert_eq!(again.header("x-wasmgate-duplicate"), Some("true"));

    // Twilio signs the public URL (not Envoy's view of it) and the sorted form fields.
    let form = "To=%2B18005551212&From=%2B14158675310&Body=Hello&MessageSid=SM1";
    let signed = node(serde_json::json!({
        "kind": "twilio", "token": "twilio-auth-token",
        "url": "https://hooks.example.com/twilio/sms?tenant=7",
        "params": {"To": "+18005551212", "From": "+14158675310", "Body": "Hello", "MessageSid": "SM1"},
    }));
    let mut headers = pairs(&signed);
    headers.push((
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    ));
    assert_forwarded(
        &post(&s.envoy, "/twilio/sms?tenant=7", &headers, form),
        "twilio",
        "twilio",
    );
    assert_reply(
        &post(&s.envoy, "/twilio/sms?tenant=8", &headers, form),
        401,
        "invalid_signature",
        "twilio other query",
    );
    assert_reply(
        &post(
            &s.envoy,
            "/twilio/sms?tenant=7",
            &headers,
            &form.replace("Hello", "Bye"),
        ),
        401,
        "invalid_signature",
        "twilio changed field",
    );
    assert_eq!(s.upstream.attempts(), 2);
}

#[test]
fn outbound_signing_verified_by_the_senders_libraries() {
    let s = start_with(|keys| {
        serde_json::json!({
            "mode": "sign",
            "hold_headers": true,
            "scheme": "github",
            "secrets": [{"id": "gh", "value": "github-outbound-secret"}],
            "rules": [
                {"match": {"path_prefix": "/sw"}, "scheme": "standard_webhooks",
                 "secrets": [{"id": "sw", "value": SW_SECRET}],
                 "signing_keys": [{"id": "sw-ed", "value": format!("whsk_{}",
                     STANDARD.encode(hex::decode(keys["ed25519"]["seed"].as_str().unwrap()).unwrap()))}]},
                {"match": {"path_prefix": "/rfc-ed"}, "scheme": "http_signature",
                 "signing_keys": [{"id": "ed", "value": keys["ed25519"]["private_pem"]}]},
                {"match": {"path_prefix": "/rfc-hmac"}, "scheme": "http_signature",
                 "secrets": [{"id": "shared", "value": "rfc-hmac-secret"}]},
            ],
        })
    });
    let port = s.envoy.port("main");
    let body = r#"{"event": "order.created", "id": 42}"#;
    let send = |path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let response = post(&s.envoy, path, &headers, body);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let echo = response.json();
        assert_eq!(echo["body"], body);
        echo["headers"].clone()
    };

    // GitHub: a forged signature from the client is replaced.
    let got = send("/gh/hook", &[("x-hub-signature-256", "sha256=00")]);
    let check = node(
        serde_json::json!({"kind": "verify_github", "secret": "github-outbound-secret",
        "signature": got["x-hub-signature-256"], "body": body}),
    );
    assert_eq!(check["ok"], true, "{got}");

    // Standard Webhooks: v1 and v1a; the client's webhook-id is the message id.
    let got = send("/sw/hook", &[("webhook-id", "msg_from_app")]);
    assert_eq!(got["webhook-id"], "msg_from_app");
    let headers = serde_json::json!({"webhook-id": got["webhook-id"],
        "webhook-timestamp": got["webhook-timestamp"], "webhook-signature": got["webhook-signature"]});
    let v1 = node(
        serde_json::json!({"kind": "verify_standardwebhooks", "secret": SW_SECRET,
        "headers": headers, "body": body}),
    );
    assert_eq!(v1["ok"], true, "{got}");
    let v1a = node(
        serde_json::json!({"kind": "verify_v1a", "public": s.keys["ed25519"]["hex"],
        "headers": headers, "body": body}),
    );
    assert_eq!(v1a["ok"], true, "{got}");
    // Without a webhook-id from the client, one is made per request.
    let first = send("/sw/hook", &[]);
    let second = send("/sw/hook", &[]);
    assert!(first["webhook-id"].as_str().unwrap().starts_with("msg_"));
    assert_ne!(first["webhook-id"], second["webhook-id"]);

    // RFC 9421 with Content-Digest: Ed25519 and HMAC.
    for (path, alg, key, keyid) in [
        (
            "/rfc-ed/orders?x=1",
            "ed25519",
            s.keys["ed25519"]["pem"].clone(),
            "ed",
        ),
        (
            "/rfc-hmac/orders",
            "hmac-sha256",
            serde_json::json!("rfc-hmac-secret"),
            "shared",
        ),
    ] {
        let got = send(path, &[("signature", "sig1=:AAAA:")]);
        let check = node(
            serde_json::json!({"kind": "verify_httpsig", "alg": alg, "key": key,
            "keyid": keyid, "method": "POST", "url": format!("http://127.0.0.1:{port}{path}"),
            "headers": got, "body": body}),
        );
        assert_eq!(check["ok"], true, "{path}: {got}");
    }
    assert_eq!(s.envoy.metric("wasmgate_hmac_auth_signed_total", &[]), 6);
}

/// RFC 3339 UTC for Unix seconds (civil from days, Howard Hinnant).
fn rfc3339(ts: u64) -> String {
    let days = ts / 86_400;
    let secs = ts % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.123456789Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[test]
fn twitch_verification_is_answered_only_when_signed() {
    let s = start();
    let ts = rfc3339(now());
    let twitch = |id: &str, kind: &str, body: &str, secret: &str| {
        let signed = format!("{id}{ts}{body}");
        vec![
            ("twitch-eventsub-message-id".to_string(), id.to_string()),
            ("twitch-eventsub-message-timestamp".to_string(), ts.clone()),
            ("twitch-eventsub-message-type".to_string(), kind.to_string()),
            (
                "twitch-eventsub-message-signature".to_string(),
                format!("sha256={}", hmac_hex(secret.as_bytes(), signed.as_bytes())),
            ),
        ]
    };
    let verification = r#"{"challenge": "pogchamp-kappa-360noscope-vohiyo", "subscription": {"type": "channel.follow"}}"#;
    let answered = post(
        &s.envoy,
        "/twitch/eventsub",
        &twitch(
            "m-1",
            "webhook_callback_verification",
            verification,
            "twitch-eventsub-secret",
        ),
        verification,
    );
    assert_eq!(answered.status, 200, "{}", answered.text());
    assert_eq!(answered.text(), "pogchamp-kappa-360noscope-vohiyo");
    assert_reply(
        &post(
            &s.envoy,
            "/twitch/eventsub",
            &twitch(
                "m-2",
                "webhook_callback_verification",
                verification,
                "wrong",
            ),
            verification,
        ),
        401,
        "invalid_signature",
        "twitch challenge with a wrong secret",
    );
    let notification = r#"{"subscription": {"type": "channel.follow"}, "event": {}}"#;
    assert_forwarded(
        &post(
            &s.envoy,
            "/twitch/eventsub",
            &twitch(
                "m-3",
                "notification",
                notification,
                "twitch-eventsub-secret",
            ),
            notification,
        ),
        "twitch",
        "twitch notification",
    );
    assert_eq!(s.upstream.attempts(), 1);
}
