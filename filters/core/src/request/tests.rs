use super::*;

fn info(path: &str, headers: &[(&str, &str)]) -> RequestInfo {
    let mut all = vec![(":path".to_string(), path.to_string())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RequestInfo::new(None, "API.Example.com:8443", path, "GET", all)
}

#[test]
fn host_and_path_are_normalised() {
    let r = info("/v1/users?id=1#top", &[]);
    assert_eq!(r.host, "api.example.com");
    assert_eq!(r.path, "/v1/users");
    assert_eq!(
        RequestInfo::new(None, "[::1]:80", "/", "GET", vec![]).host,
        "::1"
    );
    assert_eq!(
        RequestInfo::new(Some(String::new()), "h", "/", "GET", vec![]).route,
        None
    );
}

#[test]
fn headers_first_value_and_all_values() {
    let r = info("/", &[("x-a", "1"), ("X-A", "2")]);
    assert_eq!(r.header("x-a"), Some("1"));
    assert_eq!(r.header_values("X-A").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(r.header("x-missing"), None);
}

#[test]
fn query_values_are_raw() {
    let r = info("/p?a=1%202&b&a=3#frag", &[]);
    assert_eq!(r.raw_query(), "a=1%202&b&a=3");
    assert_eq!(r.query_raw("a"), Some("1%202"));
    assert_eq!(r.query_raw("b"), Some(""));
    assert_eq!(r.query_raw("c"), None);
    assert_eq!(
        info("/p#a=1?x=2", &[]).query_raw("x"),
        None,
        "a fragment holds no query"
    );
}

#[test]
fn client_ip_from_source_and_trusted_hops() {
    let r = info(
        "/",
        &[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ],
    );
    assert_eq!(
        r.client_ip(Some("10.0.0.1:5"), 0).as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        r.client_ip(Some("10.0.0.1:5"), 1).as_deref(),
        Some("3.3.3.3")
    );
    assert_eq!(r.client_ip(None, 3).as_deref(), Some("1.1.1.1"));
    assert_eq!(r.client_ip(None, 4), None, "fewer entries than hops");
    assert_eq!(r.client_ip(None, 0), None);
}

#[test]
fn ports_are_stripped_the_same_way_everywhere() {
    assert_eq!(strip_port("1.2.3.4:80"), "1.2.3.4");
    assert_eq!(strip_port("[::1]:80"), "::1");
    assert_eq!(strip_port("[::1]"), "::1");
    assert_eq!(strip_port("::1"), "::1");
    assert_eq!(strip_port("example.com:443"), "example.com");
    assert_eq!(strip_port("example.com"), "example.com");
}

#[test]
fn query_values_decoded_once_for_everyone() {
    let r = info("/p?na%6De=J%C3%BCrgen+X%2b&bad=%zz%4&e=100%", &[]);
    assert_eq!(r.query_decoded("name").as_deref(), Some("Jürgen X+"));
    assert_eq!(r.query_raw("name"), None, "raw names are compared as sent");
    assert_eq!(r.query_decoded("bad").as_deref(), Some("%zz%4"));
    assert_eq!(r.query_decoded("e").as_deref(), Some("100%"));
    assert_eq!(decode_component("%ff"), "\u{fffd}");
}
