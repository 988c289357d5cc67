//! Response headers: draft `RateLimit-Policy`/`RateLimit`, Envoy's `x-ratelimit-*`, `Retry-After`.

use crate::algorithm::{ceil_seconds, Limit, Report, NANOS_PER_SECOND};
use crate::config::ResponseHeaders;

/// The rate-limit headers for one response, per the rule's `response_headers` mode.
pub fn rate_limit_headers(
    mode: ResponseHeaders,
    limits: &[Limit],
    reports: &[Report],
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if matches!(mode, ResponseHeaders::Draft | ResponseHeaders::Both) {
        headers.push(("ratelimit-policy".into(), policy(limits)));
        headers.push(("ratelimit".into(), remaining(limits, reports)));
    }
    if matches!(mode, ResponseHeaders::XRatelimit | ResponseHeaders::Both) {
        headers.extend(x_ratelimit(limits, reports));
    }
    headers
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after(retry_after_ns: u64) -> String {
    ceil_seconds(retry_after_ns).max(1).to_string()
}

/// The window in whole seconds, when it is one (the draft's `w` has no sub-second form).
fn window_seconds(limit: &Limit) -> Option<u64> {
    let seconds = limit.window_ns / NANOS_PER_SECOND;
    (seconds * NANOS_PER_SECOND == limit.window_ns).then_some(seconds)
}

/// `"per_second";q=10;w=1, "hourly";q=1000;w=3600`
fn policy(limits: &[Limit]) -> String {
    limits
        .iter()
        .map(|limit| {
            let mut item = format!("\"{}\";q={}", limit.name, limit.requests);
            if let Some(w) = window_seconds(limit) {
                item.push_str(&format!(";w={w}"));
            }
            item
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"per_second";r=3;t=1, "hourly";r=997;t=3541`
fn remaining(limits: &[Limit], reports: &[Report]) -> String {
    limits
        .iter()
        .zip(reports)
        .map(|(limit, report)| {
            let mut item = format!("\"{}\";r={}", limit.name, report.remaining);
            if let Some(reset) = report.reset_ns {
                item.push_str(&format!(";t={}", ceil_seconds(reset)));
            }
            item
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Envoy's global rate limit filter format: the limit with the least remaining decides
/// `x-ratelimit-remaining`/`-reset`; `x-ratelimit-limit` is its quota followed by every limit's
/// `<quota>;w=<seconds>;name="<name>"`.
fn x_ratelimit(limits: &[Limit], reports: &[Report]) -> Vec<(String, String)> {
    let Some((closest, report)) = limits
        .iter()
        .zip(reports)
        .min_by_key(|(_, report)| report.remaining)
    else {
        return Vec::new();
    };
    let mut limit = closest.requests.to_string();
    for l in limits {
        if let Some(w) = window_seconds(l) {
            limit.push_str(&format!(", {};w={w};name=\"{}\"", l.requests, l.name));
        }
    }
    vec![
        ("x-ratelimit-limit".into(), limit),
        ("x-ratelimit-remaining".into(), report.remaining.to_string()),
        (
            "x-ratelimit-reset".into(),
            ceil_seconds(report.reset_ns.unwrap_or(0)).to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;

    const S: u64 = NANOS_PER_SECOND;

    fn limits() -> Vec<Limit> {
        vec![
            Limit {
                name: "per_second".into(),
                requests: 10,
                window_ns: S,
                algorithm: Algorithm::TokenBucket { burst: 20 },
            },
            Limit {
                name: "hourly".into(),
                requests: 1000,
                window_ns: 3600 * S,
                algorithm: Algorithm::SlidingWindow,
            },
        ]
    }

    fn reports() -> Vec<Report> {
        vec![
            Report {
                remaining: 3,
                reset_ns: Some(S / 10),
            },
            Report {
                remaining: 997,
                reset_ns: Some(3540 * S + 1),
            },
        ]
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn draft_headers_match_the_issue_example() {
        let h = rate_limit_headers(ResponseHeaders::Draft, &limits()[..1], &reports()[..1]);
        assert_eq!(get(&h, "ratelimit-policy"), Some("\"per_second\";q=10;w=1"));
        assert_eq!(get(&h, "ratelimit"), Some("\"per_second\";r=3;t=1"));
        assert_eq!(get(&h, "x-ratelimit-limit"), None);
    }

    #[test]
    fn draft_headers_list_every_limit() {
        let h = rate_limit_headers(ResponseHeaders::Draft, &limits(), &reports());
        assert_eq!(
            get(&h, "ratelimit-policy"),
            Some("\"per_second\";q=10;w=1, \"hourly\";q=1000;w=3600")
        );
        assert_eq!(
            get(&h, "ratelimit"),
            Some("\"per_second\";r=3;t=1, \"hourly\";r=997;t=3541")
        );
    }

    #[test]
    fn sub_second_windows_and_full_buckets_omit_parameters() {
        let mut l = limits();
        l[0].window_ns = S / 2;
        let r = vec![
            Report {
                remaining: 20,
                reset_ns: None,
            },
            reports()[1],
        ];
        let h = rate_limit_headers(ResponseHeaders::Both, &l, &r);
        assert_eq!(
            get(&h, "ratelimit-policy"),
            Some("\"per_second\";q=10, \"hourly\";q=1000;w=3600")
        );
        assert!(get(&h, "ratelimit")
            .unwrap()
            .starts_with("\"per_second\";r=20, "));
        assert_eq!(
            get(&h, "x-ratelimit-limit"),
            Some("10, 1000;w=3600;name=\"hourly\""),
            "the closest limit has no whole-second window: only its quota"
        );
    }

    #[test]
    fn x_ratelimit_uses_the_closest_limit() {
        let h = rate_limit_headers(ResponseHeaders::XRatelimit, &limits(), &reports());
        assert_eq!(
            get(&h, "x-ratelimit-limit"),
            Some("10, 10;w=1;name=\"per_second\", 1000;w=3600;name=\"hourly\"")
        );
        assert_eq!(get(&h, "x-ratelimit-remaining"), Some("3"));
        assert_eq!(get(&h, "x-ratelimit-reset"), Some("1"));
        assert_eq!(get(&h, "ratelimit"), None);
    }

    #[test]
    fn none_and_both() {
        assert!(rate_limit_headers(ResponseHeaders::None, &limits(), &reports()).is_empty());
        assert_eq!(
            rate_limit_headers(ResponseHeaders::Both, &limits(), &reports()).len(),
            5
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after(0), "1");
        assert_eq!(retry_after(1), "1");
        assert_eq!(retry_after(S), "1");
        assert_eq!(retry_after(S + 1), "2");
        assert_eq!(retry_after(59 * S), "59");
    }

    /// The header shapes the vectors quote from the draft parse with the same grammar we emit.
    #[test]
    fn our_format_matches_the_draft_examples() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/vectors/ratelimit_headers.md"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} not found");
            return;
        };
        // Every draft example line `RateLimit-Policy: "name";q=..;w=..` uses the item shape
        // `"name";param=int` that we emit.
        let policy_lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("RateLimit-Policy: \""))
            .collect();
        assert!(policy_lines
            .iter()
            .any(|l| l.starts_with("default\";q=100;w=10")));
        let ours = policy(&[Limit {
            name: "default".into(),
            requests: 100,
            window_ns: 10 * S,
            algorithm: Algorithm::FixedWindow,
        }]);
        assert!(
            text.contains(&format!("RateLimit-Policy: {ours}\n")),
            "{ours}"
        );
        let ours = remaining(
            &[Limit {
                name: "default".into(),
                requests: 100,
                window_ns: 60 * S,
                algorithm: Algorithm::FixedWindow,
            }],
            &[Report {
                remaining: 50,
                reset_ns: Some(30 * S),
            }],
        );
        assert!(text.contains(&format!("RateLimit: {ours}\n")), "{ours}");
    }
}
