//! Starting, watching and stopping a real Envoy for one test.

use crate::client::Client;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where `make build` leaves the optimised `.wasm` modules (`target/modules`: the same files as
/// `dist/`, plus the pass-through module); follows `CARGO_TARGET_DIR` when it is set.
pub fn wasm_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        repo_root().join(target)
    };
    target.join("modules")
}

/// The Envoy binary: `ENVOY_BIN`, else the one the Makefile installs into `.venv`.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let venv = repo_root().join(".venv");
    let lib = venv.join("lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/envoy/_bin/envoy");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    venv.join("bin/envoy")
}

/// Runs `envoy --mode validate` on a config file (relative module paths resolve from the repo
/// root); returns Envoy's output on failure.
pub fn validate(config: &Path) -> Result<String, String> {
    let output = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "--use-dynamic-base-id",
            "-l",
            "error",
            "-c",
        ])
        .arg(config)
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", envoy_bin().display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// How to start Envoy for a test.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Environment variables for Envoy (and so for Wasm VMs that forward them).
    pub env: Vec<(String, String)>,
    /// Log level (`-l`).
    pub log_level: String,
    /// Per-component log levels (`--component-log-level`, e.g. `wasm:debug`); empty: none.
    pub component_log_level: String,
    /// A command Envoy runs under, such as valgrind (`make bench-instructions`); empty: none.
    pub wrapper: Vec<String>,
    /// How long Envoy may take to be ready.
    pub ready_within: Duration,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            env: Vec::new(),
            log_level: "info".into(),
            component_log_level: String::new(),
            wrapper: Vec::new(),
            ready_within: Duration::from_secs(60),
        }
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running Envoy, killed on drop; its log is printed if the test is failing.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    admin: String,
    listeners: BTreeMap<String, u16>,
}

impl Envoy {
    /// Renders `tests/configs/<template>` with `vars` (`${NAME}` placeholders, plus `WASM_DIR`
    /// and `REPO`) and starts Envoy with default options.
    pub fn start(template: &str, vars: &[(&str, String)]) -> Self {
        Self::start_with(template, vars, EnvoyOptions::default())
    }

    /// Like [`Envoy::start`], with options.
    pub fn start_with(template: &str, vars: &[(&str, String)], options: EnvoyOptions) -> Self {
        let path = repo_root().join("tests/configs").join(template);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Self::start_config(&render(&text, vars), options)
    }

    /// Starts Envoy with an already rendered config text.
    pub fn start_config(config: &str, options: EnvoyOptions) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("wasmgate-e2e-{}-{id}", std::process::id()));
        // A failed test keeps its directory (the log), and process ids are reused: a stale
        // admin.txt read before this Envoy writes its own would point at a dead admin port.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.join("envoy.log")).expect("log file");
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(envoy_bin());
                command
            }
            None => Command::new(envoy_bin()),
        };
        let child = command
            .arg("-c")
            .arg(&config_path)
            .args(["--use-dynamic-base-id", "--admin-address-path"])
            .arg(dir.join("admin.txt"))
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["-l", &options.log_level])
            .args(
                Some(&options.component_log_level)
                    .filter(|levels| !levels.is_empty())
                    .map(|levels| ["--component-log-level", levels.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run `make setup`)",
                    envoy_bin().display()
                )
            });
        let mut envoy = Self {
            child,
            dir,
            admin: String::new(),
            listeners: BTreeMap::new(),
        };
        envoy.wait_ready(options.ready_within);
        envoy
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Envoy exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if self.admin.is_empty() {
                if let Ok(addr) = std::fs::read_to_string(self.dir.join("admin.txt")) {
                    if !addr.trim().is_empty() {
                        self.admin = format!("http://{}", addr.trim());
                    }
                }
            }
            if !self.admin.is_empty() && self.try_ready() {
                self.listeners = self.read_listeners();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "Envoy was not ready within {} s:\n{}",
            within.as_secs(),
            self.log()
        );
    }

    fn try_ready(&self) -> bool {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        matches!(agent.get(format!("{}/ready", self.admin)).call(), Ok(r) if r.status() == 200)
    }

    fn read_listeners(&self) -> BTreeMap<String, u16> {
        let json = self.admin_client().get("/listeners?format=json").json();
        let mut listeners = BTreeMap::new();
        for status in json["listener_statuses"].as_array().into_iter().flatten() {
            let name = status["name"].as_str().unwrap_or_default().to_string();
            let port = status["local_address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap_or(0);
            listeners.insert(name, u16::try_from(port).unwrap_or(0));
        }
        listeners
    }

    /// The port of the listener named `name` in the config.
    pub fn port(&self, listener: &str) -> u16 {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener:?}; have {:?}", self.listeners))
    }

    /// A client for the listener named `main` (the convention in test templates).
    pub fn client(&self) -> Client {
        self.client_for("main")
    }

    /// A client for a named listener.
    pub fn client_for(&self, listener: &str) -> Client {
        Client::new(format!("http://127.0.0.1:{}", self.port(listener)))
    }

    /// A client for the admin interface.
    pub fn admin_client(&self) -> Client {
        Client::new(self.admin.clone())
    }

    /// Envoy's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All stats as name -> value (counters and gauges from `/stats`).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let text = self.admin_client().get("/stats").text();
        text.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// One stat's value (0 when absent). Wasm-defined metrics are named as the filter defines them.
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats
            .get(name)
            .or_else(|| stats.get(&format!("wasmcustom.{name}")))
            .copied()
            .unwrap_or(0)
    }

    /// The sum of wasmgate metric `name` (`wasmgate_key_auth_denied_total`) over its series
    /// carrying all of `labels`, read from `/stats` (raw stat names: it works without
    /// `stats_tags`; `tests/tests/observability.rs` proves the labels Prometheus sees).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.stats()
            .iter()
            .filter(|(stat, _)| {
                let (metric, have) = wasmgate_core::metrics::parse_metric_name(stat);
                metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "===== Envoy log ({}) =====\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Replaces `${NAME}` placeholders; `WASM_DIR` and `REPO` are always available.
///
/// `${...}` rather than `{{...}}` because filter configs use `{{...}}` templates of their own.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut text = template
        .replace("${WASM_DIR}", &wasm_dir().display().to_string())
        .replace("${REPO}", &repo_root().display().to_string());
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    if let Some(name) = unrendered_placeholder(&text) {
        panic!("unrendered placeholder ${{{name}}} in Envoy template");
    }
    text
}

fn unrendered_placeholder(text: &str) -> Option<&str> {
    text.match_indices("${").find_map(|(start, _)| {
        let rest = &text[start + 2..];
        let end = rest.find('}')?;
        let name = &rest[..end];
        let is_placeholder =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        is_placeholder.then_some(name)
    })
}
