//! Finding the key in a request. Every configured source is read, not only the first present
//! one: two different keys in one request (in two sources, or a repeated header, parameter or
//! cookie) are refused, because the filter and the upstream could each pick a different one.

use crate::config::Source;
use wasmgate_core::host::was_lossy;
use wasmgate_core::request::{decode_component, query_of, raw_pairs};
use wasmgate_core::{HeaderEdits, RequestInfo};

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// No source holds a key.
    Missing,
    /// Two different keys.
    Ambiguous,
    /// One key, in the sources whose indices are listed (the first decides the challenge).
    Key {
        /// The key as sent (decoded for query parameters).
        key: String,
        /// Indices of the sources holding it, in configuration order.
        sources: Vec<usize>,
    },
}

/// Reads every source of `request`.
pub fn presented(sources: &[Source], request: &RequestInfo) -> Presented {
    let mut found: Option<(String, Vec<usize>)> = None;
    for (i, source) in sources.iter().enumerate() {
        for key in values(source, request) {
            match &mut found {
                None => found = Some((key, vec![i])),
                Some((first, _)) if *first != key => return Presented::Ambiguous,
                Some((_, at)) => {
                    if at.last() != Some(&i) {
                        at.push(i);
                    }
                }
            }
        }
    }
    match found {
        None => Presented::Missing,
        Some((key, sources)) => Presented::Key { key, sources },
    }
}

/// Every value one source holds in the request.
fn values(source: &Source, request: &RequestInfo) -> Vec<String> {
    match source {
        Source::Header { name, prefix } => request
            .header_values(name)
            .filter_map(|value| strip_prefix(value, prefix.as_deref()))
            .map(|key| key.trim().to_string())
            .collect(),
        Source::Query(name) => raw_pairs(query_of(request.raw_path()))
            .filter(|(n, _)| decode_component(n) == *name)
            .map(|(_, value)| decode_component(value))
            .collect(),
        Source::Cookie(name) => request
            .header_values("cookie")
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| cookie_value(pair, name))
            .map(str::to_string)
            .collect(),
    }
}

/// The value after `prefix` (compared ignoring ASCII case), or the whole value without one.
fn strip_prefix<'v>(value: &'v str, prefix: Option<&str>) -> Option<&'v str> {
    let Some(prefix) = prefix else {
        return Some(value);
    };
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The value of one `name=value` cookie pair when it is `name`'s (quotes removed, RFC 6265).
fn cookie_value<'v>(pair: &'v str, name: &str) -> Option<&'v str> {
    let (n, value) = pair.trim().split_once('=')?;
    if n.trim() != name {
        return None;
    }
    let value = value.trim();
    Some(
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value),
    )
}

/// Removes `key` from the sources listed, keeping everything else: other values of a header,
/// other query parameters (as sent), other cookies. A kept header value or cookie that was not
/// UTF-8 cannot be written back as sent ([`was_lossy`]), so it goes with the key.
pub fn hide(
    sources: &[Source],
    found_in: &[usize],
    key: &str,
    request: &RequestInfo,
    edits: &mut HeaderEdits,
) {
    for source in found_in.iter().filter_map(|&i| sources.get(i)) {
        match source {
            Source::Header { name, prefix } => {
                edits.remove(name.clone());
                for value in request.header_values(name) {
                    let holds_key =
                        strip_prefix(value, prefix.as_deref()).is_some_and(|k| k.trim() == key);
                    if !holds_key && !was_lossy(value) {
                        edits.add(name.clone(), value.to_string());
                    }
                }
            }
            Source::Query(name) => edits.set(":path", without_parameter(request.raw_path(), name)),
            Source::Cookie(name) => match without_cookie(request, name) {
                Some(cookies) => edits.set("cookie", cookies),
                None => edits.remove("cookie"),
            },
        }
    }
}

/// `path` without the query parameters whose decoded name is `name`.
fn without_parameter(path: &str, name: &str) -> String {
    let (base, _) = path.split_once('?').unwrap_or((path, ""));
    let kept: Vec<&str> = query_of(path)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| decode_component(pair.split_once('=').map_or(*pair, |(n, _)| n)) != name)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The request's cookies without `name`, in one header; `None` when none is left.
fn without_cookie(request: &RequestInfo, name: &str) -> Option<String> {
    let kept: Vec<&str> = request
        .header_values("cookie")
        .flat_map(|header| header.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !was_lossy(pair) && cookie_value(pair, name).is_none())
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests;
