//! Value templates (`"Bearer {{header.x-token}}"`), compiled once in `on_configure` and rendered
//! per request against a snapshot of the request ([`RequestVars`]).

use crate::query;

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Header(String),
    Query(String),
    Path,
    Method,
    Host,
    ClientIp,
    Route,
    RequestId,
}

/// A compiled template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The host facts templates read. Each is an Envoy property read (several microseconds per
/// request), so the filter reads only those some template of its configuration uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `{{client_ip}}`: the `source.address` property.
    pub client_ip: bool,
    /// `{{route}}` (or a rule matching on routes): the route name property.
    pub route: bool,
    /// Some template reads the request itself (a header, the query, path, method, host or
    /// request id): only then is the request copied into [`RequestVars`] (each copied string is
    /// an allocation inside the VM).
    pub request: bool,
}

impl HostFacts {
    /// Both sets together.
    pub fn union(self, other: Self) -> Self {
        Self {
            client_ip: self.client_ip || other.client_ip,
            route: self.route || other.route,
            request: self.request || other.request,
        }
    }

    /// The facts any of `templates` reads.
    pub fn of<'a>(templates: impl IntoIterator<Item = &'a Template>) -> Self {
        templates
            .into_iter()
            .fold(Self::default(), |facts, t| facts.union(t.host_facts()))
    }
}

impl Template {
    /// The host facts this template reads.
    pub fn host_facts(&self) -> HostFacts {
        HostFacts {
            client_ip: self.parts.contains(&Part::ClientIp),
            route: self.parts.contains(&Part::Route),
            request: self
                .parts
                .iter()
                .any(|p| !matches!(p, Part::Literal(_) | Part::ClientIp | Part::Route)),
        }
    }

    /// Compiles `text`; placeholders are `{{name}}` (spaces inside the braces are allowed).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed \"{{{{\" in template {text:?}"))?;
            parts.push(Self::placeholder(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    fn placeholder(name: &str) -> Result<Part, String> {
        if let Some(header) = name.strip_prefix("header.") {
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                return Err(format!("invalid header name in {{{{{name}}}}}"));
            }
            return Ok(Part::Header(header.to_ascii_lowercase()));
        }
        if let Some(param) = name.strip_prefix("query.") {
            if param.is_empty() {
                return Err(format!("empty query parameter name in {{{{{name}}}}}"));
            }
            return Ok(Part::Query(param.to_string()));
        }
        Ok(match name {
            "path" => Part::Path,
            "method" => Part::Method,
            "host" => Part::Host,
            "client_ip" => Part::ClientIp,
            "route" => Part::Route,
            "request_id" => Part::RequestId,
            _ => {
                return Err(format!(
                    "unknown placeholder {{{{{name}}}}}: use header.<name>, query.<name>, path, \
                     method, host, client_ip, route or request_id"
                ))
            }
        })
    }

    /// True when the template has no placeholder (its value is fixed).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The literal text of the template's fixed parts, for validation.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// The rendered value, or `None` when a placeholder resolves to nothing (absent or empty)
    /// or the whole value is empty: the operation using it is then skipped.
    pub fn render(&self, vars: &RequestVars) -> Option<String> {
        if let [Part::Literal(text)] = self.parts.as_slice() {
            // A fixed value (the common case): one copy, nothing to look up.
            return Some(text.clone());
        }
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Header(name) => vars.header(name),
                Part::Query(name) => vars.query(name),
                Part::Path => Some(vars.path.clone()),
                Part::Method => Some(vars.method.clone()),
                Part::Host => Some(vars.host.clone()),
                Part::ClientIp => vars.client_ip.clone(),
                Part::Route => vars.route.clone(),
                Part::RequestId => vars.request_id.clone(),
            };
            match value {
                Some(v) if !v.is_empty() => out.push_str(&v),
                _ => return None,
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// RFC 9110 token characters (header names).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What templates can read: the request as it arrived at the filter, before any operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestVars {
    /// Regular request headers, lowercase names, in order.
    pub headers: Vec<(String, String)>,
    /// The raw query string (without `?`).
    pub query: String,
    /// `:path` without its query string.
    pub path: String,
    /// `:method`.
    pub method: String,
    /// `:authority` as received.
    pub host: String,
    /// The downstream address without its port.
    pub client_ip: Option<String>,
    /// Envoy's route name when the request arrived.
    pub route: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
}

impl RequestVars {
    /// Builds the snapshot from the request headers (pseudo-headers included) and host facts.
    pub fn new(
        headers: &[(String, String)],
        source_address: Option<&str>,
        route: Option<String>,
    ) -> Self {
        let pseudo = |name: &str| wasmgate_core::request::header_or_empty(headers, name);
        let full_path = pseudo(":path");
        let (path, query) = match full_path.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (full_path, String::new()),
        };
        let regular: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| !n.starts_with(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        let request_id = regular
            .iter()
            .find(|(n, _)| n == "x-request-id")
            .map(|(_, v)| v.clone());
        Self {
            path,
            query,
            method: pseudo(":method"),
            host: pseudo(":authority"),
            client_ip: source_address
                .map(wasmgate_core::request::strip_port)
                .filter(|ip| !ip.is_empty())
                .map(str::to_string),
            route: route.filter(|r| !r.is_empty()),
            request_id,
            headers: regular,
        }
    }

    /// All values of a header joined with `", "` (their HTTP meaning), `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        query::parse(&self.query)
            .into_iter()
            .find(|(decoded, _)| decoded == name)
            .and_then(|(_, pair)| pair.value.map(|v| query::decode(&v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> RequestVars {
        let headers: Vec<(String, String)> = [
            (":method", "POST"),
            (":authority", "api.example.com"),
            (":path", "/v1/users?id=42&name=J%C3%BCrgen+X&flag"),
            ("x-jwt-sub", "alice"),
            ("x-multi", "a"),
            ("X-Multi", "b"),
            ("x-empty", ""),
            ("x-request-id", "rid-1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        RequestVars::new(&headers, Some("10.0.0.7:51234"), Some("api".into()))
    }

    fn render(t: &str) -> Option<String> {
        Template::parse(t).unwrap().render(&vars())
    }

    #[test]
    fn every_placeholder() {
        assert_eq!(render("{{header.x-jwt-sub}}").as_deref(), Some("alice"));
        assert_eq!(render("{{ header.X-JWT-Sub }}").as_deref(), Some("alice"));
        assert_eq!(render("{{query.id}}").as_deref(), Some("42"));
        assert_eq!(render("{{query.name}}").as_deref(), Some("Jürgen X"));
        assert_eq!(render("{{path}}").as_deref(), Some("/v1/users"));
        assert_eq!(render("{{method}}").as_deref(), Some("POST"));
        assert_eq!(render("{{host}}").as_deref(), Some("api.example.com"));
        assert_eq!(render("{{client_ip}}").as_deref(), Some("10.0.0.7"));
        assert_eq!(render("{{route}}").as_deref(), Some("api"));
        assert_eq!(render("{{request_id}}").as_deref(), Some("rid-1"));
        assert_eq!(render("{{header.x-multi}}").as_deref(), Some("a, b"));
    }

    #[test]
    fn literal_text_around_placeholders() {
        assert_eq!(
            render("user={{header.x-jwt-sub}};via={{method}} {{host}}").as_deref(),
            Some("user=alice;via=POST api.example.com")
        );
        assert_eq!(render("gateway").as_deref(), Some("gateway"));
        assert!(Template::parse("gateway").unwrap().is_literal());
        assert!(!Template::parse("a{{path}}").unwrap().is_literal());
        assert_eq!(render("a }} b").as_deref(), Some("a }} b"));
    }

    #[test]
    fn resolves_to_nothing() {
        assert_eq!(render("{{header.x-missing}}"), None);
        assert_eq!(render("Bearer {{header.x-missing}}"), None);
        assert_eq!(render("{{header.x-empty}}"), None);
        assert_eq!(render("{{query.flag}}"), None, "a flag has no value");
        assert_eq!(render("{{query.nope}}"), None);
        assert_eq!(render(""), None);
        let bare = RequestVars::new(&[], None, None);
        for t in ["{{client_ip}}", "{{route}}", "{{request_id}}"] {
            assert_eq!(Template::parse(t).unwrap().render(&bare), None, "{t}");
        }
    }

    #[test]
    fn invalid_templates() {
        for bad in [
            "{{header.}}",
            "{{header.a b}}",
            "{{query.}}",
            "{{nope}}",
            "{{path",
            "x {{method}} {{",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let err = Template::parse("{{cookie.a}}").unwrap_err();
        assert!(err.contains("unknown placeholder {{cookie.a}}"), "{err}");
    }

    #[test]
    fn client_ip_is_the_source_address_without_port() {
        for (source, ip) in [
            ("1.2.3.4:80", "1.2.3.4"),
            ("[::1]:80", "::1"),
            ("::1", "::1"),
        ] {
            let vars = RequestVars::new(&[], Some(source), None);
            assert_eq!(vars.client_ip.as_deref(), Some(ip));
        }
    }
}
