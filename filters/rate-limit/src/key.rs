//! Building a request's rate-limit key from the rule's key parts.

use wasmgate_core::RequestInfo;

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address: the downstream address, or an X-Forwarded-For entry.
    ClientIp,
    /// A request header's first value (name lowercase).
    Header(String),
    /// A query parameter's first value, as sent (not percent-decoded).
    Query(String),
    /// The path without its query string.
    Path,
    /// The method.
    Method,
    /// Envoy's route name.
    Route,
    /// A fixed string.
    Constant(String),
}

/// What the key builder reads besides [`RequestInfo`].
#[derive(Debug, Clone)]
pub struct KeyInput<'a> {
    /// The rule-matching view of the request.
    pub info: &'a RequestInfo,
    /// The `source.address` property (`ip:port`).
    pub source_address: Option<&'a str>,
    /// Trusted proxies in front of Envoy.
    pub xff_num_trusted_hops: u32,
}

/// The joined key, or the first missing part's description.
pub fn build(parts: &[KeyPart], input: &KeyInput<'_>) -> Result<String, &'static str> {
    let mut key = String::new();
    for part in parts {
        let value = value(part, input)?;
        // Length-prefixed, so no value can forge the boundary between two parts.
        key.push_str(&format!("{}:{value};", value.len()));
    }
    Ok(key)
}

/// One key part's value, or the part's description when the request lacks it.
pub fn value(part: &KeyPart, input: &KeyInput<'_>) -> Result<String, &'static str> {
    Ok(match part {
        KeyPart::ClientIp => input
            .info
            .client_ip(input.source_address, input.xff_num_trusted_hops)
            .ok_or("client_ip")?,
        KeyPart::Header(name) => input
            .info
            .header(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or("header")?,
        KeyPart::Query(name) => input
            .info
            .query_raw(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or("query")?,
        KeyPart::Path => input.info.path.clone(),
        KeyPart::Method => input.info.method.clone(),
        KeyPart::Route => input.info.route.clone().ok_or("route")?,
        KeyPart::Constant(c) => c.clone(),
    })
}

/// The descriptor entry key a part is sent under to a rate limit service: `client_ip` ->
/// `remote_address`, `{"header": h}` -> `h`, `{"query": q}` -> `q`, `path` -> `path`,
/// `method` -> `method`, `route` -> `route`, `{"constant": c}` -> `generic_key` (value `c`),
/// the names Envoy's own rate limit actions use where it has one.
pub fn descriptor_key(part: &KeyPart) -> &str {
    match part {
        KeyPart::ClientIp => "remote_address",
        KeyPart::Header(name) | KeyPart::Query(name) => name,
        KeyPart::Path => "path",
        KeyPart::Method => "method",
        KeyPart::Route => "route",
        KeyPart::Constant(_) => "generic_key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(headers: &[(&str, &str)]) -> RequestInfo {
        RequestInfo::new(
            Some("r1".into()),
            "example.com",
            "/a/b?x=1&tenant=acme&e=",
            "GET",
            std::iter::once(&(":path", "/a/b?x=1&tenant=acme&e="))
                .chain(headers)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn input<'a>(info: &'a RequestInfo, hops: u32) -> KeyInput<'a> {
        KeyInput {
            info,
            source_address: Some("10.0.0.1:5555"),
            xff_num_trusted_hops: hops,
        }
    }

    #[test]
    fn joins_every_part() {
        let i = info(&[("x-user", "bob")]);
        let parts = [
            KeyPart::ClientIp,
            KeyPart::Header("x-user".into()),
            KeyPart::Query("tenant".into()),
            KeyPart::Path,
            KeyPart::Method,
            KeyPart::Route,
            KeyPart::Constant("c".into()),
        ];
        assert_eq!(
            build(&parts, &input(&i, 0)).unwrap(),
            "8:10.0.0.1;3:bob;4:acme;4:/a/b;3:GET;2:r1;1:c;"
        );
    }

    #[test]
    fn parts_cannot_be_forged_by_separators() {
        let a = info(&[("x-a", "1;2"), ("x-b", "3")]);
        let b = info(&[("x-a", "1"), ("x-b", "2;3")]);
        let parts = [KeyPart::Header("x-a".into()), KeyPart::Header("x-b".into())];
        assert_ne!(
            build(&parts, &input(&a, 0)).unwrap(),
            build(&parts, &input(&b, 0)).unwrap()
        );
    }

    #[test]
    fn missing_parts() {
        let i = info(&[("x-empty", "")]);
        let inp = input(&i, 0);
        assert_eq!(
            build(&[KeyPart::Header("x-no".into())], &inp),
            Err("header")
        );
        assert_eq!(
            build(&[KeyPart::Header("x-empty".into())], &inp),
            Err("header")
        );
        assert_eq!(build(&[KeyPart::Query("nope".into())], &inp), Err("query"));
        assert_eq!(build(&[KeyPart::Query("e".into())], &inp), Err("query"));
        let mut no_route = info(&[]);
        no_route.route = None;
        assert_eq!(build(&[KeyPart::Route], &input(&no_route, 0)), Err("route"));
        let mut no_source = input(&i, 0);
        no_source.source_address = None;
        assert_eq!(build(&[KeyPart::ClientIp], &no_source), Err("client_ip"));
    }
}
