//! `wasmgate`: validate filter configurations with each filter's own parser, mint test JWTs and
//! key pairs with jwt-auth's signing code, make key-auth API keys, sign test requests for every
//! hmac-auth scheme with hmac-auth's own canonicalisation; print JSON Schemas generated from the
//! filters' config types.

mod apikey;
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
    /// Print the JSON Schema of a filter's configuration (generated from the filter's own types).
    Schema(SchemaArgs),
    /// Mint a JWT (RS*, PS*, ES256, ES384, EdDSA with a PEM or JWK key; HS* with a secret).
    Token(token::TokenArgs),
    /// Make a key pair and its JWKS (the public JWKS goes into a jwt-auth provider).
    Keys(token::KeysArgs),
    /// Print the signature headers of a request for an hmac-auth scheme, ready for curl.
    Sign(sign::Args),
    /// Make an API key for key-auth and print its SHA-256 digest and a configuration snippet.
    Apikey(apikey::Args),
}

/// Arguments of `wasmgate schema`.
#[derive(clap::Args)]
#[command(
    after_help = "Example: wasmgate schema jwt-auth > jwt-auth.schema.json\n\n\
    The schema checks structure (fields, types, enumerations); the filter checks more (value \
    ranges, regexes, key material): wasmgate validate is the authority."
)]
struct SchemaArgs {
    /// credential-inject, hmac-auth, jwt-auth, key-auth, rate-limit, retry or transform.
    filter: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Schema(args) => filters::by_name(&args.filter).map(|f| {
            let schema = f.schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }),
        Command::Token(args) => token::run_token(&args),
        Command::Keys(args) => token::run_keys(&args),
        Command::Sign(args) => sign::run(&args),
        Command::Apikey(args) => apikey::run(&args),
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
