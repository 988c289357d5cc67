//! AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256 ...` with `X-Amz-Date`), header
//! form only; the credential scope must name the configured region and service.

use crate::config::{AwsSigv4Settings, Key};
use crate::crypto::{self, Algorithm};
use crate::verify::{no_match, within, Reject, Request, Verified};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parsed `Authorization` header and what the canonical request needs besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    key_index: usize,
    amz_date: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: Vec<u8>,
    content_sha256: Option<String>,
}

fn malformed(why: &str) -> Reject {
    Reject::Malformed(why.to_string())
}

/// Reads `Authorization` and `X-Amz-Date`, checks the scope and the time and picks the key by
/// access key id.
pub fn prepare(
    settings: &AwsSigv4Settings,
    keys: &[Key],
    req: &Request,
    now: u64,
    tolerance: u64,
) -> Result<Prepared, Reject> {
    let auth = match req.header("authorization") {
        Some(a) if !a.trim().is_empty() => a.trim(),
        _ => return Err(Reject::Missing("Authorization".into())),
    };
    let fields = auth
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with(' '))
        .ok_or_else(|| malformed("Authorization is not AWS4-HMAC-SHA256."))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(malformed("Authorization has an unknown field.")),
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(malformed(
            "Authorization needs Credential, SignedHeaders and Signature.",
        ));
    };
    let scope_parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope_parts.as_slice() else {
        return Err(malformed(
            "The credential is not <key>/<date>/<region>/<service>/aws4_request.",
        ));
    };
    // A signature made for another service or region (another API, another deployment) never
    // authorizes a request here.
    if *region != settings.region || *service != settings.service {
        return Err(Reject::WrongScope(format!(
            "The credential scope must name region {} and service {}.",
            settings.region, settings.service
        )));
    }
    let amz_date = match req.header("x-amz-date") {
        Some(d) => d.trim(),
        None => return Err(malformed("The X-Amz-Date header is missing.")),
    };
    let timestamp =
        parse_amz_date(amz_date).ok_or_else(|| malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ."))?;
    if !amz_date.starts_with(date) || date.len() != 8 {
        return Err(malformed("The credential date is not the X-Amz-Date day."));
    }
    within(timestamp, now, tolerance)?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(malformed("SignedHeaders must include host."));
    }
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || req.header(h).is_none())
    {
        return Err(Reject::Invalid("A signed header is missing.".into()));
    }
    // A session token is forwarded, never validated here: it must at least be signed, so that
    // nobody adds or swaps one on a signed request.
    if req.header("x-amz-security-token").is_some()
        && !signed_headers.iter().any(|h| h == "x-amz-security-token")
    {
        return Err(Reject::Invalid(
            "X-Amz-Security-Token must be a signed header.".into(),
        ));
    }
    let signature = match hex::decode(signature) {
        Ok(s) if s.len() == 32 => s,
        _ => return Err(malformed("Signature is not 32 bytes of hex.")),
    };
    let content_sha256 = match req.header("x-amz-content-sha256") {
        None => None,
        Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(v.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(malformed(
                "X-Amz-Content-Sha256 must be the hex SHA-256 of the body (unsigned and streaming payloads are not accepted).",
            ))
        }
    };
    let key_index = keys
        .iter()
        .position(|k| k.id == *access_key)
        .ok_or_else(no_match)?;
    Ok(Prepared {
        key_index,
        amz_date: amz_date.to_string(),
        date: (*date).to_string(),
        region: (*region).to_string(),
        service: (*service).to_string(),
        signed_headers,
        signature,
        content_sha256,
    })
}

/// Builds the canonical request over the body and checks the signature.
pub fn verify(
    prepared: &Prepared,
    keys: &[Key],
    req: &Request,
    body: &[u8],
) -> Result<Verified, Reject> {
    let body_hash = hex::encode(crypto::sha256(body));
    if prepared
        .content_sha256
        .as_ref()
        .is_some_and(|declared| *declared != body_hash)
    {
        return Err(Reject::Invalid(
            "The body does not match X-Amz-Content-Sha256.".into(),
        ));
    }
    let key = keys.get(prepared.key_index).ok_or_else(no_match)?;
    let canonical = canonical_request(req, &prepared.service, &prepared.signed_headers, &body_hash);
    let mac = signature(
        &key.bytes,
        &prepared.amz_date,
        &prepared.date,
        &prepared.region,
        &prepared.service,
        &canonical,
    );
    if crypto::matches_any(&mac, std::slice::from_ref(&prepared.signature)) {
        Ok(Verified {
            key_index: prepared.key_index,
            replay_id: hex::encode(&prepared.signature),
        })
    } else {
        Err(no_match())
    }
}

/// The SigV4 signature of a canonical request: string to sign over `amz_date` and the scope
/// `date/region/service/aws4_request`, under the key derived from `secret`. Used by the filter
/// and by the `wasmgate sign` CLI.
pub fn signature(
    secret: &[u8],
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> Vec<u8> {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(crypto::sha256(canonical.as_bytes()))
    );
    let mut signing_key = [b"AWS4".as_slice(), secret].concat();
    for part in [date, region, service, "aws4_request"] {
        signing_key = crypto::mac(Algorithm::Sha256, &signing_key, &[part.as_bytes()]);
    }
    crypto::mac(
        Algorithm::Sha256,
        &signing_key,
        &[string_to_sign.as_bytes()],
    )
}

/// The SigV4 canonical request.
pub fn canonical_request(
    req: &Request,
    service: &str,
    signed: &[String],
    payload_hash: &str,
) -> String {
    let mut out = String::new();
    out.push_str(&req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path_only(), service == "s3"));
    out.push('\n');
    out.push_str(&canonical_query(req.query().unwrap_or_default()));
    out.push('\n');
    for name in signed {
        let values: Vec<String> = req
            .header_values(name)
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

fn canonical_uri(path: &str, s3: bool) -> String {
    if path.is_empty() {
        return "/".into();
    }
    if s3 {
        // S3 signs the path as sent, encoded once and not normalized.
        return path
            .split('/')
            .map(|seg| uri_encode(&percent_decode(seg)))
            .collect::<Vec<_>>()
            .join("/");
    }
    // Other services: remove dot segments and empty segments, then encode the (already
    // encoded) segments once more.
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = path.ends_with('/') && !segments.is_empty();
    let mut out = String::from("/");
    out.push_str(
        &segments
            .iter()
            .map(|s| uri_encode(s.as_bytes()))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if trailing {
        out.push('/');
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` to Unix seconds.
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant), for years >= 1970.
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{check, policy, vectors};

    /// Parses the test suite's `header-signed-request.txt` into a request and a body.
    fn signed_request(text: &str) -> (Request, Vec<u8>) {
        let (head, body) = text.split_once("\n\n").unwrap();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap().split(' ');
        let method = first.next().unwrap();
        let path = first.next().unwrap();
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
        ];
        for line in lines {
            let (name, value) = line.split_once(':').unwrap();
            let name = name.to_ascii_lowercase();
            if name == "host" {
                headers.push((":authority".into(), value.into()));
            } else {
                headers.push((name, value.into()));
            }
        }
        (Request::from_headers(headers), body.as_bytes().to_vec())
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        for bad in [
            "2015-08-30T12:36:00Z",
            "20151330T123600Z",
            "20150830T123600",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn aws_test_suite_six_cases() {
        let v = vectors("sigv4.json");
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 6);
        for case in cases {
            let name = case["case"].as_str().unwrap();
            let ctx = &case["context"];
            let pinned = |region: &str, service: &str| {
                policy(&format!(
                    r#"{{"scheme": "aws_sigv4", "timestamp_tolerance": "15m",
                        "replay": {{"ttl": "30m"}},
                        "aws_sigv4": {{"region": "{region}", "service": "{service}"}},
                        "secrets": [
                        {{"id": "AKIDOTHER", "value": "nope"}},
                        {{"id": "{}", "value": "{}"}}]}}"#,
                    ctx["credentials"]["access_key_id"].as_str().unwrap(),
                    ctx["credentials"]["secret_access_key"].as_str().unwrap()
                ))
            };
            let (region, service) = (
                ctx["region"].as_str().unwrap(),
                ctx["service"].as_str().unwrap(),
            );
            let p = pinned(region, service);
            let (req, body) = signed_request(case["header-signed-request.txt"].as_str().unwrap());
            let now = parse_amz_date("20150830T123600Z").unwrap();
            let auth = req.header("authorization").unwrap();
            assert_eq!(
                auth,
                case["expected_Authorization_header_value"]
                    .as_str()
                    .unwrap()
            );
            // Our canonical request is the suite's, byte for byte.
            let Ok(crate::verify::Pending::AwsSigv4(prepared)) =
                crate::verify::prepare(&p, &req, now)
            else {
                panic!("{name}: prepare failed")
            };
            let canonical = canonical_request(
                &req,
                &prepared.service,
                &prepared.signed_headers,
                &hex::encode(crypto::sha256(&body)),
            );
            assert_eq!(
                canonical,
                case["header-canonical-request.txt"].as_str().unwrap(),
                "{name}"
            );
            let ok = check(&p, &req, &body, now).unwrap();
            assert_eq!(ok.key_index, 1, "{name}");
            assert_eq!(ok.replay_id, case["header-signature.txt"].as_str().unwrap());
            // Tampering: body, method, a stale clock.
            let mut longer = body.clone();
            longer.push(b'x');
            let tampered = check(&p, &req, &longer, now).unwrap_err();
            assert_eq!(tampered.code(), "invalid_signature", "{name}");
            let mut other = req.clone();
            other.method = "PUT".into();
            assert_eq!(
                check(&p, &other, &body, now).unwrap_err(),
                no_match(),
                "{name}"
            );
            assert_eq!(
                check(&p, &req, &body, now + 901).unwrap_err(),
                Reject::Stale,
                "{name}"
            );
            // The same signature where another region or service is configured.
            for other in [pinned("eu-west-1", service), pinned(region, "execute-api")] {
                let err = check(&other, &req, &body, now).unwrap_err();
                assert_eq!(err.code(), "wrong_credential_scope", "{name}");
                assert_eq!(err.status(), 401);
            }
            // A session token: the suite's signs it (and it passes above); one that is sent
            // but not signed is refused.
            let has_token = ctx["credentials"].get("token").is_some();
            assert_eq!(
                req.header("x-amz-security-token").is_some(),
                has_token,
                "{name}"
            );
            if !has_token {
                let mut added = req.clone();
                added
                    .headers
                    .push(("x-amz-security-token".into(), "injected".into()));
                assert_eq!(
                    check(&p, &added, &body, now).unwrap_err().message(),
                    "X-Amz-Security-Token must be a signed header.",
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn malformed_and_missing() {
        let p = policy(
            r#"{"scheme": "aws_sigv4", "secrets": [{"id": "AKID", "value": "s"}],
                "aws_sigv4": {"region": "us-east-1", "service": "service"}}"#,
        );
        let now = 1_440_938_160;
        let r = |headers: &[(&str, &str)]| crate::verify::tests::request("GET", "/", headers);
        assert_eq!(
            check(&p, &r(&[]), b"", now).unwrap_err(),
            Reject::Missing("Authorization".into())
        );
        let cases = [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKID/20150831/us-east-1/service/aws4_request, SignedHeaders=host, Signature=00",
        ];
        for auth in cases {
            let err = check(
                &p,
                &r(&[("authorization", auth), ("x-amz-date", "20150830T123600Z")]),
                b"",
                now,
            )
            .unwrap_err();
            assert_eq!(err.code(), "malformed_signature", "{auth}");
        }
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature={}",
            "00".repeat(32)
        );
        let no_date = check(&p, &r(&[("authorization", &auth)]), b"", now).unwrap_err();
        assert_eq!(no_date.code(), "malformed_signature");
        let unsigned = r(&[
            ("authorization", &auth),
            ("x-amz-date", "20150830T123600Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ]);
        assert_eq!(
            check(&p, &unsigned, b"", now).unwrap_err().code(),
            "malformed_signature"
        );
        let unknown_key = auth.replace("AKID/", "AKIDX/");
        let err = check(
            &p,
            &r(&[
                ("authorization", &unknown_key),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            b"",
            now,
        )
        .unwrap_err();
        assert_eq!(err, no_match());
    }

    #[test]
    fn uri_and_query_canonicalisation() {
        assert_eq!(canonical_uri("/a/./b/../c//d/", false), "/a/c/d/");
        assert_eq!(
            canonical_uri("/documents%20and%20settings/", false),
            "/documents%2520and%2520settings/"
        );
        assert_eq!(canonical_uri("/a%20b", true), "/a%20b");
        assert_eq!(canonical_uri("", false), "/");
        assert_eq!(canonical_query("b=2&a=%7e&a=1&c"), "a=1&a=~&b=2&c=");
        assert_eq!(percent_decode("%4"), b"%4");
    }
}
