//! Property tests of invariants the fuzz targets cannot see from a crash: a JSON edit changes
//! only what it names; path normalization is idempotent; no rate-limit algorithm admits more
//! than its quota in a window; signing then verifying succeeds for every hmac-auth scheme and
//! any one-byte change to the signed body or signature fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac_auth::config::{Policy, Scheme};
use hmac_auth::crypto::{self, Algorithm};
use hmac_auth::verify::{self, Pending, Piece, Request};
use hmac_auth::{httpsig, sf, sigv4};
use proptest::prelude::*;
use rate_limit::algorithm::{Algorithm as RateAlgorithm, Limit};
use serde_json::{Map, Value};
use transform::doc::Document;
use wasmgate_core::path::normalize;

// ------------------------------------------------------------------ JSON edits

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z\"\\\\ é]{0,6}".prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]{1,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Pretty or compact, so the edits run over whitespace the document must keep.
fn render(value: &Value, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(value).unwrap()
    } else {
        serde_json::to_vec(value).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_json_set_changes_only_the_member_it_names(
        members in prop::collection::btree_map("[a-e]{1,2}", json(), 1..6),
        name in "[a-f]{1,2}",
        value in json(),
        pretty in any::<bool>(),
    ) {
        let before = Value::Object(members.into_iter().collect());
        let body = render(&before, pretty);
        let mut doc = Document::parse(&body).unwrap();
        doc.set(std::slice::from_ref(&name), value.clone()).unwrap();
        let after: Value = serde_json::from_slice(&doc.render().unwrap()).unwrap();
        let mut expected = before.clone();
        expected.as_object_mut().unwrap().insert(name, value);
        prop_assert_eq!(after, expected);
    }

    #[test]
    fn a_json_remove_changes_only_the_member_it_names(
        members in prop::collection::btree_map("[a-e]{1,2}", json(), 1..6),
        name in "[a-f]{1,2}",
        pretty in any::<bool>(),
    ) {
        let before = Value::Object(members.into_iter().collect());
        let body = render(&before, pretty);
        let mut doc = Document::parse(&body).unwrap();
        let removed = doc.remove(std::slice::from_ref(&name)).unwrap();
        let rendered = doc.render().unwrap();
        let after: Value = serde_json::from_slice(&rendered).unwrap();
        let mut expected = before.clone();
        let existed = expected.as_object_mut().unwrap().remove(&name).is_some();
        prop_assert_eq!(removed, existed);
        prop_assert_eq!(after, expected);
        if !existed {
            prop_assert_eq!(rendered, body, "no edit: every byte kept");
        }
    }

    #[test]
    fn a_nested_json_edit_keeps_every_other_member(
        outer in prop::collection::btree_map("[a-c]", json(), 0..4),
        inner in prop::collection::btree_map("[a-c]", json(), 0..4),
        value in json(),
    ) {
        let mut before = Value::Object(outer.into_iter().collect());
        before.as_object_mut().unwrap().insert("n".into(), Value::Object(inner.into_iter().collect()));
        let body = render(&before, true);
        let mut doc = Document::parse(&body).unwrap();
        doc.set(&["n".into(), "x".into()], value.clone()).unwrap();
        let after: Value = serde_json::from_slice(&doc.render().unwrap()).unwrap();
        let mut expected = before.clone();
        expected["n"].as_object_mut().unwrap().insert("x".into(), value);
        prop_assert_eq!(after, expected);
    }
}

// ------------------------------------------------------------------ paths

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn path_normalization_is_idempotent(path in "/[a/.%~2eEfF5cC\\\\;0-9A]{0,24}", allow in any::<bool>()) {
        if let Ok(normal) = normalize(&path, allow) {
            let again = normalize(&normal, allow).map(|n| n.into_owned());
            prop_assert_eq!(again.as_deref(), Ok(&*normal));
            prop_assert!(!normal.contains("//"), "slashes merged: {}", normal);
            prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."), "no dot segment: {}", normal);
        }
    }
}

// ------------------------------------------------------------------ rate limits

const SECOND: u64 = 1_000_000_000;

fn limit(algorithm: RateAlgorithm, requests: u64, window_ns: u64) -> Limit {
    Limit {
        name: "p".into(),
        requests,
        window_ns,
        algorithm,
    }
}

/// The times (ns) of the requests a limit admits, one state as the filter keeps it.
fn admitted(limit: &Limit, start: u64, gaps: &[u64]) -> Vec<u64> {
    let mut state = [0u64; 3];
    let mut now = start;
    let mut out = Vec::new();
    for gap in gaps {
        now += gap;
        state = limit.normalize(state, now);
        if limit.allows(&state, now) {
            state = limit.consume(state, now);
            out.push(now);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn window_algorithms_admit_at_most_their_quota_per_window(
        sliding in any::<bool>(),
        requests in 1u64..6,
        window_s in 1u64..4,
        start_s in 1_700_000_000u64..1_700_000_100,
        gaps in prop::collection::vec(0u64..(SECOND / 2), 1..80),
    ) {
        let algorithm = if sliding { RateAlgorithm::SlidingWindow } else { RateAlgorithm::FixedWindow };
        let w = window_s * SECOND;
        let times = admitted(&limit(algorithm, requests, w), start_s * SECOND, &gaps);
        // Every epoch-aligned window holds at most `requests`.
        let mut per_window = std::collections::BTreeMap::new();
        for t in &times {
            *per_window.entry(t / w).or_insert(0u64) += 1;
        }
        prop_assert!(per_window.values().all(|n| *n <= requests), "{:?}", per_window);
        if sliding {
            // And the documented estimate, recomputed from the admitted times, never exceeds
            // the quota: prev * (w - elapsed) / w + current <= requests at each admission. (An
            // arbitrary window of length w may hold up to twice the quota: that is the
            // approximation the README documents, not a property of it.)
            for (i, t) in times.iter().enumerate() {
                let (k, elapsed) = (t / w, t % w);
                let prev = times.iter().filter(|u| k > 0 && **u / w == k - 1).count() as u128;
                let cur = times[..=i].iter().filter(|u| **u / w == k).count() as u128;
                let used = prev * u128::from(w - elapsed) + cur * u128::from(w);
                prop_assert!(used <= u128::from(requests) * u128::from(w), "estimate over quota at {}", t);
            }
        }
    }

    #[test]
    fn the_token_bucket_admits_at_most_burst_plus_refill(
        requests in 1u64..6,
        window_s in 1u64..4,
        burst in 1u64..8,
        gaps in prop::collection::vec(0u64..(SECOND / 3), 1..80),
    ) {
        let w = window_s * SECOND;
        let limit = limit(RateAlgorithm::TokenBucket { burst }, requests, w);
        let times = admitted(&limit, 1_700_000_000 * SECOND, &gaps);
        // In any interval [a, b]: at most burst + requests * (b - a) / w.
        for i in 0..times.len() {
            for j in i..times.len() {
                let n = (j - i + 1) as u64;
                let refill = (times[j] - times[i]) as u128 * requests as u128 / w as u128;
                prop_assert!(n as u128 <= burst as u128 + refill + 1, "{} admitted in {} ns", n, times[j] - times[i]);
            }
        }
    }
}

// ------------------------------------------------------------------ hmac-auth

const NOW: u64 = 1_735_689_600;

/// How a scheme writes a MAC into its header.
type Render = Box<dyn Fn(&[u8]) -> String>;

fn policies() -> Vec<Policy> {
    let config = hmac_auth::config::parse(wasmgate_fuzz::configs::HMAC_AUTH).unwrap();
    config.policies.all().cloned().collect()
}

fn request(method: &str, path: &str, headers: Vec<(String, String)>) -> Request {
    let mut all = vec![
        (":method".to_string(), method.to_string()),
        (":authority".to_string(), "api.example.com".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    all.extend(headers);
    Request::from_headers(all)
}

fn lower(headers: &[(&str, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// The headers that sign `body` for `policy` (as `wasmgate sign` does), with its first key.
fn sign(policy: &Policy, path: &str, body: &[u8]) -> Vec<(String, String)> {
    let key = &policy.keys[0];
    let ts = NOW.to_string();
    match &policy.scheme {
        Scheme::HttpSignature(_) => {
            let components = ["@method", "@authority", "@path", "content-digest"].map(String::from);
            let mut headers = vec![(
                "content-digest".to_string(),
                format!("sha-256=:{}:", STANDARD.encode(crypto::sha256(body))),
            )];
            let member = format!(
                "sig1=(\"@method\" \"@authority\" \"@path\" \"content-digest\");created={NOW};keyid=\"{}\";alg=\"hmac-sha256\"",
                key.id
            );
            let dict = sf::parse_dictionary(&member).unwrap();
            let Some((_, sf::Member::InnerList(items, params))) = dict.first() else {
                unreachable!()
            };
            let params_line = sf::serialize_inner_list(items, params);
            let req = request("POST", path, headers.clone());
            let base = httpsig::signature_base(&req, &components, &params_line).unwrap();
            let sig = crypto::mac(Algorithm::Sha256, &key.bytes, &[base.as_bytes()]);
            headers.push(("signature-input".into(), format!("sig1={params_line}")));
            headers.push((
                "signature".into(),
                format!("sig1=:{}:", STANDARD.encode(sig)),
            ));
            headers
        }
        Scheme::AwsSigv4(settings) => {
            let amz_date = "20250101T000000Z".to_string();
            let date = &amz_date[..8];
            let body_hash = hex::encode(crypto::sha256(body));
            let mut headers = vec![
                ("x-amz-date".to_string(), amz_date.clone()),
                ("x-amz-content-sha256".to_string(), body_hash.clone()),
            ];
            let req = request("POST", path, headers.clone());
            let signed = ["host", "x-amz-content-sha256", "x-amz-date"].map(String::from);
            let canonical = sigv4::canonical_request(&req, &settings.service, &signed, &body_hash);
            let sig = sigv4::signature(
                &key.bytes,
                &amz_date,
                date,
                &settings.region,
                &settings.service,
                &canonical,
            );
            headers.push((
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
                    key.id, settings.region, settings.service, signed.join(";"), hex::encode(sig)
                ),
            ));
            headers
        }
        scheme => {
            // The signed payload comes from the filter's own `prepare` over a placeholder
            // signature of the right shape.
            let (header, render): (&str, Render) = match scheme {
                Scheme::Github => (
                    "x-hub-signature-256",
                    Box::new(|s| format!("sha256={}", hex::encode(s))),
                ),
                Scheme::Shopify => ("x-shopify-hmac-sha256", Box::new(|s| STANDARD.encode(s))),
                Scheme::Slack => (
                    "x-slack-signature",
                    Box::new(|s| format!("v0={}", hex::encode(s))),
                ),
                Scheme::Stripe => (
                    "stripe-signature",
                    Box::new(|s| format!("t={NOW},v1={}", hex::encode(s))),
                ),
                Scheme::StandardWebhooks => (
                    "webhook-signature",
                    Box::new(|s| format!("v1,{}", STANDARD.encode(s))),
                ),
                Scheme::Custom(_) => (
                    "x-signature",
                    Box::new(|s| format!("sha512={}", STANDARD.encode(s))),
                ),
                _ => unreachable!(),
            };
            let mut headers = lower(&[
                ("x-slack-request-timestamp", ts.clone()),
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.clone()),
                ("x-timestamp", ts.clone()),
                ("x-id", "msg_1".into()),
                ("x-tenant", "acme".into()),
            ]);
            let algorithm = match scheme {
                Scheme::Custom(c) => c.algorithm,
                _ => Algorithm::Sha256,
            };
            let len = crypto::mac(algorithm, b"k", &[]).len();
            let mut probe = headers.clone();
            probe.push((header.into(), render(&vec![0u8; len])));
            let pending = verify::prepare(policy, &request("POST", path, probe), NOW).unwrap();
            let Pending::Simple { payload, .. } = pending else {
                unreachable!()
            };
            let parts: Vec<&[u8]> = payload
                .iter()
                .map(|p| match p {
                    Piece::Bytes(b) => b.as_slice(),
                    Piece::Body => body,
                })
                .collect();
            headers.push((
                header.into(),
                render(&crypto::mac(algorithm, &key.bytes, &parts)),
            ));
            headers
        }
    }
}

fn verifies(policy: &Policy, path: &str, headers: Vec<(String, String)>, body: &[u8]) -> bool {
    let req = request("POST", path, headers);
    match verify::prepare(policy, &req, NOW) {
        Ok(pending) => verify::verify(policy, &pending, &req, body).is_ok(),
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_scheme_verifies_what_it_signed_and_nothing_changed(
        body in prop::collection::vec(any::<u8>(), 1..64),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        header_pick in any::<prop::sample::Index>(),
    ) {
        for policy in policies() {
            let path = "/hook/x";
            let headers = sign(&policy, path, &body);
            prop_assert!(verifies(&policy, path, headers.clone(), &body), "{:?} verifies its own signature", policy.scheme);
            // One byte of the body changed.
            let mut changed = body.clone();
            let i = at.index(changed.len());
            changed[i] ^= flip;
            prop_assert!(!verifies(&policy, path, headers.clone(), &changed), "{:?}: a changed body fails", policy.scheme);
            // One byte of the signature header changed.
            let sig_names = ["x-hub-signature-256", "x-shopify-hmac-sha256", "x-slack-signature", "stripe-signature", "webhook-signature", "x-signature", "signature", "authorization"];
            let mut tampered = headers.clone();
            let (_, value) = tampered.iter_mut().find(|(n, _)| sig_names.contains(&n.as_str())).unwrap();
            let mut bytes = value.clone().into_bytes();
            let j = header_pick.index(bytes.len());
            // '0'/'1': a different value in hex (compared as bytes, either case) and in base64.
            bytes[j] = if bytes[j] == b'0' { b'1' } else { b'0' };
            *value = String::from_utf8(bytes).unwrap();
            let shown = value.clone();
            prop_assert!(!verifies(&policy, path, tampered, &body), "{:?}: a changed signature fails ({})", policy.scheme, shown);
        }
    }
}
