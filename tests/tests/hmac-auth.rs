//! hmac-auth end-to-end: every scheme in a real Envoy (valid, tampered body, wrong secret,
//! rotated secret, stale timestamp, missing header, oversized body, replay refused, retry after an
//! upstream 503 allowed), plus secrets from the VM environment, concurrent duplicates across
//! workers, chunked bodies over the limit, per-route rules, metrics and configuration errors.
//!
//! Requests are signed here with an independent implementation of each scheme. Configurations
//! that would weaken a check are refused when Envoy loads them; the request-time coverage rules
//! of RFC 9421 (query, body) and the SigV4 credential scope are checked here too.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{Envoy, EnvoyOptions, Response, Scripted, Upstream};

const MAX_BODY: usize = 1024;
const REQUESTS: &str = "wasmgate_hmac_auth_requests_total";
const KEY_MATCHED: &str = "wasmgate_hmac_auth_key_matched_total";

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (civil from days, Howard Hinnant).
fn amz_date(ts: u64) -> String {
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
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A configured secret as the test knows it.
#[derive(Clone)]
struct Key {
    id: String,
    value: String,
}

fn key(id: &str, value: &str) -> Key {
    Key {
        id: id.into(),
        value: value.into(),
    }
}

fn whsec(raw: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(raw))
}

/// (current, previous, wrong) keys for a scheme; `wrong` has the current id and another value.
fn keys(scheme: &str) -> (Key, Key, Key) {
    match scheme {
        "standard_webhooks" => (
            key("current", &whsec(b"current-standard-key")),
            key("previous", &whsec(b"previous-standard-key")),
            key("current", &whsec(b"wrong-standard-key")),
        ),
        "aws_sigv4" => (
            key("AKIDCURRENT", "cur/secret+access+key"),
            key("AKIDPREVIOUS", "old/secret+access+key"),
            key("AKIDCURRENT", "wrong/secret+access+key"),
        ),
        _ => (
            key("current", "current-secret-value"),
            key("previous", "previous-secret-value"),
            key("current", "wrong-secret-value"),
        ),
    }
}

fn config(scheme: &str) -> serde_json::Value {
    let (current, previous, _) = keys(scheme);
    let mut config = serde_json::json!({
        "scheme": scheme,
        "secrets": [
            {"id": current.id, "value": current.value},
            {"id": previous.id, "value": previous.value},
        ],
        "timestamp_tolerance": "5m",
        "max_body_bytes": MAX_BODY,
        "replay": {"ttl": "10m", "max_entries": 1000},
        "rules": [{"match": {"path_prefix": "/health"}, "enabled": false}],
    });
    if scheme == "aws_sigv4" {
        config["aws_sigv4"] = serde_json::json!({"region": "us-east-1", "service": "execute-api"});
    }
    if scheme == "custom" {
        config["custom"] = serde_json::json!({
            "signature_header": "x-signature", "signature_prefix": "sha256=", "algorithm": "sha256",
            "encoding": "hex", "timestamp_header": "x-timestamp", "id_header": "x-delivery-id",
            "signed_payload": "{timestamp}.{id}.{method}.{body}"
        });
    }
    config
}

fn start(config: &serde_json::Value, options: EnvoyOptions, fixed_env: &str) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "hmac-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config.to_string()),
            ("FIXED_ENV", fixed_env.to_string()),
        ],
        options,
    );
    (upstream, envoy)
}

/// One message to sign.
struct Msg<'a> {
    path: &'a str,
    authority: &'a str,
    body: &'a [u8],
    ts: u64,
    id: &'a str,
}

/// The headers that sign `msg` for `scheme` with `key`.
fn sign(scheme: &str, key: &Key, msg: &Msg) -> Vec<(String, String)> {
    let secret = key.value.as_bytes();
    let ts = msg.ts.to_string();
    let h = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    };
    match scheme {
        "github" => h(&[
            (
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hmac256(secret, &[msg.body]))),
            ),
            ("x-github-delivery", msg.id.to_string()),
        ]),
        "stripe" => h(&[(
            "stripe-signature",
            format!(
                "t={ts},v1={}",
                hex::encode(hmac256(secret, &[ts.as_bytes(), b".", msg.body]))
            ),
        )]),
        "slack" => h(&[
            (
                "x-slack-signature",
                format!(
                    "v0={}",
                    hex::encode(hmac256(secret, &[b"v0:", ts.as_bytes(), b":", msg.body]))
                ),
            ),
            ("x-slack-request-timestamp", ts.clone()),
        ]),
        "shopify" => h(&[
            (
                "x-shopify-hmac-sha256",
                STANDARD.encode(hmac256(secret, &[msg.body])),
            ),
            ("x-shopify-webhook-id", msg.id.to_string()),
        ]),
        "standard_webhooks" => {
            let raw = STANDARD
                .decode(key.value.trim_start_matches("whsec_"))
                .expect("test secret is base64");
            let sig = hmac256(
                &raw,
                &[msg.id.as_bytes(), b".", ts.as_bytes(), b".", msg.body],
            );
            h(&[
                ("webhook-id", msg.id.to_string()),
                ("webhook-timestamp", ts.clone()),
                ("webhook-signature", format!("v1,{}", STANDARD.encode(sig))),
            ])
        }
        "http_signature" => httpsig_headers(
            key,
            "POST",
            msg,
            &["@method", "@authority", "@path", "content-digest"],
        ),
        "aws_sigv4" => sigv4_headers(key, msg, "us-east-1", "execute-api"),
        "custom" => h(&[
            (
                "x-signature",
                format!(
                    "sha256={}",
                    hex::encode(hmac256(
                        secret,
                        &[ts.as_bytes(), b".", msg.id.as_bytes(), b".POST.", msg.body]
                    ))
                ),
            ),
            ("x-timestamp", ts.clone()),
            ("x-delivery-id", msg.id.to_string()),
        ]),
        other => panic!("no signer for {other}"),
    }
}

/// RFC 9421 headers over `components` (of `@method @authority @path @query content-digest`);
/// `Content-Digest` is sent when covered; the nonce is the message id.
fn httpsig_headers(
    key: &Key,
    method: &str,
    msg: &Msg,
    components: &[&str],
) -> Vec<(String, String)> {
    let digest = format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(msg.body)));
    let (path, query) = msg.path.split_once('?').unwrap_or((msg.path, ""));
    let list: Vec<String> = components.iter().map(|c| format!("\"{c}\"")).collect();
    let params = format!(
        r#"({});created={};keyid="{}";alg="hmac-sha256";nonce="{}""#,
        list.join(" "),
        msg.ts,
        key.id,
        msg.id
    );
    let mut base = String::new();
    for c in components {
        let value = match *c {
            "@method" => method.to_string(),
            "@authority" => msg.authority.to_string(),
            "@path" => path.to_string(),
            "@query" => format!("?{query}"),
            "content-digest" => digest.clone(),
            other => panic!("no value for {other}"),
        };
        base.push_str(&format!("\"{c}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {params}"));
    let mut headers = Vec::new();
    if components.contains(&"content-digest") {
        headers.push(("content-digest".to_string(), digest));
    }
    headers.push(("signature-input".to_string(), format!("sig1={params}")));
    headers.push((
        "signature".to_string(),
        format!(
            "sig1=:{}:",
            STANDARD.encode(hmac256(key.value.as_bytes(), &[base.as_bytes()]))
        ),
    ));
    headers
}

/// SigV4 headers of a POST without query, for a credential scope of `region` and `service`.
fn sigv4_headers(key: &Key, msg: &Msg, region: &str, service: &str) -> Vec<(String, String)> {
    let amz = amz_date(msg.ts);
    let date = &amz[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let canonical = format!(
        "POST\n{}\n\nhost:{}\nx-amz-date:{amz}\n\nhost;x-amz-date\n{}",
        msg.path,
        msg.authority,
        sha256_hex(msg.body)
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut k = [b"AWS4".as_slice(), key.value.as_bytes()].concat();
    for part in [date, region, service, "aws4_request"] {
        k = hmac256(&k, &[part.as_bytes()]);
    }
    let sig = hex::encode(hmac256(&k, &[to_sign.as_bytes()]));
    vec![
        ("x-amz-date".to_string(), amz.clone()),
        (
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}",
                key.id
            ),
        ),
    ]
}

fn has_timestamp(scheme: &str) -> bool {
    !matches!(scheme, "github" | "shopify")
}

fn post(envoy: &Envoy, path: &str, headers: &[(String, String)], body: &[u8]) -> Response {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    envoy.client().send("POST", path, &refs, body)
}

#[track_caller]
fn assert_reply(response: &Response, status: u16, error: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert_eq!(response.json()["error"], error, "{what}");
}

/// A copy of a delivery the upstream already accepted: acknowledged by the filter with 200 and
/// `x-wasmgate-duplicate: true`, never forwarded.
#[track_caller]
fn assert_duplicate(response: &Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(
        response.header("x-wasmgate-duplicate"),
        Some("true"),
        "{what}"
    );
    assert_eq!(response.json()["duplicate"], true, "{what}");
}

/// Every behaviour the issue lists, for one scheme.
fn exercise(scheme: &str) {
    let (upstream, envoy) = start(&config(scheme), EnvoyOptions::default(), "unused");
    let (current, previous, wrong) = keys(scheme);
    let path = format!("/hooks/{scheme}");
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let body_of =
        |id: &str| format!("{{\"event\": \"{id}\", \"scheme\": \"{scheme}\"}}").into_bytes();
    let signed = |k: &Key, id: &str, body: &[u8], ts: u64| {
        sign(
            scheme,
            k,
            &Msg {
                path: &path,
                authority: &authority,
                body,
                ts,
                id,
            },
        )
    };
    let t = now();

    // 1. Valid: forwarded unchanged.
    let body1 = body_of("m-1");
    let headers1 = signed(&current, "m-1", &body1, t);
    let ok = post(&envoy, &path, &headers1, &body1);
    assert_eq!(ok.status, 200, "{scheme} valid: {}", ok.text());
    let echo = ok.json();
    assert_eq!(
        echo["body"].as_str().unwrap().as_bytes(),
        body1.as_slice(),
        "{scheme}: body unchanged"
    );
    for (name, value) in &headers1 {
        assert_eq!(
            echo["headers"][name.as_str()],
            value.as_str(),
            "{scheme}: {name} forwarded"
        );
    }

    // 2. Tampered body (same length).
    let body2 = body_of("m-2");
    let headers2 = signed(&current, "m-2", &body2, t);
    let mut tampered = body2.clone();
    tampered[3] ^= 1;
    assert_reply(
        &post(&envoy, &path, &headers2, &tampered),
        401,
        "invalid_signature",
        &format!("{scheme} tampered"),
    );

    // 3. Wrong secret.
    let headers3 = signed(&wrong, "m-3", &body_of("m-3"), t);
    assert_reply(
        &post(&envoy, &path, &headers3, &body_of("m-3")),
        401,
        "invalid_signature",
        &format!("{scheme} wrong secret"),
    );

    // 4. Rotated secret: the previous one still verifies.
    let headers4 = signed(&previous, "m-4", &body_of("m-4"), t);
    let rotated = post(&envoy, &path, &headers4, &body_of("m-4"));
    assert_eq!(rotated.status, 200, "{scheme} rotated: {}", rotated.text());

    // 5. Stale timestamp (schemes that sign one).
    if has_timestamp(scheme) {
        let old = t - 3600;
        let headers5 = signed(&current, "m-5", &body_of("m-5"), old);
        assert_reply(
            &post(&envoy, &path, &headers5, &body_of("m-5")),
            401,
            "stale_timestamp",
            &format!("{scheme} stale"),
        );
        let future = t + 3600;
        let headers5b = signed(&current, "m-5b", &body_of("m-5b"), future);
        assert_reply(
            &post(&envoy, &path, &headers5b, &body_of("m-5b")),
            401,
            "stale_timestamp",
            &format!("{scheme} future"),
        );
    }

    // 6. Missing signature header.
    assert_reply(
        &post(&envoy, &path, &[], &body_of("m-6")),
        401,
        "missing_signature",
        &format!("{scheme} missing"),
    );

    // 7. Oversized body (Content-Length over the limit), correctly signed.
    let big = vec![b'x'; MAX_BODY * 4];
    let headers7 = signed(&current, "m-7", &big, t);
    assert_reply(
        &post(&envoy, &path, &headers7, &big),
        413,
        "body_too_large",
        &format!("{scheme} oversized"),
    );

    // 8. Redelivery of message 1, which the upstream accepted: acknowledged, not forwarded.
    assert_duplicate(
        &post(&envoy, &path, &headers1, &body1),
        &format!("{scheme} replay"),
    );

    // 8b. A copy dressed up with unsigned changes is still the same message.
    let disguised: Option<Vec<(String, String)>> = match scheme {
        "github" => Some(
            headers1
                .iter()
                .map(|(n, v)| match n.as_str() {
                    "x-github-delivery" => (n.clone(), "another-delivery".to_string()),
                    _ => (n.clone(), v.clone()),
                })
                .collect(),
        ),
        "stripe" => Some(
            headers1
                .iter()
                .map(|(n, v)| (n.clone(), format!("{v},v1={}", "0".repeat(64))))
                .collect(),
        ),
        _ => None,
    };
    if let Some(disguised) = disguised {
        assert_duplicate(
            &post(&envoy, &path, &disguised, &body1),
            &format!("{scheme} disguised replay"),
        );
    }
    let disguised_replays = u64::from(matches!(scheme, "github" | "stripe"));

    // 9. The upstream fails once: the sender's retry passes, a third copy is a duplicate.
    upstream.script([Scripted::status(503)]);
    let body9 = body_of("m-9");
    let headers9 = signed(&current, "m-9", &body9, t);
    assert_eq!(
        post(&envoy, &path, &headers9, &body9).status,
        503,
        "{scheme}: scripted 503"
    );
    let retry = post(&envoy, &path, &headers9, &body9);
    assert_eq!(
        retry.status,
        200,
        "{scheme} retry after 503: {}",
        retry.text()
    );
    assert_duplicate(
        &post(&envoy, &path, &headers9, &body9),
        &format!("{scheme} after retry"),
    );

    // Per-route switch-off: unsigned health checks pass.
    assert_eq!(envoy.client().get("/health").status, 200);

    // Only verified requests reached the upstream: 1, 4, 9 (503), 9 (retry), /health.
    assert_eq!(upstream.attempts(), 5, "{scheme}");
    let matched = |id: &str| envoy.metric(KEY_MATCHED, &[("key_id", id)]);
    let requests = |outcome: &str| envoy.metric(REQUESTS, &[("outcome", outcome)]);
    let rejected =
        |reason: &str| envoy.metric(REQUESTS, &[("outcome", "rejected"), ("reason", reason)]);
    assert_eq!(
        matched(&previous.id),
        1,
        "{scheme}: previous secret matched once"
    );
    // m-1, m-9 twice, and the replays of m-1 and m-9 (they verify before the replay check).
    assert_eq!(
        matched(&current.id),
        5 + disguised_replays,
        "{scheme}: current secret matches"
    );
    assert_eq!(requests("verified"), 4, "{scheme}");
    assert_eq!(
        envoy.metric("wasmgate_hmac_auth_duplicates_total", &[]),
        2 + disguised_replays,
        "{scheme}"
    );
    assert_eq!(
        envoy.metric("wasmgate_hmac_auth_replays_total", &[]),
        0,
        "{scheme}"
    );
    assert_eq!(rejected("invalid_signature"), 2, "{scheme}");
    assert_eq!(rejected("missing_signature"), 1, "{scheme}");
    assert_eq!(rejected("body_too_large"), 1, "{scheme}");
    assert_eq!(
        rejected("stale_timestamp"),
        if has_timestamp(scheme) { 2 } else { 0 },
        "{scheme}"
    );
    assert_eq!(
        requests("rejected"),
        4 + if has_timestamp(scheme) { 2 } else { 0 },
        "{scheme}: every refusal has its reason"
    );
    assert_eq!(requests("skipped"), 1, "{scheme}");
}

#[test]
fn github() {
    exercise("github");
}

#[test]
fn stripe() {
    exercise("stripe");
}

#[test]
fn slack() {
    exercise("slack");
}

#[test]
fn shopify() {
    exercise("shopify");
}

#[test]
fn standard_webhooks() {
    exercise("standard_webhooks");
}

#[test]
fn http_signature() {
    exercise("http_signature");
}

#[test]
fn aws_sigv4() {
    exercise("aws_sigv4");
}

#[test]
fn custom() {
    exercise("custom");
}

/// Secrets from the VM environment: `key_values` (set in the Envoy config) and `host_env_keys`
/// (forwarded from Envoy's own environment).
#[test]
fn secrets_from_vm_environment() {
    let config = serde_json::json!({
        "scheme": "github",
        "secrets": [
            {"id": "current", "env": "HMAC_E2E_FIXED"},
            {"id": "previous", "env": "HMAC_E2E_PREVIOUS"},
        ],
    });
    let options = EnvoyOptions {
        env: vec![("HMAC_E2E_PREVIOUS".into(), "secret-from-host-env".into())],
        ..EnvoyOptions::default()
    };
    let (upstream, envoy) = start(&config, options, "secret-from-key-values");
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    for (id, value, n) in [
        ("current", "secret-from-key-values", "e-1"),
        ("previous", "secret-from-host-env", "e-2"),
    ] {
        let body = format!("{{\"n\": \"{n}\"}}").into_bytes();
        let msg = Msg {
            path: "/env",
            authority: &authority,
            body: &body,
            ts: now(),
            id: n,
        };
        let response = post(
            &envoy,
            "/env",
            &sign("github", &key(id, value), &msg),
            &body,
        );
        assert_eq!(response.status, 200, "{id}: {}", response.text());
    }
    let body = b"{}".to_vec();
    let msg = Msg {
        path: "/env",
        authority: &authority,
        body: &body,
        ts: now(),
        id: "e-3",
    };
    let response = post(
        &envoy,
        "/env",
        &sign("github", &key("x", "not-configured"), &msg),
        &body,
    );
    assert_reply(&response, 401, "invalid_signature", "unknown secret");
    assert_eq!(upstream.attempts(), 2);
    assert_eq!(envoy.metric(KEY_MATCHED, &[("key_id", "current")]), 1);
    assert_eq!(envoy.metric(KEY_MATCHED, &[("key_id", "previous")]), 1);
}

/// A duplicate that arrives while the first copy is still at the upstream is refused, across
/// two workers; once the first copy succeeded, later copies are refused too.
#[test]
fn concurrent_duplicate_is_refused_across_workers() {
    let options = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    let (upstream, envoy) = start(&config("standard_webhooks"), options, "unused");
    let (current, _, _) = keys("standard_webhooks");
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let body = b"{\"type\": \"invoice.paid\"}".to_vec();
    let msg = Msg {
        path: "/hooks",
        authority: &authority,
        body: &body,
        ts: now(),
        id: "msg_dup",
    };
    let headers = sign("standard_webhooks", &current, &msg);
    upstream.script([Scripted::status(200).delay(Duration::from_millis(1500))]);
    let first = {
        let (headers, body, client) = (headers.clone(), body.clone(), envoy.client());
        std::thread::spawn(move || {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            client.send("POST", "/hooks", &refs, &body)
        })
    };
    // Wait (by polling the upstream, never a fixed sleep) until the first copy is in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while upstream.attempts() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first copy never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut refused = 0;
    for _ in 0..4 {
        // A fresh client per request: new connections, spread over both workers.
        let duplicate = post(&envoy, "/hooks", &headers, &body);
        assert_reply(&duplicate, 409, "replayed", "concurrent duplicate");
        refused += 1;
    }
    let first = first.join().expect("first request");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_duplicate(&post(&envoy, "/hooks", &headers, &body), "after success");
    assert_eq!(upstream.attempts(), 1);
    assert_eq!(
        envoy.metric("wasmgate_hmac_auth_replays_total", &[]),
        refused
    );
    assert_eq!(
        envoy.metric(REQUESTS, &[("outcome", "rejected"), ("reason", "replayed")]),
        refused
    );
    assert_eq!(envoy.metric("wasmgate_hmac_auth_duplicates_total", &[]), 1);
}

/// A chunked body (no Content-Length) is refused with 413 as soon as it grows past the limit.
#[test]
fn chunked_body_over_the_limit() {
    let (upstream, envoy) = start(&config("github"), EnvoyOptions::default(), "unused");
    let (current, _, _) = keys("github");
    let chunk = vec![b'a'; 600];
    let full: Vec<u8> = chunk.iter().chain(chunk.iter()).copied().collect();
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let msg = Msg {
        path: "/chunked",
        authority: &authority,
        body: &full,
        ts: now(),
        id: "c-1",
    };
    let mut request = format!(
        "POST /chunked HTTP/1.1\r\nhost: {authority}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in sign("github", &current, &msg) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", envoy.port("main"))).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("headers");
    for _ in 0..2 {
        // Envoy may answer and close before the last chunk: a failed write is fine.
        let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = stream.write_all(&chunk);
        let _ = stream.write_all(b"\r\n");
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\":\"body_too_large\""), "{answer}");
    assert_eq!(upstream.attempts(), 0);
    assert_eq!(
        envoy.metric(
            REQUESTS,
            &[("outcome", "rejected"), ("reason", "body_too_large")]
        ),
        1
    );
}

/// Unreadable signature headers are 400 `malformed_signature`.
#[test]
fn malformed_signatures() {
    let (upstream, envoy) = start(
        &config("standard_webhooks"),
        EnvoyOptions::default(),
        "unused",
    );
    let cases: [(&str, &[(&str, &str)]); 3] = [
        (
            "no webhook-id",
            &[
                ("webhook-timestamp", "1700000000"),
                ("webhook-signature", "v1,AAAA"),
            ],
        ),
        (
            "timestamp not a number",
            &[
                ("webhook-id", "m"),
                ("webhook-timestamp", "hello"),
                ("webhook-signature", "v1,AAAA"),
            ],
        ),
        (
            "no webhook-timestamp",
            &[("webhook-id", "m"), ("webhook-signature", "v1,AAAA")],
        ),
    ];
    for (what, headers) in cases {
        let response = envoy.client().send("POST", "/hooks", headers, b"{}");
        assert_reply(&response, 400, "malformed_signature", what);
        assert!(!response.text().contains("AAAA"), "no signature echoed");
    }
    assert_eq!(upstream.attempts(), 0);
    assert_eq!(
        envoy.metric(
            REQUESTS,
            &[("outcome", "rejected"), ("reason", "malformed_signature")]
        ),
        3
    );
}

/// Rules pick the scheme per route; a request without a body is verified at the header phase;
/// metrics are exported for Prometheus.
#[test]
fn rules_select_the_scheme_per_route() {
    let config = serde_json::json!({
        "scheme": "github",
        "secrets": [{"id": "gh", "value": "github-secret"}],
        "rules": [
            {"match": {"path_prefix": "/health"}, "enabled": false},
            {"match": {"path_prefix": "/slack/"}, "scheme": "slack",
             "secrets": [{"id": "sl", "value": "slack-secret"}]},
        ],
    });
    let (upstream, envoy) = start(&config, EnvoyOptions::default(), "unused");
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let body = b"text=hello".to_vec();
    let slack_key = key("sl", "slack-secret");
    let github_key = key("gh", "github-secret");
    let msg = Msg {
        path: "/slack/cmd",
        authority: &authority,
        body: &body,
        ts: now(),
        id: "s-1",
    };
    assert_eq!(
        post(
            &envoy,
            "/slack/cmd",
            &sign("slack", &slack_key, &msg),
            &body
        )
        .status,
        200
    );
    // GitHub signature on the Slack route: the Slack header is missing.
    let msg = Msg {
        path: "/slack/cmd",
        authority: &authority,
        body: &body,
        ts: now(),
        id: "s-2",
    };
    let wrong_scheme = post(
        &envoy,
        "/slack/cmd",
        &sign("github", &github_key, &msg),
        &body,
    );
    assert_reply(
        &wrong_scheme,
        401,
        "missing_signature",
        "github on slack route",
    );
    assert!(wrong_scheme.json()["message"]
        .as_str()
        .unwrap()
        .contains("X-Slack-Signature"));
    // GET without a body, verified before any body could arrive.
    let msg = Msg {
        path: "/repo/ping",
        authority: &authority,
        body: b"",
        ts: now(),
        id: "g-1",
    };
    let headers = sign("github", &github_key, &msg);
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let ping = envoy.client().send("GET", "/repo/ping", &refs, b"");
    assert_eq!(ping.status, 200, "{}", ping.text());
    assert_eq!(envoy.client().get("/health/live").status, 200);
    assert_eq!(upstream.attempts(), 3);
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    // Envoy's stats_tags (tests/configs/hmac-auth.yaml) turn the labels in the stat names into
    // Prometheus labels.
    for line in [
        r#"wasmgate_hmac_auth_requests_total{plugin="hmac-auth",outcome="verified"} 2"#,
        r#"wasmgate_hmac_auth_requests_total{plugin="hmac-auth",outcome="skipped"} 1"#,
        r#"wasmgate_hmac_auth_requests_total{plugin="hmac-auth",outcome="rejected",reason="missing_signature"} 1"#,
        r#"wasmgate_hmac_auth_requests_total{plugin="hmac-auth",outcome="rejected",reason="invalid_signature"} 0"#,
        r#"wasmgate_hmac_auth_key_matched_total{plugin="hmac-auth",key_id="gh"} 1"#,
        r#"wasmgate_hmac_auth_key_matched_total{plugin="hmac-auth",key_id="sl"} 1"#,
        r#"wasmgate_hmac_auth_replays_total{plugin="hmac-auth"} 0"#,
        "# TYPE wasmgate_hmac_auth_requests_total counter",
    ] {
        assert!(
            prometheus.lines().any(|l| l == line),
            "{line} missing from /stats/prometheus"
        );
    }
    assert_eq!(envoy.metric(REQUESTS, &[("outcome", "verified")]), 2);
}

/// An invalid configuration is refused at load time with the JSON path of the problem.
#[test]
fn invalid_configuration_is_rejected() {
    let config = serde_json::json!({
        "scheme": "github",
        "secrets": [{"id": "a", "value": "x"}, {"id": "a", "value": "y"}],
    });
    let result = std::panic::catch_unwind(|| start(&config, EnvoyOptions::default(), "unused"));
    let message = match result {
        Ok(_) => panic!("Envoy accepted an invalid configuration"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains(
            "wasmgate hmac-auth: invalid configuration at secrets[1].id: duplicate secret id"
        ),
        "{message}"
    );
    assert!(!message.contains("\"y\""), "no secret in the log");
}

/// The shipped `envoy/hmac-auth.yaml` runs as documented (ports and module path adapted).
#[test]
fn shipped_envoy_config_verifies_each_route() {
    let upstream = Upstream::start();
    let text = std::fs::read_to_string(wasmgate_e2e::repo_root().join("envoy/hmac-auth.yaml"))
        .expect("envoy/hmac-auth.yaml");
    let module = wasmgate_e2e::wasm_dir().join("hmac_auth.wasm");
    let config = text
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace(
            "port_value: 18080",
            &format!("port_value: {}", upstream.port()),
        )
        .replace("dist/hmac_auth.wasm", &module.display().to_string());
    let envoy = Envoy::start_config(&config, EnvoyOptions::default());
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let cases = [
        (
            "github",
            "/github/push",
            key("previous", "demo-previous-github-secret"),
        ),
        (
            "stripe",
            "/stripe/events",
            key("stripe", "whsec_demo_stripe_secret"),
        ),
        (
            "slack",
            "/slack/commands",
            key("slack", "demo-slack-signing-secret"),
        ),
        (
            "standard_webhooks",
            "/webhooks/in",
            key("svix", "whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1rZXk="),
        ),
        (
            "http_signature",
            "/api/orders",
            key("partner-1", "demo-partner-secret"),
        ),
    ];
    for (i, (scheme, path, k)) in cases.iter().enumerate() {
        let body = format!("{{\"n\": {i}}}").into_bytes();
        let id = format!("shipped-{i}");
        let msg = Msg {
            path,
            authority: &authority,
            body: &body,
            ts: now(),
            id: &id,
        };
        let response = post(&envoy, path, &sign(scheme, k, &msg), &body);
        assert_eq!(response.status, 200, "{scheme}: {}", response.text());
    }
    assert_reply(
        &post(&envoy, "/github/push", &[], b"{}"),
        401,
        "missing_signature",
        "unsigned",
    );
    assert_eq!(envoy.client().get("/health").status, 200);
    assert_eq!(upstream.attempts(), cases.len() + 1);
}

/// Without the buffer filter after hmac-auth, a request whose body fails verification is still
/// refused, and the upstream never receives its body (at most its headers, then a reset).
#[test]
fn without_buffer_filter_a_tampered_body_never_reaches_the_upstream() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "hmac-auth-nobuffer.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config("github").to_string()),
            ("FIXED_ENV", "unused".to_string()),
        ],
    );
    let (current, _, _) = keys("github");
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let body = vec![b'b'; 900];
    let msg = Msg {
        path: "/hooks",
        authority: &authority,
        body: &body,
        ts: now(),
        id: "nb-1",
    };
    let headers = sign("github", &current, &msg);
    let mut tampered = body.clone();
    tampered[0] = b'c';
    assert_reply(
        &post(&envoy, "/hooks", &headers, &tampered),
        401,
        "invalid_signature",
        "tampered",
    );
    for echo in upstream.received() {
        assert_eq!(
            echo["body_len"], 0,
            "no body byte of an unverified request reaches the upstream"
        );
    }
    let ok = post(&envoy, "/hooks", &headers, &body);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["body_len"], 900);
}

/// RFC 9421 with only `@method @path` required: a query or a body must still be covered, per
/// request; SigV4 with a pinned credential scope: another region or service is refused, and so is
/// an unsigned session token.
#[test]
fn coverage_and_credential_scope() {
    let config = serde_json::json!({
        "scheme": "http_signature",
        "secrets": [{"id": "client-1", "value": "httpsig-secret"}],
        "http_signature": {"required_components": ["@method", "@path"]},
        "rules": [
            {"match": {"path_prefix": "/sigv4/"}, "scheme": "aws_sigv4",
             "secrets": [{"id": "AKIDCURRENT", "value": "cur/secret+access+key"}],
             "aws_sigv4": {"region": "eu-west-1", "service": "execute-api"}},
        ],
    });
    let (upstream, envoy) = start(&config, EnvoyOptions::default(), "unused");
    let authority = format!("127.0.0.1:{}", envoy.port("main"));
    let client = key("client-1", "httpsig-secret");
    let msg = |path: &'static str, body: &'static [u8], id: &'static str| Msg {
        path,
        authority: &authority,
        body,
        ts: now(),
        id,
    };
    let send = |method: &str, path: &str, headers: &[(String, String)], body: &[u8]| {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        envoy.client().send(method, path, &refs, body)
    };
    let method_path = ["@method", "@path"];

    // A GET without query and body: method and path suffice.
    let get = httpsig_headers(&client, "GET", &msg("/orders/1", b"", "h-1"), &method_path);
    let ok = send("GET", "/orders/1", &get, b"");
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The same signature with a query: refused.
    let get = httpsig_headers(&client, "GET", &msg("/orders/1", b"", "h-2"), &method_path);
    let refused = send("GET", "/orders/1?all=1", &get, b"");
    assert_reply(&refused, 401, "invalid_signature", "query not covered");
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("query"));
    // ... unless the signature covers it.
    let with_query = httpsig_headers(
        &client,
        "GET",
        &msg("/orders/1?all=1", b"", "h-3"),
        &["@method", "@path", "@query"],
    );
    assert_eq!(send("GET", "/orders/1?all=1", &with_query, b"").status, 200);
    // A body not covered by content-digest: refused at the header phase.
    let body: &[u8] = b"{\"amount\": 1000}";
    let post = httpsig_headers(&client, "POST", &msg("/orders", body, "h-4"), &method_path);
    let refused = send("POST", "/orders", &post, body);
    assert_reply(&refused, 401, "invalid_signature", "body not covered");
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("Content-Digest"));
    let post = httpsig_headers(
        &client,
        "POST",
        &msg("/orders", body, "h-5"),
        &["@method", "@path", "content-digest"],
    );
    assert_eq!(send("POST", "/orders", &post, body).status, 200);

    // SigV4: only the configured region and service.
    let aws = key("AKIDCURRENT", "cur/secret+access+key");
    let body: &[u8] = b"{\"n\": 1}";
    for (region, service, id) in [
        ("us-east-1", "execute-api", "s-1"),
        ("eu-west-1", "s3", "s-2"),
    ] {
        let headers = sigv4_headers(&aws, &msg("/sigv4/items", body, id), region, service);
        let refused = send("POST", "/sigv4/items", &headers, body);
        assert_reply(
            &refused,
            401,
            "wrong_credential_scope",
            &format!("{region}/{service}"),
        );
        assert!(refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("eu-west-1"));
    }
    let mut headers = sigv4_headers(
        &aws,
        &msg("/sigv4/items", body, "s-3"),
        "eu-west-1",
        "execute-api",
    );
    let ok = send("POST", "/sigv4/items", &headers, body);
    assert_eq!(ok.status, 200, "{}", ok.text());
    headers.push(("x-amz-security-token".into(), "added-later".into()));
    assert_reply(
        &send("POST", "/sigv4/items", &headers, body),
        401,
        "invalid_signature",
        "unsigned session token",
    );

    assert_eq!(upstream.attempts(), 4);
    assert_eq!(
        envoy.metric(
            REQUESTS,
            &[
                ("outcome", "rejected"),
                ("reason", "wrong_credential_scope")
            ]
        ),
        2
    );
    assert_eq!(
        envoy.metric(
            REQUESTS,
            &[("outcome", "rejected"), ("reason", "invalid_signature")]
        ),
        3
    );
}

/// Configurations that would switch a check off without saying so are refused by Envoy at load,
/// with the JSON path and the reason in the one log line.
#[test]
fn weakening_configurations_are_refused_at_load() {
    let cases = [
        (
            serde_json::json!({
                "scheme": "custom", "secrets": [{"id": "a", "value": "x"}],
                "custom": {"signature_header": "x-signature", "timestamp_header": "x-timestamp"},
            }),
            "custom.timestamp_header: is not signed",
        ),
        (
            serde_json::json!({
                "scheme": "http_signature", "secrets": [{"id": "a", "value": "x"}],
                "http_signature": {"required_components": []},
            }),
            "http_signature.required_components: must not be empty",
        ),
        (
            serde_json::json!({"scheme": "aws_sigv4", "secrets": [{"id": "a", "value": "x"}]}),
            "aws_sigv4: scheme \"aws_sigv4\" needs an \"aws_sigv4\" block",
        ),
        // A private key where a public key belongs, and a Discord rule without its key.
        (
            serde_json::json!({
                "scheme": "standard_webhooks",
                "public_keys": [{"id": "k", "value": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----"}],
            }),
            "public_keys[0]: a PEM public key must be",
        ),
        (
            serde_json::json!({
                "scheme": "github", "secrets": [{"id": "a", "value": "x"}],
                "rules": [{"match": {"path_prefix": "/discord"}, "scheme": "discord"}],
            }),
            "rules[0].public_keys: at least one public key is required",
        ),
        // The key-id header without the headers waiting for the body.
        (
            serde_json::json!({
                "scheme": "github", "secrets": [{"id": "a", "value": "x"}],
                "key_id_header": "x-key-id",
            }),
            "key_id_header: needs \"hold_headers\": true",
        ),
    ];
    for (config, expected) in cases {
        let result = std::panic::catch_unwind(|| start(&config, EnvoyOptions::default(), "unused"));
        let message = match result {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        assert!(
            message.contains(&format!(
                "wasmgate hmac-auth: invalid configuration at {expected}"
            )),
            "{expected}: {message}"
        );
    }
}
