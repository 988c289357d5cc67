//! `wasmgate` CLI: every subcommand, its help and errors, and round trips through a real Envoy:
//! a token minted and requests signed by the CLI pass jwt-auth and hmac-auth, and a broken
//! configuration gives the filter's own log line.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Upstream};

fn wasmgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run wasmgate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = wasmgate(args);
    assert!(
        out.status.success(),
        "wasmgate {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs and expects failure with exactly one line on stderr; returns it.
fn fails(args: &[&str]) -> String {
    let out = wasmgate(args);
    assert!(!out.status.success(), "wasmgate {args:?} should fail");
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err.trim_end().to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmgate-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn every_subcommand_has_help() {
    let top = ok(&["--help"]);
    for sub in ["validate", "schema", "token", "keys", "sign", "apikey"] {
        assert!(top.contains(sub), "{top}");
        let help = ok(&[sub, "--help"]);
        assert!(
            help.contains(&format!("Usage: wasmgate {sub}")),
            "{sub}: {help}"
        );
    }
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let line = fails(&["validate", "no-such-filter", "x.json"]);
    assert!(line.contains("unknown filter \"no-such-filter\""), "{line}");
    let line = fails(&["validate", "jwt-auth", "/nonexistent.json"]);
    assert!(
        line.starts_with("wasmgate: cannot read /nonexistent.json"),
        "{line}"
    );
    let line = fails(&["sign", "nope", "--secret", "s"]);
    assert!(line.contains("unknown scheme \"nope\""), "{line}");
    let line = fails(&["sign", "standard_webhooks", "--secret", "not base64!"]);
    assert!(line.contains("not valid base64"), "{line}");
    let line = fails(&["token", "--secret", &"s".repeat(32), "--exp", "soon"]);
    assert!(line.contains("--exp"), "{line}");
    let line = fails(&["token", "--secret", "short"]);
    assert!(line.contains("shorter than 32 bytes"), "{line}");
    let line = fails(&["keys", "--alg", "XX1"]);
    assert!(line.contains("unknown algorithm"), "{line}");
    let line = fails(&["sign", "custom", "--secret", "s"]);
    assert!(line.contains("--config"), "{line}");
}

/// The shipped Envoy configs and Istio manifests that hold wasmgate filters.
fn shipped_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["envoy", "examples/istio"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            // Manifests without a WasmPlugin (Deployments, compose files) are not configs.
            let wasm = text.contains("kind: WasmPlugin") || text.contains("wasm.v3.Wasm");
            if name.ends_with(".yaml") && wasm {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_example_validates() {
    let files = shipped_files();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let env = [
            "--env",
            "GITHUB_WEBHOOK_SECRET=a",
            "--env",
            "OLD_GITHUB_WEBHOOK_SECRET=b",
            "--env",
            "STRIPE_WEBHOOK_SECRET=c",
            "--env",
            "PAYMENTS_CLIENT_SECRET=d",
            "--env",
            "CRM_API_KEY=e",
        ];
        let mut args = vec!["validate", file.to_str().unwrap()];
        args.extend_from_slice(&env);
        let out = ok(&args);
        assert!(out.starts_with("ok: "), "{}: {out}", file.display());
    }
    // A filter name restricts an Envoy config to that filter's configurations.
    let out = ok(&["validate", "retry", "envoy/demo.yaml"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("(retry)"), "{out}");
}

/// Every configuration shipped in envoy/ and examples/istio/ conforms to its filter's schema.
#[test]
fn shipped_configs_conform_to_the_schemas() {
    let mut validators = std::collections::BTreeMap::new();
    for filter in [
        "credential-inject",
        "hmac-auth",
        "jwt-auth",
        "key-auth",
        "rate-limit",
        "retry",
        "transform",
        "chain",
    ] {
        let schema: Value = serde_json::from_str(&ok(&["schema", filter])).unwrap();
        assert_eq!(schema["title"], format!("wasmgate {filter} configuration"));
        let validator = jsonschema::validator_for(&schema).unwrap();
        validators.insert(filter.to_string(), validator);
    }
    let mut checked = std::collections::BTreeSet::new();
    for file in shipped_files() {
        let out = ok(&["validate", "--extract", file.to_str().unwrap()]);
        for line in out.lines() {
            let found: Value = serde_json::from_str(line).unwrap();
            let filter = found["filter"].as_str().unwrap();
            // A chain's stages are checked against their own filters' schemas too.
            let stages = found["config"]["stages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let configs = std::iter::once((filter, found["config"].clone())).chain(
                stages
                    .iter()
                    .map(|s| (s["filter"].as_str().unwrap(), s["config"].clone())),
            );
            for (filter, config) in configs {
                let errors: Vec<String> = validators[filter]
                    .iter_errors(&config)
                    .map(|e| format!("{} at {}", e, e.instance_path))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{} {} ({filter}): {errors:?}",
                    file.display(),
                    found["location"]
                );
                checked.insert(filter.to_string());
            }
        }
    }
    assert_eq!(
        checked.len(),
        8,
        "every filter and the chain have a shipped config: {checked:?}"
    );
    // And the schema refuses what the filter refuses structurally.
    let bad =
        json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "tolerance": "5m"});
    assert!(!validators["hmac-auth"].is_valid(&bad));
}

#[test]
fn plain_json_and_yaml_configs() {
    let dir = temp_dir("plain");
    let good = write(
        &dir,
        "good.yaml",
        "scheme: github\nsecrets:\n- id: current\n  value: s3cret\n",
    );
    assert!(ok(&["validate", "hmac-auth", &good]).starts_with("ok: "));
    let bad = write(&dir, "bad.json", r#"{"providers": {"p": {"isuer": "x"}}}"#);
    let out = wasmgate(&["validate", "jwt-auth", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("wasmgate jwt-auth: invalid configuration at providers.p.isuer"),
        "{}",
        stderr(&out)
    );
    // An empty configuration is `{}`, as in the filter.
    let empty = write(&dir, "empty.json", "");
    assert!(ok(&["validate", "transform", &empty]).starts_with("ok: "));
    // A plain configuration needs the filter name.
    let line = fails(&["validate", &good]);
    assert!(line.contains("give the filter"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A minimal Envoy config running `filter` with `config` (JSON) on one listener.
fn envoy_config(filter: &str, config: &str) -> String {
    let module = wasmgate_e2e::wasm_dir().join(format!("{}.wasm", filter.replace('-', "_")));
    let value = serde_json::to_string(config).unwrap();
    format!(
        r#"static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, direct_response: {{status: 200}}}}]}}
          http_filters:
          - name: {filter}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {filter}
                root_id: {filter}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{module}"}}}}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {value}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        module = module.display()
    )
}

/// Envoy's own log line for a configuration its filter refuses (`--mode init_only`), and the
/// Envoy config file.
fn envoy_log_line(dir: &Path, filter: &str, config: &str) -> (String, String) {
    let path = write(dir, "envoy.yaml", &envoy_config(filter, config));
    let output = Command::new(wasmgate_e2e::envoy_bin())
        .args([
            "--mode",
            "init_only",
            "--use-dynamic-base-id",
            "-l",
            "error",
            "-c",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "Envoy must refuse the {filter} configuration"
    );
    let log = format!("{}{}", stdout(&output), stderr(&output));
    let prefix = format!("wasmgate {filter}: invalid configuration at ");
    let line = log
        .lines()
        .find_map(|l| l.find(&prefix).map(|i| l[i..].trim_end().to_string()))
        .unwrap_or_else(|| panic!("no filter log line in:\n{log}"));
    (line, path)
}

#[test]
fn broken_config_gives_the_filter_log_line() {
    let cases = [
        (
            "hmac-auth",
            json!({"scheme": "github", "secrets": [{"id": "a", "value": "s"}], "timestamp_tolerance": "5 minutes"}),
        ),
        (
            "hmac-auth",
            json!({"scheme": "github", "secrets": [{"id": "a b", "value": "s"}]}),
        ),
        (
            "jwt-auth",
            json!({"providers": {"p": {"issuer": "x", "local_jwks": {"inline_string": "{}"}, "audience": ["a"]}}}),
        ),
        (
            "key-auth",
            json!({"clients": [{"id": "a", "keys": [{"secret": {"value": "short"}}]}]}),
        ),
        (
            "credential-inject",
            json!({"credentials": {"a": {"header": {"name": "host", "value": {"value": "v"}}}}}),
        ),
        ("rate-limit", json!({"unknown_field": 1})),
        ("retry", json!({"unknown_field": 1})),
        ("transform", json!({"request": {"headers": {"sett": {}}}})),
    ];
    for (i, (filter, config)) in cases.into_iter().enumerate() {
        let dir = temp_dir(&format!("broken-{i}"));
        let (line, envoy_config) = envoy_log_line(&dir, filter, &config.to_string());
        let plain = write(&dir, "config.json", &config.to_string());
        let out = wasmgate(&["validate", filter, &plain]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr(&out).trim_end(), line, "plain {filter} config");
        // The same configuration inside the Envoy config.
        let out = wasmgate(&["validate", &envoy_config]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with(&format!("{line} (in ")),
            "{filter}: {}",
            stderr(&out)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn bearer_status(envoy: &Envoy, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    envoy
        .client()
        .send("GET", "/api", &[("authorization", &auth)], b"")
        .status
}

#[test]
fn minted_tokens_pass_jwt_auth_in_envoy() {
    let dir = temp_dir("keys");
    let mut providers = serde_json::Map::new();
    let mut tokens = Vec::new();
    for (alg, kid) in [
        ("RS256", "rsa"),
        ("ES256", "ec"),
        ("EdDSA", "ed"),
        ("ES384", "ec384"),
    ] {
        let prefix = dir.join(kid).display().to_string();
        let jwks = ok(&["keys", "--alg", alg, "--kid", kid, "--out", &prefix]);
        let jwks: Value = serde_json::from_str(&jwks).unwrap();
        assert!(jwks["keys"][0].get("d").is_none(), "public JWKS only");
        providers.insert(
            kid.into(),
            json!({"issuer": format!("https://{kid}.example"), "audiences": ["api"],
                   "local_jwks": {"inline_string": jwks.to_string()}}),
        );
        // From the PEM and from the private JWK set.
        for key in [
            format!("{prefix}.pem"),
            format!("{prefix}.private.jwks.json"),
        ] {
            let iss = format!("https://{kid}.example");
            let token = ok(&[
                "token",
                "--key",
                &key,
                "--kid",
                kid,
                "--iss",
                &iss,
                "--aud",
                "api",
                "--claim",
                "sub=alice",
                "--exp",
                "1h",
            ]);
            tokens.push((format!("{alg} {key}"), token.trim().to_string()));
        }
    }
    // HS256 with the secret, and the JWKS of `keys --alg HS256`.
    providers.insert(
        "hs".into(),
        json!({"issuer": "https://hs.example", "audiences": ["api"], "local_jwks": {"inline_string":
            json!({"keys": [{"kty": "oct", "kid": "hs", "alg": "HS256", "k": "c2VjcmV0LXRleHQtb2YtYXQtbGVhc3QtMzItYnl0ZXM"}]}).to_string()}}),
    );
    let hs = ok(&[
        "token",
        "--secret",
        "secret-text-of-at-least-32-bytes",
        "--kid",
        "hs",
        "--iss",
        "https://hs.example",
        "--aud",
        "api",
    ]);
    tokens.push(("HS256".into(), hs.trim().to_string()));
    let expired = ok(&[
        "token",
        "--secret",
        "secret-text-of-at-least-32-bytes",
        "--kid",
        "hs",
        "--iss",
        "https://hs.example",
        "--aud",
        "api",
        "--exp",
        "-1h",
    ]);
    let config = json!({ "providers": providers });
    let upstream = Upstream::start();
    let envoy = Envoy::start_with(
        "jwt-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("JWT_CONFIG", config.to_string()),
        ],
        EnvoyOptions::default(),
    );
    for (what, token) in &tokens {
        assert_eq!(bearer_status(&envoy, token), 200, "{what}");
    }
    assert_eq!(bearer_status(&envoy, expired.trim()), 401, "expired");
    let received = upstream.received();
    assert_eq!(received.len(), tokens.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each scheme on its own path prefix, one Envoy.
fn hmac_config() -> Value {
    let rule = |prefix: &str, scheme: &str, secret: Value, extra: Value| {
        let mut rule =
            json!({"match": {"path_prefix": prefix}, "scheme": scheme, "secrets": [secret]});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                rule[k] = v;
            }
        }
        rule
    };
    json!({
        "scheme": "github",
        "secrets": [{"id": "gh", "value": "github-secret"}],
        "rules": [
            rule("/stripe/", "stripe", json!({"id": "st", "value": "whsec_stripe"}), json!(null)),
            rule("/slack/", "slack", json!({"id": "sl", "value": "slack-secret"}), json!(null)),
            rule("/shopify/", "shopify", json!({"id": "sh", "value": "shopify-secret"}), json!(null)),
            rule("/standard/", "standard_webhooks", json!({"id": "sw", "value": "whsec_c3RhbmRhcmQtc2VjcmV0"}), json!(null)),
            rule("/httpsig/", "http_signature", json!({"id": "client-1", "value": "httpsig-secret"}), json!(null)),
            rule("/sigv4/", "aws_sigv4", json!({"id": "AKIDEXAMPLE", "value": "sigv4-secret"}),
                 json!({"aws_sigv4": {"region": "us-east-1", "service": "execute-api"}})),
            rule("/custom/", "custom", json!({"id": "cu", "value": "custom-secret", "encoding": "utf8"}),
                 json!({"custom": {"signature_header": "x-signature", "signature_prefix": "sha512=",
                        "algorithm": "sha512", "encoding": "base64", "timestamp_header": "x-timestamp",
                        "signed_payload": "{timestamp}:{body}"}})),
        ]
    })
}

#[test]
fn signed_requests_pass_hmac_auth_in_envoy() {
    let config = hmac_config();
    let dir = temp_dir("sign");
    let config_file = write(&dir, "hmac.json", &config.to_string());
    let body_file = write(&dir, "body.json", "{\"event\": \"ping\", \"n\": 1}\n");
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "hmac-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("HMAC_CONFIG", config.to_string()),
            ("FIXED_ENV", "unused".to_string()),
        ],
    );
    let base = envoy.client().base().to_string();
    let cases: [(&str, &str, &[&str]); 8] = [
        ("github", "/hooks/github", &["--secret", "github-secret"]),
        ("stripe", "/stripe/events", &["--secret", "whsec_stripe"]),
        ("slack", "/slack/events", &["--secret", "slack-secret"]),
        (
            "shopify",
            "/shopify/orders",
            &["--secret", "shopify-secret"],
        ),
        (
            "standard_webhooks",
            "/standard/x",
            &["--secret", "whsec_c3RhbmRhcmQtc2VjcmV0"],
        ),
        (
            "http_signature",
            "/httpsig/api?x=1",
            &["--secret", "httpsig-secret", "--key-id", "client-1"],
        ),
        (
            "aws_sigv4",
            "/sigv4/items?b=2&a=1",
            &["--secret", "sigv4-secret", "--key-id", "AKIDEXAMPLE"],
        ),
        ("custom", "/custom/x", &["--config", &config_file]),
    ];
    let body = std::fs::read(&body_file).unwrap();
    for (scheme, path, extra) in cases {
        let url = format!("{base}{path}");
        let mut args = vec![
            "sign", scheme, "--url", &url, "--body", &body_file, "--format", "json",
        ];
        args.extend_from_slice(extra);
        let out: Value = serde_json::from_str(&ok(&args)).unwrap();
        let headers: Vec<(String, String)> = out["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_string(),
                    h[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let r = envoy.client().send("POST", path, &refs, &body);
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
        // The same headers with another body are refused.
        let r = envoy
            .client()
            .send("POST", path, &refs, b"{\"event\": \"tampered\"}");
        assert_eq!(r.status, 401, "{scheme} tampered: {}", r.text());
    }
    // --format curl prints a runnable command with the body byte for byte.
    let curl = ok(&[
        "sign",
        "github",
        "--secret",
        "github-secret",
        "--url",
        &format!("{base}/hooks/curl"),
        "--data",
        "{\"it's\": 1}",
        "--format",
        "curl",
    ]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} -o /dev/null -w '%{{http_code}}'", curl.trim()))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "200", "{curl}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One key in 64 that `wasmgate apikey` makes starts with `-` (URL-safe base64): `--digest-of`
/// takes it as the key, not as an option.
#[test]
fn digest_of_a_key_starting_with_a_hyphen() {
    let digest = ok(&["apikey", "--digest-of", "-Im41-key-starting-with-a-hyphen"]);
    assert_eq!(digest.trim().len(), 64, "{digest}");
}

/// A key made by `wasmgate apikey`, configured by the digest it printed, passes key-auth in
/// Envoy; another fresh key does not.
#[test]
fn made_api_keys_pass_key_auth_in_envoy() {
    let out = ok(&["apikey", "--client", "cli-team"]);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no key in: {out}"));
    let snippet_start = out
        .find('{')
        .unwrap_or_else(|| panic!("no snippet in: {out}"));
    let client: Value = serde_json::from_str(&out[snippet_start..]).unwrap();
    assert_eq!(client["id"], "cli-team");
    assert!(
        !out[snippet_start..].contains(key),
        "the snippet holds the digest only"
    );
    let digest = ok(&["apikey", "--digest-of", key]);
    assert_eq!(client["keys"][0]["sha256"], digest.trim());
    let config = json!({"clients": [client]}).to_string();
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "key-auth.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("KEY_AUTH_CONFIG", config),
        ],
    );
    let status = |key: &str| {
        envoy
            .client()
            .send("GET", "/", &[("x-api-key", key)], b"")
            .status
    };
    assert_eq!(status(key), 200);
    let other = ok(&["apikey", "--quiet"]);
    assert_eq!(status(other.trim()), 401);
}
