//! Targets of fetched documents shared between workers: hmac-auth's JWKS (a document an
//! identity provider serves) and the shared fetch state any worker or module version wrote.

use crate::input::words;

/// The most keys the `hmac_jwks` target allows a document.
const MAX_KEYS: usize = 16;

/// A JWKS document for RFC 9421 keys: never more than the allowed keys, never a `kid` twice,
/// never an empty set.
pub fn hmac_jwks(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = hmac_auth::jwks::parse_document(text, MAX_KEYS) {
        assert!(!keys.is_empty() && keys.len() <= MAX_KEYS);
        for (i, key) in keys.iter().enumerate() {
            assert!(
                keys[..i].iter().all(|other| other.id != key.id),
                "kid twice"
            );
        }
    }
}

/// The shared fetch state: whatever bytes it holds decode, encode and decode to the same state,
/// and the state machine keeps its promises (a claim holds a fetch, a success clears backoff, a
/// failure keeps the document and backs off within its bound).
pub fn state_fetch(data: &[u8]) {
    use wasmgate_core::fetched::SharedFetch;
    let (numbers, bytes) = words(data, 2);
    let now = numbers.first().copied().unwrap_or(0);
    let cache_ms = numbers.get(1).copied().unwrap_or(0);
    let state = SharedFetch::decode(bytes);
    assert_eq!(SharedFetch::decode(&state.encode()), state, "round trip");

    let mut fetching = state.clone();
    // (A clock at the end of u64 saturates the claim: not a time a host gives.)
    if fetching.due(now, cache_ms) && now < u64::MAX / 2 {
        fetching.claim(now, 2_000);
        assert!(!fetching.due(now, cache_ms), "a claimed fetch is due again");
    }
    let mut failed = state.clone();
    failed.failed(now, 1_000, 30_000);
    assert_eq!(
        failed.document, state.document,
        "a failure drops the document"
    );
    assert!(
        failed.next_attempt <= now.saturating_add(30_000),
        "backoff over its bound"
    );
    let mut succeeded = failed;
    succeeded.succeeded(now, "{}".into());
    assert_eq!(succeeded.failures, 0);
    assert_eq!(SharedFetch::decode(&succeeded.encode()), succeeded);
}
