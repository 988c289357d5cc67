//! Finding tokens in a request (headers, query parameters, cookies) and removing them again.

use crate::config::Location;
use wasmgate_core::request::{query_of, raw_pairs};

/// A token found at a location, borrowed from the configuration and the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    /// Where it was.
    pub location: &'a Location,
    /// The token text.
    pub token: &'a str,
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    if value.len() >= prefix.len()
        && value.is_char_boundary(prefix.len())
        && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&value[prefix.len()..])
    } else {
        None
    }
}

/// The tokens at `locations`, in order; empty values are ignored.
pub fn find<'a>(
    locations: &'a [Location],
    headers: &'a [(String, String)],
    path: &'a str,
) -> Vec<Found<'a>> {
    let mut found = Vec::new();
    for location in locations {
        match location {
            Location::Header { name, prefix } => {
                for (n, value) in headers {
                    if !n.eq_ignore_ascii_case(name) {
                        continue;
                    }
                    if let Some(rest) = strip_prefix_ignore_case(value, prefix) {
                        let token = rest.trim();
                        if !token.is_empty() {
                            found.push(Found { location, token });
                        }
                    }
                }
            }
            Location::Param(param) => {
                for (k, v) in raw_pairs(query_of(path)) {
                    if k == param && !v.is_empty() {
                        found.push(Found { location, token: v });
                    }
                }
            }
            Location::Cookie(cookie) => {
                for (n, value) in headers {
                    if !n.eq_ignore_ascii_case("cookie") {
                        continue;
                    }
                    for pair in value.split(';') {
                        if let Some((k, v)) = pair.trim().split_once('=') {
                            if k == cookie && !v.is_empty() {
                                found.push(Found {
                                    location,
                                    token: v.trim_matches('"'),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

/// `path` without the query parameter `param`.
pub fn remove_param(path: &str, param: &str) -> String {
    let (before_fragment, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    let Some((base, query)) = before_fragment.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != param)
        .filter(|pair| !pair.is_empty())
        .collect();
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// A `cookie` header value without the cookie `name` (`None` when nothing is left).
pub fn remove_cookie(value: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_in_every_location() {
        let locations = vec![
            Location::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            Location::Param("access_token".into()),
            Location::Cookie("session".into()),
            Location::Header {
                name: "x-jwt".into(),
                prefix: String::new(),
            },
        ];
        let headers = h(&[
            ("authorization", "bearer  aaa "),
            ("cookie", "a=1; session=ccc; b=2"),
            ("x-jwt", "ddd"),
        ]);
        let found = find(&locations, &headers, "/p?x=1&access_token=bbb#f");
        let tokens: Vec<&str> = found.iter().map(|f| f.token).collect();
        assert_eq!(tokens, vec!["aaa", "bbb", "ccc", "ddd"]);
        assert!(find(&locations, &h(&[("authorization", "Basic x")]), "/").is_empty());
        assert!(find(
            &locations,
            &h(&[("authorization", "Bearer ")]),
            "/?access_token="
        )
        .is_empty());
    }

    #[test]
    fn removes_params_and_cookies() {
        assert_eq!(
            remove_param("/p?access_token=x&y=1", "access_token"),
            "/p?y=1"
        );
        assert_eq!(remove_param("/p?access_token=x", "access_token"), "/p");
        assert_eq!(
            remove_param("/p?a=1&access_token=x#frag", "access_token"),
            "/p?a=1#frag"
        );
        assert_eq!(remove_param("/p", "access_token"), "/p");
        assert_eq!(
            remove_cookie("a=1; session=x; b=2", "session").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(remove_cookie("session=x", "session"), None);
    }
}
