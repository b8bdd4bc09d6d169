//! gateways (only with `--only gateways`): the real proxies from `deploy/`
//! in front of the echo upstream, driven by h2load, each figure next to its
//! reference measured in the same run with the same load shape:
//!
//! - Envoy + Sigil ext_authz vs Envoy + a do-nothing allow-all ext_authz
//!   server (the baseline: a bare OK) vs Envoy + allow-all
//!   answering Sigil's own OK, header mutations and all (replayed) vs Envoy
//!   alone (the same template without the `ext_authz` filter), req/s, and
//!   the CPU split (Envoy, the authorizer, upstream) of each; the allow-alls
//!   run in processes of their own, as Sigil does;
//! - the latency Sigil's ext_authz adds per request at half Sigil's max
//!   rate (the figure) and at a quarter, p50 and p99, against both
//!   allow-alls and against Envoy alone, the median of three rounds, with
//!   the requests arriving one at a time (paced) and, for comparison, at
//!   half the rate in h2load `--rps`'s 10 ms bursts (which time the burst's
//!   queue: each request waits for the Envoy work of those before it);
//! - when a run through an Envoy fails, that Envoy's counters of failed
//!   requests (each Envoy gets an admin listener for it);
//! - nginx `auth_request` + Sigil vs nginx alone (the same template without
//!   `auth_request`), req/s, over HTTP/1.1 (no h2c listener).

use std::time::{Duration, Instant};

use sigil_tests::proxies::{EchoUpstream, ProxyKind, ProxyPorts, RunningProxy, free_port};

use super::{Bench, Scenario};
use crate::{
    allow_all::AllowAllServer,
    edge::{listed, median},
    figures::Figures,
    h2load::{Arrivals, Run, Shape, h2load},
    target::process_cpu,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("gateways"), run: |bench| Box::pin(run(bench)) };

/// The longest one h2load run takes: the scenario's 34 runs take three minutes.
const RUN_LIMIT: Duration = Duration::from_secs(5);
/// Streams a paced run may have open in all: below Envoy's default circuit
/// breakers (1,024 requests in flight to one cluster).
const ENVOY_BREAKER: usize = 1000;
/// How long the admin listener may take to answer a failed run's question.
const ADMIN_LIMIT: Duration = Duration::from_secs(3);
/// Rounds of the paced latency runs (each: the four Envoys, starting with
/// another one each round).
const PACED_ROUNDS: usize = 3;
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
    let sigil_pid = bench.target.pid();
    let envoys = [
        BenchEnvoy::start("Envoy + Sigil ext_authz", &envoy, ports(sigil_grpc), sigil_pid, str::to_string).await,
        BenchEnvoy::start(
            "Envoy + allow-all ext_authz",
            &envoy,
            ports(allow_all.addr.port()),
            allow_all.pid(),
            str::to_string,
        )
        .await,
        BenchEnvoy::start(REPLAY, &envoy, ports(replay.addr.port()), replay.pid(), str::to_string).await,
        BenchEnvoy::start("Envoy alone", &envoy, ports(sigil_grpc), None, without_ext_authz).await,
    ];
    let nginx_sigil = ProxyKind::Nginx.start(&nginx, ports(sigil_grpc)).await;
    let nginx_alone = ProxyKind::Nginx.start_edited(&nginx, ports(sigil_grpc), without_auth_request).await;

    let (connections, streams) = ENVOY_SHAPE;
    let closed = Shape { connections, streams, http1: false, duration, arrivals: Arrivals::Closed };
    println!(
        "gateways: h2load -c {connections} -m {streams} -D {} -H 'authorization: Bearer …' to the echo upstream",
        duration.as_secs()
    );
    let mut rates = Vec::new();
    for envoy in &envoys {
        rates.push(envoy.measured(token, closed).await?.rate);
    }
    let [sigil, allow, replayed, alone] = rates[..] else { unreachable!("four Envoys") };
    let ratio = sigil / allow;
    println!(
        "gateways: Sigil ÷ allow-all (bare OK, the issue's baseline) = {ratio:.2} (target ≥ {RATIO_TARGET}: {}); Sigil ÷ Envoy alone = {:.2}; allow-all ÷ Envoy alone = {:.2}",
        verdict(ratio >= RATIO_TARGET),
        sigil / alone,
        allow / alone
    );
    println!(
        "gateways: Sigil ÷ allow-all answering Sigil's headers = {:.2} (not the issue's baseline); that allow-all ÷ bare allow-all = {:.2}",
        sigil / replayed,
        replayed / allow
    );

    // Per-request latency at half the max rate (the figure), and
    // at a quarter: arriving one at a time, requests are not batched into
    // Envoy's event-loop turns, so each costs Envoy ~1.5× its CPU in the
    // closed loop, and at half the closed-loop rate its one worker is
    // 75–90 % busy; at a quarter, ~55 %.
    let half = (sigil / 2.0) as u64;
    for (rate, which, judged) in [(half, "half Sigil's max rate", true), (half / 2, "a quarter of it", false)] {
        let paced = Shape { arrivals: Arrivals::Paced { rate }, ..closed };
        // A stall (these two cores are shared) makes h2load catch up in a
        // burst of every request it owes. Bounding the streams it may have
        // open keeps that burst below Envoy's circuit breakers, so a stall
        // shows as slow requests instead of ending the run in 503s (what h2load
        // owes beyond the bound waits inside it, untimed).
        let paced = Shape { streams: (ENVOY_BREAKER / paced.connections_opened()).max(1), ..paced };
        println!(
            "gateways: latency at {which}, {rate} req/s, paced: one request at a time over {} connections, {PACED_ROUNDS} rounds{}",
            paced.connections_opened(),
            if judged { " (the issue's figure)" } else { "" }
        );
        added_latency(&envoys, token, paced, PACED_ROUNDS, judged).await?;
    }
    let bursts = Shape { arrivals: Arrivals::Bursts { rate: half }, ..closed };
    println!(
        "gateways: at half the max rate from h2load --rps over {connections} connections, in bursts of ~{} requests every 10 ms (for comparison: the burst's queue, not a per-request figure)",
        half / 100
    );
    added_latency(&envoys, token, bursts, 1, false).await?;

    let http1 = Shape { connections: NGINX_CONNECTIONS, streams: 1, http1: true, duration, arrivals: Arrivals::Closed };
    println!("gateways: nginx, h2load -p http/1.1 -c {NGINX_CONNECTIONS} -m 1 -D {}", duration.as_secs());
    let nginx_with = measured("nginx auth_request + Sigil", &nginx_sigil, sigil_pid, token, http1).await?;
    let nginx_without = measured("nginx alone", &nginx_alone, None, token, http1).await?;
    println!("gateways: nginx + Sigil ÷ nginx alone = {:.2}", nginx_with.rate / nginx_without.rate);
    drop((allow_all, replay));
    Ok(Vec::new())
}

/// One of the four Envoys (Sigil, allow-all, replaying allow-all, alone),
/// given an admin listener of its own: when a run through it fails, its
/// counters say why (an authorizer timing out, a circuit breaker open).
struct BenchEnvoy {
    name: &'static str,
    proxy: RunningProxy,
    /// The process answering its `Check`s, for the CPU split.
    authorizer: Option<u32>,
    admin: u16,
}

impl BenchEnvoy {
    async fn start(
        name: &'static str,
        binary: &std::path::Path,
        ports: ProxyPorts,
        authorizer: Option<u32>,
        edit: impl Fn(&str) -> String,
    ) -> Self {
        let admin = free_port();
        let with_admin = |config: &str| {
            format!(
                "{}admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}\n",
                edit(config)
            )
        };
        let proxy = ProxyKind::Envoy.start_edited(binary, ports, with_admin).await;
        Self { name, proxy, authorizer, admin }
    }

    async fn measured(&self, token: &str, shape: Shape) -> anyhow::Result<Run> {
        self.explained(measured(self.name, &self.proxy, self.authorizer, token, shape).await).await
    }

    /// One open-loop run, printed with its percentiles, how busy Envoy's
    /// one worker was (near 100 %, the latency is Envoy's own queue) and
    /// what each request cost Envoy and the authorizer in CPU at that rate.
    async fn latency(&self, token: &str, shape: Shape) -> anyhow::Result<Run> {
        let cpu = || (self.proxy.pid().and_then(process_cpu), self.authorizer.and_then(process_cpu));
        let (before, started) = (cpu(), Instant::now());
        let run = self.explained(h2load(self.proxy.addr, token, shape).await).await?;
        let (after, elapsed) = (cpu(), started.elapsed().as_secs_f64());
        run.print_latency(self.name);
        let requests = (run.succeeded + run.missed).max(1) as f64;
        let spent = |b: Option<Duration>, a: Option<Duration>| Some((a? - b?).as_secs_f64());
        let per_request = |spent: Option<f64>| spent.map_or("-".into(), |s| format!("{:.0} µs", s * 1e6 / requests));
        println!(
            "  {:<28} proxy (all its threads) busy {} of a core; CPU per request: proxy {}, authorizer {}",
            "",
            spent(before.0, after.0).map_or("-".into(), |s| format!("{:.0} %", s / elapsed * 100.0)),
            per_request(spent(before.0, after.0)),
            per_request(spent(before.1, after.1))
        );
        Ok(run)
    }

    /// `run`, or its error with this Envoy's non-zero counters of failed
    /// requests appended.
    async fn explained(&self, run: anyhow::Result<Run>) -> anyhow::Result<Run> {
        let error = match run {
            Ok(run) => return Ok(run),
            Err(error) => error,
        };
        let counters = match admin_get(self.admin, "/stats?usedonly").await {
            Ok(counters) => counters
                .lines()
                .filter(|line| FAILURE_COUNTERS.iter().any(|c| line.contains(c)) && !line.ends_with(": 0"))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(unreadable: {e})"),
        };
        Err(error.context(format!("{} failed; its Envoy's counters of failures:\n{counters}", self.name)))
    }
}

/// Parts of the names of Envoy's counters that count failed requests.
const FAILURE_COUNTERS: [&str; 6] = ["5xx", "overflow", "ext_authz.error", "with_active_rq", "timeout", "reset"];

/// The body of `GET path` from the Envoy admin listener on `port`.
async fn admin_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        // HTTP/1.1: Envoy answers 1.0 with 426.
        let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(ADMIN_LIMIT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path}: no answer within {ADMIN_LIMIT:?}"))??;
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n");
    let head = String::from_utf8_lossy(&answer[..end.unwrap_or(answer.len())]).to_ascii_lowercase();
    let (Some(end), true) = (end, head.starts_with("http/1.1 200")) else {
        anyhow::bail!("GET {path}: {}", head.lines().next().unwrap_or("no answer"));
    };
    let body = &answer[end + 4..];
    let body = if head.contains("transfer-encoding: chunked") { dechunked(body) } else { body.to_vec() };
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A `Transfer-Encoding: chunked` body joined (RFC 9112 §7.1): each chunk
/// is its size in hex, CRLF, the bytes, CRLF; a chunk of size 0 ends it.
fn dechunked(mut body: &[u8]) -> Vec<u8> {
    let mut joined = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let rest = &body[line_end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        joined.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    joined
}

/// `rounds` rounds of one open-loop run of `shape` through each Envoy, and
/// what Sigil's ext_authz adds at p50 and p99 against each reference (the
/// median over the rounds, each round's figure listed); `judged` prints
/// the verdicts (for the shape its figure is defined by).
async fn added_latency(
    envoys: &[BenchEnvoy; 4],
    token: &str,
    shape: Shape,
    rounds: usize,
    judged: bool,
) -> anyhow::Result<()> {
    let mut added = [(); 3].map(|_| (Vec::new(), Vec::new()));
    for round in 0..rounds {
        // Each round starts with another Envoy, so that the machine's drift
        // over a round does not always favour the same one.
        let mut runs: [Option<Run>; 4] = Default::default();
        for i in 0..envoys.len() {
            let which = (i + round) % envoys.len();
            runs[which] = Some(envoys[which].latency(token, shape).await?);
        }
        let [Some(sigil), references @ ..] = runs else { unreachable!("every Envoy ran") };
        for (reference, (p50, p99)) in references.iter().flatten().zip(&mut added) {
            p50.push(sigil.latency_ms(0.5) - reference.latency_ms(0.5));
            p99.push(sigil.latency_ms(0.99) - reference.latency_ms(0.99));
        }
    }
    let references =
        ["allow-all (bare OK, the issue's baseline)", "allow-all answering Sigil's headers", "Envoy alone"];
    for (name, (p50s, p99s)) in references.iter().zip(added) {
        let (p50, p99) = (median(p50s.clone()), median(p99s.clone()));
        let signed = |ms: f64| format!("{ms:+.3}");
        let judge = |target: f64, value: f64| {
            if judged { format!("target ≤ {target}: {}; ", verdict(value <= target)) } else { String::new() }
        };
        println!(
            "gateways: added by Sigil vs {name}: p50 {p50:+.3} ms ({}rounds {}), p99 {p99:+.3} ms ({}rounds {})",
            judge(ADDED_P50_TARGET_MS, p50),
            listed(&p50s, signed),
            judge(ADDED_P99_TARGET_MS, p99),
            listed(&p99s, signed)
        );
    }
    Ok(())
}

/// One closed-loop run through `proxy`, printed with its CPU split: the
/// proxy, the authorizer (Sigil or an allow-all, when one is behind it)
/// and this process (the echo upstream).
async fn measured(
    name: &str,
    proxy: &RunningProxy,
    authorizer: Option<u32>,
    token: &str,
    shape: Shape,
) -> anyhow::Result<Run> {
    let cpu = || (proxy.pid().and_then(process_cpu), authorizer.and_then(process_cpu), process_cpu(std::process::id()));
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
        "  {name:<28} {:>9.0} req/s ({} missed)   CPU of one core: proxy {}, authorizer {}, upstream (this process) {}",
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
