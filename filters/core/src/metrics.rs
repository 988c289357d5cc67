//! Metric names that Envoy's tag extraction turns into Prometheus labels.
//!
//! Proxy-Wasm has no tags in its ABI, so the labels travel in the stat name, in the format of
//! Istio's own stats (`key=.=value;.;`), before the metric's name:
//! `plugin=.=edge;.;reason=.=invalid_api_key;.;wasmgate_key_auth_denied_total`. One
//! `stats_config.stats_tags` entry per label key ([`LABELS`], regex [`tag_regex`]) removes each
//! pair and makes it a label, so Prometheus sees `wasmgate_key_auth_denied_total{plugin="edge",
//! reason="invalid_api_key"}`; Istio's `extraStatTags` generate the same entries.

/// Every label key a wasmgate metric may carry, in the order they appear in a name. Shipped
/// Envoy configurations carry one `stats_tags` entry per key (a test checks it).
pub const LABELS: &[&str] = &[
    "plugin",
    "outcome",
    "reason",
    "rule",
    "limit",
    "client",
    "key_id",
    "provider",
    "credential",
    "upstream",
    "direction",
];

/// The most bytes a label value keeps (configured names only, never request values).
const MAX_VALUE: usize = 64;

/// The stat name of `wasmgate_<filter with _>_<what>` with the `plugin` label and `labels`.
pub fn metric_name(filter: &str, what: &str, plugin: &str, labels: &[(&str, &str)]) -> String {
    let mut name = String::new();
    push_label(&mut name, "plugin", plugin);
    for (key, value) in labels {
        debug_assert!(LABELS.contains(key), "label {key} is not in LABELS");
        push_label(&mut name, key, value);
    }
    name.push_str("wasmgate_");
    name.push_str(&filter.replace('-', "_"));
    name.push('_');
    name.push_str(what);
    name
}

/// The `stats_tags` regex that extracts label `key` (Envoy removes the first group and keeps
/// the second as the value), the same as Istio generates for an `extraStatTags` entry.
pub fn tag_regex(key: &str) -> String {
    format!(r"({key}=\.=(.*?);\.;)")
}

/// Splits a stat name made by [`metric_name`] (with or without Envoy's `wasmcustom.` prefix)
/// into the metric's name and its labels: what Envoy's tag extraction does, for tests.
pub fn parse_metric_name(stat: &str) -> (String, Vec<(String, String)>) {
    let mut rest = stat.strip_prefix("wasmcustom.").unwrap_or(stat);
    let mut labels = Vec::new();
    while let Some((pair, tail)) = rest.split_once(";.;") {
        let Some((key, value)) = pair.split_once("=.=") else {
            break;
        };
        labels.push((key.to_string(), value.to_string()));
        rest = tail;
    }
    (rest.to_string(), labels)
}

/// A label value as it appears in a stat name: reduced to characters that cannot end the pair
/// or break a stat name (others become `_`), at most [`MAX_VALUE`] characters. Configurations
/// use it to refuse two names that would become one label value.
pub fn label_value(value: &str) -> String {
    value
        .chars()
        .take(MAX_VALUE)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Appends `key=.=value;.;` (the value through [`label_value`]).
fn push_label(name: &mut String, key: &str, value: &str) {
    name.push_str(key);
    name.push_str("=.=");
    name.push_str(&label_value(value));
    name.push_str(";.;");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_first_in_istio_format() {
        assert_eq!(
            metric_name(
                "key-auth",
                "denied_total",
                "edge",
                &[("reason", "invalid_api_key")]
            ),
            "plugin=.=edge;.;reason=.=invalid_api_key;.;wasmgate_key_auth_denied_total"
        );
    }

    #[test]
    fn values_cannot_forge_a_label_or_end_a_pair() {
        let name = metric_name("jwt-auth", "x", "a;.;reason=.=b", &[]);
        assert_eq!(name, "plugin=.=a_._reason_._b;.;wasmgate_jwt_auth_x");
        let (metric, labels) = parse_metric_name(&name);
        assert_eq!(metric, "wasmgate_jwt_auth_x");
        assert_eq!(labels, vec![("plugin".into(), "a_._reason_._b".into())]);
    }

    #[test]
    fn long_values_are_cut() {
        let name = metric_name("retry", "x", &"p".repeat(200), &[]);
        assert_eq!(name.len(), "plugin=.=;.;wasmgate_retry_x".len() + MAX_VALUE);
    }

    #[test]
    fn parse_undoes_envoy_prefix_and_labels() {
        let (metric, labels) = parse_metric_name(
            "wasmcustom.plugin=.=p;.;rule=.=r1;.;limit=.=l;.;wasmgate_rate_limit_limited_total",
        );
        assert_eq!(metric, "wasmgate_rate_limit_limited_total");
        assert_eq!(labels.len(), 3);
        assert_eq!(labels[2], ("limit".into(), "l".into()));
    }

    #[test]
    fn tag_regex_is_istio_extra_stat_tags_form() {
        assert_eq!(tag_regex("reason"), r"(reason=\.=(.*?);\.;)");
    }
}
