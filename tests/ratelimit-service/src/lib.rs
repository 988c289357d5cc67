//! A test-only Envoy rate limit service: `envoy.service.ratelimit.v3.RateLimitService` (from the
//! `envoy-types` crate, served with tonic) in front of Limitador's rate limiter with its Redis
//! storage (`AsyncRedisStorage`: the counters live in Redis).
//!
//! Limitador's Redis storage checks the counters (one round trip) and then increments them
//! (another): two checks racing on the same counter can both see room for the last unit. This
//! service therefore runs one check at a time, so the counts it hands out are exact across every
//! Envoy that asks it (what the tests prove about the filter: it admits exactly what the service
//! allows). Several Limitador replicas on one Redis can overshoot by the checks in flight.
//!
//! The request maps to Limitador as Limitador's own server maps it: the `domain` is the
//! namespace, and the descriptors are bound as the CEL list `descriptors` (so a limit counts
//! per client with `variables: ["descriptors[0].remote_address"]`). Unlike Limitador's server,
//! the answer also carries one `DescriptorStatus` per descriptor (as envoyproxy/ratelimit sends
//! them): the limit with the least remaining, its `limit_remaining` and `duration_until_reset`.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use limitador::counter::Counter;
use limitador::limit::{Context, Limit, Namespace};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::AsyncRateLimiter;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tonic::{Request, Response, Status};

/// A running service; dropping it stops it.
pub struct Service {
    /// The loopback port the gRPC server (HTTP/2 cleartext) listens on.
    pub port: u16,
    calls: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts the service on a free loopback port with Redis at `redis_url` and `limits`, a JSON
    /// list of Limitador limits (`namespace`, `max_value`, `seconds`, `name`, `conditions`,
    /// `variables`: the format of Limitador's limits file).
    pub fn start(redis_url: &str, limits: &str) -> Result<Self, String> {
        let limits: Vec<Limit> =
            serde_json::from_str(limits).map_err(|err| format!("limits: {err}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|err| format!("runtime: {err}"))?;
        let (limiter, listener) = runtime.block_on(async {
            let storage = AsyncRedisStorage::new(redis_url)
                .await
                .map_err(|err| format!("redis {redis_url}: {err}"))?;
            let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
            for limit in limits {
                limiter.add_limit(limit);
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|err| format!("bind: {err}"))?;
            Ok::<_, String>((limiter, listener))
        })?;
        let port = listener
            .local_addr()
            .map_err(|err| format!("local_addr: {err}"))?
            .port();
        let calls = Arc::new(AtomicU64::new(0));
        let handler = Handler {
            limiter: Arc::new(tokio::sync::Mutex::new(limiter)),
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
    limiter: Arc<tokio::sync::Mutex<AsyncRateLimiter>>,
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
        let result = self
            .limiter
            .lock()
            .await
            .check_rate_limited_and_update(&namespace, &ctx, hits)
            .await
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
        Ok(Response::new(RateLimitResponse {
            overall_code: code as i32,
            statuses,
            ..RateLimitResponse::default()
        }))
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
