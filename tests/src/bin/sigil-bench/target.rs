//! [`Target`]: the server under test (a child `sigil-server` this run
//! started, or one named by `--server`), its CPU and memory, and the
//! connections to it.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::Channel;

use crate::ADMIN_PASSWORD;

/// The server under test.
pub(crate) struct Target {
    pub(crate) address: String,
    /// Its HTTP listener (`/authz`), when this run started it.
    pub(crate) http_addr: Option<SocketAddr>,
    pid: Option<u32>,
    _child: Option<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// A server someone else started, at `address`: no CPU or memory figures.
    pub(crate) fn remote(address: String) -> Self {
        Self { address, http_addr: None, pid: None, _child: None, _dir: None }
    }

    pub(crate) async fn start(data_dir: Option<&Path>, database_url: Option<&str>) -> anyhow::Result<Self> {
        Self::start_on(data_dir, database_url, None).await
    }

    /// As [`Target::start`], the server confined to the CPUs `cpus` (a
    /// `taskset -c` list, e.g. `0`) when given: its runtime then sizes
    /// itself to them, and a load generator confined to the others (run
    /// this bench under `taskset -c 1`) no longer takes the server's core.
    pub(crate) async fn start_on(
        data_dir: Option<&Path>,
        database_url: Option<&str>,
        cpus: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = data_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.path().join("data"));
        let binary = std::env::current_exe()?.with_file_name("sigil-server");
        anyhow::ensure!(binary.exists(), "{} is missing: cargo build --release --workspace --bins", binary.display());
        // taskset sets the affinity and then execs the server: the pid is the server's.
        let mut command = match cpus {
            Some(cpus) => {
                let mut taskset = tokio::process::Command::new("taskset");
                taskset.args(["-c", cpus]).arg(binary);
                taskset
            }
            None => tokio::process::Command::new(binary),
        };
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
        let (address, http_addr) = loop {
            let line = lines.next_line().await?.ok_or_else(|| anyhow::anyhow!("sigil-server exited"))?;
            if let Some(address) = sigil_tests::bound_grpc_addr(&line) {
                break (address.to_string(), bound_http_addr(&line));
            }
        };
        println!("started sigil-server (pid {:?}) on {address} in {:?}", child.id(), started.elapsed());
        if let Some(pid) = child.id().filter(|_| cpus.is_some()) {
            println!(
                "CPUs: sigil-server {}, this bench and its load generators {}",
                allowed_cpus(&pid.to_string()),
                allowed_cpus("self")
            );
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            address: format!("http://{address}"),
            http_addr,
            pid: child.id(),
            _child: Some(child),
            _dir: Some(dir),
        })
    }

    /// The server's process id, when this run started it.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// User + system CPU time of the server process so far.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        process_cpu(self.pid?)
    }

    /// Resident memory of the server process.
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }
}

/// The server CPU a scenario's figures count: one server ([`Target`]), or
/// every instance of a cluster (the `scaleout` scenario).
pub(crate) trait ServerCpu {
    /// User + system CPU time so far; `None` without a process to read.
    fn cpu(&self) -> Option<Duration>;
}

impl ServerCpu for Target {
    fn cpu(&self) -> Option<Duration> {
        Target::cpu(self)
    }
}

/// User + system CPU time of process `pid` so far, from `/proc/<pid>/stat`
/// (in clock ticks of 10 ms).
pub(crate) fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The CPUs process `pid` (or `self`) may run on, as `/proc` lists them.
fn allowed_cpus(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|cpus| cpus.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The HTTP address in the server's `sigil-server listening` line
/// (`--log-format text`: `… http_addr=127.0.0.1:PORT`).
fn bound_http_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("http_addr=")? + "http_addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `n` HTTP/2 connections to `address`.
pub(crate) async fn channels(address: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Channel::from_shared(address.to_string())?.tcp_nodelay(true).connect().await?);
    }
    Ok(out)
}
