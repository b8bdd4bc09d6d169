//! `sigil-bench`: load generator and figures for Sigil.
//!
//! It starts its own `sigil-server` (the binary next to this one, on a
//! temporary data directory) or targets `--server`, drives each scenario
//! closed-loop with many concurrent streams over a few HTTP/2 connections,
//! and prints requests/s, latency percentiles (HDR histograms) and, for a
//! server it started, server CPU per request. Baselines are measured in the
//! same run: the same server's `grpc.health.v1.Health/Check` with the same
//! load shape, and in-process Ed25519 verify rate and argon2 verify time.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/sigil-bench            # every scenario, 10 s each
//! target/release/sigil-bench --quick    # smoke run, ~1 s each
//! target/release/sigil-bench seed --data-dir /tmp/big --sessions 100000
//! target/release/sigil-bench --data-dir /tmp/big --only list-sessions
//! target/release/sigil-bench --database-url postgres://… --only refresh,revoke,propagation
//! ```
//!
//! Scenarios: health, validate-hot, validate-cold, authenticate, refresh,
//! revoke, mixed, flood, oversized, list-sessions, and with `--rate` an
//! open-loop validate-hot; with `--database-url`, propagation.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::Channel;

const ADMIN_PASSWORD: &str = "bench-admin-password";

#[derive(Parser)]
#[command(name = "sigil-bench", about = "Load generator and benchmark figures for Sigil")]
struct Cli {
    /// Target this server instead of starting one (then no CPU figures).
    #[arg(long)]
    server: Option<String>,
    /// Admin password of `--server`.
    #[arg(long, default_value = ADMIN_PASSWORD)]
    admin_password: String,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// A smoke run: about a second per scenario, small data.
    #[arg(long)]
    quick: bool,
    /// Start the server on this (e.g. seeded) data directory instead of an empty one.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also run validate-hot open-loop at this many requests per second
    /// (latency counted from the scheduled send time).
    #[arg(long)]
    rate: Option<u64>,
    /// Start the server(s) on this PostgreSQL database instead of sled; adds
    /// the `propagation` scenario (revoke on one instance, enforced on a second).
    #[arg(long)]
    database_url: Option<String>,
    /// Only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Fills a data directory with users, sessions and tokens through the
    /// store trait (no argon2, never reachable from the gRPC API).
    Seed {
        /// The data directory to fill (created if missing).
        #[arg(long, required_unless_present = "database_url")]
        data_dir: Option<PathBuf>,
        /// Or the PostgreSQL database to fill.
        #[arg(long)]
        database_url: Option<String>,
        /// Sessions to create (each with an access and a refresh token).
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
        /// Users the sessions are spread over.
        #[arg(long, default_value_t = 1_000)]
        users: usize,
    },
}

/// One scenario's result.
struct Figures {
    name: String,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    server_cpu: Option<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Closes a scenario started at `started`, when the server had used
    /// `cpu_before`: records the elapsed time and the server's CPU since,
    /// prints the line, and returns the figures.
    fn finish(mut self, started: Instant, cpu_before: Option<Duration>, target: &Target) -> Self {
        self.elapsed = started.elapsed();
        self.server_cpu = match (cpu_before, target.cpu()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        self.print();
        self
    }

    fn print(&self) {
        let q = |p: f64| Duration::from_nanos(self.latency.value_at_quantile(p));
        let cpu = self
            .server_cpu
            .map(|cpu| format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:>10.0} req/s  p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  p99.9 {:>9.3?}  server CPU/req {:>9}  errors {}",
            self.name,
            self.rate(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            cpu,
            self.errors
        );
    }
}

/// The server under test.
struct Target {
    address: String,
    pid: Option<u32>,
    _child: Option<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    async fn start(data_dir: Option<&Path>, database_url: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = data_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.path().join("data"));
        let binary = std::env::current_exe()?.with_file_name("sigil-server");
        anyhow::ensure!(binary.exists(), "{} is missing: cargo build --release --workspace --bins", binary.display());
        let mut command = tokio::process::Command::new(binary);
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-format", "text"])
            // The login scenarios run dozens of logins of one account at
            // once: the lockout would (rightly) admit only ten in flight.
            .args(["--lockout-threshold", "1000000"])
            .arg("--data-dir")
            .arg(&data)
            .env("SIGIL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SIGIL_LOG", "warn,sigil_server::server=info")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        let address = loop {
            let line = lines.next_line().await?.ok_or_else(|| anyhow::anyhow!("sigil-server exited"))?;
            if let Some(address) = sigil_tests::bound_grpc_addr(&line) {
                break address.to_string();
            }
        };
        println!("started sigil-server (pid {:?}) on {address} in {:?}", child.id(), started.elapsed());
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { address: format!("http://{address}"), pid: child.id(), _child: Some(child), _dir: Some(dir) })
    }

    /// User + system CPU time of the server process so far.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// Resident memory of the server process.
    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }
}

async fn channels(address: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Channel::from_shared(address.to_string())?.tcp_nodelay(true).connect().await?);
    }
    Ok(out)
}

/// Runs `call` closed-loop on `connections × streams` workers for
/// `duration`, or until `call` says there is no more work (`None`).
async fn drive<F, Fut>(
    name: &str,
    target: &Target,
    channels: &[Channel],
    streams: usize,
    duration: Duration,
    call: F,
) -> Figures
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let cpu_before = target.cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for channel in channels {
        for _ in 0..streams {
            let (channel, call, counter) = (channel.clone(), call.clone(), counter.clone());
            workers.push(tokio::spawn(async move {
                let mut latency =
                    Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"));
                let (mut ok, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    match call(channel.clone(), n).await {
                        Some(true) => {
                            ok += 1;
                            let _ = latency.record(t.elapsed().as_nanos() as u64);
                        }
                        Some(false) => errors += 1,
                        None => break,
                    }
                }
                (ok, errors, latency)
            }));
        }
    }
    let mut figures = Figures {
        name: name.to_string(),
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")),
        server_cpu: None,
    };
    for worker in workers {
        if let Ok((ok, errors, latency)) = worker.await {
            figures.requests += ok;
            figures.errors += errors;
            let _ = figures.latency.add(latency);
        }
    }
    figures.finish(started, cpu_before, target)
}

async fn login(channel: &Channel, username: &str, password: &str) -> anyhow::Result<pb::AuthenticateResponse> {
    let request =
        pb::AuthenticateRequest { username: username.into(), password: password.into(), ..Default::default() };
    Ok(IdentityServiceClient::new(channel.clone()).authenticate(request).await?.into_inner())
}

fn admin_request<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Seed { data_dir, database_url, sessions, users }) = &cli.command {
        return seed(data_dir.as_deref(), database_url.as_deref(), *sessions, *users).await;
    }
    let duration = if cli.quick { Duration::from_millis(1000) } else { Duration::from_secs(cli.seconds) };
    let (connections, streams) = if cli.quick { (2, 16) } else { (cli.connections, cli.streams) };
    let wanted = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);

    let target = match &cli.server {
        Some(address) => Target { address: address.clone(), pid: None, _child: None, _dir: None },
        None => Target::start(cli.data_dir.as_deref(), cli.database_url.as_deref()).await?,
    };
    let password = if cli.server.is_some() { cli.admin_password.clone() } else { ADMIN_PASSWORD.to_string() };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(rss) = target.rss_mib() {
        println!("server RSS idle: {rss:.1} MiB");
    }
    let chans = channels(&target.address, connections).await?;
    println!("load shape: {connections} connections × {streams} streams, {duration:?} per scenario\n");

    // In-process baselines, measured once and used for every ratio below.
    let verify_rate = ed25519_verify_rate();
    let argon2_time = argon2_verify_time();
    println!("baseline: Ed25519 verify {verify_rate:.0}/s on one core");
    println!("baseline: argon2id verify {argon2_time:?} (OWASP parameters)");
    let redis = redis_get_rate(connections * streams, cli.quick).await;
    match redis {
        Some(rate) => {
            println!("baseline: Redis GET {rate:.0} req/s (redis-benchmark, {} clients)\n", connections * streams)
        }
        None => println!("baseline: Redis GET not measured (redis-server or redis-benchmark not installed)\n"),
    }

    let session = login(&chans[0], "admin", &password).await?;
    let mut results = Vec::new();

    if wanted("health") {
        results.push(
            drive("health (bare)", &target, &chans, streams, duration, |ch, _| async move {
                let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
                Some(client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok())
            })
            .await,
        );
    }
    if wanted("validate-hot") {
        let mut hot = Vec::new();
        for _ in 0..if cli.quick { 4 } else { 16 } {
            hot.push(login(&chans[0], "admin", &password).await?.access_token);
        }
        results.push(drive("validate-hot", &target, &chans, streams, duration, validate_round_robin(hot)).await);
    }
    if wanted("validate-cold") {
        // Distinct tokens: one session refreshed many times gives a new
        // signed token per refresh without an argon2 hash each.
        let count = if cli.quick { 2_000 } else { 200_000 };
        let tokens = distinct_tokens(&chans, &session.refresh_token, count).await?;
        println!("(validate-cold uses {} distinct tokens, each validated once per pass)", tokens.len());
        results.push(drive("validate-cold", &target, &chans, streams, duration, validate_round_robin(tokens)).await);
    }
    if wanted("authenticate") {
        let password = password.clone();
        results.push(
            // At most 8 logins in flight per connection: more would only
            // queue behind argon2 (and past the queue, be refused).
            drive("authenticate", &target, &chans, streams.min(8), duration, move |ch, _| {
                let password = password.clone();
                async move {
                    let request = pb::AuthenticateRequest { username: "admin".into(), password, ..Default::default() };
                    Some(IdentityServiceClient::new(ch).authenticate(request).await.is_ok())
                }
            })
            .await,
        );
    }
    if wanted("refresh") {
        // Each worker rotates its own refresh-token chain.
        let chains = refresh_chains(&chans[0], &password, connections * streams).await?;
        results.push(
            drive("refresh", &target, &chans, streams, duration, move |ch, n| {
                let chains = chains.clone();
                async move {
                    let mut chain = chains[n as usize % chains.len()].lock().await;
                    let request = pb::RefreshRequest { refresh_token: chain.clone() };
                    Some(match IdentityServiceClient::new(ch).refresh(request).await {
                        Ok(r) => {
                            *chain = r.into_inner().refresh_token;
                            true
                        }
                        Err(_) => false,
                    })
                }
            })
            .await,
        );
    }
    if wanted("revoke") {
        // Distinct sessions, each revoked once by its refresh token (a
        // durable write of the session, its tokens and a log entry). The
        // logins that make them are argon2-bound, so they are made first.
        let count = if cli.quick { 64 } else { 4_000 };
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            sessions.push(login(&chans[0], "admin", &password).await?.refresh_token);
        }
        let sessions = Arc::new(sessions);
        results.push(
            drive("revoke", &target, &chans, streams, duration, move |ch, n| {
                let sessions = sessions.clone();
                async move {
                    let token = sessions.get(n as usize)?.clone();
                    let request = pb::RevokeRequest {
                        target: Some(pb::revoke_request::Target::RefreshToken(token)),
                        reason: "bench".into(),
                    };
                    let r = IdentityServiceClient::new(ch).revoke(request).await;
                    Some(r.is_ok_and(|r| r.into_inner().revoked_sessions == 1))
                }
            })
            .await,
        );
    }
    if wanted("mixed") {
        // 90% validate, 5% refresh, 4% authenticate, 1% revoke (of a token
        // of the worker's own chain, so every revoke is a durable write).
        let hot = Arc::new(login(&chans[0], "admin", &password).await?.access_token);
        let chains = refresh_chains(&chans[0], &password, connections * streams).await?;
        let password = password.clone();
        results.push(
            drive("mixed", &target, &chans, streams, duration, move |ch, n| {
                let (hot, chains, password) = (hot.clone(), chains.clone(), password.clone());
                async move {
                    let mut identity = IdentityServiceClient::new(ch);
                    let ok = match n % 100 {
                        0..90 => identity
                            .validate(pb::ValidateRequest { token: hot.to_string(), audience: None })
                            .await
                            .is_ok_and(|r| r.into_inner().valid),
                        90..95 | 99 => {
                            let mut chain = chains[n as usize % chains.len()].lock().await;
                            match identity.refresh(pb::RefreshRequest { refresh_token: chain.clone() }).await {
                                Ok(r) => {
                                    let r = r.into_inner();
                                    *chain = r.refresh_token;
                                    if n % 100 == 99 {
                                        let revoke = pb::RevokeRequest {
                                            target: Some(pb::revoke_request::Target::TokenId(
                                                token_id_of(&r.access_token).unwrap_or_default(),
                                            )),
                                            reason: "bench".into(),
                                        };
                                        identity.revoke(admin_request(revoke, &r.access_token)).await.is_ok()
                                    } else {
                                        true
                                    }
                                }
                                Err(_) => false,
                            }
                        }
                        _ => {
                            let request =
                                pb::AuthenticateRequest { username: "admin".into(), password, ..Default::default() };
                            // A full argon2 queue refusing at once is the
                            // designed answer under overload, not an error.
                            match identity.authenticate(request).await {
                                Ok(_) => true,
                                Err(status) => status.code() == tonic::Code::ResourceExhausted,
                            }
                        }
                    };
                    Some(ok)
                }
            })
            .await,
        );
    }
    if wanted("flood") {
        // validate-hot's p95 while 64 clients flood authenticate, against
        // its p95 alone, with the same load shape for validate.
        let hot = Arc::new(login(&chans[0], "admin", &password).await?.access_token);
        let validate = move |ch: Channel, _n: u64| {
            let hot = hot.clone();
            async move {
                let r = IdentityServiceClient::new(ch)
                    .validate(pb::ValidateRequest { token: hot.to_string(), audience: None })
                    .await;
                Some(r.is_ok_and(|r| r.into_inner().valid))
            }
        };
        let validate_streams = streams.min(8);
        let alone = drive("validate alone", &target, &chans, validate_streams, duration, validate.clone()).await;
        let flood_chans = channels(&target.address, 2).await?;
        let flood_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut flooders = Vec::new();
        for i in 0..64 {
            let (channel, stop, password) = (flood_chans[i % 2].clone(), flood_stop.clone(), password.clone());
            flooders.push(tokio::spawn(async move {
                let mut client = IdentityServiceClient::new(channel);
                while !stop.load(Ordering::Relaxed) {
                    let request = pb::AuthenticateRequest {
                        username: "admin".into(),
                        password: password.clone(),
                        ..Default::default()
                    };
                    let _ = client.authenticate(request).await;
                }
            }));
        }
        let flooded = drive("validate+flood", &target, &chans, validate_streams, duration, validate).await;
        flood_stop.store(true, Ordering::Relaxed);
        for flooder in flooders {
            let _ = flooder.await;
        }
        let p95 = |f: &Figures| f.latency.value_at_quantile(0.95) as f64;
        println!(
            "ratio validate p95 during a 64-client authenticate flood / alone: {:.2}",
            p95(&flooded) / p95(&alone)
        );
        results.push(alone);
        results.push(flooded);
    }
    if wanted("oversized") {
        // Over-the-cap fields are refused before any decoding, hashing or
        // store access: these should cost about what a health check does.
        let password = Arc::new("p".repeat(2048));
        results.push(
            drive("oversized login", &target, &chans, streams, duration, move |ch, _| {
                let password = password.to_string();
                async move {
                    let request = pb::AuthenticateRequest { username: "admin".into(), password, ..Default::default() };
                    let refused = IdentityServiceClient::new(ch).authenticate(request).await;
                    Some(refused.is_err_and(|s| s.code() == tonic::Code::InvalidArgument))
                }
            })
            .await,
        );
        let token = Arc::new("a".repeat(9000));
        results.push(
            drive("oversized token", &target, &chans, streams, duration, move |ch, _| {
                let token = token.to_string();
                async move {
                    let answer =
                        IdentityServiceClient::new(ch).validate(pb::ValidateRequest { token, audience: None }).await;
                    Some(answer.is_ok_and(|a| a.into_inner().failure() == pb::ValidationFailure::Malformed))
                }
            })
            .await,
        );
    }
    if let Some(rate) = cli.rate {
        let hot = Arc::new(login(&chans[0], "admin", &password).await?.access_token);
        results.push(open_loop(&target, &chans, rate, duration, hot).await);
    }
    if wanted("list-sessions") {
        let admin_token = login(&chans[0], "admin", &password).await?.access_token;
        results.push(
            drive("list-sessions", &target, &chans, streams.min(8), duration, move |ch, _| {
                let token = admin_token.clone();
                async move {
                    let request =
                        pb::ListSessionsRequest { page_size: 100, include_inactive: true, ..Default::default() };
                    let r = AdminServiceClient::new(ch).list_sessions(admin_request(request, &token)).await;
                    Some(r.is_ok_and(|r| !r.into_inner().sessions.is_empty()))
                }
            })
            .await,
        );
    }

    if let Some(url) = &cli.database_url
        && wanted("propagation")
    {
        results.push(propagation(&chans[0], &password, url, if cli.quick { 10 } else { 100 }).await?);
    }

    println!();
    let rate = |name: &str| results.iter().find(|f| f.name.starts_with(name)).map(Figures::rate);
    if let (Some(hot), Some(health)) = (rate("validate-hot"), rate("health")) {
        println!("ratio validate-hot / health Check: {:.2}", hot / health);
    }
    if let (Some(hot), Some(redis)) = (rate("validate-hot"), redis) {
        println!("ratio validate-hot / Redis GET: {:.2}", hot / redis);
    }
    if let (Some(cold), Some(health)) = (rate("validate-cold"), rate("health")) {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1) as f64;
        let ceiling = health.min(cores * verify_rate);
        println!("ratio validate-cold / min(health, cores × Ed25519 verify): {:.2}", cold / ceiling);
    }
    if let Some(auth) = rate("authenticate") {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1) as f64;
        println!(
            "ratio authenticate / (cores / argon2 verify time): {:.2}",
            auth / (cores / argon2_time.as_secs_f64())
        );
    }
    if let Some(rss) = target.rss_mib() {
        println!("server RSS after the run: {rss:.1} MiB");
    }
    let failed: Vec<&str> =
        results.iter().filter(|f| f.requests == 0 || f.errors > 0).map(|f| f.name.as_str()).collect();
    anyhow::ensure!(failed.is_empty(), "scenarios with errors or no requests: {failed:?}");
    println!("all {} scenarios ran without errors", results.len());
    Ok(())
}

/// With PostgreSQL: starts a second instance on the same database, then
/// `trials` times logs in, revokes the session on the first instance and
/// polls `Validate` on the second until it refuses the token. The latency
/// figures are the time from the revoke's answer to the first refusal.
async fn propagation(first: &Channel, password: &str, url: &str, trials: usize) -> anyhow::Result<Figures> {
    let peer = Target::start(None, Some(url)).await?;
    let mut peer_client = IdentityServiceClient::new(channels(&peer.address, 1).await?.remove(0));
    let mut client = IdentityServiceClient::new(first.clone());
    let mut latency = Histogram::new(3)?;
    let (mut errors, started) = (0, Instant::now());
    for _ in 0..trials {
        let token = login(first, "admin", password).await?.access_token;
        let validate = pb::ValidateRequest { token: token.clone(), audience: None };
        if !peer_client.validate(validate.clone()).await?.into_inner().valid {
            errors += 1;
            continue;
        }
        let revoke =
            pb::RevokeRequest { target: Some(pb::revoke_request::Target::AccessToken(token)), reason: "bench".into() };
        client.revoke(revoke).await?;
        let revoked = Instant::now();
        loop {
            let answer = peer_client.validate(validate.clone()).await?.into_inner();
            if !answer.valid {
                latency.record(revoked.elapsed().as_nanos() as u64)?;
                break;
            }
            if revoked.elapsed() > Duration::from_secs(5) {
                errors += 1;
                break;
            }
        }
    }
    let figures = Figures {
        name: "propagation".into(),
        requests: latency.len(),
        errors,
        elapsed: started.elapsed(),
        latency,
        server_cpu: None,
    };
    println!(
        "revocation enforced on a second instance after: median {:?}, max {:?} ({} trials)",
        Duration::from_nanos(figures.latency.value_at_quantile(0.5)),
        Duration::from_nanos(figures.latency.max()),
        figures.requests
    );
    Ok(figures)
}

/// Redis GET throughput from `redis-benchmark` at `clients` concurrency,
/// against a throwaway `redis-server` on a free loopback port, if both are
/// installed.
async fn redis_get_rate(clients: usize, quick: bool) -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port().to_string();
    let mut server = tokio::process::Command::new("redis-server")
        .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = if quick { "50000" } else { "1000000" };
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "get", "-n", requests, "-c", &clients.to_string(), "--csv"])
        .output()
        .await
        .ok();
    let _ = server.kill().await;
    let text = String::from_utf8_lossy(&output?.stdout).to_string();
    // "GET","123456.79",... (the header line names the columns)
    let line = text.lines().find(|l| l.starts_with("\"GET"))?;
    line.split(',').nth(1)?.trim_matches('"').parse().ok()
}

/// The `jti` of an access token, read without verifying it (the bench's own token).
fn token_id_of(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["jti"].as_str().map(str::to_string)
}

/// validate-hot at a fixed arrival rate: requests are sent on schedule
/// whatever the latency, and each latency is measured from its scheduled
/// time, so a stall shows up instead of being hidden (no coordinated omission).
async fn open_loop(target: &Target, chans: &[Channel], rate: u64, duration: Duration, token: Arc<String>) -> Figures {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let cpu_before = target.cpu();
    let started = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let total = (duration.as_secs_f64() * rate as f64) as u64;
    // Requests are paced by an OS thread that wakes every ~50 µs and sends
    // whatever has come due: tokio's timer has a 1 ms resolution, which
    // would release requests in bursts and add up to 1 ms of the
    // generator's own lag to every latency (measured from the scheduled
    // send time, so that a slow server cannot hide behind a slow sender).
    let runtime = tokio::runtime::Handle::current();
    let chans = chans.to_vec();
    let pacer = std::thread::spawn(move || {
        let mut i: u64 = 0;
        while i < total {
            let now = Instant::now();
            while i < total && started + interval * i as u32 <= now {
                let scheduled = started + interval * i as u32;
                let (channel, token, tx) = (chans[i as usize % chans.len()].clone(), token.clone(), tx.clone());
                runtime.spawn(async move {
                    let r = IdentityServiceClient::new(channel)
                        .validate(pb::ValidateRequest { token: token.to_string(), audience: None })
                        .await;
                    let ok = r.is_ok_and(|r| r.into_inner().valid);
                    let _ = tx.send(ok.then(|| scheduled.elapsed().as_nanos() as u64));
                });
                i += 1;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    let mut figures = Figures {
        name: format!("open-loop {rate}/s"),
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")),
        server_cpu: None,
    };
    while let Some(outcome) = rx.recv().await {
        match outcome {
            Some(nanos) => {
                figures.requests += 1;
                let _ = figures.latency.record(nanos);
            }
            None => figures.errors += 1,
        }
    }
    let _ = pacer.join();
    figures.finish(started, cpu_before, target)
}

/// A closed-loop call validating `tokens` in turn.
fn validate_round_robin(
    tokens: Vec<String>,
) -> impl Fn(Channel, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    let tokens = Arc::new(tokens);
    move |ch, n| {
        let token = tokens[n as usize % tokens.len()].clone();
        Box::pin(async move {
            let r = IdentityServiceClient::new(ch).validate(pb::ValidateRequest { token, audience: None }).await;
            Some(r.is_ok_and(|r| r.into_inner().valid))
        })
    }
}

/// One refresh-token chain per worker (each a separate session), so that
/// concurrent refreshes never present the same token twice.
async fn refresh_chains(
    channel: &Channel,
    password: &str,
    count: usize,
) -> anyhow::Result<Arc<Vec<tokio::sync::Mutex<String>>>> {
    let mut chains = Vec::with_capacity(count);
    for _ in 0..count {
        chains.push(tokio::sync::Mutex::new(login(channel, "admin", password).await?.refresh_token));
    }
    Ok(Arc::new(chains))
}

/// `count` distinct valid access tokens, from one session's refresh chain.
async fn distinct_tokens(chans: &[Channel], refresh: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut client = IdentityServiceClient::new(chans[0].clone());
    let mut refresh = refresh.to_string();
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let r = client.refresh(pb::RefreshRequest { refresh_token: refresh }).await?.into_inner();
        tokens.push(r.access_token);
        refresh = r.refresh_token;
    }
    Ok(tokens)
}

fn ed25519_verify_rate() -> f64 {
    use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
    let record = sigil_server::domain::keys::SigningKeyRecord::generate_ed25519(sigil_server::domain::Timestamp::now());
    let Ok(record) = record else { return 0.0 };
    let Ok(ring) = sigil_server::domain::keys::KeyRing::from_records(std::slice::from_ref(&record)) else { return 0.0 };
    let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
    let Ok(token) = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &ring.active().encoding) else {
        return 0.0;
    };
    let Ok(key) = DecodingKey::from_ed_components(&record.public_x) else { return 0.0 };
    let validation = Validation::new(Algorithm::EdDSA);
    let n = 3000;
    let start = Instant::now();
    for _ in 0..n {
        let _ = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn argon2_verify_time() -> Duration {
    use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString};
    let Ok(salt) = SaltString::encode_b64(b"benchmark-salt-16") else { return Duration::ZERO };
    let Ok(hash) = Argon2::default().hash_password(b"password", &salt) else { return Duration::ZERO };
    let phc = hash.to_string();
    let Ok(parsed) = PasswordHash::new(&phc) else { return Duration::ZERO };
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let _ = Argon2::default().verify_password(b"password", &parsed);
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

/// Fills a store through the store trait: a precomputed password hash, and
/// many concurrent writers so group commit batches the flushes.
async fn seed(dir: Option<&Path>, database_url: Option<&str>, sessions: usize, users: usize) -> anyhow::Result<()> {
    use sigil_server::{
        domain::{
            SessionId, Timestamp, TokenId, UserId,
            port::Store,
            session::{NewRefreshToken, SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
            user::UserRecord,
        },
        store::{postgres::PgStore, sled_store::SledStore},
    };
    let store: Arc<dyn Store> = match (database_url, dir) {
        (Some(url), _) => PgStore::connect(url, None).await?,
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            SledStore::open(dir)?
        }
        (None, None) => anyhow::bail!("seed needs --data-dir or --database-url"),
    };
    let started = Instant::now();
    let hash =
        "$argon2id$v=19$m=19456,t=2,p=1$c2VlZHNlZWRzZWVkc2VlZA$5t1Ob6KdC7r7u0gR2cJq1pNQ4xS0oTcNQm4m1bwC1bM".to_string();
    let now = Timestamp::now();
    // The admin the benchmark logs in as, with a real argon2id hash.
    {
        use argon2::{Argon2, PasswordHasher as _, password_hash::SaltString};
        let salt = SaltString::encode_b64(b"sigil-bench-seed").map_err(|e| anyhow::anyhow!("{e}"))?;
        let phc =
            Argon2::default().hash_password(ADMIN_PASSWORD.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("{e}"))?;
        let admin = UserRecord {
            id: UserId::generate(),
            username: "admin".into(),
            password_hash: phc.to_string(),
            roles: vec!["admin".into()],
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        if store.user_by_name("admin").await?.is_none() {
            store.create_user(&admin).await?;
        }
    }
    let mut user_records = Vec::with_capacity(users);
    for i in 0..users {
        let user = UserRecord {
            id: UserId::generate(),
            username: format!("seed-user-{i}"),
            password_hash: hash.clone(),
            roles: vec![],
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        store.create_user(&user).await?;
        user_records.push(user);
    }
    let users = Arc::new(user_records);
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..64 {
        let (store, users, next) = (store.clone(), users.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= sessions {
                    return Ok::<_, anyhow::Error>(());
                }
                let user = &users[n % users.len()];
                let session = SessionRecord {
                    id: SessionId::generate(),
                    user_id: user.id,
                    username: user.username.clone(),
                    audience: vec!["sigil".into()],
                    created_at: now,
                    last_seen_at: now,
                    expires_at: now.plus(Duration::from_secs(30 * 86_400)),
                    client_address: format!("10.0.{}.{}:443", n / 250 % 250, n % 250),
                    user_agent: "sigil-bench/seed".into(),
                    device_name: format!("seed-{n}"),
                    state: SessionState::Active,
                    revoked_at: None,
                    revoke_reason: None,
                    current_refresh: TokenId::generate(),
                };
                let token = |id, kind, expires_at| TokenRecord {
                    id,
                    kind,
                    session_id: session.id,
                    user_id: user.id,
                    username: user.username.clone(),
                    issued_at: now,
                    expires_at,
                    state: TokenState::Active,
                    revoked_at: None,
                    refresh_hash: None,
                };
                let refresh = NewRefreshToken::generate()?;
                let records = [
                    token(session.current_refresh, TokenKind::Refresh, session.expires_at),
                    token(TokenId::generate(), TokenKind::Access, now.plus(Duration::from_secs(900))),
                ];
                store.create_session(&session, refresh.hash, &records).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    store.close().await?;
    let elapsed = started.elapsed();
    println!(
        "seeded {sessions} sessions ({} tokens) over {} users in {elapsed:?} ({:.0} sessions/s)",
        sessions * 2,
        users.len(),
        sessions as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
