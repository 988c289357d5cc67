//! `wasmgate`: validate filter configurations with each filter's own parser, mint test JWTs and
//! key pairs with jwt-auth's signing code, and sign test requests for every hmac-auth scheme with
//! hmac-auth's own canonicalisation.

mod filters;
mod sign;
mod token;
mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// wasmgate: check filter configurations, mint test tokens and keys, sign test requests.
#[derive(Parser)]
#[command(name = "wasmgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a filter configuration (JSON or YAML), an Istio WasmPlugin manifest or an Envoy
    /// config with the filter's own parser; prints the filter's exact log line and exits 1 on error.
    Validate(validate::Args),
    /// Mint a JWT (RS*, PS*, ES256, ES384, EdDSA with a PEM or JWK key; HS* with a secret).
    Token(token::TokenArgs),
    /// Make a key pair and its JWKS (the public JWKS goes into a jwt-auth provider).
    Keys(token::KeysArgs),
    /// Print the signature headers of a request for an hmac-auth scheme, ready for curl.
    Sign(sign::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Token(args) => token::run_token(&args),
        Command::Keys(args) => token::run_keys(&args),
        Command::Sign(args) => sign::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("wasmgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a file, naming it in the error.
fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
