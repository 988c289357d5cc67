//! Shared building blocks of every wasmgate filter.
//!
//! This crate has no proxy-wasm dependency (`make lint` checks it): everything here is a value or
//! a pure function over values, so every decision is unit-tested natively. The frame that talks
//! to the host is crate `wasmgate-host`.

pub mod clock;
pub mod config;
pub mod edits;
pub mod fetched;
pub mod host;
pub mod metrics;
pub mod outcome;
pub mod path;
pub mod policies;
pub mod reply;
pub mod request;
pub mod rls;
pub mod rules;
pub mod shared;

pub use config::{ConfigError, Duration, Secret};
pub use edits::HeaderEdits;
pub use outcome::{Answer, Body, BodyMode, BodyNeed, Callout, Outcome, Response};
pub use policies::{Policies, Selected};
pub use reply::LocalReply;
pub use request::RequestInfo;
pub use rules::Match;

/// FNV-1a, 64 bits: a fast, stable hash for shared-data slot numbers and namespaces (never for
/// anything a client could exploit by choosing collisions on purpose).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The module's build identity (`<crate> <version> (commit <git commit>)`), logged once at VM start.
///
/// A macro so that the crate name and version are those of the filter that uses it; the commit
/// comes from `WASMGATE_GIT_COMMIT`, which the Makefile exports at build time.
#[macro_export]
macro_rules! build_identity {
    () => {
        format!(
            "{} {} (commit {})",
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            option_env!("WASMGATE_GIT_COMMIT").unwrap_or("unknown")
        )
    };
}
