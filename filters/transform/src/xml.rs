//! XML <-> JSON with one mapping (the README's "XML and JSON"). XML is read and written by
//! quick-xml, JSON read by serde_json (through [`crate::doc`], which keeps member order and the
//! text of numbers) and strings written by serde_json.
//!
//! The mapping, both ways:
//!
//! - An element is a member named as the element (`soap:Body`; with `"strip_prefixes": true` the
//!   local name `Body`, and `xmlns` declarations are dropped; attributes keep their prefix).
//! - An element with only text is a string; an empty element (`<a/>`, `<a></a>`) is `null`
//!   (JSON to XML: `null` is `<a/>`, `""` is `<a></a>`).
//! - Attributes are members `"@name"` with string values; the text of an element that also has
//!   attributes or children is `"#text"` (its text pieces joined; whitespace-only text is
//!   dropped there).
//! - Child elements with the same name are an array, in document order; `arrays` names elements
//!   that are always arrays, even when there is one (JSON to XML: each element of an array is
//!   one element with the member's name; an empty array writes none).
//! - Values stay strings: XML has no numbers (JSON to XML writes a number's text as it was).
//! - Comments and processing instructions are dropped; a DOCTYPE is refused (no entity is ever
//!   declared, so none is expanded), only the five predefined entities and character references
//!   are read, the document must be UTF-8, one root element, at most [`MAX_DEPTH`] deep.

use crate::doc::{self, Invalid};
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer, XmlVersion};
use std::borrow::Cow;

/// Deepest element nesting converted, either way (the JSON side counts objects and arrays).
pub const MAX_DEPTH: usize = 32;

/// Why a body cannot be converted: a short reason for the reply and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unconvertible(pub &'static str);

/// Options of `xml_to_json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToJson {
    /// Element names without their namespace prefix, `xmlns` declarations dropped. Attributes
    /// keep theirs (`xsi:type`, `xml:lang`): two of them could otherwise collide.
    pub strip_prefixes: bool,
    /// Element names (as they appear in the JSON) that are always arrays.
    pub arrays: Vec<String>,
    /// Element names from the root down: the body becomes the value of the last one
    /// (`["Envelope", "Body"]`: the content of a SOAP body). A document without that path is
    /// not converted.
    pub unwrap: Vec<String>,
}

/// Options of `json_to_xml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToXml {
    /// Elements the converted document is put into, outermost first (`["soap:Envelope",
    /// "soap:Body"]`); empty: the JSON object must have exactly one member, the root.
    pub wrap: Vec<String>,
    /// `(prefix, uri)` declared on the root element (`""`: the default namespace).
    pub declare: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
}

/// Reads an XML body into its element tree.
fn read(body: &[u8], strip: bool) -> Result<Element, Unconvertible> {
    let text = std::str::from_utf8(body).map_err(|_| Unconvertible("not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().enable_all_checks(true);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let syntax = |_| Unconvertible("not well-formed XML");
    loop {
        let event = reader.read_event().map_err(syntax)?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(Unconvertible("more than one root element"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Unconvertible("nested too deeply"));
                }
                let element = open(start, strip)?;
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or(Unconvertible("not well-formed XML"))?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(text) => {
                let content = text.xml10_content();
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(Unconvertible("text outside the root element")),
                }
            }
            Event::CData(data) => match stack.last_mut() {
                Some(top) => top.text.push_str(&data.xml10_content()),
                None => return Err(Unconvertible("text outside the root element")),
            },
            Event::GeneralRef(reference) => {
                let top = stack
                    .last_mut()
                    .ok_or(Unconvertible("text outside the root element"))?;
                match reference.resolve_char_ref().map_err(syntax)? {
                    Some(c) => top.text.push(c),
                    None => top.text.push_str(
                        resolve_predefined_entity(&reference)
                            .ok_or(Unconvertible("an entity that is not predefined"))?,
                    ),
                }
            }
            Event::Decl(decl) => {
                let utf8 = match decl.encoding() {
                    None => true,
                    Some(Ok(name)) => {
                        name.eq_ignore_ascii_case("utf-8") || name.eq_ignore_ascii_case("utf8")
                    }
                    Some(Err(_)) => false,
                };
                if !utf8 {
                    return Err(Unconvertible("an encoding other than UTF-8"));
                }
            }
            Event::DocType(_) => return Err(Unconvertible("a DOCTYPE")),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(Unconvertible("an element is not closed"));
    }
    root.ok_or(Unconvertible("no root element"))
}

/// An element as its start tag names it, with its attributes.
fn open(start: &BytesStart<'_>, strip: bool) -> Result<Element, Unconvertible> {
    let name = start.name();
    let name = if strip {
        start.local_name().as_ref().to_string()
    } else {
        name.as_ref().to_string()
    };
    let mut attributes: Vec<(String, String)> = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|_| Unconvertible("an invalid attribute"))?;
        let key = attribute.key.as_ref();
        let declaration = key == "xmlns" || key.starts_with("xmlns:");
        if strip && declaration {
            continue;
        }
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|_| Unconvertible("an invalid attribute value"))?;
        attributes.push((key.to_string(), value.into_owned()));
    }
    Ok(Element {
        name,
        attributes,
        ..Element::default()
    })
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// Converts an XML body to JSON text.
pub fn xml_to_json(body: &[u8], options: &ToJson) -> Result<Vec<u8>, Unconvertible> {
    let root = read(body, options.strip_prefixes)?;
    let mut out = Vec::with_capacity(body.len());
    let missing = Unconvertible("the document is not the one to unwrap");
    match options.unwrap.split_first() {
        None => {
            out.push(b'{');
            write_string(&root.name, &mut out);
            out.push(b':');
            write_element(&root, options, &mut out);
            out.push(b'}');
        }
        Some((first, path)) => {
            if &root.name != first {
                return Err(missing);
            }
            let mut element = &root;
            for name in path {
                let mut named = element.children.iter().filter(|c| &c.name == name);
                element = match (named.next(), named.next()) {
                    (Some(child), None) => child,
                    _ => return Err(missing),
                };
            }
            write_element(element, options, &mut out);
        }
    }
    Ok(out)
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_element(element: &Element, options: &ToJson, out: &mut Vec<u8>) {
    if element.attributes.is_empty() && element.children.is_empty() {
        if element.text.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            write_string(&element.text, out);
        }
        return;
    }
    out.push(b'{');
    let mut first = true;
    let mut member = |name: &str, out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(name, out);
        out.push(b':');
    };
    for (key, value) in &element.attributes {
        member(&format!("@{key}"), out);
        write_string(value, out);
    }
    if !element.text.trim().is_empty() {
        member("#text", out);
        write_string(&element.text, out);
    }
    // Children grouped by name, groups in the order of their first element: one sort by
    // (name, place) keeps the work at n log n however many names there are; a child that is
    // first of its name writes the whole group.
    let children = &element.children;
    let mut order: Vec<usize> = (0..children.len()).collect();
    order.sort_unstable_by(|&a, &b| children[a].name.cmp(&children[b].name).then(a.cmp(&b)));
    for (place, child) in children.iter().enumerate() {
        let at = order
            .partition_point(|&i| (children[i].name.as_str(), i) < (child.name.as_str(), place));
        if at > 0
            && order
                .get(at - 1)
                .is_some_and(|&i| children[i].name == child.name)
        {
            continue;
        }
        let group: Vec<usize> = order[at..]
            .iter()
            .copied()
            .take_while(|&i| children[i].name == child.name)
            .collect();
        member(&child.name, out);
        if group.len() == 1 && !options.arrays.contains(&child.name) {
            write_element(child, options, out);
            continue;
        }
        out.push(b'[');
        for (n, &i) in group.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_element(&children[i], options, out);
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// A name JSON to XML may write for an element or attribute: an XML Name (ASCII letters,
/// digits, `_`, `-`, `.`, any non-ASCII character, not starting with a digit, `-` or `.`), with
/// at most one `:` between a prefix and a local name.
pub fn valid_name(name: &str) -> bool {
    let (prefix, local) = match name.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    };
    let ncname = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii())
            && chars
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || !c.is_ascii())
    };
    prefix.is_none_or(ncname) && ncname(local)
}

/// Text XML 1.0 can hold: no control character but tab, line feed and carriage return.
fn xml_text(text: &str) -> Result<&str, Unconvertible> {
    let bad = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
    };
    if text.chars().any(bad) {
        return Err(Unconvertible("a control character has no XML 1.0 form"));
    }
    Ok(text)
}

type Out = Writer<Vec<u8>>;

fn write(writer: &mut Out, event: Event<'_>) -> Result<(), Unconvertible> {
    writer
        .write_event(event)
        .map_err(|_| Unconvertible("cannot be written as XML"))
}

/// The text of a JSON scalar (a string unescaped, a number as written); `None` for `null`.
fn scalar(raw: &str) -> Result<Option<Cow<'_, str>>, Unconvertible> {
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw)
            .map(|s| Some(Cow::Owned(s)))
            .map_err(|_| Unconvertible("not valid JSON")),
        Some(b'n') => Ok(None),
        Some(b'{' | b'[') => Err(Unconvertible(
            "an attribute or #text that is an object or array",
        )),
        _ => Ok(Some(Cow::Borrowed(raw))),
    }
}

fn items(raw: &str) -> Result<Vec<(Option<String>, &str)>, Unconvertible> {
    doc::items(raw).map_err(|_: Invalid| Unconvertible("not valid JSON"))
}

/// Writes the member `name` with the JSON value `raw` as an element (or elements, for an array).
fn write_member(
    writer: &mut Out,
    name: &str,
    raw: &str,
    declare: &[(String, String)],
    depth: usize,
) -> Result<(), Unconvertible> {
    if raw.starts_with('[') {
        for (_, element) in items(raw)? {
            if element.starts_with('[') {
                return Err(Unconvertible("an array in an array has no XML form"));
            }
            write_element_xml(writer, name, element, declare, depth + 1)?;
        }
        return Ok(());
    }
    write_element_xml(writer, name, raw, declare, depth)
}

fn start<'a>(name: &'a str, declare: &'a [(String, String)]) -> BytesStart<'a> {
    let mut start = BytesStart::new(name);
    for (prefix, uri) in declare {
        if prefix.is_empty() {
            start.push_attribute(("xmlns", uri.as_str()));
        } else {
            start.push_attribute((format!("xmlns:{prefix}").as_str(), uri.as_str()));
        }
    }
    start
}

fn write_element_xml(
    writer: &mut Out,
    name: &str,
    raw: &str,
    declare: &[(String, String)],
    depth: usize,
) -> Result<(), Unconvertible> {
    if depth > MAX_DEPTH {
        return Err(Unconvertible("nested too deeply"));
    }
    if !valid_name(name) {
        return Err(Unconvertible("a member name that is not an XML name"));
    }
    let mut element = start(name, declare);
    if !raw.starts_with('{') {
        return match scalar(raw)? {
            None => write(writer, Event::Empty(element)),
            Some(text) => {
                write(writer, Event::Start(element))?;
                write(writer, Event::Text(BytesText::new(xml_text(&text)?)))?;
                write(writer, Event::End(BytesEnd::new(name)))
            }
        };
    }
    let members = items(raw)?;
    let mut text = None;
    for (key, value) in &members {
        let key = key.as_deref().unwrap_or_default();
        if let Some(attribute) = key.strip_prefix('@') {
            if !valid_name(attribute) {
                return Err(Unconvertible("an attribute name that is not an XML name"));
            }
            if let Some(value) = scalar(value)? {
                element.push_attribute((attribute, xml_text(&value)?));
            }
        } else if key == "#text" {
            text = scalar(value)?;
        }
    }
    let children = members.iter().filter(|(key, _)| {
        key.as_deref()
            .is_some_and(|k| !k.starts_with('@') && k != "#text")
    });
    write(writer, Event::Start(element))?;
    if let Some(text) = &text {
        write(writer, Event::Text(BytesText::new(xml_text(text)?)))?;
    }
    for (key, value) in children {
        write_member(
            writer,
            key.as_deref().unwrap_or_default(),
            value,
            &[],
            depth + 1,
        )?;
    }
    write(writer, Event::End(BytesEnd::new(name)))
}

/// Converts a JSON body (an object) to an XML document. A body that is not valid JSON (or has
/// duplicate member names) is `Err(Invalid)` as for the JSON edits.
pub fn json_to_xml(
    body: &[u8],
    options: &ToXml,
) -> Result<Result<Vec<u8>, Unconvertible>, Invalid> {
    let document = doc::Document::parse(body)?;
    let raw = document.value();
    Ok(convert(raw, options))
}

fn convert(raw: &str, options: &ToXml) -> Result<Vec<u8>, Unconvertible> {
    if !raw.starts_with('{') {
        return Err(Unconvertible("the body is not a JSON object"));
    }
    let members = items(raw)?;
    let mut writer = Writer::new(Vec::with_capacity(raw.len() * 2));
    write(
        &mut writer,
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
    )?;
    match options.wrap.split_first() {
        None => {
            let [(Some(name), value)] = members.as_slice() else {
                return Err(Unconvertible(
                    "the JSON object must have exactly one member, the root element",
                ));
            };
            if value.starts_with('[') {
                return Err(Unconvertible("the root element cannot be an array"));
            }
            write_element_xml(&mut writer, name, value, &options.declare, 1)?;
        }
        Some((outer, inner)) => {
            write(&mut writer, Event::Start(start(outer, &options.declare)))?;
            for name in inner {
                write(&mut writer, Event::Start(BytesStart::new(name.as_str())))?;
            }
            for (key, value) in &members {
                let key = key.as_deref().unwrap_or_default();
                write_member(&mut writer, key, value, &[], options.wrap.len() + 1)?;
            }
            for name in options.wrap.iter().rev() {
                write(&mut writer, Event::End(BytesEnd::new(name.as_str())))?;
            }
        }
    }
    Ok(writer.into_inner())
}

#[cfg(test)]
mod tests;
