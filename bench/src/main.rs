//! `make bench`: every wasmgate filter against Envoy's native filters and Lua, side by side in
//! one Envoy (`--concurrency 1`), one listener per variant, the upstream answered by Envoy
//! itself. Rounds are interleaved and medians reported. `--smoke` runs one short round;
//! `--only word,word` runs the matching variants (and the rows they are compared with) without
//! writing `bench/results.json`. `--instructions` counts instructions per request under
//! valgrind instead (`bench/instructions.rs`), into `bench/instructions.json`. After the rounds,
//! `bench/memory.rs` measures Envoy's resident memory with the demo chain on two workers, the
//! bundle wasmgate.wasm against the single-filter modules (`--only memory`: only that).

// A benchmark tool: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod instructions;
mod load;
mod memory;
mod report;
mod tokens;
mod variants;

use load::{closed_loop, open_loop, quantile, Requests};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use variants::{Modules, Variant};
use wasmgate_e2e::{repo_root, wasm_dir, Envoy, EnvoyOptions};

/// Sizes of one run.
struct Plan {
    rounds: usize,
    /// Rounds (the first ones) that also measure open-loop latency.
    latency_rounds: usize,
    cpu_requests: usize,
    connections: usize,
    latency_rate: u32,
    latency_duration: Duration,
}

impl Plan {
    /// Distinct requests a variant needing unique ones must supply per round: the closed loop's,
    /// the open loop's, and one spare for the status check.
    fn requests_per_round(&self) -> usize {
        let open_loop = (f64::from(self.latency_rate) * self.latency_duration.as_secs_f64()).ceil();
        self.cpu_requests + open_loop as usize + 1
    }

    fn new(smoke: bool, instructions: bool) -> Self {
        if instructions {
            // One counted set and one warm-up set per variant, over one connection.
            Self {
                rounds: 1,
                latency_rounds: 0,
                cpu_requests: instructions::REQUESTS.max(instructions::WARM_UP),
                connections: 1,
                latency_rate: 0,
                latency_duration: Duration::ZERO,
            }
        } else if smoke {
            Self {
                rounds: 1,
                latency_rounds: 1,
                cpu_requests: 200,
                connections: 4,
                latency_rate: 200,
                latency_duration: Duration::from_millis(200),
            }
        } else {
            // Many short CPU samples: on a shared VM the noise comes in bursts of a second or
            // so, and the median of many paired samples is what stays put between runs.
            Self {
                rounds: 12,
                latency_rounds: 3,
                cpu_requests: 6_000,
                connections: 8,
                latency_rate: 200,
                latency_duration: Duration::from_millis(1500),
            }
        }
    }
}

/// One variant's measurements in one round.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    /// Envoy user+system CPU per request, microseconds.
    pub cpu_us: f64,
    /// Saturated requests per second (closed loop).
    pub rps: f64,
    /// Open-loop latency p50, microseconds.
    pub p50_us: f64,
    /// Open-loop latency p99, microseconds.
    pub p99_us: f64,
    /// Responses with an unexpected status (should be 0).
    pub errors: usize,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let counting = std::env::args().any(|a| a == "--instructions");
    let plan = Plan::new(smoke, counting);
    let modules = Modules {
        dist: repo_root().join("dist"),
        build: wasm_dir(),
    };
    let (variants, skipped) = variants::all(&modules);
    let selection = std::env::args().skip_while(|a| a != "--only").nth(1);
    let partial = selection.is_some();
    let variants = only(variants, selection);
    for s in &skipped {
        eprintln!("skipped: {s}");
    }
    eprintln!("preparing requests for {} variants...", variants.len());
    let preparing = Instant::now();
    let requests: Vec<Vec<Requests>> = variants
        .iter()
        .map(|v| {
            // One set more than rounds: the last warms the variant up, unrecorded.
            (0..=plan.rounds)
                .map(|r| Arc::new((v.requests)(r, plan.requests_per_round())))
                .collect()
        })
        .collect();
    eprintln!("prepared in {:.0?}", preparing.elapsed());

    let upstream_port = free_port();
    // `--only memory`: the memory runs alone (no variant is named so).
    if variants.is_empty() && !counting {
        let runs = memory::measure(&modules, if smoke { 1 } else { 3 }, 4000, |listeners| {
            config(listeners, upstream_port).to_string()
        });
        println!("{}", memory::table(&runs));
        return;
    }
    if counting {
        let counts = instructions::count(&variants, &requests, |batch| {
            config(batch, upstream_port).to_string()
        });
        let (table, doc) = instructions::report(&variants, &counts);
        println!("{table}");
        if !partial {
            let path = repo_root().join("bench/instructions.json");
            std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
            eprintln!("wrote {}", path.display());
        }
        return;
    }
    let started = Instant::now();
    let envoy = Envoy::start_config(&config(&variants, upstream_port).to_string(), options());
    let ready_all = started.elapsed();
    let pinned = pin_apart(envoy.pid());
    check_statuses(&envoy, &variants, &requests);

    warm_up(&envoy, &variants, &requests, &plan);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    for round in 0..plan.rounds {
        eprintln!("round {}/{}", round + 1, plan.rounds);
        for ((variant, rounds), samples) in variants.iter().zip(&requests).zip(&mut samples) {
            let latency = round < plan.latency_rounds;
            samples.push(measure(&envoy, variant, &rounds[round], &plan, latency));
        }
    }
    let rss_all = rss_kib(envoy.pid());
    drop(envoy);

    let started = Instant::now();
    let bare = Envoy::start_config(
        &config(&variants[..1], upstream_port).to_string(),
        options(),
    );
    let ready_none = started.elapsed();
    let rss_none = rss_kib(bare.pid());
    drop(bare);

    // Resident memory of the demo chain on two workers, bundle against separate modules: whole
    // runs, and `--only` selections holding a chain row (`--only memory`: these runs alone).
    let memory_wanted = !partial || variants.iter().any(|v| v.name.starts_with("chain_"));
    let memory_runs = if memory_wanted && memory::available(&modules) {
        let (rounds, warm_up) = if smoke { (1, 200) } else { (3, 4000) };
        memory::measure(&modules, rounds, warm_up, |listeners| {
            config(listeners, upstream_port).to_string()
        })
    } else {
        Vec::new()
    };

    let report = report::Report::new(
        &variants,
        &samples,
        skipped,
        json!({
            "rounds": plan.rounds, "latency_rounds": plan.latency_rounds, "cpu_requests": plan.cpu_requests, "connections": plan.connections,
            "latency_rate_rps": plan.latency_rate, "latency_seconds": plan.latency_duration.as_secs_f64(),
            "pinned": pinned,
            "ready_ms_all_filters": ready_all.as_secs_f64() * 1e3, "ready_ms_no_filter": ready_none.as_secs_f64() * 1e3,
            "rss_kib_all_filters": rss_all, "rss_kib_no_filter": rss_none,
            "memory_two_workers": memory_runs,
            "native_sha256_mb_per_s": report::native_sha256_mb_per_s(),
            "envoy": wasmgate_e2e::envoy_bin().display().to_string(),
            "machine": report::machine(),
        }),
    );
    println!("{}", report.table());
    if !smoke && !partial {
        let path = repo_root().join("bench/results.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report.json()).unwrap()).unwrap();
        eprintln!("wrote {}", path.display());
    }
    // A variant answering wrongly is a broken benchmark; a rare connection hiccup on a loaded
    // machine is not, so the run fails above 1% of all closed-loop requests.
    let sent = plan.rounds * plan.cpu_requests * variants.len();
    if report.errors() > 0 {
        eprintln!(
            "{} of {sent} responses had an unexpected status",
            report.errors()
        );
    }
    if report.errors() * 100 > sent {
        std::process::exit(1);
    }
}

/// `--only a,b`: the variants whose names contain one of the words, plus the rows they are
/// compared with; for iterating on one filter.
fn only(variants: Vec<Variant>, words: Option<String>) -> Vec<Variant> {
    let Some(words) = words else {
        return variants;
    };
    let wanted: Vec<&str> = words.split(',').collect();
    let mut keep: Vec<String> = variants
        .iter()
        .filter(|v| wanted.iter().any(|w| v.name.contains(w)))
        .flat_map(|v| {
            [
                Some(v.name.clone()),
                Some(v.floor_of.to_string()),
                v.peer.clone(),
            ]
        })
        .flatten()
        .collect();
    // The rows kept as floors and peers need their own floors (floor -> baseline).
    for v in &variants {
        if keep.contains(&v.name) {
            keep.push(v.floor_of.to_string());
        }
    }
    variants
        .into_iter()
        .filter(|v| keep.contains(&v.name))
        .collect()
}

/// Envoy on CPU 0, this process (the load generator) on CPU 1, every thread of each, with
/// util-linux `taskset`: on a small machine the client would otherwise steal Envoy's core and
/// inflate its CPU per request. Returns whether both were pinned (never on a single CPU).
fn pin_apart(envoy: u32) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    cpus >= 2 && pin(envoy, 0) && pin(std::process::id(), 1)
}

fn pin(pid: u32, cpu: usize) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn options() -> EnvoyOptions {
    EnvoyOptions {
        concurrency: 1,
        log_level: "warning".into(),
        ..EnvoyOptions::default()
    }
}

/// One variant in one round: CPU per request and saturated rate (closed loop), then, when
/// `latency` is set, p50/p99 at a fixed rate (open loop; `NaN` otherwise).
fn measure(
    envoy: &Envoy,
    variant: &Variant,
    requests: &Requests,
    plan: &Plan,
    latency: bool,
) -> Sample {
    let port = envoy.port(&variant.name);
    let before = cpu_seconds(envoy.pid());
    let run = closed_loop(port, requests, plan.cpu_requests, plan.connections, 200);
    let cpu_seconds = cpu_seconds(envoy.pid()) - before;
    let latencies = if latency {
        open_loop(
            port,
            requests,
            plan.cpu_requests,
            plan.latency_rate,
            plan.latency_duration,
            4,
        )
    } else {
        Vec::new()
    };
    let quantile_us = |q| {
        if latency {
            quantile(&latencies, q).as_secs_f64() * 1e6
        } else {
            f64::NAN
        }
    };
    Sample {
        cpu_us: cpu_seconds * 1e6 / plan.cpu_requests as f64,
        rps: plan.cpu_requests as f64 / run.elapsed.as_secs_f64(),
        p50_us: quantile_us(0.5),
        p99_us: quantile_us(0.99),
        errors: run.unexpected,
    }
}

/// One request per variant before measuring: a misconfigured variant fails loudly, not slowly.
/// One unrecorded closed loop per variant: V8 compiles Wasm with its baseline compiler first and
/// optimises hot functions later, so the first requests through a module cost more than the rest.
fn warm_up(envoy: &Envoy, variants: &[Variant], requests: &[Vec<Requests>], plan: &Plan) {
    eprintln!("warming up");
    for (variant, requests) in variants.iter().zip(requests) {
        let port = envoy.port(&variant.name);
        closed_loop(
            port,
            &requests[plan.rounds],
            plan.cpu_requests,
            plan.connections,
            200,
        );
    }
}

fn check_statuses(envoy: &Envoy, variants: &[Variant], requests: &[Vec<Requests>]) {
    for (variant, requests) in variants.iter().zip(requests) {
        let mut conn = load::Conn::open(envoy.port(&variant.name)).expect("connect");
        // The last request of a round is spare, for this check (unique requests stay unique).
        let spare = requests[0].last().expect("at least one request");
        let status = conn.roundtrip(spare).expect("response");
        if status != 200 {
            panic!(
                "variant {} answered {status}, expected 200\n{}",
                variant.name,
                envoy.log()
            );
        }
    }
}

fn config(variants: &[Variant], upstream_port: u16) -> Value {
    // The upstream reads each request body before its direct response: answering early would
    // reset connections that are still sending large bodies.
    let read_whole_body = json!({"name": "envoy.filters.http.buffer", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1_048_576}});
    let upstream = json!({
        "name": "upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}},
        "filter_chains": [{"filters": [hcm("upstream", json!({"prefix": "/"}), json!({"direct_response": {"status": 200, "body": {"inline_string": "ok"}}}), vec![read_whole_body])]}]
    });
    let mut listeners = vec![upstream];
    for v in variants {
        let action = if v.proxied {
            let mut route = json!({"cluster": "self_upstream"});
            if let (Some(route), Some(extra)) = (route.as_object_mut(), v.route_extra.as_object()) {
                route.extend(extra.clone());
            }
            json!({"route": route})
        } else {
            json!({"direct_response": {"status": 200, "body": {"inline_string": "ok"}}})
        };
        listeners.push(json!({
            "name": v.name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [hcm(&v.name, json!({"prefix": "/"}), action, v.filters.clone())]}]
        }));
    }
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            // The credential Envoy's credential_injector injects (variants.rs).
            "secrets": [{"name": "bench_credential",
                "generic_secret": {"secret": {"inline_string": variants::BENCH_CREDENTIAL}}}],
            "clusters": [{"name": "self_upstream", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "self_upstream", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]}}]
        }
    })
}

fn hcm(name: &str, matcher: Value, action: Value, mut filters: Vec<Value>) -> Value {
    filters.push(
        json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
    );
    let mut route = json!({"match": matcher});
    if let (Some(route), Some(action)) = (route.as_object_mut(), action.as_object()) {
        route.extend(action.clone());
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]},
        "http_filters": filters}})
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// CPU time Envoy has used, in seconds: the sum of every thread's run time from
/// `/proc/<pid>/task/*/schedstat` (nanoseconds, user + system), falling back to utime + stime
/// from `/proc/<pid>/stat` (clock ticks, too coarse for short runs) where schedstat is missing.
fn cpu_seconds(pid: u32) -> f64 {
    schedstat_seconds(pid).unwrap_or_else(|| stat_ticks(pid) / clock_ticks())
}

fn schedstat_seconds(pid: u32) -> Option<f64> {
    let mut total_ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total_ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 / 1e9)
}

fn stat_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    utime + stime
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Envoy's resident memory, `VmRSS` of `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
