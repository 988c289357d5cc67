//! The bundle module wasmgate.wasm in a real Envoy: the demo chain key-auth -> rate-limit ->
//! transform from the bundle on one vm_id, on two workers, answers exactly as the three
//! single-filter modules do (a denied key, a 429 after the limit, a transformed header), in one VM
//! per worker instead of three; a root id that names no filter is refused at load. The same
//! three as the stages of one chain plugin (root id `chain`) answer the same again.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use wasmgate_e2e::{Client, Envoy, EnvoyOptions, Response, Upstream};

const TEAM_A: &str = "team-a-bundle-key-0123456789";
const PARTNER: &str = "partner-x-bundle-key-0123456789";
/// Requests each client may make (a sliding hour: no window boundary inside a test).
const LIMIT: usize = 20;

/// How the chain's three plugins get their code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Modules {
    /// wasmgate.wasm, one vm_id for the chain.
    Bundle,
    /// key_auth.wasm, rate_limit.wasm, transform.wasm, one vm_id each.
    Separate,
    /// One plugin of wasmgate.wasm, root id `chain`, the three as its stages.
    Chain,
}

fn key_auth() -> Value {
    json!({
        "clients": [
            {"id": "team-a", "keys": [{"secret": {"value": TEAM_A}}]},
            {"id": "partner-x", "keys": [{"secret": {"value": PARTNER}}]}
        ],
        "key_sources": [{"header": "x-api-key"}],
        "forward": {"client_header": "x-client-id", "hide_credentials": true}
    })
}

fn rate_limit() -> Value {
    json!({"rules": [{"key": [{"header": "x-client-id"}], "limits": [
        {"name": "hourly", "requests": LIMIT, "window": "1h", "algorithm": "sliding_window"}]}]})
}

fn transform() -> Value {
    json!({"request": {"headers": {"set": {"x-gateway": "wasmgate"}, "remove": ["x-internal"]}}})
}

/// The chain on two workers; `key_auth_root_id` replaces key-auth's root id (the bundle only).
fn start_with(modules: Modules, key_auth_root_id: &str, configs: [Value; 3]) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let [key_auth, rate_limit, transform] = configs;
    let options = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    if modules == Modules::Chain {
        // Each stage named as its own plugin is in the other setups: the same metric names.
        let chain = json!({"stages": [
            {"filter": "key-auth", "name": "key-auth", "config": key_auth},
            {"filter": "rate-limit", "name": "rate-limit", "config": rate_limit},
            {"filter": "transform", "name": "transform", "config": transform},
        ]});
        let vars = [
            ("UPSTREAM_PORT", upstream.port().to_string()),
            ("CHAIN_CONFIG", chain.to_string()),
        ];
        let envoy = Envoy::start_with("chain.yaml", &vars, options);
        return (upstream, envoy);
    }
    let mut vars = vec![
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("KEY_AUTH_CONFIG", key_auth.to_string()),
        ("RATE_LIMIT_CONFIG", rate_limit.to_string()),
        ("TRANSFORM_CONFIG", transform.to_string()),
        ("KEY_AUTH_ROOT_ID", key_auth_root_id.to_string()),
        ("RATE_LIMIT_ROOT_ID", "rate-limit".to_string()),
        ("TRANSFORM_ROOT_ID", "transform".to_string()),
    ];
    for (filter, module) in [
        ("KEY_AUTH", "key_auth"),
        ("RATE_LIMIT", "rate_limit"),
        ("TRANSFORM", "transform"),
    ] {
        let (wasm, vm) = match modules {
            Modules::Bundle | Modules::Chain => {
                ("wasmgate.wasm".to_string(), "wasmgate".to_string())
            }
            Modules::Separate => (format!("{module}.wasm"), module.to_string()),
        };
        vars.push((leak(format!("{filter}_WASM")), wasm));
        vars.push((leak(format!("{filter}_VM")), vm));
    }
    let envoy = Envoy::start_with("bundle.yaml", &vars, options);
    (upstream, envoy)
}

fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

fn start(modules: Modules) -> (Upstream, Envoy) {
    start_with(modules, "key-auth", [key_auth(), rate_limit(), transform()])
}

/// `total` requests with `headers` over `threads` connections of their own (so both workers
/// take part), the responses in arrival order.
fn hammer(envoy: &Envoy, total: usize, threads: usize, headers: &[(&str, &str)]) -> Vec<Response> {
    let next = AtomicUsize::new(0);
    let responses = Mutex::new(Vec::with_capacity(total));
    let base = envoy.client().base().to_string();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let client = Client::new(base.clone());
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let response = client.send("GET", "/api/orders", headers, b"");
                    responses.lock().unwrap().push(response);
                }
            });
        }
    });
    responses.into_inner().unwrap()
}

/// What the chain answered, to compare the bundle with the separate modules.
#[derive(Debug, PartialEq)]
struct Observed {
    missing_key: (u16, Value),
    wrong_key: (u16, Value),
    /// Status -> count, over 2 x LIMIT requests with team-a's key.
    statuses: BTreeMap<u16, usize>,
    limited: Value,
    /// What the upstream saw of one allowed request: x-gateway, x-client-id, x-api-key,
    /// x-internal.
    upstream: [Value; 4],
    /// partner-x is counted apart from team-a.
    partner: u16,
}

fn observe(modules: Modules) -> (Observed, Envoy) {
    let (upstream, envoy) = start(modules);
    let client = envoy.client();
    let missing = client.get("/api/orders");
    let wrong = client.send("GET", "/api/orders", &[("x-api-key", "not-a-key")], b"");
    let responses = hammer(
        &envoy,
        2 * LIMIT,
        8,
        &[("x-api-key", TEAM_A), ("x-internal", "drop-me")],
    );
    let mut statuses = BTreeMap::new();
    for r in &responses {
        *statuses.entry(r.status).or_default() += 1;
    }
    let limited = responses
        .iter()
        .find(|r| r.status == 429)
        .map(|r| {
            assert!(r.header("retry-after").is_some(), "Retry-After on a 429");
            r.json()["error"].clone()
        })
        .unwrap_or(Value::Null);
    let seen = upstream.received();
    assert_eq!(
        seen.len(),
        LIMIT,
        "only allowed requests reach the upstream"
    );
    let last = &seen[seen.len() - 1]["headers"];
    let partner = client
        .send("GET", "/api/orders", &[("x-api-key", PARTNER)], b"")
        .status;
    // Both workers accepted connections: both VMs (or both sets of VMs) took part in the count.
    let stats = envoy.stats();
    for worker in ["worker_0", "worker_1"] {
        let name = format!("listener.127.0.0.1_0.{worker}.downstream_cx_total");
        assert!(stats.get(&name).copied().unwrap_or(0) > 0, "{name}");
    }
    let observed = Observed {
        missing_key: (missing.status, missing.json()["error"].clone()),
        wrong_key: (wrong.status, wrong.json()["error"].clone()),
        statuses,
        limited,
        upstream: [
            last["x-gateway"].clone(),
            last["x-client-id"].clone(),
            last["x-api-key"].clone(),
            last["x-internal"].clone(),
        ],
        partner,
    };
    (observed, envoy)
}

/// The wasmgate counters, by name with labels.
fn counters(envoy: &Envoy) -> BTreeMap<String, u64> {
    envoy
        .stats()
        .into_iter()
        .filter(|(name, _)| name.contains("wasmgate_"))
        .collect()
}

#[test]
fn the_chain_from_the_bundle_answers_as_the_separate_modules_do() {
    let (bundle, _bundle_envoy) = observe(Modules::Bundle);
    let (separate, separate_envoy) = observe(Modules::Separate);
    let (chain, chain_envoy) = observe(Modules::Chain);
    assert_eq!(bundle, separate);
    assert_eq!(chain, separate, "one chain plugin answers as three plugins");
    assert_eq!(
        counters(&chain_envoy),
        counters(&separate_envoy),
        "and counts the same, under the same names"
    );
    // And what they both answer is the chain's contract.
    assert_eq!(bundle.missing_key.0, 401, "{bundle:?}");
    assert_eq!(bundle.wrong_key.0, 401, "{bundle:?}");
    assert_eq!(
        bundle.statuses,
        BTreeMap::from([(200, LIMIT), (429, LIMIT)]),
        "exactly the limit passes, across two workers"
    );
    assert_eq!(bundle.limited, "rate_limited");
    assert_eq!(
        bundle.upstream,
        [json!("wasmgate"), json!("team-a"), Value::Null, Value::Null]
    );
    assert_eq!(bundle.partner, 200);
}

/// Envoy's Wasm runtime stats (`wasm.envoy.wasm.runtime.v8.*`).
fn vm_stats(envoy: &Envoy) -> BTreeMap<String, u64> {
    envoy
        .stats()
        .into_iter()
        .filter(|(name, _)| name.starts_with("wasm.envoy.wasm.runtime.v8."))
        .collect()
}

#[test]
fn the_chain_from_the_bundle_runs_in_one_vm_per_worker() {
    let (_upstream, bundle) = start(Modules::Bundle);
    let (_upstream_separate, separate) = start(Modules::Separate);
    let (bundle_vms, separate_vms) = (vm_stats(&bundle), vm_stats(&separate));
    let active = |stats: &BTreeMap<String, u64>| {
        stats
            .get("wasm.envoy.wasm.runtime.v8.active")
            .copied()
            .unwrap_or(0)
    };
    // Envoy keeps one VM per vm_id (and code) in each thread that runs plugins, the two workers
    // and the main thread (plus a base VM they are cloned from): three vm_ids hold three times
    // the VMs of one, whatever Envoy's own count per vm_id.
    let (one, three) = (active(&bundle_vms), active(&separate_vms));
    assert!(
        one >= 3,
        "at least a VM per worker and the main thread: {bundle_vms:?}"
    );
    assert_eq!(
        three,
        3 * one,
        "bundle: {bundle_vms:?}, separate modules: {separate_vms:?}"
    );
    // Every plugin of the shared VM started as its own filter (the log names it), on the main
    // thread and on each worker.
    let log = bundle.log();
    for filter in ["key-auth", "rate-limit", "transform"] {
        let started = format!(
            "wasmgate {filter}: wasmgate-bundle {}",
            env!("CARGO_PKG_VERSION")
        );
        let count = log.matches(&started).count();
        assert!(count >= 3, "{started:?} logged {count} times:\n{log}");
    }
}

#[test]
fn a_root_id_that_names_no_filter_is_refused_at_load() {
    for (root_id, given) in [
        ("keyauth", "unknown root_id \"keyauth\""),
        ("", "an empty root_id"),
    ] {
        let failure = std::panic::catch_unwind(|| {
            start_with(
                Modules::Bundle,
                root_id,
                [key_auth(), rate_limit(), transform()],
            )
        })
        .err()
        .expect("Envoy must refuse the plugin");
        let message = failure
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        let line = format!(
            "wasmgate bundle: {given}: the plugin's root_id selects the filter of this module, one \
             of: credential-inject, hmac-auth, jwt-auth, key-auth, rate-limit, retry, transform, \
             chain"
        );
        assert!(message.contains(&line), "{message}");
    }
}

#[test]
fn configuration_errors_name_the_filter_in_the_bundle() {
    let bad = json!({"rules": [{"limits": [{"name": "x", "requests": 1, "window": "soon"}]}]});
    let failure = std::panic::catch_unwind(|| {
        start_with(Modules::Bundle, "key-auth", [key_auth(), bad, transform()])
    })
    .err()
    .expect("Envoy must refuse the configuration");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("wasmgate rate-limit: invalid configuration at rules[0].limits[0].window"),
        "{message}"
    );
}
