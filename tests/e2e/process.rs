//! The real `sigil-server` binary as a child process, started as an operator
//! would start it: any flags, optionally under `prlimit`, with both of its
//! addresses read from its log, signals sent to it, its CPU time read from
//! `/proc`. For the tests of listeners, start-up and shutdown.

use std::{
    net::SocketAddr,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

/// A running (or exited) `sigil-server`.
pub(crate) struct Server {
    child: tokio::process::Child,
    /// Process id.
    pub(crate) pid: u32,
    /// Everything it wrote to stdout and stderr so far, in order of arrival.
    pub(crate) output: Arc<Mutex<String>>,
    /// Its gRPC and HTTP addresses, once it logged them.
    pub(crate) addrs: Option<(SocketAddr, SocketAddr)>,
}

/// Starts `sigil-server` with `flags` on `data_dir`, under `wrapper` (e.g.
/// `["prlimit", "--nofile=256:256", "--"]`) when given. Ephemeral loopback
/// ports unless `flags` name `--listen` / `--http-listen`.
pub(crate) fn spawn(wrapper: &[&str], data_dir: &Path, flags: &[&str], admin_password: Option<&str>) -> Server {
    let binary = sigil_tests::server_binary();
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = tokio::process::Command::new(program);
            command.args(rest).arg(&binary);
            command
        }
        None => tokio::process::Command::new(&binary),
    };
    if !flags.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    if !flags.contains(&"--http-listen") {
        command.args(["--http-listen", "127.0.0.1:0"]);
    }
    command.args(flags).arg("--data-dir").arg(data_dir).env("SIGIL_LOG", "info").env_remove("SIGIL_ADMIN_PASSWORD");
    if let Some(password) = admin_password {
        command.env("SIGIL_ADMIN_PASSWORD", password);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sigil-server starts");
    let output = Arc::new(Mutex::new(String::new()));
    collect(child.stdout.take().expect("stdout piped"), output.clone());
    collect(child.stderr.take().expect("stderr piped"), output.clone());
    let pid = child.id().expect("running");
    Server { child, pid, output, addrs: None }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, sink: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut all) = sink.lock() {
                all.push_str(&line);
                all.push('\n');
            }
        }
    });
}

/// Starts `sigil-server` (admin password [`sigil_tests::ADMIN_PASSWORD`])
/// and waits until it logged its addresses.
pub(crate) async fn start(wrapper: &[&str], data_dir: &Path, flags: &[&str]) -> Server {
    let mut server = spawn(wrapper, data_dir, flags, Some(sigil_tests::ADMIN_PASSWORD));
    server.wait_listening().await;
    server
}

impl Server {
    /// Waits (at most 30 s) for the "listening" log line and notes the addresses.
    pub(crate) async fn wait_listening(&mut self) {
        let found = sigil_tests::eventually(Duration::from_secs(30), || {
            let addrs = self.text().lines().find_map(listening_addrs);
            async move { addrs }
        })
        .await;
        self.addrs = Some(found.unwrap_or_else(|| panic!("sigil-server did not start:\n{}", self.text())));
    }

    /// The gRPC address.
    pub(crate) fn grpc(&self) -> SocketAddr {
        self.addrs.expect("listening").0
    }

    /// The HTTP address.
    pub(crate) fn http(&self) -> SocketAddr {
        self.addrs.expect("listening").1
    }

    /// Everything printed so far.
    pub(crate) fn text(&self) -> String {
        self.output.lock().map(|text| text.clone()).unwrap_or_default()
    }

    /// Waits (at most `limit`) until the output contains `needle`.
    pub(crate) async fn wait_for_output(&self, needle: &str, limit: Duration) -> bool {
        sigil_tests::eventually(limit, || {
            let found = self.text().contains(needle).then_some(());
            async move { found }
        })
        .await
        .is_some()
    }

    /// Sends `signal` (e.g. "TERM", "INT") to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    /// Waits at most `limit` for the process to exit.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(limit, self.child.wait()).await.ok()?.expect("child reaped");
        // Let the readers drain what the process wrote last.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while std::sync::Arc::strong_count(&self.output) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        Some(status)
    }

    /// CPU seconds (user + system) the process has used so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).expect("/proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line, i.e. 12 and 13 after it.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / clock_ticks_per_second()
    }

    /// CPU the process uses over the next second, in cores.
    pub(crate) async fn cpu_over_a_second(&self) -> f64 {
        let before = self.cpu_seconds();
        let start = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        (self.cpu_seconds() - before) / start.elapsed().as_secs_f64()
    }
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Both addresses from sigil-server's "listening" log line (text format).
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("sigil-server listening") {
        return None;
    }
    let field = |name: &str| -> Option<SocketAddr> {
        let start = line.find(name)? + name.len();
        line[start..].split_whitespace().next()?.parse().ok()
    };
    Some((field("grpc_addr=")?, field("http_addr=")?))
}

/// Whether `prlimit` (util-linux) can run programs here.
pub(crate) fn have_prlimit() -> bool {
    std::process::Command::new("prlimit")
        .args(["--nofile=256:256", "--", "true"])
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}
