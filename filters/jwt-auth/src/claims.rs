//! JWT claims (RFC 7519): parsing, time and audience rules as jwt_verify_lib applies them, and
//! the `claims` requirements of a rule.

use crate::failure::Failure;
use serde_json::{Map, Value};

/// The registered claims this filter checks, plus the whole claims object.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// All claims.
    pub all: Map<String, Value>,
    /// `iss`.
    pub iss: Option<String>,
    /// `aud` (a string is a one-element list).
    pub aud: Vec<String>,
    /// `exp` in whole seconds.
    pub exp: Option<u64>,
    /// `nbf` in whole seconds.
    pub nbf: Option<u64>,
}

/// A JSON object in which no object (at any depth) repeats a member name: parsers disagree on
/// which duplicate wins (RFC 7515 allows rejecting them), so a token with `{"sub": "alice",
/// "sub": "admin"}` could mean alice here and admin upstream. `None` for anything else.
pub fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(map))) => Some(map),
        _ => None,
    }
}

/// A JSON value that refuses duplicate member names.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(out))
    }
}

fn numeric_date(all: &Map<String, Value>, name: &str) -> Result<Option<u64>, Failure> {
    match all.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    // NumericDate may have a fraction; whole seconds are enough here.
                    Some(v) if v >= 0.0 && v.is_finite() => Ok(Some(v as u64)),
                    _ => Err(Failure::Malformed("a time claim is negative")),
                }
            }
        }
        Some(_) => Err(Failure::Malformed("exp and nbf must be numbers")),
    }
}

impl Claims {
    /// Parses a JWT payload: a JSON object whose `iss` is a string, `aud` a string or a list of
    /// strings, and `exp`/`nbf` numbers.
    pub fn parse(payload: &[u8]) -> Result<Self, Failure> {
        let all = strict_object(payload).ok_or(Failure::Malformed(
            "the token payload is not a JSON object without duplicate names",
        ))?;
        let iss = match all.get("iss") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Failure::Malformed("iss is not a string")),
        };
        let aud = match all.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Failure::Malformed("aud is not a list of strings"))?,
            Some(_) => return Err(Failure::Malformed("aud is not a string or a list")),
        };
        let exp = numeric_date(&all, "exp")?;
        let nbf = numeric_date(&all, "nbf")?;
        Ok(Self {
            all,
            iss,
            aud,
            exp,
            nbf,
        })
    }

    /// `sub` when it is a string.
    pub fn sub(&self) -> Option<&str> {
        self.all.get("sub").and_then(Value::as_str)
    }

    /// jwt_verify_lib's rule: not yet valid if `now + skew < nbf`; expired if `now > exp + skew`.
    pub fn check_time(&self, now: u64, skew: u64) -> Result<(), Failure> {
        if let Some(nbf) = self.nbf {
            if now.saturating_add(skew) < nbf {
                return Err(Failure::NotYetValid);
            }
        }
        if let Some(exp) = self.exp {
            if now > exp.saturating_add(skew) {
                return Err(Failure::Expired);
            }
        }
        Ok(())
    }

    /// With allowed audiences configured, one of the token's must be among them; scheme
    /// (`http://`, `https://`) and a trailing `/` are ignored, as jwt_verify_lib does.
    pub fn check_audience(&self, allowed: &[String]) -> Result<(), Failure> {
        if allowed.is_empty() {
            return Ok(());
        }
        let ok = self.aud.iter().any(|a| {
            allowed
                .iter()
                .any(|b| normalize_audience(a) == normalize_audience(b))
        });
        if ok {
            Ok(())
        } else {
            Err(Failure::AudienceNotAllowed)
        }
    }

    /// A claim by dotted path (`realm.roles`, as jwt_authn). A claim name may itself contain
    /// dots (Auth0's `https://example.com/roles`): at each level the longest name that
    /// matches the rest of the path, or a prefix of it ending before a dot, is taken, so
    /// `https://example.com/app.roles` is `roles` inside the claim `https://example.com/app`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        lookup(&self.all, path)
    }
}

/// Longest-name-first lookup of a dotted path in an object (see [`Claims::get`]).
fn lookup<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    // Split points from the right: the longest prefix that names a member wins.
    for (i, _) in path.rmatch_indices('.') {
        let (name, rest) = (&path[..i], &path[i + 1..]);
        if let Some(Value::Object(inner)) = object.get(name) {
            return lookup(inner, rest);
        }
    }
    None
}

fn normalize_audience(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}

/// One `claims` entry: the claim at `name` must satisfy `rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// Claim name or dotted path.
    pub name: String,
    /// What the claim must hold.
    pub rule: ClaimMatch,
}

/// A test on one claim. The claim's *items* are: a string itself and each of its
/// space-delimited parts (OAuth `scope`), each string, number or boolean of an array (nested
/// arrays and objects are no items), a number or boolean as text; null and objects have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimMatch {
    /// Some item equals the value.
    Equals(String),
    /// Some item starts with the (non-empty) value.
    Prefix(String),
    /// One of the tests holds.
    AnyOf(Vec<ClaimMatch>),
    /// Every test holds.
    AllOf(Vec<ClaimMatch>),
    /// The test does not hold (a missing claim satisfies `not`).
    Not(Box<ClaimMatch>),
}

/// The items of a claim value (see [`ClaimMatch`]).
fn items(value: Option<&Value>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Value::String(s)) => {
            let mut out = vec![s.clone()];
            if s.contains(' ') {
                out.extend(s.split(' ').filter(|p| !p.is_empty()).map(str::to_string));
            }
            out
        }
        Some(Value::Array(list)) => list.iter().filter_map(scalar_text).collect(),
        Some(other) => scalar_text(other).into_iter().collect(),
    }
}

impl ClaimMatch {
    fn holds_on(&self, items: &[String]) -> bool {
        match self {
            Self::Equals(v) => items.iter().any(|i| i == v),
            Self::Prefix(p) => items.iter().any(|i| i.starts_with(p.as_str())),
            Self::AnyOf(list) => list.iter().any(|m| m.holds_on(items)),
            Self::AllOf(list) => list.iter().all(|m| m.holds_on(items)),
            Self::Not(inner) => !inner.holds_on(items),
        }
    }
}

impl ClaimRule {
    /// Whether the token's claims satisfy the rule.
    pub fn holds(&self, claims: &Claims) -> bool {
        self.rule.holds_on(&items(claims.get(&self.name)))
    }
}

/// How `claim_to_headers` renders an array claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ArrayFormat {
    /// Base64 (standard, padded) of the compact JSON, as jwt_authn (objects always so).
    #[default]
    Base64Json,
    /// Items joined with `,` when every item is a string, number or boolean without a comma;
    /// otherwise no header (a comma inside an item would make two items of one).
    CommaSeparated,
}

/// The header value `claim_to_headers` sends for a claim, if any: strings as is, numbers
/// (integers without a fraction, as jwt_authn) and booleans as text, arrays and objects per
/// `format`; null gives none.
pub fn header_value(value: &Value, format: ArrayFormat) -> Option<String> {
    use base64::Engine;
    let base64_json = |v: &Value| {
        serde_json::to_string(v)
            .ok()
            .map(|json| base64::engine::general_purpose::STANDARD.encode(json))
    };
    match value {
        Value::Null => None,
        Value::Object(_) => base64_json(value),
        Value::Array(list) => match format {
            ArrayFormat::Base64Json => base64_json(value),
            ArrayFormat::CommaSeparated => {
                let texts = list
                    .iter()
                    .map(|item| match item {
                        Value::Array(_) | Value::Object(_) | Value::Null => None,
                        other => scalar_text(other).filter(|t| !t.contains(',')),
                    })
                    .collect::<Option<Vec<_>>>()?;
                // jwt_authn sends no header for an empty value.
                (!texts.is_empty()).then(|| texts.join(","))
            }
        },
        other => scalar_text(other),
    }
}

/// A string claim as is, numbers and booleans as text; objects, arrays and null have no text.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Result<Claims, Failure> {
        Claims::parse(json.as_bytes())
    }

    #[test]
    fn parse_rejects_bad_types() {
        assert!(claims("[]").is_err());
        assert!(claims("Payload").is_err());
        assert_eq!(
            claims(r#"{"exp": "1700000000"}"#).unwrap_err(),
            Failure::Malformed("exp and nbf must be numbers")
        );
        assert!(claims(r#"{"nbf": true}"#).is_err());
        assert!(claims(r#"{"nbf": null}"#).is_err());
        assert!(claims(r#"{"exp": -5}"#).is_err());
        assert!(claims(r#"{"iss": 5}"#).is_err());
        assert!(claims(r#"{"aud": [1]}"#).is_err());
        assert!(claims(r#"{"aud": {}}"#).is_err());
        let c = claims(r#"{"exp": 1.5e9, "aud": "a", "iss": "i"}"#).unwrap();
        assert_eq!(c.exp, Some(1_500_000_000));
        assert_eq!(c.aud, vec!["a"]);
    }

    #[test]
    fn duplicate_names_are_malformed_at_any_depth() {
        assert!(claims(r#"{"sub": "alice", "sub": "admin"}"#).is_err());
        assert!(claims(r#"{"realm": {"roles": [], "roles": ["admin"]}}"#).is_err());
        assert!(claims(r#"{"a": [{"x": 1, "x": 2}]}"#).is_err());
        // Escaped spellings of one name are one name.
        assert!(claims(r#"{"sub": "alice", "s\u0075b": "admin"}"#).is_err());
        let c = claims(r#"{"a": {"x": 1}, "b": {"x": 1}, "f": 1.5, "n": -3}"#).unwrap();
        assert_eq!(c.all["f"], serde_json::json!(1.5));
        assert_eq!(c.all["n"], serde_json::json!(-3));
    }

    #[test]
    fn time_rules_match_jwt_verify_lib() {
        // The jwt_time_test.cc cases: exp=1605052800, nbf=1605050800.
        let c = claims(r#"{"exp": 1605052800, "nbf": 1605050800}"#).unwrap();
        let (exp, nbf) = (1_605_052_800, 1_605_050_800);
        assert_eq!(c.check_time(exp + 60 - 10, 60), Ok(()));
        assert_eq!(c.check_time(exp + 60 + 10, 60), Err(Failure::Expired));
        assert_eq!(c.check_time(nbf - 60 + 10, 60), Ok(()));
        assert_eq!(c.check_time(nbf - 60 - 10, 60), Err(Failure::NotYetValid));
        assert_eq!(c.check_time(exp + 9, 10), Ok(()));
        assert_eq!(c.check_time(exp + 11, 10), Err(Failure::Expired));
        assert_eq!(c.check_time(nbf - 9, 10), Ok(()));
        assert_eq!(c.check_time(nbf - 11, 10), Err(Failure::NotYetValid));
        assert_eq!(claims("{}").unwrap().check_time(u64::MAX, 0), Ok(()));
    }

    #[test]
    fn audiences() {
        let c = claims(r#"{"aud": ["https://api.example.com/", "other"]}"#).unwrap();
        assert_eq!(c.check_audience(&[]), Ok(()));
        assert_eq!(c.check_audience(&["api.example.com".into()]), Ok(()));
        assert_eq!(c.check_audience(&["http://other".into()]), Ok(()));
        assert_eq!(
            c.check_audience(&["nope".into()]),
            Err(Failure::AudienceNotAllowed)
        );
        assert_eq!(
            claims("{}").unwrap().check_audience(&["a".into()]),
            Err(Failure::AudienceNotAllowed)
        );
    }

    #[test]
    fn claim_rules() {
        let c = claims(
            r#"{"scope": "read admin", "roles": ["a", "b"], "n": 5, "ok": true,
                "realm": {"roles": ["x"]}, "a.b": "dotted"}"#,
        )
        .unwrap();
        let rule = |name: &str, values: &[&str]| ClaimRule {
            name: name.into(),
            rule: ClaimMatch::AnyOf(
                values
                    .iter()
                    .map(|v| ClaimMatch::Equals(v.to_string()))
                    .collect(),
            ),
        };
        assert!(rule("scope", &["admin"]).holds(&c));
        assert!(rule("scope", &["read admin"]).holds(&c));
        assert!(!rule("scope", &["adm"]).holds(&c));
        assert!(rule("roles", &["z", "b"]).holds(&c));
        assert!(!rule("roles", &["z"]).holds(&c));
        assert!(rule("n", &["5"]).holds(&c));
        assert!(rule("ok", &["true"]).holds(&c));
        assert!(rule("realm.roles", &["x"]).holds(&c));
        assert!(rule("a.b", &["dotted"]).holds(&c));
        assert!(!rule("missing", &["x"]).holds(&c));
    }

    #[test]
    fn richer_rules_and_their_attacks() {
        let c = claims(
            r#"{"scope": "read write", "roles": ["tenant:acme", "user", ["admin"], {"admin": 1}],
                "bad": {"scope": "admin"}, "n": 5}"#,
        )
        .unwrap();
        let eq = |v: &str| ClaimMatch::Equals(v.into());
        let on = |name: &str, rule: ClaimMatch| {
            ClaimRule {
                name: name.into(),
                rule,
            }
            .holds(&c)
        };
        assert!(on(
            "scope",
            ClaimMatch::AllOf(vec![eq("read"), eq("write")])
        ));
        assert!(!on(
            "scope",
            ClaimMatch::AllOf(vec![eq("read"), eq("admin")])
        ));
        assert!(on("roles", ClaimMatch::Prefix("tenant:".into())));
        assert!(!on("roles", ClaimMatch::Prefix("tenant:x".into())));
        assert!(
            on("roles", ClaimMatch::Not(Box::new(eq("admin")))),
            "nested arrays and objects are no items"
        );
        assert!(!on("bad", eq("admin")), "an object is no item");
        assert!(on("missing", ClaimMatch::Not(Box::new(eq("x")))));
        assert!(!on("missing", ClaimMatch::Prefix("x".into())));
        assert!(on("n", eq("5")));
        // A prefix of the whole scope string is a prefix of an item too.
        assert!(on("scope", ClaimMatch::Prefix("wri".into())));
    }

    #[test]
    fn claim_names_with_dots() {
        let c = claims(
            r#"{"https://example.com/tenant": "acme",
                "https://example.com/app": {"roles": ["r1"], "x.y": {"z": 1}},
                "realm": {"roles": ["x"]}}"#,
        )
        .unwrap();
        assert_eq!(
            c.get("https://example.com/tenant"),
            Some(&Value::from("acme"))
        );
        assert_eq!(
            c.get("https://example.com/app.roles"),
            Some(&serde_json::json!(["r1"]))
        );
        assert_eq!(
            c.get("https://example.com/app.x.y.z"),
            Some(&Value::from(1))
        );
        assert_eq!(c.get("realm.roles"), Some(&serde_json::json!(["x"])));
        assert_eq!(c.get("realm.nope"), None);
        assert_eq!(c.get("https://example"), None);
        assert_eq!(c.get("."), None);
    }

    #[test]
    fn header_values_follow_jwt_authn() {
        use serde_json::json;
        let b64 = ArrayFormat::Base64Json;
        let csv = ArrayFormat::CommaSeparated;
        assert_eq!(header_value(&json!("a b"), b64).as_deref(), Some("a b"));
        assert_eq!(header_value(&json!(7), b64).as_deref(), Some("7"));
        assert_eq!(header_value(&json!(true), csv).as_deref(), Some("true"));
        assert_eq!(header_value(&json!(null), b64), None);
        // base64 of ["g1","g2"]
        assert_eq!(
            header_value(&json!(["g1", "g2"]), b64).as_deref(),
            Some("WyJnMSIsImcyIl0=")
        );
        assert_eq!(
            header_value(&json!({"a": 1}), csv).as_deref(),
            Some("eyJhIjoxfQ==")
        );
        assert_eq!(
            header_value(&json!(["g1", "g2", 3]), csv).as_deref(),
            Some("g1,g2,3")
        );
        assert_eq!(header_value(&json!([]), csv), None);
        // An item with a comma, or a nested value, would be ambiguous: no header.
        assert_eq!(header_value(&json!(["a,b", "c"]), csv), None);
        assert_eq!(header_value(&json!(["a", ["b"]]), csv), None);
        assert_eq!(header_value(&json!(["a", null]), csv), None);
    }
}
