//! The module's logger: every line goes to the host's log, and a line written while a stream is
//! handled ends with that request's `x-request-id`, so one request can be followed across
//! proxies and services. Envoy drops the request header map once the headers went on, so a line
//! written later cannot read the id: when debug lines are on, the frame reads it with the request
//! headers (a host call per request) and makes it current whenever it enters the stream; at info
//! and above (no per-request cost) only lines written in the request-headers hook read it, and
//! later lines print `x-request-id=-`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    /// True while the host's current context is an HTTP stream (its hooks, its callout answers,
    /// a wait resumed by the timer), false in the plugin's own callbacks.
    static IN_STREAM: Cell<bool> = const { Cell::new(false) };
    /// The current stream's `x-request-id=...` field, set by the frame when it enters a stream.
    static REQUEST_ID: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
    /// True during a request-headers hook, the one place the request header map is surely
    /// readable (a read after the headers went on makes the SDK abort the VM).
    static HEADERS_READABLE: Cell<bool> = const { Cell::new(false) };
}

/// The longest request id printed; longer ones are printed as `(invalid)`.
const MAX_REQUEST_ID: usize = 128;

struct Logger;

static LOGGER: Logger = Logger;

/// Installs the logger (once per VM) at `level`, and a panic hook that logs the panic.
pub fn init(level: LogLevel) {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|panic| {
            let _ = hostcalls::log(LogLevel::Critical, &panic.to_string());
        }));
    }
    set_level(level);
}

/// Follows the host's log level, so that `--component-log-level wasm:debug` decides what is
/// formatted: lines below it cost nothing. Read at VM start and at each configuration.
pub fn follow_host_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        set_level(level);
    }
}

/// Marks whether the current context is a stream (see [`IN_STREAM`]).
pub fn set_in_stream(in_stream: bool) {
    IN_STREAM.with(|flag| flag.set(in_stream));
}

/// Marks whether the request header map may be read now (see [`HEADERS_READABLE`]).
pub fn set_request_headers_readable(readable: bool) {
    HEADERS_READABLE.with(|flag| flag.set(readable));
}

/// The stream the frame works on now: its request id field ([`request_id_field`]), `None`
/// before its request headers arrived.
pub fn set_request_id(field: Option<Rc<str>>) {
    REQUEST_ID.with(|id| *id.borrow_mut() = field);
}

fn set_level(level: LogLevel) {
    log::set_max_level(match level {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Critical => log::LevelFilter::Off,
    });
}

/// `x-request-id=<id>` for a log line: `-` when the request has none, `(invalid)` when it holds
/// anything but `[A-Za-z0-9._:-]` (a request id is a client's value: it must not forge a line).
pub fn request_id_field(id: Option<&[u8]>) -> String {
    let printable = |id: &[u8]| {
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    match id {
        None => "x-request-id=-".to_string(),
        Some(id) if printable(id) => format!("x-request-id={}", String::from_utf8_lossy(id)),
        Some(_) => "x-request-id=(invalid)".to_string(),
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let mut line = record.args().to_string();
        if IN_STREAM.with(Cell::get) {
            line.push_str(" [");
            REQUEST_ID.with(|id| match &*id.borrow() {
                Some(field) => line.push_str(field),
                None if HEADERS_READABLE.with(Cell::get) => {
                    let id =
                        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-request-id")
                            .ok()
                            .flatten();
                    line.push_str(&request_id_field(id.as_deref()));
                }
                None => line.push_str("x-request-id=-"),
            });
            line.push(']');
        }
        let _ = hostcalls::log(level, &line);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::request_id_field;

    #[test]
    fn request_ids_print_only_when_harmless() {
        assert_eq!(request_id_field(None), "x-request-id=-");
        assert_eq!(
            request_id_field(Some(b"6f1c2a7e-0b1d-4b8e-9d55-1f0e3c9a2b44")),
            "x-request-id=6f1c2a7e-0b1d-4b8e-9d55-1f0e3c9a2b44"
        );
        for forged in [
            &b"a\nwasmgate key-auth: allowed"[..],
            b"",
            b"id with spaces",
            b"\xff\xfe",
            &[b'a'; 129][..],
        ] {
            assert_eq!(request_id_field(Some(forged)), "x-request-id=(invalid)");
        }
    }
}
