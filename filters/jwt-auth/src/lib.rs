//! wasmgate jwt-auth: JWT authentication at parity with Envoy's jwt_authn, plus remote JWKS
//! rotation without restarts, `claims` checks and a verified-token cache.
//!
//! [`filter`] holds the filter's hooks: it reads the request, calls [`decide::evaluate`] and
//! turns the verdict into an outcome; [`keys`] keeps each worker's view of the remote key sets
//! and runs their fetches from the plugin's timer.

pub mod cache;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod decide;
pub mod discovery;
pub mod extract;
pub mod failure;
pub mod filter;
pub mod foreign;
pub mod introspect;
pub mod jwks;
pub mod jws;
pub mod keys;
pub mod remote;

wasmgate_host::export!(filter::JwtAuth);
