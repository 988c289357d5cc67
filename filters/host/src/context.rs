//! The proxy-wasm root and HTTP contexts of every filter: thin adapters from the SDK's callbacks
//! to the frame, with the real host.

use crate::filter::Filter;
use crate::frame::{Bound, StreamOps, Worker};
use crate::proxy::ProxyHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;
use std::rc::Rc;
use wasmgate_core::host::Host;

thread_local! {
    /// `<crate> <version>` and the git commit of the module, logged once at VM start.
    static IDENTITY: Cell<(&'static str, &'static str)> = const { Cell::new(("", "")) };
    /// The module's filter name, for the log lines of host calls.
    static FILTER_NAME: Cell<&'static str> = const { Cell::new("") };
}

/// The name of the module's filter (`rate-limit`), for log lines written outside a filter.
pub fn filter_name() -> &'static str {
    FILTER_NAME.with(Cell::get)
}

/// Starts a filter's module (called from `_initialize`, see [`crate::export`]): remembers its
/// build identity (`name version`, git commit) and registers the root context.
pub fn start<F: Filter>(name_version: &'static str, commit: &'static str) {
    IDENTITY.with(|identity| identity.set((name_version, commit)));
    FILTER_NAME.with(|name| name.set(F::NAME));
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::<F>::default()) });
}

/// The root context: configuration, the timer and callout answers of the plugin.
pub struct Root<F: Filter> {
    worker: Rc<Worker<F>>,
}

impl<F: Filter> Default for Root<F> {
    fn default() -> Self {
        Self {
            worker: Rc::new(Worker::default()),
        }
    }
}

/// The host's log level, so that `--component-log-level wasm:debug` decides what is formatted:
/// lines below it cost nothing. Read at VM start and at each configuration.
fn follow_host_log_level() {
    if let Ok(level) = proxy_wasm::hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

impl<F: Filter> Context for Root<F> {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _: usize) {
        self.worker.deliver_http(&ProxyHost, token, headers, body);
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.worker.deliver_grpc(&ProxyHost, token, status, size);
    }
}

impl<F: Filter> RootContext for Root<F> {
    fn on_vm_start(&mut self, _: usize) -> bool {
        follow_host_log_level();
        let (name_version, commit) = IDENTITY.with(Cell::get);
        log::info!("wasmgate {}: {name_version} (commit {commit})", F::NAME);
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        follow_host_log_level();
        let json = self.get_plugin_configuration();
        let plugin = ProxyHost
            .property_string(&["plugin_name"])
            .unwrap_or_default();
        self.worker.configure(&ProxyHost, plugin, json.as_deref())
    }

    fn on_tick(&mut self) {
        self.worker.tick(&ProxyHost);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let bound = self.worker.new_stream(context_id).map(|stream| Bound {
            stream,
            worker: Rc::clone(&self.worker),
        });
        Some(Box::new(Http { bound }))
    }
}

/// A request that arrived while no configuration was accepted.
fn unconfigured<F: Filter>() -> Action {
    let Some(reply) = F::unconfigured() else {
        return Action::Continue;
    };
    crate::frame::send_reply(&ProxyHost, &reply);
    Action::Pause
}

/// One HTTP stream's context; without a configuration it passes everything (or replies, see
/// [`Filter::unconfigured`]).
pub struct Http<F: Filter> {
    bound: Option<Bound<F>>,
}

impl<F: Filter> Context for Http<F> {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _: usize) {
        if let Some(bound) = &self.bound {
            bound.worker.deliver_http(&ProxyHost, token, headers, body);
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if let Some(bound) = &self.bound {
            bound.worker.deliver_grpc(&ProxyHost, token, status, size);
        }
    }
}

impl<F: Filter> HttpContext for Http<F> {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        match &self.bound {
            Some(bound) => bound.request_headers(&ProxyHost, end_of_stream),
            None => unconfigured::<F>(),
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.bound.as_ref().map_or(Action::Continue, |b| {
            b.request_body(&ProxyHost, size, end_of_stream)
        })
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.bound
            .as_ref()
            .map_or(Action::Continue, |b| b.request_trailers(&ProxyHost))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.bound.as_ref().map_or(Action::Continue, |b| {
            b.response_headers(&ProxyHost, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.bound.as_ref().map_or(Action::Continue, |b| {
            b.response_body(&ProxyHost, size, end_of_stream)
        })
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.bound
            .as_ref()
            .map_or(Action::Continue, |b| b.response_trailers(&ProxyHost))
    }

    fn on_log(&mut self) {
        if let Some(bound) = &self.bound {
            bound.done(&ProxyHost);
        }
    }
}
