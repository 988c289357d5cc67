//! Self-test of the harness: the pass-through module in a real Envoy, the scriptable upstream.

use std::time::{Duration, Instant};
use wasmgate_e2e::{Envoy, Scripted, Upstream};

fn start() -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "passthrough.yaml",
        &[("UPSTREAM_PORT", upstream.port().to_string())],
    );
    (upstream, envoy)
}

#[test]
fn echo_through_passthrough_module() {
    let (upstream, envoy) = start();
    let response = envoy.client().send(
        "POST",
        "/a/b?x=1&y=2",
        &[("x-test", "one"), ("content-type", "text/plain")],
        b"hello",
    );
    assert_eq!(response.status, 200);
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/a/b");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["headers"]["x-test"], "one");
    assert_eq!(echo["body"], "hello");
    assert_eq!(upstream.attempts(), 1);
    assert!(
        envoy.log().contains("passthrough 0.1.0 (commit "),
        "build identity logged at VM start"
    );
}

#[test]
fn scripted_statuses_headers_and_delay() {
    let (upstream, envoy) = start();
    upstream.script([
        Scripted::status(503).header("retry-after", "1"),
        Scripted::status(200)
            .body("done")
            .delay(Duration::from_millis(200)),
    ]);
    let client = envoy.client();
    let first = client.get("/x");
    assert_eq!(first.status, 503);
    assert_eq!(first.header("retry-after"), Some("1"));
    let started = Instant::now();
    let second = client.get("/x");
    assert_eq!(second.text(), "done");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(client.get("/x").status, 200, "echo again after the script");
    assert_eq!(upstream.attempts(), 3);
}

#[test]
fn documents_change_while_running() {
    let (upstream, envoy) = start();
    let client = envoy.client();
    upstream.set_document("/jwks.json", r#"{"keys": [1]}"#);
    assert_eq!(client.get("/jwks.json").json()["keys"][0], 1);
    upstream.set_document("/jwks.json", r#"{"keys": [2]}"#);
    assert_eq!(client.get("/jwks.json").json()["keys"][0], 2);
    upstream.set_document_status("/jwks.json", 503, "{}");
    assert_eq!(client.get("/jwks.json").status, 503);
    assert_eq!(upstream.document_fetches("/jwks.json"), 3);
    assert_eq!(upstream.attempts(), 0, "document fetches are not attempts");
}

#[test]
fn stats_are_readable() {
    let (_upstream, envoy) = start();
    envoy.client().get("/");
    assert!(envoy.stat("http.ingress.downstream_rq_completed") >= 1);
}
