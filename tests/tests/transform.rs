//! transform end-to-end: header, query, path and JSON body edits in a real Envoy, re-routing after
//! a rewrite, edits that keep every byte they do not name, bodies the edits cannot apply to
//! (refused or passed), body limits and invalid JSON, response edits.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use wasmgate_e2e::{raw_status, Envoy, Scripted, Upstream};

/// The filter configuration every test runs with (compacted into the template).
const CONFIG: &str = r#"{
  "request": {
    "headers": {
      "remove": ["x-internal"],
      "rename": {"x-old": "x-new"},
      "set": {"x-user": "{{header.x-jwt-sub}}", "x-client": "{{client_ip}}", "x-rid": "{{request_id}}"},
      "add": {"x-source": "gateway", "x-seen": "{{method}} {{path}} {{host}}"},
      "append": {"x-trace": "wasmgate"}
    },
    "query": {"remove": ["debug"], "rename": {"q": "query"}, "set": {"v": "2"}, "add": {"lang": "en"},
              "append": {"from": "{{header.x-jwt-sub}}"}},
    "path": {"replace_prefix": {"from": "/v1/", "to": "/api/v1/"}},
    "body": {
      "json": {
        "set": {"/meta/source": "gateway", "/meta/user": "{{header.x-jwt-sub}}", "/tags/-": "wasmgate",
                "/a~1b/m~0n": 2},
        "remove": ["/password"],
        "rename": {"/user_name": "/username"}
      },
      "max_body_bytes": 1024
    }
  },
  "response": {
    "headers": {"remove": ["x-upstream-secret", "server"], "set": {"x-served-by": "wasmgate", "x-route": "{{route}}"}},
    "body": {"json": {"remove": ["/internal"], "set": {"/served_by": "wasmgate"}}, "max_body_bytes": 4096}
  },
  "rules": [
    {"match": {"path_prefix": "/raw/"}, "enabled": false},
    {"match": {"path_prefix": "/v1/keep"}, "enabled": false},
    {"match": {"path_prefix": "/users/"},
     "request": {"path": {"regex": "^/users/([0-9]+)$", "substitution": "/u/\\1"}}},
    {"match": {"path_prefix": "/route-b/"}, "request": {"headers": {"set": {"x-backend": "b"}}}}
  ]
}"#;

struct Setup {
    upstream: Upstream,
    upstream_b: Upstream,
    envoy: Envoy,
}

/// Starts the filter with `config`; `hold` also sets the filter's `hold_headers` and Envoy's
/// `allow_on_headers_stop_iteration` that it needs.
fn start_with(config: &str, hold: bool) -> Setup {
    let mut json: serde_json::Value = serde_json::from_str(config).expect("test config is JSON");
    if hold {
        json["hold_headers"] = true.into();
    }
    let compact = serde_json::to_string(&json).expect("serializable");
    let upstream = Upstream::start();
    let upstream_b = Upstream::start();
    let envoy = Envoy::start(
        "transform.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("UPSTREAM_B_PORT", upstream_b.port().to_string()),
            ("TRANSFORM_CONFIG", compact),
            ("ALLOW_STOP", hold.to_string()),
        ],
    );
    Setup {
        upstream,
        upstream_b,
        envoy,
    }
}

fn start() -> Setup {
    start_with(CONFIG, false)
}

/// Metric `wasmgate_transform_<what>` summed over its series carrying `labels`.
fn metric(envoy: &Envoy, what: &str, labels: &[(&str, &str)]) -> u64 {
    envoy.metric(&format!("wasmgate_transform_{what}"), labels)
}

/// `body_errors_total` of one reason (`""`: every reason) in one direction.
fn body_errors(envoy: &Envoy, direction: &str, reason: &str) -> u64 {
    let mut labels = vec![("direction", direction)];
    if !reason.is_empty() {
        labels.push(("reason", reason));
    }
    metric(envoy, "body_errors_total", &labels)
}

/// Sends a chunked HTTP/1.1 request over a raw socket (no Content-Length) and returns the raw
/// response text.
fn raw_chunked(envoy: &Envoy, path: &str, content_type: &str, chunks: &[&[u8]]) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = TcpStream::connect(("127.0.0.1", envoy.port("main"))).expect("connect");
    stream.write_all(&request).expect("write request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn header_and_query_operations_are_visible_upstream() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    let response = client.send(
        "GET",
        "/api/items?q=hello%20world&debug=1&v=1",
        &[
            ("x-internal", "secret"),
            ("x-old", "moved"),
            ("x-jwt-sub", "alice"),
            ("x-trace", "client"),
            ("x-user", "mallory"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    let headers = &echo["headers"];
    assert!(headers.get("x-internal").is_none(), "removed: {headers}");
    assert!(headers.get("x-old").is_none(), "renamed away: {headers}");
    assert_eq!(headers["x-new"], "moved");
    assert_eq!(headers["x-user"], "alice", "set replaces");
    assert_eq!(headers["x-source"], "gateway", "add creates");
    assert_eq!(
        headers["x-trace"], "client, wasmgate",
        "append adds a value"
    );
    assert_eq!(headers["x-client"], "127.0.0.1");
    assert_eq!(headers["x-rid"], headers["x-request-id"]);
    let host = format!("127.0.0.1:{}", envoy.port("main"));
    assert_eq!(headers["x-seen"], format!("GET /api/items {host}"));
    assert_eq!(echo["path"], "/api/items");
    assert_eq!(
        echo["query"], "query=hello%20world&v=2&lang=en&from=alice",
        "remove, rename, set, add, append on the query"
    );
    // Response side: headers set with a template, and the JSON body edited.
    assert_eq!(response.header("x-served-by"), Some("wasmgate"));
    assert_eq!(response.header("x-route"), Some("api"));
    assert_eq!(echo["served_by"], "wasmgate");

    // add only when absent; templates that resolve to nothing skip their operation.
    let response = client.send("GET", "/api/items", &[("x-source", "client")], b"");
    let headers = &response.json()["headers"];
    assert_eq!(headers["x-source"], "client");
    assert!(
        headers.get("x-user").is_none(),
        "no empty header: {headers}"
    );
    assert_eq!(response.json()["query"], "v=2&lang=en");
    assert_eq!(upstream.attempts(), 2);
    assert!(metric(&envoy, "operations_skipped_total", &[]) >= 2);
    assert_eq!(
        metric(&envoy, "transformed_total", &[("direction", "request")]),
        2
    );
    assert_eq!(
        metric(&envoy, "transformed_total", &[("direction", "response")]),
        2
    );
}

#[test]
fn rewrites_land_on_another_route() {
    let Setup {
        upstream,
        upstream_b,
        envoy,
    } = start();
    let client = envoy.client();
    // Without the filter, /v1/ is answered by a direct-response route.
    let kept = client.get("/v1/keep?x=1");
    assert_eq!((kept.status, kept.text().as_str()), (418, "not rewritten"));
    // The prefix rewrite moves the request to the "api" route; the query string is kept.
    let response = client.get("/v1/users?q=1&z=9");
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["path"], "/api/v1/users");
    assert_eq!(echo["query"], "z=9&query=1&v=2&lang=en");
    // A rule's regex rewrite (its "request" replaces the defaults) keeps the query too.
    let echo = client.get("/users/42?a=b").json();
    assert_eq!(echo["path"], "/u/42");
    assert_eq!(echo["query"], "a=b");
    assert_eq!(upstream.attempts(), 2);
    // A header set by the filter moves the request to the route for cluster upstream_b.
    let response = client.get("/route-b/x");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["headers"]["x-backend"], "b");
    assert_eq!(upstream_b.attempts(), 1);
    assert_eq!(upstream.attempts(), 2);
}

#[test]
fn disabled_rule_passes_untouched() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let response = envoy.client().send(
        "POST",
        "/raw/x?debug=1",
        &[("x-internal", "kept"), ("content-type", "application/json")],
        br#"{"password": "p"}"#,
    );
    assert_eq!(response.status, 200);
    let echo = response.json();
    assert_eq!(echo["headers"]["x-internal"], "kept");
    assert!(echo["headers"].get("x-source").is_none());
    assert_eq!(echo["query"], "debug=1");
    assert_eq!(echo["body"], r#"{"password": "p"}"#);
    assert!(echo.get("served_by").is_none(), "response untouched");
    assert!(response.header("x-served-by").is_none());
    assert_eq!(upstream.attempts(), 1);
    assert_eq!(metric(&envoy, "skipped_total", &[]), 1);
    assert_eq!(
        metric(&envoy, "transformed_total", &[("direction", "request")]),
        0
    );
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    assert!(
        prometheus
            .lines()
            .any(|l| l == r#"wasmgate_transform_skipped_total{plugin="transform"} 1"#),
        "{prometheus}"
    );
}

#[test]
fn json_request_body_is_edited() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let body = br#"{"user_name": "bob", "password": "hunter2", "tags": ["a"], "a/b": {"m~n": 1}}"#;
    let response = envoy.client().send(
        "POST",
        "/api/users",
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("x-jwt-sub", "alice"),
        ],
        body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    let sent: serde_json::Value =
        serde_json::from_str(echo["body"].as_str().unwrap()).expect("upstream got JSON");
    assert_eq!(
        sent,
        serde_json::json!({
            "username": "bob",
            "tags": ["a", "wasmgate"],
            "a/b": {"m~n": 2},
            "meta": {"source": "gateway", "user": "alice"}
        })
    );
    // Envoy forwards the headers before the body arrives, so the stale Content-Length is
    // dropped and the edited body travels chunked.
    assert!(echo["headers"].get("content-length").is_none(), "{echo}");
    assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
    assert_eq!(echo["body_len"], echo["body"].as_str().unwrap().len());
    // A chunked JSON body (no Content-Length) is edited as well.
    let raw = raw_chunked(
        &envoy,
        "/api/chunked",
        "application/json",
        &[br#"{"user_name": "#, br#""carol", "password": "x"}"#],
    );
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let received = upstream.received();
    let last = received.last().expect("a request upstream");
    let sent: serde_json::Value =
        serde_json::from_str(last["body"].as_str().unwrap()).expect("upstream got JSON");
    assert_eq!(sent["username"], "carol");
    assert!(sent.get("password").is_none());
    assert_eq!(upstream.attempts(), 2);
}

/// [`CONFIG`] with `change` applied to its JSON.
fn config_with(change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut json: serde_json::Value = serde_json::from_str(CONFIG).expect("test config is JSON");
    change(&mut json);
    json.to_string()
}

#[test]
fn json_edits_change_only_the_members_they_name() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    // Big integers, decimals, escapes, member order and whitespace are the client's: a digest or
    // signature over the parts the edits do not name still holds. The password is written with
    // an escape, which does not hide it from the remove.
    let body = "{\n  \"order_id\": 12345678901234567890123,\n  \"amount\": 1.50,\n  \
                \"z_last\": \"caf\\u00e9 \\\"q\\\"\",\n  \"p\\u0061ssword\": \"hunter2\",\n  \
                \"tags\": [ \"a\" ],\n  \"a/b\": {\"m~n\": 1, \"keep\": 1e2}\n}\n";
    let expected = "{\n  \"order_id\": 12345678901234567890123,\n  \"amount\": 1.50,\n  \
                    \"z_last\": \"caf\\u00e9 \\\"q\\\"\",\n  \"tags\": [ \"a\", \"wasmgate\" ],\n  \
                    \"a/b\": {\"m~n\": 2, \"keep\": 1e2},\n  \
                    \"meta\": {\"source\":\"gateway\",\"user\":\"alice\"}\n}\n";
    let response = client.send(
        "POST",
        "/api/orders",
        &[("content-type", "application/json"), ("x-jwt-sub", "alice")],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["body"], expected);
    // The response edit (set /served_by) leaves the upstream's text as it was, too.
    let text = response.text();
    assert!(text.ends_with(r#","served_by":"wasmgate"}"#), "{text}");
    assert_eq!(upstream.attempts(), 1);

    // A body with duplicate member names is refused: the filter would edit one "role" and the
    // upstream might read the other.
    for body in [
        r#"{"role": "user", "role": "admin"}"#,
        r#"{"password": "a", "p\u0061ssword": "b"}"#,
    ] {
        let response = client.send(
            "POST",
            "/api/users",
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.json()["error"], "invalid_json");
        assert!(
            response.json()["message"]
                .as_str()
                .unwrap()
                .contains("same name"),
            "{}",
            response.text()
        );
    }
    for received in upstream.received().iter().skip(1) {
        assert_eq!(received["body_len"], 0, "never a body: {received}");
    }
    assert_eq!(body_errors(&envoy, "request", "invalid_json"), 2);
}

#[test]
fn request_bodies_the_edits_cannot_apply_to_are_refused() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    let body = br#"{"password": "hunter2"}"#;
    for headers in [
        &[("content-type", "text/plain")][..],
        &[("content-type", "application/jsonx")],
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    ] {
        let response = client.send("POST", "/api/upload", headers, body);
        assert_eq!(response.status, 415, "{headers:?}: {}", response.text());
        assert_eq!(response.json()["error"], "unsupported_media_type");
    }
    assert_eq!(upstream.attempts(), 0, "refused before the upstream");
    assert_eq!(body_errors(&envoy, "request", "unsupported_media_type"), 3);
    // JSON media types are recognised with parameters, in any case, with a +json suffix.
    for content_type in [
        "Application/JSON ; charset=UTF-8",
        "application/merge-patch+json",
    ] {
        let response = client.send(
            "POST",
            "/api/users",
            &[("content-type", content_type)],
            body,
        );
        assert_eq!(response.status, 200, "{content_type}: {}", response.text());
        let sent = response.json()["body"].as_str().unwrap().to_string();
        // password removed; the sets create their parents (tags was absent: an object).
        assert_eq!(
            sent, r#"{"a/b": {"m~n":2},"meta": {"source":"gateway"},"tags": {"-":"wasmgate"}}"#,
            "{content_type}"
        );
    }
    // An empty body has nothing to edit, whatever its type.
    let response = client.send("POST", "/api/empty", &[("content-type", "text/plain")], b"");
    assert_eq!(response.status, 200);
    assert_eq!(upstream.attempts(), 3);
}

#[test]
fn with_pass_non_json_bodies_go_byte_for_byte() {
    let config = config_with(|json| json["request"]["body"]["on_unsupported"] = "pass".into());
    let Setup {
        upstream, envoy, ..
    } = start_with(&config, false);
    let client = envoy.client();
    let body = b"{\"password\": \"not json because text/plain\"\n\x01\x7f trailing";
    let response = client.send(
        "POST",
        "/api/upload",
        &[("content-type", "text/plain")],
        body,
    );
    assert_eq!(response.status, 200);
    let echo = response.json();
    assert_eq!(echo["body"], String::from_utf8_lossy(body).as_ref());
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["headers"]["content-length"], body.len().to_string());
    // Invalid JSON passes unchanged too.
    let response = client.send(
        "POST",
        "/api/bad",
        &[("content-type", "application/json")],
        br#"{"password": "#,
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body"], r#"{"password": "#);
    // A response that is not JSON is not buffered nor changed (responses pass by default).
    let plain = b"plain {\"internal\": 1}".to_vec();
    upstream.script([Scripted::status(200)
        .header("content-type", "text/plain")
        .body(plain.clone())]);
    let response = client.get("/api/plain");
    assert_eq!(response.body, plain);
    assert_eq!(response.header("x-served-by"), Some("wasmgate"));
    assert_eq!(body_errors(&envoy, "request", "unsupported_media_type"), 1);
    assert_eq!(body_errors(&envoy, "request", "invalid_json"), 1);
    assert_eq!(body_errors(&envoy, "response", "unsupported_media_type"), 1);
    assert_eq!(metric(&envoy, "body_errors_total", &[]), 3);
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    let series = r#"wasmgate_transform_body_errors_total{plugin="transform",reason="unsupported_media_type",direction="response"} 1"#;
    assert!(prometheus.lines().any(|l| l == series), "{prometheus}");
}

#[test]
fn responses_the_edits_cannot_apply_to_can_be_refused() {
    let config = config_with(|json| json["response"]["body"]["on_unsupported"] = "refuse".into());
    // Held headers: the response waits for its body, so a refusal is a clean 502.
    let Setup {
        upstream, envoy, ..
    } = start_with(&config, true);
    let client = envoy.client();
    upstream.script([
        Scripted::status(200)
            .header("content-type", "text/html")
            .body("<p>internal</p>"),
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(r#"{"internal": 1, "internal": 2}"#),
        Scripted::status(200)
            .header("content-type", "application/json")
            .header("content-encoding", "br")
            .body("not really br"),
    ]);
    for (path, error) in [
        ("/api/html", "unsupported_media_type"),
        ("/api/duplicate", "invalid_json"),
        ("/api/compressed", "unsupported_media_type"),
    ] {
        let response = client.get(path);
        assert_eq!(response.status, 502, "{path}: {}", response.text());
        assert_eq!(response.json()["error"], error, "{path}");
        assert!(!response.text().contains("internal"), "{path}");
    }
    assert_eq!(body_errors(&envoy, "response", "unsupported_media_type"), 2);
    assert_eq!(body_errors(&envoy, "response", "invalid_json"), 1);
}

#[test]
fn oversized_and_invalid_request_bodies() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    let big = format!(r#"{{"data": "{}"}}"#, "x".repeat(2000));
    let response = client.send(
        "POST",
        "/api/big",
        &[("content-type", "application/json")],
        big.as_bytes(),
    );
    assert_eq!(response.status, 413);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["error"], "body_too_large");
    assert!(
        response.header("x-served-by").is_none(),
        "own reply untouched"
    );
    // Without a Content-Length the limit is enforced while the body streams in.
    let raw = raw_chunked(
        &envoy,
        "/api/big",
        "application/json",
        &[&big.as_bytes()[..700], &big.as_bytes()[700..1400]],
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("body_too_large"), "{raw}");
    let response = client.send(
        "POST",
        "/api/bad",
        &[("content-type", "application/json")],
        br#"{"user_name": "#,
    );
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "invalid_json");
    // Headers may have reached the upstream (Envoy forwards them before the body), but never
    // a body: the request was aborted there.
    for received in upstream.received() {
        assert_eq!(received["body_len"], 0, "{received}");
    }
    assert_eq!(body_errors(&envoy, "request", "too_large"), 2);
    assert_eq!(body_errors(&envoy, "request", "invalid_json"), 1);
    assert_eq!(metric(&envoy, "body_errors_total", &[]), 3);
}

#[test]
fn response_headers_and_body_are_edited() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    upstream.script([
        Scripted::status(201)
            .header("content-type", "application/json")
            .header("x-upstream-secret", "s3")
            .header("server", "upstream/1.2.3")
            .body(r#"{"data": 1, "internal": {"db": "primary"}}"#),
        Scripted::status(200)
            .header("content-type", "application/json")
            .body("{not json"),
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(format!(r#"{{"data": "{}"}}"#, "y".repeat(5000))),
    ]);
    let response = client.get("/api/resource");
    assert_eq!(response.status, 201);
    assert!(response.header("x-upstream-secret").is_none());
    assert!(
        response.header("server").is_none(),
        "{:?}",
        response.headers
    );
    assert_eq!(response.header("x-served-by"), Some("wasmgate"));
    assert_eq!(
        response.json(),
        serde_json::json!({"data": 1, "served_by": "wasmgate"})
    );
    assert!(
        response.header("content-length").is_none(),
        "the upstream's length no longer holds"
    );
    // Invalid JSON from the upstream passes unchanged and is counted.
    let response = client.get("/api/broken");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "{not json");
    assert_eq!(body_errors(&envoy, "response", "invalid_json"), 1);
    // A response over the limit is refused rather than forwarded unedited.
    let response = client.get("/api/huge");
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"], "body_too_large");
    // The first two had their headers edited; the third was replaced by the filter's reply.
    assert_eq!(
        metric(&envoy, "transformed_total", &[("direction", "response")]),
        2
    );
    assert_eq!(metric(&envoy, "body_errors_total", &[]), 2);
}

#[test]
fn invalid_configuration_is_rejected_at_load() {
    let config = r#"{"request": {"headers": {"set": {"x user": "a"}}}}"#;
    let failure = std::panic::catch_unwind(|| start_with(config, false))
        .err()
        .expect("Envoy must refuse the configuration");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains(
            "wasmgate transform: invalid configuration at request.headers.set.x user: invalid header name"
        ),
        "{message}"
    );
}

#[test]
fn held_headers_get_an_exact_content_length() {
    let Setup {
        upstream, envoy, ..
    } = start_with(CONFIG, true);
    let client = envoy.client();
    let response = client.send(
        "POST",
        "/api/users",
        &[("content-type", "application/json")],
        br#"{"user_name": "bob", "password": "hunter2"}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(
        echo["headers"]["content-length"],
        echo["body_len"].to_string(),
        "Content-Length follows the edited body: {echo}"
    );
    assert!(echo["headers"].get("transfer-encoding").is_none());
    let sent: serde_json::Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["username"], "bob");
    // The edited response keeps an exact Content-Length too.
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    assert_eq!(echo["served_by"], "wasmgate");
    // Refused bodies never reach the upstream, not even their headers.
    let response = client.send(
        "POST",
        "/api/bad",
        &[("content-type", "application/json")],
        br#"{"user_name": "#,
    );
    assert_eq!(response.status, 400);
    let big = format!(r#"{{"data": "{}"}}"#, "x".repeat(2000));
    let raw = raw_chunked(
        &envoy,
        "/api/big",
        "application/json",
        &[&big.as_bytes()[..700], &big.as_bytes()[700..1400]],
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert_eq!(upstream.attempts(), 1);
}

#[test]
fn header_values_that_are_not_utf8_are_handled_and_the_vm_lives_on() {
    // HTTP allows obs-text bytes (0x80-0xFF) in header values and Envoy passes them on; the
    // SDK's text getters would panic on them and take every stream of the worker down. The value
    // is one the configuration removes (the test upstream itself refuses such bytes).
    let Setup {
        upstream, envoy, ..
    } = start();
    let request = b"GET /api/latin1 HTTP/1.1\r\nHost: localhost\r\nX-Internal: caf\xe9\r\n\
                    Connection: close\r\n\r\n";
    assert_eq!(
        raw_status(envoy.port("main"), request),
        200,
        "{}",
        envoy.log()
    );
    let seen = upstream.received();
    let headers = &seen.last().expect("the request reached the upstream")["headers"];
    assert!(headers.get("x-internal").is_none(), "removed: {headers}");
    assert_eq!(headers["x-source"], "gateway", "transformed: {headers}");
    let after = envoy.client().get("/api/after");
    assert_eq!(after.status, 200, "the VM still serves: {}", envoy.log());
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}
