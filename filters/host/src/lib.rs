//! The wasmgate filter frame: everything that touches proxy-wasm. A filter implements
//! [`Filter`] (its hooks return [`wasmgate_core::Outcome`] values) and exports itself with
//! [`export!`]; the generic contexts here own configuration, buffering, callouts, waits, replies,
//! header writes and the log level. Filter crates reach proxy-wasm only through this crate.

#[cfg(feature = "bundle")]
pub mod chain;
pub mod context;
pub mod env;
pub mod fake;
pub mod filter;
pub mod frame;
pub mod logging;
pub mod proxy;

pub use env::{Direction, Env};
pub use filter::{
    select, Counter, CounterSet, Cx, Filter, Gauge, MetricNames, RootCx, Setup, Uses,
};
pub use proxy::ProxyHost;

#[doc(hidden)]
pub use proxy_wasm;

/// Exports a filter as the module's entry point: `wasmgate_host::export!(RateLimit);`.
///
/// Only in the Wasm build: natively (unit tests, the `wasmgate` CLI linking every filter)
/// several `_initialize` symbols would collide. With the `bundle` feature (the bundle module
/// `wasmgate.wasm` linking every filter crate, see [`export_bundle!`]) it exports nothing.
#[cfg(not(feature = "bundle"))]
#[macro_export]
macro_rules! export {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        $crate::proxy_wasm::main! {{
            $crate::context::start::<$filter>(
                concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
                option_env!("WASMGATE_GIT_COMMIT").unwrap_or("unknown"),
            );
        }}
    };
}

/// With the `bundle` feature, a filter crate's own `export!` exports nothing: the bundle module
/// is the entry point ([`export_bundle!`]).
#[cfg(feature = "bundle")]
#[macro_export]
macro_rules! export {
    ($filter:ty) => {};
}

/// Exports several filters as one module, each plugin choosing its filter by `root_id` (the
/// filter's name): `wasmgate_host::export_bundle!(FILTERS);` with
/// `const FILTERS: &[wasmgate_host::context::Entry] = &[Entry::of::<KeyAuth>(), ...];`. Plugins
/// that share the module and a `vm_id` share one VM per worker. Needs the `bundle` feature (which
/// silences the filter crates' own [`export!`]); only in the Wasm build.
#[macro_export]
macro_rules! export_bundle {
    ($filters:expr) => {
        #[cfg(target_arch = "wasm32")]
        $crate::proxy_wasm::main! {{
            $crate::context::start_bundle(
                concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
                option_env!("WASMGATE_GIT_COMMIT").unwrap_or("unknown"),
                $filters,
            );
        }}
    };
}
