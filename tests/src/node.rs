//! Node.js test peers: real third-party servers from the npm registry (an OpenID provider, an
//! OAuth2 server) run on loopback from a script in a directory under `tests/` holding its
//! `package.json` and lock file; the packages are installed with `npm ci` when absent.

use crate::envoy::repo_root;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Serializes the one-time `npm ci` of a directory between the tests of one binary.
static INSTALL: Mutex<()> = Mutex::new(());

/// A Node.js server, killed on drop.
pub struct NodeServer {
    child: Child,
    /// The port it printed (`listening <port>`).
    pub port: u16,
}

impl NodeServer {
    /// Runs `node <script>` in `tests/<dir>` with `env`, after `npm ci` there if `package` is
    /// not installed yet; waits for the line `listening <port>`.
    pub fn start(dir: &str, package: &str, script: &str, env: &[(&str, String)]) -> Self {
        let dir = repo_root().join("tests").join(dir);
        {
            let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
            if !dir.join("node_modules").join(package).exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm (Node 20 or later) is needed for the test peers");
                assert!(status.success(), "npm ci in {} failed", dir.display());
            }
        }
        let mut child = Command::new("node")
            .arg(script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node (20 or later) is needed for the test peers");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        // Keep reading what it prints, so that it never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
        Self { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
