//! `wasmgate validate`: a plain configuration, an Istio `WasmPlugin` manifest or an Envoy config.

use crate::filters::{self, Filter};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// Arguments of `wasmgate validate`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  wasmgate validate jwt-auth jwt.json\n  \
    wasmgate validate examples/istio/jwt-auth.yaml      (every WasmPlugin in the file)\n  \
    wasmgate validate envoy/demo.yaml                   (every wasmgate filter in the Envoy config)\n  \
    wasmgate validate rate-limit envoy/demo.yaml        (only the rate-limit filters)\n\n\
    A plain configuration needs the filter name. In an Envoy config, a wasm filter is a wasmgate \
    filter when its module file name (hmac_auth.wasm), its config name or its root id names one; \
    in an Istio manifest, its image url or plugin name. {\"env\": NAME} secrets are read from \
    --env, this environment, the Envoy config's environment_variables.key_values and the \
    manifest's INLINE vmConfig env values, as the VM would read them.")]
pub struct Args {
    /// The filter (credential-inject, hmac-auth, jwt-auth, key-auth, rate-limit, retry, transform), or the file when it is an
    /// Envoy config or Istio manifest (then every embedded wasmgate configuration is checked).
    #[arg(value_name = "FILTER|FILE")]
    first: String,
    /// The configuration file (.json or .yaml), Istio WasmPlugin manifest or Envoy config.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Do not validate: print each configuration found, one JSON object per line
    /// ({"filter", "location", "config"}), e.g. to check it with another tool.
    #[arg(long)]
    extract: bool,
    /// A VM environment variable for {"env": NAME} secrets, NAME=VALUE; repeat for several.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
}

/// One configuration found in a file.
struct Found {
    filter: &'static Filter,
    /// Where it is (`$` for a plain configuration).
    location: String,
    json: Vec<u8>,
}

/// Validates; exit 1 when any configuration is refused, printing the filter's log line.
pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (filter, path) = match &args.file {
        Some(path) => (Some(filters::by_name(&args.first)?), path.clone()),
        None => (None, PathBuf::from(&args.first)),
    };
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
        std::env::set_var(name, value);
    }
    let bytes = crate::read(&path)?;
    let found = collect(filter, &bytes)?;
    if found.is_empty() {
        return Err(match filter {
            Some(f) => format!("no {} configuration found in {}", f.name, path.display()),
            None => format!(
                "{} is not an Envoy config or Istio WasmPlugin with a wasmgate filter; for a \
                 plain configuration give the filter: wasmgate validate <filter> {}",
                path.display(),
                path.display()
            ),
        });
    }
    if args.extract {
        for f in &found {
            let json = if f.json.is_empty() {
                b"{}".as_slice()
            } else {
                &f.json
            };
            let config: serde_json::Value = serde_json::from_slice(json)
                .map_err(|e| format!("{}: not JSON: {e}", f.location))?;
            let line = serde_json::json!({"filter": f.filter.name, "location": f.location, "config": config});
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for f in &found {
        match f.filter.check(&f.json) {
            Ok(()) if f.location == "$" => println!("ok: {} ({})", path.display(), f.filter.name),
            Ok(()) => println!("ok: {} {} ({})", path.display(), f.location, f.filter.name),
            Err(line) if f.location == "$" => {
                failed = true;
                eprintln!("{line}");
            }
            Err(line) => {
                failed = true;
                eprintln!("{line} (in {} {})", path.display(), f.location);
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn collect(filter: Option<&'static Filter>, bytes: &[u8]) -> Result<Vec<Found>, String> {
    // JSON first: a plain JSON configuration goes to the filter byte for byte.
    if let Ok(doc) = serde_json::from_slice::<Value>(bytes) {
        return Ok(match embedded(filter, &[doc]) {
            Some(found) => found,
            None => plain(filter, bytes.to_vec())?,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_string())?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("not valid JSON or YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(value).map_err(|e| format!("YAML to JSON: {e}"))?);
    }
    match embedded(filter, &docs) {
        Some(found) => Ok(found),
        None => match docs.as_slice() {
            [doc] => plain(filter, serde_json::to_vec(doc).map_err(|e| e.to_string())?),
            [] => plain(filter, Vec::new()),
            _ => Err("several YAML documents, none an Envoy config or a WasmPlugin".into()),
        },
    }
}

fn plain(filter: Option<&'static Filter>, json: Vec<u8>) -> Result<Vec<Found>, String> {
    Ok(match filter {
        Some(filter) => vec![Found {
            filter,
            location: "$".into(),
            json,
        }],
        None => Vec::new(),
    })
}

/// The configurations embedded in Envoy configs or Istio manifests; `None` when `docs` are
/// neither (a plain configuration).
fn embedded(only: Option<&'static Filter>, docs: &[Value]) -> Option<Vec<Found>> {
    let mut any = false;
    let mut found = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let prefix = if docs.len() > 1 {
            format!("document {}: ", i + 1)
        } else {
            String::new()
        };
        if doc["kind"] == "WasmPlugin" {
            any = true;
            let spec = &doc["spec"];
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            let filter = [&spec["url"], &spec["pluginName"]]
                .iter()
                .filter_map(|v| v.as_str())
                .find_map(filters::find);
            if let Some(filter) = filter.filter(|f| only.is_none_or(|o| o.name == f.name)) {
                // vmConfig env entries with inline values are set as Istio sets them in the VM.
                for var in spec["vmConfig"]["env"].as_array().into_iter().flatten() {
                    if let (Some(name), Some(value), "INLINE") = (
                        var["name"].as_str(),
                        var["value"].as_str(),
                        var["valueFrom"].as_str().unwrap_or("INLINE"),
                    ) {
                        std::env::set_var(name, value);
                    }
                }
                let json = match &spec["pluginConfig"] {
                    Value::Null => Vec::new(),
                    config => serde_json::to_vec(config).unwrap_or_default(),
                };
                found.push(Found {
                    filter,
                    location: format!("{prefix}WasmPlugin {name} spec.pluginConfig"),
                    json,
                });
            }
        } else if has_wasm_filter(doc) {
            any = true;
            walk(doc, &mut String::new(), &prefix, only, &mut found);
        }
    }
    any.then_some(found)
}

fn has_wasm_filter(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            map.get("@type").is_some_and(|t| t == WASM_FILTER_TYPE)
                || map.values().any(has_wasm_filter)
        }
        Value::Array(items) => items.iter().any(has_wasm_filter),
        _ => false,
    }
}

fn walk(
    value: &Value,
    path: &mut String,
    prefix: &str,
    only: Option<&'static Filter>,
    found: &mut Vec<Found>,
) {
    match value {
        Value::Object(map) => {
            if map.get("@type").is_some_and(|t| t == WASM_FILTER_TYPE) {
                wasm_filter(&value["config"], path, prefix, only, found);
                return;
            }
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(child, path, prefix, only, found);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                match child["name"].as_str() {
                    Some(name) => path.push_str(&format!("[{i}:{name}]")),
                    None => path.push_str(&format!("[{i}]")),
                }
                walk(child, path, prefix, only, found);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn wasm_filter(
    config: &Value,
    path: &str,
    prefix: &str,
    only: Option<&'static Filter>,
    found: &mut Vec<Found>,
) {
    let code = &config["vm_config"]["code"];
    let filter = [
        &code["local"]["filename"],
        &code["remote"]["http_uri"]["uri"],
        &config["name"],
        &config["root_id"],
    ]
    .iter()
    .filter_map(|v| v.as_str())
    .find_map(filters::find);
    let Some(filter) = filter.filter(|f| only.is_none_or(|o| o.name == f.name)) else {
        return;
    };
    // The VM's environment: key_values are set for the check, as Envoy sets them in the VM.
    if let Some(vars) = config["vm_config"]["environment_variables"]["key_values"].as_object() {
        for (name, value) in vars {
            if let Some(value) = value.as_str() {
                std::env::set_var(name, value);
            }
        }
    }
    let configuration = &config["configuration"];
    let json = match &configuration["value"] {
        Value::String(text) => text.clone().into_bytes(),
        Value::Null if configuration.is_null() => Vec::new(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    };
    found.push(Found {
        filter,
        location: format!("{prefix}{path}.config.configuration"),
        json,
    });
}
