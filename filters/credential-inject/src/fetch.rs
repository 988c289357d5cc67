//! The token request of an OAuth2 client-credentials grant (RFC 6749 section 4.4) and what its
//! answer must hold to be used.

use crate::config::{ClientAuth, Oauth2};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::time::Duration;
use wasmgate_core::{Answer, Callout};

/// The largest token answer read into the VM.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The largest access token used (it goes into a request header).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A token's lifetime when the answer gives none (RFC 6749 leaves it to the server).
pub const DEFAULT_LIFETIME_MS: u64 = 3_600_000;
/// Lifetimes are capped at one day: a refresh at least daily bounds how long a revoked
/// credential lives on.
pub const MAX_LIFETIME_MS: u64 = 86_400_000;

/// `application/x-www-form-urlencoded` of name/value pairs.
fn form<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// The token request.
pub fn request(grant: &Oauth2) -> Callout {
    let scope = grant.scopes.join(" ");
    let mut pairs: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    pairs.extend(grant.params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let header = |n: &str, v: &str| (n.to_string(), v.to_string());
    let mut headers = vec![
        header(":method", "POST"),
        header(":path", &grant.path),
        header(":authority", &grant.authority),
        header(":scheme", grant.scheme),
        header("content-type", "application/x-www-form-urlencoded"),
        header("accept", "application/json"),
    ];
    match grant.auth {
        ClientAuth::Basic => {
            // RFC 6749 section 2.3.1: the id and secret are form-encoded before Basic.
            let id = form_component(&grant.client_id);
            let secret = form_component(grant.client_secret.expose());
            let basic = STANDARD.encode(format!("{id}:{secret}"));
            headers.push(header("authorization", &format!("Basic {basic}")));
        }
        ClientAuth::Body => {
            pairs.push(("client_id", &grant.client_id));
            pairs.push(("client_secret", grant.client_secret.expose()));
        }
    }
    Callout::Http {
        cluster: grant.cluster.clone(),
        headers,
        body: Some(form(pairs).into_bytes()),
        trailers: Vec::new(),
        timeout: Duration::from_millis(grant.timeout_ms),
    }
}

/// One value form-encoded on its own.
fn form_component(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A usable token answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The access token.
    pub value: String,
    /// How long it is valid.
    pub lifetime_ms: u64,
}

#[derive(Deserialize)]
struct Body {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// What the token endpoint answered, or why it cannot be used (a reason fit for a log line: it
/// never holds the token or the answer's body).
pub fn token(answer: Answer) -> Result<Token, String> {
    let (headers, body) = match answer {
        Answer::Http { headers, body } => (headers, body),
        Answer::TooLarge { .. } => return Err(format!("answer over {MAX_ANSWER_BYTES} bytes")),
        Answer::NotSent(reason) => return Err(format!("not sent ({reason})")),
        Answer::Grpc { .. } => return Err("not an HTTP answer".into()),
    };
    // The reason is logged: it names the status as a number, never the text it came as.
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok());
    match status {
        Some(200) => {}
        Some(code) => return Err(format!("status {code}")),
        None => return Err("no valid status".into()),
    }
    let parsed: Body =
        serde_json::from_slice(&body).map_err(|_| "the answer is not a JSON object".to_string())?;
    let value = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?;
    if value.len() > MAX_TOKEN_BYTES || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the access_token is too long or not printable ASCII".into());
    }
    if let Some(kind) = parsed.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!("token_type {kind:?} is not Bearer"));
        }
    }
    Ok(Token {
        value,
        lifetime_ms: lifetime_ms(parsed.expires_in.as_ref())?,
    })
}

/// `expires_in` (seconds, a number or a numeric string as some servers send) in milliseconds.
fn lifetime_ms(expires_in: Option<&serde_json::Value>) -> Result<u64, String> {
    let seconds = match expires_in {
        None => return Ok(DEFAULT_LIFETIME_MS),
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    match seconds {
        Some(0) | None => Err("expires_in is not a positive number of seconds".into()),
        Some(s) => Ok(s.saturating_mul(1000).min(MAX_LIFETIME_MS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_core::Secret;

    fn grant(auth: ClientAuth) -> Oauth2 {
        Oauth2 {
            cluster: "idp".into(),
            authority: "idp.example".into(),
            path: "/oauth/token".into(),
            scheme: "https",
            timeout_ms: 2_000,
            client_id: "svc orders".into(),
            client_secret: Secret::new("s3cr:et&+"),
            auth,
            scopes: vec!["payments:write".into(), "refunds".into()],
            params: vec![("audience".into(), "https://api.payments.example".into())],
            shared_key: String::new(),
        }
    }

    fn parts(callout: Callout) -> (Vec<(String, String)>, String) {
        match callout {
            Callout::Http { headers, body, .. } => (
                headers,
                String::from_utf8(body.unwrap_or_default()).unwrap(),
            ),
            Callout::Grpc { .. } => panic!("an HTTP call"),
        }
    }

    #[test]
    fn client_secret_basic() {
        let (headers, body) = parts(request(&grant(ClientAuth::Basic)));
        let auth = headers.iter().find(|(n, _)| n == "authorization").unwrap();
        let decoded = STANDARD
            .decode(auth.1.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "svc+orders:s3cr%3Aet%26%2B"
        );
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=payments%3Awrite+refunds&audience=https%3A%2F%2Fapi.payments.example"
        );
        assert!(headers.contains(&(":path".into(), "/oauth/token".into())));
        assert!(headers.contains(&(":method".into(), "POST".into())));
    }

    #[test]
    fn client_secret_post() {
        let (headers, body) = parts(request(&grant(ClientAuth::Body)));
        assert!(!headers.iter().any(|(n, _)| n == "authorization"));
        assert!(
            body.ends_with("&client_id=svc+orders&client_secret=s3cr%3Aet%26%2B"),
            "{body}"
        );
    }

    fn answer(status: &str, body: &str) -> Answer {
        Answer::Http {
            headers: vec![(":status".into(), status.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn usable_answers() {
        let ok = token(answer(
            "200",
            r#"{"access_token": "abc", "token_type": "Bearer", "expires_in": 300}"#,
        ));
        assert_eq!(
            ok,
            Ok(Token {
                value: "abc".into(),
                lifetime_ms: 300_000
            })
        );
        let string_lifetime = token(answer(
            "200",
            r#"{"access_token": "abc", "token_type": "bearer", "expires_in": "60"}"#,
        ));
        assert_eq!(string_lifetime.unwrap().lifetime_ms, 60_000);
        let no_lifetime = token(answer("200", r#"{"access_token": "abc"}"#));
        assert_eq!(no_lifetime.unwrap().lifetime_ms, DEFAULT_LIFETIME_MS);
        let long = token(answer(
            "200",
            r#"{"access_token": "abc", "expires_in": 31536000}"#,
        ));
        assert_eq!(long.unwrap().lifetime_ms, MAX_LIFETIME_MS);
    }

    #[test]
    fn unusable_answers_never_echo_the_body() {
        let secret_body = r#"{"access_token": "leaked\n", "expires_in": 60}"#;
        for (status, body) in [
            ("401", r#"{"error": "invalid_client"}"#),
            ("200", "not json"),
            ("200", r#"{"token_type": "Bearer"}"#),
            ("200", r#"{"access_token": ""}"#),
            ("200", secret_body),
            ("200", r#"{"access_token": "abc", "token_type": "DPoP"}"#),
            ("200", r#"{"access_token": "abc", "expires_in": 0}"#),
            ("200", r#"{"access_token": "abc", "expires_in": -5}"#),
            ("200", r#"{"access_token": "abc", "expires_in": [1]}"#),
        ] {
            let reason = token(answer(status, body)).unwrap_err();
            assert!(
                !reason.contains("leaked") && !reason.contains("abc"),
                "{reason}"
            );
        }
        let garbled = Answer::Http {
            headers: vec![(":status".into(), "\u{FFFD}".repeat(60))],
            body: Vec::new(),
        };
        assert_eq!(token(garbled), Err("no valid status".into()));
        let too_long = format!(
            r#"{{"access_token": "{}"}}"#,
            "a".repeat(MAX_TOKEN_BYTES + 1)
        );
        assert!(token(answer("200", &too_long)).is_err());
        assert!(token(Answer::NotSent("no cluster".into())).is_err());
    }
}
