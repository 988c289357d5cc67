//! Configurations that would make the check weaker than written are refused with the JSON path.

use super::*;
use crate::keys::Lookup;

const KEY_A: &str = "team-a-key-0123456789";
const KEY_B: &str = "partner-x-key-012345";

fn sha(key: &str) -> String {
    hex::encode(keys::digest(key))
}

fn config(extra: &str) -> String {
    format!(
        r#"{{"clients": [
            {{"id": "team-a", "keys": [{{"sha256": "{}"}}], "scopes": ["orders:read", "orders:write"]}},
            {{"id": "partner-x", "keys": [{{"secret": {{"value": "{KEY_B}"}}}}], "scopes": ["orders:read"]}}
        ]{extra}}}"#,
        sha(KEY_A)
    )
}

fn err(json: &str) -> ConfigError {
    match parse(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e,
    }
}

#[test]
fn the_issue_example_compiles() {
    let json = config(
        r#", "key_sources": [{"header": "x-api-key"}, {"header": "authorization", "value_prefix": "Bearer "},
                             {"query": "api_key"}, {"cookie": "api_key"}],
           "forward": {"client_header": "x-client-id", "scopes_header": "x-client-scopes", "hide_credentials": true},
           "rules": [
             {"match": {"path_prefix": "/health"}, "enabled": false},
             {"match": {"path_prefix": "/orders", "methods": ["POST"]}, "required_scopes": ["orders:write"]},
             {"match": {"path_prefix": "/admin"}, "allowed_clients": ["team-a"]},
             {"match": {"path_prefix": "/public"}, "allow_missing": true}
           ]"#,
    );
    let config = parse(json.as_bytes()).unwrap();
    assert_eq!(config.clients.len(), 2);
    assert_eq!(config.clients[0].scopes_header, "orders:read orders:write");
    assert_eq!(config.keys.lookup(KEY_A, 1), Lookup::Valid(0));
    assert_eq!(config.keys.lookup(KEY_B, 1), Lookup::Valid(1));
    assert_eq!(config.sources.len(), 4);
    assert!(config.forward.hide_credentials);
}

#[test]
fn defaults() {
    let config = parse(config("").as_bytes()).unwrap();
    assert_eq!(
        config.sources,
        vec![Source::Header {
            name: "x-api-key".into(),
            prefix: None
        }]
    );
    assert_eq!(config.forward.client_header, "x-client-id");
    assert_eq!(config.forward.scopes_header, "x-client-scopes");
    assert!(config.forward.hide_credentials);
}

#[test]
fn only_digests_are_kept() {
    let config = parse(config("").as_bytes()).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(KEY_B), "the key itself is not kept");
}

#[test]
fn rotation_periods() {
    let json = format!(
        r#"{{"clients": [{{"id": "a", "keys": [
            {{"sha256": "{}", "not_after": "2027-01-31T00:00:00Z"}},
            {{"secret": {{"value": "{KEY_B}"}}, "not_before": "2027-01-01T00:00:00Z"}}]}}]}}"#,
        sha(KEY_A)
    );
    let config = parse(json.as_bytes()).unwrap();
    let jan_31_2027 = 1_801_353_600;
    let jan_1_2027 = 1_798_761_600;
    assert_eq!(config.keys.lookup(KEY_A, jan_31_2027 - 1), Lookup::Valid(0));
    assert_eq!(config.keys.lookup(KEY_A, jan_31_2027), Lookup::Retired);
    assert_eq!(config.keys.lookup(KEY_B, jan_1_2027 - 1), Lookup::Retired);
    assert_eq!(config.keys.lookup(KEY_B, jan_1_2027), Lookup::Valid(0));
}

#[test]
fn weakening_or_mistaken_configurations_are_refused() {
    let digest = sha(KEY_A);
    let cases: Vec<(String, &str, &str)> = vec![
        (r#"{"clients": []}"#.into(), "clients", "no client"),
        (
            r#"{"clients": [{"id": "a", "keys": []}]}"#.into(),
            "clients[0].keys",
            "at least one key",
        ),
        (
            r#"{"clients": [{"id": "a", "keys": [{"secret": {"value": "short"}}]}]}"#.into(),
            "clients[0].keys[0].secret",
            "shorter than 16",
        ),
        (
            r#"{"clients": [{"id": "a", "keys": [{"sha256": "abcd"}]}]}"#.into(),
            "clients[0].keys[0].sha256",
            "64 hex digits",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "keys": [{{"sha256": "{digest}", "secret": {{"value": "{KEY_A}"}}}}]}}]}}"#
            ),
            "clients[0].keys[0]",
            "exactly one",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "keys": [{{"sha256": "{digest}"}}]}}, {{"id": "b", "keys": [{{"secret": {{"value": "{KEY_A}"}}}}]}}]}}"#
            ),
            "clients[1].keys[0]",
            "the same key as clients[0].keys[0]",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "keys": [{{"sha256": "{digest}"}}]}}, {{"id": "a", "keys": [{{"secret": {{"value": "{KEY_B}"}}}}]}}]}}"#
            ),
            "clients[1].id",
            "same id",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a@b", "keys": [{{"sha256": "{digest}"}}]}}, {{"id": "a_b", "keys": [{{"secret": {{"value": "{KEY_B}"}}}}]}}]}}"#
            ),
            "clients[1].id",
            "metric label",
        ),
        (
            // A label value keeps 64 characters: these two ids would share one.
            format!(
                r#"{{"clients": [{{"id": "{long}x", "keys": [{{"sha256": "{digest}"}}]}}, {{"id": "{long}y", "keys": [{{"secret": {{"value": "{KEY_B}"}}}}]}}]}}"#,
                long = "a".repeat(64)
            ),
            "clients[1].id",
            "metric label",
        ),
        (
            format!(r#"{{"clients": [{{"id": "a b", "keys": [{{"sha256": "{digest}"}}]}}]}}"#),
            "clients[0].id",
            "client id",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "scopes": ["x y"], "keys": [{{"sha256": "{digest}"}}]}}]}}"#
            ),
            "clients[0].scopes[0]",
            "scope",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "keys": [{{"sha256": "{digest}", "not_after": "2027-01-31"}}]}}]}}"#
            ),
            "clients[0].keys[0].not_after",
            "RFC 3339",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "keys": [{{"sha256": "{digest}", "not_after": "2027-01-31T00:00:00+01:00"}}]}}]}}"#
            ),
            "clients[0].keys[0].not_after",
            "UTC",
        ),
        (
            format!(
                r#"{{"clients": [{{"id": "a", "keys": [{{"sha256": "{digest}", "not_before": "2027-02-01T00:00:00Z", "not_after": "2027-01-31T00:00:00Z"}}]}}]}}"#
            ),
            "clients[0].keys[0].not_after",
            "never be valid",
        ),
        (
            config(r#", "key_sources": []"#),
            "key_sources",
            "no key source",
        ),
        (
            config(r#", "key_sources": [{"header": "x-api-key", "query": "k"}]"#),
            "key_sources[0]",
            "exactly one",
        ),
        (
            config(r#", "key_sources": [{"query": "k", "value_prefix": "Bearer "}]"#),
            "key_sources[0]",
            "only for header",
        ),
        (
            config(r#", "key_sources": [{"header": ":path"}]"#),
            "key_sources[0]",
            "not a header name",
        ),
        (
            config(r#", "key_sources": [{"header": "x-api-key"}, {"header": "X-API-Key"}]"#),
            "key_sources[1]",
            "same place",
        ),
        (
            config(r#", "key_sources": [{"cookie": "a=b"}]"#),
            "key_sources[0]",
            "cookie name",
        ),
        (
            config(r#", "forward": {"client_header": "x-api-key"}"#),
            "forward.client_header",
            "also a key source",
        ),
        (
            config(r#", "forward": {"client_header": "x-id", "scopes_header": "x-id"}"#),
            "forward.scopes_header",
            "same header",
        ),
        (
            config(r#", "forward": {"client_header": "authorization"}"#),
            "forward.client_header",
            "cannot carry",
        ),
        (
            config(
                r#", "rules": [{"match": {"path_prefix": "/a"}, "allowed_clients": ["team-b"]}]"#,
            ),
            "rules[0].allowed_clients[0]",
            "no client has the id",
        ),
        (
            config(r#", "rules": [{"match": {"path_prefix": "/a"}, "allowed_clients": []}]"#),
            "rules[0].allowed_clients",
            "lists no client",
        ),
        (
            config(r#", "allowed_clients": ["nobody"]"#),
            "allowed_clients[0]",
            "no client has the id",
        ),
        (
            config(
                r#", "rules": [{"match": {"path_prefix": "/a"}, "enabled": false, "allow_missing": true}]"#,
            ),
            "rules[0]",
            "switches the filter off",
        ),
        (
            config(r#", "rules": [{"match": {"path_prefix": "/a"}, "required_scopes": ["a\"b"]}]"#),
            "rules[0].required_scopes[0]",
            "scope",
        ),
        (
            config(r#", "key_source": []"#),
            "key_source",
            "unknown field",
        ),
    ];
    for (json, path, reason) in cases {
        let e = err(&json);
        assert_eq!(e.path, path, "{json}: {e}");
        assert!(e.reason.contains(reason), "{json}: {e}");
        assert!(
            !e.reason.contains(KEY_A) && !e.reason.contains(KEY_B),
            "no key in errors"
        );
    }
}

#[test]
fn rules_inherit_the_defaults_they_do_not_set() {
    let json = config(
        r#", "required_scopes": ["orders:read"], "allowed_clients": ["team-a"],
           "rules": [{"match": {"path_prefix": "/w"}, "required_scopes": ["orders:write"]},
                     {"match": {"path_prefix": "/p"}, "allow_missing": true}]"#,
    );
    let config = parse(json.as_bytes()).unwrap();
    let policies: Vec<&Policy> = config.policies.all().collect();
    assert_eq!(policies.len(), 3, "the defaults and two rules");
    for policy in &policies {
        assert_eq!(policy.allowed_clients, Some(vec![0]));
    }
    assert_eq!(policies[1].required_scopes, vec!["orders:write"]);
    assert_eq!(policies[2].required_scopes, vec!["orders:read"]);
    assert!(policies[2].allow_missing && !policies[1].allow_missing);
}

#[test]
fn a_secret_from_the_environment() {
    std::env::set_var("WASMGATE_KEY_AUTH_TEST_KEY", KEY_A);
    let json = r#"{"clients": [{"id": "a", "keys": [{"secret": {"env": "WASMGATE_KEY_AUTH_TEST_KEY"}}]}]}"#;
    let config = parse(json.as_bytes()).unwrap();
    assert_eq!(config.keys.lookup(KEY_A, 1), Lookup::Valid(0));
    let e = err(
        r#"{"clients": [{"id": "a", "keys": [{"secret": {"env": "WASMGATE_SURELY_UNSET_KEY"}}]}]}"#,
    );
    assert_eq!(e.path, "clients[0].keys[0].secret");
}

/// The shipped Istio manifest's pluginConfig (JSON inside YAML) is a valid configuration.
#[test]
fn istio_manifest_plugin_config_is_valid() {
    let path = format!(
        "{}/../../examples/istio/key-auth.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("pluginConfig:").unwrap() + "pluginConfig:".len();
    let mut stream =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    let plugin_config = stream.next().unwrap().unwrap();
    let config = parse(plugin_config.to_string().as_bytes()).unwrap();
    assert_eq!(config.keys.len(), 3);
}
