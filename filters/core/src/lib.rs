//! Shared building blocks of every wasmgate filter.
//!
//! Everything here that decides is a pure function over plain values so that filters can be
//! unit-tested natively; the only module touching the proxy-wasm host is [`host::ProxyHost`].

pub mod clock;
pub mod config;
pub mod host;
pub mod metrics;
pub mod reply;
pub mod rules;
pub mod shared;

pub use config::{ConfigError, Duration, Secret};
pub use reply::LocalReply;
pub use rules::{Match, RequestInfo};

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
