//! wasmgate.wasm: every wasmgate filter in one module. Each plugin chooses its filter by its
//! `root_id`, the filter's name (`key-auth`); an unknown or empty root id is refused at load.
//! Plugins that share this module and a `vm_id` share one VM per Envoy worker, whichever
//! filters they run (README.md). Root id `chain` runs several of them in order, as one plugin
//! ([`wasmgate_host::chain`]).

use wasmgate_host::context::Entry;

/// The filters of the module, by root id (each behind its cargo feature, all on by default).
pub const FILTERS: &[Entry] = &[
    #[cfg(feature = "credential-inject")]
    Entry::of::<credential_inject::filter::CredentialInject>(),
    #[cfg(feature = "hmac-auth")]
    Entry::of::<hmac_auth::filter::HmacAuth>(),
    #[cfg(feature = "jwt-auth")]
    Entry::of::<jwt_auth::filter::JwtAuth>(),
    #[cfg(feature = "key-auth")]
    Entry::of::<key_auth::filter::KeyAuth>(),
    #[cfg(feature = "rate-limit")]
    Entry::of::<rate_limit::filter::RateLimit>(),
    #[cfg(feature = "retry")]
    Entry::of::<retry::filter::Retry>(),
    #[cfg(feature = "transform")]
    Entry::of::<transform::filter::Transform>(),
    Entry::of::<wasmgate_host::chain::Chain>(),
];

wasmgate_host::export_bundle!(FILTERS);

#[cfg(test)]
mod tests {
    // Test-only code: failing loudly is the point.
    #![allow(clippy::unwrap_used)]

    use super::FILTERS;
    use wasmgate_host::context::select_root;

    /// The filters of the default features (every filter) in root id order, then the chain.
    const ALL: [&str; 8] = [
        "credential-inject",
        "hmac-auth",
        "jwt-auth",
        "key-auth",
        "rate-limit",
        "retry",
        "transform",
        "chain",
    ];

    #[test]
    fn every_filter_is_selected_by_its_name() {
        let ids: Vec<&str> = FILTERS.iter().map(|f| f.root_id()).collect();
        let enabled: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|id| match *id {
                "credential-inject" => cfg!(feature = "credential-inject"),
                "hmac-auth" => cfg!(feature = "hmac-auth"),
                "jwt-auth" => cfg!(feature = "jwt-auth"),
                "key-auth" => cfg!(feature = "key-auth"),
                "rate-limit" => cfg!(feature = "rate-limit"),
                "retry" => cfg!(feature = "retry"),
                "transform" => cfg!(feature = "transform"),
                _ => true,
            })
            .collect();
        assert_eq!(ids, enabled);
        for (index, id) in ids.iter().enumerate() {
            assert_eq!(select_root(FILTERS, id).unwrap(), index);
        }
    }

    #[test]
    #[cfg(all(
        feature = "credential-inject",
        feature = "hmac-auth",
        feature = "jwt-auth",
        feature = "key-auth",
        feature = "rate-limit",
        feature = "retry",
        feature = "transform"
    ))]
    fn unknown_and_empty_root_ids_are_refused_naming_the_valid_ones() {
        for (root_id, given) in [
            ("keyauth", "unknown root_id \"keyauth\""),
            ("", "an empty root_id"),
            ("Key-Auth", "unknown root_id \"Key-Auth\""),
        ] {
            let line = select_root(FILTERS, root_id).unwrap_err();
            assert_eq!(
                line,
                format!(
                    "wasmgate bundle: {given}: the plugin's root_id selects the filter of this \
                     module, one of: credential-inject, hmac-auth, jwt-auth, key-auth, \
                     rate-limit, retry, transform, chain"
                )
            );
        }
    }
}
