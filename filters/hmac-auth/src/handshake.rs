//! Provider handshakes answered at the edge, only for a request whose signature verified and only
//! when the policy says `"handshake": true`: Slack `url_verification` (echo the challenge), Zoom
//! `endpoint.url_validation` (HMAC-SHA256 of `plainToken` under the secret token), Discord PING
//! (`type` 1, answered with PONG).

use crate::config::{CustomSettings, Provider, Scheme};
use crate::crypto::{self, Algorithm};
use wasmgate_core::Response;

/// Which handshake a scheme has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Slack Events API `url_verification`.
    Slack,
    /// Zoom `endpoint.url_validation`.
    Zoom,
    /// Discord interactions PING.
    Discord,
    /// Twitch EventSub `webhook_callback_verification`.
    Twitch,
}

impl Kind {
    /// The handshake of `scheme`, if it has one.
    pub fn of(scheme: &Scheme) -> Option<Self> {
        match scheme {
            Scheme::Slack => Some(Self::Slack),
            Scheme::Custom(CustomSettings {
                provider: Some(Provider::Zoom),
                ..
            }) => Some(Self::Zoom),
            Scheme::Custom(CustomSettings {
                provider: Some(Provider::Discord),
                ..
            }) => Some(Self::Discord),
            Scheme::Custom(CustomSettings {
                provider: Some(Provider::Twitch),
                ..
            }) => Some(Self::Twitch),
            _ => None,
        }
    }
}

fn json(value: &serde_json::Value) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: value.to_string().into_bytes(),
    }
}

/// The answer to a verified handshake `body`, or `None` when the body is not one (it is then
/// forwarded like any other verified delivery). `secret` is the secret that verified it (Zoom
/// answers with an HMAC under it).
pub fn answer(kind: Kind, body: &[u8], secret: Option<&[u8]>) -> Option<Response> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match kind {
        Kind::Slack => {
            if value["type"].as_str() != Some("url_verification") {
                return None;
            }
            let challenge = value["challenge"].as_str()?;
            Some(json(&serde_json::json!({ "challenge": challenge })))
        }
        Kind::Zoom => {
            if value["event"].as_str() != Some("endpoint.url_validation") {
                return None;
            }
            let plain = value["payload"]["plainToken"].as_str()?;
            let encrypted =
                hex::encode(crypto::mac(Algorithm::Sha256, secret?, &[plain.as_bytes()]));
            Some(json(
                &serde_json::json!({ "plainToken": plain, "encryptedToken": encrypted }),
            ))
        }
        Kind::Discord => {
            if value["type"].as_u64() != Some(1) {
                return None;
            }
            Some(json(&serde_json::json!({ "type": 1 })))
        }
        Kind::Twitch => None,
    }
}

/// Twitch's verification: `Twitch-Eventsub-Message-Type: webhook_callback_verification` and a
/// JSON body with `challenge`, answered with the challenge as plain text.
pub fn twitch(message_type: Option<&str>, body: &[u8]) -> Option<Response> {
    if message_type.map(str::trim) != Some("webhook_callback_verification") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let challenge = value["challenge"].as_str()?;
    Some(Response {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: challenge.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &Response) -> serde_json::Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn slack_challenge_is_echoed_as_json() {
        let r = answer(
            Kind::Slack,
            br#"{"token": "t", "challenge": "3eZbrw1aB\"<x>", "type": "url_verification"}"#,
            None,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            body_of(&r),
            serde_json::json!({"challenge": "3eZbrw1aB\"<x>"})
        );
        // Other events, a form body, a challenge that is not a string: not a handshake.
        for body in [
            &br#"{"type": "event_callback", "challenge": "x"}"#[..],
            b"token=x&challenge=y",
            br#"{"type": "url_verification", "challenge": 5}"#,
        ] {
            assert!(answer(Kind::Slack, body, None).is_none());
        }
    }

    #[test]
    fn zoom_token_is_the_hmac_of_plain_token() {
        let body = br#"{"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event": "endpoint.url_validation"}"#;
        let r = answer(Kind::Zoom, body, Some(b"secret-token")).unwrap();
        let expected = hex::encode(crypto::mac(
            Algorithm::Sha256,
            b"secret-token",
            &[b"qgg8vlvZRS6UYooatFL8Aw"],
        ));
        assert_eq!(
            body_of(&r),
            serde_json::json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected})
        );
        assert!(answer(Kind::Zoom, br#"{"event": "meeting.started"}"#, Some(b"s")).is_none());
    }

    #[test]
    fn twitch_challenge_is_echoed_as_text() {
        let body = br#"{"challenge": "pogchamp-kappa-360noscope-vohiyo", "subscription": {}}"#;
        let r = twitch(Some("webhook_callback_verification"), body).unwrap();
        assert_eq!(r.body, b"pogchamp-kappa-360noscope-vohiyo");
        assert_eq!(
            r.headers,
            vec![("content-type".to_string(), "text/plain".to_string())]
        );
        assert!(twitch(Some("notification"), body).is_none());
        assert!(twitch(None, body).is_none());
        assert!(twitch(
            Some("webhook_callback_verification"),
            br#"{"challenge": 1}"#
        )
        .is_none());
    }

    #[test]
    fn discord_ping_gets_pong() {
        let r = answer(Kind::Discord, br#"{"type": 1, "id": "x"}"#, None).unwrap();
        assert_eq!(body_of(&r), serde_json::json!({"type": 1}));
        assert!(answer(Kind::Discord, br#"{"type": 2}"#, None).is_none());
        assert!(answer(Kind::Discord, br#"{"type": "1"}"#, None).is_none());
    }
}
