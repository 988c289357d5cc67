//! XML <-> JSON: the mapping, and the documents that try to get around the limits.

use super::*;
use serde_json::{json, Value};

fn to_json(xml: &str, options: &ToJson) -> Result<Value, Unconvertible> {
    xml_to_json(xml.as_bytes(), options).map(|bytes| serde_json::from_slice(&bytes).unwrap())
}

fn plain(xml: &str) -> Result<Value, Unconvertible> {
    to_json(xml, &ToJson::default())
}

fn to_xml(body: &str, options: &ToXml) -> Result<String, Unconvertible> {
    json_to_xml(body.as_bytes(), options)
        .unwrap()
        .map(|bytes| String::from_utf8(bytes).unwrap())
}

const SOAP_RESPONSE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <m:GetPriceResponse xmlns:m="https://example.org/stock">
      <m:Price currency="EUR">1.90</m:Price>
      <m:Tag>a</m:Tag><m:Tag>b &amp; c</m:Tag>
      <m:Note><![CDATA[<raw> & text]]></m:Note>
      <m:Empty/>
      <!-- dropped -->
    </m:GetPriceResponse>
  </soap:Body>
</soap:Envelope>"#;

#[test]
fn the_mapping_with_prefixes_kept() {
    let value = plain(SOAP_RESPONSE).unwrap();
    assert_eq!(
        value,
        json!({"soap:Envelope": {
            "@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
            "soap:Body": {"m:GetPriceResponse": {
                "@xmlns:m": "https://example.org/stock",
                "m:Price": {"@currency": "EUR", "#text": "1.90"},
                "m:Tag": ["a", "b & c"],
                "m:Note": "<raw> & text",
                "m:Empty": null
            }}
        }})
    );
}

#[test]
fn prefixes_stripped_unwrapped_and_forced_arrays() {
    let options = ToJson {
        strip_prefixes: true,
        arrays: vec!["Price".into()],
        unwrap: vec!["Envelope".into(), "Body".into()],
    };
    let value = to_json(SOAP_RESPONSE, &options).unwrap();
    assert_eq!(
        value,
        json!({"GetPriceResponse": {
            "Price": [{"@currency": "EUR", "#text": "1.90"}],
            "Tag": ["a", "b & c"],
            "Note": "<raw> & text",
            "Empty": null
        }})
    );
    // A document that is not the one to unwrap is not converted.
    assert!(to_json("<Other/>", &options).is_err());
    assert!(to_json(
        "<s:Envelope xmlns:s='u'><s:Body/><s:Body/></s:Envelope>",
        &options
    )
    .is_err());
    // Member order follows the document (groups by first appearance).
    let bytes = xml_to_json(b"<r><b>1</b><a>2</a><b>3</b></r>", &ToJson::default()).unwrap();
    assert_eq!(bytes, br#"{"r":{"b":["1","3"],"a":"2"}}"#);
}

#[test]
fn text_entities_and_empty_elements() {
    assert_eq!(plain("<a/>").unwrap(), json!({"a": null}));
    assert_eq!(plain("<a></a>").unwrap(), json!({"a": null}));
    assert_eq!(plain("<a> x </a>").unwrap(), json!({"a": " x "}));
    assert_eq!(
        plain("<a>&#65;&#x42;&lt;&gt;&quot;&apos;&amp;</a>").unwrap(),
        json!({"a": "AB<>\"'&"})
    );
    assert_eq!(
        plain("<a k='&lt;1&amp;'>t<b/>u</a>").unwrap(),
        json!({"a": {"@k": "<1&", "#text": "tu", "b": null}})
    );
}

#[test]
fn entity_expansion_and_doctype_are_refused() {
    let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"#;
    assert_eq!(
        plain(billion_laughs).unwrap_err(),
        Unconvertible("a DOCTYPE")
    );
    let external = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
    assert!(plain(external).is_err());
    // Without a DOCTYPE, an entity that is not predefined is refused, not left in place.
    assert_eq!(
        plain("<r>&x;</r>").unwrap_err(),
        Unconvertible("an entity that is not predefined")
    );
    assert!(plain("<r a='&x;'/>").is_err());
    assert!(plain("<r>&#0;</r>").is_err());
}

#[test]
fn depth_is_bounded() {
    let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(plain(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(
        plain(&nested(MAX_DEPTH + 1)).unwrap_err(),
        Unconvertible("nested too deeply")
    );
    // Far deeper (no stack trouble: refused at the limit, while reading).
    assert!(plain(&nested(100_000)).is_err());
}

#[test]
fn not_well_formed_documents() {
    for bad in [
        "",
        "text",
        "<a>",
        "<a></b>",
        "<a/><b/>",
        "<a/>trailing",
        "lead<a/>",
        "<a b='1' b='2'/>",
        "<a b=1/>",
        "<a>&</a>",
        "<?xml version='1.0' encoding='ISO-8859-1'?><a/>",
        "<a><!-- -- --></a>",
    ] {
        assert!(plain(bad).is_err(), "{bad:?}");
    }
    assert!(xml_to_json(b"<a>\xff</a>", &ToJson::default()).is_err());
    // Prefixed attributes keep their prefix, so stripping never makes two of them collide.
    let strip = ToJson {
        strip_prefixes: true,
        ..ToJson::default()
    };
    assert_eq!(
        to_json("<x:a x:id='1' y:id='2' xmlns:x='u' xmlns:y='v'/>", &strip).unwrap(),
        json!({"a": {"@x:id": "1", "@y:id": "2"}})
    );
}

#[test]
fn large_documents_stay_linear() {
    // Many siblings with distinct names: grouping sorts, it does not compare every pair.
    let children: String = (0..20_000).map(|i| format!("<e{i}/>")).collect();
    let value = plain(&format!("<r>{children}</r>")).unwrap();
    assert_eq!(value["r"].as_object().unwrap().len(), 20_000);
    // Many attributes: duplicates are found without comparing every pair.
    let attributes: String = (0..50_000).map(|i| format!(" p:a{i}='1'")).collect();
    let many = format!("<r xmlns:p='u'{attributes}/>");
    let strip = ToJson {
        strip_prefixes: true,
        ..ToJson::default()
    };
    assert_eq!(
        to_json(&many, &strip).unwrap()["r"]
            .as_object()
            .unwrap()
            .len(),
        50_000
    );
    assert!(plain(&format!("<r{attributes} p:a7='2' xmlns:p='u'/>")).is_err());
    let huge_attribute = format!("<r a='{}'/>", "x".repeat(100_000));
    assert_eq!(
        plain(&huge_attribute).unwrap()["r"]["@a"]
            .as_str()
            .unwrap()
            .len(),
        100_000
    );
}

fn soap() -> ToXml {
    ToXml {
        wrap: vec!["soap:Envelope".into(), "soap:Body".into()],
        declare: vec![
            ("m".into(), "https://example.org/stock".into()),
            (
                "soap".into(),
                "http://schemas.xmlsoap.org/soap/envelope/".into(),
            ),
        ],
    }
}

#[test]
fn json_to_xml_the_mapping() {
    let body = r##"{"m:GetPrice": {"@id": 7, "m:Item": "Apple & <Pear>", "m:Qty": 1.50,
                   "m:Big": 12345678901234567890123, "m:Tag": ["a", "b"], "m:None": null,
                   "m:Blank": "", "m:Ok": true, "m:Price": {"@currency": "EUR", "#text": "1.90"}}}"##;
    let xml = to_xml(body, &soap()).unwrap();
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soap:Envelope xmlns:m=\"https://example.org/stock\" xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><m:GetPrice id=\"7\"><m:Item>Apple &amp; &lt;Pear&gt;</m:Item><m:Qty>1.50</m:Qty>\
         <m:Big>12345678901234567890123</m:Big><m:Tag>a</m:Tag><m:Tag>b</m:Tag><m:None/>\
         <m:Blank></m:Blank><m:Ok>true</m:Ok><m:Price currency=\"EUR\">1.90</m:Price></m:GetPrice>\
         </soap:Body></soap:Envelope>"
    );
    // Without a wrap the object's one member is the root.
    let xml = to_xml(r#"{"order": {"id": "1"}}"#, &ToXml::default()).unwrap();
    assert!(xml.ends_with("<order><id>1</id></order>"), "{xml}");
}

#[test]
fn json_that_has_no_xml_form_is_refused() {
    let plain = ToXml::default();
    for (body, options) in [
        (r#"[1]"#, &plain),
        (r#""text""#, &plain),
        (r#"{"a": 1, "b": 2}"#, &plain),
        (r#"{}"#, &plain),
        (r#"{"a": [1]}"#, &plain),
        (r#"{"a><b": 1}"#, &plain),
        (r#"{"r": {"a b": 1}}"#, &plain),
        (r#"{"r": {"1a": 1}}"#, &plain),
        (r#"{"r": {"@x y": 1}}"#, &plain),
        (r#"{"r": {"@x": {"o": 1}}}"#, &plain),
        (r#"{"r": {"a": [[1]]}}"#, &plain),
        (r#"{"r": "\u0001"}"#, &plain),
        (r#"{"r": {"@a": "\u0000"}}"#, &plain),
        (r#"{"@a": 1}"#, &soap()),
    ] {
        assert!(to_xml(body, options).is_err(), "{body}");
    }
    let deep = format!(
        "{}1{}",
        r#"{"a":"#.repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(
        to_xml(&deep, &plain).unwrap_err(),
        Unconvertible("nested too deeply")
    );
    // Invalid JSON and duplicate names are the JSON edits' errors.
    assert_eq!(
        json_to_xml(b"{\"a\": ", &plain).unwrap_err(),
        Invalid::Syntax
    );
    assert_eq!(
        json_to_xml(br#"{"a": {"b": 1, "b": 2}}"#, &plain).unwrap_err(),
        Invalid::DuplicateName
    );
}

#[test]
fn round_trip() {
    let body = r#"{"r": {"@id": "1", "a": ["x", "y"], "b": {"c": "z"}, "e": null}}"#;
    let xml = to_xml(body, &ToXml::default()).unwrap();
    let back = plain(&xml).unwrap();
    assert_eq!(back, serde_json::from_str::<Value>(body).unwrap());
}

#[test]
fn xml_names() {
    for good in ["a", "_a", "a-b.c", "m:Price", "é", "a1"] {
        assert!(valid_name(good), "{good}");
    }
    for bad in [
        "", "1a", "-a", ".a", "a b", "a>", ":a", "a:", "a:b:c", "a\"", "@a", "#text",
    ] {
        assert!(!valid_name(bad), "{bad}");
    }
}
