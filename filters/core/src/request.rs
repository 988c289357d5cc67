//! The request view: one meaning for each request fact every filter, rule, key and template reads.

use crate::path::{normalize, Ambiguity};

/// What a filter knows about a request: read once from the host, then shared by rule matching,
/// keys and templates so that a fact (the host, the path, a header, the client IP) means the same
/// thing in every filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Envoy route name (the `xds.route_name` property), when the route has one and it was read.
    pub route: Option<String>,
    /// `:authority` lowercased, port stripped, IPv6 brackets removed (`[::1]:80` -> `::1`).
    pub host: String,
    /// `:path` without its query string and fragment, in normal form (see [`crate::path`]):
    /// what rules and keys match. Empty when `:path` was not read.
    pub path: String,
    /// `:path` could not be put in normal form for certain (its raw form is in `path` then).
    pub path_ambiguity: Option<Ambiguity>,
    /// `:path` differs from its normal form.
    pub path_changed: bool,
    /// `:method`, as received.
    pub method: String,
    /// Request headers with lowercase names, pseudo-headers included, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RequestInfo {
    /// Builds the view from raw pseudo-headers: strips the port and the query string.
    pub fn new(
        route: Option<String>,
        authority: &str,
        path: &str,
        method: &str,
        headers: Vec<(String, String)>,
    ) -> Self {
        let raw = path.split(['?', '#']).next().unwrap_or_default();
        let (normal, path_ambiguity) = normal_form(raw);
        Self {
            route: route.filter(|r| !r.is_empty()),
            host: strip_port(authority).to_ascii_lowercase(),
            path_changed: normal != raw,
            path: normal,
            path_ambiguity,
            method: method.to_string(),
            headers,
        }
    }

    /// Builds the view from a request's headers, reading the pseudo-headers from them (absent
    /// ones read as empty) without copying them first.
    pub fn from_headers(route: Option<String>, headers: Vec<(String, String)>) -> Self {
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut info = Self::new(
            route,
            pseudo(":authority"),
            pseudo(":path"),
            pseudo(":method"),
            Vec::new(),
        );
        info.headers = headers;
        info
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in arrival order (name compared case-insensitively).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `:path` as received, query string included (empty when it was not read).
    pub fn raw_path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }

    /// The query string as received, without `?` and without a fragment.
    pub fn raw_query(&self) -> &str {
        query_of(self.raw_path())
    }

    /// The first value of a query parameter exactly as sent (not percent-decoded), the name
    /// compared as sent too.
    pub fn query_raw(&self, name: &str) -> Option<&str> {
        raw_pairs(self.raw_query()).find_map(|(key, value)| (key == name).then_some(value))
    }

    /// The first value of a query parameter percent-decoded (`+` is a space), the name compared
    /// after decoding.
    pub fn query_decoded(&self, name: &str) -> Option<String> {
        query_decoded(self.raw_query(), name)
    }

    /// The client address: with `trusted_hops` = 0 the downstream `source_address` (port
    /// stripped); with N > 0 the N-th X-Forwarded-For entry from the right, the address the
    /// outermost trusted proxy saw. `None` when that entry does not exist.
    pub fn client_ip(&self, source_address: Option<&str>, trusted_hops: u32) -> Option<String> {
        let hops = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
        if hops == 0 {
            return source_address
                .map(strip_port)
                .filter(|ip| !ip.is_empty())
                .map(str::to_string);
        }
        // Every X-Forwarded-For line, in order, as one comma-separated list.
        let entries: Vec<&str> = self
            .header_values("x-forwarded-for")
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let index = entries.len().checked_sub(hops)?;
        entries
            .get(index)
            .filter(|ip| !ip.is_empty())
            .map(|ip| ip.to_string())
    }
}

/// A path's normal form and what made it ambiguous. An encoded slash is normalized as allowed
/// (a plugin may accept it); any other ambiguity leaves the raw path. An empty path (not read)
/// stays empty.
fn normal_form(raw: &str) -> (String, Option<Ambiguity>) {
    if raw.is_empty() {
        return (String::new(), None);
    }
    match normalize(raw, false) {
        Ok(normal) => (normal.into_owned(), None),
        Err(Ambiguity::EncodedSlash) => match normalize(raw, true) {
            Ok(normal) => (normal.into_owned(), Some(Ambiguity::EncodedSlash)),
            Err(other) => (raw.to_string(), Some(other)),
        },
        Err(other) => (raw.to_string(), Some(other)),
    }
}

/// The query string of a `:path`: after `?`, before `#` (empty when there is none).
pub fn query_of(path: &str) -> &str {
    let path = path.split('#').next().unwrap_or_default();
    path.split_once('?').map_or("", |(_, query)| query)
}

/// The `name=value` pairs of a query string as sent; a pair without `=` has an empty value.
pub fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Percent-decodes one query component (`+` is a space, as in forms); invalid escapes stay as
/// they are and bytes that are not UTF-8 become U+FFFD.
pub fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The first value, percent-decoded, of the parameter whose decoded name is `name`.
pub fn query_decoded(query: &str, name: &str) -> Option<String> {
    raw_pairs(query)
        .find(|(key, _)| decode_component(key) == name)
        .map(|(_, value)| decode_component(value))
}

/// The body length a header list declares (`content-length`), when it is a number.
pub fn declared_length(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// The first value of an exactly named header (such as a pseudo-header `:path`) in a host header
/// list, or an empty string when it is absent.
pub fn header_or_empty(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// An authority or address without its port, IPv6 brackets removed: `1.2.3.4:5678` ->
/// `1.2.3.4`, `[::1]:80` -> `::1`, `example.com:443` -> `example.com`; a bare host or IPv6
/// address is returned as is.
pub fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

#[cfg(test)]
mod tests;
