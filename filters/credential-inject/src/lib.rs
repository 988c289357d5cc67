//! wasmgate credential-inject: the mesh holds third-party API credentials, services don't. An
//! OAuth2 client-credentials token is fetched once per Envoy process, shared by every worker,
//! refreshed ahead of its expiry and dropped when the upstream refuses it; a static credential is
//! set as a header. [`filter`] holds the hooks; [`token`] the shared token state, [`fetch`] the
//! token request and answer, [`config`] the configuration.

pub mod config;
pub mod fetch;
pub mod filter;
pub mod token;

wasmgate_host::export!(filter::CredentialInject);
