//! examples/soap in a real Envoy: the shipped `envoy.yaml` (only its ports and module directory
//! replaced) in front of a scripted SOAP 1.1 service. A JSON request reaches the service as a
//! SOAP envelope with its SOAPAction and an exact Content-Length; the service's envelope reaches
//! the client as JSON; a SOAP fault becomes a 502 with the fault as JSON.

// Test code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use wasmgate_e2e::{repo_root, validate, wasm_dir, Envoy, EnvoyOptions, Scripted, Upstream};

/// The example's own envoy.yaml with free ports, the built module and the test service.
fn example_config(service_port: u16) -> String {
    let path = repo_root().join("examples/soap/envoy.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let replacements = [
        ("dist/", format!("{}/", wasm_dir().display())),
        ("port_value: 9901", "port_value: 0".to_string()),
        ("port_value: 10000", "port_value: 0".to_string()),
        ("port_value: 18081", format!("port_value: {service_port}")),
    ];
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "examples/soap/envoy.yaml no longer contains {from:?}: update this test"
        );
        text = text.replace(from, &to);
    }
    text
}

const PRICE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <m:GetPriceResponse xmlns:m="https://example.org/stock">
      <m:Price>1.90</m:Price>
    </m:GetPriceResponse>
  </soap:Body>
</soap:Envelope>"#;

const FAULT: &str = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body><soap:Fault><faultcode>soap:Server</faultcode>
  <faultstring>Stock database unavailable</faultstring></soap:Fault></soap:Body>
</soap:Envelope>"#;

#[test]
fn the_example_validates() {
    let service = Upstream::start();
    let path = std::env::temp_dir().join(format!("wasmgate-soap-{}.yaml", std::process::id()));
    std::fs::write(&path, example_config(service.port())).unwrap();
    let result = validate(&path);
    let _ = std::fs::remove_file(&path);
    if let Err(output) = result {
        panic!("examples/soap/envoy.yaml does not validate:\n{output}");
    }
}

#[test]
fn json_in_soap_envelope_out_and_back() {
    let service = Upstream::start();
    let envoy = Envoy::start_config(&example_config(service.port()), EnvoyOptions::default());
    let client = envoy.client();
    service.script([
        Scripted::status(200)
            .header("content-type", "text/xml; charset=utf-8")
            .body(PRICE),
        Scripted::status(500)
            .header("content-type", "text/xml; charset=utf-8")
            .body(FAULT),
    ]);
    let response = client.send(
        "POST",
        "/stock/price",
        &[("content-type", "application/json")],
        br#"{"GetPrice": {"Item": "Apple & Pear"}}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        serde_json::json!({"GetPriceResponse": {"Price": "1.90"}})
    );
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    let received = service.received();
    let sent = &received[0];
    assert_eq!(sent["path"], "/StockService");
    assert_eq!(sent["method"], "POST");
    assert_eq!(
        sent["headers"]["soapaction"],
        "\"https://example.org/stock/GetPrice\""
    );
    assert_eq!(sent["headers"]["content-type"], "text/xml; charset=utf-8");
    assert_eq!(
        sent["body"],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soap:Envelope xmlns=\"https://example.org/stock\" \
         xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <GetPrice><Item>Apple &amp; Pear</Item></GetPrice></soap:Body></soap:Envelope>"
    );
    assert_eq!(
        sent["headers"]["content-length"],
        sent["body_len"].to_string()
    );

    // A SOAP fault: the service failed, so the client gets 502 and the fault as JSON.
    let response = client.send(
        "POST",
        "/stock/price",
        &[("content-type", "application/json")],
        br#"{"GetPrice": {"Item": "Apple"}}"#,
    );
    assert_eq!(response.status, 502);
    assert_eq!(
        response.json(),
        serde_json::json!({"Fault": {"faultcode": "soap:Server",
                                     "faultstring": "Stock database unavailable"}})
    );
    // Not JSON: refused before the service.
    let response = client.send(
        "POST",
        "/stock/price",
        &[("content-type", "text/plain")],
        b"Apple",
    );
    assert_eq!(response.status, 415);
    assert_eq!(service.attempts(), 2);
}
