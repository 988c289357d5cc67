//! JSON body edits and the decision whether a body is buffered at all.

use crate::ops::Outcome;
use crate::pointer::{self, Pointer, Renamed};
use crate::template::{HostFacts, RequestVars, Template};
use serde_json::Value;

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
}

/// Why a body could not be edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body is not valid JSON.
    InvalidJson,
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
        self.remove.is_empty() && self.rename.is_empty() && self.set.is_empty()
    }

    /// Edits a JSON body. `Ok((None, _))` means nothing changed and the original bytes pass
    /// as they are; an edited document is written back compactly.
    pub fn apply(
        &self,
        body: &[u8],
        vars: &RequestVars,
    ) -> Result<(Option<Vec<u8>>, Outcome), BodyError> {
        let mut doc: Value = serde_json::from_slice(body).map_err(|_| BodyError::InvalidJson)?;
        let mut outcome = Outcome::default();
        for target in &self.remove {
            outcome.changed |= pointer::remove(&mut doc, target).is_some();
        }
        for (from, to) in &self.rename {
            match pointer::rename(&mut doc, from, to) {
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
            match pointer::set(&mut doc, target, value) {
                Ok(()) => outcome.changed = true,
                Err(_) => outcome.skipped += 1,
            }
        }
        if !outcome.changed {
            return Ok((None, outcome));
        }
        let bytes = serde_json::to_vec(&doc).map_err(|_| BodyError::InvalidJson)?;
        outcome.changed = bytes != body;
        Ok((outcome.changed.then_some(bytes), outcome))
    }
}

/// `application/json` or any `application/<x>+json`, parameters ignored, case-insensitive.
pub fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Whether a body with these headers is buffered for editing: JSON, not compressed, and
/// (when announced) not bigger than the limit. `Err(TooLarge)` means the announced length is
/// already over the limit.
pub fn should_buffer(headers: &[(String, String)], max_body_bytes: u64) -> Result<bool, TooLarge> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if !is_json(header("content-type")) {
        return Ok(false);
    }
    let encoded = header("content-encoding")
        .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
    if encoded {
        return Ok(false);
    }
    match header("content-length").and_then(|l| l.trim().parse::<u64>().ok()) {
        Some(0) => Ok(false),
        Some(length) if length > max_body_bytes => Err(TooLarge),
        _ => Ok(true),
    }
}

/// The announced body is over `max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

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
        }
    }

    #[test]
    fn edits_in_order() {
        let body = br#"{"user_name": "bob", "password": "hunter2", "n": [1, 2]}"#;
        let (new, outcome) = edits().apply(body, &vars()).unwrap();
        let doc: Value = serde_json::from_slice(&new.unwrap()).unwrap();
        assert_eq!(
            doc,
            json!({"username": "bob", "n": [1, 2], "meta": {"source": "gateway", "sub": "alice"}})
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
    fn unchanged_body_passes_as_is() {
        let only_remove = JsonEdits {
            remove: vec![p("/password")],
            ..JsonEdits::default()
        };
        let (new, outcome) = only_remove.apply(b" {\"a\": 1} ", &vars()).unwrap();
        assert_eq!(new, None);
        assert!(!outcome.changed);
    }

    #[test]
    fn invalid_json() {
        assert_eq!(
            edits().apply(b"{\"a\": ", &vars()).unwrap_err(),
            BodyError::InvalidJson
        );
        assert_eq!(
            edits().apply(b"", &vars()).unwrap_err(),
            BodyError::InvalidJson
        );
    }

    #[test]
    fn edits_on_a_top_level_array_or_scalar() {
        let set_first = JsonEdits {
            set: vec![(p("/0/id"), SetValue::Json(json!(7)))],
            ..JsonEdits::default()
        };
        let (new, _) = set_first.apply(b"[{\"id\": 1}]", &vars()).unwrap();
        assert_eq!(new.unwrap(), b"[{\"id\":7}]");
        let (new, outcome) = set_first.apply(b"\"text\"", &vars()).unwrap();
        assert_eq!((new, outcome.skipped), (None, 1));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/problem+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/jsonx")));
        assert!(!is_json(None));
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn buffering_decision() {
        let json = |extra: &[(&str, &str)]| {
            let mut h = headers(&[("content-type", "application/json")]);
            h.extend(headers(extra));
            should_buffer(&h, 100)
        };
        assert_eq!(json(&[]), Ok(true));
        assert_eq!(json(&[("content-length", "100")]), Ok(true));
        assert_eq!(json(&[("content-length", "101")]), Err(TooLarge));
        assert_eq!(json(&[("content-length", "0")]), Ok(false));
        assert_eq!(json(&[("content-encoding", "gzip")]), Ok(false));
        assert_eq!(json(&[("content-encoding", "identity")]), Ok(true));
        assert_eq!(
            should_buffer(&headers(&[("content-type", "text/plain")]), 100),
            Ok(false)
        );
        assert_eq!(should_buffer(&[], 100), Ok(false));
    }
}
