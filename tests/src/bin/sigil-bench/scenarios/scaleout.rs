//! scaleout (only with `--only scaleout`): N = 1, 2, 3 `sigil-server`
//! instances on one PostgreSQL database, measured in the same run. For each
//! N: `Validate` and `Refresh` throughput, closed loop, the client's
//! connections spread evenly over the instances; the revocation
//! propagation (revoke on one instance, in turn, until every other one
//! refuses the token); and where the CPU went — the instances, PostgreSQL,
//! this client — from `/proc/PID/stat`.
//!
//! The database is `--database-url` (the run's own server is then the first
//! instance) or a throwaway cluster from `SIGIL_PG_BIN`. The instances beyond
//! the first are started for their N and stopped after each round (N = 1, 2,
//! 3), so N = 1 is a single instance, not one of three at work; the
//! throughput figures are medians of the rounds.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use sigil_tests::postgres::Postgres;
use tonic::transport::Channel;

use super::{Bench, Scenario, propagation::enforced_by_all};
use crate::{
    client::{login, refresh_along, refresh_chains, validate_round_robin},
    edge::median,
    figures::Figures,
    load::drive,
    postgres_cpu::LocalPostgres,
    target::{ServerCpu, Target, channels, process_cpu},
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("scaleout"), run: |bench| Box::pin(run(bench)) };

/// The cluster sizes measured.
const SIZES: [usize; 3] = [1, 2, 3];
/// How often the advisory-lock queue is sampled during a refresh load.
const LOCK_SAMPLE: Duration = Duration::from_millis(50);
/// The client's connections are a multiple of this, so that every N gets
/// an even share per instance.
const SPREAD: usize = 6;

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    anyhow::ensure!(bench.target.cpu().is_some(), "scaleout starts its own instances: run it without --server");
    let (rounds, trials) = if bench.quick { (1, 10) } else { (3, 100) };
    let flush_probe = if bench.quick { Duration::from_millis(200) } else { Duration::from_secs(1) };
    let own_postgres;
    let own_first;
    let (url, first) = match bench.database_url {
        Some(url) => (url.to_string(), bench.target),
        None => {
            own_postgres = tokio::task::spawn_blocking(Postgres::start_new).await?.ok_or_else(|| {
                anyhow::anyhow!("scaleout needs PostgreSQL: --database-url, or SIGIL_PG_BIN for a throwaway cluster")
            })?;
            let url = own_postgres.fresh_database().await;
            own_first = Target::start(None, Some(&url)).await?;
            (url, &own_first)
        }
    };
    let postgres = LocalPostgres::of_url(&url);
    if postgres.is_none() {
        println!("scaleout: PostgreSQL's CPU: not shown (its server is not a process this run can see)");
    }
    let mut cluster = Cluster { url, first, more: Vec::new() };

    let connections = bench.connections.next_multiple_of(SPREAD);
    let first_chan = channels(&first.address, 1).await?.remove(0);
    let mut hot = Vec::new();
    for _ in 0..if bench.quick { 4 } else { 16 } {
        hot.push(login(&first_chan, "admin", bench.password).await?.access_token);
    }
    let chains = refresh_chains(&first_chan, bench.password, connections * bench.streams).await?;
    println!(
        "scaleout: {connections} connections × {} streams spread over the N instances, {:?} per load, {rounds} round(s) of N = 1, 2, 3, {trials} propagation trials per round",
        bench.streams, bench.duration
    );

    let plan = Plan { hot, chains, connections, bench, trials, flush_probe, postgres };
    let mut rows: Vec<Row> = SIZES.iter().map(|&n| Row::new(n)).collect();
    let mut results = Vec::new();
    for _ in 0..rounds {
        for row in &mut rows {
            cluster.grow_to(row.n).await?;
            results.extend(plan.measure(&cluster, row).await?);
        }
        cluster.shrink_to_one();
    }
    results.extend(rows.iter().filter(|row| row.n > 1).map(Row::propagation_figures));
    print_table(&rows);
    Ok(results)
}

/// What every N is measured with.
struct Plan<'a> {
    /// Access tokens `Validate` takes in turn (each in every instance's
    /// signature cache after its first call).
    hot: Vec<String>,
    /// One refresh-token chain per worker, shared by every N: the store is
    /// one, so a chain rotated on one instance goes on on any other.
    chains: Arc<Vec<tokio::sync::Mutex<String>>>,
    /// The client's connections, spread over the instances.
    connections: usize,
    bench: &'a Bench<'a>,
    /// Propagation trials per round.
    trials: usize,
    /// How long the disk's flush rate is probed before each refresh load.
    flush_probe: Duration,
    postgres: Option<LocalPostgres>,
}

impl Plan<'_> {
    /// One round of `row`'s N on `cluster` (which has N instances): Validate,
    /// then the disk's flush rate and Refresh, then the propagation trials.
    async fn measure(&self, cluster: &Cluster<'_>, row: &mut Row) -> anyhow::Result<[Figures; 2]> {
        let (n, bench) = (row.n, self.bench);
        let chans = cluster.spread(self.connections).await?;
        let before = Cpu::now(cluster, self.postgres.as_ref());
        let call = validate_round_robin(self.hot.clone());
        let validate = drive(&format!("validate n={n}"), cluster, &chans, bench.streams, bench.duration, call).await;
        row.validate.add(&validate, &Cpu::now(cluster, self.postgres.as_ref()).since(&before));

        row.flushes.push(disk_flush_rate(self.flush_probe).await?);
        let before = Cpu::now(cluster, self.postgres.as_ref());
        let call = refresh_along(self.chains.clone());
        let name = format!("refresh n={n}");
        let load = drive(&name, cluster, &chans, bench.streams, bench.duration, call);
        let (refresh, waiters) = cluster.sampling_lock_waiters(load).await?;
        row.lock_waiters.push(waiters);
        row.refresh.add(&refresh, &Cpu::now(cluster, self.postgres.as_ref()).since(&before));
        row.connections.push(cluster.database_connections().await?);

        if n > 1 {
            for trial in 0..self.trials {
                // Revoked on each instance in turn, enforced by all the others.
                let revoker = trial % n;
                let others: Vec<Channel> = (0..n).filter(|&i| i != revoker).map(|i| chans[i].clone()).collect();
                match enforced_by_all(&chans[revoker], &others, bench.password).await? {
                    Some(elapsed) => row.propagation.record(elapsed.as_nanos() as u64)?,
                    None => row.propagation_errors += 1,
                }
            }
        }
        Ok([validate, refresh])
    }
}

/// The instances on the shared database: the first one stays for the whole
/// scenario, the others come and go with N.
struct Cluster<'a> {
    url: String,
    first: &'a Target,
    more: Vec<Target>,
}

impl Cluster<'_> {
    fn instances(&self) -> impl Iterator<Item = &Target> {
        std::iter::once(self.first).chain(&self.more)
    }

    async fn grow_to(&mut self, n: usize) -> anyhow::Result<()> {
        while 1 + self.more.len() < n {
            self.more.push(Target::start(None, Some(&self.url)).await?);
        }
        Ok(())
    }

    /// Stops every instance but the first (killed: what they acknowledged
    /// is committed).
    fn shrink_to_one(&mut self) {
        self.more.clear();
    }

    /// `count` connections, connection `k` to instance `k mod N`: the first
    /// N of them reach instance 0, 1, … N-1 in that order.
    async fn spread(&self, count: usize) -> anyhow::Result<Vec<Channel>> {
        let addresses: Vec<&str> = self.instances().map(|t| t.address.as_str()).collect();
        let mut chans = Vec::with_capacity(count);
        for k in 0..count {
            chans.extend(channels(addresses[k % addresses.len()], 1).await?);
        }
        Ok(chans)
    }

    /// The connections the instances hold to the database now (their pools
    /// and their `LISTEN` connections).
    async fn database_connections(&self) -> anyhow::Result<i64> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await?;
        drop(client);
        let _ = driver.await;
        Ok(row.get(0))
    }

    /// Runs `load` while sampling, every [`LOCK_SAMPLE`], how many
    /// transactions wait for an advisory lock in this database: the locks
    /// that give the revocation and event logs their one sequence across
    /// every instance, held until commit. Returns `load`'s output and the mean of the samples.
    async fn sampling_lock_waiters<T>(&self, load: impl Future<Output = T>) -> anyhow::Result<(T, f64)> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let mut tick = tokio::time::interval(LOCK_SAMPLE);
        let mut samples = Vec::new();
        tokio::pin!(load);
        let output = loop {
            tokio::select! {
                output = &mut load => break output,
                _ = tick.tick() => {
                    let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
                    samples.push(client.query_one(waiting, &[]).await?.get::<_, i64>(0) as f64);
                }
            }
        };
        drop(client);
        let _ = driver.await;
        Ok((output, samples.iter().sum::<f64>() / samples.len().max(1) as f64))
    }
}

impl ServerCpu for Cluster<'_> {
    /// Every instance's CPU, summed.
    fn cpu(&self) -> Option<Duration> {
        self.instances().map(Target::cpu).sum()
    }
}

/// Whose CPU a sample counts, in the order printed.
const ACCOUNTS: usize = 4;
const SIGIL: usize = 0;
const POSTGRES: usize = 1;
const CLIENT: usize = 2;
/// Every process of the machine (others' builds too): what is not ours is
/// the difference.
const MACHINE: usize = 3;

/// CPU time so far, by account.
struct Cpu {
    at: Instant,
    spent: [Option<Duration>; ACCOUNTS],
}

impl Cpu {
    fn now(cluster: &Cluster<'_>, postgres: Option<&LocalPostgres>) -> Self {
        let mut spent = [None; ACCOUNTS];
        spent[SIGIL] = cluster.cpu();
        spent[POSTGRES] = postgres.and_then(LocalPostgres::cpu);
        spent[CLIENT] = process_cpu(std::process::id());
        spent[MACHINE] = machine_cpu();
        Self { at: Instant::now(), spent }
    }

    /// What was spent from `before` to this sample.
    fn since(&self, before: &Self) -> Spent {
        let spent = std::array::from_fn(|i| self.spent[i].zip(before.spent[i]).map(|(a, b)| a.saturating_sub(b)));
        Spent { elapsed: self.at - before.at, spent }
    }
}

/// CPU spent over one load, by account.
struct Spent {
    elapsed: Duration,
    spent: [Option<Duration>; ACCOUNTS],
}

/// Busy time of every core so far (user, nice, system, irq, softirq, steal
/// from `/proc/stat`, in clock ticks of 10 ms).
fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| ticks.get(i).copied()).sum::<Option<u64>>()?;
    Some(Duration::from_millis(busy * 10))
}

/// One load's figures for one N, over the rounds.
struct Load {
    rates: Vec<f64>,
    requests: u64,
    elapsed: Duration,
    spent: [Option<Duration>; ACCOUNTS],
}

impl Load {
    fn new() -> Self {
        Self { rates: Vec::new(), requests: 0, elapsed: Duration::ZERO, spent: [Some(Duration::ZERO); ACCOUNTS] }
    }

    fn add(&mut self, figures: &Figures, spent: &Spent) {
        self.rates.push(figures.rate());
        self.requests += figures.requests;
        self.elapsed += spent.elapsed;
        for (total, more) in self.spent.iter_mut().zip(spent.spent) {
            *total = total.zip(more).map(|(a, b)| a + b);
        }
    }

    fn rate(&self) -> f64 {
        median(self.rates.clone())
    }

    /// Where the CPU went, in % of one core (two cores: 200 %), the mean
    /// over the rounds: `Sigil + PostgreSQL + client (+ the rest of the machine)`.
    fn split(&self) -> String {
        let (sigil, postgres, client) = (self.spent[SIGIL], self.spent[POSTGRES], self.spent[CLIENT]);
        let ours = [sigil, postgres, client].into_iter().sum::<Option<Duration>>();
        let rest = self.spent[MACHINE].zip(ours).map(|(m, o)| m.saturating_sub(o));
        let share = |cpu: Option<Duration>| {
            cpu.map(|c| format!("{:.0}", c.as_secs_f64() / self.elapsed.as_secs_f64() * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        format!("{} + {} + {} (+{})", share(sigil), share(postgres), share(client), share(rest))
    }

    /// CPU per request of one account, in µs.
    fn per_request(&self, account: usize) -> String {
        self.spent[account]
            .map(|c| format!("{:.0}", c.as_secs_f64() * 1e6 / self.requests.max(1) as f64))
            .unwrap_or_else(|| "-".into())
    }
}

/// Everything measured for one N.
struct Row {
    n: usize,
    validate: Load,
    refresh: Load,
    /// Database connections after each refresh load.
    connections: Vec<i64>,
    /// The mean number of transactions waiting for an advisory lock over
    /// each refresh load.
    lock_waiters: Vec<f64>,
    /// The disk's flush rate just before each refresh load.
    flushes: Vec<f64>,
    propagation: Histogram<u64>,
    propagation_errors: u64,
}

impl Row {
    fn new(n: usize) -> Self {
        Self {
            n,
            validate: Load::new(),
            refresh: Load::new(),
            connections: Vec::new(),
            flushes: Vec::new(),
            lock_waiters: Vec::new(),
            propagation: Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid")),
            propagation_errors: 0,
        }
    }

    fn propagation_figures(&self) -> Figures {
        Figures {
            name: format!("propagation n={}", self.n),
            requests: self.propagation.len(),
            errors: self.propagation_errors,
            elapsed: Duration::ZERO,
            latency: self.propagation.clone(),
            server_cpu: None,
        }
    }

    fn propagation(&self) -> String {
        if self.n == 1 {
            return "-".into();
        }
        let q = |p: f64| Duration::from_nanos(self.propagation.value_at_quantile(p));
        format!(
            "{:.2?} / {:.2?} / {:.2?} ({})",
            q(0.5),
            q(0.99),
            Duration::from_nanos(self.propagation.max()),
            self.propagation.len()
        )
    }
}

/// The same-run bound of one durable write after another: 8 kB written and
/// `fdatasync`ed in turn for `probe`, on the temporary directory's file
/// system (the throwaway cluster's; PostgreSQL flushes its WAL the same
/// way), per second.
async fn disk_flush_rate(probe: Duration) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek as _, Write as _};
        let mut file = tempfile::tempfile()?;
        let page = [0x5a_u8; 8192];
        let (started, mut flushes) = (Instant::now(), 0u32);
        while started.elapsed() < probe {
            file.rewind()?;
            file.write_all(&page)?;
            file.sync_data()?;
            flushes += 1;
        }
        Ok(f64::from(flushes) / started.elapsed().as_secs_f64())
    })
    .await?
}

/// One row per N, then the ratios to N = 1.
fn print_table(rows: &[Row]) {
    println!();
    println!("scaleout: N instances on one PostgreSQL (req/s: median of the rounds; CPU: % of one core, mean)");
    println!(
        "| N | Validate/s | CPU Sigil + PG + client (+ rest) | Sigil µs/validate | Refresh/s | CPU Sigil + PG + client (+ rest) | Sigil µs/refresh | PG µs/refresh | disk flushes/s | advisory-lock waiters | PG connections | revoke → refused by all others: p50 / p99 / max (trials) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let connections = row.connections.iter().max().map_or_else(|| "-".into(), i64::to_string);
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {:.1} | {} | {} |",
            row.n,
            row.validate.rate(),
            row.validate.split(),
            row.validate.per_request(SIGIL),
            row.refresh.rate(),
            row.refresh.split(),
            row.refresh.per_request(SIGIL),
            row.refresh.per_request(POSTGRES),
            median(row.flushes.clone()),
            median(row.lock_waiters.clone()),
            connections,
            row.propagation()
        );
    }
    let per_flush: Vec<String> =
        rows.iter().map(|row| format!("N={} {:.2}", row.n, row.refresh.rate() / median(row.flushes.clone()))).collect();
    println!("scaleout: Refresh/s ÷ disk flushes/s: {}", per_flush.join(", "));
    if let Some((one, more)) = rows.split_first() {
        for row in more {
            println!(
                "scaleout: N={}÷N=1: Validate {:.2}, Refresh {:.2}",
                row.n,
                row.validate.rate() / one.validate.rate(),
                row.refresh.rate() / one.refresh.rate()
            );
        }
    }
}
