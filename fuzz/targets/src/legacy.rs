//! transform's legacy-integration parsers: form bodies and XML <-> JSON conversion.

use crate::input::{first_line, text};

/// Line 1: `remove|rename|set|copy <name> [<new name or value>]`; the rest: a form body. After a
/// `remove` no field of that (decoded) name is left; a `copy` of a repeated field is refused.
pub fn form_edit(data: &[u8]) {
    use transform::form::FormEdits;
    use transform::template::{RequestVars, Template};
    let (op, body) = first_line(data);
    let op = text(op);
    let mut words = op.splitn(3, ' ');
    let (kind, name, arg) = (
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
        words.next().unwrap_or_default().to_string(),
    );
    if name.is_empty() {
        return;
    }
    let mut edits = FormEdits::default();
    match kind.as_str() {
        "remove" => edits.remove.push(name.clone()),
        "rename" if !arg.is_empty() && arg != name => edits.rename.push((name.clone(), arg)),
        "copy" => edits.to_headers.push((name.clone(), "x-copy".into())),
        _ => match Template::parse(&arg) {
            Ok(value) => edits.set.push((name.clone(), value)),
            Err(_) => return,
        },
    }
    let vars = RequestVars::new(&[], None, None);
    let Ok((edited, _, headers)) = edits.apply(body, &vars) else {
        return;
    };
    assert!(headers.len() <= 1, "one header per copied field");
    let out = edited.unwrap_or_else(|| body.to_vec());
    let out = std::str::from_utf8(&out);
    assert!(out.is_ok(), "an edited form is UTF-8");
    let out = out.unwrap_or_default();
    if kind == "remove" {
        assert!(
            out.split('&').all(|field| {
                let key = field.split_once('=').map_or(field, |(k, _)| k);
                transform::query::decode(key) != name
            }),
            "a removed field is gone"
        );
    }
}

/// First byte: options (bit 0: strip prefixes, bit 1: convert the body as JSON to XML first);
/// the rest: a body. Whatever converts must give JSON that parses, and XML that reads back.
pub fn xml_convert(data: &[u8]) {
    use transform::xml::{json_to_xml, xml_to_json, ToJson, ToXml};
    let Some((&options, body)) = data.split_first() else {
        return;
    };
    let to_json = ToJson {
        strip_prefixes: options & 1 == 1,
        arrays: vec!["a".into(), "item".into()],
        unwrap: Vec::new(),
    };
    let xml = if options & 2 == 2 {
        match json_to_xml(body, &ToXml::default()) {
            Ok(Ok(xml)) => {
                assert!(
                    xml_to_json(&xml, &ToJson::default()).is_ok(),
                    "XML written from JSON reads back"
                );
                xml
            }
            _ => return,
        }
    } else {
        body.to_vec()
    };
    if let Ok(json) = xml_to_json(&xml, &to_json) {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&json).is_ok(),
            "converted XML is JSON"
        );
    }
}
