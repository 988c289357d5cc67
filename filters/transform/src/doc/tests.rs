//! Edits on JSON text: the pointer semantics (set, remove, rename) and what is kept byte for
//! byte around them.

use super::*;
use crate::pointer::Pointer;
use serde_json::json;

fn p(text: &str) -> Vec<String> {
    Pointer::parse(text).unwrap().tokens().to_vec()
}

/// Applies `edit` to `body` and returns the text.
fn edited(body: &str, edit: impl FnOnce(&mut Document<'_>)) -> String {
    let mut doc = Document::parse(body.as_bytes()).unwrap();
    edit(&mut doc);
    String::from_utf8(doc.render().unwrap()).unwrap()
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn an_untouched_or_only_read_document_renders_as_it_was() {
    let body = " {\"a\" : [1, 2.50, {\"b\":null}] ,\n \"c\\u0041\": \"x\\n\", \"n\": 1e400 }\n";
    // 1e400 is beyond an f64: serde_json refuses it.
    assert_eq!(
        Document::parse(body.as_bytes()).unwrap_err(),
        Invalid::Syntax
    );
    let body = " {\"a\" : [1, 2.50, {\"b\":null}] ,\n \"c\\u0041\": \"x\\n\", \"n\": 1E+2 }\n";
    assert_eq!(edited(body, |_| {}), body);
    // Looking into every container (and finding nothing to remove) changes no byte either.
    let opened = edited(body, |doc| {
        assert!(!doc.remove(&p("/a/2/b/x")).unwrap());
        assert!(!doc.remove(&p("/a/5")).unwrap());
        assert!(!doc.set(&p("/a/9"), json!(0)).unwrap());
    });
    assert_eq!(opened, body);
}

#[test]
fn numbers_keep_their_text() {
    let body =
        r#"{"id": 12345678901234567890123, "price": 1.50, "rate": 1e2, "neg": -0.0, "drop": 1}"#;
    let out = edited(body, |doc| {
        assert!(doc.remove(&p("/drop")).unwrap());
    });
    assert_eq!(
        out,
        r#"{"id": 12345678901234567890123, "price": 1.50, "rate": 1e2, "neg": -0.0}"#
    );
    // A moved value keeps its text too.
    let out = edited(body, |doc| {
        assert_eq!(
            doc.rename(&p("/price"), &p("/total")).unwrap(),
            Renamed::Moved
        );
    });
    assert_eq!(
        out,
        r#"{"id": 12345678901234567890123, "rate": 1e2, "neg": -0.0, "drop": 1, "total": 1.50}"#
    );
}

#[test]
fn member_order_and_whitespace_are_kept() {
    let body = "{\n  \"zeta\": 1,\n  \"alpha\": {\"y\": 2, \"x\": 3},\n  \"mid\": \"m\"\n}\n";
    let out = edited(body, |doc| {
        assert!(doc.remove(&p("/alpha/y")).unwrap());
        assert!(doc.set(&p("/mid"), json!("M")).unwrap());
        assert!(doc.set(&p("/new"), json!({"b": 1, "a": [true]})).unwrap());
    });
    assert_eq!(
        out,
        "{\n  \"zeta\": 1,\n  \"alpha\": {\"x\": 3},\n  \"mid\": \"M\",\n  \"new\": {\"a\":[true],\"b\":1}\n}\n"
    );
}

#[test]
fn removals_take_their_separator_along() {
    let body = r#"{ "a": 1, "b": 2, "c": 3 }"#;
    let remove = |pointers: &[&str]| {
        edited(body, |doc| {
            for pointer in pointers {
                assert!(doc.remove(&p(pointer)).unwrap(), "{pointer}");
            }
        })
    };
    assert_eq!(remove(&["/a"]), r#"{ "b": 2, "c": 3 }"#);
    assert_eq!(remove(&["/b"]), r#"{ "a": 1, "c": 3 }"#);
    assert_eq!(remove(&["/c"]), r#"{ "a": 1, "b": 2 }"#);
    assert_eq!(remove(&["/a", "/c"]), r#"{ "b": 2 }"#);
    assert_eq!(remove(&["/a", "/b", "/c"]), r#"{  }"#);
    let list = r#"[1, 2, 3]"#;
    assert_eq!(
        edited(list, |doc| {
            doc.remove(&p("/1")).unwrap();
            doc.remove(&p("/1")).unwrap();
        }),
        "[1]"
    );
    // Removed, then set again: the new member goes at the end.
    let out = edited(body, |doc| {
        doc.remove(&p("/a")).unwrap();
        doc.set(&p("/a"), json!(9)).unwrap();
    });
    assert_eq!(out, r#"{ "b": 2, "c": 3, "a": 9 }"#);
    // Into an emptied or empty container.
    let out = edited(r#"{"a": 1}"#, |doc| {
        doc.remove(&p("/a")).unwrap();
        doc.set(&p("/b"), json!(2)).unwrap();
    });
    assert_eq!(out, r#"{"b": 2}"#);
    assert_eq!(
        edited("{}", |doc| {
            doc.set(&p("/b"), json!("x")).unwrap();
        }),
        r#"{"b":"x"}"#
    );
    assert_eq!(
        edited(" [ ] ", |doc| {
            doc.set(&p("/-"), json!(1)).unwrap();
            doc.set(&p("/-"), json!(2)).unwrap();
        }),
        " [1,2 ] "
    );
}

#[test]
fn escaped_member_names_are_matched_unescaped() {
    // "p\u0061ssword" is "password": a remove must not be dodged by writing the name differently.
    let body = r#"{"user": "bob", "p\u0061ssword": "hunter2", "a\/b": 1}"#;
    let out = edited(body, |doc| {
        assert!(doc.remove(&p("/password")).unwrap());
        assert!(doc.set(&p("/a~1b"), json!(2)).unwrap());
    });
    assert_eq!(out, r#"{"user": "bob", "a\/b": 2}"#);
    // A name the edit writes is escaped by serde_json.
    let out = edited("{}", |doc| {
        doc.set(&p("/q\"uote"), json!("line\nbreak")).unwrap();
    });
    assert_eq!(out, r#"{"q\"uote":"line\nbreak"}"#);
    assert_eq!(value(&out)["q\"uote"], "line\nbreak");
}

#[test]
fn duplicate_names_are_refused_anywhere() {
    for body in [
        r#"{"role": "user", "role": "admin"}"#,
        r#"{"role": "user", "r\u006fle": "admin"}"#,
        r#"{"a": [{"x": 1, "y": 2, "x": 3}]}"#,
        r#"[{}, {"k": {}, "k": {}}]"#,
    ] {
        assert_eq!(
            Document::parse(body.as_bytes()).unwrap_err(),
            Invalid::DuplicateName,
            "{body}"
        );
    }
    // The same name in different objects is not a duplicate.
    assert!(Document::parse(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
}

#[test]
fn invalid_bodies() {
    for body in [
        &b""[..],
        b"  ",
        b"{\"a\": ",
        b"{\"a\": 1,}",
        b"[1] [2]",
        b"{\"a\": \"\xff\"}",
        b"\"\\ud800\"",
        b"{'a': 1}",
    ] {
        assert_eq!(
            Document::parse(body).unwrap_err(),
            Invalid::Syntax,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        Document::parse(deep.as_bytes()).unwrap_err(),
        Invalid::Syntax
    );
    // Scalars are documents too.
    assert!(Document::parse(b" 1.50 ").is_ok());
}

#[test]
fn set_replaces_and_creates_parents() {
    let out = edited(r#"{"user": {"name": "a"}}"#, |doc| {
        doc.set(&p("/user/name"), json!("b")).unwrap();
        doc.set(&p("/meta/source/kind"), json!("gateway")).unwrap();
        doc.set(&p("/meta/source/other"), json!(1)).unwrap();
        doc.set(&p("/n"), json!(1)).unwrap();
    });
    assert_eq!(
        out,
        r#"{"user": {"name": "b"},"meta": {"source":{"kind":"gateway","other":1}},"n": 1}"#
    );
    // A value set as a whole, then reached into by a later edit.
    let out = edited("{}", |doc| {
        doc.set(&p("/m"), json!({"b": [1]})).unwrap();
        doc.set(&p("/m/b/-"), json!(2)).unwrap();
        doc.set(&p("/m/a"), json!(0)).unwrap();
    });
    assert_eq!(out, r#"{"m":{"b":[1,2],"a":0}}"#);
}

#[test]
fn set_with_escaped_tokens() {
    let out = edited("{}", |doc| {
        doc.set(&p("/a~1b/m~0n"), json!(true)).unwrap();
        doc.set(&p("/"), json!(0)).unwrap();
    });
    assert_eq!(value(&out), json!({"a/b": {"m~n": true}, "": 0}));
}

#[test]
fn set_in_arrays() {
    let body = r#"{"items": [{"id": 1}, {"id": 2}]}"#;
    let mut doc = Document::parse(body.as_bytes()).unwrap();
    doc.set(&p("/items/1/id"), json!(20)).unwrap();
    doc.set(&p("/items/0"), json!("first")).unwrap();
    doc.set(&p("/items/-"), json!(3)).unwrap();
    doc.set(&p("/items/3"), json!(4)).unwrap();
    doc.set(&p("/items/-/id"), json!(5)).unwrap();
    let before = doc.render().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&before),
        r#"{"items": ["first", {"id": 20}, 3, 4, {"id":5}]}"#
    );
    for bad in [
        "/items/9",
        "/items/01",
        "/items/x",
        "/items/9/a",
        "/items/0/x",
    ] {
        assert!(!doc.set(&p(bad), json!(0)).unwrap(), "{bad}");
        assert_eq!(
            doc.render().unwrap(),
            before,
            "{bad} left the document unchanged"
        );
    }
}

#[test]
fn set_on_top_level_array_and_scalar() {
    assert_eq!(
        edited("[1]", |doc| {
            doc.set(&p("/0"), json!(2)).unwrap();
        }),
        "[2]"
    );
    let mut scalar = Document::parse(br#""text""#).unwrap();
    assert!(!scalar.set(&p("/a"), json!(1)).unwrap());
    let out = edited(r#"{"a": 5}"#, |doc| {
        assert!(!doc.set(&p("/a/b"), json!(1)).unwrap());
    });
    assert_eq!(out, r#"{"a": 5}"#);
}

#[test]
fn remove_members_and_elements() {
    let body = r#"{"password": "x", "a": {"b~c": 1, "d/e": 2}, "list": [0, 1, 2]}"#;
    let out = edited(body, |doc| {
        for present in ["/password", "/a/b~0c", "/a/d~1e", "/list/1"] {
            assert!(doc.remove(&p(present)).unwrap(), "{present}");
        }
        for absent in ["/password", "/list/5", "/list/-", "/a/x/y", "/list/0/z"] {
            assert!(!doc.remove(&p(absent)).unwrap(), "{absent}");
        }
    });
    assert_eq!(out, r#"{"a": {}, "list": [0, 2]}"#);
}

#[test]
fn rename_moves() {
    let body = r#"{"user_name": "bob", "x": {"y": 1}, "list": ["a", "b"]}"#;
    let out = edited(body, |doc| {
        assert_eq!(
            doc.rename(&p("/user_name"), &p("/username")).unwrap(),
            Renamed::Moved
        );
        assert_eq!(doc.rename(&p("/x/y"), &p("/z/w")).unwrap(), Renamed::Moved);
        assert_eq!(
            doc.rename(&p("/list/0"), &p("/list/-")).unwrap(),
            Renamed::Moved
        );
        assert_eq!(
            doc.rename(&p("/missing"), &p("/other")).unwrap(),
            Renamed::Absent
        );
    });
    assert_eq!(
        out,
        r#"{"x": {}, "list": ["b", "a"], "username": "bob", "z": {"w":1}}"#
    );
}

#[test]
fn blocked_rename_restores_the_value_in_place() {
    let body = r#"{"list": ["a", "b", "c"], "s": 1}"#;
    let out = edited(body, |doc| {
        assert_eq!(
            doc.rename(&p("/list/1"), &p("/s/t")).unwrap(),
            Renamed::Blocked
        );
        assert_eq!(
            doc.rename(&p("/s"), &p("/list/7")).unwrap(),
            Renamed::Blocked
        );
    });
    assert_eq!(out, body);
}

#[test]
fn nested_edits_leave_their_neighbours_alone() {
    let body = "{\"order\": {\"id\": 12345678901234567890123, \"lines\": [{\"sku\": \"A\", \"price\": 1.50, \"secret\": true}, {\"sku\": \"B\", \"price\": 2.00}]},\n \"sig\": \"abc\"}";
    let out = edited(body, |doc| {
        assert!(doc.remove(&p("/order/lines/0/secret")).unwrap());
        assert!(doc.set(&p("/order/lines/1/qty"), json!(3)).unwrap());
    });
    assert_eq!(
        out,
        "{\"order\": {\"id\": 12345678901234567890123, \"lines\": [{\"sku\": \"A\", \"price\": 1.50}, {\"sku\": \"B\", \"price\": 2.00, \"qty\": 3}]},\n \"sig\": \"abc\"}"
    );
}
