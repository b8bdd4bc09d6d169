//! Prometheus metrics, served on `GET /metrics` of the HTTP listener. All
//! series are named `sigil_*`. Counters and histograms are recorded where
//! things happen (the gRPC layer, the group commit); gauges are read from
//! the domain core when the page is scraped.

use std::{
    sync::LazyLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::domain::Identity;

/// Labels of a gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`.
    pub method: String,
    /// gRPC status code name, e.g. `OK`, `UNAUTHENTICATED`.
    pub code: String,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `/package.Service/Method`.
    pub method: String,
}

/// Labels of an outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened, e.g. `valid`, `expired`, `session_revoked`.
    pub outcome: String,
}

/// Every Sigil metric.
pub struct Metrics {
    registry: Registry,
    /// gRPC calls by method and status code.
    pub rpcs: Family<RpcLabels, Counter>,
    /// gRPC call latency by method, in seconds.
    pub rpc_seconds: Family<MethodLabels, Histogram>,
    /// `Validate` verdicts by outcome (`valid` or the failure).
    pub validations: Family<OutcomeLabels, Counter>,
    /// Logins by outcome (`ok`, `invalid_credentials`, `locked`, ...).
    pub logins: Family<OutcomeLabels, Counter>,
    /// Group-commit flush latency, in seconds.
    pub flush_seconds: Histogram,
    /// Writers made durable by one flush.
    pub flush_batch: Histogram,
    active_sessions: Gauge,
    active_tokens: Gauge,
    revocation_entries: Gauge,
    watchers: Gauge,
}

/// The process-wide metrics (a registry is naturally one per process).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("sigil");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register("rpc_requests", "gRPC calls by method and status code", rpcs.clone());
        let rpc_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register("rpc_duration_seconds", "gRPC call latency by method", rpc_seconds.clone());
        let validations = Family::<OutcomeLabels, Counter>::default();
        registry.register("validations", "Validate verdicts by outcome", validations.clone());
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("logins", "Authenticate calls by outcome", logins.clone());
        let flush_seconds = latency_histogram();
        registry.register("store_flush_duration_seconds", "Group-commit flush latency", flush_seconds.clone());
        let flush_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("store_flush_batch_size", "Writers made durable by one flush", flush_batch.clone());
        let active_sessions = Gauge::default();
        registry.register("active_sessions", "Active sessions", active_sessions.clone());
        let active_tokens = Gauge::default();
        registry.register("active_tokens", "Active access and refresh tokens", active_tokens.clone());
        let revocation_entries = Gauge::default();
        registry.register(
            "revocation_index_entries",
            "Entries of the in-memory revocation index",
            revocation_entries.clone(),
        );
        let watchers = Gauge::default();
        registry.register("event_watchers", "Live WatchEvents streams", watchers.clone());
        Self {
            registry,
            rpcs,
            rpc_seconds,
            validations,
            logins,
            flush_seconds,
            flush_batch,
            active_sessions,
            active_tokens,
            revocation_entries,
            watchers,
        }
    }

    /// Counts one outcome of a family.
    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    /// The exposition text, with the gauges read from `identity` now.
    pub async fn render(&self, identity: &Identity) -> String {
        if let Ok(stats) = identity.stats().await {
            self.active_sessions.set(i64::try_from(stats.active_sessions).unwrap_or(i64::MAX));
            self.active_tokens.set(i64::try_from(stats.active_tokens).unwrap_or(i64::MAX));
        }
        self.revocation_entries.set(identity.revocations().len() as i64);
        self.watchers.set(identity.events().watchers() as i64);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Tower layer counting every gRPC call by method and status, and timing it.
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the gRPC router.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // Errors of unary calls travel in the headers ("trailers-only");
            // a successful call's status is in the trailers, so no header
            // means OK for unary calls (streams count when they start).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Ok);
            record(&method, code, started.elapsed());
            Ok(response)
        })
    }
}

/// The span of one gRPC call: method and peer now, status when it ends.
/// Its events are at debug level (`SIGIL_LOG=debug`), since a line per call
/// at tens of thousands of calls per second is no log but a flood.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::debug_span!(
        "rpc",
        method = %request.uri().path(),
        peer = tracing::field::Empty,
        status = tracing::field::Empty
    );
    // Formatting the peer costs an allocation per call: only when the span
    // is recorded (debug logging), not on every call.
    if !span.is_disabled()
        && let Some(peer) =
            request.extensions().get::<tonic::transport::server::TcpConnectInfo>().and_then(|info| info.remote_addr())
    {
        span.record("peer", tracing::field::display(peer));
    }
    span
}

fn record(method: &str, code: tonic::Code, elapsed: Duration) {
    let span = tracing::Span::current();
    span.record("status", tracing::field::debug(code));
    tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "rpc finished");
    let code = format!("{code:?}");
    METRICS.rpcs.get_or_create(&RpcLabels { method: method.to_string(), code }).inc();
    METRICS.rpc_seconds.get_or_create(&MethodLabels { method: method.to_string() }).observe(elapsed.as_secs_f64());
}
