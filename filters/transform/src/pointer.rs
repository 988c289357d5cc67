//! JSON Pointer (RFC 6901) edits on a `serde_json::Value`: set (creating missing parents),
//! remove and rename (move). No edit ever panics; an edit that cannot apply leaves the document
//! untouched and says so.

use serde_json::{Map, Value};

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
fn index(token: &str) -> Option<usize> {
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
fn array_slot(token: &str, len: usize) -> Option<usize> {
    if token == "-" {
        Some(len)
    } else {
        index(token)
    }
}

/// Whether [`set`] can apply without touching anything it must not (a scalar in the way, an
/// array index beyond the end).
fn can_set(doc: &Value, tokens: &[String]) -> bool {
    let mut current = doc;
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        match current {
            Value::Object(map) => match map.get(token) {
                Some(next) if !last => current = next,
                // Replacing the member, or creating it and any parents below it.
                _ => return true,
            },
            Value::Array(items) => {
                let Some(slot) = array_slot(token, items.len()) else {
                    return false;
                };
                match items.get(slot) {
                    Some(next) if !last => current = next,
                    Some(_) => return true,
                    // Appending at the end (the last token) or a new parent object there.
                    None => return slot == items.len(),
                }
            }
            _ => return false,
        }
    }
    true
}

/// Sets the value at `pointer`: replaces it, or creates it and missing parent objects. In an
/// array, an index replaces that element and `-` or the length appends. Returns the value back
/// when it cannot apply (a scalar in the way, an index past the end), leaving `doc` unchanged.
pub fn set(doc: &mut Value, pointer: &Pointer, value: Value) -> Result<(), Value> {
    if !can_set(doc, &pointer.tokens) {
        return Err(value);
    }
    set_checked(doc, &pointer.tokens, value);
    Ok(())
}

fn set_checked(current: &mut Value, tokens: &[String], value: Value) {
    let Some((token, rest)) = tokens.split_first() else {
        *current = value;
        return;
    };
    match current {
        Value::Object(map) => {
            if rest.is_empty() {
                map.insert(token.clone(), value);
            } else {
                let child = map
                    .entry(token.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                set_checked(child, rest, value);
            }
        }
        Value::Array(items) => {
            let Some(slot) = array_slot(token, items.len()) else {
                return;
            };
            if slot >= items.len() {
                items.push(if rest.is_empty() {
                    value
                } else {
                    let mut child = Value::Object(Map::new());
                    set_checked(&mut child, rest, value);
                    child
                });
            } else if let Some(child) = items.get_mut(slot) {
                set_checked(child, rest, value);
            }
        }
        // can_set ruled this out.
        _ => {}
    }
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut current = doc;
    for token in tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => items.get_mut(index(token)?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Removes and returns the value at `pointer` (array elements after it shift down); `None`
/// when there is nothing there.
pub fn remove(doc: &mut Value, pointer: &Pointer) -> Option<Value> {
    let (last, parents) = pointer.tokens.split_last()?;
    match parent_mut(doc, parents)? {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => {
            let i = index(last)?;
            (i < items.len()).then(|| items.remove(i))
        }
        _ => None,
    }
}

/// Puts a value back where [`remove`] took it from.
fn reinsert(doc: &mut Value, pointer: &Pointer, value: Value) {
    let Some((last, parents)) = pointer.tokens.split_last() else {
        return;
    };
    match parent_mut(doc, parents) {
        Some(Value::Object(map)) => {
            map.insert(last.clone(), value);
        }
        Some(Value::Array(items)) => {
            if let Some(i) = index(last).filter(|i| *i <= items.len()) {
                items.insert(i, value);
            }
        }
        _ => {}
    }
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

/// Moves the value at `from` to `to` (RFC 6902 "move" semantics: remove, then set).
pub fn rename(doc: &mut Value, from: &Pointer, to: &Pointer) -> Renamed {
    let Some(value) = remove(doc, from) else {
        return Renamed::Absent;
    };
    match set(doc, to, value) {
        Ok(()) => Renamed::Moved,
        Err(value) => {
            reinsert(doc, from, value);
            Renamed::Blocked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    #[test]
    fn parse_and_escapes() {
        assert_eq!(p("/a~1b/c~0d/~01").tokens, ["a/b", "c~d", "~1"]);
        assert_eq!(p("/").tokens, [""]);
        assert_eq!(p("/a//b").tokens, ["a", "", "b"]);
        for bad in ["", "a/b", "/a~2", "/a~", "/~x"] {
            assert!(Pointer::parse(bad).is_err(), "{bad}");
        }
        assert!(p("/a/b").starts_with(&p("/a")));
        assert!(!p("/ab").starts_with(&p("/a")));
    }

    #[test]
    fn set_replaces_and_creates_parents() {
        let mut doc = json!({"user": {"name": "a"}});
        set(&mut doc, &p("/user/name"), json!("b")).unwrap();
        set(&mut doc, &p("/meta/source/kind"), json!("gateway")).unwrap();
        set(&mut doc, &p("/n"), json!(1)).unwrap();
        assert_eq!(
            doc,
            json!({"user": {"name": "b"}, "meta": {"source": {"kind": "gateway"}}, "n": 1})
        );
    }

    #[test]
    fn set_with_escaped_tokens() {
        let mut doc = json!({});
        set(&mut doc, &p("/a~1b/m~0n"), json!(true)).unwrap();
        assert_eq!(doc, json!({"a/b": {"m~n": true}}));
        set(&mut doc, &p("/"), json!(0)).unwrap();
        assert_eq!(doc[""], json!(0));
    }

    #[test]
    fn set_in_arrays() {
        let mut doc = json!({"items": [{"id": 1}, {"id": 2}]});
        set(&mut doc, &p("/items/1/id"), json!(20)).unwrap();
        set(&mut doc, &p("/items/0"), json!("first")).unwrap();
        set(&mut doc, &p("/items/-"), json!(3)).unwrap();
        set(&mut doc, &p("/items/3"), json!(4)).unwrap();
        set(&mut doc, &p("/items/-/id"), json!(5)).unwrap();
        assert_eq!(
            doc,
            json!({"items": ["first", {"id": 20}, 3, 4, {"id": 5}]})
        );
        let before = doc.clone();
        for bad in [
            "/items/9",
            "/items/01",
            "/items/x",
            "/items/9/a",
            "/items/0/x",
        ] {
            assert_eq!(set(&mut doc, &p(bad), json!(0)), Err(json!(0)), "{bad}");
            assert_eq!(doc, before, "{bad} left the document unchanged");
        }
    }

    #[test]
    fn set_on_top_level_array_and_scalar() {
        let mut doc = json!([1]);
        set(&mut doc, &p("/0"), json!(2)).unwrap();
        assert_eq!(doc, json!([2]));
        let mut scalar = json!("text");
        assert!(set(&mut scalar, &p("/a"), json!(1)).is_err());
        let mut doc = json!({"a": 5});
        assert!(set(&mut doc, &p("/a/b"), json!(1)).is_err());
        assert_eq!(doc, json!({"a": 5}));
    }

    #[test]
    fn remove_members_and_elements() {
        let mut doc = json!({"password": "x", "a": {"b~c": 1, "d/e": 2}, "list": [0, 1, 2]});
        assert_eq!(remove(&mut doc, &p("/password")), Some(json!("x")));
        assert_eq!(remove(&mut doc, &p("/a/b~0c")), Some(json!(1)));
        assert_eq!(remove(&mut doc, &p("/a/d~1e")), Some(json!(2)));
        assert_eq!(remove(&mut doc, &p("/list/1")), Some(json!(1)));
        assert_eq!(doc, json!({"a": {}, "list": [0, 2]}));
        for absent in ["/password", "/list/5", "/list/-", "/a/x/y", "/list/0/z"] {
            assert_eq!(remove(&mut doc, &p(absent)), None, "{absent}");
        }
        assert_eq!(doc, json!({"a": {}, "list": [0, 2]}));
    }

    #[test]
    fn rename_moves() {
        let mut doc = json!({"user_name": "bob", "x": {"y": 1}, "list": ["a", "b"]});
        assert_eq!(
            rename(&mut doc, &p("/user_name"), &p("/username")),
            Renamed::Moved
        );
        assert_eq!(rename(&mut doc, &p("/x/y"), &p("/z/w")), Renamed::Moved);
        assert_eq!(
            rename(&mut doc, &p("/list/0"), &p("/list/-")),
            Renamed::Moved
        );
        assert_eq!(
            rename(&mut doc, &p("/missing"), &p("/other")),
            Renamed::Absent
        );
        assert_eq!(
            doc,
            json!({"username": "bob", "x": {}, "z": {"w": 1}, "list": ["b", "a"]})
        );
    }

    #[test]
    fn blocked_rename_restores_the_value() {
        let mut doc = json!({"list": ["a", "b", "c"], "s": 1});
        let before = doc.clone();
        assert_eq!(
            rename(&mut doc, &p("/list/1"), &p("/s/t")),
            Renamed::Blocked
        );
        assert_eq!(doc, before);
        assert_eq!(rename(&mut doc, &p("/s"), &p("/list/7")), Renamed::Blocked);
        assert_eq!(doc, before);
    }
}
