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
//! target/release/sigil-bench --only gateways   # Envoy/nginx + Sigil vs without (h2load)
//! target/release/sigil-bench --only envoy-callgrind   # Envoy's instructions per request, by authorizer
//! target/release/sigil-bench --only h2load     # Validate ÷ health, ext_authz Check, by h2load
//! taskset -c 1 target/release/sigil-bench --server-cpus 0 --only h2load   # the same, server and load on their own cores
//! target/release/sigil-bench --only verifier   # the edge verifier's figures (issue 13), 1M snapshot too
//! SIGIL_PG_BIN=/usr/lib/postgresql/15/bin target/release/sigil-bench --only scaleout  # N = 1, 2, 3 on one PostgreSQL
//! ```
//!
//! Scenarios: health, validate-hot, validate-cold, authenticate, refresh,
//! revoke, mixed, flood, oversized, list-sessions, oauth, and with `--rate` an
//! open-loop validate-hot; with `--database-url`, propagation; only when
//! named, gateways (the real proxies in front of Sigil, driven by h2load),
//! envoy-callgrind (Envoy's instructions per request under valgrind) and
//! h2load (Validate, health and ext_authz Check straight from h2load);
//! the edge verifier's verifier-local, verifier-service, verifier-revoke
//! (with `--database-url` or `SIGIL_PG_BIN`, through a second instance on
//! PostgreSQL too) and, only when named, verifier-snapshot (a million
//! revocation entries); only when named, scaleout (N = 1, 2, 3 instances on
//! one PostgreSQL: `--database-url` or a throwaway cluster from `SIGIL_PG_BIN`).

mod allow_all;
mod baseline;
mod client;
mod edge;
mod figures;
mod h2load;
mod load;
mod postgres_cpu;
mod ratios;
mod scenarios;
mod seed;
mod target;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    baseline::Baselines,
    scenarios::Bench,
    target::{Target, channels},
};

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
    /// Confine the server this run starts to these CPUs (a `taskset -c`
    /// list); run the bench itself under `taskset -c` on the others, so that
    /// the load generators (its client, h2load) do not share the server's core.
    #[arg(long)]
    server_cpus: Option<String>,
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
    /// Internal: the do-nothing ext_authz server the gateway figures
    /// compare Sigil with, in a process of its own (see `allow_all.rs`).
    #[command(hide = true)]
    AllowAll {
        /// The encoded `CheckResponse` to answer every `Check` with.
        #[arg(long)]
        answer: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Seed { data_dir, database_url, sessions, users }) => {
            return seed::seed(data_dir.as_deref(), database_url.as_deref(), *sessions, *users).await;
        }
        Some(Command::AllowAll { answer }) => return allow_all::serve(answer).await,
        None => {}
    }
    let duration = if cli.quick { Duration::from_millis(1000) } else { Duration::from_secs(cli.seconds) };
    let (connections, streams) = if cli.quick { (2, 16) } else { (cli.connections, cli.streams) };
    // A name selects its scenario, and a family by prefix: `verifier`
    // selects every `verifier-*` scenario, opt-in ones too.
    let named = |name: &str| {
        cli.only.iter().any(|o| name == o || name.strip_prefix(o.as_str()).is_some_and(|rest| rest.starts_with('-')))
    };
    let wanted = |name: &str| named(name) || (cli.only.is_empty() && !scenarios::OPT_IN.contains(&name));

    let target = match &cli.server {
        Some(address) => Target::remote(address.clone()),
        None => {
            Target::start_on(cli.data_dir.as_deref(), cli.database_url.as_deref(), cli.server_cpus.as_deref()).await?
        }
    };
    let password = if cli.server.is_some() { cli.admin_password.clone() } else { ADMIN_PASSWORD.to_string() };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(rss) = target.rss_mib() {
        println!("server RSS idle: {rss:.1} MiB");
    }
    let chans = channels(&target.address, connections).await?;
    println!("load shape: {connections} connections × {streams} streams, {duration:?} per scenario\n");

    // Measured once and used for every ratio at the end.
    let baselines = Baselines::measure(connections * streams, cli.quick).await;

    let session = client::login(&chans[0], "admin", &password).await?;
    let bench = Bench {
        target: &target,
        chans: &chans,
        connections,
        streams,
        duration,
        quick: cli.quick,
        password: &password,
        session: &session,
        rate: cli.rate,
        database_url: cli.database_url.as_deref(),
    };
    let mut results = Vec::new();
    for scenario in &scenarios::ALL {
        if scenario.name.is_none_or(wanted) {
            results.extend((scenario.run)(&bench).await?);
        }
    }

    println!();
    ratios::print(&results, &baselines);
    if let Some(rss) = target.rss_mib() {
        println!("server RSS after the run: {rss:.1} MiB");
    }
    let failed: Vec<&str> =
        results.iter().filter(|f| f.requests == 0 || f.errors > 0).map(|f| f.name.as_str()).collect();
    anyhow::ensure!(failed.is_empty(), "scenarios with errors or no requests: {failed:?}");
    println!("all {} scenarios ran without errors", results.len());
    Ok(())
}
