//! A Wasm HTTP filter that does no work at all: it proves the harness loads modules into a real
//! Envoy, and it is the floor every filter is compared with in `make bench`.
//!
//! With a configuration naming one [`Probe`] (`"get_map"`, `"get_header"`, `"set_headers"`,
//! `"metric"`, `"time"`, `"allocations"`), it does only that on each request's headers, so
//! `make bench` prices the host calls and allocations the filters are made of.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PassthroughRoot::default()) });
}}

/// One operation the benchmark prices, done once per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Probe {
    /// Nothing: the floor.
    #[default]
    None,
    /// Read every request header (one `get_header_map_pairs`).
    GetMap,
    /// Read one request header (one `get_header_map_value`).
    GetHeader,
    /// Write five request headers, one call each.
    SetHeaders,
    /// Add one to a counter.
    Metric,
    /// Read the clock.
    Time,
    /// Allocate and format 100 short strings (no host call).
    Allocations,
}

impl Probe {
    fn parse(config: &[u8]) -> Self {
        match config {
            b"\"get_map\"" => Self::GetMap,
            b"\"get_header\"" => Self::GetHeader,
            b"\"set_headers\"" => Self::SetHeaders,
            b"\"metric\"" => Self::Metric,
            b"\"time\"" => Self::Time,
            b"\"allocations\"" => Self::Allocations,
            _ => Self::None,
        }
    }

    fn run(self, counter: u32) {
        match self {
            Self::None => {}
            Self::GetMap => {
                std::hint::black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok());
            }
            Self::GetHeader => {
                let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path");
                std::hint::black_box(value.ok());
            }
            Self::SetHeaders => {
                for name in [
                    "x-probe-1",
                    "x-probe-2",
                    "x-probe-3",
                    "x-probe-4",
                    "x-probe-5",
                ] {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some("v"));
                }
            }
            Self::Metric => {
                let _ = hostcalls::increment_metric(counter, 1);
            }
            Self::Time => {
                std::hint::black_box(hostcalls::get_current_time().ok());
            }
            Self::Allocations => {
                let strings: Vec<String> = (0..100).map(|i| format!("x-{i}")).collect();
                std::hint::black_box(strings);
            }
        }
    }
}

#[derive(Default)]
struct PassthroughRoot {
    probe: Probe,
    counter: u32,
}

impl Context for PassthroughRoot {}

impl RootContext for PassthroughRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("{}", wasmgate_core::build_identity!());
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        self.probe = Probe::parse(&self.get_plugin_configuration().unwrap_or_default());
        if self.probe == Probe::Metric {
            self.counter = hostcalls::define_metric(MetricType::Counter, "passthrough_probe")
                .unwrap_or_default();
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Passthrough {
            probe: self.probe,
            counter: self.counter,
        }))
    }
}

struct Passthrough {
    probe: Probe,
    counter: u32,
}

impl Context for Passthrough {}

impl HttpContext for Passthrough {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.probe.run(self.counter);
        Action::Continue
    }
}
