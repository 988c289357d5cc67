//! Where keys are found, and the ways a client could try to present two keys at once or make
//! the filter and the upstream read different ones.

use super::*;

const KEY: &str = "k3y-0123456789abcdef";

fn sources() -> Vec<Source> {
    vec![
        Source::Header {
            name: "x-api-key".into(),
            prefix: None,
        },
        Source::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        },
        Source::Query("api_key".into()),
        Source::Cookie("api_key".into()),
    ]
}

fn request(path: &str, headers: &[(&str, &str)]) -> RequestInfo {
    let mut all = vec![(":path".to_string(), path.to_string())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RequestInfo::new(None, "api.example.com", path, "GET", all)
}

fn found(key: &str, sources: &[usize]) -> Presented {
    Presented::Key {
        key: key.into(),
        sources: sources.to_vec(),
    }
}

#[test]
fn each_source() {
    let s = sources();
    assert_eq!(
        presented(&s, &request("/", &[("x-api-key", KEY)])),
        found(KEY, &[0])
    );
    let bearer = format!("Bearer {KEY}");
    assert_eq!(
        presented(&s, &request("/", &[("authorization", &bearer)])),
        found(KEY, &[1])
    );
    let query = format!("/orders?page=2&api_key={KEY}");
    assert_eq!(presented(&s, &request(&query, &[])), found(KEY, &[2]));
    let cookie = format!("theme=dark; api_key={KEY}");
    assert_eq!(
        presented(&s, &request("/", &[("cookie", &cookie)])),
        found(KEY, &[3])
    );
    assert_eq!(presented(&s, &request("/", &[])), Presented::Missing);
}

#[test]
fn the_auth_scheme_is_case_insensitive_and_other_schemes_are_not_keys() {
    let s = sources();
    let lower = format!("bearer {KEY}");
    assert_eq!(
        presented(&s, &request("/", &[("authorization", &lower)])),
        found(KEY, &[1])
    );
    let basic = "Basic dXNlcjpwYXNz";
    assert_eq!(
        presented(&s, &request("/", &[("authorization", basic)])),
        Presented::Missing
    );
    assert_eq!(
        presented(&s, &request("/", &[("authorization", "Bearer")])),
        Presented::Missing
    );
}

#[test]
fn an_empty_value_is_a_key_not_a_missing_one() {
    let s = sources();
    assert_eq!(
        presented(&s, &request("/", &[("x-api-key", "")])),
        found("", &[0])
    );
    assert_eq!(presented(&s, &request("/?api_key=", &[])), found("", &[2]));
}

#[test]
fn two_different_keys_are_ambiguous() {
    let s = sources();
    let other = "other-0123456789abcd";
    let bearer = format!("Bearer {other}");
    let cases: Vec<RequestInfo> = vec![
        request("/", &[("x-api-key", KEY), ("authorization", &bearer)]),
        request("/", &[("x-api-key", KEY), ("x-api-key", other)]),
        request(&format!("/?api_key={KEY}&api_key={other}"), &[]),
        request(&format!("/?api_key={other}"), &[("x-api-key", KEY)]),
        request(
            "/",
            &[("cookie", &format!("api_key={KEY}; api_key={other}"))],
        ),
        request(
            "/",
            &[
                ("cookie", &format!("api_key={KEY}")),
                ("cookie", &format!("api_key={other}")),
            ],
        ),
        // An encoded parameter name is the same parameter to the upstream.
        request(&format!("/?api_key={KEY}&api%5Fkey={other}"), &[]),
        request("/", &[("x-api-key", KEY), ("x-api-key", "")]),
    ];
    for request in cases {
        assert_eq!(
            presented(&s, &request),
            Presented::Ambiguous,
            "{:?}",
            request.headers
        );
    }
}

#[test]
fn the_same_key_twice_is_one_key_in_every_place() {
    let s = sources();
    let path = format!("/?api_key={KEY}");
    let r = request(&path, &[("x-api-key", KEY), ("x-api-key", KEY)]);
    assert_eq!(presented(&s, &r), found(KEY, &[0, 2]));
}

#[test]
fn query_values_are_decoded_and_cookie_quotes_removed() {
    let s = sources();
    assert_eq!(
        presented(&s, &request("/?api%5Fkey=a%2Bb%3D", &[])),
        found("a+b=", &[2])
    );
    let r = request("/", &[("cookie", "api_key=\"quoted-key\"")]);
    assert_eq!(presented(&s, &r), found("quoted-key", &[3]));
    // A cookie whose name only ends like ours is another cookie.
    let r = request("/", &[("cookie", "xapi_key=nope; my_api_key=nope")]);
    assert_eq!(presented(&s, &r), Presented::Missing);
}

#[test]
fn hiding_removes_only_the_key() {
    let s = sources();
    let bearer = format!("Bearer {KEY}");
    let path = format!("/orders?page=2&api_key={KEY}&sort=asc");
    let cookie = format!("theme=dark; api_key={KEY}; lang=en");
    let r = request(
        &path,
        &[
            ("x-api-key", KEY),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("authorization", &bearer),
            ("cookie", &cookie),
        ],
    );
    let mut edits = HeaderEdits::default();
    hide(&s, &[0, 1, 2, 3], KEY, &r, &mut edits);
    let mut expected = HeaderEdits::default();
    expected.remove("x-api-key");
    expected.remove("authorization");
    expected.add("authorization", "Basic dXNlcjpwYXNz");
    expected.set(":path", "/orders?page=2&sort=asc");
    expected.set("cookie", "theme=dark; lang=en");
    assert_eq!(edits, expected);
}

#[test]
fn hiding_the_only_parameter_or_cookie_leaves_none() {
    let s = sources();
    let path = format!("/orders?api_key={KEY}");
    let cookie = format!("api_key={KEY}");
    let r = request(&path, &[("cookie", &cookie)]);
    let mut edits = HeaderEdits::default();
    hide(&s, &[2, 3], KEY, &r, &mut edits);
    let mut expected = HeaderEdits::default();
    expected.set(":path", "/orders");
    expected.remove("cookie");
    assert_eq!(edits, expected);
}

#[test]
fn kept_values_that_were_not_utf8_go_with_the_key() {
    let s = sources();
    let bearer = format!("Bearer {KEY}");
    let cookie = format!("a=caf\u{FFFD}; api_key={KEY}; b=ok");
    let r = request(
        "/",
        &[
            ("authorization", "Basic caf\u{FFFD}"),
            ("authorization", &bearer),
            ("cookie", &cookie),
        ],
    );
    let mut edits = HeaderEdits::default();
    hide(&s, &[1, 3], KEY, &r, &mut edits);
    let mut expected = HeaderEdits::default();
    expected.remove("authorization");
    expected.set("cookie", "b=ok");
    assert_eq!(edits, expected);
}
