//! The filters and their own configuration parsers (no second parser lives in the CLI).

use wasmgate_core::config::ConfigError;

/// A wasmgate filter as the CLI knows it.
pub struct Filter {
    /// Its name: the log line prefix, the Envoy filter and root id, the OCI image name.
    pub name: &'static str,
    parse: fn(&[u8]) -> Result<(), ConfigError>,
}

/// Every filter, with the function its `on_configure` uses to parse and compile a configuration.
pub const FILTERS: [Filter; 5] = [
    Filter {
        name: "hmac-auth",
        parse: |json| hmac_auth::config::parse(json).map(drop),
    },
    Filter {
        name: "jwt-auth",
        parse: |json| jwt_auth::config::Config::from_json(json).map(drop),
    },
    Filter {
        name: "rate-limit",
        parse: |json| rate_limit::config::parse(json).map(drop),
    },
    Filter {
        name: "retry",
        parse: |json| retry::config::parse(json).map(drop),
    },
    Filter {
        name: "transform",
        parse: |json| transform::config::parse(json).map(drop),
    },
];

impl Filter {
    /// Parses and compiles `json` as the filter does when Envoy configures it (an empty
    /// configuration is `{}`); the error is the exact line the filter logs.
    pub fn check(&self, json: &[u8]) -> Result<(), String> {
        let json = if json.iter().all(u8::is_ascii_whitespace) {
            b"{}".as_slice()
        } else {
            json
        };
        (self.parse)(json).map_err(|e| e.log_line(self.name))
    }
}

/// A filter by name (`hmac-auth`), module name (`hmac_auth`, `hmac_auth.wasm`) or image
/// reference (`oci://ghcr.io/wasmgate/hmac-auth:0.1.0`).
pub fn find(name: &str) -> Option<&'static Filter> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let last = last.split([':', '@']).next().unwrap_or(last);
    let last = last.strip_suffix(".wasm").unwrap_or(last).replace('_', "-");
    FILTERS.iter().find(|f| f.name == last)
}

/// The filter names, for error messages.
pub fn names() -> String {
    FILTERS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A filter by the name a user typed, or a one-line error listing the names.
pub fn by_name(name: &str) -> Result<&'static Filter, String> {
    find(name).ok_or_else(|| format!("unknown filter {name:?} (one of: {})", names()))
}
