//! End-to-end test harness: a real Envoy running the built `.wasm` modules in front of a
//! scriptable upstream, plus an HTTP client that never treats a status as an error.
//!
//! Tests render an Envoy config from a template in `tests/configs/`, start Envoy on free ports
//! with a unique base id, wait for `/ready` by polling, and get Envoy's log printed when they fail.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod client;
mod envoy;
mod node;
mod upstream;

pub use client::{raw_status, Client, Response};
pub use envoy::{envoy_bin, render, repo_root, validate, wasm_dir, Envoy, EnvoyOptions};
pub use node::NodeServer;
pub use upstream::{Scripted, Upstream};
