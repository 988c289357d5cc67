//! Request paths in normal form, so that the path a rule is matched against is the path the
//! upstream receives.
//!
//! Envoy forwards `:path` as the client sent it unless its connection manager normalizes it, and
//! upstreams resolve paths in different ways (dot segments, percent-encoded dots and slashes,
//! backslashes, `;` parameters). A rule exempting `/health` must not exempt
//! `/health/../admin`. So rules match the normal form: unreserved characters percent-decoded,
//! slashes merged, dot segments removed (RFC 3986, 6.2.2 and 5.2.4). A path that differs from its
//! normal form is refused or rewritten to it ([`PathOptions`]); a path that upstreams read in
//! different ways (an encoded `/` or `\`, a raw `\`, a dot segment with `;` parameters, a
//! malformed escape) is refused, as no rewrite makes its meaning certain.

use serde::Deserialize;
use std::borrow::Cow;

/// What a filter does with a request path that is not in normal form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Unnormalized {
    /// 400 `invalid_path` (the default: nothing is forwarded that a rule did not see).
    #[default]
    Reject,
    /// Forward the normal form instead, the path the rules matched.
    Rewrite,
}

/// The `paths` block every filter's configuration accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PathOptions {
    /// A path whose normal form differs: rejected (default) or rewritten.
    #[serde(default)]
    pub unnormalized: Unnormalized,
    /// Accept `%2F` and `%5C` inside a segment (they stay encoded and match as such). Off by
    /// default: upstreams disagree on whether they separate segments.
    #[serde(default)]
    pub allow_encoded_slashes: bool,
}

/// What a filter does with the path of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathVerdict {
    /// Normal form already: go on.
    Keep,
    /// Forward this `:path` (normal form, query kept) instead.
    Rewrite(String),
    /// 400 `invalid_path` with this message.
    Refuse(&'static str),
}

impl PathOptions {
    /// What to do with the request's path: every filter whose rules, keys or templates read the
    /// path asks this before it selects a policy.
    pub fn verdict(&self, info: &crate::RequestInfo) -> PathVerdict {
        match info.path_ambiguity {
            Some(Ambiguity::EncodedSlash) if self.allow_encoded_slashes => {}
            Some(ambiguity) => return PathVerdict::Refuse(ambiguity.message()),
            None => {}
        }
        if !info.path_changed {
            return PathVerdict::Keep;
        }
        match self.unnormalized {
            Unnormalized::Reject => PathVerdict::Refuse(
                "The request path is not in normal form (dot segments, repeated slashes or escaped unreserved characters).",
            ),
            Unnormalized::Rewrite => {
                let raw = info.raw_path();
                let rest = raw.find(['?', '#']).map_or("", |at| &raw[at..]);
                PathVerdict::Rewrite(format!("{}{rest}", info.path))
            }
        }
    }
}

/// Why a path is refused whatever the options say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// A raw `\`, which some servers treat as a separator.
    Backslash,
    /// `%2F` or `%5C` inside a segment.
    EncodedSlash,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A `.` or `..` segment with `;` parameters (`/..;/`), which servers that strip parameters
    /// resolve as a dot segment.
    DotParameters,
}

impl Ambiguity {
    /// One human sentence for the reply.
    pub fn message(self) -> &'static str {
        match self {
            Self::Backslash => "The request path holds a backslash.",
            Self::EncodedSlash => "The request path holds an encoded slash or backslash.",
            Self::BadEscape => "The request path holds a malformed percent escape.",
            Self::DotParameters => "The request path holds a dot segment with parameters.",
        }
    }
}

/// A path (without query) in normal form: `Ok(path)`, borrowed when it already was normal.
pub fn normalize(path: &str, allow_encoded_slashes: bool) -> Result<Cow<'_, str>, Ambiguity> {
    if path.contains('\\') {
        return Err(Ambiguity::Backslash);
    }
    let decoded = decode_unreserved(path, allow_encoded_slashes)?;
    let segments = resolve_segments(&decoded)?;
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || (decoded.ends_with('/') && !normal.ends_with('/')) {
        normal.push('/');
    }
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Percent-decodes unreserved characters and upper-cases the hex of the other escapes; every
/// other byte is kept, so the result is UTF-8 whenever the input was.
fn decode_unreserved(path: &str, allow_encoded_slashes: bool) -> Result<String, Ambiguity> {
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let high = bytes.get(i + 1).copied().and_then(hex);
        let low = bytes.get(i + 2).copied().and_then(hex);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(Ambiguity::BadEscape);
        };
        let value = high << 4 | low;
        if unreserved(value) {
            out.push(value);
        } else if matches!(value, b'/' | b'\\') && !allow_encoded_slashes {
            return Err(Ambiguity::EncodedSlash);
        } else {
            out.extend_from_slice(format!("%{value:02X}").as_bytes());
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| Ambiguity::BadEscape)
}

/// The segments after merging slashes and removing dot segments.
fn resolve_segments(path: &str) -> Result<Vec<&str>, Ambiguity> {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let name = segment.split(';').next().unwrap_or_default();
        if segment.contains(';') && (name == "." || name == "..") {
            return Err(Ambiguity::DotParameters);
        }
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    Ok(segments)
}

/// True when `path` is `prefix` or lies below it, segment by segment (as Envoy's
/// `path_separated_prefix`): `/health` matches `/health` and `/health/live`, not `/healthz`; a
/// prefix ending in `/` matches the paths below it.
pub fn has_segment_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests;
