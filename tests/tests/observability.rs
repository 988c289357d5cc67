//! The observability kit (`examples/observability/`) checked by real tools, and the labelled
//! metrics proven through a real Prometheus:
//!
//! - `promtool check rules` and `promtool test rules` on the alert rules and their unit tests;
//! - every PromQL expression of the Grafana dashboard (and of the alerts) is valid for promtool
//!   and names only metrics, labels and outcomes listed in [`METRICS`], which holds exactly the
//!   names the filter READMEs document, every one of them on the dashboard;
//! - a real Prometheus (Debian's `prometheus`, on loopback, scraping every second) scrapes a real
//!   Envoy running key-auth, rate-limit and transform with the `stats_tags` and Istio's default
//!   stats inclusion list; after known traffic its HTTP API shows the labelled series with the
//!   expected counts, every series it holds is in [`METRICS`], the alert rules load and evaluate
//!   without errors and every dashboard query runs;
//! - every wasmgate series the shipped demo (`envoy/demo.yaml`: all seven filters, and a retry
//!   circuit opened) exposes is in [`METRICS`].
//!
//! `make test` installs prometheus and promtool (Makefile target `prometheus`).

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasmgate_e2e::{render, repo_root, wasm_dir, Envoy, EnvoyOptions, Upstream};

/// One wasmgate metric as Prometheus sees it: its name, the labels it may carry besides
/// `plugin`, and the values of its `outcome` label (empty: no `outcome`).
struct Metric {
    name: &'static str,
    labels: &'static [&'static str],
    outcomes: &'static [&'static str],
}

const fn m(
    name: &'static str,
    labels: &'static [&'static str],
    outcomes: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        labels,
        outcomes,
    }
}

/// Every wasmgate metric (the filter READMEs' "Metrics" sections). The dashboard and the alerts
/// may name only these; Envoy may expose only these (checked against a real Envoy below).
const METRICS: &[Metric] = &[
    // key-auth
    m(
        "wasmgate_key_auth_requests_total",
        &["outcome", "reason"],
        &["allowed", "allowed_anonymous", "denied"],
    ),
    m(
        "wasmgate_key_auth_client_requests_total",
        &["client", "outcome"],
        &["allowed", "denied"],
    ),
    // jwt-auth
    m(
        "wasmgate_jwt_auth_requests_total",
        &["outcome", "reason"],
        &["allowed", "denied"],
    ),
    m(
        "wasmgate_jwt_auth_jwks_fetches_total",
        &["provider", "outcome"],
        &["success", "failure"],
    ),
    m("wasmgate_jwt_auth_jwks_age_seconds", &["provider"], &[]),
    m(
        "wasmgate_jwt_auth_introspections_total",
        &["provider", "outcome"],
        &["success", "failure"],
    ),
    m("wasmgate_jwt_auth_token_cache_hits_total", &[], &[]),
    m("wasmgate_jwt_auth_host_verified_total", &[], &[]),
    // hmac-auth
    m(
        "wasmgate_hmac_auth_requests_total",
        &["outcome", "reason"],
        &["verified", "rejected", "skipped"],
    ),
    m("wasmgate_hmac_auth_key_matched_total", &["key_id"], &[]),
    m("wasmgate_hmac_auth_replays_total", &[], &[]),
    m("wasmgate_hmac_auth_duplicates_total", &[], &[]),
    m("wasmgate_hmac_auth_handshakes_total", &[], &[]),
    m("wasmgate_hmac_auth_signed_total", &[], &[]),
    m("wasmgate_hmac_auth_replay_unavailable_total", &[], &[]),
    m(
        "wasmgate_hmac_auth_jwks_fetches_total",
        &["outcome"],
        &["success", "failure"],
    ),
    m("wasmgate_hmac_auth_jwks_age_seconds", &[], &[]),
    // rate-limit
    m(
        "wasmgate_rate_limit_requests_total",
        &["outcome"],
        &["allowed", "limited", "shadow_limited"],
    ),
    m(
        "wasmgate_rate_limit_rule_requests_total",
        &["rule", "outcome"],
        &["allowed", "limited", "shadow_limited"],
    ),
    m(
        "wasmgate_rate_limit_limit_requests_total",
        &["rule", "limit", "outcome"],
        &["limited", "shadow_limited"],
    ),
    m("wasmgate_rate_limit_keys_evicted_total", &[], &[]),
    m("wasmgate_rate_limit_table_overflow_total", &[], &[]),
    m("wasmgate_rate_limit_missing_key_total", &[], &[]),
    m("wasmgate_rate_limit_errors_total", &[], &[]),
    m(
        "wasmgate_rate_limit_global_calls_total",
        &["outcome"],
        &["success", "failure"],
    ),
    m("wasmgate_rate_limit_unavailable_total", &[], &[]),
    // retry
    m("wasmgate_retry_retries_total", &[], &[]),
    m("wasmgate_retry_retries_denied_total", &["reason"], &[]),
    m(
        "wasmgate_retry_circuit_transitions_total",
        &["outcome", "rule", "upstream"],
        &["opened", "closed"],
    ),
    // `rule` only on the circuits of a rule's own breaker.
    m(
        "wasmgate_retry_short_circuited_total",
        &["rule", "upstream"],
        &[],
    ),
    m("wasmgate_retry_circuit_open", &["rule", "upstream"], &[]),
    // transform
    m("wasmgate_transform_transformed_total", &["direction"], &[]),
    m("wasmgate_transform_skipped_total", &[], &[]),
    m("wasmgate_transform_operations_skipped_total", &[], &[]),
    m(
        "wasmgate_transform_body_errors_total",
        &["direction", "reason"],
        &[],
    ),
    m("wasmgate_transform_status_rewritten_total", &[], &[]),
    // credential-inject
    m(
        "wasmgate_credential_inject_injected_total",
        &["credential"],
        &[],
    ),
    m(
        "wasmgate_credential_inject_token_fetches_total",
        &["credential", "outcome"],
        &["success", "failure"],
    ),
    m(
        "wasmgate_credential_inject_token_purged_total",
        &["credential"],
        &[],
    ),
    m(
        "wasmgate_credential_inject_unavailable_total",
        &["credential", "outcome"],
        &["refused", "passed"],
    ),
    m(
        "wasmgate_credential_inject_kept_client_credential_total",
        &[],
        &[],
    ),
    m(
        "wasmgate_credential_inject_token_age_seconds",
        &["credential"],
        &[],
    ),
];

fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

fn observability_dir() -> PathBuf {
    repo_root().join("examples/observability")
}

/// `prometheus` or `promtool`, failing with what installs it when it is missing.
fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is not installed: `make test` (target `prometheus`) installs Debian's package \
         `prometheus`, which has prometheus and promtool"
    );
    Command::new(name)
}

/// Runs promtool with `args` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = tool("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A fresh temporary directory, removed on drop unless the test is failing.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "wasmgate-observability-{what}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ----- PromQL checks ------------------------------------------------------------------------

/// What Grafana replaces in a query, with values a rule file accepts.
fn substitute_grafana_variables(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${plugin}", ".*")
        .replace("$plugin", ".*");
    assert!(
        !expr.contains('$'),
        "a dashboard query uses a variable the test does not know: {expr}"
    );
    expr
}

/// Every query of the dashboard: (where, PromQL with Grafana's variables substituted).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = observability_dir().join("grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    fn walk(panels: &Value, queries: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {title:?} has a target without a PromQL expr")
                });
                queries.push((
                    format!("panel {title:?} target {}", target["refId"]),
                    substitute_grafana_variables(expr),
                ));
            }
            walk(&panel["panels"], queries);
        }
    }
    walk(&dashboard["panels"], &mut queries);
    // The template variables: the data source is Prometheus, `plugin` comes from
    // label_values(<selector>, plugin).
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let plugin = variables
        .iter()
        .find(|v| v["name"] == "plugin")
        .expect("a plugin variable");
    let definition = plugin["definition"].as_str().expect("plugin definition");
    let inner = definition
        .strip_prefix("label_values(")
        .and_then(|d| d.strip_suffix(", plugin)"))
        .unwrap_or_else(|| {
            panic!("plugin variable is not label_values(..., plugin): {definition}")
        });
    queries.push(("variable plugin".into(), inner.to_string()));
    assert!(queries.len() > 30, "only {} queries found", queries.len());
    queries
}

/// Every alert expression of alerts.yaml: (alert name, PromQL).
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(observability_dir().join("alerts.yaml")).expect("alerts");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yaml is YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            exprs.push((
                rule["alert"].as_str().expect("alert name").to_string(),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    exprs
}

/// Checks that every metric name in `expr` is in [`METRICS`], that every label matcher on it
/// names a label that metric carries (with a known `outcome` value), and that `by (...)` and
/// legend labels are wasmgate label keys. Returns the metric names used.
fn check_names(place: &str, expr: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("wasmgate_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        i = end;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if preceded_by_word || end == start + "wasmgate_".len() {
            continue;
        }
        let name = &expr[start..end];
        let metric = metric(name)
            .unwrap_or_else(|| panic!("{place}: {name} is not a wasmgate metric:\n{expr}"));
        used.insert(name.to_string());
        if bytes.get(end) == Some(&b'{') {
            let close = expr[end..].find('}').expect("closing brace") + end;
            for matcher in split_matchers(&expr[end + 1..close]) {
                let (label, op, value) = parse_matcher(&matcher)
                    .unwrap_or_else(|| panic!("{place}: cannot read matcher {matcher:?}"));
                assert!(
                    label == "plugin" || metric.labels.contains(&label.as_str()),
                    "{place}: {name} has no label {label:?} (it has plugin, {:?}):\n{expr}",
                    metric.labels
                );
                if label == "outcome" {
                    let values: Vec<&str> = if op.contains('~') {
                        value.split('|').collect()
                    } else {
                        vec![value.as_str()]
                    };
                    for v in values {
                        assert!(
                            metric.outcomes.contains(&v),
                            "{place}: {name} has no outcome {v:?} (it has {:?}):\n{expr}",
                            metric.outcomes
                        );
                    }
                }
            }
        }
    }
    for label in aggregation_labels(expr) {
        assert!(
            wasmgate_core::metrics::LABELS.contains(&label.as_str()),
            "{place}: aggregates by {label:?}, not a wasmgate label:\n{expr}"
        );
    }
    used
}

fn split_matchers(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.into_iter().map(|m| m.trim().to_string()).collect()
}

fn parse_matcher(matcher: &str) -> Option<(String, String, String)> {
    let label_end = matcher.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let label = matcher[..label_end].to_string();
    let rest = matcher[label_end..].trim_start();
    let op = ["=~", "!~", "!=", "="]
        .into_iter()
        .find(|op| rest.starts_with(op))?;
    let value = rest[op.len()..]
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')?;
    Some((label, op.to_string(), value.to_string()))
}

/// Writes `exprs` as recording rules and has promtool check them (syntax and types).
fn promtool_checks_expressions(exprs: &[(String, String)]) {
    let dir = TempDir::new("promql");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("wasmgate:check:{i}"), "expr": expr}))
        .collect();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    // JSON is YAML: promtool reads it as a rule file.
    let path = dir.0.join("queries.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let out = promtool(&dir.0, &["check", "rules", "queries.yaml"]);
    assert!(
        out.contains(&format!("{} rules found", exprs.len())),
        "promtool did not check every query:\n{out}"
    );
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = observability_dir();
    let out = promtool(&dir, &["check", "rules", "alerts.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&dir, &["test", "rules", "alerts-test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string(dir.join("alerts-test.yaml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    let mut fired = BTreeSet::new();
    for group in tests["tests"].as_sequence().expect("tests") {
        for case in group["alert_rule_test"]
            .as_sequence()
            .expect("alert_rule_test")
        {
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                fired.insert(case["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    for (alert, expr) in alert_expressions() {
        assert!(
            fired.contains(&alert),
            "alerts-test.yaml never expects {alert} to fire"
        );
        check_names(&format!("alert {alert}"), &expr);
    }
    // And the example scrape configuration is one Prometheus accepts.
    let out = promtool(&dir, &["check", "config", "prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn metrics_list_matches_the_filter_readmes() {
    // METRICS is the filters' READMEs' "Metrics" sections as one list: the same names, filter by
    // filter.
    for filter in [
        "key-auth",
        "jwt-auth",
        "hmac-auth",
        "rate-limit",
        "retry",
        "transform",
        "credential-inject",
    ] {
        let readme =
            std::fs::read_to_string(repo_root().join(format!("filters/{filter}/README.md")))
                .expect("filter README");
        let prefix = format!("wasmgate_{}_", filter.replace('-', "_"));
        let mut documented = BTreeSet::new();
        let mut rest = readme.as_str();
        while let Some(at) = rest.find(&prefix) {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            documented.insert(name);
        }
        let listed: BTreeSet<String> = METRICS
            .iter()
            .filter(|m| m.name.starts_with(&prefix))
            .map(|m| m.name.to_string())
            .collect();
        assert_eq!(
            documented, listed,
            "filters/{filter}/README.md and METRICS disagree"
        );
    }
}

#[test]
fn dashboard_queries_are_valid_and_name_only_known_metrics() {
    let queries = dashboard_queries();
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        used.extend(check_names(place, expr));
    }
    promtool_checks_expressions(&queries);
    // Each filter has a row, every metric is on the dashboard, and each legend names only
    // labels its query keeps.
    let text = std::fs::read_to_string(observability_dir().join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for filter in [
        "key-auth",
        "jwt-auth",
        "hmac-auth",
        "rate-limit",
        "retry",
        "transform",
        "credential-inject",
    ] {
        assert!(rows.contains(&filter), "no row for {filter}: {rows:?}");
    }
    let missing: Vec<&str> = METRICS
        .iter()
        .map(|m| m.name)
        .filter(|name| !used.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not on the dashboard: {missing:?}"
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            let kept = aggregation_labels(expr);
            let mut rest = legend;
            while let Some(at) = rest.find("{{") {
                let end = rest[at..].find("}}").expect("closing }} in legend") + at;
                let label = rest[at + 2..end].trim();
                assert!(
                    kept.contains(label),
                    "panel {}: legend {legend:?} shows {label:?}, which {expr} does not keep",
                    panel["title"]
                );
                rest = &rest[end + 2..];
            }
        }
    }
}

/// The labels of every `by (...)` clause of `expr`.
fn aggregation_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(" by (") {
        let after = &rest[at + 5..];
        let close = after.find(')').expect("closing parenthesis of by");
        labels.extend(after[..close].split(',').map(|l| l.trim().to_string()));
        rest = &after[close..];
    }
    labels
}

// ----- A real Prometheus scraping a real Envoy ----------------------------------------------

/// key-auth, then rate-limit keyed on the client key-auth verified, then transform, with the
/// `stats_tags` of every shipped config and the stats inclusion list Istio's sidecars have by
/// default (so the wasmgate metrics need no `proxyStatsMatcher` there either).
const ENVOY_CONFIG: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
stats_config:
  stats_matcher:
    inclusion_list:
      patterns:
      - prefix: cluster_manager
      - prefix: listener_manager
      - prefix: server
      - prefix: cluster.xds-grpc
      - prefix: wasm
  stats_tags:
  - {tag_name: plugin, regex: '(plugin=\.=(.*?);\.;)'}
  - {tag_name: outcome, regex: '(outcome=\.=(.*?);\.;)'}
  - {tag_name: reason, regex: '(reason=\.=(.*?);\.;)'}
  - {tag_name: rule, regex: '(rule=\.=(.*?);\.;)'}
  - {tag_name: limit, regex: '(limit=\.=(.*?);\.;)'}
  - {tag_name: client, regex: '(client=\.=(.*?);\.;)'}
  - {tag_name: key_id, regex: '(key_id=\.=(.*?);\.;)'}
  - {tag_name: provider, regex: '(provider=\.=(.*?);\.;)'}
  - {tag_name: credential, regex: '(credential=\.=(.*?);\.;)'}
  - {tag_name: upstream, regex: '(upstream=\.=(.*?);\.;)'}
  - {tag_name: direction, regex: '(direction=\.=(.*?);\.;)'}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:
          - name: key-auth
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: edge-keys
                root_id: key-auth
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '${KEY_AUTH}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: "${WASM_DIR}/key_auth.wasm"}}
          - name: rate-limit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: edge-limits
                root_id: rate-limit
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '${RATE_LIMIT}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: "${WASM_DIR}/rate_limit.wasm"}}
          - name: transform
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: edge-transform
                root_id: transform
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '${TRANSFORM}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: "${WASM_DIR}/transform.wasm"}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${UPSTREAM_PORT}}}}
"#;

const TEAM_A_KEY: &str = "team-a-observability-key-0123456789";
const PARTNER_KEY: &str = "partner-x-observability-key-0123456789";

/// A real Prometheus on loopback with its own configuration and storage, killed on drop (its
/// log printed if the test is failing).
struct Prometheus {
    child: Child,
    dir: TempDir,
    base: String,
}

impl Prometheus {
    fn start(config: &str) -> Self {
        let dir = TempDir::new("prometheus");
        std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Self {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        prometheus.wait_ready();
        prometheus
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok(response) = agent().get(format!("{}/-/ready", self.base)).call() {
                if response.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus was not ready within 60 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path with query parameters; the JSON answer (`status` is checked).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut request = agent().get(format!("{}{path}", self.base));
        for (name, value) in params {
            request = request.query(*name, *value);
        }
        let mut response = request
            .call()
            .unwrap_or_else(|e| panic!("GET {path} {params:?}: {e}"));
        let text = response.body_mut().read_to_string().unwrap();
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path} {params:?}: not JSON ({e}): {text}"));
        assert_eq!(json["status"], "success", "GET {path} {params:?}: {text}");
        json
    }

    /// An instant query: each series as (labels without job and instance, value).
    fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let json = self.api("/api/v1/query", &[("query", expr)]);
        json["data"]["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .filter(|(k, _)| *k != "job" && *k != "instance")
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect();
                        let value = s["value"][1].as_str().unwrap().parse().unwrap();
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "===== Prometheus log ({}) =====\n{}",
                self.dir.0.display(),
                self.log()
            );
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks every series a scrape holds against [`METRICS`]: a listed name, only its labels
/// (and `plugin`, always), a listed outcome. Returns the names seen.
fn check_series(source: &str, series: &[BTreeMap<String, String>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for labels in series {
        let name = &labels["__name__"];
        let metric = metric(name).unwrap_or_else(|| {
            panic!("{source} exposes {name}, which METRICS (and so the dashboard) does not list")
        });
        assert!(
            labels.get("plugin").is_some_and(|p| !p.is_empty()),
            "{source}: {name} without plugin: {labels:?}"
        );
        for key in labels.keys() {
            let key = key.as_str();
            assert!(
                matches!(key, "__name__" | "plugin" | "job" | "instance")
                    || metric.labels.contains(&key),
                "{source}: {name} carries label {key:?}, METRICS says {:?}: {labels:?}",
                metric.labels
            );
        }
        if let Some(outcome) = labels.get("outcome") {
            assert!(
                metric.outcomes.contains(&outcome.as_str()),
                "{source}: {name} has outcome {outcome:?}, METRICS says {:?}",
                metric.outcomes
            );
        }
        names.insert(name.clone());
    }
    names
}

#[test]
fn prometheus_scrapes_labelled_metrics_from_envoy() {
    let key_auth = json!({
        "clients": [
            {"id": "team-a", "keys": [{"secret": {"value": TEAM_A_KEY}}]},
            {"id": "partner-x", "keys": [{"secret": {"value": PARTNER_KEY}}]}
        ],
        "rules": [{"match": {"path_prefix": "/admin"}, "allowed_clients": ["team-a"]}]
    });
    // Two requests per client an hour (a token bucket refills 2 tokens an hour: none during
    // the test), on /limited only.
    let rate_limit = json!({
        "rules": [{"name": "per-client", "match": {"path_prefix": "/limited"},
                   "key": [{"header": "x-client-id"}],
                   "limits": [{"name": "burst", "requests": 2, "window": "1h",
                               "algorithm": "token_bucket"}]}]
    });
    let transform = json!({"request": {"headers": {"set": {"x-gateway": "wasmgate"}}}});
    let upstream = Upstream::start();
    let config = render(
        ENVOY_CONFIG,
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("KEY_AUTH", key_auth.to_string()),
            ("RATE_LIMIT", rate_limit.to_string()),
            ("TRANSFORM", transform.to_string()),
        ],
    );
    let envoy = Envoy::start_config(&config, EnvoyOptions::default());
    let admin = envoy.admin_client().base().to_string();
    let admin = admin.strip_prefix("http://").unwrap();
    let alerts = observability_dir().join("alerts.yaml");
    let prometheus = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{}']\n\
         scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  \
         static_configs:\n  - targets: ['{admin}']\n",
        alerts.display()
    ));

    // Known traffic: 3 allowed, 2 with an unknown key, 1 client refused a route, and 6 on the
    // limited route of which the bucket admits 2.
    let client = envoy.client();
    let send = |path: &str, key: &str| client.send("GET", path, &[("x-api-key", key)], b"").status;
    for _ in 0..3 {
        assert_eq!(send("/ok", TEAM_A_KEY), 200);
    }
    for _ in 0..2 {
        assert_eq!(send("/ok", "not-a-key-of-anyone-0123456789"), 401);
    }
    assert_eq!(send("/admin", PARTNER_KEY), 403);
    let limited: Vec<u16> = (0..6).map(|_| send("/limited", TEAM_A_KEY)).collect();
    assert_eq!(limited, [200, 200, 429, 429, 429, 429]);
    assert!(
        upstream
            .received()
            .iter()
            .all(|r| r["headers"]["x-gateway"] == "wasmgate"),
        "transform ran on every forwarded request"
    );

    // What Prometheus must show, labels exact (job and instance aside).
    let expected: Vec<(&str, BTreeMap<String, String>, f64)> = vec![
        (
            r#"wasmgate_key_auth_requests_total{outcome="allowed"}"#,
            labels(&[("plugin", "edge-keys"), ("outcome", "allowed")]),
            9.0,
        ),
        (
            r#"wasmgate_key_auth_requests_total{reason="invalid_api_key"}"#,
            labels(&[
                ("plugin", "edge-keys"),
                ("outcome", "denied"),
                ("reason", "invalid_api_key"),
            ]),
            2.0,
        ),
        (
            r#"wasmgate_key_auth_requests_total{reason="client_not_allowed"}"#,
            labels(&[
                ("plugin", "edge-keys"),
                ("outcome", "denied"),
                ("reason", "client_not_allowed"),
            ]),
            1.0,
        ),
        (
            r#"wasmgate_key_auth_client_requests_total{client="team-a",outcome="allowed"}"#,
            labels(&[
                ("plugin", "edge-keys"),
                ("client", "team-a"),
                ("outcome", "allowed"),
            ]),
            9.0,
        ),
        (
            r#"wasmgate_key_auth_client_requests_total{client="partner-x",outcome="denied"}"#,
            labels(&[
                ("plugin", "edge-keys"),
                ("client", "partner-x"),
                ("outcome", "denied"),
            ]),
            1.0,
        ),
        (
            r#"wasmgate_rate_limit_requests_total{outcome="limited"}"#,
            labels(&[("plugin", "edge-limits"), ("outcome", "limited")]),
            4.0,
        ),
        (
            r#"wasmgate_rate_limit_rule_requests_total{outcome="allowed"}"#,
            labels(&[
                ("plugin", "edge-limits"),
                ("rule", "per-client"),
                ("outcome", "allowed"),
            ]),
            2.0,
        ),
        (
            r#"wasmgate_rate_limit_rule_requests_total{outcome="limited"}"#,
            labels(&[
                ("plugin", "edge-limits"),
                ("rule", "per-client"),
                ("outcome", "limited"),
            ]),
            4.0,
        ),
        (
            r#"wasmgate_rate_limit_limit_requests_total{outcome="limited"}"#,
            labels(&[
                ("plugin", "edge-limits"),
                ("rule", "per-client"),
                ("limit", "burst"),
                ("outcome", "limited"),
            ]),
            4.0,
        ),
        (
            r#"wasmgate_transform_transformed_total{direction="request"}"#,
            labels(&[("plugin", "edge-transform"), ("direction", "request")]),
            5.0,
        ),
    ];
    // Prometheus scrapes every second: wait (generously) until it has scraped the counts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers: Vec<_> = expected
            .iter()
            .map(|(expr, _, _)| prometheus.query(expr))
            .collect();
        let all_match = expected
            .iter()
            .zip(&answers)
            .all(|((_, want, value), got)| {
                got.len() == 1 && {
                    let mut labels = got[0].0.clone();
                    labels.remove("__name__");
                    &labels == want && got[0].1 == *value
                }
            });
        if all_match {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not show the expected series within 60 s.\nexpected: {expected:#?}\n\
             last answers: {answers:#?}\nEnvoy /stats/prometheus:\n{}",
            envoy.admin_client().get("/stats/prometheus").text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every wasmgate series Prometheus holds is listed, and these three filters expose every
    // metric METRICS lists for them (no listed metric is missing from the real filters).
    let series = prometheus.api(
        "/api/v1/series",
        &[("match[]", r#"{__name__=~"wasmgate_.+"}"#)],
    );
    let series: Vec<BTreeMap<String, String>> = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_value(s.clone()).unwrap())
        .collect();
    let seen = check_series("Prometheus (scraping Envoy)", &series);
    for prefix in [
        "wasmgate_key_auth_",
        "wasmgate_rate_limit_",
        "wasmgate_transform_",
    ] {
        let missing: Vec<&str> = METRICS
            .iter()
            .map(|m| m.name)
            .filter(|n| n.starts_with(prefix) && !seen.contains(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "listed in METRICS but not exposed by the filter: {missing:?} (seen: {seen:?})"
        );
    }

    // The alert rules load into this Prometheus and evaluate against the real series without
    // errors (e.g. no many-to-many matching), and every dashboard query runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules = prometheus.api("/api/v1/rules", &[]);
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(all.len(), alert_expressions().len(), "{rules}");
        let bad: Vec<&&Value> = all.iter().filter(|r| r["health"] == "err").collect();
        assert!(bad.is_empty(), "alert rules failed to evaluate: {bad:#?}");
        if all.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alert rules not evaluated within 60 s: {rules}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (place, expr) in dashboard_queries() {
        let json = prometheus.api("/api/v1/query", &[("query", &expr)]);
        assert!(
            json["warnings"].is_null(),
            "{place}: warnings from {expr}: {json}"
        );
    }
    // The plugin variable offers the three plugins.
    let (_, selector) = dashboard_queries()
        .into_iter()
        .find(|(place, _)| place == "variable plugin")
        .expect("the plugin variable");
    let plugins: BTreeSet<String> = prometheus
        .query(&format!("count by (plugin) ({selector})"))
        .into_iter()
        .map(|(labels, _)| labels["plugin"].clone())
        .collect();
    assert_eq!(
        plugins,
        BTreeSet::from(["edge-keys", "edge-limits", "edge-transform"].map(String::from))
    );
    // The refused client tops its panel once it is refused again: its counter was defined at
    // its first refusal, so Prometheus' first sample of it is already 1 and increase() only
    // sees the refusals after that one.
    assert_eq!(send("/admin", PARTNER_KEY), 403);
    let top_clients = dashboard_queries()
        .into_iter()
        .find(|(place, _)| place.starts_with("panel \"Top clients refused\""))
        .expect("the panel Top clients refused")
        .1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let top = prometheus.query(&top_clients);
        if top.len() == 1 && top[0].0["client"] == "partner-x" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the top clients refused panel does not show partner-x: {top:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(prometheus);
    drop(envoy);
}

/// Parses Prometheus' text format (what Envoy's /stats/prometheus answers): each sample's labels
/// with `__name__`.
fn parse_exposition(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut series = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        labels.insert("__name__".to_string(), name.to_string());
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) {
            for matcher in split_matchers(inner.0) {
                let (key, value) = matcher.split_once('=').expect("label=value");
                labels.insert(key.to_string(), value.trim_matches('"').to_string());
            }
        }
        series.push(labels);
    }
    series
}

#[test]
fn every_filter_of_the_demo_exposes_only_listed_metrics() {
    // The shipped demo configuration (all seven filters), on free ports and with the test's
    // modules.
    let text = std::fs::read_to_string(repo_root().join("envoy/demo.yaml")).expect("demo.yaml");
    let config = text
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace("\"dist/", &format!("\"{}/", wasm_dir().display()));
    let envoy = Envoy::start_config(&config, EnvoyOptions::default());
    // retry's circuit metrics are defined when a circuit is first used: /retry/down/ goes to a
    // cluster nothing listens on, and its breaker opens after 3 failures.
    let client = envoy.client();
    for _ in 0..5 {
        let status = client.get("/retry/down/x").status;
        assert!(status >= 500, "/retry/down/x answered {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        let text = envoy.admin_client().get("/stats/prometheus").text();
        let opened = parse_exposition(&text).iter().any(|s| {
            s["__name__"] == "wasmgate_retry_circuit_transitions_total"
                && s.get("outcome").is_some_and(|o| o == "opened")
                && s.get("upstream").is_some_and(|u| u == "retry_down")
        });
        if opened && text.contains("wasmgate_retry_circuit_open{") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no circuit metrics for retry_down:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let series: Vec<_> = parse_exposition(&exposition)
        .into_iter()
        .filter(|s| s["__name__"].starts_with("wasmgate_"))
        .collect();
    let seen = check_series("envoy/demo.yaml", &series);
    for filter in [
        "key_auth",
        "jwt_auth",
        "hmac_auth",
        "rate_limit",
        "retry",
        "transform",
        "credential_inject",
    ] {
        assert!(
            seen.iter()
                .any(|n| n.starts_with(&format!("wasmgate_{filter}_"))),
            "the demo's {filter} exposes no metric:\n{exposition}"
        );
    }
    // What a configured filter defines up front is all there (what depends on the
    // configuration, such as JWKS or token metrics, only when configured).
    for name in [
        "wasmgate_key_auth_requests_total",
        "wasmgate_jwt_auth_requests_total",
        "wasmgate_hmac_auth_requests_total",
        "wasmgate_rate_limit_requests_total",
        "wasmgate_retry_retries_total",
        "wasmgate_transform_transformed_total",
        "wasmgate_credential_inject_injected_total",
    ] {
        assert!(
            seen.contains(name),
            "{name} missing from the demo's Envoy:\n{exposition}"
        );
    }
}
