//! Everything the frame does to the host, as a trait: [`crate::ProxyHost`] in a module, and a
//! fake host in the frame's tests.

use std::time::Duration;
use wasmgate_core::host::{HeaderMap, Host};
use wasmgate_core::outcome::{Answer, Callout};

/// The direction of a stream a phase belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Downstream to upstream.
    Request,
    /// Upstream to downstream.
    Response,
}

impl Direction {
    /// The headers of this direction.
    pub fn headers(self) -> HeaderMap {
        match self {
            Self::Request => HeaderMap::Request,
            Self::Response => HeaderMap::Response,
        }
    }
}

/// The host calls the frame makes on a filter's behalf.
pub trait Env: Host {
    /// Replaces a whole header map in one call; `false` when the host refused.
    fn write_map(&self, map: HeaderMap, headers: &[(String, String)]) -> bool;
    /// Sets (or with `None` removes) every value of one header.
    fn write_header(&self, map: HeaderMap, name: &str, value: Option<&str>);
    /// Adds one value to a header.
    fn add_header(&self, map: HeaderMap, name: &str, value: &str);
    /// The first `size` bytes of this direction's buffered body.
    fn body(&self, direction: Direction, size: usize) -> Vec<u8>;
    /// Replaces the first `size` bytes of this direction's body.
    fn replace_body(&self, direction: Direction, size: usize, body: &[u8]);
    /// Answers the client with this response instead of the upstream's.
    fn respond(&self, status: u32, headers: &[(String, String)], body: &[u8]);
    /// Sends a callout; its token, or why the host refused.
    fn dispatch(&self, callout: &Callout) -> Result<u32, String>;
    /// Reads the answer of an HTTP callout inside its response callback.
    fn http_answer(&self, num_headers: usize, body_size: usize) -> Answer;
    /// Reads the answer of a gRPC callout inside its response callback.
    fn grpc_answer(&self, status: u32, size: usize) -> Answer;
    /// Lets a paused direction of the current stream go on.
    fn resume(&self, direction: Direction);
    /// Makes the stream with this context id current (for calls from the root context).
    fn set_effective_context(&self, context_id: u32) -> bool;
    /// Sets the root context's timer (zero stops it).
    fn set_tick_period(&self, period: Duration);
    /// Defines (or finds) a counter; `None` when the host refused.
    fn define_metric(&self, name: &str) -> Option<u32>;
    /// Adds to a counter.
    fn increment_metric(&self, id: u32, by: i64);
    /// Defines (or finds) a gauge; `None` when the host refused.
    fn define_gauge(&self, name: &str) -> Option<u32>;
    /// Sets a gauge.
    fn record_metric(&self, id: u32, value: u64);
}
