//! `make oci` images survive a round trip through a real registry on loopback (Debian's
//! `docker-registry`): pushed with skopeo, pulled back with the same digest, and the pulled
//! `plugin.wasm` loads and serves in Envoy with the filter's own shipped config.

// Test code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasmgate_e2e::{repo_root, Envoy, EnvoyOptions, Upstream};

struct Registry {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Registry {
    fn start() -> Self {
        let dir = TempDir::new("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.0.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {addr}\n",
                dir.0.join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed (make oci-tools)");
        let registry = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wasmgate-oci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (make oci-tools)");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("readable")).expect("JSON")
}

fn manifest_digest(layout: &Path) -> String {
    json_file(&layout.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest")
        .to_string()
}

/// Extracts `plugin.wasm` from the single layer of the image in an OCI layout.
fn plugin_wasm(layout: &Path, out: &Path) -> Vec<u8> {
    let digest = manifest_digest(layout);
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest = json_file(&blob(&digest));
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "compat images have exactly one layer");
    let layer = blob(layers[0]["digest"].as_str().expect("digest"));
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(out)
        .status()
        .expect("tar");
    assert!(status.success());
    std::fs::read(out.join("plugin.wasm")).expect("plugin.wasm in the layer")
}

/// The filter's shipped config with the pulled module and free ports.
/// The shipped config of an image (the bundle `wasmgate` runs in `envoy/bundle.yaml`) and the
/// crate whose start line names the module.
fn shipped(filter: &str) -> (&str, &str) {
    match filter {
        "wasmgate" => ("bundle", "wasmgate-bundle"),
        _ => (filter, filter),
    }
}

fn config_for(filter: &str, module: &Path, upstream_port: u16) -> String {
    let shipped = repo_root()
        .join("envoy")
        .join(format!("{}.yaml", shipped(filter).0));
    let text =
        std::fs::read_to_string(&shipped).unwrap_or_else(|e| panic!("{}: {e}", shipped.display()));
    text.replace(
        &format!("dist/{}.wasm", filter.replace('-', "_")),
        &module.display().to_string(),
    )
    .replace("port_value: 9901", "port_value: 0")
    .replace("port_value: 10000", "port_value: 0")
    .replace("port_value: 18080", &format!("port_value: {upstream_port}"))
}

#[test]
fn images_round_trip_through_a_registry_and_load_in_envoy() {
    let oci = repo_root().join("dist/oci");
    let mut images: Vec<PathBuf> = std::fs::read_dir(&oci)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make oci`)", oci.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    images.sort();
    assert!(!images.is_empty(), "no images in dist/oci (run `make oci`)");
    let registry = Registry::start();
    let pulled_root = TempDir::new("pulled");
    let upstream = Upstream::start();
    let version = env!("CARGO_PKG_VERSION");
    for layout in images {
        let filter = layout
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let remote = format!("docker://{}/wasmgate/{filter}:{version}", registry.addr);
        let local = format!("oci:{}:{version}", layout.display());
        skopeo(&[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &local,
            &remote,
        ]);
        let remote_manifest = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote]);
        let remote_digest = format!("sha256:{}", sha256_hex(&remote_manifest));
        assert_eq!(
            remote_digest,
            manifest_digest(&layout),
            "{filter}: registry digest"
        );

        let pulled = pulled_root.0.join(&filter);
        skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{}:{version}", pulled.display()),
        ]);
        assert_eq!(
            manifest_digest(&pulled),
            manifest_digest(&layout),
            "{filter}: pulled digest"
        );
        let extract = pulled_root.0.join(format!("{filter}-files"));
        std::fs::create_dir_all(&extract).expect("dir");
        let wasm = plugin_wasm(&pulled, &extract);
        let built = std::fs::read(
            repo_root()
                .join("dist")
                .join(format!("{}.wasm", filter.replace('-', "_"))),
        )
        .expect("dist module");
        assert!(
            wasm == built,
            "{filter}: pulled plugin.wasm differs from dist/"
        );

        let envoy = Envoy::start_config(
            &config_for(&filter, &extract.join("plugin.wasm"), upstream.port()),
            EnvoyOptions::default(),
        );
        let response = envoy.client_for(&listener_name(&envoy)).get("/");
        assert!(response.status > 0, "{filter}: served a response");
        assert!(
            envoy
                .log()
                .contains(&format!("{} {version} (commit", shipped(&filter).1)),
            "{filter}: module started from the pulled image"
        );
    }
}

fn listener_name(envoy: &Envoy) -> String {
    let json = envoy.admin_client().get("/listeners?format=json").json();
    json["listener_statuses"][0]["name"]
        .as_str()
        .expect("a listener")
        .to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    let output = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(data)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
