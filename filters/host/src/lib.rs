//! The wasmgate filter frame: everything that touches proxy-wasm. A filter implements
//! [`Filter`] (its hooks return [`wasmgate_core::Outcome`] values) and exports itself with
//! [`export!`]; the generic contexts here own configuration, buffering, callouts, waits, replies,
//! header writes and the log level. Filter crates reach proxy-wasm only through this crate.

pub mod context;
pub mod env;
pub mod fake;
pub mod filter;
pub mod frame;
pub mod proxy;

pub use env::{Direction, Env};
pub use filter::{select, Counter, CounterSet, Cx, Filter, Gauge, RootCx, Setup, Uses};
pub use proxy::ProxyHost;

#[doc(hidden)]
pub use proxy_wasm;

/// Exports a filter as the module's entry point: `wasmgate_host::export!(RateLimit);`.
///
/// Only in the Wasm build: natively (unit tests, the `wasmgate` CLI linking every filter)
/// several `_initialize` symbols would collide.
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
