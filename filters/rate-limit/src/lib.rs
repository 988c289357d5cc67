//! wasmgate rate-limit: token bucket, fixed and sliding window limits per key, exact across
//! Envoy workers, or a rate limit service shared by many Envoys. [`filter`] holds the filter's
//! hooks; the decisions live in the other modules.

pub mod algorithm;
pub mod config;
pub mod filter;
pub mod global;
pub mod headers;
pub mod key;
pub mod request;
pub mod store;

wasmgate_host::export!(filter::RateLimit);
