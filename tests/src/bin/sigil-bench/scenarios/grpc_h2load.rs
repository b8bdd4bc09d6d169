//! h2load (only with `--only h2load`): Sigil's unary calls driven by an
//! external load generator, so that the two shared cores go to the server
//! and not to a Rust client's protobuf and HTTP/2 work. Every request is a
//! prepared length-prefixed body (`h2load -d`) over h2c; the load shape is
//! the same for every call (4 connections × 32 streams), the runs
//! alternate, and each figure is the median of three runs:
//!
//! - `Validate` of a cached token ÷ the bare `grpc.health.v1.Health/Check`
//!   (issue 18: ≥ 0.9), closed loop; then both open loop at half
//!   `Validate`'s max rate, p50 and p99 (target: `Validate` p99 ≤ 2 ms);
//! - Envoy's ext_authz `Check` sent straight to Sigil, with the headers
//!   Envoy forwards, against a do-nothing allow-all `Check` server at the
//!   same rate (half Sigil's max): the latency Sigil's decision adds per
//!   request, without Envoy in the path (issue 14: p50 ≤ 0.3 ms).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest,
    attribute_context::{HttpRequest, Request},
};
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{Bench, Scenario};
use crate::{
    allow_all::AllowAllServer,
    figures::Figures,
    h2load::{self, Run, Shape, h2load_grpc},
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("h2load"), run: |bench| Box::pin(run(bench)) };

/// The load shape: 4 connections × 32 streams.
const SHAPE: (usize, usize) = (4, 32);
/// Runs per figure (its median is reported).
const ROUNDS: usize = 3;
/// The longest one h2load run takes.
const RUN_LIMIT: Duration = Duration::from_secs(5);
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const VALIDATE: &str = "/sigil.v1.IdentityService/Validate";
const EXT_AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The issues' targets.
const RATIO_TARGET: f64 = 0.9;
const VALIDATE_P99_TARGET_MS: f64 = 2.0;
const ADDED_P50_TARGET_MS: f64 = 0.3;

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    anyhow::ensure!(h2load::installed(), "h2load needs h2load (Debian: nghttp2-client)");
    let addr: SocketAddr = bench
        .target
        .address
        .trim_start_matches("http://")
        .parse()
        .map_err(|_| anyhow::anyhow!("h2load needs a plaintext host:port server, not {}", bench.target.address))?;
    let duration = bench.duration.min(RUN_LIMIT);
    let (connections, streams) = SHAPE;
    let closed = Shape { connections, streams, http1: false, duration, rate: None };
    let token = bench.session.access_token.clone();
    let validate = pb::ValidateRequest { token: token.clone(), audience: None };
    // h2load sees only HTTP 200: make sure the body is a valid token's.
    let answer = IdentityServiceClient::new(bench.chans[0].clone()).validate(validate.clone()).await?.into_inner();
    anyhow::ensure!(answer.valid, "the h2load Validate body is not a valid token: {answer:?}");
    let health = tonic_health::pb::HealthCheckRequest { service: String::new() };
    println!(
        "h2load: -c {connections} -m {streams} -D {} -d <body> straight to {addr}, {ROUNDS} alternating runs each",
        duration.as_secs()
    );

    let mut health_rates = Vec::new();
    let mut validate_rates = Vec::new();
    for _ in 0..ROUNDS {
        health_rates.push(closed_run("health Check (bare)", addr, HEALTH_CHECK, &health, closed).await?.rate);
        validate_rates.push(closed_run("Validate (cached token)", addr, VALIDATE, &validate, closed).await?.rate);
    }
    let ratios: Vec<f64> = validate_rates.iter().zip(&health_rates).map(|(v, h)| v / h).collect();
    let ratio = median(ratios.clone());
    println!(
        "h2load: Validate ÷ health Check = {ratio:.3} (median; runs {}) (target ≥ {RATIO_TARGET}: {})",
        listed(&ratios),
        verdict(ratio >= RATIO_TARGET)
    );

    let half = (median(validate_rates) / 2.0) as u64;
    let open = Shape { rate: Some(half), ..closed };
    println!("h2load: open loop at half Validate's max rate, {half} req/s (h2load --rps, per-request log)");
    let mut validate_p99 = Vec::new();
    for _ in 0..ROUNDS {
        latency_run("health Check (bare)", addr, HEALTH_CHECK, &health, open).await?;
        validate_p99
            .push(latency_run("Validate (cached token)", addr, VALIDATE, &validate, open).await?.latency_ms(0.99));
    }
    let p99 = median(validate_p99);
    println!(
        "h2load: Validate p99 at {half} req/s = {p99:.3} ms (median) (target ≤ {VALIDATE_P99_TARGET_MS} ms: {})",
        verdict(p99 <= VALIDATE_P99_TARGET_MS)
    );

    ext_authz(addr, &token, closed).await?;
    Ok(Vec::new())
}

/// Sigil's ext_authz `Check` straight from h2load vs the allow-all
/// server's, closed loop and then both at half Sigil's max rate.
async fn ext_authz(sigil: SocketAddr, token: &str, closed: Shape) -> anyhow::Result<()> {
    let allow_all = AllowAllServer::start().await?;
    let check = envoy_check(token);
    let mut sigil_rates = Vec::new();
    for _ in 0..ROUNDS {
        sigil_rates.push(closed_run("ext_authz Check, Sigil", sigil, EXT_AUTHZ_CHECK, &check, closed).await?.rate);
        closed_run("ext_authz Check, allow-all", allow_all.addr, EXT_AUTHZ_CHECK, &check, closed).await?;
    }
    let half = (median(sigil_rates) / 2.0) as u64;
    let open = Shape { rate: Some(half), ..closed };
    println!("h2load: ext_authz Check at half Sigil's max rate, {half} req/s");
    let (mut added_p50, mut added_p99) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let with = latency_run("ext_authz Check, Sigil", sigil, EXT_AUTHZ_CHECK, &check, open).await?;
        let without = latency_run("ext_authz Check, allow-all", allow_all.addr, EXT_AUTHZ_CHECK, &check, open).await?;
        added_p50.push(with.latency_ms(0.5) - without.latency_ms(0.5));
        added_p99.push(with.latency_ms(0.99) - without.latency_ms(0.99));
    }
    let p50 = median(added_p50.clone());
    println!(
        "h2load: Check latency Sigil adds vs allow-all: p50 {p50:+.3} ms (median; runs {}) (target ≤ {ADDED_P50_TARGET_MS}: {}), p99 {:+.3} ms (median; runs {})",
        listed(&added_p50),
        verdict(p50 <= ADDED_P50_TARGET_MS),
        median(added_p99.clone()),
        listed(&added_p99)
    );
    Ok(())
}

/// A `CheckRequest` as Envoy sends one for `GET /` with a bearer token
/// (the default route: no `context_extensions`); Envoy forwards every
/// request header, names in lower case, pseudo-headers included.
fn envoy_check(token: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "app.example"),
        (":method", "GET"),
        (":path", "/"),
        (":scheme", "http"),
        ("accept", "*/*"),
        ("user-agent", "h2load nghttp2/1.52.0"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5b1f4c1e-8c52-4c1e-9d4a-2b2f3f0e6a71"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([("authorization".to_string(), format!("Bearer {token}"))])
    .collect();
    let http = HttpRequest {
        id: "5b1f4c1e-8c52-4c1e-9d4a-2b2f3f0e6a71".into(),
        method: "GET".into(),
        headers,
        path: "/".into(),
        host: "app.example".into(),
        scheme: "http".into(),
        protocol: "HTTP/2".into(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

async fn closed_run(
    name: &str,
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
    shape: Shape,
) -> anyhow::Result<Run> {
    let run = h2load_grpc(addr, path, message, shape).await?;
    println!("  {name:<28} {:>9.0} req/s ({} missed)", run.rate, run.missed);
    Ok(run)
}

async fn latency_run(
    name: &str,
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
    shape: Shape,
) -> anyhow::Result<Run> {
    let run = h2load_grpc(addr, path, message, shape).await?;
    run.print_latency(name);
    Ok(run)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn listed(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", ")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
