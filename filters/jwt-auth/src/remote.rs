//! Remote JWKS fetching: the timings of the fetch state every worker of an Envoy process shares
//! ([`wasmgate_core::fetched::SharedFetch`], one value per remote provider), and the check of a
//! fetched document.

/// Minimum time between two refetches triggered by an unknown `kid`.
pub const KID_REFETCH_INTERVAL_MS: u64 = 30_000;
/// Longest wait between retries after failed fetches (default of `retry_back_off.max_interval`).
pub const MAX_RETRY_MS: u64 = 30_000;
/// First wait after a failed fetch (default of `retry_back_off.base_interval`).
pub const BASE_RETRY_MS: u64 = 1_000;

/// Validates a fetched body: status 200, within the size cap, a JWKS with a usable key.
pub fn accept_response(
    status: Option<&str>,
    body: Option<&[u8]>,
    max_bytes: usize,
    limits: &crate::jwks::KeyLimits,
) -> Result<String, String> {
    if status != Some("200") {
        return Err(format!("status {}", status.unwrap_or("none")));
    }
    let body = body.ok_or("empty body")?;
    if body.len() > max_bytes {
        return Err(format!("body over {max_bytes} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let jwks = crate::jwks::Jwks::parse_limited(text, limits)?;
    if jwks.keys.is_empty() {
        return Err("no usable key".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_checked() {
        let l = crate::jwks::KeyLimits::default();
        let ok = br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        assert!(accept_response(Some("200"), Some(ok), 1024, &l).is_ok());
        assert!(accept_response(Some("503"), Some(ok), 1024, &l).is_err());
        assert!(accept_response(Some("200"), Some(ok), 10, &l).is_err());
        assert!(accept_response(Some("200"), Some(b"{\"keys\": []}"), 1024, &l).is_err());
        assert!(accept_response(Some("200"), Some(b"<html>"), 1024, &l).is_err());
        assert!(accept_response(Some("200"), None, 1024, &l).is_err());
        let one_key = crate::jwks::KeyLimits { max_keys: 1, ..l };
        let two =
            br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "oct", "k": "c2VjcmV0"}]}"#;
        let e = accept_response(Some("200"), Some(two), 1024, &one_key).unwrap_err();
        assert!(e.contains("max_keys"), "{e}");
    }
}
