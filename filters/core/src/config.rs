//! Configuration loading: JSON to typed structs, with errors that name the JSON path.

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use std::fmt;

/// A configuration problem and where it is, so an operator can find it in a large config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted JSON path (`rules[0].match.hosts`), or `$` for the document itself.
    pub path: String,
    /// One human sentence; never contains a secret.
    pub reason: String,
}

impl ConfigError {
    /// An error found after parsing, while compiling a field at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The one log line Envoy shows when it rejects the configuration.
    pub fn log_line(&self, filter: &str) -> String {
        format!("wasmgate {filter}: invalid configuration at {self}")
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a JSON configuration; unknown and missing fields are reported with their full path.
pub fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let parsed = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        from_serde_message(&path, &err.inner().to_string())
    })?;
    deserializer
        .end()
        .map_err(|err| ConfigError::new("$", strip_position(&err.to_string())))?;
    Ok(parsed)
}

/// Moves the field named in serde's "missing field `x`" / "unknown field `x`" into the path.
fn from_serde_message(path: &str, message: &str) -> ConfigError {
    let message = strip_position(message);
    let base = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((field, _)) = rest.split_once('`') {
            return ConfigError::new(join_path(base, field), "missing field");
        }
    }
    // serde_path_to_error already ends the path with an unknown field's name.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((_, expected)) = rest.split_once('`') {
            let expected = expected.trim_start_matches(',').trim();
            return ConfigError::new(base, format!("unknown field ({expected})"));
        }
    }
    ConfigError::new(if base.is_empty() { "$" } else { base }, message)
}

fn join_path(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else {
        format!("{base}.{field}")
    }
}

/// serde_json appends " at line L column C"; the JSON path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
        _ => message.to_string(),
    }
}

/// A duration written with a unit (`"250ms"`, `"30s"`, `"5m"`, `"1h"`), as operators write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let invalid = || {
            format!("invalid duration {text:?}: expected an integer followed by ms, s, m or h, as in \"250ms\" or \"30s\"")
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        let millis_per_unit = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        let millis = value.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        Ok(Self(std::time::Duration::from_millis(millis)))
    }

    /// Whole milliseconds, for Envoy headers and host timers.
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

/// A secret read from the configuration (`{"value": "..."}`) or the VM's environment
/// (`{"env": "NAME"}`). Its `Debug` never shows the value, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that is already known to be secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Resolves the `{"value"}` / `{"env"}` alternatives; exactly one must be given.
    pub fn resolve(value: Option<String>, env: Option<String>) -> Result<Self, String> {
        match (value, env) {
            (Some(value), None) if !value.is_empty() => Ok(Self(value)),
            (Some(_), None) => Err("secret value is empty".into()),
            (None, Some(name)) => match std::env::var(&name) {
                Ok(value) if !value.is_empty() => Ok(Self(value)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            (Some(_), Some(_)) => Err("give either \"value\" or \"env\", not both".into()),
            (None, None) => Err("a secret needs \"value\" or \"env\"".into()),
        }
    }

    /// The secret itself; callers must never log, echo or forward it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRef {
    value: Option<String>,
    env: Option<String>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = SecretRef::deserialize(deserializer)?;
        Secret::resolve(raw.value, raw.env).map_err(de::Error::custom)
    }
}

/// JSON Schemas of the shared value types (feature `schema`, for the wasmgate CLI).
#[cfg(feature = "schema")]
mod schema {
    use super::{Duration, Secret};
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use std::borrow::Cow;

    impl JsonSchema for Duration {
        fn schema_name() -> Cow<'static, str> {
            "Duration".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "pattern": "^[0-9]+(ms|s|m|h)$",
                "description": "An integer followed by ms, s, m or h, as in \"250ms\" or \"30s\"."
            })
        }
    }

    impl JsonSchema for Secret {
        fn schema_name() -> Cow<'static, str> {
            "Secret".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A secret: {\"value\": \"...\"} or {\"env\": \"NAME\"} (the VM's environment).",
                "oneOf": [
                    {"type": "object", "properties": {"value": {"type": "string", "minLength": 1}},
                     "required": ["value"], "additionalProperties": false},
                    {"type": "object", "properties": {"env": {"type": "string", "minLength": 1}},
                     "required": ["env"], "additionalProperties": false}
                ]
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Provider {
        issuer: String,
        #[serde(default)]
        timeout: Option<Duration>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Root {
        providers: std::collections::BTreeMap<String, Provider>,
        #[serde(default)]
        rules: Vec<Provider>,
        #[serde(default)]
        secret: Option<Secret>,
    }

    fn error(json: &str) -> ConfigError {
        parse::<Root>(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn missing_field_names_its_path() {
        let err = error(r#"{"providers": {"example": {}}}"#);
        assert_eq!(err.path, "providers.example.issuer");
        assert_eq!(err.reason, "missing field");
    }

    #[test]
    fn missing_top_level_field() {
        let err = error("{}");
        assert_eq!(err.path, "providers");
        assert_eq!(err.reason, "missing field");
    }

    #[test]
    fn unknown_field_is_rejected_with_its_path() {
        let err = error(r#"{"providers": {"e": {"issuer": "i", "isuer": "x"}}}"#);
        assert_eq!(err.path, "providers.e.isuer");
        assert!(err.reason.starts_with("unknown field"), "{}", err.reason);
    }

    #[test]
    fn wrong_type_names_array_index() {
        let err = error(r#"{"providers": {}, "rules": [{"issuer": "a"}, {"issuer": 5}]}"#);
        assert_eq!(err.path, "rules[1].issuer");
        assert!(err.reason.contains("expected a string"), "{}", err.reason);
    }

    #[test]
    fn invalid_json_is_reported_at_root() {
        let err = error(r#"{"providers": "#);
        assert_eq!(err.path, "providers");
        let err = error(r#"{"providers": {}} trailing"#);
        assert_eq!(err.path, "$");
        assert!(!err.reason.contains("line"));
    }

    #[test]
    fn log_line_has_the_contract_shape() {
        let err = ConfigError::new("rules[0].match.hosts[1]", "empty host");
        assert_eq!(
            err.log_line("jwt-auth"),
            "wasmgate jwt-auth: invalid configuration at rules[0].match.hosts[1]: empty host"
        );
    }

    #[test]
    fn durations_with_units() {
        let ms = |s: &str| Duration::parse(s).unwrap().as_millis();
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("30s"), 30_000);
        assert_eq!(ms("5m"), 300_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("0s"), 0);
        for bad in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "10d",
            "5 s",
            "99999999999999999999h",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duration_error_has_path() {
        let err = error(r#"{"providers": {"e": {"issuer": "i", "timeout": "10"}}}"#);
        assert_eq!(err.path, "providers.e.timeout");
        assert!(err.reason.contains("invalid duration"), "{}", err.reason);
    }

    #[test]
    fn secret_from_value_and_env() {
        std::env::set_var("WASMGATE_CORE_TEST_SECRET", "from-env");
        let root: Root =
            parse(br#"{"providers": {}, "secret": {"env": "WASMGATE_CORE_TEST_SECRET"}}"#).unwrap();
        assert_eq!(root.secret.unwrap().expose(), "from-env");
        let root: Root = parse(br#"{"providers": {}, "secret": {"value": "s3cr3t"}}"#).unwrap();
        assert_eq!(root.secret.unwrap().expose(), "s3cr3t");
    }

    #[test]
    fn secret_errors() {
        let err = error(r#"{"providers": {}, "secret": {"env": "WASMGATE_SURELY_UNSET"}}"#);
        assert_eq!(err.path, "secret");
        assert_eq!(
            err.reason,
            "environment variable WASMGATE_SURELY_UNSET is not set"
        );
        let err = error(r#"{"providers": {}, "secret": {"value": "a", "env": "B"}}"#);
        assert!(err.reason.contains("not both"));
        let err = error(r#"{"providers": {}, "secret": {}}"#);
        assert!(err.reason.contains("needs"));
        let err = error(r#"{"providers": {}, "secret": {"value": ""}}"#);
        assert!(err.reason.contains("empty"));
        let err = error(r#"{"providers": {}, "secret": {"valu": "x"}}"#);
        assert_eq!(err.path, "secret.valu");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let err = error(r#"{"providers": {}, "secret": {"value": "hunter2", "x": 1}}"#);
        assert!(!err.reason.contains("hunter2"));
    }
}
