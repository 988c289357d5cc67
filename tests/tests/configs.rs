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
