//! The one vocabulary a filter's logic answers in. The frame (crate `wasmgate-host`) carries an
//! [`Outcome`] out: it applies the header edits, buffers bodies, sends replies, dispatches
//! callouts and wakes waiting streams, so no filter writes that code again.

use crate::reply::LocalReply;
use std::time::Duration;

/// What a stream does after one of the filter's hooks.
#[derive(Debug)]
pub enum Outcome {
    /// Go on with the request or response.
    Continue,
    /// Answer locally with a JSON reply; the stream goes no further.
    Reply(LocalReply),
    /// Answer with a whole response the filter holds (an upstream answer it called for).
    Respond(Response),
    /// Deliver this direction's body to the filter's body hook, up to `limit` bytes.
    NeedBody(BodyNeed),
    /// Call a cluster and resume with its answer in the filter's callout hook.
    Call(Callout),
    /// Hold the stream until `until_ms` (Unix milliseconds), or until the plugin wakes waiting
    /// streams; then the filter's wake hook decides again.
    Wait {
        /// When the wake hook runs at the latest.
        until_ms: u64,
    },
}

/// How a filter wants a body delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyNeed {
    /// The most bytes buffered. Over it a buffered body is answered with 413 (request) or 502
    /// (response); a copied body is delivered as [`Body::TooLarge`].
    pub limit: u64,
    /// Whether the headers wait for the body, and whether the body itself is held.
    pub mode: BodyMode,
    /// The `content-length` the headers declared, as the filter read it (see
    /// [`crate::request::declared_length`]): over `limit`, a held body is refused at once,
    /// before anything goes upstream, and the frame makes no host call to learn it.
    pub declared: Option<u64>,
}

/// Where the headers and the body go while a body is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The headers wait for the body (Envoy stops all iteration), so the body hook may still
    /// edit them (a new `content-length`).
    HoldHeaders,
    /// The headers go on; the body is held until the hook has seen all of it.
    Buffer,
    /// Headers and body go on; the hook gets a copy of the whole body at its end.
    Copy,
}

/// A body delivered to a filter's body hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// The whole body (empty when the stream had none).
    Complete(&'a [u8]),
    /// A copied body went over its limit; the stream went on without the filter seeing it.
    TooLarge,
}

/// A whole response a filter answers with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u32,
    /// Regular headers (no pseudo-headers).
    pub headers: Vec<(String, String)>,
    /// The body, possibly empty.
    pub body: Vec<u8>,
}

/// A call to another cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callout {
    /// An HTTP request (`dispatch_http_call`).
    Http {
        /// Envoy cluster name.
        cluster: String,
        /// Request headers, pseudo-headers included.
        headers: Vec<(String, String)>,
        /// The request body, if any.
        body: Option<Vec<u8>>,
        /// Request trailers.
        trailers: Vec<(String, String)>,
        /// Overall timeout.
        timeout: Duration,
    },
    /// A unary gRPC call (`dispatch_grpc_call`).
    Grpc {
        /// Envoy cluster name.
        cluster: String,
        /// Fully qualified service name.
        service: &'static str,
        /// Method name.
        method: &'static str,
        /// The serialized request message.
        message: Vec<u8>,
        /// Overall timeout.
        timeout: Duration,
    },
}

impl Callout {
    /// The Envoy cluster the call goes to.
    pub fn cluster(&self) -> &str {
        match self {
            Self::Http { cluster, .. } | Self::Grpc { cluster, .. } => cluster,
        }
    }
}

/// The answer to a [`Callout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer; no headers means no response arrived (timeout, reset, refused).
    Http {
        /// Response headers, `:status` included.
        headers: Vec<(String, String)>,
        /// The response body.
        body: Vec<u8>,
    },
    /// A gRPC answer: status 0 carries the response message.
    Grpc {
        /// gRPC status code.
        status: u32,
        /// The response message (empty unless status is 0).
        message: Vec<u8>,
    },
    /// The host refused to send the call; the reason is for logs.
    NotSent(String),
    /// The answer's body was over the size the caller accepts, so it was not read into the VM.
    TooLarge {
        /// The body size the host reported.
        size: usize,
        /// The caller's limit.
        limit: usize,
    },
}

impl Answer {
    /// The HTTP status of an HTTP answer, when one arrived with a valid `:status`.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Http { headers, .. } => parse_status(
                headers
                    .iter()
                    .find(|(n, _)| n == ":status")
                    .map(|(_, v)| v.as_str()),
            ),
            _ => None,
        }
    }
}

/// A `:status` header value as a number (`None` when absent or not a status code).
pub fn parse_status(value: Option<&str>) -> Option<u16> {
    value.and_then(|v| v.trim().parse::<u16>().ok())
}
