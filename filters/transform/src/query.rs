//! Query strings: split into pairs that keep their original encoding, percent-decode names for
//! comparison, percent-encode values the filter writes.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// One `name=value` pair as it appears on the wire (still encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The encoded name.
    pub name: String,
    /// The encoded value; `None` for a bare flag (`?debug`).
    pub value: Option<String>,
}

impl Pair {
    /// A pair built from decoded text, encoded for the wire.
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: encode(name),
            value: Some(encode(value)),
        }
    }
}

/// The pairs of a raw query string, each with its decoded name (empty segments dropped).
pub fn parse(query: &str) -> Vec<(String, Pair)> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = match segment.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (segment, None),
            };
            (
                decode(name),
                Pair {
                    name: name.to_string(),
                    value,
                },
            )
        })
        .collect()
}

/// Serializes pairs back into a query string (without `?`).
pub fn serialize<'a>(pairs: impl IntoIterator<Item = &'a Pair>) -> String {
    let mut out = String::new();
    for pair in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&pair.name);
        if let Some(value) = &pair.value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// Percent-decodes one component (`+` is a space); see [`wasmgate_core::request::decode_component`].
pub fn decode(text: &str) -> String {
    wasmgate_core::request::decode_component(text)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(text: &str) -> String {
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(text, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_encoding_and_flags() {
        let pairs = parse("a=1&b%20c=x%2By&&flag&a=2");
        let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b c", "flag", "a"]);
        assert_eq!(pairs[1].1.name, "b%20c");
        assert_eq!(pairs[2].1.value, None);
        assert_eq!(
            serialize(pairs.iter().map(|(_, p)| p)),
            "a=1&b%20c=x%2By&flag&a=2"
        );
    }

    #[test]
    fn decode_and_encode() {
        assert_eq!(decode("J%C3%BCrgen+X%2b"), "Jürgen X+");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%41"), "A");
        assert_eq!(encode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
        assert_eq!(decode(&encode("x y+z&=%")), "x y+z&=%");
    }

    #[test]
    fn new_pair_is_encoded() {
        let p = Pair::new("q", "a&b");
        assert_eq!(serialize([&p]), "q=a%26b");
    }
}
