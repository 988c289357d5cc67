//! wasmgate hmac-auth: request and webhook signature verification (GitHub, Stripe, Slack,
//! Shopify, Standard Webhooks, RFC 9421, AWS SigV4, custom) with secret rotation and replay
//! protection. [`filter`] holds the filter's hooks; decisions live in [`verify`] and [`replay`].

pub mod config;
pub mod crypto;
pub mod filter;
pub mod httpsig;
pub mod replay;
pub mod sf;
pub mod sigv4;
pub mod verify;

pub use filter::secret_metric;

wasmgate_host::export!(filter::HmacAuth);
