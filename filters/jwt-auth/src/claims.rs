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
        let all: Map<String, Value> = serde_json::from_slice(payload)
            .map_err(|_| Failure::Malformed("the token payload is not a JSON object"))?;
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

    /// A claim by dotted path (`realm.roles`); a top-level claim whose name contains dots wins.
    pub fn get(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.all.get(path) {
            return Some(v);
        }
        let mut parts = path.split('.');
        let mut current = self.all.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }
}

fn normalize_audience(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}

/// One `claims` entry: the claim at `name` must hold one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// Claim name or dotted path.
    pub name: String,
    /// Accepted values (any of them).
    pub values: Vec<String>,
}

impl ClaimRule {
    /// Holds when the claim equals a value, or is a list or a space-delimited string (OAuth
    /// `scope`) containing one. Numbers and booleans compare by their text.
    pub fn holds(&self, claims: &Claims) -> bool {
        let Some(value) = claims.get(&self.name) else {
            return false;
        };
        self.values.iter().any(|wanted| match value {
            Value::String(s) => s == wanted || s.split(' ').any(|part| part == wanted),
            Value::Array(items) => items
                .iter()
                .any(|item| scalar_text(item).as_deref() == Some(wanted)),
            other => scalar_text(other).as_deref() == Some(wanted),
        })
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
            values: values.iter().map(|v| v.to_string()).collect(),
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
}
