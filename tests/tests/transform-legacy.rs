//! transform end-to-end, legacy integration: form bodies edited byte for byte, body values copied
//! into headers that route the request (a forged header never passes), method and authority
//! rewrites that re-route, response status rewrites and edits by upstream status, XML <-> JSON.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use wasmgate_e2e::{Envoy, Scripted, Upstream};

/// Every test runs with held headers (Envoy's `allow_on_headers_stop_iteration: true`): body
/// values into headers need them, and a held body gets an exact Content-Length.
const CONFIG: &str = r##"{
  "hold_headers": true,
  "rules": [
    {"match": {"path_prefix": "/form/"},
     "request": {"body": {"form": {"remove": ["password"], "rename": {"user_name": "username"},
                                   "set": {"source": "gateway"}}}}},
    {"match": {"path_prefix": "/tenant/"},
     "request": {"body": {"json": {"to_headers": {"/tenant/id": "x-tenant", "/backend": "x-backend"}},
                          "form": {"to_headers": {"tenant": "x-tenant", "backend": "x-backend"}}}}},
    {"match": {"path_prefix": "/legacy/"},
     "request": {"method": "POST", "authority": "legacy.internal"}},
    {"match": {"path_prefix": "/status/"},
     "response": {"status": {"404": 204, "500": 502},
                  "headers": {"set": {"x-ok": "1"}},
                  "by_status": {"5xx": {"headers": {"remove": ["x-debug"], "set": {"x-error": "upstream"}},
                                        "body": {"json": {"remove": ["/stack"]}}}}}},
    {"match": {"path_prefix": "/legacy-api/"},
     "response": {"body": {"json": {"status_when": {"/error": 502}}}}},
    {"match": {"path_prefix": "/xml/"},
     "request": {"body": {"convert": "json_to_xml"}},
     "response": {"body": {"convert": "xml_to_json", "xml": {"arrays": ["item"]}}}}
  ]
}"##;

struct Setup {
    upstream: Upstream,
    upstream_b: Upstream,
    envoy: Envoy,
}

fn start() -> Setup {
    let json: serde_json::Value = serde_json::from_str(CONFIG).expect("test config is JSON");
    let upstream = Upstream::start();
    let upstream_b = Upstream::start();
    let envoy = Envoy::start(
        "transform.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("UPSTREAM_B_PORT", upstream_b.port().to_string()),
            ("TRANSFORM_CONFIG", json.to_string()),
            ("ALLOW_STOP", "true".to_string()),
        ],
    );
    Setup {
        upstream,
        upstream_b,
        envoy,
    }
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

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn form_bodies_change_only_the_fields_named() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    // An escape in a field name does not hide it from the remove; every other byte stays.
    for (body, expected) in [
        (
            "user_name=bob&password=hunter2&text=a+b%21&&x=%E2%9C%93",
            "username=bob&text=a+b%21&&x=%E2%9C%93&source=gateway",
        ),
        ("pass%77ord=1&password=2&source=client", "source=gateway"),
    ] {
        let response = client.send(
            "POST",
            "/form/submit",
            &[("content-type", FORM)],
            body.as_bytes(),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        let echo = response.json();
        assert_eq!(echo["body"], expected, "{body}");
        assert_eq!(
            echo["headers"]["content-length"],
            expected.len().to_string()
        );
    }
    // A body that is not a form is refused on a form route (a client picks its content type).
    let response = client.send(
        "POST",
        "/form/submit",
        &[("content-type", "application/json")],
        br#"{"password": "hunter2"}"#,
    );
    assert_eq!(response.status, 415);
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("form"),
        "{}",
        response.text()
    );
    assert_eq!(upstream.attempts(), 2);
}

#[test]
fn body_values_route_the_request_and_forged_headers_never_pass() {
    let Setup {
        upstream,
        upstream_b,
        envoy,
    } = start();
    let client = envoy.client();
    let forged = [("x-tenant", "evil"), ("x-backend", "a")];
    let json = |body: &str| {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(&forged);
        client.send("POST", "/tenant/orders", &headers, body.as_bytes())
    };
    // The body's backend selects the route of cluster upstream_b; the tenant id is a header.
    let response = json(r#"{"tenant": {"id": "acme"}, "backend": "b", "n": 1}"#);
    assert_eq!(response.status, 200, "{}", response.text());
    let headers = &response.json()["headers"];
    assert_eq!(headers["x-tenant"], "acme");
    assert_eq!(headers["x-backend"], "b");
    assert_eq!(upstream_b.attempts(), 1);
    // Form fields too.
    let mut form = vec![("content-type", FORM)];
    form.extend_from_slice(&forged);
    let response = client.send(
        "POST",
        "/tenant/orders",
        &form,
        b"tenant=acme%20eu&backend=b",
    );
    assert_eq!(response.json()["headers"]["x-tenant"], "acme eu");
    assert_eq!(upstream_b.attempts(), 2);
    // Absent values: the forged headers are gone all the same.
    let response = json(r#"{"n": 1}"#);
    assert_eq!(response.status, 200);
    let headers = &response.json()["headers"];
    assert!(headers.get("x-tenant").is_none(), "{headers}");
    assert!(headers.get("x-backend").is_none(), "{headers}");
    // A value that would inject a header line, or is too long, is never written.
    let long = "a".repeat(2000);
    for body in [
        r#"{"tenant": {"id": "acme\r\nx-admin: true"}}"#.to_string(),
        format!(r#"{{"tenant": {{"id": "{long}"}}}}"#),
        r#"{"tenant": {"id": {"nested": "acme"}}}"#.to_string(),
    ] {
        let response = json(&body);
        assert_eq!(response.status, 200, "{body}");
        let headers = &response.json()["headers"];
        assert!(headers.get("x-tenant").is_none(), "{headers}");
        assert!(headers.get("x-admin").is_none(), "{headers}");
    }
    assert_eq!(upstream.attempts(), 4);
    // A form field given twice is refused: the upstream might read the other one.
    let response = client.send(
        "POST",
        "/tenant/orders",
        &[("content-type", FORM)],
        b"tenant=acme&tenant=evil",
    );
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"], "invalid_form");
    // So is a JSON body with a duplicate member.
    let response = json(r#"{"tenant": {"id": "acme", "id": "evil"}}"#);
    assert_eq!(response.status, 400);
    assert_eq!(
        upstream.attempts() + upstream_b.attempts(),
        6,
        "never forwarded"
    );
    assert!(metric(&envoy, "operations_skipped_total", &[]) >= 4);
}

#[test]
fn method_and_authority_rewrites_re_route() {
    let Setup {
        upstream,
        upstream_b,
        envoy,
    } = start();
    let response = envoy.client().get("/legacy/report?x=1");
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["headers"]["host"], "legacy.internal");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(upstream_b.attempts(), 1, "the legacy.internal virtual host");
    assert_eq!(upstream.attempts(), 0);
}

#[test]
fn response_status_rewrites_and_edits_by_upstream_status() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    upstream.script([
        Scripted::status(404)
            .header("content-type", "text/html")
            .body("<html>no such thing</html>"),
        Scripted::status(500)
            .header("content-type", "application/json")
            .header("x-debug", "db=primary")
            .body(r#"{"error": "boom", "stack": "at db.rs:12"}"#),
        Scripted::status(503)
            .header("content-type", "application/json")
            .body(r#"{"error": "busy", "stack": "x"}"#),
    ]);
    let response = client.get("/status/missing");
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    assert_eq!(response.header("x-ok"), Some("1"));
    let response = client.get("/status/broken");
    assert_eq!(response.status, 502);
    assert_eq!(response.header("x-error"), Some("upstream"));
    assert!(response.header("x-debug").is_none());
    assert!(
        response.header("x-ok").is_none(),
        "the 5xx edits replace the others"
    );
    assert_eq!(response.json(), serde_json::json!({"error": "boom"}));
    let response = client.get("/status/busy");
    assert_eq!(response.status, 503, "not rewritten, but edited as a 5xx");
    assert_eq!(response.json(), serde_json::json!({"error": "busy"}));
    let response = client.get("/status/fine");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-ok"), Some("1"));
    assert_eq!(metric(&envoy, "status_rewritten_total", &[]), 2);
}

#[test]
fn a_legacy_200_carrying_an_error_becomes_502() {
    let Setup {
        upstream, envoy, ..
    } = start();
    upstream.script([
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(r#"{"error": {"code": "E42", "text": "no such account"}}"#),
        Scripted::status(200)
            .header("content-type", "application/json")
            .body(r#"{"error": null, "balance": 10}"#),
    ]);
    let client = envoy.client();
    let response = client.get("/legacy-api/balance");
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(
        response.json()["error"]["code"],
        "E42",
        "the body is the upstream's"
    );
    let response = client.get("/legacy-api/balance");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["balance"], 10);
    assert_eq!(metric(&envoy, "status_rewritten_total", &[]), 1);
}

#[test]
fn json_to_xml_and_back() {
    let Setup {
        upstream, envoy, ..
    } = start();
    let client = envoy.client();
    upstream.script([
        Scripted::status(200)
            .header("content-type", "application/xml")
            .body(r#"<?xml version="1.0"?><result code="ok"><item>1</item><total>1.50</total></result>"#),
        Scripted::status(200)
            .header("content-type", "application/xml")
            .body("<result><unclosed></result>"),
        Scripted::status(200)
            .header("content-type", "text/xml")
            .body(
                r#"<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>"#,
            ),
    ]);
    let response = client.send(
        "POST",
        "/xml/orders",
        &[("content-type", "application/json")],
        br#"{"order": {"@id": "7", "item": ["a & b", "c"], "qty": 1.50, "note": null}}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        serde_json::json!({"result": {"@code": "ok", "item": ["1"], "total": "1.50"}})
    );
    let sent = upstream.received();
    let sent = sent.last().unwrap();
    assert_eq!(sent["headers"]["content-type"], "application/xml");
    assert_eq!(
        sent["body"],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order id=\"7\"><item>a &amp; b</item>\
         <item>c</item><qty>1.50</qty><note/></order>"
    );
    assert_eq!(
        sent["headers"]["content-length"],
        sent["body_len"].to_string()
    );
    // Invalid XML from the upstream passes unchanged and is counted; so does a DOCTYPE, whose
    // entities are never expanded.
    let response = client.send(
        "POST",
        "/xml/a",
        &[("content-type", "application/json")],
        br#"{"a": 1}"#,
    );
    assert_eq!(response.text(), "<result><unclosed></result>");
    let response = client.send(
        "POST",
        "/xml/b",
        &[("content-type", "application/json")],
        br#"{"a": 1}"#,
    );
    assert!(
        response.text().starts_with("<!DOCTYPE"),
        "{}",
        response.text()
    );
    assert_eq!(body_errors(&envoy, "response", "invalid_xml"), 2);
    // JSON that has no XML form is refused before the upstream.
    for body in [r#"{"a": 1, "b": 2}"#, r#"{"a><b": 1}"#, "[1]"] {
        let response = client.send(
            "POST",
            "/xml/c",
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.json()["error"], "invalid_json", "{body}");
    }
    assert_eq!(upstream.attempts(), 3);
}
