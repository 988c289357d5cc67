//! The decision for one request: find tokens, verify them per provider, evaluate the requirement
//! tree as Envoy's jwt_authn does, check `claims`, and list the header changes to make.

use crate::cache::TokenCache;
use crate::claims::{scalar_text, Claims};
use crate::config::{Config, KeySource, Location, Policy, Requirement};
use crate::extract::{self, Found};
use crate::failure::Failure;
use crate::jwks::Jwks;
use crate::jws::{self, SignatureVerifier, MAX_TOKEN_BYTES};
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
}

#[derive(Debug, Clone)]
struct Verified {
    location: Location,
    /// The claims and the payload as sent, shared with the token cache (cloning it is free).
    token: crate::cache::Verified,
}

#[derive(Debug, Clone)]
enum ProviderResult {
    Missing,
    Ok(Vec<Verified>),
    Failed(Failure),
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
    cache: &'a mut TokenCache,
    verifier: &'a dyn SignatureVerifier,
    results: Vec<Option<ProviderResult>>,
    pending: Vec<usize>,
    kid_miss: Vec<usize>,
    cache_hits: u32,
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
    let mut ctx = Ctx {
        config,
        request,
        keys,
        cache,
        verifier,
        results: vec![None; config.providers.len()],
        pending: Vec::new(),
        kid_miss: Vec::new(),
        cache_hits: 0,
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
    }
}

impl Ctx<'_> {
    fn provider(&mut self, index: usize) -> ProviderResult {
        if let Some(Some(result)) = self.results.get(index) {
            return result.clone();
        }
        let result = self.compute_provider(index);
        if let Some(slot) = self.results.get_mut(index) {
            *slot = Some(result.clone());
        }
        result
    }

    fn compute_provider(&mut self, index: usize) -> ProviderResult {
        let Some(provider) = self.config.providers.get(index) else {
            return ProviderResult::Missing;
        };
        let found = extract::find(&provider.locations, self.request.headers, self.request.path);
        if found.is_empty() {
            return ProviderResult::Missing;
        }
        let mut verified = Vec::with_capacity(found.len());
        for Found { location, token } in found {
            match self.verify_token(index, &token) {
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
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::TooLarge);
        }
        let keys = (self.keys)(index);
        // A token that passed every check before: no parsing, no signature (see `cache`).
        let cache_key = match &keys {
            Keys::Ready { generation, .. } => Some(TokenCache::key(index, *generation, token)),
            _ => None,
        };
        if let Some(hit) = cache_key.and_then(|k| self.cache.get(&k, self.request.now)) {
            self.cache_hits += 1;
            return Ok(hit);
        }
        let jws = jws::parse(token)?;
        let claims = Claims::parse(&jws.payload)?;
        if let Some(issuer) = &provider.issuer {
            if claims.iss.as_deref() != Some(issuer.as_str()) {
                return Err(Failure::UnknownIssuer);
            }
        }
        claims.check_time(self.request.now, provider.clock_skew)?;
        claims.check_audience(&provider.audiences)?;
        let (jwks, generation) = match keys {
            Keys::Ready { jwks, generation } => (jwks, generation),
            Keys::Pending => {
                self.pending.push(index);
                return Err(Failure::JwksUnavailable);
            }
            Keys::Unavailable => return Err(Failure::JwksUnavailable),
        };
        match jws::verify_with(&jws, &jwks, self.verifier) {
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
        let cache_key = TokenCache::key(index, generation, token);
        self.cache
            .insert(cache_key, until, self.request.now, Rc::clone(&verified));
        Ok(verified)
    }

    fn requirement(&mut self, requirement: &Requirement) -> Outcome {
        match requirement {
            Requirement::Provider(index) => match self.provider(*index) {
                ProviderResult::Missing => Outcome::Missing,
                ProviderResult::Ok(_) => Outcome::Ok(vec![*index]),
                ProviderResult::Failed(f) => Outcome::Fail(f),
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
                let results: Vec<(usize, ProviderResult)> = (0..self.config.providers.len())
                    .map(|i| (i, self.provider(i)))
                    .collect();
                let oks: Vec<usize> = results
                    .iter()
                    .filter(|(_, r)| matches!(r, ProviderResult::Ok(_)))
                    .map(|(i, _)| *i)
                    .collect();
                if !oks.is_empty() || *requirement == Requirement::AllowMissingOrFailed {
                    return Outcome::Ok(oks);
                }
                let failures: Vec<Failure> = results
                    .iter()
                    .filter_map(|(_, r)| match r {
                        ProviderResult::Failed(f) => Some(*f),
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

    fn allow(&mut self, policy: &Policy, providers: &[usize]) -> Decision {
        let verified: Vec<(usize, Verified)> = providers
            .iter()
            .filter_map(|i| match self.results.get(*i) {
                Some(Some(ProviderResult::Ok(tokens))) => {
                    Some(tokens.iter().map(|t| (*i, t.clone())).collect::<Vec<_>>())
                }
                _ => None,
            })
            .flatten()
            .collect();
        if !policy.claims.is_empty() {
            if verified.is_empty() {
                return Decision::Deny(Failure::Missing);
            }
            let holds = verified
                .iter()
                .any(|(_, t)| policy.claims.iter().all(|rule| rule.holds(&t.token.0)));
            if !holds {
                return Decision::Deny(Failure::ClaimsUnmet);
            }
        }
        let mut m = Mutations::default();
        let mut path = self.request.path.to_string();
        let mut cookie: Option<Option<String>> = None;
        for (index, token) in &verified {
            let provider = &self.config.providers[*index];
            if !provider.forward {
                match &token.location {
                    Location::Header { name, .. } => {
                        if !m.remove_headers.contains(name) {
                            m.remove_headers.push(name.clone());
                        }
                    }
                    Location::Param(param) => path = extract::remove_param(&path, param),
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
            if let Some(header) = &provider.forward_payload_header {
                m.set_headers.push((header.clone(), token.token.1.clone()));
            }
            for (header, claim) in &provider.claim_to_headers {
                if let Some(text) = token.token.0.get(claim).and_then(scalar_text) {
                    if text
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
                    {
                        m.set_headers.push((header.clone(), text));
                    }
                }
            }
        }
        if path != self.request.path {
            m.path = Some(path);
        }
        m.cookie = cookie;
        Decision::Allow(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sign::sign;
    use crate::jws::PureRust;

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
            KeySource::Remote(_) => Keys::Pending,
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
            ("x".repeat(9000), Failure::TooLarge),
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
            KeySource::Remote(_) => Keys::Pending,
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
}
