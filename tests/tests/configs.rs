//! Every shipped Envoy config passes `envoy --mode validate` against the built modules.

use wasmgate_e2e::{repo_root, validate};

#[test]
fn shipped_envoy_configs_validate() {
    let dir = repo_root().join("envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("envoy/ exists") {
        let path = entry.expect("dir entry").path();
        let is_envoy_config = path.extension().is_some_and(|e| e == "yaml")
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("docker-compose"));
        if is_envoy_config {
            if let Err(output) = validate(&path) {
                panic!("{} does not validate:\n{output}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no Envoy configs found in {}", dir.display());
}

/// Every Envoy config we ship or test with carries one `stats_tags` entry per metric label key,
/// with the regex that turns `key=.=value;.;` into a Prometheus label (docs/CONVENTIONS.md,
/// "Metrics and logs"): without them the labels stay in the metric names.
#[test]
fn every_envoy_config_turns_metric_labels_into_prometheus_labels() {
    use wasmgate_core::metrics::{tag_regex, LABELS};
    let root = repo_root();
    let mut configs = Vec::new();
    for dir in ["envoy", "tests/configs"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("config dir") {
            configs.push(entry.expect("dir entry").path());
        }
    }
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/") {
        configs.push(entry.expect("dir entry").path().join("envoy.yaml"));
    }
    let mut checked = 0;
    for path in configs {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.contains("static_resources:") {
            continue;
        }
        for key in LABELS {
            let entry = format!("{{tag_name: {key}, regex: '{}'}}", tag_regex(key));
            assert!(
                text.contains(&entry),
                "{} lacks the stats_tags entry {entry}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} Envoy configs found");
}
