//! Header, query and path operations as pure functions over plain lists.
//!
//! Operations apply in the order remove, rename, set (replace or create), add (only when absent),
//! append (another value). Templates read the request as it arrived ([`RequestVars`]), so an
//! operation never sees the effect of another.

use crate::query::{self, Pair};
use crate::template::{HostFacts, RequestVars, Template};
use regex_lite::Regex;
use wasmgate_core::edits::Edit;

/// The operations on one list of named values (headers, or query parameters).
#[derive(Debug, Clone, Default)]
pub struct Ops {
    /// Names removed.
    pub remove: Vec<String>,
    /// `(old, new)`: the values of `old` move to `new`, replacing what `new` had.
    pub rename: Vec<(String, String)>,
    /// Replaces every value of the name with one value, or creates it.
    pub set: Vec<(String, Template)>,
    /// Creates the name only when it is absent.
    pub add: Vec<(String, Template)>,
    /// Adds one more value.
    pub append: Vec<(String, Template)>,
}

/// What applying operations did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Something changed.
    pub changed: bool,
    /// Operations skipped because their template resolved to nothing (or to an unusable value).
    pub skipped: u32,
}

impl Outcome {
    /// Adds another outcome to this one.
    pub fn merge(&mut self, other: Outcome) {
        self.changed |= other.changed;
        self.skipped += other.skipped;
    }
}

impl Ops {
    /// The host facts the templates of these operations read.
    pub fn host_facts(&self) -> HostFacts {
        HostFacts::of(
            self.set
                .iter()
                .chain(&self.add)
                .chain(&self.append)
                .map(|(_, template)| template),
        )
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }

    /// Applies the operations to `(key, entry)` pairs, where `key` is the name operations
    /// compare with. `make` builds a new entry from a name and a rendered value, `rename_entry`
    /// gives an entry a new name, `valid` rejects a rendered value that cannot be used.
    fn apply<E: PartialEq>(
        &self,
        list: &mut Vec<(String, E)>,
        vars: &RequestVars,
        valid: impl Fn(&str) -> bool,
        make: impl Fn(&str, &str) -> E,
        rename_entry: impl Fn(&str, E) -> E,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let before = list.len();
        for name in &self.remove {
            list.retain(|(key, _)| key != name);
        }
        outcome.changed |= list.len() != before;
        for (old, new) in &self.rename {
            if !list.iter().any(|(key, _)| key == old) {
                continue;
            }
            let (moved, kept): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(key, _)| key == old);
            *list = kept.into_iter().filter(|(key, _)| key != new).collect();
            list.extend(
                moved
                    .into_iter()
                    .map(|(_, entry)| (new.clone(), rename_entry(new, entry))),
            );
            outcome.changed = true;
        }
        let mut render = |template: &Template| match template.render(vars) {
            Some(value) if valid(&value) => Some(value),
            _ => {
                outcome.skipped += 1;
                None
            }
        };
        let mut changed = false;
        for (name, template) in &self.set {
            let Some(value) = render(template) else {
                continue;
            };
            let entry = make(name, &value);
            let current: Vec<&E> = list
                .iter()
                .filter(|(key, _)| key == name)
                .map(|(_, e)| e)
                .collect();
            if current.len() == 1 && current[0] == &entry {
                continue;
            }
            list.retain(|(key, _)| key != name);
            list.push((name.clone(), entry));
            changed = true;
        }
        for (name, template) in &self.add {
            if list.iter().any(|(key, _)| key == name) {
                continue;
            }
            if let Some(value) = render(template) {
                list.push((name.clone(), make(name, &value)));
                changed = true;
            }
        }
        for (name, template) in &self.append {
            if let Some(value) = render(template) {
                list.push((name.clone(), make(name, &value)));
                changed = true;
            }
        }
        outcome.changed |= changed;
        outcome
    }

    /// Applies the operations to headers (lowercase names); rendered values holding control
    /// characters are refused, so a template can never inject a header.
    pub fn apply_headers(
        &self,
        headers: &mut Vec<(String, String)>,
        vars: &RequestVars,
    ) -> Outcome {
        self.apply(
            headers,
            vars,
            valid_header_value,
            |_, value| value.to_string(),
            |_, value| value,
        )
    }

    /// The header operations as single edits of the request's headers as read (`headers`,
    /// names compared case-insensitively), appended to `edits` for the frame to write one by
    /// one instead of the whole map; changed exactly when edits were appended. The edits leave
    /// the map as [`Ops::apply_headers`] would: a value an operation writes goes to the end of
    /// the map (`set` of a present name is a remove, then an add), values a rename moves keep
    /// their order, and the same operations are skipped.
    pub fn header_edits(
        &self,
        headers: &[(String, String)],
        vars: &RequestVars,
        edits: &mut Vec<Edit>,
    ) -> Outcome {
        let start = edits.len();
        edits.reserve(
            self.remove.len()
                + self.rename.len() * 2
                + self.set.len() * 2
                + self.add.len()
                + self.append.len(),
        );
        let mut outcome = Outcome::default();
        if self.rename.is_empty() && self.set.is_empty() {
            // Only remove, add and append: presence is checked on the headers as read.
            let has = |name: &str| {
                headers
                    .iter()
                    .any(|(key, _)| key.eq_ignore_ascii_case(name))
            };
            for (i, name) in self.remove.iter().enumerate() {
                if has(name) && !self.remove[..i].contains(name) {
                    edits.push(Edit::Remove(name.clone()));
                }
            }
            let present = |name: &String| has(name) && !self.remove.contains(name);
            self.add_edits(present, vars, edits, &mut outcome);
            outcome.changed = edits.len() > start;
            return outcome;
        }
        fn has(list: &[(&str, &str)], name: &str) -> bool {
            list.iter().any(|(key, _)| key.eq_ignore_ascii_case(name))
        }
        // The headers as read, after remove and rename (borrowed, nothing copied) ...
        let mut list: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        // ... and the names `set` writes (`add` checks them; no later operation checks the
        // names `add` and `append` write).
        let mut written: Vec<&str> = Vec::new();
        for name in &self.remove {
            let before = list.len();
            list.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
            if list.len() != before {
                edits.push(Edit::Remove(name.clone()));
            }
        }
        for (old, new) in &self.rename {
            if !has(&list, old) {
                continue;
            }
            if has(&list, new) {
                edits.push(Edit::Remove(new.clone()));
            }
            edits.push(Edit::Remove(old.clone()));
            let moved: Vec<&str> = list
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(old))
                .map(|(_, value)| *value)
                .collect();
            list.retain(|(key, _)| {
                !key.eq_ignore_ascii_case(old) && !key.eq_ignore_ascii_case(new)
            });
            for value in moved {
                edits.push(Edit::Add(new.clone(), value.to_string()));
                list.push((new, value));
            }
        }
        for (name, template) in &self.set {
            let Some(value) = render_header(template, vars, &mut outcome) else {
                continue;
            };
            let mut current = list
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v);
            match (current.next(), current.next()) {
                (Some(only), None) if only == value => continue,
                (None, _) => {}
                _ => {
                    list.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
                    edits.push(Edit::Remove(name.clone()));
                }
            }
            edits.push(Edit::Add(name.clone(), value));
            written.push(name);
        }
        let present = |name: &String| has(&list, name) || written.contains(&name.as_str());
        self.add_edits(present, vars, edits, &mut outcome);
        outcome.changed = edits.len() > start;
        outcome
    }

    /// The edits of `add` (for the names not `present` after the earlier operations) and
    /// `append`, in that order.
    fn add_edits(
        &self,
        present: impl Fn(&String) -> bool,
        vars: &RequestVars,
        edits: &mut Vec<Edit>,
        outcome: &mut Outcome,
    ) {
        for (name, template) in &self.add {
            if present(name) {
                continue;
            }
            if let Some(value) = render_header(template, vars, outcome) {
                edits.push(Edit::Add(name.clone(), value));
            }
        }
        for (name, template) in &self.append {
            if let Some(value) = render_header(template, vars, outcome) {
                edits.push(Edit::Add(name.clone(), value));
            }
        }
    }

    /// Applies the operations to a raw query string; returns the new query string.
    pub fn apply_query(&self, raw: &str, vars: &RequestVars) -> (String, Outcome) {
        let mut pairs = query::parse(raw);
        let outcome = self.apply(
            &mut pairs,
            vars,
            |_| true,
            Pair::new,
            |name, pair| Pair {
                name: query::encode(name),
                value: pair.value,
            },
        );
        if !outcome.changed {
            return (raw.to_string(), outcome);
        }
        (query::serialize(pairs.iter().map(|(_, p)| p)), outcome)
    }
}

/// A template rendered to a header value, or `None` (counted as skipped in `outcome`) when it
/// resolves to nothing or to a value holding control characters.
fn render_header(template: &Template, vars: &RequestVars, outcome: &mut Outcome) -> Option<String> {
    match template.render(vars) {
        Some(value) if valid_header_value(&value) => Some(value),
        _ => {
            outcome.skipped += 1;
            None
        }
    }
}

/// A header value the filter may write: no control characters but tab.
pub fn valid_header_value(value: &str) -> bool {
    !value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// A path rewrite; the query string is never touched by it.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replaces a leading `from` with `to`.
    Prefix {
        /// The prefix to replace.
        from: String,
        /// Its replacement.
        to: String,
    },
    /// Replaces the first match of `regex` with `substitution` (`\1` is capture group 1).
    Regex {
        /// The compiled expression.
        regex: Regex,
        /// The substitution, split into literal text and group references.
        substitution: Vec<Substitution>,
    },
}

/// A piece of a regex substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Substitution {
    /// Text copied as is.
    Literal(String),
    /// The text of a capture group (0 = the whole match); empty when the group did not match.
    Group(usize),
}

/// Splits `"/u/\\1"` into literal text and group references (`\0`..`\9`; `\\` is a backslash).
pub fn parse_substitution(text: &str, groups: usize) -> Result<Vec<Substitution>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            literal.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => literal.push('\\'),
            Some(d) if d.is_ascii_digit() => {
                let group = usize::from(d as u8 - b'0');
                if group >= groups {
                    return Err(format!(
                        "substitution refers to group {group} but the regex has {} group(s)",
                        groups.saturating_sub(1)
                    ));
                }
                if !literal.is_empty() {
                    parts.push(Substitution::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Substitution::Group(group));
            }
            _ => return Err("\"\\\" must be followed by a group digit or \"\\\"".into()),
        }
    }
    if !literal.is_empty() {
        parts.push(Substitution::Literal(literal));
    }
    Ok(parts)
}

impl PathRewrite {
    /// The rewritten path, or `None` when the rewrite does not apply or would produce something
    /// that is not a path.
    pub fn apply(&self, path: &str) -> Option<String> {
        let new = match self {
            Self::Prefix { from, to } => format!("{to}{}", path.strip_prefix(from.as_str())?),
            Self::Regex {
                regex,
                substitution,
            } => {
                let captures = regex.captures(path)?;
                let whole = captures.get(0)?;
                let mut out = String::with_capacity(path.len());
                out.push_str(&path[..whole.start()]);
                for part in substitution {
                    match part {
                        Substitution::Literal(text) => out.push_str(text),
                        Substitution::Group(i) => {
                            out.push_str(captures.get(*i).map_or("", |m| m.as_str()));
                        }
                    }
                }
                out.push_str(&path[whole.end()..]);
                out
            }
        };
        let usable = new.starts_with('/')
            && !new
                .bytes()
                .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#');
        (usable && new != path).then_some(new)
    }
}

/// The request-side operations that touch headers (`:path` included).
#[derive(Debug, Clone, Default)]
pub struct RequestHeaderOps {
    /// Header operations.
    pub headers: Ops,
    /// Query operations.
    pub query: Ops,
    /// The path rewrite.
    pub path: Option<PathRewrite>,
    /// The new `:method`.
    pub method: Option<String>,
    /// The new `:authority`.
    pub authority: Option<String>,
}

impl RequestHeaderOps {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.query.is_empty()
            && self.path.is_none()
            && self.method.is_none()
            && self.authority.is_none()
    }

    /// True when only regular headers are edited (no query, path, method or authority).
    pub fn headers_only(&self) -> bool {
        self.query.is_empty()
            && self.path.is_none()
            && self.method.is_none()
            && self.authority.is_none()
    }

    /// The request headers after every operation (pseudo-headers first, `:path` rebuilt).
    pub fn apply(
        &self,
        headers: &[(String, String)],
        vars: &RequestVars,
    ) -> (Vec<(String, String)>, Outcome) {
        let mut outcome = Outcome::default();
        let (mut pseudo, mut regular): (Vec<_>, Vec<_>) = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .partition(|(n, _)| n.starts_with(':'));
        if self.path.is_some() || !self.query.is_empty() {
            if let Some((_, full)) = pseudo.iter_mut().find(|(n, _)| n == ":path") {
                let (path, raw_query) = match full.split_once('?') {
                    Some((p, q)) => (p.to_string(), Some(q.to_string())),
                    None => (full.clone(), None),
                };
                let new_path = self.path.as_ref().and_then(|rewrite| rewrite.apply(&path));
                let (new_query, query_outcome) = self
                    .query
                    .apply_query(raw_query.as_deref().unwrap_or(""), vars);
                outcome.merge(query_outcome);
                if new_path.is_some() || query_outcome.changed {
                    outcome.changed = true;
                    let mut rebuilt = new_path.unwrap_or(path);
                    if !new_query.is_empty() {
                        rebuilt.push('?');
                        rebuilt.push_str(&new_query);
                    }
                    *full = rebuilt;
                }
            }
        }
        for (name, new) in [(":method", &self.method), (":authority", &self.authority)] {
            let Some(new) = new else {
                continue;
            };
            match pseudo.iter_mut().find(|(n, _)| n == name) {
                Some((_, value)) if value == new => {}
                Some((_, value)) => {
                    value.clone_from(new);
                    outcome.changed = true;
                }
                None => {
                    pseudo.push((name.to_string(), new.clone()));
                    outcome.changed = true;
                }
            }
        }
        outcome.merge(self.headers.apply_headers(&mut regular, vars));
        pseudo.extend(regular);
        (pseudo, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Template {
        Template::parse(text).unwrap()
    }

    fn list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn vars() -> RequestVars {
        RequestVars::new(
            &list(&[
                (":path", "/v1/x?q=hello&debug=1"),
                (":method", "GET"),
                (":authority", "h"),
                ("x-jwt-sub", "alice"),
                ("x-bad", "a"),
            ]),
            None,
            None,
        )
    }

    fn names(headers: &[(String, String)]) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn remove_rename_set_add_append() {
        let ops = Ops {
            remove: vec!["x-internal".into()],
            rename: vec![("x-old".into(), "x-new".into())],
            set: vec![("x-user".into(), t("{{header.x-jwt-sub}}"))],
            add: vec![("x-source".into(), t("gateway"))],
            append: vec![("x-trace".into(), t("wasmgate"))],
        };
        let mut headers = list(&[
            ("x-internal", "secret"),
            ("x-old", "1"),
            ("x-old", "2"),
            ("x-new", "0"),
            ("x-user", "mallory"),
            ("x-user", "eve"),
            ("x-trace", "client"),
        ]);
        let outcome = ops.apply_headers(&mut headers, &vars());
        assert_eq!(
            outcome,
            Outcome {
                changed: true,
                skipped: 0
            }
        );
        assert_eq!(
            headers,
            list(&[
                ("x-trace", "client"),
                ("x-new", "1"),
                ("x-new", "2"),
                ("x-user", "alice"),
                ("x-source", "gateway"),
                ("x-trace", "wasmgate"),
            ])
        );
    }

    #[test]
    fn add_only_when_absent() {
        let ops = Ops {
            add: vec![("x-source".into(), t("gateway"))],
            ..Ops::default()
        };
        let mut headers = list(&[("x-source", "client")]);
        assert!(!ops.apply_headers(&mut headers, &vars()).changed);
        assert_eq!(headers, list(&[("x-source", "client")]));
    }

    #[test]
    fn order_is_remove_rename_set_add_append() {
        // remove runs before rename: x-a is gone before it could move to x-b.
        // set runs before add: add sees the value set, so it adds nothing.
        let ops = Ops {
            remove: vec!["x-a".into()],
            rename: vec![("x-a".into(), "x-b".into())],
            set: vec![("x-c".into(), t("set"))],
            add: vec![("x-c".into(), t("added"))],
            append: vec![("x-c".into(), t("appended"))],
        };
        let mut headers = list(&[("x-a", "1")]);
        ops.apply_headers(&mut headers, &vars());
        assert_eq!(headers, list(&[("x-c", "set"), ("x-c", "appended")]));
    }

    #[test]
    fn skipped_when_template_resolves_to_nothing() {
        let ops = Ops {
            set: vec![("x-user".into(), t("{{header.x-missing}}"))],
            add: vec![("x-a".into(), t("id {{query.none}}"))],
            append: vec![("x-b".into(), t("{{route}}"))],
            ..Ops::default()
        };
        let mut headers = list(&[("x-user", "keep")]);
        let outcome = ops.apply_headers(&mut headers, &vars());
        assert_eq!(
            outcome,
            Outcome {
                changed: false,
                skipped: 3
            }
        );
        assert_eq!(headers, list(&[("x-user", "keep")]));
    }

    #[test]
    fn injected_control_characters_are_refused() {
        let v = RequestVars::new(&list(&[(":path", "/?n=a%0D%0Ax-evil:%201")]), None, None);
        let ops = Ops {
            set: vec![("x-n".into(), t("{{query.n}}"))],
            ..Ops::default()
        };
        let mut headers = Vec::new();
        assert_eq!(ops.apply_headers(&mut headers, &v).skipped, 1);
        assert!(headers.is_empty());
        assert!(valid_header_value("a\tb"));
        assert!(!valid_header_value("a\rb"));
    }

    #[test]
    fn set_with_same_value_is_no_change() {
        let ops = Ops {
            set: vec![("x-a".into(), t("1"))],
            ..Ops::default()
        };
        let mut headers = list(&[("x-a", "1")]);
        assert!(!ops.apply_headers(&mut headers, &vars()).changed);
    }

    #[test]
    fn query_operations() {
        let ops = Ops {
            remove: vec!["debug".into()],
            rename: vec![("q".into(), "query".into())],
            set: vec![("v".into(), t("2"))],
            add: vec![("lang".into(), t("en"))],
            append: vec![("tag".into(), t("a b&c"))],
        };
        let (q, outcome) = ops.apply_query("q=hello%20world&debug=1&v=1&v=3&flag&tag=x", &vars());
        assert!(outcome.changed);
        assert_eq!(
            q,
            "flag&tag=x&query=hello%20world&v=2&lang=en&tag=a%20b%26c"
        );
        let (same, outcome) = Ops::default().apply_query("a=%2x&&b", &vars());
        assert_eq!((same.as_str(), outcome.changed), ("a=%2x&&b", false));
        let encoded_name = Ops {
            remove: vec!["a b".into()],
            ..Ops::default()
        };
        assert_eq!(encoded_name.apply_query("a+b=1&c=2", &vars()).0, "c=2");
    }

    #[test]
    fn prefix_rewrite() {
        let rewrite = PathRewrite::Prefix {
            from: "/v1/".into(),
            to: "/api/v1/".into(),
        };
        assert_eq!(rewrite.apply("/v1/users").as_deref(), Some("/api/v1/users"));
        assert_eq!(rewrite.apply("/v2/users"), None);
        let strip = PathRewrite::Prefix {
            from: "/svc".into(),
            to: String::new(),
        };
        assert_eq!(strip.apply("/svc/a").as_deref(), Some("/a"));
        assert_eq!(strip.apply("/svc"), None, "an empty path is not a path");
    }

    #[test]
    fn regex_rewrite() {
        let regex = Regex::new("^/users/([0-9]+)$").unwrap();
        let substitution = parse_substitution("/u/\\1", regex.captures_len()).unwrap();
        let rewrite = PathRewrite::Regex {
            regex,
            substitution,
        };
        assert_eq!(rewrite.apply("/users/42").as_deref(), Some("/u/42"));
        assert_eq!(rewrite.apply("/users/abc"), None);
        let regex = Regex::new("/old/").unwrap();
        let substitution = parse_substitution("/new/", regex.captures_len()).unwrap();
        let first_match = PathRewrite::Regex {
            regex,
            substitution,
        };
        assert_eq!(
            first_match.apply("/a/old/b/old/").as_deref(),
            Some("/a/new/b/old/")
        );
    }

    #[test]
    fn substitutions() {
        assert_eq!(
            parse_substitution("/a\\\\\\1b", 2).unwrap(),
            vec![
                Substitution::Literal("/a\\".into()),
                Substitution::Group(1),
                Substitution::Literal("b".into())
            ]
        );
        assert!(parse_substitution("\\2", 2).is_err());
        assert!(parse_substitution("\\x", 2).is_err());
        assert!(parse_substitution("end\\", 2).is_err());
    }

    /// `edits` applied as the host applies single edits: a remove drops every value of the name
    /// (any case; never a name that is absent), an add appends one value at the end.
    fn with_edits(headers: &[(String, String)], edits: &[Edit]) -> Vec<(String, String)> {
        let mut out = headers.to_vec();
        for edit in edits {
            match edit {
                Edit::Remove(name) => {
                    let before = out.len();
                    out.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                    assert!(out.len() < before, "{name} is removed only when present");
                }
                Edit::Add(name, value) => out.push((name.clone(), value.clone())),
                Edit::Set(..) => panic!("single edits never set: {edit:?}"),
            }
        }
        out.into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect()
    }

    #[test]
    fn single_edits_leave_the_headers_as_the_whole_map_write() {
        let every = Ops {
            remove: vec!["x-internal".into(), "x-absent".into()],
            rename: vec![
                ("x-old".into(), "x-new".into()),
                ("x-none".into(), "x-n".into()),
            ],
            set: vec![
                ("x-same".into(), t("1")),
                ("x-twice".into(), t("1")),
                ("x-user".into(), t("{{header.x-jwt-sub}}")),
                ("x-missing".into(), t("{{header.x-missing}}")),
            ],
            add: vec![
                ("x-source".into(), t("gateway")),
                ("x-user".into(), t("added")),
                ("x-present".into(), t("no")),
                ("x-gone".into(), t("{{query.none}}")),
            ],
            append: vec![
                ("x-trace".into(), t("wasmgate")),
                ("x-user".into(), t("more")),
            ],
        };
        let configs = [
            every,
            Ops {
                remove: vec![
                    "x-remove-1".into(),
                    "x-remove-2".into(),
                    "x-remove-3".into(),
                ],
                add: vec![
                    ("x-add-1".into(), t("one")),
                    ("x-add-2".into(), t("two")),
                    ("x-add-3".into(), t("three")),
                ],
                ..Ops::default()
            },
            Ops {
                rename: vec![("x-a".into(), "x-b".into()), ("x-c".into(), "x-b".into())],
                ..Ops::default()
            },
            Ops {
                remove: vec!["x-a".into(), "x-same".into(), "x-a".into()],
                add: vec![
                    ("x-a".into(), t("new")),
                    ("x-b".into(), t("{{header.x-missing}}")),
                    ("x-c".into(), t("{{header.x-jwt-sub}}")),
                    ("x-new".into(), t("added")),
                ],
                append: vec![("x-a".into(), t("again")), ("x-z".into(), t("z"))],
                ..Ops::default()
            },
            Ops::default(),
        ];
        let requests = [
            list(&[
                (":path", "/"),
                ("x-internal", "secret"),
                ("X-Old", "1"),
                ("x-trace", "client"),
                ("x-old", "2"),
                ("x-new", "0"),
                ("x-same", "1"),
                ("x-twice", "1"),
                ("X-Twice", "1"),
                ("x-user", "mallory"),
                ("x-present", "yes"),
                ("x-remove-2", "drop-me"),
                ("x-a", "a"),
                ("x-b", "b"),
                ("x-c", "c"),
            ]),
            list(&[
                (":path", "/"),
                ("x-remove-1", "drop-me"),
                ("x-remove-3", "drop-me"),
                ("x-add-2", "client"),
            ]),
            list(&[(":path", "/"), ("x-same", "2"), ("x-new", "bad \u{fffd}")]),
            Vec::new(),
        ];
        for ops in &configs {
            for headers in &requests {
                let mut edits = Vec::new();
                let outcome = ops.header_edits(headers, &vars(), &mut edits);
                let mut whole: Vec<(String, String)> = headers
                    .iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                    .collect();
                let expected = ops.apply_headers(&mut whole, &vars());
                assert_eq!(outcome, expected, "{ops:?} on {headers:?}");
                assert_eq!(outcome.changed, !edits.is_empty());
                assert_eq!(with_edits(headers, &edits), whole, "{ops:?} on {headers:?}");
            }
        }
    }

    #[test]
    fn single_edits_of_the_bench_request() {
        let ops = Ops {
            remove: vec!["x-remove-1".into(), "x-remove-2".into()],
            set: vec![("x-user".into(), t("alice"))],
            add: vec![("x-add-1".into(), t("one")), ("x-add-2".into(), t("two"))],
            ..Ops::default()
        };
        let headers = list(&[
            (":path", "/"),
            ("x-remove-1", "drop-me"),
            ("x-user", "mallory"),
            ("x-add-2", "client"),
        ]);
        let mut edits = vec![Edit::Set(":path".into(), "/".into())];
        let outcome = ops.header_edits(&headers, &vars(), &mut edits);
        assert_eq!(
            edits,
            vec![
                Edit::Set(":path".into(), "/".into()),
                Edit::Remove("x-remove-1".into()),
                Edit::Remove("x-user".into()),
                Edit::Add("x-user".into(), "alice".into()),
                Edit::Add("x-add-1".into(), "one".into()),
            ]
        );
        assert_eq!(
            outcome,
            Outcome {
                changed: true,
                skipped: 0
            }
        );
        let mut unchanged = list(&[(":path", "/"), ("x-user", "alice"), ("x-add-1", "1")]);
        unchanged.push(("x-add-2".into(), "2".into()));
        let mut edits = Vec::new();
        let outcome = ops.header_edits(&unchanged, &vars(), &mut edits);
        assert!(edits.is_empty() && !outcome.changed);
        let plain = RequestHeaderOps {
            headers: ops.clone(),
            ..RequestHeaderOps::default()
        };
        assert!(plain.headers_only());
        let with_method = RequestHeaderOps {
            method: Some("POST".into()),
            ..plain
        };
        assert!(!with_method.headers_only());
    }

    #[test]
    fn request_ops_keep_the_query_and_rebuild_path() {
        let ops = RequestHeaderOps {
            path: Some(PathRewrite::Prefix {
                from: "/v1/".into(),
                to: "/api/v1/".into(),
            }),
            query: Ops {
                remove: vec!["debug".into()],
                ..Ops::default()
            },
            headers: Ops {
                add: vec![("x-path".into(), t("{{path}}"))],
                ..Ops::default()
            },
            ..RequestHeaderOps::default()
        };
        let headers = list(&[(":path", "/v1/x?q=hello&debug=1"), (":method", "GET")]);
        let (new, outcome) = ops.apply(&headers, &vars());
        assert!(outcome.changed);
        assert_eq!(
            new,
            list(&[
                (":path", "/api/v1/x?q=hello"),
                (":method", "GET"),
                ("x-path", "/v1/x")
            ])
        );
        let only_path = RequestHeaderOps {
            path: ops.path.clone(),
            ..RequestHeaderOps::default()
        };
        let (new, _) = only_path.apply(&headers, &vars());
        assert_eq!(new[0].1, "/api/v1/x?q=hello&debug=1");
        let (new, outcome) = only_path.apply(&list(&[(":path", "/other?a")]), &vars());
        assert!(!outcome.changed);
        assert_eq!(names(&new), [":path"]);
    }
}
