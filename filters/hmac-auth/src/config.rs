//! Raw configuration (serde, unknown fields rejected) and its compiled form.

use crate::crypto::Algorithm;
use crate::jwks::{self, JwksSource, RawJwks};
use crate::pubkey::{self, KeyMaterial, PublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::fmt;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{ConfigError, Duration, Match, Policies, Secret};

/// The filter's name in log lines and metric names.
pub const FILTER: &str = "hmac-auth";
const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Beyond an hour a "fresh" timestamp proves little, and the replay table must remember twice as
/// long.
const MAX_TOLERANCE_SECS: u64 = 3_600;
const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
const DEFAULT_REPLAY_TTL_SECS: u64 = 600;
const DEFAULT_REPLAY_ENTRIES: u64 = 100_000;
const MAX_REPLAY_ENTRIES: u64 = 10_000_000;
const DEFAULT_GLOBAL_TIMEOUT_MS: u64 = 250;
const MAX_GLOBAL_TIMEOUT_MS: u64 = 10_000;

/// Which signature scheme a policy verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SchemeName {
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// `Stripe-Signature: t=..,v1=..` over `{t}.{body}`.
    Stripe,
    /// `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.
    Slack,
    /// `X-Shopify-Hmac-Sha256: <base64>` over the body.
    Shopify,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// RFC 9421 HTTP Message Signatures, `hmac-sha256`.
    HttpSignature,
    /// AWS Signature Version 4 in the `Authorization` header.
    AwsSigv4,
    /// A configurable header, algorithm, encoding and signed payload.
    Custom,
    /// Discord interactions: Ed25519 over `{timestamp}{body}` (`X-Signature-Ed25519`).
    Discord,
    /// Zoom: `x-zm-signature: v0=<hex>` over `v0:{ts}:{body}`.
    Zoom,
    /// GitLab: `X-Gitlab-Token` is the secret itself (compared in constant time).
    Gitlab,
    /// Twilio: `X-Twilio-Signature`, HMAC-SHA1 over the public URL and the sorted form fields.
    Twilio,
    /// Twitch EventSub: `Twitch-Eventsub-Message-Signature` over id, timestamp and body.
    Twitch,
}

impl SchemeName {
    /// The snake_case name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::StandardWebhooks => "standard_webhooks",
            Self::HttpSignature => "http_signature",
            Self::AwsSigv4 => "aws_sigv4",
            Self::Custom => "custom",
            Self::Discord => "discord",
            Self::Zoom => "zoom",
            Self::Gitlab => "gitlab",
            Self::Twilio => "twilio",
            Self::Twitch => "twitch",
        }
    }
}

/// How a secret's text becomes HMAC key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyEncoding {
    /// The UTF-8 bytes of the text, verbatim.
    Utf8,
    /// Standard base64 (a `whsec_` prefix is stripped first).
    Base64,
    /// Hexadecimal.
    Hex,
}

/// A secret entry: `{"id": "...", "value": "..."}` or `{"id": "...", "env": "NAME"}`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    id: String,
    value: Option<String>,
    env: Option<String>,
    encoding: Option<KeyEncoding>,
}

/// A public key entry: `{"id": "...", "value": "whpk_... | <hex> | <PEM>"}` or
/// `{"id": "...", "jwk": {...}}`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawPublicKey {
    id: String,
    value: Option<String>,
    jwk: Option<serde_json::Value>,
}

/// What the filter does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Verify signatures of incoming requests (ingress).
    #[default]
    Verify,
    /// Sign outgoing requests (egress): `github`, `standard_webhooks`, `http_signature`.
    Sign,
}

/// A signing key entry (`mode: "sign"`): an Ed25519 private key, `whsk_<base64>` or PEM.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawSigningKey {
    id: String,
    value: Option<String>,
    env: Option<String>,
}

/// `replay` block.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    enabled: Option<bool>,
    ttl: Option<Duration>,
    max_entries: Option<u64>,
    duplicate_status: Option<u16>,
    global: Option<RawGlobal>,
}

/// `replay.global`: the rate limit service that shares replay ids between Envoy processes.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    cluster: String,
    domain: String,
    timeout: Option<Duration>,
    failure_mode: Option<FailureMode>,
}

/// What a failed or late answer of the rate limit service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// 503 `replay_unavailable` (the default: replay protection fails closed).
    Deny,
    /// Forward with the local (per-process) check only.
    Allow,
}

/// Compiled `replay.global`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalReplay {
    /// Envoy cluster (HTTP/2) of the rate limit service.
    pub cluster: String,
    /// The `domain` of every request.
    pub domain: String,
    /// How long a delivery may wait for the answer, milliseconds.
    pub timeout_ms: u64,
    /// What an error or timeout does.
    pub failure_mode: FailureMode,
}

/// `http_signature` settings.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawHttpSignature {
    required_components: Option<Vec<String>>,
}

/// `aws_sigv4` settings: the credential scope this endpoint accepts.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawAwsSigv4 {
    region: String,
    service: String,
}

/// `twilio` settings.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawTwilio {
    public_url: String,
}

/// `custom` settings.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawCustom {
    signature_header: String,
    signature_prefix: Option<String>,
    algorithm: Option<AlgorithmName>,
    encoding: Option<SignatureEncoding>,
    timestamp_header: Option<String>,
    id_header: Option<String>,
    signed_payload: Option<String>,
    signature_separator: Option<String>,
}

/// `custom.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
    /// Ed25519 with the policy's `public_keys` (no HMAC).
    Ed25519,
}

/// `custom.encoding`: how the signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Hexadecimal (either case).
    Hex,
    /// Standard base64.
    Base64,
}

/// The whole configuration as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    #[serde(default)]
    mode: Mode,
    scheme: SchemeName,
    #[serde(default)]
    secrets: Vec<RawSecret>,
    #[serde(default)]
    public_keys: Vec<RawPublicKey>,
    /// Public keys fetched from a JWKS URL (`http_signature` only), by `keyid` = `kid`.
    jwks: Option<RawJwks>,
    #[serde(default)]
    signing_keys: Vec<RawSigningKey>,
    handshake: Option<bool>,
    hide_credentials: Option<bool>,
    key_id_header: Option<String>,
    hold_headers: Option<bool>,
    timestamp_tolerance: Option<Duration>,
    max_body_bytes: Option<u64>,
    replay: Option<RawReplay>,
    http_signature: Option<RawHttpSignature>,
    aws_sigv4: Option<RawAwsSigv4>,
    custom: Option<RawCustom>,
    twilio: Option<RawTwilio>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// One per-route rule as written.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match")]
    matcher: Match,
    enabled: Option<bool>,
    scheme: Option<SchemeName>,
    secrets: Option<Vec<RawSecret>>,
    public_keys: Option<Vec<RawPublicKey>>,
    jwks: Option<RawJwks>,
    signing_keys: Option<Vec<RawSigningKey>>,
    handshake: Option<bool>,
    hide_credentials: Option<bool>,
    timestamp_tolerance: Option<Duration>,
    max_body_bytes: Option<u64>,
    http_signature: Option<RawHttpSignature>,
    aws_sigv4: Option<RawAwsSigv4>,
    custom: Option<RawCustom>,
    twilio: Option<RawTwilio>,
}

/// An HMAC key and the id operators know it by. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// The id (for `aws_sigv4`, the access key id; for `http_signature`, the `keyid`).
    pub id: String,
    /// Key bytes.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, <redacted>)", self.id)
    }
}

/// Scheme and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// GitHub.
    Github,
    /// Stripe.
    Stripe,
    /// Slack.
    Slack,
    /// Shopify.
    Shopify,
    /// Standard Webhooks.
    StandardWebhooks,
    /// RFC 9421.
    HttpSignature(HttpSignatureSettings),
    /// AWS SigV4.
    AwsSigv4(AwsSigv4Settings),
    /// Custom.
    Custom(CustomSettings),
}

impl Scheme {
    /// The scheme's configuration name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Custom(CustomSettings {
                provider: Some(provider),
                ..
            }) => provider.name(),
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::StandardWebhooks => "standard_webhooks",
            Self::HttpSignature(_) => "http_signature",
            Self::AwsSigv4(_) => "aws_sigv4",
            Self::Custom(_) => "custom",
        }
    }

    /// The headers that carry the signature itself (removed by `hide_credentials`; timestamps
    /// and ids stay, the upstream may use them).
    pub fn signature_headers(&self) -> Vec<&str> {
        match self {
            Self::Github => vec!["x-hub-signature-256"],
            Self::Stripe => vec!["stripe-signature"],
            Self::Slack => vec!["x-slack-signature"],
            Self::Shopify => vec!["x-shopify-hmac-sha256"],
            Self::StandardWebhooks => vec!["webhook-signature", "svix-signature"],
            Self::HttpSignature(_) => vec!["signature", "signature-input"],
            Self::AwsSigv4(_) => vec!["authorization"],
            Self::Custom(custom) => vec![custom.signature_header.as_str()],
        }
    }

    /// Whether the scheme signs a timestamp that is checked against `timestamp_tolerance`.
    pub fn signs_timestamp(&self) -> bool {
        match self {
            Self::Github | Self::Shopify => false,
            Self::Custom(custom) => custom.timestamp_header.is_some(),
            _ => true,
        }
    }
}

/// Compiled `aws_sigv4` settings: the only credential scope accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSigv4Settings {
    /// Region of the credential scope (`us-east-1`).
    pub region: String,
    /// Service of the credential scope (`execute-api`).
    pub service: String,
}

/// Compiled `http_signature` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSignatureSettings {
    /// Components every accepted signature must cover (lowercase).
    pub required_components: Vec<String>,
}

/// One part of a custom signed payload template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Literal(String),
    /// The raw body.
    Body,
    /// The timestamp header's value.
    Timestamp,
    /// The id header's value.
    Id,
    /// The request method.
    Method,
    /// The request path with its query.
    Path,
    /// A request header's value (empty when absent).
    Header(String),
}

/// A provider scheme compiled to `custom` settings (its own name, handshake and key kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Discord interactions (Ed25519).
    Discord,
    /// Zoom webhooks (HMAC-SHA256).
    Zoom,
    /// GitLab webhooks (a shared token, no signature).
    Gitlab,
    /// Twilio webhooks (HMAC-SHA1 over the public URL and the sorted form fields).
    Twilio,
    /// Twitch EventSub (HMAC-SHA256 over message id, RFC 3339 timestamp and body).
    Twitch,
}

impl Provider {
    /// The scheme name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Discord => "discord",
            Self::Zoom => "zoom",
            Self::Gitlab => "gitlab",
            Self::Twilio => "twilio",
            Self::Twitch => "twitch",
        }
    }
}

/// Compiled `custom` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomSettings {
    /// The provider these settings were built for (`None`: the `custom` scheme).
    pub provider: Option<Provider>,
    /// Ed25519 signatures checked with the policy's public keys instead of an HMAC.
    pub ed25519: bool,
    /// Characters separating several signatures in the header (`" "` by default).
    pub separators: String,
    /// Twilio: `scheme://host[:port]` as the sender sees the endpoint (empty otherwise).
    pub public_url: String,
    /// Header holding the signature (lowercase).
    pub signature_header: String,
    /// Prefix before the encoded signature (`sha256=`).
    pub signature_prefix: String,
    /// Hash under the HMAC.
    pub algorithm: Algorithm,
    /// Signature encoding.
    pub encoding: SignatureEncoding,
    /// Header holding the Unix timestamp (lowercase), if any.
    pub timestamp_header: Option<String>,
    /// Header holding the message id (lowercase), if any.
    pub id_header: Option<String>,
    /// The signed payload template.
    pub payload: Vec<Part>,
}

/// What is verified for one route: scheme, keys and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Scheme and settings.
    pub scheme: Scheme,
    /// Keys tried in order (rotation).
    pub keys: Vec<Key>,
    /// Public keys (asymmetric signatures), tried after the secrets.
    pub public_keys: Vec<PublicKey>,
    /// Index in [`Config::jwks`] of the key set fetched for this policy (`http_signature`):
    /// its keys are looked up after the secrets and public keys.
    pub jwks: Option<usize>,
    /// Answer the provider's handshake (Slack `url_verification`, Zoom
    /// `endpoint.url_validation`, Discord PING) once it is verified.
    pub handshake: bool,
    /// Remove the signature headers before the upstream.
    pub hide_credentials: bool,
    /// Ed25519 private keys (`mode: "sign"`); the first signs.
    pub signing_keys: Vec<SigningKey>,
    /// Allowed clock difference, seconds.
    pub tolerance_secs: u64,
    /// Largest body buffered.
    pub max_body_bytes: u64,
    /// Index used to keep replay ids of different policies apart (0 = defaults).
    pub index: usize,
}

/// An Ed25519 private key for outbound signing. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The id (the RFC 9421 `keyid`).
    pub id: String,
    /// The key.
    pub key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.id)
    }
}

/// Replay protection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// How long a verified message id is remembered, seconds.
    pub ttl_secs: u64,
    /// Upper bound of remembered ids.
    pub max_entries: u64,
    /// Status of the answer to a copy of a delivery already accepted (2xx: acknowledged with
    /// `x-wasmgate-duplicate: true`; 409: refused as `replayed`).
    pub duplicate_status: u16,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The defaults and the rules.
    pub policies: Policies<Policy>,
    /// Replay protection, `None` when disabled.
    pub replay: Option<ReplayConfig>,
    /// Replay ids shared through the rate limit service (`replay.global`).
    pub global: Option<GlobalReplay>,
    /// Header naming the secret or public key id that verified the request (lowercase); the
    /// client's own values are always removed.
    pub key_id_header: Option<String>,
    /// The request headers wait for the verified body (Envoy's `allow_on_headers_stop_iteration`
    /// must be on); otherwise they go on and the body is held.
    pub hold_headers: bool,
    /// Verify incoming or sign outgoing requests.
    pub mode: Mode,
    /// The key sets fetched from JWKS URLs, each once however many policies use it.
    pub jwks: Vec<JwksSource>,
}

impl Policy {
    /// The id of the key at `index`: secrets first, then public keys.
    pub fn key_id(&self, index: usize) -> Option<&str> {
        match self.keys.get(index) {
            Some(key) => Some(&key.id),
            None => self
                .public_keys
                .get(index.checked_sub(self.keys.len())?)
                .map(|k| k.id.as_str()),
        }
    }
}

impl Config {
    /// Every distinct secret and public key id, for per-key metrics.
    pub fn secret_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for policy in self.policies.all() {
            let all = policy.keys.iter().map(|k| &k.id);
            for id in all.chain(policy.public_keys.iter().map(|k| &k.id)) {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }
}

/// Parses JSON into the raw form (for tests and tools).
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    wasmgate_core::config::parse::<RawConfig>(json).and_then(compile)
}

/// Compiles a raw configuration.
pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    // Each settings block with the path prefix of the object holding it, so that an error in a
    // block a rule inherits from the top level is reported where the block is written.
    let top = Blocks {
        http_signature: raw.http_signature.as_ref().map(|b| (String::new(), b)),
        aws_sigv4: raw.aws_sigv4.as_ref().map(|b| (String::new(), b)),
        custom: raw.custom.as_ref().map(|b| (String::new(), b)),
        twilio: raw.twilio.as_ref().map(|b| (String::new(), b)),
    };
    let mut sources: Vec<JwksSource> = Vec::new();
    let top_jwks = match &raw.jwks {
        Some(block) => Some(add_source(&mut sources, jwks::compile("jwks", block)?)),
        None => None,
    };
    let default = compile_policy(
        0,
        "",
        &Parts {
            mode: raw.mode,
            scheme: raw.scheme,
            secrets: &raw.secrets,
            public_keys: &raw.public_keys,
            jwks: top_jwks,
            signing_keys: &raw.signing_keys,
            tolerance: raw.timestamp_tolerance,
            max_body_bytes: raw.max_body_bytes,
            handshake: raw.handshake.unwrap_or(false),
            hide_credentials: raw.hide_credentials.unwrap_or(false),
        },
        &top,
    )?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, rule) in raw.rules.into_iter().enumerate() {
        let at = format!("rules[{i}].");
        let policy = if rule.enabled == Some(false) {
            None
        } else {
            let secrets = rule.secrets.as_ref().unwrap_or(&raw.secrets);
            let public_keys = rule.public_keys.as_ref().unwrap_or(&raw.public_keys);
            let signing_keys = rule.signing_keys.as_ref().unwrap_or(&raw.signing_keys);
            let signing_keys_at = if rule.signing_keys.is_some() {
                at.clone()
            } else {
                String::new()
            };
            let secrets_at = if rule.secrets.is_some() {
                at.clone()
            } else {
                String::new()
            };
            let public_keys_at = if rule.public_keys.is_some() {
                at.clone()
            } else {
                String::new()
            };
            let scheme = rule.scheme.unwrap_or(raw.scheme);
            let rule_jwks = match &rule.jwks {
                Some(block) => {
                    if scheme != SchemeName::HttpSignature || raw.mode == Mode::Sign {
                        return Err(ConfigError::new(
                            format!("{at}jwks"),
                            "keys from a JWKS verify scheme http_signature only (they are \
                             selected by the signature's keyid)",
                        ));
                    }
                    let at = format!("{at}jwks");
                    Some(add_source(&mut sources, jwks::compile(&at, block)?))
                }
                None => top_jwks,
            };
            let blocks = Blocks {
                http_signature: rule
                    .http_signature
                    .as_ref()
                    .map(|b| (at.clone(), b))
                    .or_else(|| top.http_signature.clone()),
                aws_sigv4: rule
                    .aws_sigv4
                    .as_ref()
                    .map(|b| (at.clone(), b))
                    .or_else(|| top.aws_sigv4.clone()),
                custom: rule
                    .custom
                    .as_ref()
                    .map(|b| (at.clone(), b))
                    .or_else(|| top.custom.clone()),
                twilio: rule
                    .twilio
                    .as_ref()
                    .map(|b| (at.clone(), b))
                    .or_else(|| top.twilio.clone()),
            };
            let policy = compile_policy(
                i + 1,
                &at,
                &Parts {
                    mode: raw.mode,
                    scheme,
                    secrets,
                    public_keys,
                    jwks: rule_jwks,
                    signing_keys,
                    tolerance: rule.timestamp_tolerance.or(raw.timestamp_tolerance),
                    max_body_bytes: rule.max_body_bytes.or(raw.max_body_bytes),
                    handshake: rule.handshake.or(raw.handshake).unwrap_or(false),
                    hide_credentials: rule
                        .hide_credentials
                        .or(raw.hide_credentials)
                        .unwrap_or(false),
                },
                &blocks,
            )
            .map_err(|e| {
                // Keys inherited from the top level are reported at their own path.
                if e.path.starts_with(&at) {
                    e
                } else if e.path.starts_with("secrets") {
                    ConfigError::new(format!("{secrets_at}{}", e.path), e.reason)
                } else if e.path.starts_with("public_keys") {
                    ConfigError::new(format!("{public_keys_at}{}", e.path), e.reason)
                } else if e.path.starts_with("signing_keys") {
                    ConfigError::new(format!("{signing_keys_at}{}", e.path), e.reason)
                } else {
                    e
                }
            })?;
            Some(policy)
        };
        rules.push(PolicyRule {
            matcher: rule.matcher,
            policy,
        });
    }
    // Signing remembers nothing: replay protection is the receiver's.
    let (replay, global) = match raw.mode {
        Mode::Verify => compile_replay(raw.replay)?,
        Mode::Sign => (None, None),
    };
    let key_id_header = match &raw.key_id_header {
        Some(name) => Some(header_field("key_id_header", name)?),
        None => None,
    };
    let hold_headers = raw.hold_headers.unwrap_or(false);
    if raw.mode == Mode::Sign && !hold_headers {
        return Err(ConfigError::new(
            "hold_headers",
            "mode \"sign\" needs \"hold_headers\": true (and Envoy's \
             allow_on_headers_stop_iteration): the signature headers are added once the whole \
             body has been read",
        ));
    }
    if key_id_header.is_some() && !hold_headers {
        return Err(ConfigError::new(
            "key_id_header",
            "needs \"hold_headers\": true (and Envoy's allow_on_headers_stop_iteration): the key \
             is known once the body has verified, and Envoy refuses header changes after the \
             headers went on",
        ));
    }
    if let Some(replay) = &replay {
        let policies = std::iter::once((String::new(), &default)).chain(
            rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.policy.as_ref().map(|p| (format!("rules[{i}]"), p))),
        );
        check_replay_ttl(replay, policies)?;
    }
    if let Some(top) = top_jwks {
        let used = std::iter::once(&default)
            .chain(rules.iter().filter_map(|r| r.policy.as_ref()))
            .any(|p| p.jwks == Some(top));
        if !used {
            return Err(ConfigError::new(
                "jwks",
                "no policy uses it: keys from a JWKS verify scheme http_signature only, in mode \
                 \"verify\"",
            ));
        }
    }
    Ok(Config {
        jwks: sources,
        policies: Policies::new(default, rules).with_paths(raw.paths),
        replay,
        global,
        key_id_header,
        hold_headers,
        mode: raw.mode,
    })
}

/// Adds a key source, or finds the same one already added; its index.
fn add_source(sources: &mut Vec<JwksSource>, source: JwksSource) -> usize {
    match sources.iter().position(|s| *s == source) {
        Some(i) => i,
        None => {
            sources.push(source);
            sources.len() - 1
        }
    }
}

/// What one policy is compiled from (a rule's fields merged over the top level's).
struct Parts<'a> {
    mode: Mode,
    scheme: SchemeName,
    secrets: &'a [RawSecret],
    public_keys: &'a [RawPublicKey],
    /// The key source this policy may use (index in [`Config::jwks`]).
    jwks: Option<usize>,
    signing_keys: &'a [RawSigningKey],
    tolerance: Option<Duration>,
    max_body_bytes: Option<u64>,
    handshake: bool,
    hide_credentials: bool,
}

/// The settings blocks a policy may use, each with the path prefix of the object holding it.
struct Blocks<'a> {
    http_signature: Option<(String, &'a RawHttpSignature)>,
    aws_sigv4: Option<(String, &'a RawAwsSigv4)>,
    custom: Option<(String, &'a RawCustom)>,
    twilio: Option<(String, &'a RawTwilio)>,
}

/// `"90s"`, `"5m"`, `"2h"`: seconds as a configuration duration.
fn duration_text(secs: u64) -> String {
    match secs {
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A timestamp is accepted from `tolerance` before to `tolerance` after the clock, so a message
/// stays fresh for up to twice the tolerance: its replay id must be remembered that long, or a
/// copy sent after the id was forgotten passes both checks.
fn check_replay_ttl<'a>(
    replay: &ReplayConfig,
    policies: impl Iterator<Item = (String, &'a Policy)>,
) -> Result<(), ConfigError> {
    let widest = policies
        .filter(|(_, p)| p.scheme.signs_timestamp())
        .max_by_key(|(_, p)| p.tolerance_secs);
    if let Some((at, policy)) = widest {
        let needed = policy.tolerance_secs.saturating_mul(2);
        if replay.ttl_secs < needed {
            let whose = if at.is_empty() {
                format!("the {} scheme", policy.scheme.name())
            } else {
                format!("the {} scheme of {at}", policy.scheme.name())
            };
            return Err(ConfigError::new(
                "replay.ttl",
                format!(
                    "is {} but must be at least {} (2 x timestamp_tolerance {} of {whose}): \
                     a timestamp stays fresh that long, and a copy sent after its id is \
                     forgotten would pass",
                    duration_text(replay.ttl_secs),
                    duration_text(needed),
                    duration_text(policy.tolerance_secs),
                ),
            ));
        }
    }
    Ok(())
}

type Replay = (Option<ReplayConfig>, Option<GlobalReplay>);

fn compile_replay(raw: Option<RawReplay>) -> Result<Replay, ConfigError> {
    let raw = raw.unwrap_or(RawReplay {
        enabled: None,
        ttl: None,
        max_entries: None,
        duplicate_status: None,
        global: None,
    });
    if raw.enabled == Some(false) {
        if raw.global.is_some() {
            return Err(ConfigError::new(
                "replay.global",
                "replay protection is off (\"enabled\": false): remove \"global\" or switch it on",
            ));
        }
        return Ok((None, None));
    }
    let global = match &raw.global {
        None => None,
        Some(g) => {
            let timeout_ms = g
                .timeout
                .map_or(DEFAULT_GLOBAL_TIMEOUT_MS, |d| d.0.as_millis() as u64);
            if timeout_ms == 0 || timeout_ms > MAX_GLOBAL_TIMEOUT_MS {
                return Err(ConfigError::new(
                    "replay.global.timeout",
                    "must be between 1ms and 10s",
                ));
            }
            if g.cluster.trim().is_empty() {
                return Err(ConfigError::new(
                    "replay.global.cluster",
                    "must not be empty",
                ));
            }
            if g.domain.trim().is_empty() {
                return Err(ConfigError::new(
                    "replay.global.domain",
                    "must not be empty",
                ));
            }
            Some(GlobalReplay {
                cluster: g.cluster.clone(),
                domain: g.domain.clone(),
                timeout_ms,
                failure_mode: g.failure_mode.unwrap_or(FailureMode::Deny),
            })
        }
    };
    let ttl_secs = raw.ttl.map_or(DEFAULT_REPLAY_TTL_SECS, |d| d.0.as_secs());
    if ttl_secs == 0 {
        return Err(ConfigError::new(
            "replay.ttl",
            "must be at least 1s (use \"enabled\": false to switch replay protection off)",
        ));
    }
    let max_entries = raw.max_entries.unwrap_or(DEFAULT_REPLAY_ENTRIES);
    if max_entries == 0 || max_entries > MAX_REPLAY_ENTRIES {
        return Err(ConfigError::new(
            "replay.max_entries",
            format!("must be between 1 and {MAX_REPLAY_ENTRIES}"),
        ));
    }
    let duplicate_status = raw.duplicate_status.unwrap_or(200);
    if !(200..=299).contains(&duplicate_status) && duplicate_status != 409 {
        return Err(ConfigError::new(
            "replay.duplicate_status",
            "must be a 2xx status (the copy is acknowledged without being forwarded) or 409 \
             (the copy is refused as replayed)",
        ));
    }
    Ok((
        Some(ReplayConfig {
            ttl_secs,
            max_entries,
            duplicate_status,
        }),
        global,
    ))
}

fn compile_policy(
    index: usize,
    at: &str,
    parts: &Parts<'_>,
    blocks: &Blocks<'_>,
) -> Result<Policy, ConfigError> {
    let scheme = parts.scheme;
    let tolerance_secs = parts
        .tolerance
        .map_or(DEFAULT_TOLERANCE_SECS, |d| d.0.as_secs());
    if tolerance_secs == 0 {
        return Err(ConfigError::new(
            format!("{at}timestamp_tolerance"),
            "must be at least 1s",
        ));
    }
    if tolerance_secs > MAX_TOLERANCE_SECS {
        return Err(ConfigError::new(
            format!("{at}timestamp_tolerance"),
            format!(
                "must be at most {}: a wider window makes the freshness check meaningless",
                duration_text(MAX_TOLERANCE_SECS)
            ),
        ));
    }
    let compiled_scheme = match scheme {
        SchemeName::Github => Scheme::Github,
        SchemeName::Stripe => Scheme::Stripe,
        SchemeName::Slack => Scheme::Slack,
        SchemeName::Shopify => Scheme::Shopify,
        SchemeName::StandardWebhooks => Scheme::StandardWebhooks,
        SchemeName::Discord => Scheme::Custom(discord()),
        SchemeName::Zoom => Scheme::Custom(zoom()),
        SchemeName::Gitlab => Scheme::Custom(gitlab()),
        SchemeName::Twitch => Scheme::Custom(twitch()),
        SchemeName::Twilio => {
            let Some((prefix, block)) = &blocks.twilio else {
                return Err(ConfigError::new(
                    format!("{at}twilio"),
                    "scheme \"twilio\" needs a \"twilio\" block with the \"public_url\" Twilio \
                     calls (the signature covers it, and the proxy's view of scheme and host \
                     differs)",
                ));
            };
            Scheme::Custom(twilio(&format!("{prefix}twilio.public_url"), block)?)
        }
        SchemeName::AwsSigv4 => {
            let Some((prefix, block)) = &blocks.aws_sigv4 else {
                return Err(ConfigError::new(
                    format!("{at}aws_sigv4"),
                    "scheme \"aws_sigv4\" needs an \"aws_sigv4\" block with the \"region\" and \
                     \"service\" this endpoint accepts",
                ));
            };
            Scheme::AwsSigv4(compile_aws_sigv4(&format!("{prefix}aws_sigv4"), block)?)
        }
        SchemeName::HttpSignature => Scheme::HttpSignature(match &blocks.http_signature {
            Some((prefix, block)) => {
                compile_http_signature(&format!("{prefix}http_signature"), Some(block))?
            }
            None => compile_http_signature("http_signature", None)?,
        }),
        SchemeName::Custom => {
            let Some((prefix, block)) = &blocks.custom else {
                return Err(ConfigError::new(
                    format!("{at}custom"),
                    "scheme \"custom\" needs a \"custom\" block",
                ));
            };
            Scheme::Custom(compile_custom(&format!("{prefix}custom"), block)?)
        }
    };
    // Which key kinds the scheme verifies with; keys of a kind it does not use are ignored, as
    // a rule may inherit them from the top level. Signing uses secrets and signing keys.
    let (uses_secrets, uses_public) = match (&compiled_scheme, parts.mode) {
        (Scheme::Github, Mode::Sign) => (true, false),
        (Scheme::StandardWebhooks | Scheme::HttpSignature(_), Mode::Sign) => (true, false),
        (_, Mode::Sign) => {
            return Err(ConfigError::new(
                format!("{at}scheme"),
                format!(
                    "mode \"sign\" signs with github, standard_webhooks or http_signature, not {}",
                    compiled_scheme.name()
                ),
            ))
        }
        (Scheme::StandardWebhooks | Scheme::HttpSignature(_), Mode::Verify) => (true, true),
        (Scheme::Custom(custom), Mode::Verify) if custom.ed25519 => (false, true),
        _ => (true, false),
    };
    let mut signing_keys = Vec::new();
    if parts.mode == Mode::Sign && !matches!(compiled_scheme, Scheme::Github) {
        for (i, raw) in parts.signing_keys.iter().enumerate() {
            let path = format!("signing_keys[{i}]");
            check_key_id(&raw.id).map_err(|r| ConfigError::new(&path, r))?;
            let secret = Secret::resolve(raw.value.clone(), raw.env.clone())
                .map_err(|r| ConfigError::new(&path, r))?;
            let key = pubkey::parse_signing_key(secret.expose())
                .map_err(|r| ConfigError::new(&path, r))?;
            signing_keys.push(SigningKey {
                id: raw.id.clone(),
                key,
            });
        }
    }
    let secrets = if uses_secrets { parts.secrets } else { &[] };
    let raw_public = if uses_public { parts.public_keys } else { &[] };
    let jwks = match compiled_scheme {
        Scheme::HttpSignature(_) if parts.mode == Mode::Verify => parts.jwks,
        _ => None,
    };
    if parts.mode == Mode::Sign && secrets.is_empty() && signing_keys.is_empty() {
        let what = if matches!(compiled_scheme, Scheme::Github) {
            "at least one secret is required to sign"
        } else {
            "at least one secret or signing key is required to sign"
        };
        return Err(ConfigError::new(format!("{at}secrets"), what));
    }
    if secrets.is_empty() && raw_public.is_empty() && jwks.is_none() && parts.mode == Mode::Verify {
        let (field, what) = match (uses_secrets, uses_public) {
            (true, true) => ("secrets", "at least one secret or public key is required"),
            (false, _) => ("public_keys", "at least one public key is required"),
            _ => ("secrets", "at least one secret is required"),
        };
        return Err(ConfigError::new(format!("{at}{field}"), what));
    }
    let mut keys: Vec<Key> = Vec::with_capacity(secrets.len());
    for (i, secret) in secrets.iter().enumerate() {
        let path = format!("secrets[{i}]");
        let key = compile_key(scheme, secret).map_err(|reason| ConfigError::new(&path, reason))?;
        if keys.iter().any(|k| k.id == key.id) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!("duplicate secret id {:?}", key.id),
            ));
        }
        keys.push(key);
    }
    let mut public_keys: Vec<PublicKey> = Vec::with_capacity(raw_public.len());
    for (i, raw) in raw_public.iter().enumerate() {
        let path = format!("public_keys[{i}]");
        let key = compile_public_key(&compiled_scheme, raw)
            .map_err(|reason| ConfigError::new(&path, reason))?;
        if keys.iter().any(|k| k.id == key.id) || public_keys.iter().any(|k| k.id == key.id) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!(
                    "duplicate key id {:?} (ids are unique across secrets and public_keys: a \
                     key id names one key)",
                    key.id
                ),
            ));
        }
        public_keys.push(key);
    }
    label_values_unique(at, &keys, &public_keys)?;
    if parts.handshake && crate::handshake::Kind::of(&compiled_scheme).is_none() {
        return Err(ConfigError::new(
            format!("{at}handshake"),
            format!(
                "scheme {} has no handshake (slack, zoom, discord and twitch have one)",
                compiled_scheme.name()
            ),
        ));
    }
    Ok(Policy {
        scheme: compiled_scheme,
        keys,
        public_keys,
        jwks,
        signing_keys,
        handshake: parts.handshake,
        hide_credentials: parts.hide_credentials,
        tolerance_secs,
        max_body_bytes: parts.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        index,
    })
}

/// Discord interactions: `X-Signature-Ed25519` (hex) over `X-Signature-Timestamp` + body.
fn discord() -> CustomSettings {
    CustomSettings {
        provider: Some(Provider::Discord),
        ed25519: true,
        separators: " ".into(),
        public_url: String::new(),
        signature_header: "x-signature-ed25519".into(),
        signature_prefix: String::new(),
        algorithm: Algorithm::Sha512,
        encoding: SignatureEncoding::Hex,
        timestamp_header: Some("x-signature-timestamp".into()),
        id_header: None,
        payload: vec![Part::Timestamp, Part::Body],
    }
}

/// GitLab: `X-Gitlab-Token` holds the secret token itself.
fn gitlab() -> CustomSettings {
    CustomSettings {
        provider: Some(Provider::Gitlab),
        ed25519: false,
        separators: " ".into(),
        public_url: String::new(),
        signature_header: "x-gitlab-token".into(),
        signature_prefix: String::new(),
        algorithm: Algorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        timestamp_header: None,
        id_header: None,
        payload: vec![Part::Body],
    }
}

/// Twilio: `X-Twilio-Signature` = base64 HMAC-SHA1 of the public URL (with the query) followed
/// by each form field's name and value, sorted.
fn twilio(at: &str, raw: &RawTwilio) -> Result<CustomSettings, ConfigError> {
    let url = raw.public_url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = rest.is_some_and(|host| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    if !ok {
        return Err(ConfigError::new(
            at,
            format!(
                "{:?} must be \"https://host\" or \"https://host:port\" (no path: the request's \
                 path and query are appended)",
                raw.public_url
            ),
        ));
    }
    Ok(CustomSettings {
        provider: Some(Provider::Twilio),
        ed25519: false,
        separators: " ".into(),
        public_url: url.to_string(),
        signature_header: "x-twilio-signature".into(),
        signature_prefix: String::new(),
        algorithm: Algorithm::Sha1,
        encoding: SignatureEncoding::Base64,
        timestamp_header: None,
        id_header: None,
        payload: vec![Part::Body],
    })
}

/// Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex>` over message id, the
/// RFC 3339 timestamp as sent, and the body; the signed message id is the replay id.
fn twitch() -> CustomSettings {
    CustomSettings {
        provider: Some(Provider::Twitch),
        ed25519: false,
        separators: " ".into(),
        public_url: String::new(),
        signature_header: "twitch-eventsub-message-signature".into(),
        signature_prefix: "sha256=".into(),
        algorithm: Algorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        timestamp_header: Some("twitch-eventsub-message-timestamp".into()),
        id_header: Some("twitch-eventsub-message-id".into()),
        payload: vec![Part::Id, Part::Timestamp, Part::Body],
    }
}

/// Zoom: `x-zm-signature: v0=<hex>` over `v0:{x-zm-request-timestamp}:{body}`.
fn zoom() -> CustomSettings {
    CustomSettings {
        provider: Some(Provider::Zoom),
        ed25519: false,
        separators: " ".into(),
        public_url: String::new(),
        signature_header: "x-zm-signature".into(),
        signature_prefix: "v0=".into(),
        algorithm: Algorithm::Sha256,
        encoding: SignatureEncoding::Hex,
        timestamp_header: Some("x-zm-request-timestamp".into()),
        id_header: None,
        payload: vec![
            Part::Literal("v0:".into()),
            Part::Timestamp,
            Part::Literal(":".into()),
            Part::Body,
        ],
    }
}

fn check_key_id(id: &str) -> Result<(), String> {
    let id_ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if id_ok {
        Ok(())
    } else {
        Err(format!(
            "key id {id:?} must be 1-128 characters of A-Z a-z 0-9 _ - ."
        ))
    }
}

fn compile_public_key(scheme: &Scheme, raw: &RawPublicKey) -> Result<PublicKey, String> {
    check_key_id(&raw.id)?;
    let key = match (&raw.value, &raw.jwk) {
        (Some(text), None) => pubkey::parse_text(text)?,
        (None, Some(jwk)) => pubkey::parse_jwk(jwk)?,
        _ => return Err("exactly one of \"value\" and \"jwk\" is required".into()),
    };
    // A key is used with one algorithm only, the one its scheme verifies with.
    if !matches!(scheme, Scheme::HttpSignature(_)) && !matches!(key, KeyMaterial::Ed25519(_)) {
        return Err(format!(
            "scheme {} verifies Ed25519 signatures: this is an {} key",
            scheme.name(),
            key.alg()
        ));
    }
    Ok(PublicKey {
        id: raw.id.clone(),
        key,
    })
}

fn compile_key(scheme: SchemeName, raw: &RawSecret) -> Result<Key, String> {
    let id_ok = !raw.id.is_empty()
        && raw.id.len() <= 128
        && raw
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !id_ok {
        return Err(format!(
            "secret id {:?} must be 1-128 characters of A-Z a-z 0-9 _ - .",
            raw.id
        ));
    }
    let secret = Secret::resolve(raw.value.clone(), raw.env.clone())?;
    let text = secret.expose();
    let encoding = match (scheme, raw.encoding) {
        (SchemeName::Stripe | SchemeName::AwsSigv4, Some(e)) if e != KeyEncoding::Utf8 => {
            return Err(format!(
                "scheme {} uses the secret text verbatim: \"encoding\" must be \"utf8\"",
                scheme.as_str()
            ))
        }
        (_, Some(e)) => e,
        (SchemeName::StandardWebhooks, None) => KeyEncoding::Base64,
        (_, None) => KeyEncoding::Utf8,
    };
    let bytes = match encoding {
        KeyEncoding::Utf8 => text.as_bytes().to_vec(),
        KeyEncoding::Base64 => STANDARD
            .decode(text.strip_prefix("whsec_").unwrap_or(text))
            .map_err(|_| "secret is not valid base64".to_string())?,
        KeyEncoding::Hex => hex::decode(text).map_err(|_| "secret is not valid hex".to_string())?,
    };
    if bytes.is_empty() {
        return Err("secret is empty after decoding".into());
    }
    Ok(Key {
        id: raw.id.clone(),
        bytes,
    })
}

const KNOWN_DERIVED: [&str; 7] = [
    "@method",
    "@authority",
    "@path",
    "@query",
    "@target-uri",
    "@request-target",
    "@scheme",
];

/// The derived components that name the request target (`@target-uri` and `@request-target`
/// include the query; a request with a query whose signature covers only `@path` is refused at
/// request time).
pub const TARGET_COMPONENTS: [&str; 3] = ["@path", "@target-uri", "@request-target"];

/// Hop-by-hop fields (RFC 9110 7.6.1): a proxy removes or rewrites them, so they are never what
/// the sender signed; Envoy drops them before the filter runs.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

fn compile_http_signature(
    at: &str,
    raw: Option<&RawHttpSignature>,
) -> Result<HttpSignatureSettings, ConfigError> {
    let required = raw
        .and_then(|r| r.required_components.clone())
        .unwrap_or_else(|| {
            ["@method", "@authority", "@path", "content-digest"]
                .map(String::from)
                .to_vec()
        });
    let path = format!("{at}.required_components");
    let mut out = Vec::with_capacity(required.len());
    for (i, component) in required.iter().enumerate() {
        let c = component.to_ascii_lowercase();
        let valid = if c.starts_with('@') {
            KNOWN_DERIVED.contains(&c.as_str())
        } else {
            is_header_name(&c)
        };
        if !valid {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                format!("unsupported component {component:?}"),
            ));
        }
        if HOP_BY_HOP.contains(&c.as_str()) {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                hop_by_hop_reason(&c),
            ));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            path,
            "must not be empty: a signature that covers nothing authorizes any method, path and body",
        ));
    }
    if !out.iter().any(|c| c == "@method") {
        return Err(ConfigError::new(
            path,
            "must include \"@method\": otherwise a signed GET also authorizes a DELETE of the same target",
        ));
    }
    if !out.iter().any(|c| TARGET_COMPONENTS.contains(&c.as_str())) {
        return Err(ConfigError::new(
            path,
            "must include \"@path\", \"@target-uri\" or \"@request-target\": otherwise the signature authorizes any path",
        ));
    }
    Ok(HttpSignatureSettings {
        required_components: out,
    })
}

/// A credential scope part: what AWS writes there (`us-east-1`, `execute-api`), never a pattern.
fn scope_part(path: String, value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.to_string())
    } else {
        Err(ConfigError::new(
            path,
            format!("{value:?} must be 1-64 characters of a-z 0-9 - (as in a credential scope)"),
        ))
    }
}

fn compile_aws_sigv4(at: &str, raw: &RawAwsSigv4) -> Result<AwsSigv4Settings, ConfigError> {
    Ok(AwsSigv4Settings {
        region: scope_part(format!("{at}.region"), &raw.region)?,
        service: scope_part(format!("{at}.service"), &raw.service)?,
    })
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn hop_by_hop_reason(name: &str) -> String {
    format!(
        "{name:?} is a hop-by-hop header: a proxy removes or rewrites it (Envoy does before the \
         filter runs), so it is never what the sender signed"
    )
}

fn header_field(path: &str, name: &str) -> Result<String, ConfigError> {
    if !is_header_name(name) {
        return Err(ConfigError::new(
            path,
            format!("invalid header name {name:?}"),
        ));
    }
    let name = name.to_ascii_lowercase();
    if HOP_BY_HOP.contains(&name.as_str()) {
        return Err(ConfigError::new(path, hop_by_hop_reason(&name)));
    }
    Ok(name)
}

fn compile_custom(at: &str, raw: &RawCustom) -> Result<CustomSettings, ConfigError> {
    let signature_header = header_field(&format!("{at}.signature_header"), &raw.signature_header)?;
    let companion = |field: &str, value: Option<&str>| -> Result<Option<String>, ConfigError> {
        let path = format!("{at}.{field}");
        let Some(name) = value else { return Ok(None) };
        let name = header_field(&path, name)?;
        if name == signature_header {
            return Err(ConfigError::new(
                path,
                "must not be the signature_header: the signature cannot sign itself",
            ));
        }
        Ok(Some(name))
    };
    let timestamp_header = companion("timestamp_header", raw.timestamp_header.as_deref())?;
    let id_header = companion("id_header", raw.id_header.as_deref())?;
    let template = raw.signed_payload.as_deref().unwrap_or("{body}");
    let payload_path = format!("{at}.signed_payload");
    let payload = compile_template(template)
        .map_err(|reason| ConfigError::new(&payload_path, reason))?
        .into_iter()
        // `{header:<timestamp_header>}` signs the same value as `{timestamp}`.
        .map(|part| match part {
            Part::Header(h) if Some(&h) == timestamp_header.as_ref() => Part::Timestamp,
            Part::Header(h) if Some(&h) == id_header.as_ref() => Part::Id,
            other => other,
        })
        .collect::<Vec<_>>();
    if payload.contains(&Part::Header(signature_header.clone())) {
        return Err(ConfigError::new(
            payload_path,
            format!("{{header:{signature_header}}} is the signature header: the signature cannot sign itself"),
        ));
    }
    if payload.contains(&Part::Timestamp) && timestamp_header.is_none() {
        return Err(ConfigError::new(
            payload_path,
            "{timestamp} needs \"timestamp_header\"",
        ));
    }
    if payload.contains(&Part::Id) && id_header.is_none() {
        return Err(ConfigError::new(payload_path, "{id} needs \"id_header\""));
    }
    if timestamp_header.is_some() && !payload.contains(&Part::Timestamp) {
        return Err(ConfigError::new(
            format!("{at}.timestamp_header"),
            "is not signed: add {timestamp} to signed_payload (the freshness check of an \
             unsigned timestamp reads a value an attacker chooses)",
        ));
    }
    if id_header.is_some() && !payload.contains(&Part::Id) {
        return Err(ConfigError::new(
            format!("{at}.id_header"),
            "is not signed: add {id} to signed_payload, or remove id_header (an unsigned id \
             cannot name the message for replay protection; without id_header the signed bytes \
             name it)",
        ));
    }
    let (algorithm, ed25519) = match raw.algorithm.unwrap_or(AlgorithmName::Sha256) {
        AlgorithmName::Sha1 => (Algorithm::Sha1, false),
        AlgorithmName::Sha256 => (Algorithm::Sha256, false),
        AlgorithmName::Sha512 => (Algorithm::Sha512, false),
        AlgorithmName::Ed25519 => (Algorithm::Sha512, true),
    };
    let separators = raw.signature_separator.as_deref().unwrap_or(" ");
    if separators.is_empty() || !separators.chars().all(|c| c == ' ' || c == ',') {
        return Err(ConfigError::new(
            format!("{at}.signature_separator"),
            "must be \" \", \",\" or \" ,\" (the characters between several signatures)",
        ));
    }
    let prefix = raw.signature_prefix.clone().unwrap_or_default();
    if prefix.contains(|c| separators.contains(c)) {
        return Err(ConfigError::new(
            format!("{at}.signature_separator"),
            "appears in signature_prefix: the header could not be split into signatures",
        ));
    }
    Ok(CustomSettings {
        provider: None,
        ed25519,
        separators: separators.to_string(),
        public_url: String::new(),
        signature_header,
        signature_prefix: prefix,
        algorithm,
        encoding: raw.encoding.unwrap_or(SignatureEncoding::Hex),
        timestamp_header,
        id_header,
        payload,
    })
}

/// Parses `"{timestamp}.{body}"` into parts; `{` and `}` are only allowed around placeholders.
pub fn compile_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("unmatched '}' in template".into());
        }
        literal.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("unmatched '{' in template".into());
        };
        let name = &after[..close];
        let part = match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "id" => Part::Id,
            "method" => Part::Method,
            "path" => Part::Path,
            _ => match name.strip_prefix("header:") {
                Some(h) if HOP_BY_HOP.contains(&h.to_ascii_lowercase().as_str()) => {
                    return Err(hop_by_hop_reason(&h.to_ascii_lowercase()))
                }
                Some(h) if is_header_name(h) => Part::Header(h.to_ascii_lowercase()),
                _ => return Err(format!("unknown placeholder {{{name}}}")),
            },
        };
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &after[close + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.contains(&Part::Body) {
        return Err("the template must contain {body}".into());
    }
    Ok(parts)
}

/// JSON Schema of the configuration, generated from the types above (feature `schema`, for the
/// `wasmgate` CLI; never built into the module).
#[cfg(feature = "schema")]
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

/// Refuses two key ids that would count on one `key_matched_total{key_id}` series (metric label
/// values keep 64 characters of `[A-Za-z0-9_.:/-]`).
fn label_values_unique(
    at: &str,
    keys: &[Key],
    public_keys: &[PublicKey],
) -> Result<(), ConfigError> {
    let ids: Vec<&str> = keys
        .iter()
        .map(|k| k.id.as_str())
        .chain(public_keys.iter().map(|k| k.id.as_str()))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let label = wasmgate_core::metrics::label_value(id);
        if let Some(other) = ids[..i]
            .iter()
            .find(|other| wasmgate_core::metrics::label_value(other) == label)
        {
            return Err(ConfigError::new(
                format!("{at}secrets"),
                format!(
                    "key ids {other:?} and {id:?} would share the metric label key_id={label:?}: \
                     rename one"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn minimal_config_has_secure_defaults() {
        let c = parse(br#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}]}"#).unwrap();
        assert_eq!(c.policies.default_policy().scheme, Scheme::Github);
        assert_eq!(c.policies.default_policy().tolerance_secs, 300);
        assert_eq!(c.policies.default_policy().max_body_bytes, 1_048_576);
        assert_eq!(
            c.replay,
            Some(ReplayConfig {
                ttl_secs: 600,
                max_entries: 100_000,
                duplicate_status: 200,
            })
        );
        assert_eq!(c.policies.default_policy().keys[0].bytes, b"s");
        assert_eq!(
            format!("{:?}", c.policies.default_policy().keys[0]),
            "Key(a, <redacted>)"
        );
    }

    #[test]
    fn key_ids_sharing_a_metric_label_are_refused() {
        let long = "k".repeat(64);
        let e = err(&format!(
            r#"{{"scheme": "github", "secrets": [{{"id": "{long}1", "value": "s"}}, {{"id": "{long}2", "value": "t"}}]}}"#
        ));
        assert_eq!(e.path, "secrets");
        assert!(e.reason.contains("metric label key_id"), "{}", e.reason);
    }

    #[test]
    fn issue_example_parses() {
        std::env::set_var("HMAC_AUTH_TEST_OLD", "old-secret");
        let c = parse(
            br#"{
              "scheme": "github",
              "secrets": [{"id": "current", "value": "new"}, {"id": "previous", "env": "HMAC_AUTH_TEST_OLD"}],
              "timestamp_tolerance": "5m",
              "max_body_bytes": 1048576,
              "replay": {"ttl": "10m", "max_entries": 100000},
              "rules": [{"match": {"path_prefix": "/health"}, "enabled": false}]
            }"#,
        )
        .unwrap();
        assert_eq!(c.policies.default_policy().keys[1].bytes, b"old-secret");
        assert!(c.policies.rules()[0].policy.is_none());
        assert_eq!(c.secret_ids(), vec!["current", "previous"]);
    }

    #[test]
    fn standard_webhooks_secret_is_base64_after_whsec() {
        let c = parse(
            br#"{"scheme": "standard_webhooks", "secrets": [{"id": "a", "value": "whsec_AAEC"}]}"#,
        )
        .unwrap();
        assert_eq!(c.policies.default_policy().keys[0].bytes, vec![0, 1, 2]);
        let e =
            err(r#"{"scheme": "standard_webhooks", "secrets": [{"id": "a", "value": "whsec_!"}]}"#);
        assert_eq!(e.path, "secrets[0]");
        let c = parse(br#"{"scheme": "stripe", "secrets": [{"id": "a", "value": "whsec_AAEC"}]}"#)
            .unwrap();
        assert_eq!(c.policies.default_policy().keys[0].bytes, b"whsec_AAEC");
        let e = err(
            r#"{"scheme": "stripe", "secrets": [{"id": "a", "value": "x", "encoding": "hex"}]}"#,
        );
        assert!(e.reason.contains("verbatim"), "{e}");
    }

    #[test]
    fn rules_override_scheme_and_secrets() {
        let c = parse(
            br#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                 "rules": [{"match": {"path_prefix": "/slack"}, "scheme": "slack",
                            "secrets": [{"id": "b", "value": "t"}], "timestamp_tolerance": "1m"},
                           {"match": {"path_prefix": "/x"}, "max_body_bytes": 10}]}"#,
        )
        .unwrap();
        let slack = c.policies.rules()[0].policy.as_ref().unwrap();
        assert_eq!(slack.scheme, Scheme::Slack);
        assert_eq!(slack.keys[0].id, "b");
        assert_eq!(slack.tolerance_secs, 60);
        assert_eq!(slack.index, 1);
        let x = c.policies.rules()[1].policy.as_ref().unwrap();
        assert_eq!(x.keys[0].id, "a");
        assert_eq!(x.max_body_bytes, 10);
        assert_eq!(c.secret_ids(), vec!["a", "b"]);
    }

    #[test]
    fn custom_template() {
        let c = parse(
            br#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}],
                 "custom": {"signature_header": "X-Signature", "signature_prefix": "sha256=",
                            "algorithm": "sha512", "encoding": "base64", "timestamp_header": "x-timestamp",
                            "id_header": "x-delivery-id",
                            "signed_payload": "{method} {path}\n{timestamp}.{id}.{header:X-A}.{body}"}}"#,
        )
        .unwrap();
        let Scheme::Custom(custom) = &c.policies.default_policy().scheme else {
            panic!()
        };
        assert_eq!(custom.signature_header, "x-signature");
        assert_eq!(custom.algorithm, Algorithm::Sha512);
        assert_eq!(
            custom.payload,
            vec![
                Part::Method,
                Part::Literal(" ".into()),
                Part::Path,
                Part::Literal("\n".into()),
                Part::Timestamp,
                Part::Literal(".".into()),
                Part::Id,
                Part::Literal(".".into()),
                Part::Header("x-a".into()),
                Part::Literal(".".into()),
                Part::Body
            ]
        );
        assert_eq!(compile_template("{body}").unwrap(), vec![Part::Body]);
        for bad in [
            "{body",
            "body}",
            "{nope}.{body}",
            "{timestamp}",
            "{header:}{body}",
        ] {
            assert!(compile_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_configs_name_their_path() {
        let cases = [
            (
                r#"{"scheme": "bitbucket", "secrets": []}"#,
                "scheme",
                "unknown variant",
            ),
            (
                r#"{"scheme": "github", "secrets": []}"#,
                "secrets",
                "at least one",
            ),
            (r#"{"scheme": "github"}"#, "secrets", "at least one secret"),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "secret": 1}"#,
                "secret",
                "unknown field",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}, {"id": "a", "value": "t"}]}"#,
                "secrets[1].id",
                "duplicate",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a b", "value": "s"}]}"#,
                "secrets[0]",
                "must be",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "env": "HMAC_AUTH_SURELY_UNSET"}]}"#,
                "secrets[0]",
                "not set",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s", "encoding": "hex"}]}"#,
                "secrets[0]",
                "hex",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "0s"}"#,
                "timestamp_tolerance",
                "at least",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "5"}"#,
                "timestamp_tolerance",
                "invalid duration",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "replay": {"max_entries": 0}}"#,
                "replay.max_entries",
                "between",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "replay": {"ttl": "0s"}}"#,
                "replay.ttl",
                "at least",
            ),
            (
                r#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}]}"#,
                "custom",
                "needs",
            ),
            (
                r#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}], "custom": {"signature_header": "x s"}}"#,
                "custom.signature_header",
                "invalid header",
            ),
            (
                r#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}], "custom": {"signature_header": "x", "signed_payload": "{timestamp}.{body}"}}"#,
                "custom.signed_payload",
                "timestamp_header",
            ),
            (
                r#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}], "custom": {"signature_header": "x", "algorithm": "md5"}}"#,
                "custom.algorithm",
                "unknown variant",
            ),
            (
                r#"{"scheme": "http_signature", "secrets": [{"id": "a", "value": "s"}], "http_signature": {"required_components": ["@status"]}}"#,
                "http_signature.required_components[0]",
                "unsupported",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "rules": [{"match": {}, "scheme": "custom"}]}"#,
                "rules[0].custom",
                "needs",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "rules": [{"match": {}, "secrets": [{"id": "b", "valeu": "x"}]}]}"#,
                "rules[0].secrets[0].valeu",
                "unknown field",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "rules": [{"match": {}, "secrets": [{"id": "b", "env": "HMAC_AUTH_SURELY_UNSET"}]}]}"#,
                "rules[0].secrets[0]",
                "not set",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "rules": [{"match": {"path_prefix": "x"}}]}"#,
                "rules[0].match",
                "must start with",
            ),
        ];
        for (json, path, reason) in cases {
            let e = err(json);
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    /// Every configuration that would switch a check off, or weaken it, without saying so.
    #[test]
    fn weakening_configs_are_refused() {
        let custom = |fields: &str| {
            format!(
                r#"{{"scheme": "custom", "secrets": [{{"id": "a", "value": "s"}}],
                    "custom": {{"signature_header": "x-signature", {fields}}}}}"#
            )
        };
        let httpsig = |components: &str| {
            format!(
                r#"{{"scheme": "http_signature", "secrets": [{{"id": "a", "value": "s"}}],
                    "http_signature": {{"required_components": {components}}}}}"#
            )
        };
        let sigv4 = |block: &str| {
            format!(
                r#"{{"scheme": "aws_sigv4", "secrets": [{{"id": "AKID", "value": "s"}}]{block}}}"#
            )
        };
        let cases: Vec<(String, &str, &str)> = vec![
            // custom: a timestamp or id the signature does not cover.
            (
                custom(r#""timestamp_header": "x-timestamp""#),
                "custom.timestamp_header",
                "is not signed: add {timestamp}",
            ),
            (
                custom(
                    r#""timestamp_header": "x-timestamp", "signed_payload": "{header:x-other}.{body}""#,
                ),
                "custom.timestamp_header",
                "is not signed",
            ),
            (
                custom(r#""id_header": "x-id", "signed_payload": "{body}""#),
                "custom.id_header",
                "is not signed: add {id}",
            ),
            // custom: headers that can never carry what the sender signed.
            (
                custom(r#""timestamp_header": "X-Signature", "signed_payload": "{timestamp}{body}""#),
                "custom.timestamp_header",
                "must not be the signature_header",
            ),
            (
                custom(r#""id_header": "x-signature", "signed_payload": "{id}{body}""#),
                "custom.id_header",
                "must not be the signature_header",
            ),
            (
                custom(r#""signed_payload": "{header:x-signature}{body}""#),
                "custom.signed_payload",
                "cannot sign itself",
            ),
            (
                r#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}], "custom": {"signature_header": "Connection"}}"#.into(),
                "custom.signature_header",
                "hop-by-hop",
            ),
            (
                custom(r#""timestamp_header": "te", "signed_payload": "{timestamp}{body}""#),
                "custom.timestamp_header",
                "hop-by-hop",
            ),
            (
                custom(r#""signed_payload": "{header:Transfer-Encoding}{body}""#),
                "custom.signed_payload",
                "hop-by-hop",
            ),
            // custom: an empty template, or one without the body.
            (custom(r#""signed_payload": """#), "custom.signed_payload", "{body}"),
            (
                custom(r#""signed_payload": "{method} {path}""#),
                "custom.signed_payload",
                "{body}",
            ),
            // http_signature: a signature that covers nothing, or not the method, or no target.
            (
                httpsig("[]"),
                "http_signature.required_components",
                "must not be empty",
            ),
            (
                httpsig(r#"["@path", "content-digest"]"#),
                "http_signature.required_components",
                "\"@method\"",
            ),
            (
                httpsig(r#"["@method", "@authority", "@query", "content-digest"]"#),
                "http_signature.required_components",
                "\"@path\", \"@target-uri\" or \"@request-target\"",
            ),
            (
                httpsig(r#"["@method", "@path", "upgrade"]"#),
                "http_signature.required_components[2]",
                "hop-by-hop",
            ),
            // http_signature: an inherited top-level block is reported where it is written.
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                    "http_signature": {"required_components": ["@method"]},
                    "rules": [{"match": {}, "scheme": "http_signature"}]}"#
                    .into(),
                "http_signature.required_components",
                "@path",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                    "rules": [{"match": {}, "scheme": "http_signature",
                               "http_signature": {"required_components": []}}]}"#
                    .into(),
                "rules[0].http_signature.required_components",
                "must not be empty",
            ),
            // aws_sigv4: region and service are required, and literal.
            (sigv4(""), "aws_sigv4", "\"region\" and \"service\""),
            (
                sigv4(r#", "aws_sigv4": {"region": "us-east-1"}"#),
                "aws_sigv4.service",
                "missing field",
            ),
            (
                sigv4(r#", "aws_sigv4": {"region": "*", "service": "s3"}"#),
                "aws_sigv4.region",
                "a-z 0-9 -",
            ),
            (
                sigv4(r#", "aws_sigv4": {"region": "us-east-1", "service": ""}"#),
                "aws_sigv4.service",
                "1-64",
            ),
            (
                sigv4(r#", "aws_sigv4": {"region": "us-east-1", "service": "s3", "regions": []}"#),
                "aws_sigv4.regions",
                "unknown field",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                    "rules": [{"match": {}, "scheme": "aws_sigv4"}]}"#
                    .into(),
                "rules[0].aws_sigv4",
                "needs an \"aws_sigv4\" block",
            ),
            // Timestamp tolerance: zero or more than an hour.
            (
                r#"{"scheme": "slack", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "500ms"}"#.into(),
                "timestamp_tolerance",
                "at least 1s",
            ),
            (
                r#"{"scheme": "slack", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "61m"}"#.into(),
                "timestamp_tolerance",
                "at most 1h",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                    "rules": [{"match": {}, "timestamp_tolerance": "1000h"}]}"#
                    .into(),
                "rules[0].timestamp_tolerance",
                "at most 1h",
            ),
            // Replay ids forgotten while their timestamp is still fresh.
            (
                r#"{"scheme": "stripe", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "6m"}"#.into(),
                "replay.ttl",
                "is 10m but must be at least 12m (2 x timestamp_tolerance 6m of the stripe scheme)",
            ),
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "replay": {"ttl": "1h"},
                    "rules": [{"match": {}, "scheme": "standard_webhooks", "timestamp_tolerance": "45m",
                               "secrets": [{"id": "b", "value": "whsec_AAEC"}]}]}"#
                    .into(),
                "replay.ttl",
                "at least 90m (2 x timestamp_tolerance 45m of the standard_webhooks scheme of rules[0])",
            ),
            (
                r#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}], "replay": {"ttl": "9m"},
                    "custom": {"signature_header": "x-sig", "timestamp_header": "x-ts",
                               "signed_payload": "{timestamp}.{body}"}}"#
                    .into(),
                "replay.ttl",
                "at least 10m",
            ),
            // Secrets: none at all, for the filter or a rule.
            (
                r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "rules": [{"match": {}, "secrets": []}]}"#.into(),
                "rules[0].secrets",
                "at least one",
            ),
        ];
        for (json, path, reason) in &cases {
            let e = err(json);
            assert_eq!(e.path, *path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    /// What is accepted near those limits, and why it is not a weakening.
    #[test]
    fn accepted_near_the_limits() {
        // A signed timestamp written as a header placeholder signs the same value.
        let c = parse(
            br#"{"scheme": "custom", "secrets": [{"id": "a", "value": "s"}],
                 "custom": {"signature_header": "x-sig", "timestamp_header": "X-TS", "id_header": "x-id",
                            "signed_payload": "{header:x-ts}.{header:X-Id}.{body}"}}"#,
        )
        .unwrap();
        let Scheme::Custom(custom) = &c.policies.default_policy().scheme else {
            panic!()
        };
        assert_eq!(
            custom.payload,
            vec![
                Part::Timestamp,
                Part::Literal(".".into()),
                Part::Id,
                Part::Literal(".".into()),
                Part::Body
            ]
        );
        // Schemes without a signed timestamp set no bound on the ttl (it is their only window).
        for scheme in [
            r#""scheme": "github""#,
            r#""scheme": "shopify""#,
            r#""scheme": "custom", "custom": {"signature_header": "x-sig"}"#,
        ] {
            let json = format!(
                r#"{{{scheme}, "secrets": [{{"id": "a", "value": "s"}}], "timestamp_tolerance": "1h",
                    "replay": {{"ttl": "1s"}}}}"#
            );
            assert!(parse(json.as_bytes()).is_ok(), "{json}");
        }
        // Exactly twice the tolerance, an hour of tolerance, replay switched off by name.
        for json in [
            r#"{"scheme": "slack", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "1h", "replay": {"ttl": "2h"}}"#,
            r#"{"scheme": "slack", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "1h", "replay": {"enabled": false}}"#,
            r#"{"scheme": "slack", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "5m"}"#,
            // A rule switched off needs no settings.
            r#"{"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "rules": [{"match": {}, "enabled": false, "scheme": "aws_sigv4"}]}"#,
        ] {
            assert!(parse(json.as_bytes()).is_ok(), "{json}");
        }
        // The defaults and the narrowest accepted RFC 9421 set.
        let c = parse(br#"{"scheme": "http_signature", "secrets": [{"id": "a", "value": "s"}]}"#)
            .unwrap();
        assert_eq!(
            c.policies.default_policy().scheme,
            Scheme::HttpSignature(HttpSignatureSettings {
                required_components: ["@method", "@authority", "@path", "content-digest"]
                    .map(String::from)
                    .to_vec()
            })
        );
        for components in [r#"["@method", "@path"]"#, r#"["@METHOD", "@target-uri"]"#] {
            let json = format!(
                r#"{{"scheme": "http_signature", "secrets": [{{"id": "a", "value": "s"}}],
                    "http_signature": {{"required_components": {components}}}}}"#
            );
            assert!(parse(json.as_bytes()).is_ok(), "{json}");
        }
        let c = parse(
            br#"{"scheme": "aws_sigv4", "secrets": [{"id": "AKID", "value": "s"}],
                 "aws_sigv4": {"region": "eu-west-1", "service": "execute-api"},
                 "rules": [{"match": {"path_prefix": "/s3/"}, "aws_sigv4": {"region": "eu-west-1", "service": "s3"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.policies.default_policy().scheme,
            Scheme::AwsSigv4(AwsSigv4Settings {
                region: "eu-west-1".into(),
                service: "execute-api".into()
            })
        );
        assert_eq!(
            c.policies.rules()[0].policy.as_ref().unwrap().scheme,
            Scheme::AwsSigv4(AwsSigv4Settings {
                region: "eu-west-1".into(),
                service: "s3".into()
            })
        );
    }

    #[test]
    fn inherited_secret_error_is_reported_at_top_level() {
        // Top-level secrets are compiled first, so an error there is found at the top level.
        let e = err(
            r#"{"scheme": "github", "secrets": [{"id": "a", "value": "zz", "encoding": "hex"}]}"#,
        );
        assert_eq!(e.path, "secrets[0]");
        // A rule switching to standard_webhooks decodes the same top-level secret differently.
        let e = err(
            r#"{"scheme": "github", "secrets": [{"id": "a", "value": "not base64!"}],
                "rules": [{"match": {}, "scheme": "standard_webhooks"}]}"#,
        );
        assert_eq!(e.path, "secrets[0]");
        assert!(e.reason.contains("base64"));
    }

    #[test]
    fn istio_manifest_plugin_config_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("examples/istio/hmac-auth.yaml")).unwrap();
        let manifest: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(manifest["kind"].as_str(), Some("WasmPlugin"));
        // The variables vmConfig.env forwards, as the VM would see them.
        for env in manifest["spec"]["vmConfig"]["env"].as_sequence().unwrap() {
            assert_eq!(
                env["valueFrom"].as_str(),
                Some("HOST"),
                "secrets come from the host"
            );
            std::env::set_var(env["name"].as_str().unwrap(), "test-value");
        }
        let plugin: serde_json::Value =
            serde_json::to_value(&manifest["spec"]["pluginConfig"]).unwrap();
        let config = parse(plugin.to_string().as_bytes()).unwrap();
        assert_eq!(config.policies.default_policy().scheme, Scheme::Github);
        assert_eq!(config.policies.default_policy().keys.len(), 2);
        assert!(config.policies.rules()[0].policy.is_none());
        assert_eq!(
            config.policies.rules()[1].policy.as_ref().unwrap().scheme,
            Scheme::Stripe
        );
        assert_eq!(config.secret_ids(), vec!["current", "previous", "stripe"]);
    }

    #[test]
    fn shipped_envoy_config_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("envoy/hmac-auth.yaml")).unwrap();
        let envoy: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let filter = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"]["config"];
        for (name, value) in filter["vm_config"]["environment_variables"]["key_values"]
            .as_mapping()
            .unwrap()
        {
            std::env::set_var(name.as_str().unwrap(), value.as_str().unwrap());
        }
        let json = filter["configuration"]["value"].as_str().unwrap();
        let config = parse(json.as_bytes()).unwrap();
        assert_eq!(config.policies.rules().len(), 5);
        assert_eq!(
            config.policies.default_policy().keys[1].bytes,
            b"demo-previous-github-secret"
        );
    }

    #[test]
    fn asymmetric_keys_handshakes_and_duplicates_refused_where_meaningless() {
        let f: serde_json::Value = serde_json::from_str(include_str!("pubkey/keys.json")).unwrap();
        let ed = "0101010101010101010101010101010101010101010101010101010101010101";
        let ed_ok = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1u8; 32])
                .verifying_key()
                .to_bytes(),
        );
        let cases: Vec<(serde_json::Value, &str, &str)> = vec![
            (
                serde_json::json!({"scheme": "discord"}),
                "public_keys",
                "at least one public key",
            ),
            (
                serde_json::json!({"scheme": "discord", "public_keys": [{"id": "a", "value": f["ec_pem"]}]}),
                "public_keys[0]",
                "verifies Ed25519 signatures: this is an ecdsa-p256-sha256 key",
            ),
            (
                serde_json::json!({"scheme": "standard_webhooks", "public_keys": [{"id": "a", "value": f["rsa_pem"]}]}),
                "public_keys[0]",
                "rsa-pss-sha512",
            ),
            (
                serde_json::json!({"scheme": "standard_webhooks"}),
                "secrets",
                "at least one secret or public key",
            ),
            (
                serde_json::json!({"scheme": "http_signature", "secrets": [{"id": "a", "value": "s"}],
                                   "public_keys": [{"id": "a", "value": ed_ok}]}),
                "public_keys[0].id",
                "unique across secrets and public_keys",
            ),
            (
                serde_json::json!({"scheme": "http_signature",
                                   "public_keys": [{"id": "a", "value": ed_ok, "jwk": {}}]}),
                "public_keys[0]",
                "exactly one of",
            ),
            (
                serde_json::json!({"scheme": "http_signature", "public_keys": [{"id": "a", "value": &ed[2..]}]}),
                "public_keys[0]",
                "expected",
            ),
            (
                serde_json::json!({"scheme": "http_signature", "public_keys": [{"id": "a", "value": f["small_rsa"]}]}),
                "public_keys[0]",
                "1024 bits",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "handshake": true}),
                "handshake",
                "scheme github has no handshake",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "rules": [{"match": {}, "scheme": "stripe", "handshake": true}]}),
                "rules[0].handshake",
                "scheme stripe has no handshake",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "replay": {"duplicate_status": 500}}),
                "replay.duplicate_status",
                "2xx",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "key_id_header": "Connection", "hold_headers": true}),
                "key_id_header",
                "hop-by-hop",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "key_id_header": "x-key-id"}),
                "key_id_header",
                "needs \"hold_headers\": true",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "rules": [{"match": {}, "scheme": "discord"}]}),
                "rules[0].public_keys",
                "at least one public key",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "replay": {"enabled": false, "global": {"cluster": "rls", "domain": "d"}}}),
                "replay.global",
                "replay protection is off",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "replay": {"global": {"cluster": "rls", "domain": "d", "timeout": "0s"}}}),
                "replay.global.timeout",
                "between 1ms and 10s",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "replay": {"global": {"cluster": " ", "domain": "d"}}}),
                "replay.global.cluster",
                "must not be empty",
            ),
            (
                serde_json::json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}],
                                   "replay": {"global": {"cluster": "rls", "domain": "d", "failure_mode": "open"}}}),
                "replay.global.failure_mode",
                "unknown variant",
            ),
        ];
        for (json, path, reason) in &cases {
            let e = parse(json.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.path, *path, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
        // Accepted: a rule switching to discord with its own key ignores the inherited secrets;
        // slack, zoom and discord handshakes; a 202 for duplicates.
        let c = parse(
            serde_json::json!({"scheme": "slack", "secrets": [{"id": "a", "value": "s"}],
                "handshake": true, "replay": {"duplicate_status": 202},
                "rules": [{"match": {"path_prefix": "/discord"}, "scheme": "discord",
                           "public_keys": [{"id": "app", "value": ed_ok}]},
                          {"match": {"path_prefix": "/zoom"}, "scheme": "zoom"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let discord = c.policies.rules()[0].policy.as_ref().unwrap();
        assert!(discord.keys.is_empty() && discord.handshake);
        assert_eq!(discord.key_id(0), Some("app"));
        assert_eq!(c.replay.unwrap().duplicate_status, 202);
        assert_eq!(c.secret_ids(), vec!["a", "app"]);
    }
}
