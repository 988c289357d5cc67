//! JSON body edits, and what a body is by its headers (whether it is edited at all).

use crate::doc::{Document, Invalid, Renamed};
use crate::ops::Outcome;
use crate::pointer::Pointer;
use crate::template::{is_token_byte, HostFacts, RequestVars, Template};
use serde_json::Value;
use wasmgate_core::request::declared_length;

/// A value `set` writes: a fixed JSON value, or a template rendered to a JSON string.
#[derive(Debug, Clone)]
pub enum SetValue {
    /// Written as is.
    Json(Value),
    /// Rendered per request; the edit is skipped when it resolves to nothing.
    Template(Template),
}

/// The JSON edits of one direction, applied in the order remove, rename, set.
#[derive(Debug, Clone, Default)]
pub struct JsonEdits {
    /// Pointers removed.
    pub remove: Vec<Pointer>,
    /// `(from, to)` moves.
    pub rename: Vec<(Pointer, Pointer)>,
    /// Pointers set (missing parent objects are created).
    pub set: Vec<(Pointer, SetValue)>,
    /// `(pointer, header)`: the value at the pointer, as the body arrived, copied into a request
    /// header ([`crate::doc::Document::scalar`]).
    pub to_headers: Vec<(Pointer, String)>,
    /// `(pointer, status)`: a response whose body has a value (not `null`) at the pointer gets
    /// that status; the first one present wins.
    pub status_when: Vec<(Pointer, u16)>,
}

/// What the edits read from a body before editing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// `(header, value)` for `to_headers`.
    pub headers: Vec<(String, String)>,
    /// The status of the first `status_when` pointer present.
    pub status: Option<u16>,
}

impl JsonEdits {
    /// The host facts the templates of these edits read.
    pub fn host_facts(&self) -> HostFacts {
        HostFacts::of(self.set.iter().filter_map(|(_, value)| match value {
            SetValue::Template(template) => Some(template),
            SetValue::Json(_) => None,
        }))
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.to_headers.is_empty()
            && self.status_when.is_empty()
    }

    /// Edits a JSON body. `Ok((None, _))` means nothing changed and the original bytes pass
    /// as they are; otherwise the new body is the original text with the edits spliced in
    /// ([`crate::doc`]).
    pub fn apply(
        &self,
        body: &[u8],
        vars: &RequestVars,
    ) -> Result<(Option<Vec<u8>>, Outcome), Invalid> {
        self.apply_reading(body, vars, &mut Reads::default())
    }

    /// [`Self::apply`], and what it reads before editing: the `to_headers` values as
    /// `(header, value)` (values absent, `null`, objects and arrays are left out and counted as
    /// skipped) and the `status_when` status.
    pub fn apply_reading(
        &self,
        body: &[u8],
        vars: &RequestVars,
        reads: &mut Reads,
    ) -> Result<(Option<Vec<u8>>, Outcome), Invalid> {
        let mut doc = Document::parse(body)?;
        let mut outcome = Outcome::default();
        for (pointer, header) in &self.to_headers {
            match doc.scalar(pointer.tokens())? {
                Some(value) => reads.headers.push((header.clone(), value)),
                None => outcome.skipped += 1,
            }
        }
        for (pointer, status) in &self.status_when {
            if reads.status.is_none() && doc.present(pointer.tokens())? {
                reads.status = Some(*status);
            }
        }
        for target in &self.remove {
            outcome.changed |= doc.remove(target.tokens())?;
        }
        for (from, to) in &self.rename {
            match doc.rename(from.tokens(), to.tokens())? {
                Renamed::Moved => outcome.changed = true,
                Renamed::Absent => {}
                Renamed::Blocked => outcome.skipped += 1,
            }
        }
        for (target, value) in &self.set {
            let value = match value {
                SetValue::Json(value) => value.clone(),
                SetValue::Template(template) => match template.render(vars) {
                    Some(text) => Value::String(text),
                    None => {
                        outcome.skipped += 1;
                        continue;
                    }
                },
            };
            if doc.set(target.tokens(), value)? {
                outcome.changed = true;
            } else {
                outcome.skipped += 1;
            }
        }
        if !outcome.changed {
            return Ok((None, outcome));
        }
        let bytes = doc.render()?;
        outcome.changed = bytes != body;
        Ok((outcome.changed.then_some(bytes), outcome))
    }
}

/// A JSON media type: `application/json` or `application/<name>+json`, compared
/// case-insensitively, parameters (`; charset=utf-8`) ignored.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    if !kind.eq_ignore_ascii_case("application") || !subtype.bytes().all(is_token_byte) {
        return false;
    }
    let subtype = subtype.to_ascii_lowercase();
    subtype == "json"
        || subtype
            .strip_suffix("+json")
            .is_some_and(|name| !name.is_empty())
}

/// An XML media type: `application/xml`, `text/xml` or `application/<name>+xml`
/// (`application/soap+xml`), compared case-insensitively, parameters ignored.
pub fn is_xml(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    if !subtype.bytes().all(is_token_byte) {
        return false;
    }
    let subtype = subtype.to_ascii_lowercase();
    if kind.eq_ignore_ascii_case("text") {
        return subtype == "xml";
    }
    kind.eq_ignore_ascii_case("application")
        && (subtype == "xml"
            || subtype
                .strip_suffix("+xml")
                .is_some_and(|name| !name.is_empty()))
}

/// What a body is, by its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `content-length: 0`: there is nothing to edit.
    Empty,
    /// JSON and not compressed.
    Json,
    /// `application/x-www-form-urlencoded` and not compressed.
    Form,
    /// XML and not compressed.
    Xml,
    /// No `content-type`, several kinds, or one that is none of the above.
    NotJson,
    /// One of the above, but with a `content-encoding` other than `identity`.
    Compressed,
}

/// What a body with these headers is. Every `content-type` line must name the same kind, and
/// every `content-encoding` coding must be `identity`.
pub fn classify(headers: &[(String, String)]) -> BodyKind {
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if declared_length(headers) == Some(0) {
        return BodyKind::Empty;
    }
    let kind_of = |value: &str| {
        if is_json(value) {
            BodyKind::Json
        } else if crate::form::is_form(value) {
            BodyKind::Form
        } else if is_xml(value) {
            BodyKind::Xml
        } else {
            BodyKind::NotJson
        }
    };
    let mut types = values("content-type").map(kind_of);
    let Some(kind) = types.next() else {
        return BodyKind::NotJson;
    };
    if kind == BodyKind::NotJson || types.any(|other| other != kind) {
        return BodyKind::NotJson;
    }
    let compressed = values("content-encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
    if compressed {
        BodyKind::Compressed
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    fn vars() -> RequestVars {
        RequestVars::new(
            &[
                (":path".to_string(), "/x".to_string()),
                ("x-jwt-sub".to_string(), "alice".to_string()),
            ],
            None,
            None,
        )
    }

    fn edits() -> JsonEdits {
        JsonEdits {
            remove: vec![p("/password")],
            rename: vec![(p("/user_name"), p("/username"))],
            set: vec![
                (p("/meta/source"), SetValue::Json(json!("gateway"))),
                (
                    p("/meta/sub"),
                    SetValue::Template(Template::parse("{{header.x-jwt-sub}}").unwrap()),
                ),
                (
                    p("/meta/none"),
                    SetValue::Template(Template::parse("{{header.nope}}").unwrap()),
                ),
            ],
            to_headers: vec![],
            status_when: vec![],
        }
    }

    #[test]
    fn edits_in_order() {
        let body = br#"{"user_name": "bob", "password": "hunter2", "n": [1, 2]}"#;
        let (new, outcome) = edits().apply(body, &vars()).unwrap();
        assert_eq!(
            String::from_utf8(new.unwrap()).unwrap(),
            r#"{"n": [1, 2], "username": "bob", "meta": {"source":"gateway","sub":"alice"}}"#
        );
        assert_eq!(
            outcome,
            Outcome {
                changed: true,
                skipped: 1
            }
        );
    }

    #[test]
    fn only_the_named_members_change() {
        let body = "{\n  \"id\": 12345678901234567890123,\n  \"amount\": 1.50,\n  \"user_name\": \"bob\",\n  \"password\": \"hunter2\",\n  \"note\": \"caf\\u00e9\"\n}";
        let (new, _) = edits().apply(body.as_bytes(), &vars()).unwrap();
        assert_eq!(
            String::from_utf8(new.unwrap()).unwrap(),
            "{\n  \"id\": 12345678901234567890123,\n  \"amount\": 1.50,\n  \"note\": \"caf\\u00e9\",\n  \"username\": \"bob\",\n  \"meta\": {\"source\":\"gateway\",\"sub\":\"alice\"}\n}"
        );
    }

    #[test]
    fn unchanged_body_passes_as_is() {
        let only_remove = JsonEdits {
            remove: vec![p("/password")],
            ..JsonEdits::default()
        };
        let (new, outcome) = only_remove.apply(b" {\"a\": 1} ", &vars()).unwrap();
        assert_eq!(new, None);
        assert!(!outcome.changed);
        // A set that writes the very text already there is no change either.
        let same = JsonEdits {
            set: vec![(p("/a"), SetValue::Json(json!(1)))],
            ..JsonEdits::default()
        };
        let (new, outcome) = same.apply(br#"{"a":1}"#, &vars()).unwrap();
        assert_eq!((new, outcome.changed), (None, false));
    }

    #[test]
    fn invalid_json() {
        assert_eq!(
            edits().apply(b"{\"a\": ", &vars()).unwrap_err(),
            Invalid::Syntax
        );
        assert_eq!(edits().apply(b"", &vars()).unwrap_err(), Invalid::Syntax);
        assert_eq!(
            edits()
                .apply(br#"{"password": "a", "password": "b"}"#, &vars())
                .unwrap_err(),
            Invalid::DuplicateName
        );
    }

    #[test]
    fn edits_on_a_top_level_array_or_scalar() {
        let set_first = JsonEdits {
            set: vec![(p("/0/id"), SetValue::Json(json!(7)))],
            ..JsonEdits::default()
        };
        let (new, _) = set_first.apply(b"[{\"id\": 1}]", &vars()).unwrap();
        assert_eq!(new.unwrap(), b"[{\"id\": 7}]");
        let (new, outcome) = set_first.apply(b"\"text\"", &vars()).unwrap();
        assert_eq!((new, outcome.skipped), (None, 1));
    }

    #[test]
    fn json_media_types() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/json ; charset=\"UTF-8\"",
            "application/problem+json",
            "APPLICATION/VND.API+JSON;v=2",
            " application/merge-patch+json ",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/json-seq",
            "application/+json",
            "application/x+json+xml",
            "application/ json",
            "application /json",
            "application/json, text/plain",
            "json",
            "",
        ] {
            assert!(!is_json(other), "{other}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn body_kinds() {
        let json = |extra: &[(&str, &str)]| {
            let mut h = headers(&[("content-type", "application/json")]);
            h.extend(headers(extra));
            classify(&h)
        };
        assert_eq!(json(&[]), BodyKind::Json);
        assert_eq!(json(&[("content-length", "100")]), BodyKind::Json);
        assert_eq!(json(&[("content-length", "0")]), BodyKind::Empty);
        assert_eq!(json(&[("content-encoding", "gzip")]), BodyKind::Compressed);
        assert_eq!(
            json(&[("Content-Encoding", "identity, br")]),
            BodyKind::Compressed
        );
        assert_eq!(json(&[("content-encoding", "Identity")]), BodyKind::Json);
        assert_eq!(
            json(&[("content-type", "text/plain")]),
            BodyKind::NotJson,
            "every content-type line must be JSON"
        );
        assert_eq!(
            classify(&headers(&[("content-type", "text/plain")])),
            BodyKind::NotJson
        );
        assert_eq!(classify(&[]), BodyKind::NotJson);
        // Forms and XML by their types; compressed ones are never edited either.
        let typed = |content_type: &str, encoding: &str| {
            let mut h = headers(&[("content-type", content_type)]);
            if !encoding.is_empty() {
                h.extend(headers(&[("content-encoding", encoding)]));
            }
            classify(&h)
        };
        assert_eq!(
            typed("application/x-www-form-urlencoded", ""),
            BodyKind::Form
        );
        assert_eq!(typed("text/xml; charset=utf-8", ""), BodyKind::Xml);
        assert_eq!(typed("application/soap+xml", ""), BodyKind::Xml);
        assert_eq!(
            typed("application/x-www-form-urlencoded", "gzip"),
            BodyKind::Compressed
        );
        assert_eq!(typed("application/xml", "deflate"), BodyKind::Compressed);
        assert_eq!(typed("text/html", ""), BodyKind::NotJson);
        assert_eq!(
            typed("multipart/form-data; boundary=x", ""),
            BodyKind::NotJson
        );
        // Two content-type lines of different kinds are no kind at all.
        let mut mixed = headers(&[("content-type", "application/json")]);
        mixed.extend(headers(&[("content-type", "application/xml")]));
        assert_eq!(classify(&mixed), BodyKind::NotJson);
        assert_eq!(
            classify(&headers(&[("content-length", "0")])),
            BodyKind::Empty
        );
    }
}
