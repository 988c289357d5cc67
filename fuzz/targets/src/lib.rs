//! wasmgate's fuzz targets: one `pub fn <target>(data: &[u8])` per parser or decision that takes
//! untrusted bytes (a request, a fetched document, a shared-data value another module version
//! wrote, a configuration). Each calls the filters' real functions and must never panic: a panic
//! inside a Proxy-Wasm filter aborts the VM and fails every later stream of that Envoy worker.
//!
//! The cargo-fuzz crate (`fuzz/`, nightly, `make fuzz`) wraps each function in a libFuzzer
//! target; `tests/replay.rs` runs every committed corpus and crash input through the same
//! functions on the stable toolchain (`make test`). [`TARGETS`] lists them all.

pub mod chains;
pub mod credentials;
pub mod documents;
pub mod drive;
pub mod input;
pub mod legacy;
pub mod targets;

pub use chains::*;
pub use credentials::*;
pub use documents::*;
pub use legacy::*;
pub use targets::*;

/// A fuzz target: its name (the directory under `fuzz/corpus/` and `fuzz/artifacts/`, and the
/// file under `fuzz/fuzz_targets/`) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in `make fuzz` order (request-facing parsers first).
pub const TARGETS: &[Target] = &[
    ("jws", targets::jws),
    ("jwks", targets::jwks),
    ("claims", targets::claims),
    ("jwt_request", targets::jwt_request),
    ("hmac_headers", targets::hmac_headers),
    ("hmac_request", targets::hmac_request),
    ("path", targets::path),
    ("request_view", targets::request_view),
    ("rule_match", targets::rule_match),
    ("query", targets::query),
    ("template", targets::template),
    ("json_pointer", targets::json_pointer),
    ("json_edit", targets::json_edit),
    ("form_edit", legacy::form_edit),
    ("xml_convert", legacy::xml_convert),
    ("transform_request", targets::transform_request),
    ("chain_request", chains::chain_request),
    ("rate_limit_key", targets::rate_limit_key),
    ("rate_limit_request", targets::rate_limit_request),
    ("rate_limit_answer", targets::rate_limit_answer),
    ("retry_after", targets::retry_after),
    ("retry_request", targets::retry_request),
    ("key_auth_request", credentials::key_auth_request),
    (
        "credential_inject_request",
        credentials::credential_inject_request,
    ),
    ("token_answer", credentials::token_answer),
    ("hmac_jwks", documents::hmac_jwks),
    ("state_budget", targets::state_budget),
    ("state_breaker", targets::state_breaker),
    ("state_replay", targets::state_replay),
    ("state_token", credentials::state_token),
    ("state_fetch", documents::state_fetch),
    ("state_rate_limit", targets::state_rate_limit),
    ("config_jwt_auth", targets::config_jwt_auth),
    ("config_hmac_auth", targets::config_hmac_auth),
    ("config_rate_limit", targets::config_rate_limit),
    ("config_transform", targets::config_transform),
    ("config_retry", targets::config_retry),
    ("config_chain", chains::config_chain),
    ("config_key_auth", credentials::config_key_auth),
    (
        "config_credential_inject",
        credentials::config_credential_inject,
    ),
];
