use super::*;

const T0: u64 = 1_800_000_000_000;

fn fetched(lifetime_ms: u64, refresh_before_ms: u64) -> SharedToken {
    let mut state = SharedToken::default();
    assert!(state.due(T0), "no token yet");
    state.claim(T0, 2_000);
    assert!(!state.due(T0 + 100), "one fetch at a time");
    state.succeeded(T0, "tok-1".into(), lifetime_ms, refresh_before_ms);
    state
}

#[test]
fn a_first_token_is_pending_until_the_first_fetch_ends() {
    let mut state = SharedToken::default();
    assert_eq!(state.availability(T0), Availability::Pending);
    state.claim(T0, 2_000);
    assert_eq!(state.availability(T0 + 1_000), Availability::Pending);
    state.failed(T0 + 1_500);
    assert_eq!(state.availability(T0 + 1_600), Availability::Unavailable);
}

#[test]
fn refreshed_ahead_of_expiry() {
    let state = fetched(3_600_000, 60_000);
    assert_eq!(
        state.availability(T0 + 1),
        Availability::Ready("tok-1".into(), 1)
    );
    assert!(!state.due(T0 + 3_539_999));
    assert!(state.due(T0 + 3_540_000));
    assert_eq!(state.usable(T0 + 3_599_999), Some("tok-1"));
    assert_eq!(state.usable(T0 + 3_600_000), None, "expired");
}

#[test]
fn a_short_token_is_not_refetched_continuously() {
    // Lifetime 30 s, refresh_before 60 s: refresh at half the lifetime, not at once.
    let state = fetched(30_000, 60_000);
    assert!(!state.due(T0 + 14_999));
    assert!(state.due(T0 + 15_000));
}

#[test]
fn while_the_endpoint_is_down_the_token_is_used_until_it_expires() {
    let mut state = fetched(120_000, 60_000);
    state.claim(T0 + 60_000, 2_000);
    state.failed(T0 + 61_000);
    assert_eq!(state.usable(T0 + 100_000), Some("tok-1"));
    assert!(!state.due(T0 + 61_500), "backoff 1 s");
    assert!(state.due(T0 + 62_000));
    state.claim(T0 + 62_000, 2_000);
    state.failed(T0 + 62_500);
    assert!(!state.due(T0 + 64_000), "backoff 2 s");
    assert!(state.due(T0 + 64_500));
    assert_eq!(state.availability(T0 + 120_000), Availability::Unavailable);
}

#[test]
fn backoff_is_capped_and_never_overflows() {
    let mut state = SharedToken::default();
    for _ in 0..100 {
        state.failed(T0);
    }
    assert_eq!(state.next_attempt, T0 + MAX_RETRY_MS);
    state.failures = u32::MAX;
    state.failed(u64::MAX);
    assert_eq!(state.next_attempt, u64::MAX);
    let mut late = SharedToken::default();
    late.succeeded(u64::MAX - 1, "t".into(), u64::MAX, u64::MAX);
    assert_eq!(late.expires_at, u64::MAX);
}

#[test]
fn a_purge_drops_only_the_token_it_names_and_limits_refetches() {
    let mut state = fetched(3_600_000, 60_000);
    assert!(!state.purge(0), "an older generation");
    assert!(state.purge(1));
    assert!(!state.purge(1), "already dropped");
    assert_eq!(state.usable(T0 + 1), None);
    assert_eq!(state.availability(T0 + 1), Availability::Pending);
    assert!(
        !state.due(T0 + 4_999),
        "not sooner than 5 s after the fetch"
    );
    assert!(state.due(T0 + 5_000));
}

#[test]
fn garbage_decodes_to_the_initial_state() {
    assert_eq!(SharedToken::decode(b"not json"), SharedToken::default());
    let state = fetched(1_000, 0);
    assert_eq!(SharedToken::decode(&state.encode()), state);
}
