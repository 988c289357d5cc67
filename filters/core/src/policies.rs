//! `Policies<P>`: a filter's top-level defaults plus its ordered `rules`, and the one selection
//! rule every filter follows.
//!
//! The override rule: the first rule whose `match` holds decides. A rule with `"enabled": false`
//! switches the filter off for the request; any other matching rule's policy is the defaults with
//! the fields the rule sets replaced (each filter merges them at configure time, so selection
//! costs nothing more per request). When no rule matches, the defaults apply.

use crate::host::HeaderNeeds;
use crate::path::{PathOptions, PathVerdict};
use crate::rules::Match;
use crate::RequestInfo;

/// One rule: its match and its merged policy, or `None` for `"enabled": false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule<P> {
    /// When the rule applies.
    pub matcher: Match,
    /// The defaults overridden by the rule's fields; `None`: the filter is off.
    pub policy: Option<P>,
}

/// What selection found for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Selected<'a, P> {
    /// A rule switched the filter off.
    Disabled,
    /// No rule matched: the defaults.
    Default(&'a P),
    /// Rule `index` matched.
    Rule {
        /// Position in `rules`.
        index: usize,
        /// Its merged policy.
        policy: &'a P,
    },
}

impl<'a, P> Selected<'a, P> {
    /// The policy to apply, `None` when disabled.
    pub fn policy(&self) -> Option<&'a P> {
        match self {
            Self::Disabled => None,
            Self::Default(policy) | Self::Rule { policy, .. } => Some(policy),
        }
    }

    /// The matched rule's index, `None` for the defaults or when disabled.
    pub fn rule_index(&self) -> Option<usize> {
        match self {
            Self::Rule { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// The defaults, the rules, and what selecting among them reads of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies<P> {
    default: P,
    paths: PathOptions,
    rules: Vec<PolicyRule<P>>,
    reads_route: bool,
    headers_read: Vec<String>,
}

impl<P> Policies<P> {
    /// Builds the set; what matching reads is computed here, once per configuration.
    pub fn new(default: P, rules: Vec<PolicyRule<P>>) -> Self {
        let reads_route = rules.iter().any(|r| r.matcher.uses_route());
        let mut headers_read: Vec<String> = Vec::new();
        for name in rules.iter().flat_map(|r| r.matcher.headers_read()) {
            if !headers_read.contains(&name) {
                headers_read.push(name);
            }
        }
        Self {
            default,
            paths: PathOptions::default(),
            rules,
            reads_route,
            headers_read,
        }
    }

    /// The same policies with the configuration's `paths` options.
    pub fn with_paths(mut self, paths: PathOptions) -> Self {
        self.paths = paths;
        self
    }

    /// What to do with the request's path before selecting (see [`crate::path`]).
    pub fn path_verdict(&self, req: &RequestInfo) -> PathVerdict {
        self.paths.verdict(req)
    }

    /// Selects the policy of a request (see the module documentation for the rule).
    pub fn select(&self, req: &RequestInfo) -> Selected<'_, P> {
        match self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matcher.matches(req))
        {
            None => Selected::Default(&self.default),
            Some((_, PolicyRule { policy: None, .. })) => Selected::Disabled,
            Some((
                index,
                PolicyRule {
                    policy: Some(policy),
                    ..
                },
            )) => Selected::Rule { index, policy },
        }
    }

    /// The policy a selection found, by rule index (`None`: the defaults); `None` when that
    /// rule disables the filter. Streams keep the index, not a borrow of the configuration.
    pub fn get(&self, rule: Option<usize>) -> Option<&P> {
        match rule {
            None => Some(&self.default),
            Some(index) => self.rules.get(index)?.policy.as_ref(),
        }
    }

    /// The defaults.
    pub fn default_policy(&self) -> &P {
        &self.default
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[PolicyRule<P>] {
        &self.rules
    }

    /// Every policy: the defaults first, then each enabled rule's.
    pub fn all(&self) -> impl Iterator<Item = &P> {
        std::iter::once(&self.default).chain(self.rules.iter().filter_map(|r| r.policy.as_ref()))
    }

    /// True when some rule matches on route names, so the route name must be read.
    pub fn reads_route(&self) -> bool {
        self.reads_route
    }

    /// The request headers matching reads, plus `extra` ones the filter reads itself.
    pub fn header_needs(&self, extra: impl IntoIterator<Item = String>) -> HeaderNeeds {
        HeaderNeeds::only(self.headers_read.iter().cloned().chain(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Match {
        serde_json::from_str(json).unwrap()
    }

    fn req(path: &str) -> RequestInfo {
        RequestInfo::new(Some("r".into()), "h", path, "GET", vec![])
    }

    fn policies() -> Policies<&'static str> {
        Policies::new(
            "defaults",
            vec![
                PolicyRule {
                    matcher: m(r#"{"path_prefix": "/health"}"#),
                    policy: None,
                },
                PolicyRule {
                    matcher: m(r#"{"path_prefix": "/v1/", "headers": {"x-a": "1"}}"#),
                    policy: Some("v1"),
                },
                PolicyRule {
                    matcher: m(r#"{"routes": ["r"]}"#),
                    policy: Some("route"),
                },
            ],
        )
    }

    #[test]
    fn first_matching_rule_then_defaults() {
        let p = policies();
        assert_eq!(p.select(&req("/health")), Selected::Disabled);
        assert_eq!(p.select(&req("/health")).policy(), None);
        let mut v1 = req("/v1/x");
        v1.headers.push(("x-a".into(), "1".into()));
        assert_eq!(
            p.select(&v1),
            Selected::Rule {
                index: 1,
                policy: &"v1"
            }
        );
        assert_eq!(p.select(&req("/v1/x")).rule_index(), Some(2));
        let mut other = req("/other");
        other.route = None;
        assert_eq!(p.select(&other), Selected::Default(&"defaults"));
        assert_eq!(
            p.all().copied().collect::<Vec<_>>(),
            ["defaults", "v1", "route"]
        );
    }

    #[test]
    fn what_matching_reads_is_known_up_front() {
        let p = policies();
        assert!(p.reads_route());
        assert_eq!(
            p.header_needs([":path".to_string()]),
            HeaderNeeds::Only(vec![":path".into(), "x-a".into()])
        );
        let none: Policies<()> = Policies::new((), vec![]);
        assert!(!none.reads_route());
        assert_eq!(none.header_needs([]), HeaderNeeds::Only(vec![]));
    }
}
