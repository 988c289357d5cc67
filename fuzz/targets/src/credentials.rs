//! Targets of the filters that hold credentials: key-auth (a request's keys, its configuration)
//! and credential-inject (a request, the token endpoint's answer, the shared token state another
//! worker or module version wrote, its configuration).

use crate::drive;
use crate::input::{split_once, text};

/// Rich configurations of these filters.
pub mod credential_configs {
    /// key-auth: every key source, rotation periods, scopes and allowed clients per route.
    pub const KEY_AUTH: &[u8] = include_bytes!("../configs/key_auth.json");
    /// credential-inject: an OAuth2 grant and a static header, per host.
    pub const CREDENTIAL_INJECT: &[u8] = include_bytes!("../configs/credential_inject.json");
}

/// A request through key-auth (keys in headers, query, cookies; repeated and ambiguous ones).
pub fn key_auth_request(data: &[u8]) {
    drive::request::<key_auth::filter::KeyAuth>(credential_configs::KEY_AUTH, data);
}

/// key-auth's configuration loader.
pub fn config_key_auth(data: &[u8]) {
    drive::config::<key_auth::filter::KeyAuth>(data);
}

/// A request through credential-inject, with the token endpoint's answer and the upstream's.
pub fn credential_inject_request(data: &[u8]) {
    drive::request::<credential_inject::filter::CredentialInject>(
        credential_configs::CREDENTIAL_INJECT,
        data,
    );
}

/// credential-inject's configuration loader.
pub fn config_credential_inject(data: &[u8]) {
    drive::config::<credential_inject::filter::CredentialInject>(data);
}

/// A token endpoint's answer: `<status>\n<body>`. A usable token is printable and bounded, and
/// no reason for refusing one repeats the body.
pub fn token_answer(data: &[u8]) {
    use credential_inject::fetch::{token, MAX_TOKEN_BYTES};
    use wasmgate_core::Answer;
    let (status, body) = split_once(data, b"\n");
    let answer = Answer::Http {
        headers: vec![(":status".into(), text(status))],
        body: body.unwrap_or_default().to_vec(),
    };
    match token(answer) {
        Ok(t) => {
            assert!(!t.value.is_empty() && t.value.len() <= MAX_TOKEN_BYTES);
            assert!(t.value.bytes().all(|b| b.is_ascii_graphic()));
            assert!(t.lifetime_ms > 0);
        }
        Err(reason) => assert!(reason.len() < 200, "reasons are short, never the body"),
    }
}

/// The shared token state as another worker or module version left it: every operation at
/// times taken from the input keeps the state decodable and never panics.
pub fn state_token(data: &[u8]) {
    use credential_inject::token::SharedToken;
    let (words, bytes) = crate::input::words(data, 3);
    let now = words.first().copied().unwrap_or(0);
    let lifetime = words.get(1).copied().unwrap_or(0);
    let refresh_before = words.get(2).copied().unwrap_or(0);
    let mut state = SharedToken::decode(bytes);
    let _ = state.availability(now);
    if state.due(now) {
        state.claim(now, lifetime);
    }
    state.succeeded(now, "t".into(), lifetime, refresh_before);
    assert!(state.refresh_at <= state.expires_at);
    let generation = state.generation;
    state.failed(now);
    let _ = state.purge(generation);
    assert_eq!(SharedToken::decode(&state.encode()), state);
}
