//! gateways (only with `--only gateways`): the real proxies from `deploy/`
//! in front of the echo upstream, driven by h2load, each figure next to its
//! reference measured in the same run with the same load shape:
//!
//! - Envoy + Sigil ext_authz vs Envoy + a do-nothing allow-all ext_authz
//!   server (the baseline: a bare OK) vs Envoy + allow-all
//!   answering Sigil's own OK, header mutations and all (replayed) vs Envoy
//!   alone (the same template without the `ext_authz` filter), req/s, and
//!   the CPU split (Envoy, Sigil, upstream) of each;
//! - the latency Envoy ext_authz adds per request at half Sigil's max rate,
//!   p50 and p99, against both allow-alls and against Envoy alone;
//! - nginx `auth_request` + Sigil vs nginx alone (the same template without
//!   `auth_request`), req/s, over HTTP/1.1 (no h2c listener).

use std::time::{Duration, Instant};

use sigil_tests::proxies::{EchoUpstream, ProxyKind, ProxyPorts, RunningProxy, free_port};

use super::{Bench, Scenario};
use crate::{
    allow_all::AllowAllServer,
    figures::Figures,
    h2load::{Run, Shape, h2load},
    target::process_cpu,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("gateways"), run: |bench| Box::pin(run(bench)) };

/// The longest one h2load run takes: eight runs keep the scenario within a minute.
const RUN_LIMIT: Duration = Duration::from_secs(5);
/// The closed-loop shape through Envoy (h2c): 4 connections × 32 streams.
const ENVOY_SHAPE: (usize, usize) = (4, 32);
/// nginx speaks HTTP/1.1 here: 32 connections, one request at a time each.
const NGINX_CONNECTIONS: usize = 32;
/// The row of the allow-all server that answers Sigil's own OK, headers and all.
const REPLAY: &str = "Envoy + allow-all + headers";
/// The targets.
const RATIO_TARGET: f64 = 0.85;
const ADDED_P50_TARGET_MS: f64 = 0.3;
const ADDED_P99_TARGET_MS: f64 = 2.0;

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let (Some(envoy), Some(nginx)) = (ProxyKind::Envoy.locate(), ProxyKind::Nginx.locate()) else {
        anyhow::bail!("gateways needs Envoy and nginx (SIGIL_ENVOY / SIGIL_NGINX or PATH)");
    };
    anyhow::ensure!(crate::h2load::installed(), "gateways needs h2load (Debian: nghttp2-client)");
    let sigil_grpc = bench.target.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    let (Some(sigil_grpc), Some(sigil_http)) = (sigil_grpc, bench.target.http_addr) else {
        anyhow::bail!("gateways needs a Sigil this run started (not --server)");
    };
    let duration = bench.duration.min(RUN_LIMIT);
    let token = &bench.session.access_token;
    let upstream = EchoUpstream::start().await;
    let allow_all = AllowAllServer::start().await?;
    let replay = AllowAllServer::replaying(bench.chans[0].clone(), token).await?;
    let ports = |authorizer_grpc: u16| ProxyPorts {
        listen: free_port(),
        sigil_grpc: authorizer_grpc,
        sigil_http: sigil_http.port(),
        upstream: upstream.addr.port(),
    };
    let envoy_sigil = ProxyKind::Envoy.start(&envoy, ports(sigil_grpc)).await;
    let envoy_allow = ProxyKind::Envoy.start(&envoy, ports(allow_all.addr.port())).await;
    let envoy_replay = ProxyKind::Envoy.start(&envoy, ports(replay.addr.port())).await;
    let envoy_alone = ProxyKind::Envoy.start_edited(&envoy, ports(sigil_grpc), without_ext_authz).await;
    let nginx_sigil = ProxyKind::Nginx.start(&nginx, ports(sigil_grpc)).await;
    let nginx_alone = ProxyKind::Nginx.start_edited(&nginx, ports(sigil_grpc), without_auth_request).await;

    let (connections, streams) = ENVOY_SHAPE;
    let closed = Shape { connections, streams, http1: false, duration, rate: None };
    println!(
        "gateways: h2load -c {connections} -m {streams} -D {} -H 'authorization: Bearer …' to the echo upstream",
        duration.as_secs()
    );
    let sigil = measured("Envoy + Sigil ext_authz", &envoy_sigil, Some(bench), token, closed).await?;
    let allow = measured("Envoy + allow-all ext_authz", &envoy_allow, None, token, closed).await?;
    let replayed = measured(REPLAY, &envoy_replay, None, token, closed).await?;
    let alone = measured("Envoy alone", &envoy_alone, None, token, closed).await?;
    let ratio = sigil.rate / allow.rate;
    println!(
        "gateways: Sigil ÷ allow-all (bare OK, the issue's baseline) = {ratio:.2} (target ≥ {RATIO_TARGET}: {}); Sigil ÷ Envoy alone = {:.2}; allow-all ÷ Envoy alone = {:.2}",
        verdict(ratio >= RATIO_TARGET),
        sigil.rate / alone.rate,
        allow.rate / alone.rate
    );
    println!(
        "gateways: Sigil ÷ allow-all answering Sigil's headers = {:.2} (not the issue's baseline); that allow-all ÷ bare allow-all = {:.2}",
        sigil.rate / replayed.rate,
        replayed.rate / allow.rate
    );

    let half = (sigil.rate / 2.0) as u64;
    let open = Shape { rate: Some(half), ..closed };
    println!("gateways: latency at half Sigil's max rate, {half} req/s (h2load --rps, per-request log)");
    let sigil_lat = latency("Envoy + Sigil ext_authz", &envoy_sigil, token, open).await?;
    let allow_lat = latency("Envoy + allow-all ext_authz", &envoy_allow, token, open).await?;
    let replay_lat = latency(REPLAY, &envoy_replay, token, open).await?;
    let alone_lat = latency("Envoy alone", &envoy_alone, token, open).await?;
    let references = [
        (&allow_lat, "allow-all (bare OK, the issue's baseline)"),
        (&replay_lat, "allow-all answering Sigil's headers"),
        (&alone_lat, "Envoy alone"),
    ];
    for (reference, name) in references {
        let p50 = sigil_lat.latency_ms(0.5) - reference.latency_ms(0.5);
        let p99 = sigil_lat.latency_ms(0.99) - reference.latency_ms(0.99);
        println!(
            "gateways: added by Sigil vs {name}: p50 {p50:+.3} ms (target ≤ {ADDED_P50_TARGET_MS}: {}), p99 {p99:+.3} ms (target ≤ {ADDED_P99_TARGET_MS}: {})",
            verdict(p50 <= ADDED_P50_TARGET_MS),
            verdict(p99 <= ADDED_P99_TARGET_MS)
        );
    }

    let http1 = Shape { connections: NGINX_CONNECTIONS, streams: 1, http1: true, duration, rate: None };
    println!("gateways: nginx, h2load -p http/1.1 -c {NGINX_CONNECTIONS} -m 1 -D {}", duration.as_secs());
    let nginx_with = measured("nginx auth_request + Sigil", &nginx_sigil, Some(bench), token, http1).await?;
    let nginx_without = measured("nginx alone", &nginx_alone, None, token, http1).await?;
    println!("gateways: nginx + Sigil ÷ nginx alone = {:.2}", nginx_with.rate / nginx_without.rate);
    drop((allow_all, replay));
    Ok(Vec::new())
}

/// One closed-loop run through `proxy`, printed with its CPU split: the
/// proxy, Sigil (when `sigil` is behind it) and this process (the echo
/// upstream, and the allow-all server when it is the authorizer).
async fn measured(
    name: &str,
    proxy: &RunningProxy,
    sigil: Option<&Bench<'_>>,
    token: &str,
    shape: Shape,
) -> anyhow::Result<Run> {
    let cpu =
        || (proxy.pid().and_then(process_cpu), sigil.and_then(|b| b.target.cpu()), process_cpu(std::process::id()));
    let syscalls = || proxy.pid().and_then(process_syscalls);
    let (before, syscalls_before) = (cpu(), syscalls());
    let started = Instant::now();
    let run = h2load(proxy.addr, token, shape).await?;
    let (elapsed, after, syscalls_after) = (started.elapsed(), cpu(), syscalls());
    let share = |b: Option<Duration>, a: Option<Duration>| match (b, a) {
        (Some(b), Some(a)) => format!("{:.0}%", (a - b).as_secs_f64() / elapsed.as_secs_f64() * 100.0),
        _ => "-".to_string(),
    };
    println!(
        "  {name:<28} {:>9.0} req/s ({} missed)   CPU of one core: proxy {}, Sigil {}, upstream (this process) {}",
        run.rate,
        run.missed,
        share(before.0, after.0),
        share(before.1, after.1),
        share(before.2, after.2)
    );
    // What each request cost the proxy: its CPU time and its socket reads
    // and writes (fewer, larger reads when an answer arrives in one piece).
    let requests = (run.succeeded + run.missed).max(1) as f64;
    if let (Some(b), Some(a), Some(sb), Some(sa)) = (before.0, after.0, syscalls_before, syscalls_after) {
        println!(
            "  {:<28} proxy per request: {:.1} µs CPU, {:.2} read/write syscalls",
            "",
            (a - b).as_secs_f64() * 1e6 / requests,
            (sa - sb) as f64 / requests
        );
    }
    Ok(run)
}

/// Read and write system calls of process `pid` so far, all its threads
/// (`syscr` + `syscw` of `/proc/<pid>/io`; Envoy's sockets use readv/writev).
fn process_syscalls(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| io.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
    Some(field("syscr:")? + field("syscw:")?)
}

/// One open-loop run through `proxy`, printed with its percentiles.
async fn latency(name: &str, proxy: &RunningProxy, token: &str, shape: Shape) -> anyhow::Result<Run> {
    let run = h2load(proxy.addr, token, shape).await?;
    run.print_latency(name);
    Ok(run)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Envoy's configuration without the `ext_authz` filter and the route's
/// per-filter settings for it: Envoy alone, everything else identical.
pub(super) fn without_ext_authz(config: &str) -> String {
    let edited = without_yaml_nodes(config, &["- name: envoy.filters.http.ext_authz", "typed_per_filter_config:"]);
    assert!(!edited.contains("ext_authz.v3.ExtAuthz"), "deploy/envoy/envoy.yaml changed shape:\n{edited}");
    edited
}

/// Drops every YAML node whose first line starts (after its indentation)
/// with one of `heads`, with the more deeply indented lines under it.
fn without_yaml_nodes(config: &str, heads: &[&str]) -> String {
    let mut kept = String::new();
    let mut dropping_under: Option<usize> = None;
    for line in config.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(node) = dropping_under {
            if line.trim().is_empty() || indent > node {
                continue;
            }
            dropping_under = None;
        }
        if heads.iter().any(|head| line.trim_start().starts_with(head)) {
            dropping_under = Some(indent);
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// nginx's configuration without its `auth_request` lines: nginx alone.
fn without_auth_request(config: &str) -> String {
    let edited: String = config
        .lines()
        .filter(|line| !line.trim_start().starts_with("auth_request "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(edited.len() < config.len(), "deploy/nginx/nginx.conf has no auth_request line");
    edited
}
