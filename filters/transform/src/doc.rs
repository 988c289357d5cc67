//! A JSON body edited in place, so that an edit changes only the members it names.
//!
//! serde_json reads the whole body once to check it: valid JSON, and no object holding two
//! members of the same name (compared after unescaping, so `"r\u006fle"` is `"role"`). Then only
//! the objects and arrays an edit reaches are split into their items: serde_json's stream
//! deserializer reads each name and each value and gives the byte offset where it ended (between
//! them, in text serde_json has already checked, there is only whitespace and `:` or `,`). The
//! edited body is the original text with the edits spliced in: every byte outside the members an
//! edit names is kept (numbers such as `1.50` or `12345678901234567890123`, escapes, member
//! order, whitespace). Values an edit writes are serialized by serde_json.
//!
//! serde_json's `raw_value` feature would give the same offsets, but the feature is shared by
//! every module built with this one and makes each of them about 10 KiB larger (every
//! deserialization of a `serde_json::Value` then carries a second copy of the parser).

use crate::pointer::{array_slot, index};
use serde::de::{
    self, Deserialize, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess,
    SeqAccess, Visitor,
};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Why a body cannot be edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not valid JSON for serde_json: a syntax error, bytes that are not UTF-8, nesting deeper
    /// than 128 levels, a number beyond the range of a 64-bit float (`1e400`).
    Syntax,
    /// An object holds two members with the same name.
    DuplicateName,
}

/// Outcome of a rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamed {
    /// The value moved.
    Moved,
    /// Nothing at the source: nothing to do.
    Absent,
    /// The destination cannot be created; the document is unchanged.
    Blocked,
}

/// A body being edited: its text, where its value starts and ends (the whitespace around it is
/// kept), and the value, split into members as far as edits reached into it.
#[derive(Debug)]
pub struct Document<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    root: Node<'a>,
}

#[derive(Debug)]
enum Node<'a> {
    /// Text of the body, written back as it is.
    Raw(&'a str),
    /// A value an edit wrote, serialized by serde_json.
    New(Value),
    /// An object or array an edit reached into.
    Container(Container<'a>),
}

#[derive(Debug)]
struct Container<'a> {
    object: bool,
    /// The original text (`{` to `}`), empty for one an edit created.
    text: &'a str,
    /// The original items first, in order (removed ones stay, without a value, for their
    /// place in `text`), then the ones edits added.
    items: Vec<Item<'a>>,
}

#[derive(Debug)]
struct Item<'a> {
    /// A member's name, unescaped; `None` in an array.
    key: Option<String>,
    /// Where the item is in the container's original text; `None` for an added one.
    at: Option<At>,
    /// `None`: removed.
    value: Option<Node<'a>>,
}

/// Byte offsets of an original item in its container's text. In an array, `start`, `key_end`
/// and `value_start` are the same.
#[derive(Debug, Clone, Copy)]
struct At {
    start: usize,
    key_end: usize,
    value_start: usize,
    end: usize,
}

impl<'a> Document<'a> {
    /// Checks a body and makes it ready for edits.
    pub fn parse(body: &'a [u8]) -> Result<Self, Invalid> {
        let text = std::str::from_utf8(body).map_err(|_| Invalid::Syntax)?;
        check(body)?;
        let start = skip_whitespace(body, 0);
        let (IgnoredAny, end) = read(body, start)?;
        Ok(Self {
            text,
            start,
            end,
            root: Node::Raw(piece(text, start, end)?),
        })
    }

    /// Sets the value at `tokens`: replaces it, or creates it together with missing parent
    /// objects. In an array, an index replaces that element and `-` or the length appends.
    /// `false` (and the document unchanged) when it cannot apply: a scalar in the way, an index
    /// past the end.
    pub fn set(&mut self, tokens: &[String], value: Value) -> Result<bool, Invalid> {
        if !can_set(&mut self.root, tokens)? {
            return Ok(false);
        }
        put(&mut self.root, tokens, Node::New(value))?;
        Ok(true)
    }

    /// Removes the value at `tokens` (array elements after it shift down); `false` when there
    /// is nothing there.
    pub fn remove(&mut self, tokens: &[String]) -> Result<bool, Invalid> {
        Ok(take(&mut self.root, tokens)?.is_some())
    }

    /// Moves the value at `from` to `to` (RFC 6902 "move": remove, then set). The value moves
    /// with its original text.
    pub fn rename(&mut self, from: &[String], to: &[String]) -> Result<Renamed, Invalid> {
        let Some((value, position)) = take(&mut self.root, from)? else {
            return Ok(Renamed::Absent);
        };
        if can_set(&mut self.root, to)? {
            put(&mut self.root, to, value)?;
            return Ok(Renamed::Moved);
        }
        let parents = from.split_last().map_or(&[][..], |(_, parents)| parents);
        if let Some(parent) = walk(&mut self.root, parents)? {
            if let Some(item) = parent.open()?.and_then(|c| c.items.get_mut(position)) {
                item.value = Some(value);
            }
        }
        Ok(Renamed::Blocked)
    }

    /// The text of the document's value, without the whitespace around it.
    pub fn value(&self) -> &'a str {
        self.text.get(self.start..self.end).unwrap_or_default()
    }

    /// Whether there is a value other than `null` at `tokens`.
    pub fn present(&mut self, tokens: &[String]) -> Result<bool, Invalid> {
        Ok(match walk(&mut self.root, tokens)? {
            None => false,
            Some(Node::Raw(text)) => *text != "null",
            Some(_) => true,
        })
    }

    /// The value at `tokens` as header text, read before any edit: a string unescaped, a
    /// number or `true`/`false` as written; `None` for an absent value, `null`, an object or an
    /// array (they have no one-line text).
    pub fn scalar(&mut self, tokens: &[String]) -> Result<Option<String>, Invalid> {
        let Some(node) = walk(&mut self.root, tokens)? else {
            return Ok(None);
        };
        let Node::Raw(text) = *node else {
            return Ok(None);
        };
        Ok(match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(text).ok(),
            Some(b'-' | b'0'..=b'9' | b't' | b'f') => Some(text.to_string()),
            _ => None,
        })
    }

    /// The body with the edits spliced in.
    pub fn render(&self) -> Result<Vec<u8>, Invalid> {
        let mut out = Vec::with_capacity(self.text.len() + 64);
        out.extend_from_slice(piece(self.text, 0, self.start)?.as_bytes());
        render(&self.root, &mut out)?;
        out.extend_from_slice(piece(self.text, self.end, self.text.len())?.as_bytes());
        Ok(out)
    }
}

/// The items of an object or array of a checked document ([`Document::value`] or an item's
/// text), in order: each member's unescaped name (`None` in an array) and its value's text.
pub fn items(text: &str) -> Result<Vec<(Option<String>, &str)>, Invalid> {
    if !text.starts_with(['{', '[']) {
        return Err(Invalid::Syntax);
    }
    let container = Container::parse(text)?;
    container
        .items
        .into_iter()
        .map(|item| match item.value {
            Some(Node::Raw(raw)) => Ok((item.key, raw)),
            _ => Err(Invalid::Syntax),
        })
        .collect()
}

/// Reads one JSON value of `bytes` (already checked) starting at `start` with serde_json's
/// stream deserializer: the value and the offset just past it.
fn read<T: DeserializeOwned>(bytes: &[u8], start: usize) -> Result<(T, usize), Invalid> {
    let rest = bytes.get(start..).ok_or(Invalid::Syntax)?;
    let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
    match stream.next() {
        Some(Ok(value)) => Ok((value, start + stream.byte_offset())),
        _ => Err(Invalid::Syntax),
    }
}

/// The offset of the first byte at or after `at` that is not JSON whitespace.
fn skip_whitespace(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// `text[from..to]`, never a panic.
fn piece(text: &str, from: usize, to: usize) -> Result<&str, Invalid> {
    text.get(from..to).ok_or(Invalid::Syntax)
}

impl<'a> Node<'a> {
    /// The container this node is, split into its items on first use; `None` for a scalar.
    fn open(&mut self) -> Result<Option<&mut Container<'a>>, Invalid> {
        if let Node::Raw(text) = *self {
            if text.starts_with(['{', '[']) {
                *self = Node::Container(Container::parse(text)?);
            }
        } else if let Node::New(value @ (Value::Object(_) | Value::Array(_))) = self {
            let value = std::mem::take(value);
            *self = Node::Container(Container::from_value(value));
        }
        Ok(match self {
            Node::Container(container) => Some(container),
            _ => None,
        })
    }
}

impl<'a> Container<'a> {
    /// Splits the text of an object or array (already checked) into its items: serde_json
    /// reads each name and value; between them there is only whitespace and `:` or `,`.
    fn parse(text: &'a str) -> Result<Self, Invalid> {
        let bytes = text.as_bytes();
        let object = bytes.first() == Some(&b'{');
        let close = if object { b'}' } else { b']' };
        let mut items = Vec::new();
        let mut start = skip_whitespace(bytes, 1);
        if bytes.get(start) != Some(&close) {
            loop {
                let (key, key_end, value_start) = if object {
                    let (name, key_end): (String, usize) = read(bytes, start)?;
                    let colon = skip_whitespace(bytes, key_end);
                    if bytes.get(colon) != Some(&b':') {
                        return Err(Invalid::Syntax);
                    }
                    (Some(name), key_end, skip_whitespace(bytes, colon + 1))
                } else {
                    (None, start, start)
                };
                let (IgnoredAny, end) = read(bytes, value_start)?;
                items.push(Item {
                    key,
                    at: Some(At {
                        start,
                        key_end,
                        value_start,
                        end,
                    }),
                    value: Some(Node::Raw(piece(text, value_start, end)?)),
                });
                let next = skip_whitespace(bytes, end);
                match bytes.get(next) {
                    Some(b',') => start = skip_whitespace(bytes, next + 1),
                    Some(&c) if c == close => break,
                    _ => return Err(Invalid::Syntax),
                }
            }
        }
        Ok(Self {
            object,
            text,
            items,
        })
    }

    /// An object or array an edit wrote, so that a later edit can reach into it.
    fn from_value(value: Value) -> Self {
        let added = |key, value| Item {
            key,
            at: None,
            value: Some(Node::New(value)),
        };
        match value {
            Value::Object(map) => Self {
                object: true,
                text: "",
                items: map.into_iter().map(|(k, v)| added(Some(k), v)).collect(),
            },
            Value::Array(values) => Self {
                object: false,
                text: "",
                items: values.into_iter().map(|v| added(None, v)).collect(),
            },
            // Never called for a scalar.
            _ => Self {
                object: false,
                text: "",
                items: Vec::new(),
            },
        }
    }

    /// How many items are there (not removed).
    fn len(&self) -> usize {
        self.items.iter().filter(|i| i.value.is_some()).count()
    }

    /// The place in `items` of the member named `name`.
    fn member(&self, name: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|i| i.value.is_some() && i.key.as_deref() == Some(name))
    }

    /// The place in `items` of element number `n`.
    fn element(&self, n: usize) -> Option<usize> {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.value.is_some())
            .nth(n)
            .map(|(place, _)| place)
    }

    /// The place in `items` of what `token` names here (`-` names nothing: it is past the end).
    fn find(&self, token: &str) -> Option<usize> {
        if self.object {
            self.member(token)
        } else {
            self.element(index(token)?)
        }
    }

    fn child(&mut self, place: usize) -> Option<&mut Node<'a>> {
        self.items.get_mut(place).and_then(|i| i.value.as_mut())
    }

    /// Writes the container: its original text, with removed items cut out (each with the
    /// separator after it, or before it for the last one), replaced values spliced in, and added
    /// items at the end, separated and written like the first original ones.
    fn render(&self, out: &mut Vec<u8>) -> Result<(), Invalid> {
        let text = self.text;
        let at = |place: usize| self.items.get(place).and_then(|i| i.at);
        let originals = self.items.iter().take_while(|i| i.at.is_some()).count();
        let (head, tail) = match (at(0), originals.checked_sub(1).and_then(at)) {
            (Some(first), Some(last)) => (
                piece(text, 0, first.start)?,
                piece(text, last.end, text.len())?,
            ),
            _ if !text.is_empty() => (piece(text, 0, 1)?, piece(text, 1, text.len())?),
            _ if self.object => ("{", "}"),
            _ => ("[", "]"),
        };
        let separator = match (at(0), at(1)) {
            (Some(first), Some(second)) => Cow::Borrowed(piece(text, first.end, second.start)?),
            // `,` and the whitespace the first item has before it.
            (Some(first), None) => Cow::Owned(format!(",{}", piece(text, 1, first.start)?)),
            _ => Cow::Borrowed(","),
        };
        let colon = match at(0) {
            Some(first) if self.object => piece(text, first.key_end, first.value_start)?,
            _ => ":",
        };
        out.extend_from_slice(head.as_bytes());
        let mut previous: Option<usize> = None;
        let mut written = false;
        for (place, item) in self.items.iter().enumerate() {
            let Some(value) = &item.value else {
                continue;
            };
            match item.at {
                Some(here) => {
                    if let Some(previous) = previous {
                        // What followed the previous item written: `,` and whitespace.
                        let (Some(after), Some(next)) = (at(previous), at(previous + 1)) else {
                            return Err(Invalid::Syntax);
                        };
                        out.extend_from_slice(piece(text, after.end, next.start)?.as_bytes());
                    }
                    // The name, `:` and the whitespace around it.
                    out.extend_from_slice(piece(text, here.start, here.value_start)?.as_bytes());
                    previous = Some(place);
                }
                None => {
                    if written {
                        out.extend_from_slice(separator.as_bytes());
                    }
                    if let Some(key) = &item.key {
                        serde_json::to_writer(&mut *out, key).map_err(|_| Invalid::Syntax)?;
                        out.extend_from_slice(colon.as_bytes());
                    }
                }
            }
            render(value, out)?;
            written = true;
        }
        out.extend_from_slice(tail.as_bytes());
        Ok(())
    }
}

fn render(node: &Node<'_>, out: &mut Vec<u8>) -> Result<(), Invalid> {
    match node {
        Node::Raw(text) => out.extend_from_slice(text.as_bytes()),
        Node::New(value) => serde_json::to_writer(&mut *out, value).map_err(|_| Invalid::Syntax)?,
        Node::Container(container) => container.render(out)?,
    }
    Ok(())
}

/// The node at `tokens`, if there is one.
fn walk<'n, 'a>(
    node: &'n mut Node<'a>,
    tokens: &[String],
) -> Result<Option<&'n mut Node<'a>>, Invalid> {
    let Some((token, rest)) = tokens.split_first() else {
        return Ok(Some(node));
    };
    let Some(container) = node.open()? else {
        return Ok(None);
    };
    let Some(place) = container.find(token) else {
        return Ok(None);
    };
    match container.child(place) {
        Some(child) => walk(child, rest),
        None => Ok(None),
    }
}

/// Whether [`put`] can apply without touching anything it must not (a scalar in the way, an
/// array index past the end).
fn can_set(node: &mut Node<'_>, tokens: &[String]) -> Result<bool, Invalid> {
    let Some((token, rest)) = tokens.split_first() else {
        return Ok(true);
    };
    let Some(container) = node.open()? else {
        return Ok(false);
    };
    let place = if container.object {
        container.member(token)
    } else {
        let Some(slot) = array_slot(token, container.len()) else {
            return Ok(false);
        };
        match container.element(slot) {
            Some(place) => Some(place),
            // Appending at the end (the value, or a new parent object there); never beyond.
            None => return Ok(slot == container.len()),
        }
    };
    match place {
        Some(place) if !rest.is_empty() => match container.child(place) {
            Some(child) => can_set(child, rest),
            None => Ok(false),
        },
        // Replacing the item, or creating it and any parents below it.
        _ => Ok(true),
    }
}

/// Sets `value` at `tokens`, creating missing parent objects ([`can_set`] said it can).
fn put<'a>(node: &mut Node<'a>, tokens: &[String], value: Node<'a>) -> Result<(), Invalid> {
    let Some((token, rest)) = tokens.split_first() else {
        *node = value;
        return Ok(());
    };
    let Some(container) = node.open()? else {
        return Ok(());
    };
    let place = if container.object {
        container.member(token)
    } else {
        match array_slot(token, container.len()) {
            Some(slot) => container.element(slot),
            None => return Ok(()),
        }
    };
    if let Some(child) = place.and_then(|place| container.child(place)) {
        return put(child, rest, value);
    }
    let child = if rest.is_empty() {
        value
    } else {
        let mut child = Node::New(Value::Object(Map::new()));
        put(&mut child, rest, value)?;
        child
    };
    container.items.push(Item {
        key: container.object.then(|| token.clone()),
        at: None,
        value: Some(child),
    });
    Ok(())
}

/// Takes the value at `tokens` out (leaving its place empty); the value and its place.
fn take<'a>(node: &mut Node<'a>, tokens: &[String]) -> Result<Option<(Node<'a>, usize)>, Invalid> {
    let Some((last, parents)) = tokens.split_last() else {
        return Ok(None);
    };
    let Some(parent) = walk(node, parents)? else {
        return Ok(None);
    };
    let Some(container) = parent.open()? else {
        return Ok(None);
    };
    let Some(place) = container.find(last) else {
        return Ok(None);
    };
    Ok(container
        .items
        .get_mut(place)
        .and_then(|i| i.value.take())
        .map(|value| (value, place)))
}

/// Checks the whole body: valid JSON, and no object with a repeated member name.
fn check(body: &[u8]) -> Result<(), Invalid> {
    // Read as bytes, as the configuration is: one copy of serde_json's reader in the module.
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match Check::deserialize(&mut deserializer).and_then(|_| deserializer.end()) {
        Ok(()) => Ok(()),
        // The only error of ours (every JSON value is accepted): a repeated name.
        Err(e) if e.is_data() => Err(Invalid::DuplicateName),
        Err(_) => Err(Invalid::Syntax),
    }
}

/// Any JSON value, read only to be checked.
struct Check;

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Check;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_str<E>(self, _: &str) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_unit<E>(self) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
        while seq.next_element::<Check>()?.is_some() {}
        Ok(Check)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
        let mut names: Vec<Cow<'de, str>> = Vec::new();
        while let Some(name) = map.next_key_seed(Name)? {
            map.next_value::<Check>()?;
            names.push(name);
        }
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(de::Error::custom("duplicate member name"));
        }
        Ok(Check)
    }
}

/// A member name, unescaped (borrowed from the body when it has no escapes).
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_string()))
    }
}

#[cfg(test)]
mod tests;
