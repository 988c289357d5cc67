//! Chains (the bundle's root id `chain`): the configuration loader, and whole requests through a
//! chain whose stages hold bodies, callouts, waits and replies.

use crate::drive;
use std::sync::OnceLock;
use wasmgate_host::chain::Chain;
use wasmgate_host::context::{set_bundle_entries, Entry};

/// The filters of the bundle module (bundle/src/lib.rs lists the same), the stages a chain may
/// name.
static BUNDLE: &[Entry] = &[
    Entry::of::<credential_inject::filter::CredentialInject>(),
    Entry::of::<hmac_auth::filter::HmacAuth>(),
    Entry::of::<jwt_auth::filter::JwtAuth>(),
    Entry::of::<key_auth::filter::KeyAuth>(),
    Entry::of::<rate_limit::filter::RateLimit>(),
    Entry::of::<retry::filter::Retry>(),
    Entry::of::<transform::filter::Transform>(),
    Entry::of::<Chain>(),
];

/// The chain the request target runs: transform (every operation, bodies both ways),
/// rate-limit (local and global limits: a gRPC callout), transform again, jwt-auth (a remote
/// JWKS: a wait and a plugin callout), each with its rich configuration.
pub fn rich_chain() -> &'static [u8] {
    static CHAIN: OnceLock<Vec<u8>> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let config = |bytes: &[u8]| -> serde_json::Value {
            serde_json::from_slice(bytes).unwrap_or_default()
        };
        use crate::targets::configs;
        let chain = serde_json::json!({"stages": [
            {"filter": "transform", "config": config(configs::TRANSFORM)},
            {"filter": "rate-limit", "config": config(configs::RATE_LIMIT)},
            {"filter": "transform", "name": "second", "config": config(configs::TRANSFORM)},
            {"filter": "jwt-auth", "config": config(configs::JWT_AUTH)},
        ]});
        chain.to_string().into_bytes()
    })
}

/// The chain's configuration loader: every stage through its filter's.
pub fn config_chain(data: &[u8]) {
    set_bundle_entries(BUNDLE);
    drive::config::<Chain>(data);
}

/// A request through [`rich_chain`] (the format of [`drive::request`]: the request, the answer
/// to every callout, the upstream response).
pub fn chain_request(data: &[u8]) {
    set_bundle_entries(BUNDLE);
    drive::request::<Chain>(rich_chain(), data);
}

/// Whether the chain accepts [`rich_chain`].
pub fn rich_chain_accepted() -> bool {
    set_bundle_entries(BUNDLE);
    let env = wasmgate_host::fake::FakeEnv::at(drive::DEFAULT_NOW_MS);
    drive::configure::<Chain>(&env, rich_chain()).is_some()
}
