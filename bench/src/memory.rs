//! Envoy's resident memory with the demo chain on two workers: the single-filter modules (one VM
//! per filter per worker) against the bundle wasmgate.wasm on one vm_id (one VM per worker for
//! the whole chain). Each setup runs in an Envoy of its own (`--concurrency 2`), started afresh
//! for each round, rounds interleaved; after a warm-up of requests through the chain over
//! several connections (both workers) `VmRSS` is read from `/proc/<pid>/status`.

use crate::load::closed_loop;
use crate::variants::{self, Modules, Variant};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use wasmgate_e2e::{Envoy, EnvoyOptions};

/// The Envoy stat counting the Wasm VMs alive (V8), across the main thread and the workers.
const ACTIVE_VMS: &str = "wasm.envoy.wasm.runtime.v8.active";

/// One Envoy setup of the memory runs: a listener with `filters`.
fn setups(modules: &Modules) -> Vec<(&'static str, Variant)> {
    let demo = |bundle| {
        let mut filters = variants::demo_chain(modules, bundle);
        filters.extend(variants::rest_of_demo_chain(modules, bundle));
        filters
    };
    vec![
        ("no filter", variants::plain("memory", vec![])),
        (
            "demo chain (key-auth, rate-limit, transform), separate modules",
            variants::plain("memory", variants::demo_chain(modules, false)),
        ),
        (
            "demo chain, bundle on one vm_id",
            variants::plain("memory", variants::demo_chain(modules, true)),
        ),
        (
            "all seven filters (four switched off in the chain), separate modules",
            variants::plain("memory", demo(false)),
        ),
        (
            "all seven filters, bundle on one vm_id",
            variants::plain("memory", demo(true)),
        ),
    ]
}

/// Whether the modules the runs need are built.
pub fn available(modules: &Modules) -> bool {
    [
        "wasmgate",
        "key_auth",
        "rate_limit",
        "transform",
        "jwt_auth",
        "hmac_auth",
        "credential_inject",
        "retry",
    ]
    .iter()
    .all(|m| modules.get(m).is_some())
}

/// Runs every setup `rounds` times with `requests` warm-up requests each; `config` renders an
/// Envoy configuration holding the given listeners. Returns one JSON object per setup.
pub fn measure(
    modules: &Modules,
    rounds: usize,
    requests: usize,
    config: impl Fn(&[Variant]) -> String,
) -> Vec<Value> {
    let setups = setups(modules);
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); setups.len()];
    let mut vms = vec![0; setups.len()];
    for round in 0..rounds {
        eprintln!("memory round {}/{rounds}", round + 1);
        for (i, (_, variant)) in setups.iter().enumerate() {
            let envoy = Envoy::start_config(
                &config(std::slice::from_ref(variant)),
                EnvoyOptions {
                    concurrency: 2,
                    log_level: "warning".into(),
                    ..EnvoyOptions::default()
                },
            );
            let sent = Arc::new((variant.requests)(0, 1));
            let run = closed_loop(envoy.port(&variant.name), &sent, requests, 8, 200);
            assert_eq!(
                run.unexpected,
                0,
                "memory setup {:?}: unexpected statuses\n{}",
                setups[i].0,
                envoy.log()
            );
            std::thread::sleep(Duration::from_millis(500));
            rss[i].push(crate::rss_kib(envoy.pid()));
            vms[i] = envoy.stat(ACTIVE_VMS);
        }
    }
    setups
        .iter()
        .zip(rss)
        .zip(vms)
        .map(|(((name, _), mut rounds), vms)| {
            let by_round = rounds.clone();
            rounds.sort_unstable();
            json!({"setup": name, "rss_kib": rounds[rounds.len() / 2], "rss_kib_by_round": by_round,
                   "wasm_vms_active": vms, "warm_up_requests": requests})
        })
        .collect()
}

/// The memory runs as a table (printed and pasted into bench/README.md).
pub fn table(runs: &[Value]) -> String {
    let base = runs
        .first()
        .and_then(|r| r["rss_kib"].as_u64())
        .unwrap_or(0);
    let mut out = String::from(
        "\n| Envoy, 2 workers, after warm-up | VmRSS KiB (median) | over no filter KiB | Wasm VMs alive | VmRSS KiB by round |\n|---|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let kib = r["rss_kib"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "| {} | {kib} | {} | {} | {} |\n",
            r["setup"].as_str().unwrap_or("?"),
            kib.saturating_sub(base),
            r["wasm_vms_active"],
            r["rss_kib_by_round"]
                .as_array()
                .map(|rounds| rounds
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ));
    }
    out
}
