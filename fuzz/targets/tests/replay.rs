//! Every committed fuzz input, replayed through its target on the stable toolchain: the
//! minimized corpus (`fuzz/corpus/<target>/`) and every crash input found so far
//! (`fuzz/artifacts/<target>/`, kept after the fix), so a fixed crash stays fixed without nightly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_crash_input_replays_without_a_panic() {
    let mut total = 0;
    let mut failed = Vec::new();
    for (name, target) in wasmgate_fuzz::TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ has seeds");
        for file in corpus
            .iter()
            .chain(&inputs(&fuzz_dir().join("artifacts").join(name)))
        {
            let data = std::fs::read(file).unwrap();
            let result = std::panic::catch_unwind(|| target(&data));
            if result.is_err() {
                failed.push(format!("{name}: {}", file.display()));
            }
            total += 1;
        }
    }
    assert!(total > 0);
    assert!(failed.is_empty(), "panicked:\n{}", failed.join("\n"));
}

#[test]
fn every_target_has_a_libfuzzer_wrapper() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in wasmgate_fuzz::TARGETS {
        let wrapper = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&wrapper).unwrap();
        assert!(
            source.contains(&format!("wasmgate_fuzz::{name}(data)")),
            "{} calls wasmgate_fuzz::{name}",
            wrapper.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has a [[bin]] {name}"
        );
    }
}

#[test]
fn the_rich_configurations_are_accepted() {
    for (name, accepted) in wasmgate_fuzz::drive::rich_configs_accepted() {
        assert!(accepted, "fuzz/targets/configs/{name}.json is refused");
    }
    assert!(
        wasmgate_fuzz::chains::rich_chain_accepted(),
        "the chain of the rich configurations is refused"
    );
}
