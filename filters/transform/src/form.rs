//! `application/x-www-form-urlencoded` bodies edited in place: the body is split at `&` into
//! fields that keep their exact bytes, names are compared after percent-decoding (`+` is a
//! space, as in the query), and only the fields an edit names change. Splitting and decoding are
//! the query string's ([`crate::query`], `wasmgate_core::request::decode_component`).

use crate::ops::Outcome;
use crate::query;
use crate::template::{HostFacts, RequestVars, Template};

/// Why a form body cannot be edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidForm {
    /// The body is not UTF-8 (a form is ASCII once percent-encoded).
    NotUtf8,
    /// A field copied into a header appears more than once: which one the upstream reads is
    /// its choice, so the body is not forwarded with one of them in a header.
    Repeated,
}

/// A value `set` writes: fixed text or a template (skipped when it resolves to nothing).
pub type FormValue = Template;

/// The form edits of one direction, applied in the order remove, rename, set.
#[derive(Debug, Clone, Default)]
pub struct FormEdits {
    /// Field names removed (every occurrence).
    pub remove: Vec<String>,
    /// `(old, new)`: every `old` field is renamed in place; `new` fields that were there go.
    pub rename: Vec<(String, String)>,
    /// `(name, value)`: the first occurrence gets the value, the others go; appended when absent.
    pub set: Vec<(String, FormValue)>,
    /// `(field, header)`: the decoded value of the field, copied into a request header.
    pub to_headers: Vec<(String, String)>,
}

/// One field of the body: its text as sent and its decoded name.
struct Field<'a> {
    raw: &'a str,
    name: String,
    /// Written instead of `raw` (a set value or a renamed field); `None` keeps the bytes.
    new: Option<String>,
}

impl FormEdits {
    /// The host facts the set templates read.
    pub fn host_facts(&self) -> HostFacts {
        HostFacts::of(self.set.iter().map(|(_, t)| t))
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.to_headers.is_empty()
    }

    /// Reads the `to_headers` values (from the body as it arrived) and edits the body.
    /// `Ok((None, ..))`: the body passes as it is. The header list holds `(header, value)`
    /// for each field present once; absent fields are left out (and counted as skipped).
    #[allow(clippy::type_complexity)]
    pub fn apply(
        &self,
        body: &[u8],
        vars: &RequestVars,
    ) -> Result<(Option<Vec<u8>>, Outcome, Vec<(String, String)>), InvalidForm> {
        let text = std::str::from_utf8(body).map_err(|_| InvalidForm::NotUtf8)?;
        let mut fields: Vec<Field<'_>> = text
            .split('&')
            .map(|raw| Field {
                raw,
                name: query::decode(raw.split_once('=').map_or(raw, |(name, _)| name)),
                new: None,
            })
            .collect();
        let mut outcome = Outcome::default();
        let mut headers = Vec::new();
        for (field, header) in &self.to_headers {
            let mut values = fields.iter().filter(|f| &f.name == field);
            let Some(first) = values.next() else {
                outcome.skipped += 1;
                continue;
            };
            if values.next().is_some() {
                return Err(InvalidForm::Repeated);
            }
            let value = first.raw.split_once('=').map_or("", |(_, value)| value);
            headers.push((header.clone(), query::decode(value)));
        }
        let before = fields.len();
        for name in &self.remove {
            fields.retain(|f| &f.name != name);
        }
        outcome.changed |= fields.len() != before;
        for (old, new) in &self.rename {
            if !fields.iter().any(|f| &f.name == old) {
                continue;
            }
            fields.retain(|f| &f.name != new);
            for f in fields.iter_mut().filter(|f| &f.name == old) {
                let value = f.raw.split_once('=').map(|(_, value)| value);
                let mut renamed = query::encode(new);
                if let Some(value) = value {
                    renamed.push('=');
                    renamed.push_str(value);
                }
                f.name.clone_from(new);
                f.new = Some(renamed);
            }
            outcome.changed = true;
        }
        for (name, template) in &self.set {
            let Some(value) = template.render(vars) else {
                outcome.skipped += 1;
                continue;
            };
            let pair = format!("{}={}", query::encode(name), query::encode(&value));
            let mut first = true;
            let mut changed = false;
            fields.retain_mut(|f| {
                if &f.name != name {
                    return true;
                }
                if !first {
                    changed = true;
                    return false;
                }
                first = false;
                if f.new.as_deref().unwrap_or(f.raw) != pair {
                    f.new = Some(pair.clone());
                    changed = true;
                }
                true
            });
            if first {
                fields.push(Field {
                    raw: "",
                    name: name.clone(),
                    new: Some(pair),
                });
                changed = true;
            }
            outcome.changed |= changed;
        }
        if !outcome.changed {
            return Ok((None, outcome, headers));
        }
        let mut out = String::with_capacity(text.len() + 32);
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(field.new.as_deref().unwrap_or(field.raw));
        }
        let bytes = out.into_bytes();
        outcome.changed = bytes != body;
        Ok((outcome.changed.then_some(bytes), outcome, headers))
    }
}

/// A form media type: `application/x-www-form-urlencoded`, compared case-insensitively,
/// parameters ignored.
pub fn is_form(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

#[cfg(test)]
mod tests;
