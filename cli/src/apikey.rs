//! `wasmgate apikey`: a new API key for key-auth (256 random bits, URL-safe base64), its SHA-256
//! digest, and the configuration snippet that holds only the digest.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::process::ExitCode;

/// Arguments of `wasmgate apikey`.
#[derive(clap::Args)]
#[command(after_help = "Example: wasmgate apikey --client team-a\n\n\
    Give the key to the client once; put only the digest in the key-auth configuration \
    (key-auth keeps digests only). With --digest-of KEY, prints the digest of an existing key.")]
pub struct Args {
    /// Client id for the configuration snippet.
    #[arg(long, default_value = "my-client")]
    client: String,
    /// Prints only the key (for scripts: KEY=$(wasmgate apikey --quiet)).
    #[arg(long, conflicts_with = "digest_of")]
    quiet: bool,
    /// Prints the digest of this existing key instead of making one.
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    digest_of: Option<String>,
}

/// A new key: 32 bytes from the OS, URL-safe base64 without padding (43 characters).
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The hex SHA-256 digest key-auth's `{"sha256": ...}` holds.
pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Prints a key, its digest and a snippet (or only what the flags ask for).
pub fn run(args: &Args) -> Result<ExitCode, String> {
    if let Some(key) = &args.digest_of {
        println!("{}", digest(key));
        return Ok(ExitCode::SUCCESS);
    }
    let key = new_key();
    if args.quiet {
        println!("{key}");
        return Ok(ExitCode::SUCCESS);
    }
    let snippet = serde_json::json!({"id": args.client, "keys": [{"sha256": digest(&key)}]});
    println!("key:    {key}");
    println!("sha256: {}", digest(&key));
    println!("key-auth client (add to \"clients\"):");
    println!(
        "{}",
        serde_json::to_string_pretty(&snippet).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_256_bits_url_safe_and_fresh() {
        let (a, b) = (new_key(), new_key());
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn the_digest_is_the_one_key_auth_looks_up() {
        let key = "wg_demo_team_a_key_not_for_production";
        assert_eq!(digest(key), hex::encode(key_auth::keys::digest(key)));
    }
}
