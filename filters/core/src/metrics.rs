//! Counters and gauges defined once per VM, visible at Envoy's `/stats` and `/stats/prometheus`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// A counter named `wasmgate_<filter>_<what>`; a no-op if the host refused to define it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines (or finds) the counter; call it from the root context, once per VM.
    pub fn define(name: &str) -> Self {
        Self(define(MetricType::Counter, name))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`; adding zero makes no host call (Envoy refuses it, and each call costs).
    pub fn add(&self, n: i64) {
        if n == 0 {
            return;
        }
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, n);
        }
    }
}

/// A gauge named `wasmgate_<filter>_<what>`; a no-op if the host refused to define it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// Defines (or finds) the gauge; call it from the root context, once per VM.
    pub fn define(name: &str) -> Self {
        Self(define(MetricType::Gauge, name))
    }

    /// Sets the gauge's value.
    pub fn set(&self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("wasmgate: could not define metric {name}: {status:?}");
            None
        }
    }
}

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
