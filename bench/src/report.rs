//! Medians, ratios, module sizes, the terminal table and `bench/results.json`.

use crate::variants::Variant;
use crate::Sample;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Instant;

/// One variant's medians over all rounds.
struct Row {
    name: String,
    peer: Option<String>,
    floor_of: String,
    body_bytes: usize,
    median: Sample,
    /// Envoy CPU per request of each round, in round order.
    cpu_rounds: Vec<f64>,
}

/// Everything one run measured.
pub struct Report {
    rows: Vec<Row>,
    skipped: Vec<String>,
    meta: Value,
    modules: Vec<(String, u64, Option<u64>)>,
}

/// The median of the finite values (rounds without a latency run hold `NaN`).
fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    /// Reduces per-round samples to medians.
    pub fn new(
        variants: &[Variant],
        samples: &[Vec<Sample>],
        skipped: Vec<String>,
        meta: Value,
    ) -> Self {
        let rows = variants
            .iter()
            .zip(samples)
            .map(|(v, s)| Row {
                name: v.name.clone(),
                peer: v.peer.clone(),
                floor_of: v.floor_of.to_string(),
                body_bytes: v.body_bytes,
                median: Sample {
                    cpu_us: median(s.iter().map(|x| x.cpu_us).collect()),
                    rps: median(s.iter().map(|x| x.rps).collect()),
                    p50_us: median(s.iter().map(|x| x.p50_us).collect()),
                    p99_us: median(s.iter().map(|x| x.p99_us).collect()),
                    errors: s.iter().map(|x| x.errors).sum(),
                },
                cpu_rounds: s.iter().map(|x| x.cpu_us).collect(),
            })
            .collect();
        Self {
            rows,
            skipped,
            meta,
            modules: module_sizes(),
        }
    }

    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The median over rounds of `f(row's CPU, other's CPU)` in the same round: comparing within
    /// a round cancels the machine's slow drifts, which move whole rounds up or down.
    fn paired(&self, row: &Row, other: &str, f: impl Fn(f64, f64) -> Option<f64>) -> Option<f64> {
        let other = self.row(other)?;
        let values: Vec<f64> = row
            .cpu_rounds
            .iter()
            .zip(&other.cpu_rounds)
            .filter_map(|(a, b)| f(*a, *b))
            .collect();
        (!values.is_empty()).then(|| median(values))
    }

    fn own_cost(&self, row: &Row) -> Option<f64> {
        if row.name == row.floor_of {
            return None;
        }
        self.paired(row, &row.floor_of, |a, b| Some(a - b))
    }

    fn ratio(&self, row: &Row) -> Option<f64> {
        self.paired(row, row.peer.as_deref()?, |a, b| (b > 0.0).then(|| a / b))
    }

    /// The spread of a row's CPU per request over rounds, (max - min) / median, in percent.
    fn spread(row: &Row) -> f64 {
        let min = row.cpu_rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.cpu_rounds.iter().copied().fold(0.0, f64::max);
        if row.median.cpu_us > 0.0 {
            (max - min) / row.median.cpu_us * 100.0
        } else {
            0.0
        }
    }

    /// Responses with an unexpected status across the run.
    pub fn errors(&self) -> usize {
        self.rows.iter().map(|r| r.median.errors).sum()
    }

    /// The table printed to the terminal (and pasted into the README).
    pub fn table(&self) -> String {
        let mut out = String::from("| variant | Envoy CPU us/req | spread | own cost us/req (minus) | vs peer | p50 us | p99 us | saturated rps | bad statuses |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let own = self
                .own_cost(row)
                .map_or("-".into(), |c| format!("{c:.1} ({})", row.floor_of));
            let ratio = match (self.ratio(row), &row.peer) {
                (Some(r), Some(p)) => format!("{r:.2}x {p}"),
                _ => "-".into(),
            };
            let m = row.median;
            out.push_str(&format!(
                "| {} | {:.1} | {:.0}% | {own} | {ratio} | {:.0} | {:.0} | {:.0} | {} |\n",
                row.name,
                m.cpu_us,
                Self::spread(row),
                m.p50_us,
                m.p99_us,
                m.rps,
                m.errors
            ));
        }
        for row in self.rows.iter().filter(|r| r.body_bytes > 0) {
            if let Some(own) = self.own_cost(row).filter(|c| *c > 0.0) {
                out.push_str(&format!(
                    "\n{}: {:.0} MB/s over its own cost",
                    row.name,
                    row.body_bytes as f64 / own
                ));
            }
        }
        out.push_str(&format!(
            "\nnative SHA-256 (this machine, outside Envoy): {:.0} MB/s\n",
            self.meta["native_sha256_mb_per_s"].as_f64().unwrap_or(0.0)
        ));
        out.push_str(
            "\n| module | shipped bytes | KiB | target KiB | rustc output before wasm-opt |\n|---|---:|---:|---:|---:|\n",
        );
        for (name, shipped, before) in &self.modules {
            out.push_str(&format!(
                "| {name} | {shipped} | {:.0} | {} | {} |\n",
                *shipped as f64 / 1024.0,
                size_target_kib(name),
                before.map_or("-".into(), |b| b.to_string())
            ));
        }
        let m = &self.meta;
        out.push_str(&format!(
            "\nready after start: {:.0} ms with all variants, {:.0} ms with none; RSS {} KiB vs {} KiB\n",
            m["ready_ms_all_filters"].as_f64().unwrap_or(0.0), m["ready_ms_no_filter"].as_f64().unwrap_or(0.0),
            m["rss_kib_all_filters"], m["rss_kib_no_filter"]));
        if let Some(runs) = m["memory_two_workers"]
            .as_array()
            .filter(|runs| !runs.is_empty())
        {
            out.push_str(&crate::memory::table(runs));
        }
        out.push_str(&format!(
            "machine: {}\n",
            m["machine"].as_str().unwrap_or("?")
        ));
        for s in &self.skipped {
            out.push_str(&format!("skipped: {s}\n"));
        }
        out
    }

    /// The same data as JSON (`bench/results.json`).
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self.rows.iter().map(|r| json!({
            "variant": r.name, "peer": r.peer, "cpu_us_per_request": r.median.cpu_us,
            "cpu_us_per_request_by_round": r.cpu_rounds, "spread_percent": Self::spread(r),
            "own_cost_us": self.own_cost(r), "own_cost_minus": r.floor_of, "ratio_to_peer": self.ratio(r),
            "p50_us": r.median.p50_us, "p99_us": r.median.p99_us, "saturated_rps": r.median.rps,
            "unexpected_statuses": r.median.errors,
        })).collect();
        let modules: Vec<Value> = self
            .modules
            .iter()
            .map(|(n, shipped, before)| json!({"module": n, "bytes": shipped, "rustc_bytes_before_wasm_opt": before, "target_kib": size_target_kib(n)}))
            .collect();
        json!({"variants": rows, "modules": modules, "skipped": self.skipped, "run": self.meta})
    }
}

/// Each shipped module's size (`dist/`, after rustc's `wasm` profile and wasm-opt) and the
/// rustc output before wasm-opt, when it is still in the build directory.
fn module_sizes() -> Vec<(String, u64, Option<u64>)> {
    let dist = wasmgate_e2e::repo_root().join("dist");
    let rustc_out = wasmgate_e2e::wasm_dir()
        .parent()
        .map(|target| target.join("wasm32-wasip1/wasm"))
        .unwrap_or_default();
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut sizes: Vec<_> = std::fs::read_dir(&dist)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            // The bundle builds in a target dir of its own (Makefile), as wasmgate_bundle.wasm.
            let before = if name == "wasmgate.wasm" {
                size(&rustc_out.join("../../bundle/wasm32-wasip1/wasm/wasmgate_bundle.wasm"))
            } else {
                size(&rustc_out.join(&name))
            };
            (name, size(&p).unwrap_or(0), before)
        })
        .collect();
    sizes.sort();
    sizes
}

/// The size target for a module, in KiB: crypto-heavy jwt-auth gets more room; the
/// bundle of every filter (issue #26): at most the largest single module when it was set
/// (jwt_auth.wasm, 805,773 bytes).
fn size_target_kib(module: &str) -> u64 {
    if module == "wasmgate.wasm" {
        787
    } else if module.starts_with("jwt") {
        400
    } else {
        150
    }
}

/// SHA-256 throughput of this machine natively, the yardstick for the HMAC filter.
pub fn native_sha256_mb_per_s() -> f64 {
    let data = vec![7u8; 64 * 1024];
    let started = Instant::now();
    let rounds = 400;
    let mut digest = [0u8; 32];
    for _ in 0..rounds {
        digest = Sha256::digest(&data).into();
    }
    std::hint::black_box(digest);
    (rounds * data.len()) as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// CPU model and count, for the README's "measured on" line.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Counted from /proc/cpuinfo: after pinning, this process may run on one CPU only.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{cores} x {model}")
}
