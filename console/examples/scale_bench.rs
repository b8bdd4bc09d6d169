//! The console against a real server holding 100,000 active sessions (issue
//! 17, "Scale"). Seeds a store with `sigil-bench seed` (or takes
//! `--data-dir`), starts the release `sigil-server` on it, runs the console's
//! worker in this process through a proxy that counts every call, and prints
//! three figures: the time to the first full screen (a screenful of
//! sessions drawn into a 200×50 frame, while the rest loads in the
//! background; the time to load everything is printed too), the console's
//! RSS with every row loaded, and the console's requests
//! per 100 events while the server absorbs a login storm. No assertions: the
//! figures go into BENCHMARKS.md.
//!
//! ```sh
//! cargo build --release -p sigil-server -p sigil-tests --bins
//! cargo run --release -p sigil-console --example scale_bench
//! cargo run --release -p sigil-console --example scale_bench -- --data-dir /tmp/scale100k
//! ```
//!
//! The RSS is this process's: the console's state and worker, plus the small
//! counting proxy and the storm's clients (the server runs in its own
//! process).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use clap::Parser;
use ratatui::{Terminal, backend::TestBackend};
use sigil_console::{action::Action, app::App, backend, messages::Update, ui};
use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::Channel;

#[path = "../tests/support/counting_proxy.rs"]
mod support;
use support::{Counts, counting_proxy, quiet};

/// The admin password `sigil-bench seed` gives its admin.
const ADMIN_PASSWORD: &str = "bench-admin-password";

#[derive(Parser)]
#[command(about = "The console's figures against a server holding many sessions")]
struct Args {
    /// A store seeded before (`sigil-bench seed --data-dir …`); without it,
    /// a temporary one is seeded first.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Sessions to seed (without `--data-dir`).
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Users to seed (without `--data-dir`).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Logins in the storm.
    #[arg(long, default_value_t = 200)]
    logins: usize,
    /// Logins in flight at once during the storm.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // target/release/examples/scale_bench → target/release/
    let bins = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("no directory above the example")?;
    let scratch = tempfile::tempdir()?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            let dir = scratch.path().join("data");
            seed(&bins, &dir, args.sessions, args.users).await?;
            dir
        }
    };
    let (_server, server_addr) = start_server(&bins, &data_dir).await?;

    let mut identity = IdentityServiceClient::new(connect(server_addr).await?);
    let login = || pb::AuthenticateRequest {
        username: "admin".into(),
        password: ADMIN_PASSWORD.into(),
        device_name: Some("scale-bench".into()),
        audience: None,
    };
    let token = identity.authenticate(login()).await?.into_inner().access_token;
    let active = count_sessions(server_addr, &token).await?;
    println!("the store holds {active} active sessions");

    // The console, through the counting proxy, with its updates applied to
    // an App as the real event loop does.
    let (proxy, counts) = counting_proxy(connect(server_addr).await?).await?;
    let events = Arc::new(AtomicUsize::new(0));
    let launched = Instant::now();
    let worker = backend::login(&format!("http://{proxy}"), "admin", ADMIN_PASSWORD, &backend::TlsFiles::default())
        .await
        .map_err(|e| anyhow::anyhow!("console login: {e}"))?;
    let (update_tx, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let (_commands, command_rx) = tokio::sync::mpsc::unbounded_channel();
    worker.spawn(update_tx, command_rx);
    let mut app = App::new("scale-bench", "admin", SystemTime::now());
    let mut terminal = Terminal::new(TestBackend::new(200, 50))?;
    let Ok(size) = terminal.size();
    app.update(Action::Resize(size));
    let page = app.page_rows();
    let console = Arc::new(Mutex::new((app, Instant::now())));
    let loaded_at = Arc::new(Mutex::new(None));
    let applied = (console.clone(), events.clone(), loaded_at.clone());
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            match update {
                Update::Event(_) => {
                    applied.1.fetch_add(1, Ordering::Relaxed);
                }
                // The worker's full load is done.
                Update::Loading(None) => *applied.2.lock().expect("loaded") = Some(Instant::now()),
                _ => {}
            }
            let mut console = applied.0.lock().expect("console");
            console.0.update(Action::Backend(update));
            console.1 = Instant::now();
        }
    });

    // 1. Time to the first full screen: a screenful of sessions drawn (the
    // rest loads in the background meanwhile).
    eventually("a screenful of sessions", Duration::from_secs(120), || {
        console.lock().expect("console").0.sessions.len() >= page.min(active)
    })
    .await?;
    {
        let console = console.lock().expect("console");
        terminal.draw(|frame| ui::draw(frame, &console.0))?;
    }
    let first_screen = launched.elapsed();
    eventually("every session and token loaded", Duration::from_secs(300), || {
        loaded_at.lock().expect("loaded").is_some() && console.lock().expect("console").0.sessions.len() >= active
    })
    .await?;
    let everything = loaded_at.lock().expect("loaded").map(|at| at - launched).unwrap_or_default();
    quiet(&console, || total(&counts)).await;

    // 2. The console's memory with every row loaded.
    let rss = rss_mib().context("no VmRSS in /proc/self/status")?;

    // 3. The console's requests per 100 events during a login storm.
    let (calls_before, events_before) = (total(&counts), events.load(Ordering::Relaxed));
    let by_method_before = counts.lock().expect("counts").clone();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let storm = (0..args.concurrency).map(|_| {
        let (mut identity, next, logins) = (identity.clone(), next.clone(), args.logins);
        async move {
            let mut sessions = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < logins {
                sessions.push(identity.authenticate(login()).await?.into_inner().session_id);
            }
            Ok::<_, tonic::Status>(sessions)
        }
    });
    let mut sessions = Vec::new();
    for logins in futures::future::join_all(storm).await {
        sessions.extend(logins?);
    }
    let storm_took = started.elapsed();
    eventually("every login of the storm on screen", Duration::from_secs(120), || {
        let console = console.lock().expect("console");
        sessions.iter().all(|id| console.0.sessions.get(id).is_some())
    })
    .await?;
    let shown = started.elapsed();
    quiet(&console, || total(&counts)).await;
    let calls = total(&counts) - calls_before;
    let seen = events.load(Ordering::Relaxed) - events_before;
    let by_method: BTreeMap<String, usize> = counts
        .lock()
        .expect("counts")
        .iter()
        .map(|(path, n)| (path.clone(), n - by_method_before.get(path).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();

    println!("time to the first full screen ({active} sessions, 200×50): {first_screen:.2?}");
    println!("every session and token loaded in the background after {everything:.2?}");
    println!("console RSS with every row loaded: {rss:.1} MiB");
    println!(
        "login storm: {} logins in {storm_took:.2?}, all on screen after {shown:.2?}; the console saw {seen} events \
         and made {calls} requests: {:.1} per 100 events",
        sessions.len(),
        calls as f64 * 100.0 / seen.max(1) as f64
    );
    println!("the console's requests during the storm, by method: {by_method:?}");
    Ok(())
}

/// Seeds `dir` with the `sigil-bench` next to this example's directory.
async fn seed(bins: &Path, dir: &Path, sessions: usize, users: usize) -> anyhow::Result<()> {
    let bench = bins.join("sigil-bench");
    anyhow::ensure!(bench.exists(), "{} is missing: cargo build --release -p sigil-tests --bins", bench.display());
    let started = Instant::now();
    let status = tokio::process::Command::new(bench)
        .arg("seed")
        .arg("--data-dir")
        .arg(dir)
        .args(["--sessions", &sessions.to_string(), "--users", &users.to_string()])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "sigil-bench seed failed: {status}");
    println!("seeded {sessions} sessions of {users} users in {:.1?}", started.elapsed());
    Ok(())
}

/// Starts the release `sigil-server` on `dir`; returns the child (killed
/// on drop) and its gRPC address.
async fn start_server(bins: &Path, dir: &Path) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let binary = bins.join("sigil-server");
    anyhow::ensure!(binary.exists(), "{} is missing: cargo build --release -p sigil-server", binary.display());
    let mut child = tokio::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-format", "text"])
        // The storm logs in as one account, many at once: the lockout
        // would (rightly) admit only a few in flight.
        .args(["--lockout-threshold", "1000000"])
        .arg("--data-dir")
        .arg(dir)
        .env("SIGIL_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SIGIL_LOG", "warn,sigil_server::server=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next_line().await?.context("sigil-server exited before listening")?;
        if !line.contains("sigil-server listening") {
            continue;
        }
        let rest = line.split_once("grpc_addr=").map(|(_, rest)| rest).unwrap_or_default();
        if let Some(Ok(address)) = rest.split_whitespace().next().map(str::parse) {
            break address;
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

/// Active sessions in the store, counted directly (not through the proxy).
async fn count_sessions(server: SocketAddr, token: &str) -> anyhow::Result<usize> {
    let mut admin = AdminServiceClient::new(connect(server).await?);
    let (mut n, mut page_token) = (0, String::new());
    loop {
        let mut request =
            tonic::Request::new(pb::ListSessionsRequest { page_size: 1000, page_token, ..Default::default() });
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        let page = admin.list_sessions(request).await?.into_inner();
        n += page.sessions.len();
        if page.next_page_token.is_empty() {
            return Ok(n);
        }
        page_token = page.next_page_token;
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

/// Every call the console made so far.
fn total(counts: &Counts) -> usize {
    counts.lock().expect("counts").values().sum()
}

/// Waits until `ready` holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        anyhow::ensure!(Instant::now() < deadline, "{what} never happened within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Resident memory of this process.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
