//! wasmgate key-auth: API-key authentication. Clients hold several keys (rotation with
//! `not_before` / `not_after`), keys are kept only as SHA-256 digests, and rules scope routes by
//! required scopes or allowed clients. [`filter`] holds the hooks; [`extract`] finds the key in a
//! request, [`keys`] looks it up, [`config`] compiles the configuration.

pub mod config;
pub mod extract;
pub mod filter;
pub mod keys;

wasmgate_host::export!(filter::KeyAuth);
