//! The decision for one request: find tokens, verify them per provider, evaluate the requirement
//! tree as Envoy's jwt_authn does, check `claims`, and list the header changes to make.

use crate::cache::TokenCache;
use crate::claims::{header_value, Claims};
use crate::config::{Config, KeySource, Location, Policy, Requirement};
use crate::extract::{self, Found};
use crate::failure::Failure;
use crate::introspect::Lookup;
use crate::jwks::Jwks;
use crate::jws::{self, SignatureVerifier};
use std::rc::Rc;

/// The keys of one provider as the worker currently knows them.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Usable keys; `generation` changes whenever the set changes.
    Ready {
        /// The key set.
        jwks: Rc<Jwks>,
        /// Version of the set (invalidates cached verdicts).
        generation: u64,
    },
    /// The first fetch of a remote JWKS has not completed yet.
    Pending,
    /// No keys: every fetch so far failed.
    Unavailable,
}

/// What the request looks like to the decision.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Request headers, lowercase names.
    pub headers: &'a [(String, String)],
    /// `:path` with its query.
    pub path: &'a str,
    /// Current time, seconds since the epoch.
    pub now: u64,
}

/// Header and path changes for an allowed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Headers to remove (token headers when not forwarded).
    pub remove_headers: Vec<String>,
    /// Headers to set (payload and claim headers).
    pub set_headers: Vec<(String, String)>,
    /// New `:path` when a query-parameter token was removed.
    pub path: Option<String>,
    /// New `cookie` header when a cookie token was removed (`Some(None)`: remove the header).
    pub cookie: Option<Option<String>>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request after applying the mutations.
    Allow(Mutations),
    /// Answer with the failure's local reply.
    Deny(Failure),
}

/// A decision plus what the glue needs to know to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The verdict.
    pub decision: Decision,
    /// Remote providers whose keys were pending while one of their tokens needed them.
    pub pending: Vec<usize>,
    /// Remote providers that had no key for a token's `kid` (rotation candidates).
    pub kid_miss: Vec<usize>,
    /// Tokens whose signature check was skipped thanks to the verified-token cache.
    pub cache_hits: u32,
    /// `(provider, token, pending)` an introspection endpoint must be asked about; `pending`
    /// is `Some(until_ms)` while another request asks about the same token.
    pub introspect: Vec<(usize, String, Option<u64>)>,
}

#[derive(Debug, Clone)]
struct Verified<'a> {
    location: &'a Location,
    /// The claims and the payload as sent, shared with the token cache (cloning it is free).
    token: crate::cache::Verified,
}

#[derive(Debug, Clone)]
enum ProviderResult<'a> {
    Missing,
    Ok(Vec<Verified<'a>>),
    Failed(Failure),
}

/// What the requirement tree needs of a provider's result (its tokens stay in `results`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Missing,
    Ok,
    Failed(Failure),
}

impl ProviderResult<'_> {
    fn status(&self) -> Status {
        match self {
            Self::Missing => Status::Missing,
            Self::Ok(_) => Status::Ok,
            Self::Failed(f) => Status::Failed(*f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok(Vec<usize>),
    Missing,
    Fail(Failure),
}

struct Ctx<'a> {
    config: &'a Config,
    request: RequestView<'a>,
    keys: &'a dyn Fn(usize) -> Keys,
    introspected: &'a dyn Fn(usize, &str) -> Lookup,
    cache: &'a mut TokenCache,
    verifier: &'a dyn SignatureVerifier,
    results: Vec<Option<ProviderResult<'a>>>,
    pending: Vec<usize>,
    kid_miss: Vec<usize>,
    cache_hits: u32,
    introspect: Vec<(usize, String, Option<u64>)>,
}

/// What a decision reads besides the request: each provider's keys, the introspection cache,
/// the verified-token cache and the signature verifier.
pub struct Sources<'a> {
    /// The keys of provider `i`.
    pub keys: &'a dyn Fn(usize) -> Keys,
    /// What is known about a token of introspection provider `i`.
    pub introspected: &'a dyn Fn(usize, &str) -> Lookup,
    /// The verified-token cache.
    pub cache: &'a mut TokenCache,
    /// The signature verifier.
    pub verifier: &'a dyn SignatureVerifier,
}

/// Decides one request under `policy`.
pub fn evaluate(
    config: &Config,
    policy: &Policy,
    request: RequestView<'_>,
    keys: &dyn Fn(usize) -> Keys,
    cache: &mut TokenCache,
    verifier: &dyn SignatureVerifier,
) -> Evaluation {
    evaluate_with(
        config,
        policy,
        request,
        Sources {
            keys,
            introspected: &|_, _| Lookup::Failed,
            cache,
            verifier,
        },
    )
}

/// [`evaluate`] with introspection.
pub fn evaluate_with(
    config: &Config,
    policy: &Policy,
    request: RequestView<'_>,
    sources: Sources<'_>,
) -> Evaluation {
    let Sources {
        keys,
        introspected,
        cache,
        verifier,
    } = sources;
    let mut ctx = Ctx {
        config,
        request,
        keys,
        introspected,
        cache,
        verifier,
        results: vec![None; config.providers.len()],
        pending: Vec::new(),
        kid_miss: Vec::new(),
        cache_hits: 0,
        introspect: Vec::new(),
    };
    let outcome = ctx.requirement(&policy.requires);
    let decision = match outcome {
        Outcome::Missing => Decision::Deny(Failure::Missing),
        Outcome::Fail(f) => Decision::Deny(f),
        Outcome::Ok(mut providers) => {
            providers.sort_unstable();
            providers.dedup();
            ctx.allow(policy, &providers)
        }
    };
    Evaluation {
        decision,
        pending: ctx.pending,
        kid_miss: ctx.kid_miss,
        cache_hits: ctx.cache_hits,
        introspect: ctx.introspect,
    }
}

impl<'a> Ctx<'a> {
    fn provider(&mut self, index: usize) -> Status {
        if let Some(Some(result)) = self.results.get(index) {
            return result.status();
        }
        let result = self.compute_provider(index);
        let status = result.status();
        if let Some(slot) = self.results.get_mut(index) {
            *slot = Some(result);
        }
        status
    }

    fn compute_provider(&mut self, index: usize) -> ProviderResult<'a> {
        let Some(provider) = self.config.providers.get(index) else {
            return ProviderResult::Missing;
        };
        let mut found = extract::find(&provider.locations, self.request.headers, self.request.path);
        if matches!(provider.keys, KeySource::Introspection(_)) {
            // JWTs (three dot-separated parts) are for the key-set providers: an introspection
            // provider neither sends them to its endpoint nor fails on them.
            found.retain(|f| f.token.bytes().filter(|b| *b == b'.').count() != 2);
        }
        if found.is_empty() {
            return ProviderResult::Missing;
        }
        let mut verified = Vec::with_capacity(found.len());
        for Found { location, token } in found {
            match self.verify_token(index, token) {
                Ok(token) => verified.push(Verified { location, token }),
                Err(failure) => return ProviderResult::Failed(failure),
            }
        }
        ProviderResult::Ok(verified)
    }

    /// jwt_authn's order: format, issuer, time, audience, then keys and signature.
    fn verify_token(
        &mut self,
        index: usize,
        token: &str,
    ) -> Result<crate::cache::Verified, Failure> {
        let provider = &self.config.providers[index];
        if token.len() > self.config.max_token_bytes {
            return Err(Failure::TooLarge);
        }
        if matches!(provider.keys, KeySource::Introspection(_)) {
            return match (self.introspected)(index, token) {
                Lookup::Active(verified) => {
                    self.check_claims(index, &verified.0)?;
                    Ok(verified)
                }
                Lookup::Inactive => Err(Failure::TokenInactive),
                Lookup::Miss => {
                    self.introspect.push((index, token.to_string(), None));
                    Err(Failure::IntrospectionFailed)
                }
                Lookup::Pending(until) => {
                    self.introspect
                        .push((index, token.to_string(), Some(until)));
                    Err(Failure::IntrospectionFailed)
                }
                Lookup::Failed => Err(Failure::IntrospectionFailed),
            };
        }
        let keys = (self.keys)(index);
        // A token that passed every check before: no parsing, no signature (see `cache`).
        if let Keys::Ready { generation, .. } = &keys {
            if let Some(hit) = self.cache.get(index, *generation, token, self.request.now) {
                self.cache_hits += 1;
                return Ok(hit);
            }
        }
        let jws = jws::parse(token)?;
        let claims = Claims::parse(&jws.payload)?;
        self.check_claims(index, &claims)?;
        let (jwks, generation) = match keys {
            Keys::Ready { jwks, generation } => (jwks, generation),
            Keys::Pending => {
                self.pending.push(index);
                return Err(Failure::JwksUnavailable);
            }
            Keys::Unavailable => return Err(Failure::JwksUnavailable),
        };
        match jws::verify_with(&jws, &jwks, self.verifier, provider.max_keys_tried) {
            Ok(()) => {}
            Err(Failure::UnknownKey) => {
                if matches!(provider.keys, KeySource::Remote(_))
                    && jws.kid.as_deref().is_some_and(|kid| !jwks.has_kid(kid))
                {
                    self.kid_miss.push(index);
                }
                return Err(Failure::UnknownKey);
            }
            Err(other) => return Err(other),
        }
        let until = claims
            .exp
            .map(|exp| exp.saturating_add(provider.clock_skew))
            .unwrap_or(self.request.now.saturating_add(TokenCache::NO_EXP_TTL));
        let verified = Rc::new((claims, jws.payload_b64.to_string()));
        self.cache.insert(
            (index, generation, token),
            until,
            self.request.now,
            Rc::clone(&verified),
        );
        Ok(verified)
    }

    /// jwt_authn's checks after the format, in its order: issuer, time, audience; then
    /// `subjects` and `max_lifetime`. All of them only get stricter as time passes or never
    /// change, so a cached pass stays valid.
    fn check_claims(&self, index: usize, claims: &Claims) -> Result<(), Failure> {
        let provider = &self.config.providers[index];
        if let Some(issuer) = &provider.issuer {
            if claims.iss.as_deref() != Some(issuer.as_str()) {
                return Err(Failure::UnknownIssuer);
            }
        }
        claims.check_time(self.request.now, provider.clock_skew)?;
        claims.check_audience(&provider.audiences)?;
        if let Some(subjects) = &provider.subjects {
            if !subjects.matches(claims.sub()) {
                return Err(Failure::SubjectNotAllowed);
            }
        }
        if let Some(max_lifetime) = provider.max_lifetime {
            match claims.exp {
                None => return Err(Failure::ExpirationRequired),
                // jwt_authn: the remaining lifetime must be below max_lifetime.
                Some(exp) if exp.saturating_sub(self.request.now) >= max_lifetime => {
                    return Err(Failure::LifetimeTooLong)
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn requirement(&mut self, requirement: &Requirement) -> Outcome {
        match requirement {
            Requirement::Provider(index) => match self.provider(*index) {
                Status::Missing => Outcome::Missing,
                Status::Ok => Outcome::Ok(vec![*index]),
                Status::Failed(f) => Outcome::Fail(f),
            },
            Requirement::Any(children) => {
                let outcomes: Vec<Outcome> = children.iter().map(|c| self.requirement(c)).collect();
                let oks: Vec<usize> = outcomes
                    .iter()
                    .filter_map(|o| match o {
                        Outcome::Ok(p) => Some(p.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if outcomes.iter().any(|o| matches!(o, Outcome::Ok(_))) {
                    return Outcome::Ok(oks);
                }
                // As jwt_authn: the last failure other than "missing" wins; an unknown issuer
                // (a token meant for another provider) only counts when nothing else failed.
                let mut result = Outcome::Missing;
                for outcome in &outcomes {
                    match outcome {
                        Outcome::Fail(Failure::UnknownIssuer) => {
                            if result == Outcome::Missing {
                                result = Outcome::Fail(Failure::UnknownIssuer);
                            }
                        }
                        Outcome::Fail(f) => result = Outcome::Fail(*f),
                        _ => {}
                    }
                }
                result
            }
            Requirement::All(children) => {
                let mut oks = Vec::new();
                for child in children {
                    match self.requirement(child) {
                        Outcome::Ok(p) => oks.extend(p),
                        other => return other,
                    }
                }
                Outcome::Ok(oks)
            }
            Requirement::AllowMissing | Requirement::AllowMissingOrFailed => {
                let results: Vec<(usize, Status)> = (0..self.config.providers.len())
                    .map(|i| (i, self.provider(i)))
                    .collect();
                let oks: Vec<usize> = results
                    .iter()
                    .filter(|(_, r)| *r == Status::Ok)
                    .map(|(i, _)| *i)
                    .collect();
                if !oks.is_empty() || *requirement == Requirement::AllowMissingOrFailed {
                    return Outcome::Ok(oks);
                }
                let failures: Vec<Failure> = results
                    .iter()
                    .filter_map(|(_, r)| match r {
                        Status::Failed(f) => Some(*f),
                        _ => None,
                    })
                    .collect();
                match failures
                    .iter()
                    .find(|f| **f != Failure::UnknownIssuer)
                    .or(failures.first())
                {
                    Some(f) => Outcome::Fail(*f),
                    None => Outcome::Ok(Vec::new()),
                }
            }
        }
    }

    fn allow(&self, policy: &Policy, providers: &[usize]) -> Decision {
        let verified: Vec<(usize, &Verified<'_>)> = providers
            .iter()
            .filter_map(|i| match self.results.get(*i) {
                Some(Some(ProviderResult::Ok(tokens))) => Some(tokens.iter().map(|t| (*i, t))),
                _ => None,
            })
            .flatten()
            .collect();
        // A provider's identity is its first token in location order (from_headers, then
        // from_params, then from_cookies), the token jwt_authn verifies last and whose claims
        // it adds last. Every token found had to verify, but only identities are checked for
        // `claims` and forwarded, so a second token can neither lend its claims nor its
        // headers to the first.
        let identities: Vec<usize> = providers
            .iter()
            .filter_map(|i| verified.iter().position(|(p, _)| p == i))
            .collect();
        if !policy.claims.is_empty() {
            if identities.is_empty() {
                return Decision::Deny(Failure::Missing);
            }
            let holds = identities.iter().any(|k| {
                let token = &verified[*k].1.token.0;
                policy.claims.iter().all(|rule| rule.holds(token))
            });
            if !holds {
                return Decision::Deny(Failure::ClaimsUnmet);
            }
        }
        let mut m = Mutations::default();
        // The path changes only when a query-parameter token is removed.
        let mut path: Option<String> = None;
        let mut cookie: Option<Option<String>> = None;
        for (k, (index, token)) in verified.iter().enumerate() {
            let provider = &self.config.providers[*index];
            let identity = identities.contains(&k);
            if !provider.forward {
                match &token.location {
                    Location::Header { name, .. } => {
                        if !m.remove_headers.contains(name) {
                            m.remove_headers.push(name.clone());
                        }
                    }
                    Location::Param(param) => {
                        let current = path.as_deref().unwrap_or(self.request.path);
                        path = Some(extract::remove_param(current, param));
                    }
                    Location::Cookie(name) => {
                        let current = match &cookie {
                            Some(c) => c.clone(),
                            None => self
                                .request
                                .headers
                                .iter()
                                .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
                                .map(|(_, v)| v.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                                .into(),
                        };
                        cookie = Some(current.and_then(|c| extract::remove_cookie(&c, name)));
                    }
                }
            }
            if !identity {
                continue;
            }
            let mut set = |name: &String, value: String| {
                // One value per header: the first identity (providers in name order) wins.
                if !m.set_headers.iter().any(|(n, _)| n == name) {
                    m.set_headers.push((name.clone(), value));
                }
            };
            if let Some(header) = &provider.forward_payload_header {
                set(header, token.token.1.clone());
            }
            for (header, claim, format) in &provider.claim_to_headers {
                if let Some(text) = token
                    .token
                    .0
                    .get(claim)
                    .and_then(|v| header_value(v, *format))
                {
                    if text
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
                    {
                        set(header, text);
                    }
                }
            }
        }
        m.path = path.filter(|p| p != self.request.path);
        m.cookie = cookie;
        Decision::Allow(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MAX_KEYS_TRIED;
    use crate::crypto::sign::sign;
    use crate::jws::PureRust;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const K1: &str =
        r#"{"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#;
    const K2: &str =
        r#"{"kty":"oct","kid":"k2","k":"b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI"}"#;
    const NOW: u64 = 1_700_000_000;

    fn config(extra: &str) -> Config {
        let jwks = format!("{{\"keys\":[{K1}]}}");
        let jwks2 = format!("{{\"keys\":[{K2}]}}");
        let json = format!(
            r#"{{
              "providers": {{
                "example": {{
                  "issuer": "https://issuer.example.com",
                  "audiences": ["api.example.com"],
                  "local_jwks": {{"inline_string": {jwks}}},
                  "from_headers": [{{"name": "authorization", "value_prefix": "Bearer "}}],
                  "from_params": ["access_token"],
                  "from_cookies": ["session"],
                  "forward_payload_header": "x-jwt-payload",
                  "claim_to_headers": [{{"header_name": "x-jwt-sub", "claim_name": "sub"}},
                                       {{"header_name": "x-jwt-n", "claim_name": "n"}}]
                }},
                "other": {{
                  "issuer": "https://other.example.com",
                  "local_jwks": {{"inline_string": {jwks2}}},
                  "from_headers": [{{"name": "x-other-token"}}],
                  "forward": true
                }}
              }}
              {extra}
            }}"#,
            jwks = serde_json::to_string(&jwks).unwrap(),
            jwks2 = serde_json::to_string(&jwks2).unwrap(),
        );
        Config::from_json(json.as_bytes()).unwrap()
    }

    fn token(key: &str, claims: &str) -> String {
        sign(key, r#"{"alg":"HS256","typ":"JWT"}"#, claims).unwrap()
    }

    fn good() -> String {
        token(
            K1,
            r#"{"iss":"https://issuer.example.com","aud":"api.example.com","sub":"alice","n":7,"scope":"read admin","exp":1700003600}"#,
        )
    }

    fn run(config: &Config, policy: &Policy, headers: &[(&str, &str)], path: &str) -> Evaluation {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let keys = |i: usize| match &config.providers[i].keys {
            KeySource::Local(jwks) => Keys::Ready {
                jwks: jwks.clone(),
                generation: 0,
            },
            _ => Keys::Pending,
        };
        let mut cache = TokenCache::new(16);
        evaluate(
            config,
            policy,
            RequestView {
                headers: &headers,
                path,
                now: NOW,
            },
            &keys,
            &mut cache,
            &PureRust,
        )
    }

    fn deny(e: &Evaluation) -> Option<Failure> {
        match e.decision {
            Decision::Deny(f) => Some(f),
            Decision::Allow(_) => None,
        }
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn default_policy_requires_one_of_the_providers() {
        let c = config("");
        let p = c.policies.default_policy().clone();
        assert!(matches!(p.requires, Requirement::Any(_)));
        assert_eq!(deny(&run(&c, &p, &[], "/")), Some(Failure::Missing));
        let e = run(&c, &p, &[("authorization", &bearer(&good()))], "/");
        let Decision::Allow(m) = e.decision else {
            panic!("{e:?}")
        };
        assert_eq!(m.remove_headers, vec!["authorization"]);
        assert!(m
            .set_headers
            .contains(&("x-jwt-sub".into(), "alice".into())));
        assert!(m.set_headers.contains(&("x-jwt-n".into(), "7".into())));
        let payload = good().split('.').nth(1).unwrap().to_string();
        assert!(m.set_headers.contains(&("x-jwt-payload".into(), payload)));
    }

    #[test]
    fn failures_map_to_jwt_authn_statuses() {
        let c = config(r#", "requires": {"provider_name": "example"}"#);
        let p = c.policies.default_policy().clone();
        let claims = |extra: &str| {
            token(
                K1,
                &format!(
                    r#"{{"iss":"https://issuer.example.com","aud":"api.example.com"{extra}}}"#
                ),
            )
        };
        let cases = [
            (claims(r#","exp":1699999000"#), Failure::Expired),
            (claims(r#","nbf":1700001000"#), Failure::NotYetValid),
            (
                claims(r#","exp":"soon""#),
                Failure::Malformed("exp and nbf must be numbers"),
            ),
            (
                token(
                    K1,
                    r#"{"iss":"https://evil.example.com","aud":"api.example.com"}"#,
                ),
                Failure::UnknownIssuer,
            ),
            (
                token(K1, r#"{"iss":"https://issuer.example.com","aud":"other"}"#),
                Failure::AudienceNotAllowed,
            ),
            (
                sign(
                    K2,
                    r#"{"alg":"HS256","kid":"k2"}"#,
                    r#"{"iss":"https://issuer.example.com","aud":"api.example.com"}"#,
                )
                .unwrap(),
                Failure::UnknownKey,
            ),
            (
                token(
                    K2,
                    r#"{"iss":"https://issuer.example.com","aud":"api.example.com"}"#,
                ),
                Failure::BadSignature,
            ),
            (
                sign(
                    &K2.replace("k2", "k1"),
                    r#"{"alg":"HS256"}"#,
                    r#"{"iss":"https://issuer.example.com","aud":"api.example.com"}"#,
                )
                .unwrap(),
                Failure::BadSignature,
            ),
            ("x".repeat(64 * 1024 + 1), Failure::TooLarge),
            (
                "abc".to_string(),
                Failure::Malformed("the token is not three dot-separated parts"),
            ),
        ];
        for (t, expected) in cases {
            let e = run(&c, &p, &[("authorization", &bearer(&t))], "/");
            assert_eq!(deny(&e), Some(expected));
            assert_eq!(
                expected.status(),
                if expected == Failure::AudienceNotAllowed {
                    403
                } else {
                    401
                }
            );
        }
        // Within the 60 s default skew: still fine.
        let e = run(
            &c,
            &p,
            &[("authorization", &bearer(&claims(r#","exp":1699999950"#)))],
            "/",
        );
        assert_eq!(deny(&e), None);
    }

    #[test]
    fn query_and_cookie_tokens_are_stripped() {
        let c = config("");
        let p = c.policies.default_policy().clone();
        let path = format!("/x?a=1&access_token={}", good());
        let Decision::Allow(m) = run(&c, &p, &[], &path).decision else {
            panic!()
        };
        assert_eq!(m.path.as_deref(), Some("/x?a=1"));
        let cookie = format!("theme=dark; session={}", good());
        let Decision::Allow(m) = run(&c, &p, &[("cookie", &cookie)], "/").decision else {
            panic!()
        };
        assert_eq!(m.cookie, Some(Some("theme=dark".into())));
    }

    #[test]
    fn forward_keeps_the_token() {
        let c = config(r#", "requires": {"provider_name": "other"}"#);
        let p = c.policies.default_policy().clone();
        let t = token(K2, r#"{"iss":"https://other.example.com"}"#);
        let Decision::Allow(m) = run(&c, &p, &[("x-other-token", &t)], "/").decision else {
            panic!()
        };
        assert!(m.remove_headers.is_empty());
    }

    #[test]
    fn requirement_shapes() {
        let c = config(
            r#", "rules": [
              {"match": {"path_prefix": "/maybe"},
               "requires": {"requires_any": {"requirements": [{"provider_name": "example"}, {"allow_missing": {}}]}}},
              {"match": {"path_prefix": "/both"},
               "requires": {"requires_all": {"requirements": [{"provider_name": "example"}, {"provider_name": "other"}]}}},
              {"match": {"path_prefix": "/lenient"}, "requires": {"allow_missing_or_failed": {}}},
              {"match": {"path_prefix": "/admin"}, "requires": {"provider_name": "example"}, "claims": {"scope": "admin", "sub": ["bob", "alice"]}},
              {"match": {"path_prefix": "/root"}, "requires": {"provider_name": "example"}, "claims": {"scope": "root"}},
              {"match": {"path_prefix": "/public"}, "enabled": false}
            ]"#,
        );
        let policy = |i: usize| c.policies.rules()[i].policy.clone().unwrap();
        let expired = token(
            K1,
            r#"{"iss":"https://issuer.example.com","aud":"api.example.com","exp":1}"#,
        );
        let other = token(K2, r#"{"iss":"https://other.example.com"}"#);
        // allow_missing: absent is fine, present must be valid.
        assert_eq!(deny(&run(&c, &policy(0), &[], "/maybe")), None);
        assert_eq!(
            deny(&run(
                &c,
                &policy(0),
                &[("authorization", &bearer(&good()))],
                "/maybe"
            )),
            None
        );
        assert_eq!(
            deny(&run(
                &c,
                &policy(0),
                &[("authorization", &bearer(&expired))],
                "/maybe"
            )),
            Some(Failure::Expired)
        );
        // requires_all: both tokens.
        assert_eq!(
            deny(&run(
                &c,
                &policy(1),
                &[("authorization", &bearer(&good()))],
                "/both"
            )),
            Some(Failure::Missing)
        );
        assert_eq!(
            deny(&run(
                &c,
                &policy(1),
                &[
                    ("authorization", &bearer(&good())),
                    ("x-other-token", &other)
                ],
                "/both"
            )),
            None
        );
        // allow_missing_or_failed: always through, headers only from valid tokens.
        let e = run(
            &c,
            &policy(2),
            &[("authorization", &bearer(&expired))],
            "/lenient",
        );
        assert_eq!(e.decision, Decision::Allow(Mutations::default()));
        // claims: 403 insufficient_scope when unmet.
        let admin = run(
            &c,
            &policy(3),
            &[("authorization", &bearer(&good()))],
            "/admin",
        );
        assert_eq!(deny(&admin), None);
        let root = run(
            &c,
            &policy(4),
            &[("authorization", &bearer(&good()))],
            "/root",
        );
        assert_eq!(deny(&root), Some(Failure::ClaimsUnmet));
        assert_eq!(
            deny(&run(&c, &policy(4), &[], "/root")),
            Some(Failure::Missing)
        );
        assert!(c.policies.rules()[5].policy.is_none());
    }

    #[test]
    fn any_reports_the_real_failure_not_the_other_issuer() {
        let c = config("");
        let p = c.policies.default_policy().clone();
        // Read from the same header by "example" only; "other" reports missing.
        let bad = sign(
            K2,
            r#"{"alg":"HS256","kid":"k2"}"#,
            r#"{"iss":"https://issuer.example.com","aud":"api.example.com"}"#,
        )
        .unwrap();
        assert_eq!(
            deny(&run(&c, &p, &[("authorization", &bearer(&bad))], "/")),
            Some(Failure::UnknownKey)
        );
    }

    #[test]
    fn cache_hits_give_the_same_verdict() {
        let c = config(r#", "requires": {"provider_name": "example"}"#);
        let p = c.policies.default_policy().clone();
        let headers = vec![("authorization".to_string(), bearer(&good()))];
        let keys = |i: usize| match &c.providers[i].keys {
            KeySource::Local(jwks) => Keys::Ready {
                jwks: jwks.clone(),
                generation: 0,
            },
            _ => Keys::Pending,
        };
        let mut cache = TokenCache::new(16);
        let mut at = |now: u64| {
            evaluate(
                &c,
                &p,
                RequestView {
                    headers: &headers,
                    path: "/",
                    now,
                },
                &keys,
                &mut cache,
                &PureRust,
            )
        };
        let first = at(NOW);
        assert_eq!(first.cache_hits, 0);
        let second = at(NOW);
        assert_eq!(second.cache_hits, 1);
        assert_eq!(first.decision, second.decision);
        // Expired later: the cache never makes an expired token valid.
        assert_eq!(deny(&at(1_700_003_600 + 61)), Some(Failure::Expired));
    }

    #[test]
    fn pending_keys_are_reported() {
        let json = r#"{"providers": {"r": {"remote_jwks": {"http_uri":
            {"uri": "http://jwks.local/keys", "cluster": "jwks", "timeout": "1s"}}}}}"#;
        let c = Config::from_json(json.as_bytes()).unwrap();
        let p = c.policies.default_policy().clone();
        let e = run(&c, &p, &[("authorization", &bearer(&good()))], "/");
        assert_eq!(deny(&e), Some(Failure::JwksUnavailable));
        assert_eq!(e.pending, vec![0]);
        assert_eq!(deny(&run(&c, &p, &[], "/")), Some(Failure::Missing));
    }

    fn allowed(e: &Evaluation) -> Mutations {
        match &e.decision {
            Decision::Allow(m) => m.clone(),
            Decision::Deny(f) => panic!("denied: {f:?}"),
        }
    }

    fn header<'a>(m: &'a Mutations, name: &str) -> Option<&'a str> {
        let values: Vec<&str> = m
            .set_headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(values.len() <= 1, "{name} set twice: {values:?}");
        values.first().copied()
    }

    #[test]
    fn an_entra_sized_token_passes_and_max_token_bytes_bounds_it() {
        let groups: Vec<String> = (0..230)
            .map(|i| format!("{i:08x}-0000-4000-8000-00000000{i:04x}"))
            .collect();
        let claims = serde_json::json!({
            "iss": "https://issuer.example.com", "aud": "api.example.com", "sub": "alice",
            "exp": 1_700_003_600u64, "groups": groups,
        });
        let big = token(K1, &claims.to_string());
        assert!(big.len() > 11_000 && big.len() < 16_384, "{}", big.len());
        let c = config("");
        let p = c.policies.default_policy().clone();
        allowed(&run(&c, &p, &[("authorization", &bearer(&big))], "/"));
        // A smaller cap: refused before any parsing, exactly above the cap.
        let c = config(&format!(r#", "max_token_bytes": {}"#, big.len() - 1));
        let e = run(&c, &p, &[("authorization", &bearer(&big))], "/");
        assert_eq!(deny(&e), Some(Failure::TooLarge));
        let c = config(&format!(r#", "max_token_bytes": {}"#, big.len()));
        allowed(&run(&c, &p, &[("authorization", &bearer(&big))], "/"));
    }

    fn claims_config(claim_to_headers: &str, extra: &str) -> Config {
        let jwks = serde_json::to_string(&format!("{{\"keys\":[{K1}]}}")).unwrap();
        let json = format!(
            r#"{{"providers": {{"p": {{"issuer": "https://issuer.example.com",
                 "local_jwks": {{"inline_string": {jwks}}},
                 "forward_payload_header": "x-payload",
                 "claim_to_headers": {claim_to_headers} {extra}}}}}}}"#
        );
        Config::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn array_and_object_claims_are_forwarded_like_jwt_authn() {
        let c = claims_config(
            r#"[{"header_name": "x-groups", "claim_name": "groups"},
                {"header_name": "x-groups-csv", "claim_name": "groups", "array_format": "comma_separated"},
                {"header_name": "x-realm", "claim_name": "realm"},
                {"header_name": "x-realm-roles", "claim_name": "realm.roles", "array_format": "comma_separated"},
                {"header_name": "x-tenant", "claim_name": "https://example.com/tenant"},
                {"header_name": "x-app-roles", "claim_name": "https://example.com/app.roles", "array_format": "comma_separated"},
                {"header_name": "x-commas", "claim_name": "commas", "array_format": "comma_separated"},
                {"header_name": "x-null", "claim_name": "nothing"}]"#,
            "",
        );
        let p = c.policies.default_policy().clone();
        let t = token(
            K1,
            r#"{"iss":"https://issuer.example.com","groups":["g1","g2"],"realm":{"roles":["r1","r2"]},
                "https://example.com/tenant":"acme","https://example.com/app":{"roles":["a1"]},
                "commas":["a,b","c"],"nothing":null}"#,
        );
        let m = allowed(&run(&c, &p, &[("authorization", &bearer(&t))], "/"));
        assert_eq!(header(&m, "x-groups"), Some("WyJnMSIsImcyIl0="));
        assert_eq!(header(&m, "x-groups-csv"), Some("g1,g2"));
        assert_eq!(header(&m, "x-realm"), Some("eyJyb2xlcyI6WyJyMSIsInIyIl19"));
        assert_eq!(header(&m, "x-realm-roles"), Some("r1,r2"));
        assert_eq!(header(&m, "x-tenant"), Some("acme"));
        assert_eq!(header(&m, "x-app-roles"), Some("a1"));
        assert_eq!(header(&m, "x-commas"), None, "ambiguous items: no header");
        assert_eq!(header(&m, "x-null"), None);
    }

    #[test]
    fn two_tokens_forward_the_first_location_and_both_must_verify() {
        let c = claims_config(
            r#"[{"header_name": "x-sub", "claim_name": "sub"}]"#,
            r#", "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                 "from_params": ["access_token"]"#,
        );
        let p = c.policies.default_policy().clone();
        let alice = token(K1, r#"{"iss":"https://issuer.example.com","sub":"alice"}"#);
        let bob = token(
            K1,
            r#"{"iss":"https://issuer.example.com","sub":"bob","scope":"admin"}"#,
        );
        let path = format!("/x?access_token={bob}");
        let m = allowed(&run(&c, &p, &[("authorization", &bearer(&alice))], &path));
        assert_eq!(header(&m, "x-sub"), Some("alice"));
        let alice_payload = alice.split('.').nth(1).unwrap();
        assert_eq!(header(&m, "x-payload"), Some(alice_payload));
        // Both are removed (neither reaches the upstream).
        assert_eq!(m.remove_headers, vec!["authorization"]);
        assert_eq!(m.path.as_deref(), Some("/x"));
        // The second token cannot lend its claims to the first identity.
        let c2 = Config::from_json(
            format!(
                r#"{{"providers": {{"p": {{"issuer": "https://issuer.example.com",
                    "local_jwks": {{"inline_string": {}}}}}}},
                    "claims": {{"scope": "admin"}}}}"#,
                serde_json::to_string(&format!("{{\"keys\":[{K1}]}}")).unwrap()
            )
            .as_bytes(),
        )
        .unwrap();
        let p2 = c2.policies.default_policy().clone();
        let e = run(&c2, &p2, &[("authorization", &bearer(&alice))], &path);
        assert_eq!(deny(&e), Some(Failure::ClaimsUnmet));
        // An invalid second token fails the request (jwt_authn: all tokens must be valid).
        let forged = token(K2, r#"{"iss":"https://issuer.example.com","sub":"bob"}"#);
        let e = run(
            &c,
            &p,
            &[("authorization", &bearer(&alice))],
            &format!("/x?access_token={forged}"),
        );
        assert_eq!(deny(&e), Some(Failure::BadSignature));
        // Two authorization lines: the first one is the identity.
        let m = allowed(&run(
            &c,
            &p,
            &[
                ("authorization", &bearer(&alice)),
                ("authorization", &bearer(&bob)),
            ],
            "/",
        ));
        assert_eq!(header(&m, "x-sub"), Some("alice"));
    }

    #[test]
    fn subjects_lifetime_and_expiration() {
        let c = claims_config(
            "[]",
            r#", "subjects": {"prefix": "spiffe://example.org/"}, "max_lifetime": "1h""#,
        );
        let p = c.policies.default_policy().clone();
        let t = |claims: &str| {
            token(
                K1,
                &format!(r#"{{"iss":"https://issuer.example.com"{claims}}}"#),
            )
        };
        let check =
            |claims: &str| deny(&run(&c, &p, &[("authorization", &bearer(&t(claims)))], "/"));
        assert_eq!(
            check(r#","sub":"spiffe://example.org/web","exp":1700003599"#),
            None
        );
        // jwt_authn's rule: the remaining lifetime must be below max_lifetime.
        assert_eq!(
            check(r#","sub":"spiffe://example.org/web","exp":1700003600"#),
            Some(Failure::LifetimeTooLong)
        );
        assert_eq!(
            check(r#","sub":"spiffe://example.org/web""#),
            Some(Failure::ExpirationRequired)
        );
        assert_eq!(
            check(r#","sub":"spiffe://example.org.evil/web","exp":1700000100"#),
            Some(Failure::SubjectNotAllowed)
        );
        assert_eq!(
            check(r#","sub":5,"exp":1700000100"#),
            Some(Failure::SubjectNotAllowed)
        );
        assert_eq!(
            check(r#","exp":1700000100"#),
            Some(Failure::SubjectNotAllowed)
        );
        // require_expiration alone: any exp, but one.
        let c = claims_config("[]", r#", "require_expiration": true"#);
        let p = c.policies.default_policy().clone();
        let e = run(
            &c,
            &p,
            &[("authorization", &bearer(&t(r#","exp":9999999999"#)))],
            "/",
        );
        assert_eq!(deny(&e), None);
        let e = run(&c, &p, &[("authorization", &bearer(&t("")))], "/");
        assert_eq!(deny(&e), Some(Failure::ExpirationRequired));
    }

    #[test]
    fn richer_claims_rules_through_the_config() {
        let jwks = serde_json::to_string(&format!("{{\"keys\":[{K1}]}}")).unwrap();
        let json = format!(
            r#"{{"providers": {{"p": {{"local_jwks": {{"inline_string": {jwks}}}}}}},
                "claims": {{"scope": {{"all_of": ["read", "write"]}},
                            "roles": {{"all_of": [{{"prefix": "tenant:"}}, {{"not": "suspended"}}]}}}}}}"#
        );
        let c = Config::from_json(json.as_bytes()).unwrap();
        let p = c.policies.default_policy().clone();
        let check = |claims: &str| {
            deny(&run(
                &c,
                &p,
                &[("authorization", &bearer(&token(K1, claims)))],
                "/",
            ))
        };
        assert_eq!(
            check(r#"{"scope":"read write","roles":["tenant:a"]}"#),
            None
        );
        assert_eq!(
            check(r#"{"scope":"read","roles":["tenant:a"]}"#),
            Some(Failure::ClaimsUnmet)
        );
        assert_eq!(
            check(r#"{"scope":"read write","roles":["tenant:a","suspended"]}"#),
            Some(Failure::ClaimsUnmet)
        );
        assert_eq!(
            check(r#"{"scope":"read write","roles":"tenant:a suspended"}"#),
            Some(Failure::ClaimsUnmet)
        );
        assert_eq!(
            check(r#"{"scope":"read write","roles":{"tenant:a":true}}"#),
            Some(Failure::ClaimsUnmet)
        );
        assert_eq!(
            check(r#"{"scope":"read write"}"#),
            Some(Failure::ClaimsUnmet)
        );
    }

    /// Counts signature checks and never verifies: the forged token's worst case.
    struct Counting(std::cell::Cell<usize>);

    impl SignatureVerifier for Counting {
        fn verify(&self, _: jws::Alg, _: &crate::jwks::Jwk, _: &[u8], _: &[u8]) -> bool {
            self.0.set(self.0.get() + 1);
            false
        }
    }

    #[test]
    fn a_forged_token_without_kid_costs_at_most_max_keys_tried_checks() {
        // The worst key set the default limits admit: 64 RSA-4096 keys, e = 65537, no kid.
        let n = URL_SAFE_NO_PAD.encode([0xC5u8; 512]);
        let keys: Vec<String> = (0..64)
            .map(|_| format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#))
            .collect();
        let jwks = serde_json::to_string(&format!(r#"{{"keys":[{}]}}"#, keys.join(","))).unwrap();
        for (extra, expected) in [
            ("", DEFAULT_MAX_KEYS_TRIED),
            (r#", "max_keys_tried": 2"#, 2),
        ] {
            let json = format!(
                r#"{{"providers": {{"p": {{"local_jwks": {{"inline_string": {jwks}}} {extra}}}}}}}"#
            );
            let c = Config::from_json(json.as_bytes()).unwrap();
            let p = c.policies.default_policy().clone();
            let forged = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#),
                URL_SAFE_NO_PAD.encode([1u8; 512])
            );
            let headers = vec![("authorization".to_string(), bearer(&forged))];
            let KeySource::Local(set) = &c.providers[0].keys else {
                panic!()
            };
            let keys = |_: usize| Keys::Ready {
                jwks: set.clone(),
                generation: 0,
            };
            let counting = Counting(std::cell::Cell::new(0));
            let mut cache = TokenCache::new(16);
            let e = evaluate(
                &c,
                &p,
                RequestView {
                    headers: &headers,
                    path: "/",
                    now: NOW,
                },
                &keys,
                &mut cache,
                &counting,
            );
            assert_eq!(deny(&e), Some(Failure::BadSignature));
            assert_eq!(counting.0.get(), expected);
        }
        // One key more than the default max_keys: the configuration is refused.
        let keys: Vec<String> = (0..65)
            .map(|_| format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#))
            .collect();
        let jwks = serde_json::to_string(&format!(r#"{{"keys":[{}]}}"#, keys.join(","))).unwrap();
        let json =
            format!(r#"{{"providers": {{"p": {{"local_jwks": {{"inline_string": {jwks}}}}}}}}}"#);
        let e = Config::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(e.path, "providers.p.local_jwks");
        assert!(e.reason.contains("max_keys"), "{e}");
    }
}
