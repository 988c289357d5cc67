//! Configurations that could not work or would leak are refused with the JSON path.

use super::*;

fn err(json: &str) -> ConfigError {
    match parse(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e,
    }
}

const OAUTH2: &str = r#"{"token_endpoint": {"cluster": "idp", "uri": "https://idp.example/oauth/token"},
                         "client_id": "svc", "client_secret": {"value": "s3cret"}}"#;

#[test]
fn the_issue_example_compiles() {
    std::env::set_var("WASMGATE_CI_TEST_PAYMENTS_SECRET", "s3cret");
    std::env::set_var("WASMGATE_CI_TEST_CRM_KEY", "crm-key");
    let json = r#"{
      "credentials": {
        "payments": {"oauth2": {"token_endpoint": {"cluster": "idp", "uri": "https://idp.example/oauth/token", "timeout": "2s"},
                                "client_id": "svc-orders", "client_secret": {"env": "WASMGATE_CI_TEST_PAYMENTS_SECRET"},
                                "auth": "basic", "scopes": ["payments:write"],
                                "params": {"audience": "https://api.payments.example"}}},
        "crm": {"header": {"name": "x-api-key", "value": {"env": "WASMGATE_CI_TEST_CRM_KEY"}}}
      },
      "use": "payments",
      "rules": [{"match": {"hosts": ["api.crm.example"]}, "use": "crm"}],
      "overwrite": false,
      "refresh_before": "60s",
      "purge_on_status": [401]
    }"#;
    let config = parse(json.as_bytes()).unwrap();
    assert_eq!(config.credentials.len(), 2);
    let Kind::Oauth2(grant) = &config.credentials[1].kind else {
        panic!("payments is OAuth2 (sorted after crm)");
    };
    assert_eq!(
        (grant.scheme, grant.authority.as_str(), grant.path.as_str()),
        ("https", "idp.example", "/oauth/token")
    );
    assert_eq!(grant.auth, ClientAuth::Basic);
    assert_eq!(config.refresh_before_ms, 60_000);
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "secrets are redacted"
    );
}

#[test]
fn defaults() {
    let config =
        parse(format!(r#"{{"credentials": {{"p": {{"oauth2": {OAUTH2}}}}}}}"#).as_bytes()).unwrap();
    assert_eq!(config.purge_on_status, vec![401]);
    assert_eq!(config.on_unavailable, OnUnavailable::Deny);
    assert!(!config.overwrite);
    let Kind::Oauth2(grant) = &config.credentials[0].kind else {
        panic!()
    };
    assert_eq!(grant.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(
        config.policies.all().next().unwrap().credential,
        None,
        "no use: nothing injected by default"
    );
}

#[test]
fn mistakes_are_refused_with_their_path() {
    let with = |credential: &str, extra: &str| {
        format!(r#"{{"credentials": {{"p": {credential}}}{extra}}}"#)
    };
    let oauth2 = |body: &str| with(&format!(r#"{{"oauth2": {body}}}"#), "");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            r#"{"credentials": {}}"#.into(),
            "credentials",
            "no credential",
        ),
        (with(r#"{}"#, ""), "credentials.p", "exactly one"),
        (
            format!(r#"{{"credentials": {{"P Q": {{"oauth2": {OAUTH2}}}}}}}"#),
            "credentials.P Q",
            "lowercase",
        ),
        (
            with(&format!(r#"{{"oauth2": {OAUTH2}}}"#), r#", "use": "q""#),
            "use",
            "no credential is named",
        ),
        (
            with(
                &format!(r#"{{"oauth2": {OAUTH2}}}"#),
                r#", "rules": [{"match": {}, "use": "x"}]"#,
            ),
            "rules[0].use",
            "no credential",
        ),
        (
            with(
                &format!(r#"{{"oauth2": {OAUTH2}}}"#),
                r#", "rules": [{"match": {}, "enabled": false, "use": "p"}]"#,
            ),
            "rules[0]",
            "injects nothing",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "ftp://idp/x"}, "client_id": "c", "client_secret": {"value": "s"}}"#,
            ),
            "credentials.p.oauth2.token_endpoint.uri",
            "http",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "https://user@idp/x"}, "client_id": "c", "client_secret": {"value": "s"}}"#,
            ),
            "credentials.p.oauth2.token_endpoint.uri",
            "user info",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "", "uri": "https://idp/x"}, "client_id": "c", "client_secret": {"value": "s"}}"#,
            ),
            "credentials.p.oauth2.token_endpoint.cluster",
            "empty",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "https://idp/x", "timeout": "5m"}, "client_id": "c", "client_secret": {"value": "s"}}"#,
            ),
            "credentials.p.oauth2.token_endpoint.timeout",
            "between",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "https://idp/x"}, "client_id": "", "client_secret": {"value": "s"}}"#,
            ),
            "credentials.p.oauth2.client_id",
            "empty",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "https://idp/x"}, "client_id": "c", "client_secret": {"value": "s"}, "params": {"grant_type": "password"}}"#,
            ),
            "credentials.p.oauth2.params.grant_type",
            "grant itself",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "https://idp/x"}, "client_id": "c", "client_secret": {"value": "s"}, "scopes": ["a b"]}"#,
            ),
            "credentials.p.oauth2.scopes[0]",
            "scope",
        ),
        (
            oauth2(
                r#"{"token_endpoint": {"cluster": "idp", "uri": "https://idp/x"}, "client_id": "c", "client_secret": {"value": "s"}, "auth": "jwt"}"#,
            ),
            "credentials.p.oauth2.auth",
            "unknown variant",
        ),
        (
            with(
                r#"{"header": {"name": "host", "value": {"value": "v"}}}"#,
                "",
            ),
            "credentials.p.header.name",
            "cannot carry",
        ),
        (
            with(
                r#"{"header": {"name": "x key", "value": {"value": "v"}}}"#,
                "",
            ),
            "credentials.p.header.name",
            "not a header name",
        ),
        (
            with(
                r#"{"header": {"name": "x-key", "value": {"value": "v\n"}}}"#,
                "",
            ),
            "credentials.p.header.value",
            "printable",
        ),
        (
            with(
                &format!(r#"{{"oauth2": {OAUTH2}}}"#),
                r#", "purge_on_status": [200]"#,
            ),
            "purge_on_status[0]",
            "4xx and 5xx",
        ),
    ];
    for (json, path, reason) in cases {
        let e = err(&json);
        assert_eq!(e.path, path, "{json}: {e}");
        assert!(e.reason.contains(reason), "{json}: {e}");
        assert!(!e.reason.contains("s3cret"), "no secret in errors");
    }
}

/// The shipped Istio manifest's pluginConfig (JSON inside YAML) is a valid configuration.
#[test]
fn istio_manifest_plugin_config_is_valid() {
    std::env::set_var("PAYMENTS_CLIENT_SECRET", "s3cret");
    std::env::set_var("CRM_API_KEY", "crm-key");
    let path = format!(
        "{}/../../examples/istio/credential-inject.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("pluginConfig:").unwrap() + "pluginConfig:".len();
    let mut stream =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    let plugin_config = stream.next().unwrap().unwrap();
    let config = parse(plugin_config.to_string().as_bytes()).unwrap();
    assert_eq!(config.credentials.len(), 2);
}

#[test]
fn a_credential_name_is_its_own_metric_label() {
    // check_name admits only what label_value keeps, so two names never share a label (the
    // refusal of such names guards a looser check_name).
    let json = format!(
        r#"{{"credentials": {{"a-b": {{"oauth2": {OAUTH2}}}, "a_b": {{"oauth2": {OAUTH2}}}}}}}"#
    );
    let config = parse(json.as_bytes()).unwrap();
    for credential in &config.credentials {
        assert_eq!(label_value(&credential.name), credential.name);
    }
    let longest = "z-_9".repeat(16);
    assert_eq!(check_name(&longest), Ok(()));
    assert_eq!(label_value(&longest), longest);
}
