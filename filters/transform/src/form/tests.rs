//! Form edits: only the fields an edit names change, names compared decoded, repeated fields.

use super::*;

fn t(text: &str) -> Template {
    Template::parse(text).unwrap()
}

fn vars() -> RequestVars {
    RequestVars::new(
        &[("x-jwt-sub".to_string(), "alice".to_string())],
        None,
        None,
    )
}

fn edits() -> FormEdits {
    FormEdits {
        remove: vec!["password".into()],
        rename: vec![("user_name".into(), "username".into())],
        set: vec![
            ("source".into(), t("gateway")),
            ("sub".into(), t("{{header.x-jwt-sub}}")),
            ("none".into(), t("{{header.nope}}")),
        ],
        to_headers: vec![("team_id".into(), "x-team".into())],
    }
}

fn apply(edits: &FormEdits, body: &str) -> (Option<String>, Outcome, Vec<(String, String)>) {
    let (new, outcome, headers) = edits.apply(body.as_bytes(), &vars()).unwrap();
    (new.map(|b| String::from_utf8(b).unwrap()), outcome, headers)
}

#[test]
fn edits_keep_every_byte_they_do_not_name() {
    let body = "token=xoxb%2D1&user_name=bob&password=hunter2&text=a+b%21&&flag&team_id=T%2042";
    let (new, outcome, headers) = apply(&edits(), body);
    assert_eq!(
        new.as_deref(),
        Some(
            "token=xoxb%2D1&username=bob&text=a+b%21&&flag&team_id=T%2042&source=gateway&sub=alice"
        )
    );
    assert_eq!(outcome.skipped, 1, "the template that resolves to nothing");
    assert_eq!(headers, [("x-team".to_string(), "T 42".to_string())]);
}

#[test]
fn names_are_compared_decoded_so_an_encoding_does_not_hide_a_field() {
    for body in [
        "pass%77ord=x&a=1",
        "%70assword=x&a=1",
        "password=x&a=1&password=y",
        "pass%77ord&a=1",
    ] {
        let only_remove = FormEdits {
            remove: vec!["password".into()],
            ..FormEdits::default()
        };
        let (new, _, _) = apply(&only_remove, body);
        assert_eq!(new.as_deref(), Some("a=1"), "{body}");
    }
    // `+` is a space in a name too.
    let remove_spaced = FormEdits {
        remove: vec!["a b".into()],
        ..FormEdits::default()
    };
    assert_eq!(apply(&remove_spaced, "a+b=1&c=2").0.as_deref(), Some("c=2"));
}

#[test]
fn set_replaces_every_occurrence_with_one() {
    let set = FormEdits {
        set: vec![("role".into(), t("user"))],
        ..FormEdits::default()
    };
    let (new, _, _) = apply(&set, "role=admin&x=1&role=root");
    assert_eq!(new.as_deref(), Some("role=user&x=1"));
    let (new, outcome, _) = apply(&set, "role=user&x=1");
    assert_eq!(
        (new, outcome.changed),
        (None, false),
        "same value: no change"
    );
    // Values written are percent-encoded.
    let set = FormEdits {
        set: vec![("q".into(), t("a&b=c d"))],
        ..FormEdits::default()
    };
    assert_eq!(apply(&set, "x=1").0.as_deref(), Some("x=1&q=a%26b%3Dc%20d"));
}

#[test]
fn rename_replaces_the_destination() {
    let rename = FormEdits {
        rename: vec![("old".into(), "new".into())],
        ..FormEdits::default()
    };
    let (new, _, _) = apply(&rename, "new=forged&old=1&old=2");
    assert_eq!(new.as_deref(), Some("new=1&new=2"));
    assert_eq!(apply(&rename, "a=1").0, None, "absent: nothing happens");
}

#[test]
fn a_repeated_field_copied_into_a_header_is_refused() {
    let copy = FormEdits {
        to_headers: vec![("tenant".into(), "x-tenant".into())],
        ..FormEdits::default()
    };
    for body in [
        "tenant=a&tenant=b",
        "tenant=a&t%65nant=b",
        "tenant=a&tenant",
    ] {
        assert_eq!(
            copy.apply(body.as_bytes(), &vars()).unwrap_err(),
            InvalidForm::Repeated,
            "{body}"
        );
    }
    let (_, _, headers) = apply(&copy, "other=1");
    assert!(headers.is_empty(), "absent: no header");
    // The decoded value is what the header gets; its safety is checked by the filter.
    let (_, _, headers) = apply(&copy, "tenant=a%0D%0Ax-admin%3A%201");
    assert_eq!(headers[0].1, "a\r\nx-admin: 1");
}

#[test]
fn not_utf8_is_invalid() {
    assert_eq!(
        edits().apply(b"a=\xff", &vars()).unwrap_err(),
        InvalidForm::NotUtf8
    );
}

#[test]
fn form_media_type() {
    assert!(is_form("application/x-www-form-urlencoded"));
    assert!(is_form("Application/X-WWW-Form-Urlencoded; charset=UTF-8"));
    assert!(!is_form("multipart/form-data; boundary=x"));
    assert!(!is_form("application/x-www-form-urlencodedx"));
}
