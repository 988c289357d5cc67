//! Every docker-compose file we ship runs the pinned Envoy image, and the Envoy config it mounts
//! passes `envoy --mode validate` with the files laid out as the container sees them.

// Test code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use wasmgate_e2e::{envoy_bin, repo_root};

fn compose_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if path.is_dir() && !name.starts_with('.') {
            compose_files(&path, found);
        } else if name.starts_with("docker-compose") && name.ends_with(".yaml") {
            found.push(path);
        }
    }
}

fn pinned_envoy_version() -> String {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).expect("Makefile");
    makefile
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION ?="))
        .expect("ENVOY_VERSION in the Makefile")
        .trim()
        .to_string()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The service's `environment` (list of `NAME=value` or map) as the container gets it, with
/// compose's `${NAME:-default}` resolved to its default (Wasm filters read secrets from it).
fn environment(value: &Value) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = match value {
        Value::Sequence(_) => strings(value)
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        Value::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).ok()?.trim().to_string(),
                };
                Some((k.as_str()?.to_string(), v))
            })
            .collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(|inner| inner.split_once(":-"))
                .map_or(v.clone(), |(_, default)| default.to_string());
            (k, v)
        })
        .collect()
}

/// Lays the service's volumes out under `root` as the container sees them and validates the
/// config named by `-c`.
fn validate_service(compose: &Path, service: &Value, root: &Path) -> Result<(), String> {
    let base = compose.parent().expect("compose dir");
    let command = strings(&service["command"]);
    let config = command
        .iter()
        .position(|a| a == "-c" || a == "--config-path")
        .and_then(|i| command.get(i + 1))
        .ok_or("envoy service has no `-c <config>` in its command")?;
    let mut mounts = Vec::new();
    for volume in strings(&service["volumes"]) {
        let mut parts = volume.split(':');
        let (host, container) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let host = base.join(host);
        if !host.exists() {
            return Err(format!(
                "volume source {} does not exist (run make build)",
                host.display()
            ));
        }
        let inside = root.join(container.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().expect("parent")).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(host.canonicalize().map_err(|e| e.to_string())?, &inside)
            .map_err(|e| e.to_string())?;
        mounts.push(container.to_string());
    }
    let config_inside = root.join(config.trim_start_matches('/'));
    let mut text = std::fs::read_to_string(&config_inside).map_err(|e| format!("{config}: {e}"))?;
    for container in &mounts {
        text = text.replace(
            container.as_str(),
            &root
                .join(container.trim_start_matches('/'))
                .display()
                .to_string(),
        );
    }
    let rendered = root.join("rendered-envoy.yaml");
    std::fs::write(&rendered, text).map_err(|e| e.to_string())?;
    let workdir = root.join(
        service["working_dir"]
            .as_str()
            .unwrap_or("/")
            .trim_start_matches('/'),
    );
    std::fs::create_dir_all(&workdir).map_err(|e| e.to_string())?;
    let output = std::process::Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--use-dynamic-base-id",
            "-l",
            "error",
            "-c",
        ])
        .arg(&rendered)
        .current_dir(&workdir)
        .envs(environment(&service["environment"]))
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn compose_files_pin_envoy_and_their_configs_validate() {
    let mut files = Vec::new();
    compose_files(&repo_root().join("envoy"), &mut files);
    compose_files(&repo_root().join("examples"), &mut files);
    assert!(!files.is_empty(), "no docker-compose files found");
    let image = format!("envoyproxy/envoy:v{}", pinned_envoy_version());
    for (i, compose) in files.iter().enumerate() {
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(compose).expect("readable"))
            .unwrap_or_else(|e| panic!("{}: {e}", compose.display()));
        let services = doc["services"].as_mapping().expect("services");
        let envoys: Vec<&Value> = services
            .values()
            .filter(|s| {
                s["image"]
                    .as_str()
                    .is_some_and(|img| img.starts_with("envoyproxy/envoy:"))
            })
            .collect();
        assert!(
            !envoys.is_empty(),
            "{}: no envoyproxy/envoy service",
            compose.display()
        );
        for (j, service) in envoys.into_iter().enumerate() {
            assert_eq!(
                service["image"].as_str(),
                Some(image.as_str()),
                "{}",
                compose.display()
            );
            let root = std::env::temp_dir()
                .join(format!("wasmgate-compose-{}-{i}-{j}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let result = validate_service(compose, service, &root);
            let _ = std::fs::remove_dir_all(&root);
            if let Err(e) = result {
                panic!("{}: {e}", compose.display());
            }
        }
    }
}
