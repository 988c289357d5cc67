//! The configuration: raw serde types (unknown fields rejected) compiled into [`Config`] once,
//! in `on_configure`: templates parsed, regexes built, pointers parsed, names validated.

use crate::body::{JsonEdits, SetValue};
use crate::ops::{parse_substitution, valid_header_value, Ops, PathRewrite, RequestHeaderOps};
use crate::pointer::Pointer;
use crate::template::{is_token_byte, HostFacts, Template};
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

/// Body edits of one direction and the buffering limit.
#[derive(Debug, Clone)]
pub struct BodyPolicy {
    /// The JSON edits.
    pub edits: JsonEdits,
    /// Bodies over this size are refused (requests: 413, responses: 502).
    pub max_body_bytes: u64,
    /// A body the edits cannot apply to: passed or refused.
    pub on_unsupported: OnUnsupported,
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
            |b: &Option<BodyPolicy>| b.as_ref().map(|b| b.edits.host_facts()).unwrap_or_default();
        self.request
            .ops
            .headers
            .host_facts()
            .union(self.request.ops.query.host_facts())
            .union(body(&self.request.body))
            .union(self.response.headers.host_facts())
            .union(body(&self.response.body))
    }

    /// True when the policy changes nothing in either direction.
    pub fn is_empty(&self) -> bool {
        self.request.ops.is_empty()
            && self.request.body.is_none()
            && self.response.headers.is_empty()
            && self.response.body.is_none()
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
    let default = Policy {
        request: Rc::new(compile_request(raw.request, "request")?),
        response: Rc::new(compile_response(raw.response, "response")?),
    };
    let rules: Vec<PolicyRule<Policy>> = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let at = format!("rules[{i}]");
            let request = match rule.request {
                Some(r) => Rc::new(compile_request(Some(r), &format!("{at}.request"))?),
                None => Rc::clone(&default.request),
            };
            let response = match rule.response {
                Some(r) => Rc::new(compile_response(Some(r), &format!("{at}.response"))?),
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

fn compile_request(raw: Option<RawRequest>, at: &str) -> Result<RequestPolicy, ConfigError> {
    let raw = raw.unwrap_or_default();
    let headers = match raw.headers {
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
    Ok(RequestPolicy {
        ops: RequestHeaderOps {
            headers,
            query,
            path,
        },
        body: compile_body(raw.body, &format!("{at}.body"), OnUnsupported::Refuse)?,
    })
}

fn compile_response(raw: Option<RawResponse>, at: &str) -> Result<ResponsePolicy, ConfigError> {
    let raw = raw.unwrap_or_default();
    Ok(ResponsePolicy {
        headers: match raw.headers {
            Some(ops) => compile_ops(ops, &format!("{at}.headers"), Kind::Header)?,
            None => Ops::default(),
        },
        body: compile_body(raw.body, &format!("{at}.body"), OnUnsupported::Pass)?,
    })
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
    let json = raw.json.unwrap_or_default();
    let remove = json
        .remove
        .iter()
        .enumerate()
        .map(|(i, p)| compile_pointer(p, &format!("{at}.json.remove[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let rename = json
        .rename
        .iter()
        .map(|(from, to)| {
            let here = format!("{at}.json.rename.{from}");
            Ok((compile_pointer(from, &here)?, compile_pointer(to, &here)?))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    for (from, to) in &rename {
        if from == to {
            return Err(ConfigError::new(
                format!("{at}.json.rename"),
                "a pointer is renamed to itself",
            ));
        }
        if rename.iter().any(|(source, _)| source == to) {
            return Err(ConfigError::new(
                format!("{at}.json.rename"),
                "chained renames (a destination that is also renamed) are ambiguous",
            ));
        }
    }
    let set = json
        .set
        .into_iter()
        .map(|(pointer, value)| {
            let here = format!("{at}.json.set.{pointer}");
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
    let edits = JsonEdits {
        remove,
        rename,
        set,
    };
    if edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(BodyPolicy {
        edits,
        max_body_bytes,
        on_unsupported: raw.on_unsupported.unwrap_or(default_unsupported),
    }))
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
