//! wasmgate hmac-auth: request and webhook signature verification (GitHub, Stripe, Slack,
//! Shopify, Standard Webhooks with Svix headers, Discord, Zoom, GitLab, Twilio, RFC 9421 with
//! HMAC, Ed25519, ECDSA P-256 and RSA-PSS, public keys inline or from a JWKS URL ([`jwks`]),
//! AWS SigV4, custom) with key rotation, replay
//! protection (duplicates acknowledged), provider handshakes, and outbound signing. [`filter`]
//! holds the filter's hooks; decisions live in [`verify`], [`replay`], [`handshake`] and
//! [`sign`].

pub mod config;
pub mod crypto;
pub mod filter;
pub mod global;
pub mod handshake;
pub mod httpsig;
pub mod jwks;
pub mod pubkey;
pub mod replay;
pub mod sf;
pub mod sign;
pub mod sigv4;
pub mod verify;

pub use filter::jwks_key_label;

wasmgate_host::export!(filter::HmacAuth);
