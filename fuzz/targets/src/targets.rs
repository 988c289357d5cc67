//! The targets. Each documents the input format it reads; every format accepts any bytes.

use crate::drive;
use crate::input::{first_line, text, words, Message};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};
use wasmgate_core::shared::{SetError, SharedStore};
use wasmgate_core::{Match, RequestInfo};

/// The rich configurations the request targets run under (every scheme, key part, template and
/// edit kind on some path); `fuzz/seeds.py` seeds the config targets with them too.
pub mod configs {
    /// hmac-auth: one rule per scheme, by path prefix.
    pub const HMAC_AUTH: &[u8] = include_bytes!("../configs/hmac_auth.json");
    /// jwt-auth: a local JWKS (RFC 7515 keys) and a remote one.
    pub const JWT_AUTH: &[u8] = include_bytes!("../configs/jwt_auth.json");
    /// rate-limit: local limits of each algorithm and a global rule.
    pub const RATE_LIMIT: &[u8] = include_bytes!("../configs/rate_limit.json");
    /// transform: every operation and template.
    pub const TRANSFORM: &[u8] = include_bytes!("../configs/transform.json");
    /// retry in filter mode.
    pub const RETRY: &[u8] = include_bytes!("../configs/retry.json");
    /// retry in router mode (envoy/retry.yaml).
    pub const RETRY_ROUTER: &[u8] = include_bytes!("../configs/retry_router.json");
}

/// A shared-data store whose keys, until first written, all hold the input's bytes: what another
/// module version or a corrupt write left there. CAS semantics as Envoy's.
struct CorruptStore {
    initial: Vec<u8>,
    values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl CorruptStore {
    fn new(initial: &[u8]) -> Self {
        Self {
            initial: initial.to_vec(),
            values: RefCell::default(),
            next_cas: RefCell::new(1),
        }
    }
}

impl SharedStore for CorruptStore {
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
        Ok(match self.values.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (Some(self.initial.clone()), Some(1)),
        })
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut values = self.values.borrow_mut();
        let current = values.get(key).map_or(1, |(_, c)| *c);
        if cas.is_some_and(|c| c != 0 && c != current) {
            return Err(SetError::CasMismatch);
        }
        let mut next = self.next_cas.borrow_mut();
        *next += 1;
        values.insert(key.to_string(), (value.to_vec(), *next));
        Ok(())
    }
}

fn request_info(message: &Message) -> RequestInfo {
    let regular: Vec<(String, String)> = message
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with(':'))
        .cloned()
        .collect();
    RequestInfo::new(
        Some(message.header("x-route").to_string()),
        message.header(":authority"),
        message.header(":path"),
        message.header(":method"),
        regular,
    )
}

// ---------------------------------------------------------------- jwt-auth

/// A compact JWS (the whole input as the token): parsing, its claims, and the verification
/// decision against the RFC 7515 keys (HMAC, RSA, P-256, P-521) and an Ed25519 key (RFC 8037).
pub fn jws(data: &[u8]) {
    use jwt_auth::{claims::Claims, jwks::Jwks, jws};
    let token = text(data);
    let Ok(parsed) = jws::parse(token.trim()) else {
        return;
    };
    let _ = parsed.alg.name();
    if let Ok(claims) = Claims::parse(&parsed.payload) {
        let _ = claims.check_time(1_300_819_000, 60);
        let _ = claims.check_time(u64::MAX, u64::MAX);
    }
    if let Ok(jwks) = Jwks::parse(TEST_JWKS) {
        let _ = jws::verify(&parsed, &jwks);
    }
}

/// Public keys of RFC 7515 A.1-A.4 and RFC 8037 A.2.
pub const TEST_JWKS: &str = r#"{"keys": [
 {"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
 {"kty": "RSA", "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ", "e": "AQAB"},
 {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
 {"kty": "EC", "crv": "P-521", "x": "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk", "y": "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"},
 {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
]}"#;

/// A JWKS document as fetched (status 200, any body): the size cap, parsing, every key; the
/// same bytes as an OIDC discovery document and as an RFC 7662 introspection answer.
pub fn jwks(data: &[u8]) {
    use jwt_auth::jwks::Jwks;
    let clusters = [("keys.example.net".to_string(), "keys".to_string())];
    let expect = jwt_auth::discovery::Expect {
        issuer: "https://idp.example.com",
        https: true,
        authority: "idp.example.com",
        cluster: "idp",
        clusters: &clusters,
        max_bytes: 65_536,
    };
    let _ = jwt_auth::discovery::accept(Some("200"), Some(data), &expect);
    let _ = jwt_auth::discovery::target(&text(data), &expect);
    let _ = jwt_auth::introspect::parse_answer(Some("200"), data, 65_536);
    let limits = jwt_auth::jwks::KeyLimits::default();
    let _ = jwt_auth::remote::accept_response(Some("200"), Some(data), 65_536, &limits);
    let _ = Jwks::parse_limited(&text(data), &limits);
    if let Ok(jwks) = Jwks::parse(&text(data)) {
        let _ = jwks.has_kid("k1");
        for key in &jwks.keys {
            let _ = format!("{key:?}");
        }
    }
}

/// Line 1: a claim rule `name=value|value`; the rest: a JWT payload (JSON).
pub fn claims(data: &[u8]) {
    use jwt_auth::claims::{header_value, scalar_text, ArrayFormat, ClaimMatch, ClaimRule, Claims};
    let (rule, payload) = first_line(data);
    let rule = text(rule);
    let (name, values) = rule.split_once('=').unwrap_or((&rule, ""));
    let tests: Vec<ClaimMatch> = values
        .split('|')
        .map(|v| match v.strip_prefix('^') {
            Some(prefix) => ClaimMatch::Prefix(prefix.to_string()),
            None => match v.strip_prefix('!') {
                Some(not) => ClaimMatch::Not(Box::new(ClaimMatch::Equals(not.to_string()))),
                None => ClaimMatch::Equals(v.to_string()),
            },
        })
        .collect();
    let rule = ClaimRule {
        name: name.to_string(),
        rule: ClaimMatch::AnyOf(tests.clone()),
    };
    let all = ClaimRule {
        name: name.to_string(),
        rule: ClaimMatch::AllOf(tests),
    };
    let Ok(claims) = Claims::parse(payload) else {
        return;
    };
    let _ = rule.holds(&claims);
    let _ = all.holds(&claims);
    let _ = claims.check_audience(&["api".to_string(), String::new()]);
    for now in [0, 1_735_689_600, u64::MAX] {
        let _ = claims.check_time(now, 60);
        let _ = claims.check_time(now, u64::MAX);
    }
    if let Some(value) = claims.get(&rule.name) {
        let _ = scalar_text(value);
        let _ = header_value(value, ArrayFormat::Base64Json);
        let _ = header_value(value, ArrayFormat::CommaSeparated);
    }
}

/// jwt-auth, whole filter: a request ([`drive::request`]); the callout answer is the remote
/// JWKS fetch's.
pub fn jwt_request(data: &[u8]) {
    drive::request::<jwt_auth::filter::JwtAuth>(configs::JWT_AUTH, data);
}

// ---------------------------------------------------------------- hmac-auth

/// A request (a [`Message`]) checked by every scheme's header parsing and verification in turn
/// (GitHub, Stripe, Slack, Shopify, Standard Webhooks, RFC 9421 structured fields and
/// Signature-Input/Signature, SigV4 Authorization and X-Amz-Date, custom), plus the structured
/// field parser and the public-key parser on every header value, and the handshake, Twilio form
/// and rate-limit-answer readers on the body.
pub fn hmac_headers(data: &[u8]) {
    use hmac_auth::handshake::Kind;
    use hmac_auth::{sf, sigv4, verify};
    let message = Message::parse(data);
    let now = message.now_ms.unwrap_or(drive::DEFAULT_NOW_MS) / 1000;
    for (_, value) in &message.headers {
        if let Ok(dictionary) = sf::parse_dictionary(value) {
            for (_, member) in &dictionary {
                let _ = format!("{member:?}");
            }
        }
        let _ = sigv4::parse_amz_date(value);
        let _ = verify::parse_seconds(value, "x");
        let _ = hmac_auth::pubkey::parse_text(value);
        let _ = verify::parse_rfc3339(value, "x");
    }
    // Handshake bodies and Twilio's signed form (both read the untrusted body).
    for kind in [Kind::Slack, Kind::Zoom, Kind::Discord] {
        let _ = hmac_auth::handshake::answer(kind, &message.body, Some(b"k"));
    }
    let _ = verify::twilio_payload("https://h", &message.body);
    // The rate limit service's answer (replay.global).
    let _ = hmac_auth::global::seen(0, &message.body);
    let Ok(config) = hmac_auth::config::parse(configs::HMAC_AUTH) else {
        return;
    };
    let req = verify::Request::from_headers(message.headers.clone());
    for policy in config.policies.all() {
        if let Ok(pending) = verify::prepare(policy, &req, now) {
            let _ = verify::verify(policy, &pending, &req, &message.body);
        }
    }
}

/// hmac-auth, whole filter: a request ([`drive::request`]); replay ids go through shared data.
pub fn hmac_request(data: &[u8]) {
    drive::request::<hmac_auth::filter::HmacAuth>(configs::HMAC_AUTH, data);
}

// ---------------------------------------------------------------- core: the request view

/// A path: normal form (with and without encoded slashes), idempotence, segment prefixes.
pub fn path(data: &[u8]) {
    use wasmgate_core::path::{has_segment_prefix, normalize};
    let path = text(data);
    for allow in [false, true] {
        if let Ok(normal) = normalize(&path, allow) {
            // The normal form is a fixed point.
            let again = normalize(&normal, allow).map(|n| n.into_owned());
            assert_eq!(again.as_deref(), Ok(&*normal), "normalize is idempotent");
            let _ = has_segment_prefix(&normal, "/api");
        }
    }
    if let Some((a, b)) = path.split_once(' ') {
        let _ = has_segment_prefix(a, b);
    }
}

/// A request (a [`Message`]): the request view (host, normal path, path verdicts, query lookups,
/// client address with each number of trusted hops).
pub fn request_view(data: &[u8]) {
    use wasmgate_core::path::{PathOptions, Unnormalized};
    use wasmgate_core::request;
    let message = Message::parse(data);
    let info = request_info(&message);
    for unnormalized in [Unnormalized::Reject, Unnormalized::Rewrite] {
        for allow_encoded_slashes in [false, true] {
            let _ = PathOptions {
                unnormalized,
                allow_encoded_slashes,
            }
            .verdict(&info);
        }
    }
    let _ = (info.raw_path(), info.raw_query());
    for name in ["q", "a b", "", "%20"] {
        let _ = info.query_raw(name);
        let _ = info.query_decoded(name);
    }
    let source = message.header("x-source");
    for hops in [0, 1, 2, u32::MAX] {
        let _ = info.client_ip(Some(source), hops);
        let _ = info.client_ip(None, hops);
    }
    let _ = request::declared_length(&message.headers);
    let _ = request::strip_port(message.header(":authority"));
    let _ = info.header_values("x-forwarded-for").count();
}

/// Line 1: a rule's `match` (JSON); the rest: a request (a [`Message`]).
pub fn rule_match(data: &[u8]) {
    let (rule, rest) = first_line(data);
    let Ok(rule) = serde_json::from_slice::<Match>(rule) else {
        return;
    };
    let info = request_info(&Message::parse(rest));
    let _ = rule.matches(&info);
    let _ = (rule.uses_route(), rule.headers_read());
}

/// A query string: the shared decoders and transform's parse/serialize.
pub fn query(data: &[u8]) {
    use wasmgate_core::request;
    let raw = text(data);
    for (name, value) in request::raw_pairs(&raw) {
        let _ = request::decode_component(name);
        let _ = request::query_decoded(&raw, value);
    }
    let _ = request::query_of(&raw);
    let pairs = transform::query::parse(&raw);
    let serialized = transform::query::serialize(pairs.iter().map(|(_, p)| p));
    let _ = transform::query::parse(&serialized);
    let decoded = transform::query::decode(&raw);
    let _ = transform::query::encode(&decoded);
}

// ---------------------------------------------------------------- transform

/// Line 1: a template; the rest: the request it renders against (a [`Message`]).
pub fn template(data: &[u8]) {
    use transform::template::{RequestVars, Template};
    let (template, rest) = first_line(data);
    let Ok(template) = Template::parse(&text(template)) else {
        return;
    };
    let _ = (template.host_facts(), template.is_literal());
    let _ = template.literals().count();
    let message = Message::parse(rest);
    let vars = RequestVars::new(
        &message.headers,
        Some(message.header("x-source")),
        Some("route".into()),
    );
    let _ = template.render(&vars);
}

/// A JSON pointer: parsing, array indexes.
pub fn json_pointer(data: &[u8]) {
    use transform::pointer::{array_slot, index, Pointer};
    let Ok(pointer) = Pointer::parse(&text(data)) else {
        return;
    };
    for token in pointer.tokens() {
        let _ = index(token);
        for len in [0, 1, 7, usize::MAX] {
            let _ = array_slot(token, len);
        }
    }
    let _ = pointer.starts_with(&pointer);
}

/// Line 1: `set|remove|rename <pointer> [<pointer or JSON value>]`; the rest: a JSON body. The
/// lossless document edits, then the rendered body must be JSON again.
pub fn json_edit(data: &[u8]) {
    use transform::doc::Document;
    use transform::pointer::Pointer;
    let (op, body) = first_line(data);
    let op = text(op);
    let mut words = op.splitn(3, ' ');
    let (kind, target, arg) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let Ok(target) = Pointer::parse(target) else {
        return;
    };
    let Ok(mut doc) = Document::parse(body) else {
        return;
    };
    let result = match kind {
        "remove" => doc.remove(target.tokens()).map(|_| ()),
        "rename" => match Pointer::parse(arg) {
            Ok(to) => doc.rename(target.tokens(), to.tokens()).map(|_| ()),
            Err(_) => return,
        },
        _ => match serde_json::from_str(arg) {
            Ok(value) => doc.set(target.tokens(), value).map(|_| ()),
            Err(_) => return,
        },
    };
    if result.is_ok() {
        if let Ok(rendered) = doc.render() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&rendered).is_ok(),
                "an edited JSON body is JSON"
            );
        }
    }
}

/// transform, whole filter: a request with a body and the upstream response with its body.
pub fn transform_request(data: &[u8]) {
    drive::request::<transform::filter::Transform>(configs::TRANSFORM, data);
}

// ---------------------------------------------------------------- rate-limit

/// A request (a [`Message`]; `x-source` is the downstream address, `x-cost` a claimed cost):
/// every key part, with 0..2 trusted hops and network prefixes, the `client_ip` fallback, and
/// the cost header's bounds.
pub fn rate_limit_key(data: &[u8]) {
    use rate_limit::key::{build, descriptor_key, KeyInput, KeyPart};
    let message = Message::parse(data);
    let info = request_info(&message);
    let parts = [
        KeyPart::ClientIp,
        KeyPart::Header("x-api-key".into()),
        KeyPart::Query("user".into()),
        KeyPart::Path,
        KeyPart::Method,
        KeyPart::Route,
        KeyPart::Constant("c".into()),
    ];
    for hops in [0, 1, 2] {
        let input = KeyInput {
            info: &info,
            source_address: Some(message.header("x-source")),
            xff_num_trusted_hops: hops,
            prefixes: rate_limit::key::Prefixes {
                ipv4: 8 + 8 * hops as u8,
                ipv6: 48 + 16 * hops as u8,
            },
        };
        let _ = build(&parts, &input);
        let _ = rate_limit::key::build_with_fallback(&parts, &input, "10.0.0.0/8");
        let _ = rate_limit::key::fallback(&input);
        let _ = rate_limit::key::mask(message.header("x-source").to_string(), input.prefixes);
    }
    // The cost a request header claims: at least 1, at most max_cost, whatever the bytes.
    let cost = rate_limit::config::Cost {
        units: 2,
        header: Some("x-cost".into()),
        max: 5,
    };
    let charged = cost.of(Some(message.header("x-cost")));
    assert!((1..=5).contains(&charged), "cost {charged}");
    for part in &parts {
        let _ = descriptor_key(part);
    }
}

/// rate-limit, whole filter: a request; the callout answer is the rate limit service's gRPC
/// answer (`grpc-status` header, body: the protobuf message).
pub fn rate_limit_request(data: &[u8]) {
    drive::request::<rate_limit::filter::RateLimit>(configs::RATE_LIMIT, data);
}

/// The rate limit service's answer (a `RateLimitResponse` protobuf) for a global rule, in each
/// failure mode, with and without local limits first.
pub fn rate_limit_answer(data: &[u8]) {
    use rate_limit::config::FailureMode;
    use rate_limit::global::{verdict, Failure};
    let Ok(config) = rate_limit::config::parse(configs::RATE_LIMIT) else {
        return;
    };
    for rule in config.policies.all() {
        let Some(global) = &rule.global else {
            continue;
        };
        for failure_mode in [FailureMode::Allow, FailureMode::Deny] {
            for local_first in [false, true] {
                let global = rate_limit::config::Global {
                    failure_mode,
                    local_first,
                    ..global.clone()
                };
                let _ = verdict(rule, &global, Ok(data));
                let _ = verdict(rule, &global, Err(Failure::Status(data.len() as u32)));
            }
        }
    }
}

// ---------------------------------------------------------------- retry

/// Line 1: a `Retry-After` value; the rest: the upstream answer's headers (a [`Message`]), read
/// as router and as callout attempts, then every retry decision at a few clock readings.
pub fn retry_after(data: &[u8]) {
    use retry::attempt::Attempt;
    use retry::policy;
    use wasmgate_core::Answer;
    let (value, rest) = first_line(data);
    let value = text(value);
    let message = Message::parse(rest);
    let Ok(config) = retry::config::parse(configs::RETRY) else {
        return;
    };
    let router = Attempt::from_router(message.headers.clone(), Some(&message.body));
    let answer = Attempt::from_answer(Answer::Http {
        headers: message.headers.clone(),
        body: message.body.clone(),
    });
    let _ = policy::router_attempts(Some(&message.body), || {
        Some(message.header("x-envoy-attempt-count").to_string())
    });
    let _ = policy::declared_too_large(Some(message.header("content-length")), 4096);
    let _ = policy::parse_ratelimit_reset(&value);
    for now in [UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(1_735_689_600)] {
        let _ = policy::parse_retry_after(&value, now);
        let _ = policy::parse_ratelimit_reset_header(&value, now);
        for policy in config.policies.all() {
            for attempt in [Some(&router), answer.as_ref()] {
                let outcome = Attempt::outcome(attempt);
                let asked = attempt.and_then(|a| a.asked_wait(now));
                for random in [0, u64::MAX] {
                    let _ = policy::next_delay(policy, 1, asked, random);
                    let _ = policy::plan_retry(policy, &outcome, 1, 3, asked, u64::MAX, random);
                    let _ =
                        policy::plan_retry(policy, &outcome, u32::MAX, u32::MAX, asked, 0, random);
                }
            }
            let _ = policy::router_headers(policy, u32::MAX);
        }
    }
}

/// retry, whole filter, in filter mode (the callout answers are the attempts' upstream
/// answers) and in router mode.
pub fn retry_request(data: &[u8]) {
    drive::request::<retry::filter::Retry>(configs::RETRY, data);
    drive::request::<retry::filter::Retry>(configs::RETRY_ROUTER, data);
}

// ---------------------------------------------------------------- shared-data state

/// The clock readings the state targets use: the input's first word, and the edges.
fn clocks(first: u64) -> [u64; 4] {
    [first, 0, u64::MAX, 1_735_689_600]
}

/// retry's budget window as stored: 8 bytes of clock (seconds), then the value; every update.
pub fn state_budget(data: &[u8]) {
    use retry::budget::{self, Window};
    use retry::config::BudgetConfig;
    let (w, value) = words(data, 1);
    let configs = [
        BudgetConfig {
            ratio: 0.2,
            min_per_second: 5,
        },
        BudgetConfig {
            ratio: 1.0,
            min_per_second: u32::MAX,
        },
    ];
    for now in clocks(w[0]) {
        let mut window = Window::decode(value);
        let _ = window.totals(now);
        window.record_request(now);
        for config in &configs {
            let _ = window.allows_retry(now, config);
            let _ = window.try_retry(now, config);
        }
        let _ = window.allowance(now, &configs[1], 10);
        window.charge(now, u64::MAX);
        let _ = Window::decode(&window.encode());
        let store = CorruptStore::new(value);
        let _ = budget::record_request(&store, "k", now);
        let _ = budget::record_and_allow(&store, "k", now, &configs[0], 3);
        let _ = budget::reserve(&store, "k", now, &configs[1], 3);
        let _ = budget::charge(&store, "k", now, u32::MAX);
    }
}

/// retry's circuit state as stored: 8 bytes of clock (ms), then the value; admit and record.
pub fn state_breaker(data: &[u8]) {
    use retry::breaker::{self, Call, State};
    use retry::config::{BreakerConfig, Scope};
    let (w, value) = words(data, 1);
    let configs = [
        BreakerConfig {
            scope: Scope::Cluster,
            failure_threshold: Some(2),
            failure_rate: Some(0.5),
            slow_call_duration: Some(Duration::from_secs(1)),
            slow_call_rate: Some(1.0),
            minimum_calls: 1,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            half_open_requests: 1,
            failure_status_codes: vec![503],
        },
        BreakerConfig {
            scope: Scope::Route,
            failure_threshold: Some(u32::MAX),
            failure_rate: None,
            slow_call_duration: None,
            slow_call_rate: None,
            minimum_calls: u32::MAX,
            window: Duration::MAX,
            open_for: Duration::MAX,
            max_open_for: Duration::MAX,
            half_open_requests: u32::MAX,
            failure_status_codes: vec![],
        },
    ];
    for now in clocks(w[0]) {
        for config in &configs {
            let state = State::decode(value);
            let _ = state.is_open(now);
            let (state, _) = state.admit(config, now);
            for (failed, slow, probe) in [
                (false, false, false),
                (true, true, true),
                (true, false, true),
                (false, false, true),
            ] {
                let call = Call {
                    failed,
                    slow,
                    probe,
                };
                for random in [0, u64::MAX] {
                    let _ = state.clone().record(config, now, call, random);
                }
            }
            let _ = State::decode(&state.encode());
            let store = CorruptStore::new(value);
            let _ = breaker::admit(&store, "k", config, now);
            let call = Call {
                failed: true,
                slow: false,
                probe: true,
            };
            let _ = breaker::record(&store, "k", config, now, call, now);
            let call = Call {
                failed: false,
                slow: true,
                probe: false,
            };
            let _ = breaker::record(&store, "k", config, now, call, now);
            let _ = breaker::is_open(&store, "k", now);
            for trips in [0, 1, 64, u32::MAX] {
                let _ = breaker::open_time_ms(config, trips, now);
            }
        }
    }
}

/// hmac-auth's replay bucket as stored: 8 bytes of clock (seconds), then the bucket value;
/// claim, settle, claim again.
pub fn state_replay(data: &[u8]) {
    use hmac_auth::replay::Table;
    let (w, value) = words(data, 1);
    for (ttl, max) in [(600, 64), (u64::MAX, 1)] {
        let table = Table::new("ns", ttl, max);
        for now in clocks(w[0]) {
            let store = CorruptStore::new(value);
            let fp = Table::fingerprint(0, "github", "id");
            let _ = table.claim(&store, &fp, now);
            for success in [true, false] {
                let _ = table.settle(&store, &fp, now, success);
                let _ = table.claim(&store, &fp, now);
            }
        }
    }
}

/// rate-limit's shared bucket as stored: 8 bytes of clock (ns), then the value every bucket
/// key holds; each rule of the rich configuration counts one key in it. The value's first 24
/// bytes are also one limit state, run through every algorithm (extreme limits included).
pub fn state_rate_limit(data: &[u8]) {
    use rate_limit::algorithm::{Algorithm, Limit};
    use rate_limit::store::{decide, peek, refund, Key, Seed, Table};
    let (w, value) = words(data, 1);
    let Ok(config) = rate_limit::config::parse(configs::RATE_LIMIT) else {
        return;
    };
    // The algorithms themselves over any stored state (the words after the clock), with
    // extreme limits too.
    let (state, _) = words(value, 3);
    let state = [state[0], state[1], state[2]];
    let mut limits: Vec<_> = config
        .policies
        .all()
        .flat_map(|p| p.limits.clone())
        .collect();
    for (requests, window_ns) in [(1, 1), (u64::MAX, u64::MAX), (u64::MAX, 1), (1, u64::MAX)] {
        for algorithm in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::TokenBucket { burst: u64::MAX },
            Algorithm::TokenBucket { burst: 1 },
        ] {
            limits.push(Limit {
                name: "x".into(),
                requests,
                window_ns,
                algorithm,
            });
        }
    }
    for limit in &limits {
        for now in clocks(w[0]) {
            let normal = limit.normalize(state, now);
            let _ = (limit.idle_at(&state), limit.idle_at(&normal));
            let _ = limit.retry_after_ns(&normal, now);
            let _ = limit.report(&normal, now);
            if limit.allows(&normal, now) {
                let consumed = limit.consume(normal, now);
                let _ = limit.report(&consumed, now);
                let _ = limit.idle_at(&consumed);
            }
            for cost in [2, u64::from(u32::MAX), u64::MAX] {
                if limit.retry_after_cost_ns(&normal, now, cost) == 0 {
                    let consumed = limit.consume_cost(normal, now, cost);
                    let _ = limit.report(&consumed, now);
                    let _ = limit.refund(consumed, now, cost);
                }
            }
            let _ = rate_limit::headers::retry_after(limit.retry_after_ns(&state, now));
        }
    }
    for max_keys in [1, 64] {
        let table = Table::new("ns/", max_keys, Seed::from_bytes([7; 16]));
        for now in clocks(w[0]) {
            let store = CorruptStore::new(value);
            for (rule, policy) in config.policies.all().enumerate() {
                if policy.limits.is_empty() {
                    continue;
                }
                for (group_index, group) in policy.groups.iter().enumerate() {
                    for key in ["a", "b"] {
                        let key = Key {
                            rule,
                            group: group_index,
                            fingerprint: &group.fingerprint,
                            value: key,
                        };
                        let _ = decide(&store, &table, &key, &group.limits, now);
                        let _ = peek(&store, &table, &key, &group.limits, now, 3);
                        let _ = refund(&store, &table, &key, &group.limits, now, 3, false);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- configuration loaders

/// jwt-auth's configuration loader (the whole `configure`).
pub fn config_jwt_auth(data: &[u8]) {
    drive::config::<jwt_auth::filter::JwtAuth>(data);
}

/// hmac-auth's configuration loader.
pub fn config_hmac_auth(data: &[u8]) {
    drive::config::<hmac_auth::filter::HmacAuth>(data);
}

/// rate-limit's configuration loader.
pub fn config_rate_limit(data: &[u8]) {
    drive::config::<rate_limit::filter::RateLimit>(data);
}

/// transform's configuration loader.
pub fn config_transform(data: &[u8]) {
    drive::config::<transform::filter::Transform>(data);
}

/// retry's configuration loader.
pub fn config_retry(data: &[u8]) {
    drive::config::<retry::filter::Retry>(data);
}
