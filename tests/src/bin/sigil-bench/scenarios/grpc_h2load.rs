//! h2load (only with `--only h2load`): Sigil's unary calls driven by an
//! external load generator, so that the two shared cores go to the server
//! and not to a Rust client's protobuf and HTTP/2 work. Every request is a
//! prepared length-prefixed body (`h2load -d`) over h2c; the load shape is
//! the same for every call (4 connections × 32 streams), the runs
//! alternate, and each figure is the median of three runs:
//!
//! - `Validate` of a cached token ÷ the bare `grpc.health.v1.Health/Check`
//!   (issue 18: ≥ 0.9), closed loop, by rate and by the server's CPU time
//!   per call; then both open loop at half `Validate`'s max rate, p50 and
//!   p99 (target: `Validate` p99 ≤ 2 ms), twice: from h2load `--rps`, and
//!   from this bench's own open-loop client (latency from each request's
//!   scheduled send time), whose p99 is the one the target is judged by;
//! - Envoy's ext_authz `Check` sent straight to Sigil, with the headers
//!   Envoy forwards, against a do-nothing allow-all `Check` server at the
//!   same rate (half Sigil's max): the latency Sigil's decision adds per
//!   request, without Envoy in the path (issue 14: p50 ≤ 0.3 ms).
//!
//! Fair shape on two cores: `taskset -c 1 sigil-bench --server-cpus 0
//! --only h2load` gives the server one core and h2load (and this bench's
//! client) the other, for both calls of every pair. Unpinned, h2load's own
//! work (a `Validate` request carries the ~500-byte token, its answer the
//! claims) competes with the server for the same cores.
//!
//! h2load's `--rps` is not a smooth arrival process: each client's timer
//! ticks at most every 10 ms and sends what came due, and the clients'
//! ticks line up, so requests arrive in bursts of about rate / 100 (up to
//! ~200 in one millisecond at 20,000/s). A burst of 200 calls takes ~2 ms
//! of one core to drain, so its p99 is mostly the generator's burst, for
//! both calls alike; it is printed beside the paced client's for comparison.
//! With `--server-cpus`, the ext_authz comparison is not like for like: the
//! allow-all server runs in this bench, on h2load's core.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest,
    attribute_context::{HttpRequest, Request},
};
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{
    Bench, Scenario,
    open_loop::{OpenLoopCall, open_loop},
};
use crate::{
    allow_all::AllowAllServer,
    figures::Figures,
    h2load::{self, Arrivals, Run, Shape, h2load_grpc},
    target::Target,
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
    let closed = Shape { connections, streams, http1: false, duration, arrivals: Arrivals::Closed };
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

    let target = bench.target;
    let (mut health_rates, mut validate_rates) = (Vec::new(), Vec::new());
    let (mut health_cpu, mut validate_cpu) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (health_run, cpu) =
            closed_run_cpu("health Check (bare)", target, addr, HEALTH_CHECK, &health, closed).await?;
        health_rates.push(health_run.rate);
        health_cpu.extend(cpu);
        let (validate_run, cpu) =
            closed_run_cpu("Validate (cached token)", target, addr, VALIDATE, &validate, closed).await?;
        validate_rates.push(validate_run.rate);
        validate_cpu.extend(cpu);
    }
    let ratios: Vec<f64> = validate_rates.iter().zip(&health_rates).map(|(v, h)| v / h).collect();
    let ratio = median(ratios.clone());
    println!(
        "h2load: Validate ÷ health Check = {ratio:.3} (median; runs {}) (target ≥ {RATIO_TARGET}: {})",
        listed(&ratios),
        verdict(ratio >= RATIO_TARGET)
    );
    // The same ratio from the server's CPU time per call (health's ÷
    // Validate's): what the server spends, whatever else the machine runs.
    if health_cpu.len() == ROUNDS && validate_cpu.len() == ROUNDS {
        let by_cpu: Vec<f64> = health_cpu.iter().zip(&validate_cpu).map(|(h, v)| h / v).collect();
        println!(
            "h2load: by server CPU per call, health ÷ Validate = {:.3} (median; runs {}; µs/call health {}, Validate {})",
            median(by_cpu.clone()),
            listed(&by_cpu),
            listed(&health_cpu),
            listed(&validate_cpu)
        );
    }

    let half = (median(validate_rates) / 2.0) as u64;
    let open = Shape { arrivals: Arrivals::Bursts { rate: half }, ..closed };
    println!(
        "h2load: open loop at half Validate's max rate, {half} req/s (h2load --rps: bursts of ~{} requests every 10 ms)",
        half / 100
    );
    let mut validate_p99 = Vec::new();
    for _ in 0..ROUNDS {
        latency_run("health Check (bare)", addr, HEALTH_CHECK, &health, open).await?;
        validate_p99
            .push(latency_run("Validate (cached token)", addr, VALIDATE, &validate, open).await?.latency_ms(0.99));
    }
    println!("h2load: Validate p99 at {half} req/s from h2load --rps = {:.3} ms (median)", median(validate_p99));

    println!(
        "h2load: open loop at {half} req/s from this bench's client, paced every ~50 µs, latency from the scheduled send time"
    );
    let hot = Arc::new(token.clone());
    let (mut health_p99, mut validate_p99) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let health = open_loop(target, bench.chans, half, duration, OpenLoopCall::Health).await;
        let validate = open_loop(target, bench.chans, half, duration, OpenLoopCall::Validate(hot.clone())).await;
        anyhow::ensure!(
            health.errors == 0 && validate.errors == 0,
            "open loop at {half} req/s: {} health and {} Validate calls failed",
            health.errors,
            validate.errors
        );
        health_p99.push(health.latency.value_at_quantile(0.99) as f64 / 1e6);
        validate_p99.push(validate.latency.value_at_quantile(0.99) as f64 / 1e6);
    }
    let p99 = median(validate_p99.clone());
    println!(
        "h2load: Validate p99 at {half} req/s = {p99:.3} ms (median; runs {}) (target ≤ {VALIDATE_P99_TARGET_MS} ms: {}); health Check p99 beside it {:.3} ms (median; runs {})",
        listed(&validate_p99),
        verdict(p99 <= VALIDATE_P99_TARGET_MS),
        median(health_p99.clone()),
        listed(&health_p99)
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
    let open = Shape { arrivals: Arrivals::Bursts { rate: half }, ..closed };
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

/// A closed-loop run and the server's CPU time per answered call, in µs
/// (when this bench started the server).
async fn closed_run_cpu(
    name: &str,
    target: &Target,
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
    shape: Shape,
) -> anyhow::Result<(Run, Option<f64>)> {
    let before = target.cpu();
    let run = h2load_grpc(addr, path, message, shape).await?;
    let cpu =
        before.zip(target.cpu()).map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e6 / run.succeeded.max(1) as f64);
    let shown = cpu.map(|us| format!(", server {us:.1} µs CPU/call")).unwrap_or_default();
    println!("  {name:<28} {:>9.0} req/s ({} missed{shown})", run.rate, run.missed);
    Ok((run, cpu))
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
