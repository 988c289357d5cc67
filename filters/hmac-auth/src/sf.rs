//! The subset of RFC 8941 Structured Field Values that RFC 9421 and RFC 9530 headers use:
//! dictionaries whose members are items or inner lists, with parameters, and the canonical
//! serialization of an inner list (the `@signature-params` value).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A bare item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bare {
    /// An integer.
    Integer(i64),
    /// A decimal, kept as written.
    Decimal(String),
    /// A string (unescaped).
    String(String),
    /// A token.
    Token(String),
    /// A byte sequence (decoded).
    Bytes(Vec<u8>),
    /// A boolean.
    Boolean(bool),
}

/// Parameters, in order.
pub type Params = Vec<(String, Bare)>;

/// An item with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub bare: Bare,
    /// Its parameters.
    pub params: Params,
}

/// A dictionary member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A single item.
    Item(Item),
    /// An inner list and its parameters.
    InnerList(Vec<Item>, Params),
}

/// Parses a dictionary field value.
pub fn parse_dictionary(text: &str) -> Result<Vec<(String, Member)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let mut members: Vec<(String, Member)> = Vec::new();
    p.skip_sp();
    if p.eof() {
        return Ok(members);
    }
    loop {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            p.member()?
        } else {
            Member::Item(Item {
                bare: Bare::Boolean(true),
                params: p.params()?,
            })
        };
        // A later duplicate key overrides an earlier one (RFC 8941 4.2.2).
        members.retain(|(k, _)| *k != key);
        members.push((key, member));
        p.skip_ows();
        if p.eof() {
            return Ok(members);
        }
        if !p.eat(b',') {
            return Err("expected ',' between dictionary members".into());
        }
        p.skip_ows();
        if p.eof() {
            return Err("trailing ',' in dictionary".into());
        }
    }
}

/// Canonical serialization of an inner list with parameters.
pub fn serialize_inner_list(items: &[Item], params: &Params) -> String {
    let mut out = String::from("(");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        serialize_bare(&item.bare, &mut out);
        serialize_params(&item.params, &mut out);
    }
    out.push(')');
    serialize_params(params, &mut out);
    out
}

/// Canonical serialization of parameters.
pub fn serialize_params(params: &Params, out: &mut String) {
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        if *value != Bare::Boolean(true) {
            out.push('=');
            serialize_bare(value, out);
        }
    }
}

fn serialize_bare(bare: &Bare, out: &mut String) {
    match bare {
        Bare::Integer(n) => out.push_str(&n.to_string()),
        Bare::Decimal(d) => out.push_str(d),
        Bare::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Bare::Token(t) => out.push_str(t),
        Bare::Bytes(b) => {
            out.push(':');
            out.push_str(&STANDARD.encode(b));
            out.push(':');
        }
        Bare::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Result<String, String> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
            _ => return Err("expected a key".into()),
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'.' | b'*')
            {
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn member(&mut self) -> Result<Member, String> {
        if self.eat(b'(') {
            let mut items = Vec::new();
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    let params = self.params()?;
                    return Ok(Member::InnerList(items, params));
                }
                if self.eof() {
                    return Err("unterminated inner list".into());
                }
                let bare = self.bare()?;
                let params = self.params()?;
                items.push(Item { bare, params });
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return Err("expected ' ' or ')' in inner list".into());
                }
            }
        }
        let bare = self.bare()?;
        let params = self.params()?;
        Ok(Member::Item(Item { bare, params }))
    }

    fn params(&mut self) -> Result<Params, String> {
        let mut params: Params = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            params.retain(|(k, _)| *k != key);
            params.push((key, value));
        }
        Ok(params)
    }

    fn bare(&mut self) -> Result<Bare, String> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => {
                self.i += 1;
                match self.peek() {
                    Some(b'1') => {
                        self.i += 1;
                        Ok(Bare::Boolean(true))
                    }
                    Some(b'0') => {
                        self.i += 1;
                        Ok(Bare::Boolean(false))
                    }
                    _ => Err("invalid boolean".into()),
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => Ok(self.token()),
            _ => Err("expected an item".into()),
        }
    }

    fn string(&mut self) -> Result<Bare, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Bare::String(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(char::from(c));
                            self.i += 1;
                        }
                        _ => return Err("invalid escape in string".into()),
                    }
                }
                Some(c) if (0x20..0x7f).contains(&c) => {
                    out.push(char::from(c));
                    self.i += 1;
                }
                Some(_) => return Err("invalid character in string".into()),
            }
        }
    }

    fn bytes(&mut self) -> Result<Bare, String> {
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b':' {
                let text = &self.s[start..self.i];
                self.i += 1;
                return STANDARD
                    .decode(text)
                    .map(Bare::Bytes)
                    .map_err(|_| "invalid base64 in byte sequence".into());
            }
            self.i += 1;
        }
        Err("unterminated byte sequence".into())
    }

    fn number(&mut self) -> Result<Bare, String> {
        let start = self.i;
        self.eat(b'-');
        let mut decimal = false;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.i += 1;
            } else if c == b'.' && !decimal {
                decimal = true;
                self.i += 1;
            } else {
                break;
            }
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        if decimal {
            return Ok(Bare::Decimal(text));
        }
        if text.len() > 16 || text == "-" {
            return Err("invalid integer".into());
        }
        text.parse()
            .map(Bare::Integer)
            .map_err(|_| "invalid integer".into())
    }

    fn token(&mut self) -> Bare {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        Bare::Token(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_input_round_trips() {
        let text = r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
        let dict = parse_dictionary(text).unwrap();
        assert_eq!(dict.len(), 1);
        let (label, Member::InnerList(items, params)) = &dict[0] else {
            panic!("not an inner list")
        };
        assert_eq!(label, "sig-b25");
        assert_eq!(items.len(), 3);
        assert_eq!(
            format!("sig-b25={}", serialize_inner_list(items, params)),
            text
        );
    }

    #[test]
    fn byte_sequences_and_several_members() {
        let dict = parse_dictionary("sha-256=:AAEC:,  sha-512=:AwQ=:, flag;a=?0, n=-5;x").unwrap();
        assert_eq!(dict.len(), 4);
        assert_eq!(
            dict[0].1,
            Member::Item(Item {
                bare: Bare::Bytes(vec![0, 1, 2]),
                params: vec![]
            })
        );
        assert_eq!(
            dict[2].1,
            Member::Item(Item {
                bare: Bare::Boolean(true),
                params: vec![("a".into(), Bare::Boolean(false))]
            })
        );
        let Member::Item(item) = &dict[3].1 else {
            panic!()
        };
        assert_eq!(item.bare, Bare::Integer(-5));
    }

    #[test]
    fn escapes_serialize_back() {
        let dict = parse_dictionary(r#"a=("x";p="q\"r") ;k=tok"#);
        // Space before ';' is not allowed after an inner list.
        assert!(dict.is_err());
        let dict = parse_dictionary(r#"a=("x";p="q\"r");k=tok"#).unwrap();
        let Member::InnerList(items, params) = &dict[0].1 else {
            panic!()
        };
        assert_eq!(
            serialize_inner_list(items, params),
            r#"("x";p="q\"r");k=tok"#
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "A=1", "a=", "a=(\"x\"", "a=\"x", "a=:AA", "a=1,", "a=1 b=2", "a=:!!:", "a=?2",
        ] {
            assert!(parse_dictionary(bad).is_err(), "{bad}");
        }
        assert!(parse_dictionary("").unwrap().is_empty());
    }
}
