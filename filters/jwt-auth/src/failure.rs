//! Why a request was denied, with the status Envoy's jwt_authn gives for the same failure.

use wasmgate_core::LocalReply;

/// One reason to deny a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No token in any location the requirement looks at.
    Missing,
    /// The token is not a well-formed compact JWS/JWT (the reason says what).
    Malformed(&'static str),
    /// The token is longer than `max_token_bytes`.
    TooLarge,
    /// `alg` is `none` or an algorithm this filter does not verify.
    UnsupportedAlg,
    /// `iss` is not the provider's issuer.
    UnknownIssuer,
    /// `exp` (plus clock skew) is in the past.
    Expired,
    /// `nbf` (minus clock skew) is in the future.
    NotYetValid,
    /// None of the token's audiences is allowed.
    AudienceNotAllowed,
    /// No key of the JWKS fits the token's `kid` and `alg`.
    UnknownKey,
    /// A key fits but the signature does not verify.
    BadSignature,
    /// The provider's remote JWKS has not been fetched successfully.
    JwksUnavailable,
    /// The token verified but the rule's `claims` do not hold.
    ClaimsUnmet,
    /// `sub` does not match the provider's `subjects`.
    SubjectNotAllowed,
    /// `exp` is further away than the provider's `max_lifetime`.
    LifetimeTooLong,
    /// No `exp` though the provider requires one (`require_expiration` or `max_lifetime`).
    ExpirationRequired,
    /// The introspection endpoint says the token is not active.
    TokenInactive,
    /// The introspection endpoint could not be asked or gave no usable answer (fail closed).
    IntrospectionFailed,
}

impl Failure {
    /// HTTP status: 403 for audience and claims, 401 for everything else (as jwt_authn).
    pub fn status(self) -> u32 {
        match self {
            Self::AudienceNotAllowed | Self::ClaimsUnmet => 403,
            _ => 401,
        }
    }

    /// The stable `error` code of the local reply and the metric's `reason` label.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed(_) => "malformed_token",
            Self::TooLarge => "token_too_large",
            Self::UnsupportedAlg => "unsupported_algorithm",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::AudienceNotAllowed => "audience_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "invalid_signature",
            Self::JwksUnavailable => "jwks_unavailable",
            Self::ClaimsUnmet => "insufficient_scope",
            Self::SubjectNotAllowed => "subject_not_allowed",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::ExpirationRequired => "expiration_required",
            Self::TokenInactive => "token_inactive",
            Self::IntrospectionFailed => "introspection_failed",
        }
    }

    /// Every code, for defining one denial counter per reason.
    pub const ALL_CODES: [&'static str; 17] = [
        "missing_token",
        "malformed_token",
        "token_too_large",
        "unsupported_algorithm",
        "unknown_issuer",
        "token_expired",
        "token_not_yet_valid",
        "audience_not_allowed",
        "unknown_key",
        "invalid_signature",
        "jwks_unavailable",
        "insufficient_scope",
        "subject_not_allowed",
        "lifetime_too_long",
        "expiration_required",
        "token_inactive",
        "introspection_failed",
    ];

    /// One human sentence; never contains the token.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "A bearer token is required.",
            Self::Malformed(reason) => reason,
            Self::TooLarge => "The token is larger than the configured maximum.",
            Self::UnsupportedAlg => "The token's algorithm is not supported.",
            Self::UnknownIssuer => "The token's issuer is not configured.",
            Self::Expired => "The token has expired.",
            Self::NotYetValid => "The token is not valid yet.",
            Self::AudienceNotAllowed => "The token's audiences are not allowed.",
            Self::UnknownKey => "No key matches the token's kid and algorithm.",
            Self::BadSignature => "The token's signature does not verify.",
            Self::JwksUnavailable => "The keys to verify the token are not available.",
            Self::ClaimsUnmet => "The token's claims do not allow this request.",
            Self::SubjectNotAllowed => "The token's subject is not allowed.",
            Self::LifetimeTooLong => "The token's lifetime is longer than allowed.",
            Self::ExpirationRequired => "The token has no expiration.",
            Self::TokenInactive => "The token is not active.",
            Self::IntrospectionFailed => "The token could not be checked.",
        }
    }

    /// The local reply, with `WWW-Authenticate` per RFC 6750: `Bearer realm="<host>"`, plus
    /// `error="invalid_token"` when a token was presented, or `error="insufficient_scope"`.
    pub fn reply(self, host: &str) -> LocalReply {
        let realm = format!("Bearer realm=\"{}\"", sanitize_realm(host));
        let challenge = match self {
            Self::Missing => realm,
            Self::ClaimsUnmet => format!("{realm}, error=\"insufficient_scope\""),
            _ => format!("{realm}, error=\"invalid_token\""),
        };
        let message = match self {
            Self::Malformed(reason) => format!("The token is malformed: {reason}."),
            other => other.message().to_string(),
        };
        LocalReply::new(self.status(), self.code(), message)
            .with_header("www-authenticate", challenge)
    }
}

/// The realm is the request's host: keep only characters that cannot break the quoted string.
fn sanitize_realm(host: &str) -> String {
    host.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        let r = Failure::Missing.reply("api.example.com");
        assert_eq!(r.status, 401);
        assert_eq!(
            r.headers,
            vec![(
                "www-authenticate".to_string(),
                "Bearer realm=\"api.example.com\"".to_string()
            )]
        );
        let r = Failure::Expired.reply("h");
        assert_eq!(
            r.headers[0].1,
            "Bearer realm=\"h\", error=\"invalid_token\""
        );
        let r = Failure::ClaimsUnmet.reply("h");
        assert_eq!(r.status, 403);
        assert_eq!(
            r.headers[0].1,
            "Bearer realm=\"h\", error=\"insufficient_scope\""
        );
        assert_eq!(Failure::AudienceNotAllowed.status(), 403);
        for f in [
            Failure::Malformed("x"),
            Failure::TooLarge,
            Failure::UnsupportedAlg,
            Failure::UnknownIssuer,
            Failure::NotYetValid,
            Failure::UnknownKey,
            Failure::BadSignature,
            Failure::JwksUnavailable,
            Failure::SubjectNotAllowed,
            Failure::LifetimeTooLong,
            Failure::ExpirationRequired,
            Failure::TokenInactive,
            Failure::IntrospectionFailed,
        ] {
            assert_eq!(f.status(), 401, "{f:?}");
            assert!(Failure::ALL_CODES.contains(&f.code()));
        }
        assert_eq!(
            Failure::Missing.reply("a\"b").headers[0].1,
            "Bearer realm=\"ab\""
        );
    }
}
