//! Every filter crate under `filters/` (each directory but the shared crates `core` and `host`) is
//! registered everywhere a filter must be: the CLI's registry (`cli/src/filters.rs` and
//! `cli/Cargo.toml`), the benchmark variants (`bench/src/variants.rs`), an Envoy config under
//! `envoy/` that loads its module, and a `WasmPlugin` under `examples/istio/`. The test only reads
//! files, and names everything that is missing.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The shared crates under `filters/`, which build no module.
const SHARED: [&str; 2] = ["core", "host"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The texts of the files under `dir` (not recursive) whose extension is one of `exts`.
fn texts(dir: &Path, exts: &[&str]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, read(&p))
        })
        .collect();
    files.sort();
    files
}

/// The filter crate directories: every directory under `filters/` with a `Cargo.toml`, except
/// the shared crates.
fn filter_dirs(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("filters"))
        .expect("filters/ exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| !SHARED.contains(&name.as_str()))
        .collect();
    names.sort();
    names
}

/// `jwt-auth` builds `jwt_auth.wasm`.
fn module(filter: &str) -> String {
    filter.replace('-', "_")
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// True when `text` holds `needle` not preceded by a name character, so that `auth.wasm` is
/// not found in `jwt_auth.wasm`.
fn mentions(text: &str, needle: &str) -> bool {
    text.match_indices(needle)
        .any(|(i, _)| !text[..i].chars().next_back().is_some_and(is_word))
}

/// The CLI's registry: an entry `name: "<filter>"` in `cli/src/filters.rs` and the crate as a
/// dependency of the CLI.
fn in_cli(filters_rs: &str, cli_toml: &str, filter: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if !filters_rs.contains(&format!("name: \"{filter}\"")) {
        missing.push(format!(
            "no `name: \"{filter}\"` entry in FILTERS in cli/src/filters.rs"
        ));
    }
    if !cli_toml.contains(&format!("\"../filters/{filter}\"")) {
        missing.push(format!(
            "no dependency on \"../filters/{filter}\" in cli/Cargo.toml"
        ));
    }
    missing
}

/// The benchmark: `bench/src/variants.rs` names the module (`module("rate_limit")`).
fn in_bench(variants_rs: &str, filter: &str) -> bool {
    variants_rs.contains(&format!("\"{}\"", module(filter)))
}

/// Some Envoy config under `envoy/` loads `<module>.wasm`.
fn in_envoy(configs: &[(String, String)], filter: &str) -> bool {
    let file = format!("{}.wasm", module(filter));
    configs.iter().any(|(_, text)| mentions(text, &file))
}

/// The filter a `WasmPlugin` `url:` names, as the CLI reads it: the last path segment without
/// tag, digest or `.wasm` (`oci://ghcr.io/wasmgate/rate-limit:0.1.0`,
/// `file:///opt/rate_limit.wasm`), with `_` as `-`.
fn url_filter(url: &str) -> String {
    let last = url
        .trim()
        .trim_matches(['"', '\''])
        .rsplit('/')
        .next()
        .unwrap_or("");
    let last = last.split([':', '@']).next().unwrap_or(last);
    last.strip_suffix(".wasm").unwrap_or(last).replace('_', "-")
}

/// Some manifest under `examples/istio/` is a `WasmPlugin` whose `url:` names the filter.
fn in_istio(manifests: &[(String, String)], filter: &str) -> bool {
    manifests.iter().any(|(_, text)| {
        text.contains("kind: WasmPlugin")
            && text.lines().any(|line| {
                line.trim_start()
                    .strip_prefix("url:")
                    .is_some_and(|url| url_filter(url) == filter)
            })
    })
}

/// Everything `filter` lacks, one line each.
fn missing(repo: &Path, filter: &str) -> Vec<String> {
    let filters_rs = read(&repo.join("cli/src/filters.rs"));
    let cli_toml = read(&repo.join("cli/Cargo.toml"));
    let variants_rs = read(&repo.join("bench/src/variants.rs"));
    let envoy = texts(&repo.join("envoy"), &["yaml", "yml", "json"]);
    let istio = texts(&repo.join("examples/istio"), &["yaml", "yml"]);
    let module = module(filter);
    let mut lines = in_cli(&filters_rs, &cli_toml, filter);
    if !in_bench(&variants_rs, filter) {
        lines.push(format!(
            "no variant in bench/src/variants.rs names the module \"{module}\""
        ));
    }
    if !in_envoy(&envoy, filter) {
        lines.push(format!("no Envoy config under envoy/ loads {module}.wasm"));
    }
    if !in_istio(&istio, filter) {
        lines.push(format!(
            "no WasmPlugin under examples/istio/ has a url naming {filter}"
        ));
    }
    lines
}

#[test]
fn every_filter_is_registered_everywhere() {
    let repo = repo();
    let filters = filter_dirs(&repo);
    assert!(
        !filters.is_empty(),
        "no filter crates found under {}",
        repo.join("filters").display()
    );
    let report: Vec<String> = filters
        .iter()
        .flat_map(|f| {
            missing(&repo, f)
                .into_iter()
                .map(move |m| format!("{f}: {m}"))
        })
        .collect();
    assert!(
        report.is_empty(),
        "filters missing from a registry (README, \"Adding a filter\"):\n  {}",
        report.join("\n  ")
    );
}

/// The checks are not vacuous: a filter that does not exist is missing everywhere.
#[test]
fn an_unknown_filter_is_missing_everywhere() {
    let missing = missing(&repo(), "no-such-filter");
    assert_eq!(missing.len(), 5, "{missing:#?}");
}

#[test]
fn names_are_matched_whole() {
    assert!(mentions("filename: /dist/jwt_auth.wasm", "jwt_auth.wasm"));
    assert!(!mentions("filename: /dist/jwt_auth.wasm", "auth.wasm"));
    assert_eq!(
        url_filter(" oci://ghcr.io/wasmgate/rate-limit:0.1.0"),
        "rate-limit"
    );
    assert_eq!(url_filter(" \"file:///opt/rate_limit.wasm\""), "rate-limit");
    assert_eq!(
        url_filter(" oci://ghcr.io/wasmgate/retry@sha256:ab"),
        "retry"
    );
    let manifest = "kind: WasmPlugin\nspec:\n  url: oci://ghcr.io/wasmgate/jwt-auth:0.1.0\n";
    let manifests = [("m.yaml".to_string(), manifest.to_string())];
    assert!(in_istio(&manifests, "jwt-auth"));
    assert!(!in_istio(&manifests, "auth"));
}

#[test]
fn shared_crates_are_not_filters() {
    let filters = filter_dirs(&repo());
    for shared in SHARED {
        assert!(
            !filters.iter().any(|f| f == shared),
            "{shared} listed as a filter"
        );
    }
}
