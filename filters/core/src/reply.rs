//! Local replies: every response a filter makes itself has the same JSON shape.

use serde::Serialize;

/// A response the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u32,
    /// Stable snake_case code clients can branch on (`invalid_token`).
    pub error: String,
    /// One human sentence; never holds a secret, token or signature.
    pub message: String,
    /// The filter's standard headers (`WWW-Authenticate`, `Retry-After`...).
    pub headers: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl LocalReply {
    /// A reply with no extra headers.
    pub fn new(status: u32, error: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The reply to a body over a filter's `max_body_bytes`: 413 for a request body, 502 for an
    /// upstream response body (the client did nothing wrong).
    pub fn body_too_large(request: bool, limit: u64) -> Self {
        if request {
            Self::new(
                413,
                "body_too_large",
                format!("The request body is larger than {limit} bytes."),
            )
        } else {
            Self::new(
                502,
                "body_too_large",
                format!("The upstream response body is larger than {limit} bytes."),
            )
        }
    }

    /// Adds one header to the reply.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `{"error": ..., "message": ...}` as bytes.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            error: &self.error,
            message: &self.message,
        })
        .unwrap_or_default()
    }

    /// The reply's headers, `content-type: application/json` first.
    pub fn all_headers(&self) -> Vec<(&str, &str)> {
        std::iter::once(("content-type", "application/json"))
            .chain(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_error_and_message() {
        let reply = LocalReply::new(429, "rate_limited", "Too many \"requests\".")
            .with_header("retry-after", "3");
        let body: serde_json::Value = serde_json::from_slice(&reply.body()).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["message"], "Too many \"requests\".");
        assert_eq!(
            reply.all_headers(),
            vec![("content-type", "application/json"), ("retry-after", "3")]
        );
    }
}
