//! A rule's `match` block: which requests a per-route rule applies to (selection among rules is
//! [`crate::policies::Policies`]).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::request::strip_port;
pub use crate::request::RequestInfo;

/// The `match` block of a rule. All given fields must hold; an empty match holds for every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawMatch")]
pub struct Match {
    routes: Vec<String>,
    hosts: Vec<HostPattern>,
    path_prefix: Option<String>,
    path_exact: Option<String>,
    methods: Vec<String>,
    headers: Vec<(String, HeaderMatch)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    path_prefix: Option<String>,
    path_exact: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderMatch>,
}

impl TryFrom<RawMatch> for Match {
    type Error = String;

    fn try_from(raw: RawMatch) -> Result<Self, String> {
        for path in raw.path_prefix.iter().chain(raw.path_exact.iter()) {
            if !path.starts_with('/') {
                return Err(format!("path {path:?} must start with \"/\""));
            }
        }
        let hosts = raw
            .hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<_, _>>()?;
        let methods = raw
            .methods
            .iter()
            .map(|m| {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Err(format!("invalid method {m:?}"))
                } else {
                    Ok(m.to_ascii_uppercase())
                }
            })
            .collect::<Result<_, _>>()?;
        if raw.headers.keys().any(|name| name.is_empty()) {
            return Err("empty header name".into());
        }
        Ok(Self {
            routes: raw.routes,
            hosts,
            path_prefix: raw.path_prefix,
            path_exact: raw.path_exact,
            methods,
            headers: raw
                .headers
                .into_iter()
                .map(|(name, m)| (name.to_ascii_lowercase(), m))
                .collect(),
        })
    }
}

impl Match {
    /// True when every field given in the match holds for `req`.
    pub fn matches(&self, req: &RequestInfo) -> bool {
        self.routes_match(req)
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(&req.host)))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| crate::path::has_segment_prefix(&req.path, p))
            && self.path_exact.as_ref().is_none_or(|p| req.path == *p)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == &req.method))
            && self
                .headers
                .iter()
                .all(|(name, m)| m.matches(req.header(name)))
    }

    /// True when the match names routes: only then does a request need its route name, an
    /// Envoy property read that costs several microseconds.
    pub fn uses_route(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The request headers this match reads, pseudo-headers included, names lowercase (see
    /// [`crate::host::HeaderNeeds`]).
    pub fn headers_read(&self) -> Vec<String> {
        let mut names = Vec::new();
        if !self.hosts.is_empty() {
            names.push(":authority".to_string());
        }
        if self.path_prefix.is_some() || self.path_exact.is_some() {
            names.push(":path".to_string());
        }
        if !self.methods.is_empty() {
            names.push(":method".to_string());
        }
        names.extend(self.headers.iter().map(|(n, _)| n.to_ascii_lowercase()));
        names
    }

    fn routes_match(&self, req: &RequestInfo) -> bool {
        self.routes.is_empty()
            || req
                .route
                .as_ref()
                .is_some_and(|route| self.routes.iter().any(|r| r == route))
    }
}

/// A host in a match: exact, `*.suffix` (any subdomain), or `*` (any host).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let host = text.to_ascii_lowercase();
        if host == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("invalid host pattern {text:?}"));
            }
            return Ok(Self::Suffix(format!(".{suffix}")));
        }
        if host.is_empty() || host.contains('*') {
            return Err(format!(
                "invalid host {text:?}: use an exact host or \"*.suffix\""
            ));
        }
        Ok(Self::Exact(strip_port(&host).to_string()))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => host == exact,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

/// A header condition: an exact value, or presence (`{"present": true}`) / absence (`false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// The header's first value equals this string.
    Exact(String),
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

impl HeaderMatch {
    fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Self::Exact(expected) => value == Some(expected.as_str()),
            Self::Present(present) => value.is_some() == *present,
        }
    }
}

impl<'de> Deserialize<'de> for HeaderMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Presence {
            present: bool,
        }
        let value = serde_json::Value::deserialize(deserializer)?;
        match value {
            serde_json::Value::String(s) => Ok(Self::Exact(s)),
            serde_json::Value::Object(_) => serde_json::from_value::<Presence>(value)
                .map(|p| Self::Present(p.present))
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "expected an exact value (string) or {\"present\": true|false}",
            )),
        }
    }
}

/// JSON Schema of a rule's `match` block (feature `schema`, for the wasmgate CLI).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Match {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Match".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let strings = serde_json::json!({"type": "array", "items": {"type": "string"}});
        let path = serde_json::json!({"type": "string", "pattern": "^/"});
        schemars::json_schema!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "routes": strings,
                "hosts": strings,
                "path_prefix": path,
                "path_exact": path,
                "methods": strings,
                "headers": {
                    "type": "object",
                    "additionalProperties": {"oneOf": [
                        {"type": "string"},
                        {"type": "object", "properties": {"present": {"type": "boolean"}},
                         "required": ["present"], "additionalProperties": false}
                    ]}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Match {
        serde_json::from_str(json).unwrap()
    }

    fn req() -> RequestInfo {
        RequestInfo::new(
            Some("api_route".into()),
            "API.Example.com:8443",
            "/v1/users?id=1",
            "POST",
            vec![
                ("x-tenant".into(), "acme".into()),
                ("content-type".into(), "application/json".into()),
            ],
        )
    }

    #[test]
    fn empty_match_holds() {
        assert!(m("{}").matches(&req()));
    }

    #[test]
    fn routes() {
        assert!(m(r#"{"routes": ["other", "api_route"]}"#).matches(&req()));
        assert!(!m(r#"{"routes": ["other"]}"#).matches(&req()));
        let mut r = req();
        r.route = None;
        assert!(!m(r#"{"routes": ["api_route"]}"#).matches(&r));
        assert!(m(r#"{"routes": ["api_route"]}"#).uses_route());
        assert!(!m(r#"{"path_prefix": "/"}"#).uses_route());
    }

    #[test]
    fn hosts_exact_suffix_any() {
        assert!(m(r#"{"hosts": ["api.example.com"]}"#).matches(&req()));
        assert!(m(r#"{"hosts": ["API.EXAMPLE.COM:443"]}"#).matches(&req()));
        assert!(m(r#"{"hosts": ["*.example.com"]}"#).matches(&req()));
        assert!(m(r#"{"hosts": ["*"]}"#).matches(&req()));
        assert!(!m(r#"{"hosts": ["example.com"]}"#).matches(&req()));
        assert!(!m(r#"{"hosts": ["*.other.com"]}"#).matches(&req()));
        let mut r = req();
        r.host = "example.com".into();
        assert!(!m(r#"{"hosts": ["*.example.com"]}"#).matches(&r));
    }

    #[test]
    fn paths() {
        assert!(m(r#"{"path_prefix": "/v1/"}"#).matches(&req()));
        assert!(!m(r#"{"path_prefix": "/v2/"}"#).matches(&req()));
        assert!(m(r#"{"path_exact": "/v1/users"}"#).matches(&req()));
        assert!(!m(r#"{"path_exact": "/v1/user"}"#).matches(&req()));
    }

    #[test]
    fn methods() {
        assert!(m(r#"{"methods": ["get", "POST"]}"#).matches(&req()));
        assert!(!m(r#"{"methods": ["GET"]}"#).matches(&req()));
    }

    #[test]
    fn headers_exact_and_presence() {
        assert!(m(r#"{"headers": {"X-Tenant": "acme"}}"#).matches(&req()));
        assert!(!m(r#"{"headers": {"x-tenant": "other"}}"#).matches(&req()));
        assert!(m(r#"{"headers": {"x-tenant": {"present": true}}}"#).matches(&req()));
        assert!(!m(r#"{"headers": {"x-missing": {"present": true}}}"#).matches(&req()));
        assert!(m(r#"{"headers": {"x-missing": {"present": false}}}"#).matches(&req()));
    }

    #[test]
    fn all_fields_must_hold() {
        let both = m(r#"{"path_prefix": "/v1/", "methods": ["GET"]}"#);
        assert!(!both.matches(&req()));
    }

    #[test]
    fn invalid_matches_are_rejected() {
        for bad in [
            r#"{"path_prefix": "v1"}"#,
            r#"{"path_exact": ""}"#,
            r#"{"hosts": ["a.*.com"]}"#,
            r#"{"hosts": [""]}"#,
            r#"{"hosts": ["*."]}"#,
            r#"{"methods": ["G ET"]}"#,
            r#"{"headers": {"x": 5}}"#,
            r#"{"headers": {"x": {"present": true, "y": 1}}}"#,
            r#"{"headers": {"": "v"}}"#,
            r#"{"path": "/"}"#,
        ] {
            assert!(serde_json::from_str::<Match>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn match_error_path_through_parse() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct R {
            #[serde(rename = "match")]
            matcher: Match,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Top {
            rules: Vec<R>,
        }
        let err =
            crate::config::parse::<Top>(br#"{"rules": [{"match": {}}, {"match": {"hots": []}}]}"#)
                .unwrap_err();
        assert_eq!(err.path, "rules[1].match.hots");
        let err = crate::config::parse::<Top>(br#"{"rules": [{"match": {"path_prefix": "x"}}]}"#)
            .unwrap_err();
        assert_eq!(err.path, "rules[0].match");
        assert!(err.reason.contains("must start with"));
    }
}
