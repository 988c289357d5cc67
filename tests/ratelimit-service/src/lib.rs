//! A test-only Envoy rate limit service: `envoy.service.ratelimit.v3.RateLimitService` (from the
//! `envoy-types` crate, served with tonic) in front of Limitador's rate limiter (the published
//! `limitador` crate) with its in-memory storage: the counters live in this process, which every
//! Envoy of a test asks.
//!
//! Limitador's in-memory storage reads every counter and then increments them: two checks racing
//! on the same counter can both see room for the last unit. This service therefore runs one check
//! at a time, so the counts it hands out are exact across every Envoy that asks it (what the tests
//! prove about the filter: it admits exactly what the service allows).
//!
//! The request maps to Limitador as Limitador's own server maps it: the `domain` is the
//! namespace, and the descriptors are bound as the CEL list `descriptors` (so a limit counts
//! per client with `variables: ["descriptors[0].remote_address"]`). Unlike Limitador's server,
//! the answer also carries one `DescriptorStatus` per descriptor (as envoyproxy/ratelimit sends
//! them): the limit with the least remaining, its `limit_remaining` and `duration_until_reset`.
//!
//! Per domain, the answers can also carry headers ([`Headers`]): Limitador's
//! `--rate-limit-headers DRAFT_VERSION_03` (`X-RateLimit-*` in `response_headers_to_add`) and
//! fixed `response_headers_to_add` / `request_headers_to_add`, as envoyproxy/ratelimit and
//! Limitador deployments send them.

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use limitador::counter::Counter;
use limitador::limit::{Context, Limit, Namespace};
use limitador::RateLimiter;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tonic::{Request, Response, Status};

/// How many qualified counters (one per limit and client) the in-memory storage keeps.
const CACHE_SIZE: u64 = 100_000;

/// Headers added to every OK and OVER_LIMIT answer for one domain.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// Limitador's `--rate-limit-headers DRAFT_VERSION_03`: `X-RateLimit-Limit`,
    /// `X-RateLimit-Remaining` and `X-RateLimit-Reset` of the tightest counter, in
    /// `response_headers_to_add`.
    pub draft_03: bool,
    /// Fixed `response_headers_to_add` (name, value).
    pub response: Vec<(String, String)>,
    /// Fixed `request_headers_to_add` (name, value).
    pub request: Vec<(String, String)>,
}

/// A running service; dropping it stops it.
pub struct Service {
    /// The loopback port the gRPC server (HTTP/2 cleartext) listens on.
    pub port: u16,
    calls: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts the service on a free loopback port with `limits`, a JSON list of Limitador limits
    /// (`namespace`, `max_value`, `seconds`, `name`, `conditions`, `variables`: the format of
    /// Limitador's limits file). Its answers carry no headers.
    pub fn start(limits: &str) -> Result<Self, String> {
        Self::start_with(limits, HashMap::new())
    }

    /// [`Service::start`], with the headers added to the answers of each domain (the key).
    pub fn start_with(limits: &str, headers: HashMap<String, Headers>) -> Result<Self, String> {
        let limits: Vec<Limit> =
            serde_json::from_str(limits).map_err(|err| format!("limits: {err}"))?;
        let limiter = RateLimiter::new(CACHE_SIZE);
        for limit in limits {
            limiter.add_limit(limit);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|err| format!("runtime: {err}"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|err| format!("bind: {err}"))?;
        let port = listener
            .local_addr()
            .map_err(|err| format!("local_addr: {err}"))?
            .port();
        let calls = Arc::new(AtomicU64::new(0));
        let handler = Handler {
            limiter: Mutex::new(limiter),
            headers,
            calls: Arc::clone(&calls),
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let served = tonic::transport::Server::builder()
                    .add_service(RateLimitServiceServer::new(handler))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(err) = served {
                    eprintln!("ratelimit-service: {err}");
                }
            });
        });
        Ok(Self {
            port,
            calls,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The `ShouldRateLimit` calls answered so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The address to put in an Envoy cluster.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Handler {
    /// One check at a time: see the module documentation.
    limiter: Mutex<RateLimiter>,
    headers: HashMap<String, Headers>,
    calls: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl RateLimitService for Handler {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        if request.domain.is_empty() {
            return Err(Status::invalid_argument("empty domain"));
        }
        let namespace = Namespace::from(request.domain.as_str());
        let hits = u64::from(request.hits_addend.max(1));
        let descriptors: Vec<HashMap<String, String>> = request
            .descriptors
            .iter()
            .map(|descriptor| {
                descriptor
                    .entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.clone()))
                    .collect()
            })
            .collect();
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_string(), descriptors);
        let mut result = self
            .limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check_rate_limited_and_update(&namespace, &ctx, hits)
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        // The tightest counter speaks for the descriptors.
        let tightest = result
            .counters
            .iter()
            .min_by_key(|counter| counter.remaining().unwrap_or(counter.max_value()));
        let statuses = request
            .descriptors
            .iter()
            .map(|_| status(code, tightest))
            .collect();
        let mut response = RateLimitResponse {
            overall_code: code as i32,
            statuses,
            ..RateLimitResponse::default()
        };
        if let Some(headers) = self.headers.get(&request.domain) {
            if headers.draft_03 {
                // As Limitador's server does; sorted for a stable order.
                let mut draft: Vec<(String, String)> =
                    result.response_header().into_iter().collect();
                draft.sort();
                response
                    .response_headers_to_add
                    .extend(draft.iter().map(|(name, value)| header(name, value)));
            }
            response.response_headers_to_add.extend(
                headers
                    .response
                    .iter()
                    .map(|(name, value)| header(name, value)),
            );
            response.request_headers_to_add.extend(
                headers
                    .request
                    .iter()
                    .map(|(name, value)| header(name, value)),
            );
        }
        Ok(Response::new(response))
    }
}

fn header(name: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: name.to_string(),
        value: value.to_string(),
        ..HeaderValue::default()
    }
}

fn status(code: Code, counter: Option<&Counter>) -> DescriptorStatus {
    let Some(counter) = counter else {
        return DescriptorStatus {
            code: code as i32,
            ..DescriptorStatus::default()
        };
    };
    let seconds = counter.limit().seconds();
    let (unit, per_unit) = match seconds {
        1 => (Unit::Second, 1),
        60 => (Unit::Minute, 1),
        3600 => (Unit::Hour, 1),
        86400 => (Unit::Day, 1),
        _ => (Unit::Second, seconds.max(1)),
    };
    let requests_per_unit = u32::try_from(counter.max_value() / per_unit).unwrap_or(u32::MAX);
    let reset = counter.expires_in().unwrap_or(counter.window());
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(RateLimit {
            name: counter.limit().name().unwrap_or_default().to_string(),
            requests_per_unit,
            unit: unit as i32,
        }),
        limit_remaining: u32::try_from(counter.remaining().unwrap_or(0)).unwrap_or(u32::MAX),
        duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: i64::try_from(reset.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(reset.subsec_nanos()).unwrap_or(0),
        }),
        ..DescriptorStatus::default()
    }
}
