//! Header edits a filter asks for; the frame applies them once, after the hook returns.

/// One change to a header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replaces every value of a header with one value (adds it when absent).
    Set(String, String),
    /// Removes every value of a header.
    Remove(String),
    /// Adds one more value, keeping the others.
    Add(String, String),
}

/// A header list: lowercase names and their values, in order.
pub type Headers = Vec<(String, String)>;

/// The edits to one header map (request or response) collected during one hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// The whole map replaced (`old`, `new`): written in one host call.
    pub replace: Option<(Headers, Headers)>,
    /// Single edits, applied in order after a replacement.
    pub edits: Vec<Edit>,
}

impl HeaderEdits {
    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.edits.push(Edit::Set(name.into(), value.into()));
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: impl Into<String>) {
        self.edits.push(Edit::Remove(name.into()));
    }

    /// Adds one value of `name`.
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.edits.push(Edit::Add(name.into(), value.into()));
    }

    /// Replaces the whole map, as read (`old`), with `new`.
    pub fn replace_all(&mut self, old: Headers, new: Headers) {
        self.replace = Some((old, new));
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.replace.is_none() && self.edits.is_empty()
    }
}

/// The header edits that turn `old` into `new`: for each name whose values differ, its new
/// values (empty: remove the header). Names in first-seen order.
pub fn diff(old: &[(String, String)], new: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let values = |list: &[(String, String)], name: &str| -> Vec<String> {
        list.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut names: Vec<String> = Vec::new();
    for (name, _) in old.iter().chain(new) {
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let after = values(new, &name);
            (values(old, &name) != after).then_some((name, after))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn diff_lists_changed_names_only() {
        let old = list(&[(":path", "/a"), ("x-a", "1"), ("x-b", "1"), ("x-b", "2")]);
        let new = list(&[(":path", "/b"), ("x-b", "1"), ("x-b", "2"), ("x-c", "3")]);
        assert_eq!(
            diff(&old, &new),
            vec![
                (":path".to_string(), vec!["/b".to_string()]),
                ("x-a".to_string(), vec![]),
                ("x-c".to_string(), vec!["3".to_string()]),
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn edits_collect_in_order() {
        let mut edits = HeaderEdits::default();
        assert!(edits.is_empty());
        edits.set("a", "1");
        edits.remove("b");
        edits.add("c", "2");
        assert_eq!(
            edits.edits,
            vec![
                Edit::Set("a".into(), "1".into()),
                Edit::Remove("b".into()),
                Edit::Add("c".into(), "2".into())
            ]
        );
    }
}
