//! Metric names: every counter is `wasmgate_<filter>_<what>`.

/// The full metric name for a filter: `wasmgate_<filter with _>_<what>`.
pub fn metric_name(filter: &str, what: &str) -> String {
    format!("wasmgate_{}_{what}", filter.replace('-', "_"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(
            super::metric_name("jwt-auth", "denied"),
            "wasmgate_jwt_auth_denied"
        );
    }
}
