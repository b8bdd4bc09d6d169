//! Prometheus metrics, served on `GET /metrics` of the HTTP listener. All
//! series are named `sigil_*`. Counters and histograms are recorded where
//! things happen (the gRPC layer, the group commit); gauges are read from
//! the domain core when the page is scraped.
//!
//! A caller's bytes never become a label: every label value is one of a
//! closed set fixed by the code (`&'static str`, see [`LabelValue`]), so no
//! request can add a series, and values are escaped on the way out all the
//! same. The method label is a method this server serves, read once from the
//! descriptor sets of its services, or `unknown` for any other path.

use std::{
    collections::BTreeSet,
    sync::LazyLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use prost::Message as _;

use crate::domain::{DomainError, Identity};

/// A label value from a closed set the code fixes; escaped when encoded
/// (`prometheus-client` writes label values verbatim).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct LabelValue(&'static str);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        write_escaped(encoder, self.0)
    }
}

/// Writes `value` as the exposition format wants a label value: `\`, `"`
/// and newline escaped.
fn write_escaped(out: &mut impl std::fmt::Write, value: &str) -> std::fmt::Result {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..at])?;
        out.write_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)
}

/// The method label of any path the server does not serve.
pub(crate) const UNKNOWN_METHOD: &str = "unknown";

/// Every `/package.Service/Method` this server serves: Sigil's services,
/// health, and reflection (v1 and v1alpha), read from their descriptor sets.
static KNOWN_METHODS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    let sets = [
        sigil_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = BTreeSet::new();
    for bytes in sets {
        // The sets are compiled in; one that does not decode is a build
        // defect, which the unit test below catches.
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else { continue };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    let name = method.name.unwrap_or_default();
                    let qualified =
                        if package.is_empty() { service_name.clone() } else { format!("{package}.{service_name}") };
                    methods.insert(format!("/{qualified}/{name}"));
                }
            }
        }
    }
    // Envoy's ext_authz types ship no descriptor set: its one method by name.
    methods.insert(EXT_AUTHZ_CHECK.to_string());
    methods
});

/// The path of Envoy's ext_authz `Check`, served on the gRPC port.
const EXT_AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The method label of a request path: the path itself when the server
/// serves that method, else [`UNKNOWN_METHOD`].
pub(crate) fn method_label(path: &str) -> LabelValue {
    LabelValue(KNOWN_METHODS.get(path).map_or(UNKNOWN_METHOD, String::as_str))
}

/// The label of a gRPC status code (its name, as `tonic::Code`'s `Debug`).
fn code_label(code: tonic::Code) -> LabelValue {
    use tonic::Code;
    LabelValue(match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    })
}

/// Labels of a gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    /// `/package.Service/Method` of a served method, or `unknown`.
    pub method: LabelValue,
    /// gRPC status code name, e.g. `Ok`, `Unauthenticated`.
    pub code: LabelValue,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    /// `/package.Service/Method` of a served method, or `unknown`.
    pub method: LabelValue,
}

/// Labels of an outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    /// What happened, e.g. `valid`, `expired`, `session_revoked`.
    pub outcome: LabelValue,
}

/// Labels of a gateway check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GatewayLabels {
    /// Which adapter asked: `ext_authz` or `forward_auth`.
    pub via: LabelValue,
    /// `allowed`, or why not (see `gateway::outcome`).
    pub outcome: LabelValue,
}

/// The `outcome` label of `sigil_logins_total`: every value the counter
/// can carry, in one list that the code counts with and the docs name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// Logged in.
    Ok,
    /// Wrong password, unknown user or disabled user (one answer for all).
    InvalidCredentials,
    /// Refused before the password was checked (`RESOURCE_EXHAUSTED`): the
    /// account is locked, the client address blocked, too many of the
    /// account's logins are in flight, or password hashing is saturated.
    RefusedBusyOrLocked,
    /// An empty or oversized field.
    InvalidArgument,
    /// Anything else, e.g. the store failed.
    Error,
}

impl LoginOutcome {
    /// Every outcome, in the order the README lists them (for the test
    /// that holds the README to this list).
    #[cfg(test)]
    pub(crate) const ALL: [Self; 5] =
        [Self::Ok, Self::InvalidCredentials, Self::RefusedBusyOrLocked, Self::InvalidArgument, Self::Error];

    /// The outcome of an `Authenticate` call that answered `result`.
    pub(crate) fn of<T>(result: &Result<T, DomainError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(DomainError::InvalidCredentials) => Self::InvalidCredentials,
            Err(DomainError::ResourceExhausted { .. }) => Self::RefusedBusyOrLocked,
            Err(DomainError::InvalidArgument(_)) => Self::InvalidArgument,
            Err(_) => Self::Error,
        }
    }

    /// The label value, as `/metrics` shows it.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RefusedBusyOrLocked => "refused_busy_or_locked",
            Self::InvalidArgument => "invalid_argument",
            Self::Error => "error",
        }
    }
}

/// Every Sigil metric.
pub(crate) struct Metrics {
    registry: Registry,
    /// gRPC calls by method and status code.
    pub rpcs: Family<RpcLabels, Counter>,
    /// gRPC call latency by method, in seconds.
    pub rpc_seconds: Family<MethodLabels, Histogram>,
    /// `Validate` verdicts by outcome (`valid` or the failure).
    pub validations: Family<OutcomeLabels, Counter>,
    /// Logins by outcome: a [`LoginOutcome`]'s label.
    pub logins: Family<OutcomeLabels, Counter>,
    /// Gateway checks (ext_authz, /authz) by adapter and outcome.
    pub gateway_checks: Family<GatewayLabels, Counter>,
    /// Group-commit flush latency, in seconds.
    pub flush_seconds: Histogram,
    /// Writers made durable by one flush.
    pub flush_batch: Histogram,
    active_sessions: Gauge,
    active_tokens: Gauge,
    revocation_entries: Gauge,
    watchers: Gauge,
    /// Revocation-log entries sent on revocation streams.
    pub revocation_entries_sent: Counter,
    /// Revocation streams ended because the subscriber fell behind: the
    /// domain counts them when it happens, and the counter follows its
    /// total at each scrape (one identity core per process).
    revocation_streams_aborted: Counter,
    revocation_streams: Gauge,
}

/// The process-wide metrics (a registry is naturally one per process).
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

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
        let gateway_checks = Family::<GatewayLabels, Counter>::default();
        registry.register(
            "gateway_checks",
            "Gateway checks (Envoy ext_authz, forward-auth /authz) by adapter and outcome",
            gateway_checks.clone(),
        );
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
        let revocation_entries_sent = Counter::default();
        registry.register(
            "revocation_entries_sent",
            "Revocation-log entries sent on WatchRevocations streams",
            revocation_entries_sent.clone(),
        );
        let revocation_streams_aborted = Counter::default();
        registry.register(
            "revocation_streams_aborted",
            "WatchRevocations streams ended with ABORTED because the subscriber fell behind",
            revocation_streams_aborted.clone(),
        );
        let revocation_streams = Gauge::default();
        registry.register("revocation_streams", "Open WatchRevocations streams", revocation_streams.clone());
        Self {
            registry,
            rpcs,
            rpc_seconds,
            validations,
            logins,
            gateway_checks,
            flush_seconds,
            flush_batch,
            active_sessions,
            active_tokens,
            revocation_entries,
            watchers,
            revocation_entries_sent,
            revocation_streams_aborted,
            revocation_streams,
        }
    }

    /// Counts one outcome of a family. Outcomes are names the code fixes
    /// (`'static`), never text from a request.
    pub(crate) fn count(family: &Family<OutcomeLabels, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabels { outcome: LabelValue(outcome) }).inc();
    }

    /// Counts one gateway check; both labels are names the code fixes.
    pub(crate) fn count_gateway_check(&self, via: &'static str, outcome: &'static str) {
        self.gateway_checks.get_or_create(&GatewayLabels { via: LabelValue(via), outcome: LabelValue(outcome) }).inc();
    }

    /// The exposition text, with the gauges read from `identity` now.
    pub(crate) async fn render(&self, identity: &Identity) -> String {
        if let Ok(stats) = identity.stats().await {
            self.active_sessions.set(i64::try_from(stats.active_sessions).unwrap_or(i64::MAX));
            self.active_tokens.set(i64::try_from(stats.active_tokens).unwrap_or(i64::MAX));
        }
        self.revocation_entries.set(identity.revocations().len() as i64);
        self.watchers.set(identity.events().watchers() as i64);
        self.revocation_streams.set(i64::try_from(identity.revocation_streams()).unwrap_or(i64::MAX));
        let aborted = identity.revocation_streams_aborted();
        let counted = self.revocation_streams_aborted.get();
        if aborted > counted {
            self.revocation_streams_aborted.inc_by(aborted - counted);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Tower layer counting every gRPC call by method and status, and timing it.
#[derive(Clone, Copy, Default)]
pub(crate) struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the gRPC router.
#[derive(Clone)]
pub(crate) struct RpcMetrics<S> {
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
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // Errors of unary calls travel in the headers ("trailers-only");
            // a successful call's status is in the trailers, so no header
            // means `Ok` for unary calls (streams count when they start).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Ok);
            record(method, code, started.elapsed());
            Ok(response)
        })
    }
}

/// The span of one gRPC call: method and peer now, status when it ends.
/// Its events are at debug level (`SIGIL_LOG=debug`), since a line per call
/// at tens of thousands of calls per second is no log but a flood. The
/// method is the metric's label (a served method or `unknown`): the raw
/// path is a caller's bytes and would reach the log unescaped.
pub(crate) fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::debug_span!(
        "rpc",
        method = method_label(request.uri().path()).0,
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

fn record(method: LabelValue, code: tonic::Code, elapsed: Duration) {
    let span = tracing::Span::current();
    span.record("status", tracing::field::debug(code));
    tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "rpc finished");
    METRICS.rpcs.get_or_create(&RpcLabels { method, code: code_label(code) }).inc();
    METRICS.rpc_seconds.get_or_create(&MethodLabels { method }).observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_service_is_known_and_nothing_else() {
        for method in [
            "/sigil.v1.IdentityService/Validate",
            "/sigil.v1.AdminService/WatchEvents",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/envoy.service.auth.v3.Authorization/Check",
        ] {
            assert_eq!(method_label(method).0, method);
        }
        for path in ["/", "/sigil.v1.IdentityService/Validate/", "/sigil.v1.IdentityService/validate", "/x\\y"] {
            assert_eq!(method_label(path).0, UNKNOWN_METHOD, "{path:?}");
        }
    }

    /// The login outcomes keep their labels (dashboards count on them), and
    /// the README's /metrics section names every one, and the status code
    /// label as the code writes it.
    #[test]
    fn login_outcomes_are_the_labels_the_readme_names() {
        let of = |result: Result<(), DomainError>| LoginOutcome::of(&result).label();
        assert_eq!(of(Ok(())), "ok");
        assert_eq!(of(Err(DomainError::InvalidCredentials)), "invalid_credentials");
        let busy = DomainError::ResourceExhausted { message: "busy".into(), retry_after: None };
        assert_eq!(of(Err(busy)), "refused_busy_or_locked");
        assert_eq!(of(Err(DomainError::InvalidArgument("username is empty".into()))), "invalid_argument");
        assert_eq!(of(Err(DomainError::internal("bug"))), "error");
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README");
        let metrics = readme.split("`/metrics` is Prometheus").nth(1).expect("the /metrics section");
        let metrics = metrics.split("\n\n").next().unwrap_or_default();
        for outcome in LoginOutcome::ALL {
            assert!(metrics.contains(&format!("`{}`", outcome.label())), "README /metrics lacks {outcome:?}");
        }
        assert!(metrics.contains(&format!("`{}`", code_label(tonic::Code::Ok).0)), "README /metrics: the code label");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        write_escaped(&mut out, "a\\b\"c\nd").expect("write");
        assert_eq!(out, r#"a\\b\"c\nd"#);
    }
}
