//! The real host: proxy-wasm host calls on the current context.

use crate::env::{Direction, Env};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use std::time::{Duration, SystemTime};
use wasmgate_core::clock::Clock;
use wasmgate_core::host::{lossy_text, HeaderMap, Host};
use wasmgate_core::outcome::{Answer, Callout};
use wasmgate_core::shared::{SetError, SharedStore};

/// The proxy-wasm host of the running VM.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

fn map_type(map: HeaderMap) -> MapType {
    match map {
        HeaderMap::Request => MapType::HttpRequestHeaders,
        HeaderMap::RequestTrailers => MapType::HttpRequestTrailers,
        HeaderMap::Response => MapType::HttpResponseHeaders,
        HeaderMap::ResponseTrailers => MapType::HttpResponseTrailers,
    }
}

/// Every header of a host map as text. HTTP allows header values that are not UTF-8 (obs-text
/// bytes such as Latin-1) and the SDK's text getters panic on them, which would fail every stream
/// of the worker; so bytes are read and invalid sequences replaced with U+FFFD.
fn read_map(map: MapType) -> Vec<(String, String)> {
    hostcalls::get_map_bytes(map)
        .map(|pairs| pairs.into_iter().map(|(n, v)| (n, lossy_text(v))).collect())
        .unwrap_or_default()
}

impl SharedStore for ProxyHost {
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
        hostcalls::get_shared_data(key).map_err(|_| SetError::Failed)
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

impl Clock for ProxyHost {
    fn now(&self) -> SystemTime {
        hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl Host for ProxyHost {
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        read_map(map_type(map))
    }

    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        hostcalls::get_map_value_bytes(map_type(map), name)
            .ok()
            .flatten()
            .map(lossy_text)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn call_foreign(&self, name: &str, args: &[u8]) -> Option<Vec<u8>> {
        match hostcalls::call_foreign_function(name, Some(args)) {
            Ok(result) => Some(result.unwrap_or_default()),
            Err(_) => None,
        }
    }
}

fn pairs(list: &[(String, String)]) -> Vec<(&str, &str)> {
    list.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

fn body_buffer(direction: Direction) -> BufferType {
    match direction {
        Direction::Request => BufferType::HttpRequestBody,
        Direction::Response => BufferType::HttpResponseBody,
    }
}

impl Env for ProxyHost {
    fn write_map(&self, map: HeaderMap, headers: &[(String, String)]) -> bool {
        hostcalls::set_map(map_type(map), pairs(headers)).is_ok()
    }

    fn write_header(&self, map: HeaderMap, name: &str, value: Option<&str>) {
        if let Err(status) = hostcalls::set_map_value(map_type(map), name, value) {
            log::warn!(
                "wasmgate {}: could not write header {name}: {status:?}",
                crate::context::filter_name()
            );
        }
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &str) {
        if let Err(status) = hostcalls::add_map_value(map_type(map), name, value) {
            log::warn!(
                "wasmgate {}: could not add header {name}: {status:?}",
                crate::context::filter_name()
            );
        }
    }

    fn body(&self, direction: Direction, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(body_buffer(direction), 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn replace_body(&self, direction: Direction, size: usize, body: &[u8]) {
        if let Err(status) = hostcalls::set_buffer(body_buffer(direction), 0, size, body) {
            log::warn!(
                "wasmgate {}: could not replace the body: {status:?}",
                crate::context::filter_name()
            );
        }
    }

    fn respond(&self, status: u32, headers: &[(String, String)], body: &[u8]) {
        let body = (!body.is_empty()).then_some(body);
        if let Err(err) = hostcalls::send_http_response(status, pairs(headers), body) {
            log::warn!(
                "wasmgate {}: could not send local reply {status}: {err:?}",
                crate::context::filter_name()
            );
        }
    }

    fn dispatch(&self, callout: &Callout) -> Result<u32, String> {
        let sent = match callout {
            Callout::Http {
                cluster,
                headers,
                body,
                trailers,
                timeout,
            } => hostcalls::dispatch_http_call(
                cluster,
                pairs(headers),
                body.as_deref(),
                pairs(trailers),
                *timeout,
            ),
            Callout::Grpc {
                cluster,
                service,
                method,
                message,
                timeout,
            } => hostcalls::dispatch_grpc_call(
                cluster,
                service,
                method,
                Vec::new(),
                Some(message),
                *timeout,
            ),
        };
        sent.map_err(|status| format!("{status:?}"))
    }

    fn http_answer(&self, num_headers: usize, body_size: usize) -> Answer {
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            read_map(MapType::HttpCallResponseHeaders)
        };
        let body = if body_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        Answer::Http { headers, body }
    }

    fn grpc_answer(&self, status: u32, size: usize) -> Answer {
        let message = if status == 0 {
            hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Answer::Grpc { status, message }
    }

    fn resume(&self, direction: Direction) {
        let resumed = match direction {
            Direction::Request => hostcalls::resume_http_request(),
            Direction::Response => hostcalls::resume_http_response(),
        };
        if let Err(status) = resumed {
            log::debug!(
                "wasmgate {}: could not resume the stream: {status:?}",
                crate::context::filter_name()
            );
        }
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        // The frame only switches to streams: their log lines carry the request id.
        crate::logging::set_in_stream(true);
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn set_tick_period(&self, period: Duration) {
        let _ = hostcalls::set_tick_period(period);
    }

    fn define_metric(&self, name: &str) -> Option<u32> {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Some(id),
            Err(status) => {
                log::warn!(
                    "wasmgate {}: could not define metric {name}: {status:?}",
                    crate::context::filter_name()
                );
                None
            }
        }
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }

    fn define_gauge(&self, name: &str) -> Option<u32> {
        match hostcalls::define_metric(MetricType::Gauge, name) {
            Ok(id) => Some(id),
            Err(status) => {
                log::warn!(
                    "wasmgate {}: could not define gauge {name}: {status:?}",
                    crate::context::filter_name()
                );
                None
            }
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}
