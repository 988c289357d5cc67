//! The proxy-wasm root and HTTP contexts of every filter: thin adapters from the SDK's callbacks
//! to the frame, with the real host.

#[cfg(feature = "bundle")]
use crate::chain::stage::StagePlugin;
use crate::filter::Filter;
#[cfg(feature = "bundle")]
use crate::filter::Setup;
use crate::frame::{Bound, StreamOps, Worker};
use crate::logging;
use crate::proxy::ProxyHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::Cell;
use std::rc::Rc;
use wasmgate_core::host::Host;
#[cfg(feature = "bundle")]
use wasmgate_core::ConfigError;

thread_local! {
    /// `<crate> <version>` and the git commit of the module, logged once at VM start.
    static IDENTITY: Cell<(&'static str, &'static str)> = const { Cell::new(("", "")) };
    /// The module's filter name, for the log lines of host calls (in a bundle module, the filter
    /// of the callback running).
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
    logging::init(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::<F>::default()) });
}

/// Marks the context a callback runs in: a stream or the plugin ([`logging::set_in_stream`]) and,
/// in a bundle module, the filter whose plugin it is, so that the frame's host-call warnings
/// name it ([`filter_name`]). A single-filter module sets its name once, at start.
#[inline(always)]
fn enter<F: Filter>(in_stream: bool) {
    logging::set_in_stream(in_stream);
    mark::<F>();
}

/// In a bundle module, records `F` as the filter of the running callback ([`filter_name`]).
#[inline(always)]
fn mark<F: Filter>() {
    // A constant: compiled out of the single-filter modules.
    if cfg!(feature = "bundle") {
        FILTER_NAME.with(|name| name.set(F::NAME));
    }
}

/// One filter of a bundle module (see [`crate::export_bundle`]): its root id, which is the
/// filter's name (`rate-limit`), and its root context.
pub struct Entry {
    name: &'static str,
    #[cfg(feature = "bundle")]
    stage: StageConfigure,
    /// Only in the Wasm build: natively (the bundle's unit tests) the root contexts' host calls
    /// are not linked.
    #[cfg(target_arch = "wasm32")]
    root: fn() -> Box<dyn RootContext>,
}

impl Entry {
    /// The entry of filter `F`.
    pub const fn of<F: Filter>() -> Self {
        Self {
            name: F::NAME,
            #[cfg(feature = "bundle")]
            stage: crate::chain::stage::configure::<F>,
            #[cfg(target_arch = "wasm32")]
            root: new_root::<F>,
        }
    }

    /// The root id selecting this filter (the filter's name).
    pub const fn root_id(&self) -> &'static str {
        self.name
    }

    /// Configures this filter as a stage of a chain ([`crate::chain`]).
    #[cfg(feature = "bundle")]
    pub fn configure_stage(
        &self,
        setup: &Setup<'_>,
        json: &[u8],
    ) -> Result<Box<dyn StagePlugin>, ConfigError> {
        (self.stage)(setup, json)
    }
}

/// How an [`Entry`] configures its filter as a chain stage.
#[cfg(feature = "bundle")]
type StageConfigure = fn(&Setup<'_>, &[u8]) -> Result<Box<dyn StagePlugin>, ConfigError>;

/// The filters of the bundle module (empty in a single-filter module): the stages a chain may
/// run.
pub fn bundle_entries() -> &'static [Entry] {
    BUNDLE.with(Cell::get)
}

/// Sets the filters of the bundle module: [`start_bundle`] does, and native tests of chains.
pub fn set_bundle_entries(filters: &'static [Entry]) {
    BUNDLE.with(|bundle| bundle.set(filters));
}

#[cfg(target_arch = "wasm32")]
fn new_root<F: Filter>() -> Box<dyn RootContext> {
    Box::new(Root::<F>::default())
}

thread_local! {
    /// The filters of a bundle module, by root id (empty in a single-filter module).
    static BUNDLE: Cell<&'static [Entry]> = const { Cell::new(&[]) };
}

/// Starts a bundle module holding several filters (called from `_initialize`, see
/// [`crate::export_bundle`]): each plugin's root context becomes the root of the filter whose name
/// is the plugin's `root_id`. Plugins sharing the module and a `vm_id` share one VM per worker,
/// whichever filters they run.
pub fn start_bundle(name_version: &'static str, commit: &'static str, filters: &'static [Entry]) {
    IDENTITY.with(|identity| identity.set((name_version, commit)));
    FILTER_NAME.with(|name| name.set(BUNDLE_NAME));
    set_bundle_entries(filters);
    logging::init(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Dispatch::default()) });
}

/// The log prefix of a bundle's own lines (`wasmgate bundle: ...`), before a filter is chosen.
const BUNDLE_NAME: &str = "bundle";

/// The filter of `root_id` among `filters`, or the error line naming the valid root ids.
pub fn select_root(filters: &[Entry], root_id: &str) -> Result<usize, String> {
    if let Some(index) = filters.iter().position(|entry| entry.name == root_id) {
        return Ok(index);
    }
    let valid: Vec<&str> = filters.iter().map(|entry| entry.name).collect();
    let given = if root_id.is_empty() {
        "an empty root_id".to_string()
    } else {
        format!("unknown root_id {root_id:?}")
    };
    Err(format!(
        "wasmgate {BUNDLE_NAME}: {given}: the plugin's root_id selects the filter of this module, one of: {}",
        valid.join(", ")
    ))
}

/// A bundle plugin's root context: becomes the chosen filter's [`Root`] at the first callback
/// (the plugin's `root_id`, Envoy's property `plugin_root_id`) and forwards every callback to it.
/// An unknown or empty root id fails the VM start and every configuration, with one error line
/// listing the valid ones: a plugin that would run no filter must never pass traffic.
#[derive(Default)]
struct Dispatch {
    root: Option<Box<dyn RootContext>>,
    refused: bool,
}

impl Dispatch {
    fn resolve(&mut self) -> Option<&mut Box<dyn RootContext>> {
        if self.root.is_none() && !self.refused {
            logging::set_in_stream(false);
            let root_id = ProxyHost
                .property_string(&["plugin_root_id"])
                .unwrap_or_default();
            let filters = BUNDLE.with(Cell::get);
            match select_root(filters, &root_id) {
                #[cfg(target_arch = "wasm32")]
                Ok(index) => self.root = filters.get(index).map(|entry| (entry.root)()),
                #[cfg(not(target_arch = "wasm32"))]
                Ok(_) => {}
                Err(line) => {
                    logging::follow_host_level();
                    log::error!("{line}");
                    self.refused = true;
                }
            }
        }
        self.root.as_mut()
    }
}

impl Context for Dispatch {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        if let Some(root) = self.resolve() {
            root.on_http_call_response(token, headers, body, trailers);
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if let Some(root) = self.resolve() {
            root.on_grpc_call_response(token, status, size);
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, elements: u32) {
        if let Some(root) = self.resolve() {
            root.on_grpc_stream_initial_metadata(token, elements);
        }
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        if let Some(root) = self.resolve() {
            root.on_grpc_stream_message(token, size);
        }
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, elements: u32) {
        if let Some(root) = self.resolve() {
            root.on_grpc_stream_trailing_metadata(token, elements);
        }
    }

    fn on_grpc_stream_close(&mut self, token: u32, status: u32) {
        if let Some(root) = self.resolve() {
            root.on_grpc_stream_close(token, status);
        }
    }

    fn on_foreign_function(&mut self, function: u32, size: usize) {
        if let Some(root) = self.resolve() {
            root.on_foreign_function(function, size);
        }
    }

    fn on_done(&mut self) -> bool {
        self.root.as_mut().is_none_or(|root| root.on_done())
    }
}

impl RootContext for Dispatch {
    fn on_vm_start(&mut self, size: usize) -> bool {
        self.resolve().is_some_and(|root| root.on_vm_start(size))
    }

    fn on_configure(&mut self, size: usize) -> bool {
        self.resolve().is_some_and(|root| root.on_configure(size))
    }

    fn on_tick(&mut self) {
        if let Some(root) = self.resolve() {
            root.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue: u32) {
        if let Some(root) = self.resolve() {
            root.on_queue_ready(queue);
        }
    }

    fn on_log(&mut self) {
        if let Some(root) = self.resolve() {
            root.on_log();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.root {
            Some(root) => root.create_http_context(context_id),
            // No filter was chosen (refused): Envoy never configured this plugin, so no stream
            // should arrive; if one does, it is refused rather than passed.
            None => Some(Box::new(Refused)),
        }
    }
}

/// A stream of a plugin whose root id chose no filter: answered `500 internal_error`.
struct Refused;

impl Context for Refused {}

impl HttpContext for Refused {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        logging::set_in_stream(true);
        log::error!(
            "wasmgate {BUNDLE_NAME}: request refused: the plugin's root_id chose no filter"
        );
        let reply =
            wasmgate_core::LocalReply::new(500, "internal_error", "The gateway is misconfigured.");
        crate::frame::send_reply(&ProxyHost, &reply);
        Action::Pause
    }
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

impl<F: Filter> Context for Root<F> {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _: usize) {
        enter::<F>(false);
        self.worker.deliver_http(&ProxyHost, token, headers, body);
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        enter::<F>(false);
        self.worker.deliver_grpc(&ProxyHost, token, status, size);
    }
}

impl<F: Filter> RootContext for Root<F> {
    fn on_vm_start(&mut self, _: usize) -> bool {
        enter::<F>(false);
        logging::follow_host_level();
        let (name_version, commit) = IDENTITY.with(Cell::get);
        log::info!("wasmgate {}: {name_version} (commit {commit})", F::NAME);
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        enter::<F>(false);
        logging::follow_host_level();
        let json = self.get_plugin_configuration();
        let plugin = ProxyHost
            .property_string(&["plugin_name"])
            .unwrap_or_default();
        self.worker.configure(&ProxyHost, plugin, json.as_deref())
    }

    fn on_tick(&mut self) {
        enter::<F>(false);
        self.worker.tick(&ProxyHost);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        mark::<F>();
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
        enter::<F>(true);
        if let Some(bound) = &self.bound {
            bound.worker.deliver_http(&ProxyHost, token, headers, body);
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        enter::<F>(true);
        if let Some(bound) = &self.bound {
            bound.worker.deliver_grpc(&ProxyHost, token, status, size);
        }
    }
}

impl<F: Filter> HttpContext for Http<F> {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        enter::<F>(true);
        match &self.bound {
            Some(bound) => bound.request_headers(&ProxyHost, end_of_stream),
            None => unconfigured::<F>(),
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        enter::<F>(true);
        self.bound.as_ref().map_or(Action::Continue, |b| {
            b.request_body(&ProxyHost, size, end_of_stream)
        })
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        enter::<F>(true);
        self.bound
            .as_ref()
            .map_or(Action::Continue, |b| b.request_trailers(&ProxyHost))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        enter::<F>(true);
        self.bound.as_ref().map_or(Action::Continue, |b| {
            b.response_headers(&ProxyHost, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        enter::<F>(true);
        self.bound.as_ref().map_or(Action::Continue, |b| {
            b.response_body(&ProxyHost, size, end_of_stream)
        })
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        enter::<F>(true);
        self.bound
            .as_ref()
            .map_or(Action::Continue, |b| b.response_trailers(&ProxyHost))
    }

    fn on_log(&mut self) {
        enter::<F>(true);
        if let Some(bound) = &self.bound {
            bound.done(&ProxyHost);
        }
    }
}
