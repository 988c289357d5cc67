//! wasmgate retry: per-route retry policy with backoff, a retry budget and a circuit breaker per
//! upstream shared by all workers, and idempotency safety. [`filter`] holds the filter's hooks on
//! the wasmgate frame; the decisions live in [`policy`], [`attempt`], [`budget`] and [`breaker`].
//!
//! Router mode sets `x-envoy-*` retry headers for Envoy's router. Filter mode sends the first
//! attempt through the router, keeps the request in the stream's own state and sends each retry
//! as a callout to a loopback cluster that re-enters the route table; the frame waits between
//! them (root timer) and answers the client with the final upstream response.

pub mod attempt;
pub mod breaker;
pub mod budget;
pub mod config;
pub mod filter;
pub mod policy;

wasmgate_host::export!(filter::Retry);
