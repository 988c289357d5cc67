//! JSON Pointer (RFC 6901): parsing, and what a token means in an array. The edits themselves
//! live in [`crate::doc`].

/// A parsed JSON Pointer that addresses something inside the document (never the whole of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `/a/b~1c/0`; `~1` is `/`, `~0` is `~`, any other `~` escape is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the empty pointer (the whole document) cannot be edited".into());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("JSON pointer {text:?} must start with \"/\""));
        };
        let tokens = rest
            .split('/')
            .map(|raw| unescape(raw).ok_or_else(|| format!("invalid \"~\" escape in {text:?}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { tokens })
    }

    /// The reference tokens, unescaped (`/a~1b` is `["a/b"]`).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// True when `self` is `other` or inside it (`/a/b` is inside `/a`).
    pub fn starts_with(&self, other: &Pointer) -> bool {
        self.tokens.starts_with(&other.tokens)
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An array index token: `0` or digits without a leading zero.
pub fn index(token: &str) -> Option<usize> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if valid {
        token.parse().ok()
    } else {
        None
    }
}

/// Where the last token of a pointer lands in an array: an index, or the end (`-`).
pub fn array_slot(token: &str, len: usize) -> Option<usize> {
    if token == "-" {
        Some(len)
    } else {
        index(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    #[test]
    fn parse_and_escapes() {
        assert_eq!(p("/a~1b/c~0d/~01").tokens(), ["a/b", "c~d", "~1"]);
        assert_eq!(p("/").tokens(), [""]);
        assert_eq!(p("/a//b").tokens(), ["a", "", "b"]);
        for bad in ["", "a/b", "/a~2", "/a~", "/~x"] {
            assert!(Pointer::parse(bad).is_err(), "{bad}");
        }
        assert!(p("/a/b").starts_with(&p("/a")));
        assert!(!p("/ab").starts_with(&p("/a")));
    }

    #[test]
    fn array_tokens() {
        assert_eq!(index("0"), Some(0));
        assert_eq!(index("12"), Some(12));
        for bad in ["", "01", "-", "x", "+1", "1e2"] {
            assert_eq!(index(bad), None, "{bad}");
        }
        assert_eq!(array_slot("-", 3), Some(3));
        assert_eq!(array_slot("1", 3), Some(1));
    }
}
