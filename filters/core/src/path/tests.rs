use super::*;

fn normal(path: &str) -> Result<String, Ambiguity> {
    normalize(path, false).map(Cow::into_owned)
}

#[test]
fn normal_paths_stay_borrowed() {
    for path in ["/", "/a", "/a/b/", "/a%20b", "/caf%C3%A9", "/a;b=c"] {
        assert!(
            matches!(normalize(path, false), Ok(Cow::Borrowed(_))),
            "{path}"
        );
    }
}

#[test]
fn dot_segments_and_slashes() {
    assert_eq!(normal("/health/../admin").unwrap(), "/admin");
    assert_eq!(normal("/./admin").unwrap(), "/admin");
    assert_eq!(
        normal("/a/b/../../../c").unwrap(),
        "/c",
        "never above the root"
    );
    assert_eq!(normal("//admin///x").unwrap(), "/admin/x");
    assert_eq!(normal("/a/.").unwrap(), "/a");
    assert_eq!(normal("/a/b/").unwrap(), "/a/b/");
    assert_eq!(normal("").unwrap(), "/");
    assert_eq!(normal("/..").unwrap(), "/");
}

#[test]
fn unreserved_escapes_are_decoded_and_others_kept_upper_case() {
    assert_eq!(normal("/health/%2e%2e/admin").unwrap(), "/admin");
    assert_eq!(normal("/%2E/admin").unwrap(), "/admin");
    assert_eq!(normal("/%61dmin").unwrap(), "/admin");
    assert_eq!(normal("/a%2fb"), Err(Ambiguity::EncodedSlash));
    assert_eq!(normal("/a%5cb"), Err(Ambiguity::EncodedSlash));
    assert_eq!(normalize("/a%2fb", true).unwrap(), "/a%2Fb");
    assert_eq!(normal("/a%20b%3f").unwrap(), "/a%20b%3F");
}

#[test]
fn ambiguous_paths_are_refused() {
    assert_eq!(normal("/health\\..\\admin"), Err(Ambiguity::Backslash));
    assert_eq!(normal("/public/..;/admin"), Err(Ambiguity::DotParameters));
    assert_eq!(normal("/public/.;x/admin"), Err(Ambiguity::DotParameters));
    assert_eq!(
        normal("/public/%2e%2e;/admin"),
        Err(Ambiguity::DotParameters)
    );
    assert_eq!(normal("/a%zz"), Err(Ambiguity::BadEscape));
    assert_eq!(normal("/a%2"), Err(Ambiguity::BadEscape));
}

#[test]
fn non_ascii_paths() {
    assert_eq!(normal("/café/../x").unwrap(), "/x");
    assert_eq!(normal("/café/%2e%2e/x").unwrap(), "/x");
    assert_eq!(normal("/café%2fx"), Err(Ambiguity::EncodedSlash));
    assert_eq!(normal("/caf%é"), Err(Ambiguity::BadEscape));
}

#[test]
fn normal_form_is_idempotent() {
    for path in [
        "/a/../b/./c//d/",
        "/%2e%2e/x",
        "/x%2fy",
        "/a%20b",
        "/é/..",
        "/",
    ] {
        if let Ok(once) = normalize(path, true) {
            let twice = normalize(&once, true).unwrap();
            assert_eq!(once, twice, "{path}");
        }
    }
}

#[test]
fn prefixes_match_whole_segments() {
    assert!(has_segment_prefix("/health", "/health"));
    assert!(has_segment_prefix("/health/live", "/health"));
    assert!(!has_segment_prefix("/healthz", "/health"));
    assert!(!has_segment_prefix("/healthz-admin/x", "/health"));
    assert!(has_segment_prefix("/api/x", "/api/"));
    assert!(!has_segment_prefix("/api", "/api/"));
    assert!(has_segment_prefix("/anything", "/"));
}

fn info(path: &str) -> crate::RequestInfo {
    crate::RequestInfo::new(None, "h", path, "GET", vec![(":path".into(), path.into())])
}

#[test]
fn verdicts_follow_the_options() {
    let reject = PathOptions::default();
    let rewrite = PathOptions {
        unnormalized: Unnormalized::Rewrite,
        ..PathOptions::default()
    };
    let slashes = PathOptions {
        allow_encoded_slashes: true,
        ..PathOptions::default()
    };
    assert_eq!(reject.verdict(&info("/a/b?x=1")), PathVerdict::Keep);
    assert!(matches!(
        reject.verdict(&info("/h/../a")),
        PathVerdict::Refuse(_)
    ));
    assert_eq!(
        rewrite.verdict(&info("/h/../a?x=/..")),
        PathVerdict::Rewrite("/a?x=/..".into()),
        "the query is kept as sent"
    );
    assert!(matches!(
        rewrite.verdict(&info("/a\\b")),
        PathVerdict::Refuse(_)
    ));
    assert!(matches!(
        rewrite.verdict(&info("/a%2fb")),
        PathVerdict::Refuse(_)
    ));
    assert_eq!(slashes.verdict(&info("/a%2Fb")), PathVerdict::Keep);
    assert!(
        matches!(slashes.verdict(&info("/a%2fb")), PathVerdict::Refuse(_)),
        "lower-case hex is not normal"
    );
    assert_eq!(
        reject.verdict(&crate::RequestInfo::new(None, "h", "", "GET", vec![])),
        PathVerdict::Keep,
        "a path not read"
    );
}

#[test]
fn options_parse_and_refuse_unknown_fields() {
    let options: PathOptions =
        serde_json::from_str(r#"{"unnormalized": "rewrite", "allow_encoded_slashes": true}"#)
            .unwrap();
    assert_eq!(options.unnormalized, Unnormalized::Rewrite);
    assert!(serde_json::from_str::<PathOptions>(r#"{"normalize": false}"#).is_err());
    assert!(serde_json::from_str::<PathOptions>(r#"{"unnormalized": "pass"}"#).is_err());
}
