//! The configuration: raw serde types (unknown fields rejected) compiled into [`Config`] once,
//! in `on_configure`: templates parsed, regexes built, pointers parsed, names validated.

use crate::body::{is_xml, BodyKind, JsonEdits, SetValue};
use crate::form::FormEdits;
use crate::ops::{parse_substitution, valid_header_value, Ops, PathRewrite, RequestHeaderOps};
use crate::pointer::Pointer;
use crate::template::{is_token_byte, HostFacts, Template};
use crate::xml::{valid_name, ToJson, ToXml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasmgate_core::path::PathOptions;
use wasmgate_core::policies::PolicyRule;
use wasmgate_core::{ConfigError, Match, Policies};

/// The filter's name in logs, metrics and Envoy config.
pub const FILTER: &str = "transform";

/// Default limit of a buffered body: 1 MiB (Envoy's default per-connection buffer limit).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The top-level JSON configuration.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How request paths that are not in normal form are treated (`wasmgate_core::path`).
    #[serde(default)]
    paths: PathOptions,
    #[serde(default)]
    request: Option<RawRequest>,
    #[serde(default)]
    response: Option<RawResponse>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    hold_headers: bool,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    headers: Option<RawOps>,
    #[serde(default)]
    query: Option<RawOps>,
    #[serde(default)]
    path: Option<RawPath>,
    /// The method the upstream receives (an HTTP token, not `CONNECT`).
    #[serde(default)]
    method: Option<String>,
    /// The `:authority` (Host) the upstream receives: a host name or IP address, and a port.
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    body: Option<RawBody>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawResponse {
    #[serde(default)]
    headers: Option<RawOps>,
    #[serde(default)]
    body: Option<RawBody>,
    /// `{"404": 204}`: the upstream's status (200-599) and the status the client receives.
    #[serde(default)]
    status: BTreeMap<String, u16>,
    /// `{"404": {...}, "5xx": {...}}`: headers and body edits for the responses with that
    /// upstream status (a code before a class), replacing `headers` and `body`.
    #[serde(default)]
    /// (An entry has `headers` and `body` only.)
    by_status: BTreeMap<String, RawResponse>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawOps {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    append: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawPath {
    #[serde(default)]
    replace_prefix: Option<RawPrefix>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    substitution: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawPrefix {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawBody {
    #[serde(default)]
    json: Option<RawJson>,
    #[serde(default)]
    form: Option<RawForm>,
    /// Converts the body: `"json_to_xml"` or `"xml_to_json"`.
    #[serde(default)]
    convert: Option<Convert>,
    /// Options of the conversion.
    #[serde(default)]
    xml: Option<RawXml>,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    /// A body the edits cannot apply to (not JSON, compressed, not valid JSON): `"pass"` it
    /// unchanged or `"refuse"` it. Default: `"refuse"` for requests, `"pass"` for responses.
    #[serde(default)]
    on_unsupported: Option<OnUnsupported>,
}

/// What happens to a body the JSON edits cannot apply to: not JSON, compressed, or not valid
/// JSON (duplicate member names included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnUnsupported {
    /// The body goes on unchanged (counted).
    Pass,
    /// The filter answers: a request with 415 `unsupported_media_type` (not JSON, compressed) or
    /// 400 `invalid_json`; a response with 502 and the same codes.
    Refuse,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawJson {
    #[serde(default)]
    set: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// `{"/pointer": "header"}`: a body value copied into a request header.
    #[serde(default)]
    to_headers: BTreeMap<String, String>,
    /// `{"/error": 502}`: a response whose JSON body has a value at the pointer gets the status.
    #[serde(default)]
    status_when: BTreeMap<String, u16>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawForm {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// `{"field": "header"}`: a form field's value copied into a request header.
    #[serde(default)]
    to_headers: BTreeMap<String, String>,
}

/// A body conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Convert {
    /// A JSON body becomes an XML document.
    JsonToXml,
    /// An XML body becomes JSON.
    XmlToJson,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawXml {
    /// json_to_xml: elements wrapped around the document, outermost first.
    #[serde(default)]
    wrap: Vec<String>,
    /// json_to_xml: `{"prefix": "uri"}` declared on the root element.
    #[serde(default)]
    declare: BTreeMap<String, String>,
    /// json_to_xml: the new `content-type` (an XML media type).
    #[serde(default)]
    content_type: Option<String>,
    /// xml_to_json: names without their namespace prefix, `xmlns` declarations dropped.
    #[serde(default)]
    strip_prefixes: Option<bool>,
    /// xml_to_json: element names that are always arrays.
    #[serde(default)]
    arrays: Vec<String>,
    /// xml_to_json: element names from the root down whose last one's value is the body.
    #[serde(default)]
    unwrap: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matcher: Match,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    request: Option<RawRequest>,
    #[serde(default)]
    response: Option<RawResponse>,
}

/// A compiled conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// JSON to XML, and the `content-type` the XML body gets.
    ToXml(ToXml, String),
    /// XML to JSON.
    ToJson(ToJson),
}

/// Body edits of one direction and the buffering limit.
#[derive(Debug, Clone)]
pub struct BodyPolicy {
    /// The JSON edits (on JSON bodies, and on XML bodies after `xml_to_json`).
    pub edits: JsonEdits,
    /// The form edits (on form bodies).
    pub form: FormEdits,
    /// The conversion.
    pub convert: Option<Conversion>,
    /// Bodies over this size are refused (requests: 413, responses: 502).
    pub max_body_bytes: u64,
    /// A body the edits cannot apply to: passed or refused.
    pub on_unsupported: OnUnsupported,
    /// The media types the policy edits, for the 415 message.
    pub media: &'static str,
}

impl BodyPolicy {
    /// Whether a body of this kind is edited (or converted).
    pub fn accepts(&self, kind: BodyKind) -> bool {
        match kind {
            BodyKind::Json => {
                !self.edits.is_empty() || matches!(self.convert, Some(Conversion::ToXml(..)))
            }
            BodyKind::Form => !self.form.is_empty(),
            BodyKind::Xml => matches!(self.convert, Some(Conversion::ToJson(_))),
            BodyKind::Empty | BodyKind::NotJson | BodyKind::Compressed => false,
        }
    }

    /// The request headers body values are copied into.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.edits
            .to_headers
            .iter()
            .map(|(_, h)| h.as_str())
            .chain(self.form.to_headers.iter().map(|(_, h)| h.as_str()))
    }

    fn host_facts(&self) -> HostFacts {
        self.edits.host_facts().union(self.form.host_facts())
    }
}

/// Which upstream statuses a `by_status` entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// One code (`"404"`).
    Code(u16),
    /// A class (`"5xx"`: 5).
    Class(u16),
}

/// The response edits for some upstream statuses.
#[derive(Debug, Clone, Default)]
pub struct ResponseCase {
    /// Header operations.
    pub headers: Ops,
    /// Body edits, when there are any.
    pub body: Option<BodyPolicy>,
}

/// What happens to a request.
#[derive(Debug, Clone, Default)]
pub struct RequestPolicy {
    /// Header, query and path operations.
    pub ops: RequestHeaderOps,
    /// Body edits, when there are any.
    pub body: Option<BodyPolicy>,
}

/// What happens to a response.
#[derive(Debug, Clone, Default)]
pub struct ResponsePolicy {
    /// Header operations.
    pub headers: Ops,
    /// Body edits, when there are any.
    pub body: Option<BodyPolicy>,
    /// `(upstream status, new status)`.
    pub status: Vec<(u16, u16)>,
    /// Edits by upstream status, codes before classes.
    pub by_status: Vec<(StatusMatch, ResponseCase)>,
}

impl ResponsePolicy {
    /// True when the policy changes nothing.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.body.is_none()
            && self.status.is_empty()
            && self.by_status.is_empty()
    }

    /// The header operations and body edits for a response with this upstream status.
    pub fn for_status(&self, status: u16) -> (&Ops, Option<&BodyPolicy>) {
        let case = self
            .by_status
            .iter()
            .find(|(m, _)| *m == StatusMatch::Code(status))
            .or_else(|| {
                self.by_status
                    .iter()
                    .find(|(m, _)| *m == StatusMatch::Class(status / 100))
            });
        match case {
            Some((_, case)) => (&case.headers, case.body.as_ref()),
            None => (&self.headers, self.body.as_ref()),
        }
    }

    /// The status the client receives instead of `status`, if it is rewritten.
    pub fn new_status(&self, status: u16) -> Option<u16> {
        self.status
            .iter()
            .find(|(from, _)| *from == status)
            .map(|(_, to)| *to)
    }

    fn host_facts(&self) -> HostFacts {
        let body =
            |b: &Option<BodyPolicy>| b.as_ref().map(BodyPolicy::host_facts).unwrap_or_default();
        self.by_status.iter().fold(
            self.headers.host_facts().union(body(&self.body)),
            |facts, (_, case)| {
                facts
                    .union(case.headers.host_facts())
                    .union(body(&case.body))
            },
        )
    }
}

/// Both directions, as the defaults or a rule sets them.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The request side.
    pub request: Rc<RequestPolicy>,
    /// The response side.
    pub response: Rc<ResponsePolicy>,
}

impl Policy {
    /// The host facts the policy's templates read, in both directions.
    pub fn host_facts(&self) -> HostFacts {
        let body =
            |b: &Option<BodyPolicy>| b.as_ref().map(BodyPolicy::host_facts).unwrap_or_default();
        self.request
            .ops
            .headers
            .host_facts()
            .union(self.request.ops.query.host_facts())
            .union(body(&self.request.body))
            .union(self.response.host_facts())
    }

    /// True when the policy changes nothing in either direction.
    pub fn is_empty(&self) -> bool {
        self.request.ops.is_empty() && self.request.body.is_none() && self.response.is_empty()
    }
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The top-level policy and the rules (a rule's `request`/`response` replace the defaults').
    pub policies: Policies<Policy>,
    /// Hold the headers while a body is buffered (needs Envoy's
    /// `allow_on_headers_stop_iteration: true`), so Content-Length can be set exactly.
    pub hold_headers: bool,
    /// The host facts some policy or rule needs: the others are never read.
    pub host_facts: HostFacts,
}

/// Parses and compiles a configuration.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    wasmgate_core::config::parse::<RawConfig>(json).and_then(compile)
}

/// Compiles the raw configuration.
pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    let hold = raw.hold_headers;
    let default = Policy {
        request: Rc::new(compile_request(raw.request, "request", hold)?),
        response: Rc::new(compile_response(raw.response, "response", hold)?),
    };
    let rules: Vec<PolicyRule<Policy>> = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let at = format!("rules[{i}]");
            let request = match rule.request {
                Some(r) => Rc::new(compile_request(Some(r), &format!("{at}.request"), hold)?),
                None => Rc::clone(&default.request),
            };
            let response = match rule.response {
                Some(r) => Rc::new(compile_response(Some(r), &format!("{at}.response"), hold)?),
                None => Rc::clone(&default.response),
            };
            Ok(PolicyRule {
                matcher: rule.matcher,
                policy: rule
                    .enabled
                    .unwrap_or(true)
                    .then_some(Policy { request, response }),
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    let policies = Policies::new(default, rules).with_paths(raw.paths);
    let host_facts = policies
        .all()
        .map(Policy::host_facts)
        .fold(HostFacts::default(), HostFacts::union)
        .union(HostFacts {
            route: policies.reads_route(),
            ..HostFacts::default()
        });
    Ok(Config {
        policies,
        hold_headers: raw.hold_headers,
        host_facts,
    })
}

fn compile_request(
    raw: Option<RawRequest>,
    at: &str,
    hold: bool,
) -> Result<RequestPolicy, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mut headers = match raw.headers {
        Some(ops) => compile_ops(ops, &format!("{at}.headers"), Kind::Header)?,
        None => Ops::default(),
    };
    let query = match raw.query {
        Some(ops) => compile_ops(ops, &format!("{at}.query"), Kind::Query)?,
        None => Ops::default(),
    };
    let path = raw
        .path
        .map(|p| compile_path(p, &format!("{at}.path")))
        .transpose()?;
    let method = raw
        .method
        .map(|m| compile_method(m, &format!("{at}.method")))
        .transpose()?;
    let authority = raw
        .authority
        .map(|a| compile_authority(a, &format!("{at}.authority")))
        .transpose()?;
    let body_at = format!("{at}.body");
    let body = compile_body(raw.body, &body_at, OnUnsupported::Refuse, true)?;
    if let Some(body) = &body {
        let source = if body.edits.to_headers.is_empty() {
            "form"
        } else {
            "json"
        };
        let here = format!("{body_at}.{source}.to_headers");
        if body.header_names().next().is_some() && !hold {
            return Err(ConfigError::new(
                here,
                "needs \"hold_headers\": true (and Envoy's allow_on_headers_stop_iteration): \
                 otherwise the headers leave before the body arrives",
            ));
        }
        for name in body.header_names() {
            let written = headers
                .set
                .iter()
                .chain(&headers.add)
                .chain(&headers.append)
                .map(|(n, _)| n)
                .chain(headers.rename.iter().map(|(_, new)| new));
            if written.into_iter().any(|n| n == name) {
                return Err(ConfigError::new(
                    &here,
                    format!("header {name:?} is written by request.headers too"),
                ));
            }
            // A forged incoming header of that name never reaches the upstream.
            if !headers.remove.iter().any(|n| n == name) {
                headers.remove.push(name.to_string());
            }
        }
    }
    Ok(RequestPolicy {
        ops: RequestHeaderOps {
            headers,
            query,
            path,
            method,
            authority,
        },
        body,
    })
}

/// A response body policy with `status_when` needs the response headers held until the body
/// has been read.
fn check_status_when(body: &Option<BodyPolicy>, at: &str, hold: bool) -> Result<(), ConfigError> {
    if body
        .as_ref()
        .is_some_and(|b| !b.edits.status_when.is_empty())
        && !hold
    {
        return Err(ConfigError::new(
            format!("{at}.json.status_when"),
            "needs \"hold_headers\": true (and Envoy's allow_on_headers_stop_iteration): \
             otherwise the status leaves before the body arrives",
        ));
    }
    Ok(())
}

fn compile_response(
    raw: Option<RawResponse>,
    at: &str,
    hold: bool,
) -> Result<ResponsePolicy, ConfigError> {
    let raw = raw.unwrap_or_default();
    let status = raw
        .status
        .iter()
        .map(|(from, &to)| {
            let here = format!("{at}.status.{from}");
            let from = match from.parse::<u16>() {
                Ok(code) if from.len() == 3 && (200..=599).contains(&code) => code,
                _ => {
                    return Err(ConfigError::new(
                        &here,
                        "the upstream status must be a code from 200 to 599",
                    ))
                }
            };
            if !(200..=599).contains(&to) {
                return Err(ConfigError::new(
                    &here,
                    "the new status must be from 200 to 599",
                ));
            }
            if from == to {
                return Err(ConfigError::new(&here, "rewrites a status to itself"));
            }
            Ok((from, to))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let by_status = raw
        .by_status
        .into_iter()
        .map(|(key, case)| {
            let here = format!("{at}.by_status.{key}");
            for (field, given) in [
                ("status", !case.status.is_empty()),
                ("by_status", !case.by_status.is_empty()),
            ] {
                if given {
                    return Err(ConfigError::new(
                        format!("{here}.{field}"),
                        "only \"headers\" and \"body\" can depend on the upstream status",
                    ));
                }
            }
            let matcher = match key.as_bytes() {
                [class @ b'2'..=b'5', b'x', b'x'] => StatusMatch::Class(u16::from(class - b'0')),
                _ => {
                    match key.parse::<u16>() {
                        Ok(code) if key.len() == 3 && (200..=599).contains(&code) => {
                            StatusMatch::Code(code)
                        }
                        _ => return Err(ConfigError::new(
                            &here,
                            "give a status code from 200 to 599 or a class (\"2xx\" to \"5xx\")",
                        )),
                    }
                }
            };
            let body_at = format!("{here}.body");
            let body = compile_body(case.body, &body_at, OnUnsupported::Pass, false)?;
            check_status_when(&body, &body_at, hold)?;
            Ok((
                matcher,
                ResponseCase {
                    headers: match case.headers {
                        Some(ops) => compile_ops(ops, &format!("{here}.headers"), Kind::Header)?,
                        None => Ops::default(),
                    },
                    body,
                },
            ))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    // Codes before classes: the map's order ("404" < "4xx") keeps them so.
    let body_at = format!("{at}.body");
    let body = compile_body(raw.body, &body_at, OnUnsupported::Pass, false)?;
    check_status_when(&body, &body_at, hold)?;
    Ok(ResponsePolicy {
        headers: match raw.headers {
            Some(ops) => compile_ops(ops, &format!("{at}.headers"), Kind::Header)?,
            None => Ops::default(),
        },
        body,
        status,
        by_status,
    })
}

fn compile_method(method: String, at: &str) -> Result<String, ConfigError> {
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ConfigError::new(at, format!("invalid method {method:?}")));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(ConfigError::new(
            at,
            "CONNECT would turn the request into a tunnel",
        ));
    }
    Ok(method)
}

/// An authority the filter may send: a DNS name (letters, digits, `-` in dot-separated labels)
/// or an IPv4 address, or an IPv6 address in brackets; optionally `:port` (1-65535). Nothing
/// else: no user info, path, spaces or template.
pub fn valid_authority(authority: &str) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let host_ok = authority.starts_with('[')
        || (!host.is_empty() && host.len() <= 253 && host.split('.').all(label));
    port_ok && host_ok
}

fn compile_authority(authority: String, at: &str) -> Result<String, ConfigError> {
    if !valid_authority(&authority) {
        return Err(ConfigError::new(
            at,
            format!("{authority:?} is not a host name or IP address with an optional port"),
        ));
    }
    Ok(authority)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Header,
    Query,
}

/// Headers the filter must not touch: routing pseudo-headers have their own operations, and
/// framing headers are Envoy's (the filter keeps `content-length` right itself).
const RESERVED_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

fn compile_name(name: &str, at: &str, kind: Kind) -> Result<String, ConfigError> {
    match kind {
        Kind::Query => {
            if name.is_empty() {
                return Err(ConfigError::new(at, "empty query parameter name"));
            }
            Ok(name.to_string())
        }
        Kind::Header => {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || !lower.bytes().all(is_token_byte) {
                return Err(ConfigError::new(
                    at,
                    format!("invalid header name {name:?}"),
                ));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(ConfigError::new(
                    at,
                    format!("header {lower:?} cannot be transformed"),
                ));
            }
            Ok(lower)
        }
    }
}

fn compile_value(text: &str, at: &str, kind: Kind) -> Result<Template, ConfigError> {
    let template = Template::parse(text).map_err(|reason| ConfigError::new(at, reason))?;
    if template.is_literal() && text.is_empty() {
        return Err(ConfigError::new(
            at,
            "empty value: the operation would never apply",
        ));
    }
    if kind == Kind::Header && !template.literals().all(valid_header_value) {
        return Err(ConfigError::new(
            at,
            "header value contains a control character",
        ));
    }
    Ok(template)
}

fn compile_ops(raw: RawOps, at: &str, kind: Kind) -> Result<Ops, ConfigError> {
    let names = |map: BTreeMap<String, String>, op: &str| {
        map.into_iter()
            .map(|(name, value)| {
                let here = format!("{at}.{op}.{name}");
                Ok((
                    compile_name(&name, &here, kind)?,
                    compile_value(&value, &here, kind)?,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()
    };
    let remove = raw
        .remove
        .iter()
        .enumerate()
        .map(|(i, name)| compile_name(name, &format!("{at}.remove[{i}]"), kind))
        .collect::<Result<Vec<_>, _>>()?;
    let rename = raw
        .rename
        .iter()
        .map(|(old, new)| {
            let here = format!("{at}.rename.{old}");
            Ok((
                compile_name(old, &here, kind)?,
                compile_name(new, &here, kind)?,
            ))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    for (old, new) in &rename {
        if old == new {
            return Err(ConfigError::new(
                format!("{at}.rename.{old}"),
                "renames a name to itself",
            ));
        }
        if rename.iter().any(|(source, _)| source == new) {
            return Err(ConfigError::new(
                format!("{at}.rename.{old}"),
                format!("{new:?} is renamed too: chained renames are ambiguous"),
            ));
        }
    }
    Ok(Ops {
        remove,
        rename,
        set: names(raw.set, "set")?,
        add: names(raw.add, "add")?,
        append: names(raw.append, "append")?,
    })
}

fn compile_path(raw: RawPath, at: &str) -> Result<PathRewrite, ConfigError> {
    match (raw.replace_prefix, raw.regex, raw.substitution) {
        (Some(prefix), None, None) => {
            if !prefix.from.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{at}.replace_prefix.from"),
                    "must start with \"/\"",
                ));
            }
            if !prefix.to.is_empty() && !prefix.to.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{at}.replace_prefix.to"),
                    "must be empty or start with \"/\"",
                ));
            }
            Ok(PathRewrite::Prefix {
                from: prefix.from,
                to: prefix.to,
            })
        }
        (None, Some(regex), Some(substitution)) => {
            let regex = regex_lite::Regex::new(&regex).map_err(|e| {
                ConfigError::new(format!("{at}.regex"), format!("invalid regex: {e}"))
            })?;
            let substitution = parse_substitution(&substitution, regex.captures_len())
                .map_err(|reason| ConfigError::new(format!("{at}.substitution"), reason))?;
            Ok(PathRewrite::Regex {
                regex,
                substitution,
            })
        }
        (None, Some(_), None) => Err(ConfigError::new(
            format!("{at}.substitution"),
            "missing field",
        )),
        (None, None, Some(_)) => Err(ConfigError::new(format!("{at}.regex"), "missing field")),
        (None, None, None) => Err(ConfigError::new(
            at,
            "give \"replace_prefix\" or \"regex\" with \"substitution\"",
        )),
        (Some(_), _, _) => Err(ConfigError::new(
            at,
            "give either \"replace_prefix\" or \"regex\", not both",
        )),
    }
}

fn compile_pointer(text: &str, at: &str) -> Result<Pointer, ConfigError> {
    Pointer::parse(text).map_err(|reason| ConfigError::new(at, reason))
}

/// `default_unsupported`: what a body the edits cannot apply to gets when the configuration does
/// not say (requests are refused: a client picks its content type; responses pass).
fn compile_body(
    raw: Option<RawBody>,
    at: &str,
    default_unsupported: OnUnsupported,
    request: bool,
) -> Result<Option<BodyPolicy>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err(ConfigError::new(
            format!("{at}.max_body_bytes"),
            "must be at least 1",
        ));
    }
    let edits = compile_json(raw.json.unwrap_or_default(), &format!("{at}.json"), request)?;
    let form = compile_form(raw.form.unwrap_or_default(), &format!("{at}.form"), request)?;
    let convert = compile_convert(raw.convert, raw.xml, at)?;
    let policy = BodyPolicy {
        edits,
        form,
        convert,
        max_body_bytes,
        on_unsupported: raw.on_unsupported.unwrap_or(default_unsupported),
        media: "",
    };
    let accepted = [
        (
            BodyKind::Json,
            "JSON (application/json or application/*+json)",
        ),
        (BodyKind::Form, "a form (application/x-www-form-urlencoded)"),
        (
            BodyKind::Xml,
            "XML (application/xml, text/xml or application/*+xml)",
        ),
    ];
    let media = match accepted.map(|(kind, _)| policy.accepts(kind)) {
        [false, false, false] => return Ok(None),
        [true, false, false] => accepted[0].1,
        [false, true, false] => accepted[1].1,
        [false, false, true] => accepted[2].1,
        [true, true, false] => "JSON or a form",
        [true, false, true] => "JSON or XML",
        [false, true, true] => "a form or XML",
        [true, true, true] => "JSON, a form or XML",
    };
    Ok(Some(BodyPolicy { media, ..policy }))
}

fn compile_to_headers<K>(
    map: BTreeMap<String, String>,
    at: &str,
    request: bool,
    key: impl Fn(&str, &str) -> Result<K, ConfigError>,
) -> Result<Vec<(K, String)>, ConfigError> {
    if !map.is_empty() && !request {
        return Err(ConfigError::new(
            at,
            "only request bodies can be copied into headers",
        ));
    }
    let mut out: Vec<(K, String)> = Vec::new();
    for (source, header) in map {
        let here = format!("{at}.{source}");
        let name = compile_name(&header, &here, Kind::Header)?;
        if name.starts_with("x-envoy-") {
            // Envoy's router obeys these (timeouts, retries, redirects): a client's body must not
            // steer it.
            return Err(ConfigError::new(
                &here,
                format!("{name:?}: Envoy acts on x-envoy-* headers; a body value cannot set one"),
            ));
        }
        if out.iter().any(|(_, h)| *h == name) {
            return Err(ConfigError::new(
                &here,
                format!("header {name:?} is given two sources"),
            ));
        }
        out.push((key(&source, &here)?, name));
    }
    Ok(out)
}

fn compile_json(json: RawJson, at: &str, request: bool) -> Result<JsonEdits, ConfigError> {
    let remove = json
        .remove
        .iter()
        .enumerate()
        .map(|(i, p)| compile_pointer(p, &format!("{at}.remove[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let rename = json
        .rename
        .iter()
        .map(|(from, to)| {
            let here = format!("{at}.rename.{from}");
            Ok((compile_pointer(from, &here)?, compile_pointer(to, &here)?))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    for (from, to) in &rename {
        if from == to {
            return Err(ConfigError::new(
                format!("{at}.rename"),
                "a pointer is renamed to itself",
            ));
        }
        if rename.iter().any(|(source, _)| source == to) {
            return Err(ConfigError::new(
                format!("{at}.rename"),
                "chained renames (a destination that is also renamed) are ambiguous",
            ));
        }
    }
    let set = json
        .set
        .into_iter()
        .map(|(pointer, value)| {
            let here = format!("{at}.set.{pointer}");
            let target = compile_pointer(&pointer, &here)?;
            let value = match value {
                serde_json::Value::String(text) if text.contains("{{") => SetValue::Template(
                    Template::parse(&text).map_err(|reason| ConfigError::new(&here, reason))?,
                ),
                other => SetValue::Json(other),
            };
            Ok((target, value))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let to_headers = compile_to_headers(
        json.to_headers,
        &format!("{at}.to_headers"),
        request,
        compile_pointer,
    )?;
    if request && !json.status_when.is_empty() {
        return Err(ConfigError::new(
            format!("{at}.status_when"),
            "only responses have a status",
        ));
    }
    let status_when = json
        .status_when
        .iter()
        .map(|(pointer, &status)| {
            let here = format!("{at}.status_when.{pointer}");
            if !(200..=599).contains(&status) {
                return Err(ConfigError::new(
                    &here,
                    "the status must be from 200 to 599",
                ));
            }
            Ok((compile_pointer(pointer, &here)?, status))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(JsonEdits {
        remove,
        rename,
        set,
        to_headers,
        status_when,
    })
}

fn compile_form(form: RawForm, at: &str, request: bool) -> Result<FormEdits, ConfigError> {
    let name = |name: &str, here: &str| compile_name(name, here, Kind::Query);
    let remove = form
        .remove
        .iter()
        .enumerate()
        .map(|(i, n)| name(n, &format!("{at}.remove[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let rename = form
        .rename
        .iter()
        .map(|(old, new)| {
            let here = format!("{at}.rename.{old}");
            Ok((name(old, &here)?, name(new, &here)?))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    for (old, new) in &rename {
        let here = format!("{at}.rename.{old}");
        if old == new {
            return Err(ConfigError::new(here, "renames a name to itself"));
        }
        if rename.iter().any(|(source, _)| source == new) {
            return Err(ConfigError::new(
                here,
                format!("{new:?} is renamed too: chained renames are ambiguous"),
            ));
        }
    }
    let set = form
        .set
        .iter()
        .map(|(field, value)| {
            let here = format!("{at}.set.{field}");
            Ok((
                name(field, &here)?,
                compile_value(value, &here, Kind::Query)?,
            ))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let to_headers = compile_to_headers(
        form.to_headers,
        &format!("{at}.to_headers"),
        request,
        |field, here| name(field, here),
    )?;
    Ok(FormEdits {
        remove,
        rename,
        set,
        to_headers,
    })
}

fn compile_convert(
    convert: Option<Convert>,
    xml: Option<RawXml>,
    at: &str,
) -> Result<Option<Conversion>, ConfigError> {
    let Some(convert) = convert else {
        return match xml {
            Some(_) => Err(ConfigError::new(
                format!("{at}.xml"),
                "XML options without \"convert\" do nothing",
            )),
            None => Ok(None),
        };
    };
    let xml = xml.unwrap_or_default();
    let at = format!("{at}.xml");
    let only = |given: bool, field: &str, direction: &str| {
        if given {
            Err(ConfigError::new(
                format!("{at}.{field}"),
                format!("applies to \"convert\": \"{direction}\" only"),
            ))
        } else {
            Ok(())
        }
    };
    match convert {
        Convert::JsonToXml => {
            only(
                xml.strip_prefixes.is_some(),
                "strip_prefixes",
                "xml_to_json",
            )?;
            only(!xml.arrays.is_empty(), "arrays", "xml_to_json")?;
            only(!xml.unwrap.is_empty(), "unwrap", "xml_to_json")?;
            for (i, name) in xml.wrap.iter().enumerate() {
                if !valid_name(name) {
                    return Err(ConfigError::new(
                        format!("{at}.wrap[{i}]"),
                        format!("{name:?} is not an XML element name"),
                    ));
                }
            }
            for (prefix, uri) in &xml.declare {
                let here = format!("{at}.declare.{prefix}");
                if !prefix.is_empty() && (prefix.contains(':') || !valid_name(prefix)) {
                    return Err(ConfigError::new(here, "not a namespace prefix"));
                }
                if uri.is_empty() || !valid_header_value(uri) {
                    return Err(ConfigError::new(here, "the namespace must be a URI"));
                }
            }
            let content_type = xml
                .content_type
                .unwrap_or_else(|| "application/xml".to_string());
            if !is_xml(&content_type) || !valid_header_value(&content_type) {
                return Err(ConfigError::new(
                    format!("{at}.content_type"),
                    "must be an XML media type (application/xml, text/xml, application/*+xml)",
                ));
            }
            Ok(Some(Conversion::ToXml(
                ToXml {
                    wrap: xml.wrap,
                    declare: xml.declare.into_iter().collect(),
                },
                content_type,
            )))
        }
        Convert::XmlToJson => {
            only(!xml.wrap.is_empty(), "wrap", "json_to_xml")?;
            only(!xml.declare.is_empty(), "declare", "json_to_xml")?;
            only(xml.content_type.is_some(), "content_type", "json_to_xml")?;
            for (field, names) in [("arrays", &xml.arrays), ("unwrap", &xml.unwrap)] {
                if let Some(i) = names.iter().position(|n| n.is_empty()) {
                    return Err(ConfigError::new(
                        format!("{at}.{field}[{i}]"),
                        "empty element name",
                    ));
                }
            }
            Ok(Some(Conversion::ToJson(ToJson {
                strip_prefixes: xml.strip_prefixes.unwrap_or_default(),
                arrays: xml.arrays,
                unwrap: xml.unwrap,
            })))
        }
    }
}

/// JSON Schema of the configuration, generated from the types above (feature `schema`, for the
/// `wasmgate` CLI; never built into the module).
#[cfg(feature = "schema")]
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_only_where_used() {
        let facts = |json: &str| parse(json.as_bytes()).unwrap().host_facts;
        let none = HostFacts::default();
        assert_eq!(
            facts(r#"{"request": {"headers": {"set": {"x-a": "fixed"}}}}"#),
            none
        );
        let path = facts(r#"{"request": {"headers": {"set": {"x-a": "{{path}}"}}}}"#);
        assert!(path.request && !path.client_ip && !path.route);
        let client_ip = facts(r#"{"request": {"headers": {"set": {"x-ip": "{{ client_ip }}"}}}}"#);
        assert!(client_ip.client_ip && !client_ip.route);
        let response_route = facts(r#"{"response": {"headers": {"add": {"x-r": "{{route}}"}}}}"#);
        assert!(response_route.route && !response_route.client_ip);
        let body = facts(
            r#"{"rules": [{"match": {}, "request": {"body": {"json": {"set": {"/ip": "{{client_ip}}"}}}}}]}"#,
        );
        assert!(body.client_ip);
        let matched = facts(r#"{"rules": [{"match": {"routes": ["api"]}, "enabled": false}]}"#);
        assert!(matched.route && !matched.client_ip);
    }

    const ISSUE_EXAMPLE: &str = r#"{
      "request": {
        "headers": {"remove": ["x-internal"], "rename": {"x-old": "x-new"},
                    "set": {"x-user": "{{header.x-jwt-sub}}"}, "add": {"x-source": "gateway"},
                    "append": {"x-trace": "wasmgate"}},
        "query": {"remove": ["debug"], "rename": {"q": "query"}, "set": {"v": "2"}, "add": {"lang": "en"}},
        "path": {"replace_prefix": {"from": "/v1/", "to": "/api/v1/"}},
        "body": {"json": {"set": {"/meta/source": "gateway"}, "remove": ["/password"],
                          "rename": {"/user_name": "/username"}},
                 "max_body_bytes": 1048576}
      },
      "response": {
        "headers": {"remove": ["server"], "set": {"x-served-by": "wasmgate"}},
        "body": {"json": {"remove": ["/internal"]}}
      },
      "rules": [{"match": {"path_prefix": "/raw/"}, "enabled": false}]
    }"#;

    fn err(json: &str) -> ConfigError {
        parse(json.as_bytes()).unwrap_err()
    }

    fn info(path: &str) -> wasmgate_core::RequestInfo {
        wasmgate_core::RequestInfo::new(None, "h", path, "GET", vec![])
    }

    #[test]
    fn issue_example_compiles() {
        let config = parse(ISSUE_EXAMPLE.as_bytes()).unwrap();
        let request = &config.policies.default_policy().request;
        assert_eq!(request.ops.headers.remove, ["x-internal"]);
        assert_eq!(
            request.ops.headers.rename,
            [("x-old".into(), "x-new".into())]
        );
        assert_eq!(request.ops.query.set.len(), 1);
        assert!(request.ops.path.is_some());
        let body = request.body.as_ref().unwrap();
        assert_eq!(body.max_body_bytes, 1_048_576);
        assert_eq!(
            (
                body.edits.set.len(),
                body.edits.remove.len(),
                body.edits.rename.len()
            ),
            (1, 1, 1)
        );
        assert!(config.policies.default_policy().response.body.is_some());
        assert!(config.policies.select(&info("/raw/x")).policy().is_none());
        assert!(config.policies.select(&info("/v1/x")).policy().is_some());
        assert!(!config.hold_headers);
        assert!(parse(br#"{"hold_headers": true}"#).unwrap().hold_headers);
    }

    #[test]
    fn minimal_and_empty() {
        let config = parse(b"{}").unwrap();
        assert!(config.policies.default_policy().request.ops.is_empty());
        assert!(config.policies.default_policy().request.body.is_none());
        assert!(config.policies.default_policy().is_empty());
        let config = parse(br#"{"request": {"body": {"max_body_bytes": 10}}}"#).unwrap();
        assert!(
            config.policies.default_policy().request.body.is_none(),
            "no edits: no buffering"
        );
    }

    #[test]
    fn rules_override_a_direction() {
        let config = parse(
            br#"{"request": {"headers": {"add": {"x-a": "default"}}},
                 "response": {"headers": {"add": {"x-r": "default"}}},
                 "rules": [{"match": {"path_prefix": "/b/"}, "request": {"headers": {"add": {"x-b": "rule"}}}}]}"#,
        )
        .unwrap();
        let selected = config.policies.select(&info("/b/1"));
        let policy = selected.policy().unwrap();
        assert_eq!(policy.request.ops.headers.add[0].0, "x-b");
        assert_eq!(
            policy.response.headers.add[0].0, "x-r",
            "response inherited"
        );
        let selected = config.policies.select(&info("/a"));
        let policy = selected.policy().unwrap();
        assert_eq!(policy.request.ops.headers.add[0].0, "x-a");
    }

    #[test]
    fn on_unsupported_defaults_and_values() {
        let body = |json: &str, request: bool| {
            let config = parse(json.as_bytes()).unwrap();
            let policy = config.policies.default_policy();
            let body = if request {
                policy.request.body.as_ref()
            } else {
                policy.response.body.as_ref()
            };
            body.unwrap().on_unsupported
        };
        let edits = r#"{"json": {"remove": ["/a"]}}"#;
        assert_eq!(
            body(&format!(r#"{{"request": {{"body": {edits}}}}}"#), true),
            OnUnsupported::Refuse,
            "requests are refused by default"
        );
        assert_eq!(
            body(&format!(r#"{{"response": {{"body": {edits}}}}}"#), false),
            OnUnsupported::Pass,
            "responses pass by default"
        );
        assert_eq!(
            body(
                r#"{"request": {"body": {"json": {"remove": ["/a"]}, "on_unsupported": "pass"}}}"#,
                true
            ),
            OnUnsupported::Pass
        );
        assert_eq!(
            body(
                r#"{"response": {"body": {"json": {"remove": ["/a"]}, "on_unsupported": "refuse"}}}"#,
                false
            ),
            OnUnsupported::Refuse
        );
        let e =
            err(r#"{"request": {"body": {"json": {"remove": ["/a"]}, "on_unsupported": "skip"}}}"#);
        assert_eq!(e.path, "request.body.on_unsupported");
    }

    #[test]
    fn header_names_are_lowercased_and_checked() {
        let config = parse(br#"{"request": {"headers": {"set": {"X-User": "a"}}}}"#).unwrap();
        assert_eq!(
            config.policies.default_policy().request.ops.headers.set[0].0,
            "x-user"
        );
        let e = err(r#"{"request": {"headers": {"set": {"x user": "a"}}}}"#);
        assert_eq!(e.path, "request.headers.set.x user");
        let e = err(r#"{"response": {"headers": {"remove": ["ok", ":status"]}}}"#);
        assert_eq!(e.path, "response.headers.remove[1]");
        let e = err(r#"{"request": {"headers": {"set": {"Content-Length": "1"}}}}"#);
        assert!(e.reason.contains("cannot be transformed"), "{e}");
        let e = err(r#"{"request": {"headers": {"rename": {"x-a": "host"}}}}"#);
        assert_eq!(e.path, "request.headers.rename.x-a");
    }

    #[test]
    fn invalid_values() {
        let e = err(r#"{"request": {"headers": {"set": {"x-a": "{{header.}}"}}}}"#);
        assert_eq!(e.path, "request.headers.set.x-a");
        let e = err(r#"{"request": {"query": {"add": {"a": "{{nope}}"}}}}"#);
        assert_eq!(e.path, "request.query.add.a");
        assert!(e.reason.contains("unknown placeholder"), "{e}");
        let e = err(r#"{"request": {"headers": {"add": {"x-a": ""}}}}"#);
        assert!(e.reason.contains("empty value"), "{e}");
        let e = err(r#"{"request": {"headers": {"add": {"x-a": "a\r\nx-b: c"}}}}"#);
        assert!(e.reason.contains("control character"), "{e}");
        let e = err(r#"{"request": {"query": {"remove": [""]}}}"#);
        assert_eq!(e.path, "request.query.remove[0]");
    }

    #[test]
    fn chained_renames_are_rejected() {
        let e = err(r#"{"request": {"headers": {"rename": {"a": "b", "b": "c"}}}}"#);
        assert_eq!(e.path, "request.headers.rename.a");
        let e = err(r#"{"request": {"headers": {"rename": {"a": "A"}}}}"#);
        assert!(e.reason.contains("itself"), "{e}");
        let e = err(r#"{"request": {"body": {"json": {"rename": {"/a": "/b", "/b": "/c"}}}}}"#);
        assert_eq!(e.path, "request.body.json.rename");
    }

    #[test]
    fn path_forms() {
        let ok = parse(
            br#"{"request": {"path": {"regex": "^/users/([0-9]+)$", "substitution": "/u/\\1"}}}"#,
        );
        assert!(ok.is_ok());
        let cases = [
            (r#"{"request": {"path": {}}}"#, "request.path"),
            (
                r#"{"request": {"path": {"regex": "^/a"}}}"#,
                "request.path.substitution",
            ),
            (
                r#"{"request": {"path": {"substitution": "/a"}}}"#,
                "request.path.regex",
            ),
            (
                r#"{"request": {"path": {"regex": "(", "substitution": "/"}}}"#,
                "request.path.regex",
            ),
            (
                r#"{"request": {"path": {"regex": "^/a", "substitution": "/\\1"}}}"#,
                "request.path.substitution",
            ),
            (
                r#"{"request": {"path": {"replace_prefix": {"from": "v1", "to": "/"}}}}"#,
                "request.path.replace_prefix.from",
            ),
            (
                r#"{"request": {"path": {"replace_prefix": {"from": "/v1", "to": "x"}}}}"#,
                "request.path.replace_prefix.to",
            ),
            (
                r#"{"request": {"path": {"replace_prefix": {"from": "/a", "to": "/b"}, "regex": "x", "substitution": "/"}}}"#,
                "request.path",
            ),
            (
                r#"{"request": {"path": {"replace_prefix": {"from": "/a"}}}}"#,
                "request.path.replace_prefix.to",
            ),
            (
                r#"{"request": {"path": {"prefix": "/a"}}}"#,
                "request.path.prefix",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(err(json).path, path, "{json}");
        }
    }

    #[test]
    fn body_config() {
        let config = parse(
            br#"{"request": {"body": {"json": {"set": {"/a": {"k": [1]}, "/b": "{{method}}", "/c": "plain"}}}}}"#,
        )
        .unwrap();
        let body = config
            .policies
            .default_policy()
            .request
            .body
            .as_ref()
            .unwrap();
        assert_eq!(body.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(matches!(body.edits.set[0].1, SetValue::Json(_)));
        assert!(matches!(body.edits.set[1].1, SetValue::Template(_)));
        assert!(matches!(body.edits.set[2].1, SetValue::Json(_)));
        let e = err(r#"{"request": {"body": {"json": {"remove": ["a"]}}}}"#);
        assert_eq!(e.path, "request.body.json.remove[0]");
        let e = err(r#"{"response": {"body": {"json": {"set": {"/a~2": 1}}}}}"#);
        assert_eq!(e.path, "response.body.json.set./a~2");
        let e = err(r#"{"request": {"body": {"json": {"set": {"/a": "{{x}}"}}}}}"#);
        assert!(e.reason.contains("unknown placeholder"), "{e}");
        let e = err(r#"{"request": {"body": {"max_body_bytes": 0, "json": {"remove": ["/a"]}}}}"#);
        assert_eq!(e.path, "request.body.max_body_bytes");
        let e = err(r#"{"request": {"body": {"max_body_bytes": -1}}}"#);
        assert_eq!(e.path, "request.body.max_body_bytes");
        let e = err(r#"{"request": {"body": {"json": {"sett": {}}}}}"#);
        assert_eq!(e.path, "request.body.json.sett");
    }

    #[test]
    fn form_and_to_headers() {
        let config = parse(
            br#"{"hold_headers": true, "request": {
                "headers": {"remove": ["x-tenant"]},
                "body": {"form": {"set": {"source": "gw"}, "remove": ["password"],
                                  "rename": {"user_name": "username"}, "to_headers": {"team": "X-Team"}},
                         "json": {"to_headers": {"/tenant/id": "x-tenant"}}}}}"#,
        )
        .unwrap();
        let request = &config.policies.default_policy().request;
        let body = request.body.as_ref().unwrap();
        assert!(body.accepts(BodyKind::Json) && body.accepts(BodyKind::Form));
        assert!(!body.accepts(BodyKind::Xml));
        assert_eq!(body.form.to_headers, [("team".into(), "x-team".into())]);
        // The headers a body value goes into are removed from the incoming request first.
        assert_eq!(request.ops.headers.remove, ["x-tenant", "x-team"]);
        let form_only =
            parse(br#"{"request": {"body": {"form": {"remove": ["password"]}}}}"#).unwrap();
        let body = form_only
            .policies
            .default_policy()
            .request
            .body
            .clone()
            .unwrap();
        assert!(body.accepts(BodyKind::Form) && !body.accepts(BodyKind::Json));
        assert_eq!(body.media, "a form (application/x-www-form-urlencoded)");
    }

    #[test]
    fn to_headers_that_would_do_nothing_or_could_be_forged_are_refused() {
        let cases = [
            // Without held headers the headers leave before the body.
            (
                r#"{"request": {"body": {"json": {"to_headers": {"/t": "x-t"}}}}}"#,
                "request.body.json.to_headers",
                "hold_headers",
            ),
            (
                r#"{"request": {"body": {"form": {"to_headers": {"t": "x-t"}}}}}"#,
                "request.body.form.to_headers",
                "hold_headers",
            ),
            (
                r#"{"hold_headers": true, "response": {"body": {"json": {"to_headers": {"/t": "x-t"}}}}}"#,
                "response.body.json.to_headers",
                "only request",
            ),
            (
                r#"{"hold_headers": true, "request": {"headers": {"rename": {"x-a": "x-t"}},
                    "body": {"json": {"to_headers": {"/t": "x-t"}}}}}"#,
                "request.body.json.to_headers",
                "written by request.headers",
            ),
            (
                r#"{"hold_headers": true, "request": {"headers": {"add": {"x-t": "a"}},
                    "body": {"form": {"to_headers": {"t": "x-t"}}}}}"#,
                "request.body.form.to_headers",
                "written by request.headers",
            ),
            (
                r#"{"hold_headers": true, "request": {"body": {"json": {"to_headers": {"/a": "x-t", "/b": "X-T"}}}}}"#,
                "request.body.json.to_headers./b",
                "two sources",
            ),
            (
                r#"{"hold_headers": true, "request": {"body": {"json": {"to_headers": {"/a": "host"}}}}}"#,
                "request.body.json.to_headers./a",
                "cannot be transformed",
            ),
            (
                r#"{"hold_headers": true, "request": {"body": {"json": {"to_headers": {"/a": "X-Envoy-Upstream-Rq-Timeout-Ms"}}}}}"#,
                "request.body.json.to_headers./a",
                "x-envoy-",
            ),
            (
                r#"{"hold_headers": true, "request": {"body": {"json": {"to_headers": {"/a": ":path"}}}}}"#,
                "request.body.json.to_headers./a",
                "invalid header name",
            ),
            (
                r#"{"hold_headers": true, "request": {"body": {"json": {"to_headers": {"a": "x-a"}}}}}"#,
                "request.body.json.to_headers.a",
                "must start with",
            ),
            (
                r#"{"request": {"body": {"form": {"set": {"": "x"}}}}}"#,
                "request.body.form.set.",
                "empty",
            ),
            (
                r#"{"request": {"body": {"form": {"rename": {"a": "b", "b": "c"}}}}}"#,
                "request.body.form.rename.a",
                "chained",
            ),
            (
                r#"{"request": {"body": {"form": {"set": {"a": ""}}}}}"#,
                "request.body.form.set.a",
                "empty value",
            ),
        ];
        for (json, path, reason) in cases {
            let e = err(json);
            assert_eq!(e.path, path, "{json}");
            assert!(e.reason.contains(reason), "{json}: {e}");
        }
    }

    #[test]
    fn method_and_authority() {
        let config =
            parse(br#"{"request": {"method": "POST", "authority": "legacy.internal:8080"}}"#)
                .unwrap();
        let ops = &config.policies.default_policy().request.ops;
        assert_eq!(ops.method.as_deref(), Some("POST"));
        assert_eq!(ops.authority.as_deref(), Some("legacy.internal:8080"));
        for good in [
            "a",
            "api.example.com",
            "10.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "x-1.y",
        ] {
            assert!(valid_authority(good), "{good}");
        }
        for bad in [
            "",
            "user@host",
            "host/path",
            "host:0",
            "host:65536",
            "host:",
            "host:8a",
            "-host",
            "host-.com",
            "a..b",
            "a b",
            "[::1",
            "[zz]",
            "[::1]x",
            "{{header.x}}",
            "host\r\nx-a: b",
            "h\u{e9}",
            "a_b",
        ] {
            assert!(!valid_authority(bad), "{bad:?}");
            let json = serde_json::json!({"request": {"authority": bad}}).to_string();
            assert_eq!(err(&json).path, "request.authority", "{bad:?}");
        }
        for bad in ["CONNECT", "connect", "", "GET /", "P\u{d6}ST"] {
            let json = serde_json::json!({"request": {"method": bad}}).to_string();
            assert_eq!(err(&json).path, "request.method", "{bad:?}");
        }
        assert!(err(r#"{"request": {"method": "CONNECT"}}"#)
            .reason
            .contains("tunnel"));
    }

    #[test]
    fn status_rewrites_and_by_status() {
        let config = parse(
            br#"{"response": {"status": {"404": 204, "200": 502},
                 "headers": {"set": {"x-default": "1"}},
                 "by_status": {"5xx": {"headers": {"set": {"x-class": "1"}}},
                               "503": {"headers": {"set": {"x-code": "1"}}}}}}"#,
        )
        .unwrap();
        let response = &config.policies.default_policy().response;
        assert_eq!(response.new_status(404), Some(204));
        assert_eq!(response.new_status(500), None);
        assert_eq!(
            response.for_status(503).0.set[0].0,
            "x-code",
            "a code before a class"
        );
        assert_eq!(response.for_status(500).0.set[0].0, "x-class");
        assert_eq!(response.for_status(200).0.set[0].0, "x-default");
        let cases = [
            (
                r#"{"response": {"status": {"404": 101}}}"#,
                "response.status.404",
            ),
            (
                r#"{"response": {"status": {"404": 600}}}"#,
                "response.status.404",
            ),
            (
                r#"{"response": {"status": {"404": 404}}}"#,
                "response.status.404",
            ),
            (
                r#"{"response": {"status": {"4xx": 200}}}"#,
                "response.status.4xx",
            ),
            (
                r#"{"response": {"status": {"100": 200}}}"#,
                "response.status.100",
            ),
            (
                r#"{"response": {"status": {"0404": 200}}}"#,
                "response.status.0404",
            ),
            (
                r#"{"response": {"status": {"404": -1}}}"#,
                "response.status.404",
            ),
            (
                r#"{"response": {"by_status": {"1xx": {}}}}"#,
                "response.by_status.1xx",
            ),
            (
                r#"{"response": {"by_status": {"x": {}}}}"#,
                "response.by_status.x",
            ),
            (
                r#"{"response": {"by_status": {"404": {"status": {"404": 200}}}}}"#,
                "response.by_status.404.status",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(err(json).path, path, "{json}");
        }
    }

    #[test]
    fn status_when() {
        let config = parse(
            br#"{"hold_headers": true, "response": {"body": {"json": {"status_when": {"/error": 502}}}}}"#,
        )
        .unwrap();
        let body = config
            .policies
            .default_policy()
            .response
            .body
            .clone()
            .unwrap();
        assert_eq!(body.edits.status_when.len(), 1);
        assert!(body.accepts(BodyKind::Json));
        let cases = [
            (
                r#"{"response": {"body": {"json": {"status_when": {"/error": 502}}}}}"#,
                "response.body.json.status_when",
            ),
            (
                r#"{"response": {"by_status": {"200": {"body": {"json": {"status_when": {"/e": 502}}}}}}}"#,
                "response.by_status.200.body.json.status_when",
            ),
            (
                r#"{"hold_headers": true, "request": {"body": {"json": {"status_when": {"/e": 502}}}}}"#,
                "request.body.json.status_when",
            ),
            (
                r#"{"hold_headers": true, "response": {"body": {"json": {"status_when": {"/e": 99}}}}}"#,
                "response.body.json.status_when./e",
            ),
            (
                r#"{"hold_headers": true, "response": {"body": {"json": {"status_when": {"e": 502}}}}}"#,
                "response.body.json.status_when.e",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(err(json).path, path, "{json}");
        }
    }

    #[test]
    fn conversions() {
        let config = parse(
            br#"{"request": {"body": {"convert": "json_to_xml",
                   "xml": {"wrap": ["soap:Envelope", "soap:Body"],
                           "declare": {"soap": "http://schemas.xmlsoap.org/soap/envelope/"},
                           "content_type": "text/xml; charset=utf-8"}}},
                 "response": {"body": {"convert": "xml_to_json",
                   "xml": {"strip_prefixes": true, "unwrap": ["Envelope", "Body"], "arrays": ["Item"]}}}}"#,
        )
        .unwrap();
        let policy = config.policies.default_policy();
        let request = policy.request.body.as_ref().unwrap();
        assert!(request.accepts(BodyKind::Json) && !request.accepts(BodyKind::Xml));
        assert!(
            matches!(&request.convert, Some(Conversion::ToXml(_, ct)) if ct == "text/xml; charset=utf-8")
        );
        let response = policy.response.body.as_ref().unwrap();
        assert!(response.accepts(BodyKind::Xml) && !response.accepts(BodyKind::Json));
        let cases = [
            (r#"{"request": {"body": {"xml": {}}}}"#, "request.body.xml"),
            (
                r#"{"request": {"body": {"convert": "xml_to_xml"}}}"#,
                "request.body.convert",
            ),
            (
                r#"{"request": {"body": {"convert": "json_to_xml", "xml": {"arrays": ["a"]}}}}"#,
                "request.body.xml.arrays",
            ),
            (
                r#"{"response": {"body": {"convert": "xml_to_json", "xml": {"wrap": ["a"]}}}}"#,
                "response.body.xml.wrap",
            ),
            (
                r#"{"request": {"body": {"convert": "json_to_xml", "xml": {"wrap": ["a b"]}}}}"#,
                "request.body.xml.wrap[0]",
            ),
            (
                r#"{"request": {"body": {"convert": "json_to_xml", "xml": {"declare": {"a:b": "u"}}}}}"#,
                "request.body.xml.declare.a:b",
            ),
            (
                r#"{"request": {"body": {"convert": "json_to_xml", "xml": {"declare": {"a": ""}}}}}"#,
                "request.body.xml.declare.a",
            ),
            (
                r#"{"request": {"body": {"convert": "json_to_xml", "xml": {"content_type": "application/json"}}}}"#,
                "request.body.xml.content_type",
            ),
            (
                r#"{"response": {"body": {"convert": "xml_to_json", "xml": {"unwrap": [""]}}}}"#,
                "response.body.xml.unwrap[0]",
            ),
            (
                r#"{"response": {"body": {"convert": "xml_to_json", "xml": {"strip_prefixes": "yes"}}}}"#,
                "response.body.xml.strip_prefixes",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(err(json).path, path, "{json}");
        }
    }

    #[test]
    fn unknown_fields_and_rules() {
        assert_eq!(err(r#"{"requests": {}}"#).path, "requests");
        assert_eq!(err(r#"{"response": {"query": {}}}"#).path, "response.query");
        assert_eq!(
            err(r#"{"rules": [{"enabled": false}]}"#).path,
            "rules[0].match"
        );
        let e = err(r#"{"rules": [{"match": {}, "request": {"headers": {"set": {"x": ""}}}}]}"#);
        assert_eq!(e.path, "rules[0].request.headers.set.x");
    }

    #[test]
    fn shipped_examples_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let istio = std::fs::read_to_string(root.join("examples/istio/transform.yaml")).unwrap();
        let config = istio
            .split_once("pluginConfig:")
            .map(|(_, rest)| rest)
            .expect("a pluginConfig");
        parse(config.trim().as_bytes()).expect("the Istio pluginConfig parses");
        // envoy/transform.yaml: the JSON block after `value: |`, up to `vm_config:`.
        let standalone = std::fs::read_to_string(root.join("envoy/transform.yaml")).unwrap();
        let block = standalone
            .split_once("value: |")
            .and_then(|(_, rest)| rest.split_once("vm_config:"))
            .map(|(block, _)| block)
            .expect("a configuration block");
        parse(block.trim().as_bytes()).expect("envoy/transform.yaml configuration parses");
        // envoy/demo.yaml: the single-quoted value of the transform entry.
        let demo = std::fs::read_to_string(root.join("envoy/demo.yaml")).unwrap();
        let value = demo
            .split_once("root_id: transform")
            .and_then(|(_, rest)| rest.split_once("value: '"))
            .and_then(|(_, rest)| rest.split_once("'\n"))
            .map(|(value, _)| value)
            .expect("the demo configuration");
        parse(value.as_bytes()).expect("the demo configuration parses");
    }
}
