//! [`h2load`]: one run of nghttp2's `h2load` against a proxy (or, with
//! [`h2load_grpc`], a unary gRPC call sent straight to a server), its
//! request rate and, from its per-request log, its latency percentiles.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use prost::Message;

/// At most one request in this many may miss (non-2xx or failed).
const MISS_LIMIT_PER_MILLE: u64 = 1000;

/// How long a connection may stay silent before h2load gives it up.
const INACTIVITY_LIMIT: Duration = Duration::from_secs(3);

/// A paced connection's request rate: below 100 per second h2load's
/// `--rps` timer fires once per request (at 100 and above it fires every
/// 10 ms and sends that 10 ms's requests at once).
const PACED_RATE_PER_CONNECTION: f64 = 50.0;

/// The finest step of h2load's connection-start timer (`--rate-period`).
const START_STEP: Duration = Duration::from_millis(1);

/// The load shape of one run.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    /// Connections (h2load's clients); [`Arrivals::Paced`] picks its own.
    pub(crate) connections: usize,
    /// Concurrent streams per connection (HTTP/2; 1 for HTTP/1.1).
    pub(crate) streams: usize,
    /// HTTP/1.1 instead of h2c (nginx has no h2c listener here).
    pub(crate) http1: bool,
    pub(crate) duration: Duration,
    pub(crate) arrivals: Arrivals,
}

/// How a run's requests arrive.
#[derive(Clone, Copy)]
pub(crate) enum Arrivals {
    /// Closed loop: each connection keeps `streams` requests in flight.
    Closed,
    /// Open loop, `rate` requests per second split over the shape's
    /// connections with `--rps`: each connection sends its share of every
    /// 10 ms at once, so the server sees a burst of `rate / 100` requests
    /// every 10 ms and the latency is mostly that burst's queue.
    Bursts { rate: u64 },
    /// Open loop, `rate` requests per second arriving one at a time: each of
    /// `rate / 50` connections sends one request every 20 ms, and their
    /// starts are spread over those 20 ms (in 1 ms steps, h2load's finest),
    /// so at most `rate / 1000` requests arrive in the same millisecond.
    Paced { rate: u64 },
}

impl Shape {
    /// The connections the run opens: a paced run picks its own.
    pub(crate) fn connections_opened(&self) -> usize {
        match self.arrivals {
            Arrivals::Paced { rate } => (rate as f64 / PACED_RATE_PER_CONNECTION).ceil().max(1.0) as usize,
            Arrivals::Closed | Arrivals::Bursts { .. } => self.connections,
        }
    }
}

/// What one run measured.
pub(crate) struct Run {
    /// Successful (2xx) responses per second.
    pub(crate) rate: f64,
    /// 2xx responses.
    pub(crate) succeeded: u64,
    /// Requests answered otherwise or not at all.
    pub(crate) missed: u64,
    /// Per-request latency (send to end of response), sorted, in µs.
    pub(crate) latencies_us: Vec<u64>,
}

impl Run {
    /// The `q` quantile (0..=1) of the latency, in milliseconds.
    pub(crate) fn latency_ms(&self, q: f64) -> f64 {
        let Some(last) = self.latencies_us.len().checked_sub(1) else { return f64::NAN };
        self.latencies_us[((last as f64) * q).round() as usize] as f64 / 1000.0
    }

    /// Prints the run as one row of an open-loop table, named `name`.
    pub(crate) fn print_latency(&self, name: &str) {
        println!(
            "  {name:<28} {:>9.0} req/s   p50 {:.3} ms, p99 {:.3} ms ({} requests, {} missed)",
            self.rate,
            self.latency_ms(0.5),
            self.latency_ms(0.99),
            self.succeeded,
            self.missed
        );
    }
}

/// Runs h2load against `http://addr/` with `Authorization: Bearer token`;
/// fails when more than one request in [`MISS_LIMIT_PER_MILLE`] is not
/// answered 2xx (a proxy that denied or broke would otherwise look fast).
pub(crate) async fn h2load(addr: SocketAddr, token: &str, shape: Shape) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut command = command(&dir.path().join("requests.tsv"), shape);
    command.args(["-H", &format!("authorization: Bearer {token}")]).arg(format!("http://{addr}/"));
    finish(command, dir, addr, shape).await
}

/// Runs h2load with the unary gRPC call `path` (`/package.Service/Method`)
/// of `message` straight to the gRPC server at `addr`, over h2c. Each
/// request is the same length-prefixed body (`-d`), so h2load's client
/// does no per-call protobuf work: the two cores go to the server.
///
/// h2load sees only the HTTP status (200 for every gRPC answer); the
/// caller checks beforehand, with a real client, that the message gets
/// the answer it means to measure.
pub(crate) async fn h2load_grpc(
    addr: SocketAddr,
    path: &str,
    message: &impl Message,
    shape: Shape,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("request.grpc");
    std::fs::write(&body, grpc_frame(message))?;
    let mut command = command(&dir.path().join("requests.tsv"), shape);
    command
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("--data={}", body.display()))
        .arg(format!("http://{addr}{path}"));
    finish(command, dir, addr, shape).await
}

/// `message` as one gRPC message on the wire: not compressed (0), its
/// length as four big-endian bytes, then its encoding.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

/// The h2load command line of `shape`, logging every request to `log`.
fn command(log: &Path, shape: Shape) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("h2load");
    command
        .arg(format!("-m{}", shape.streams))
        .arg(format!("--log-file={}", log.display()))
        // A connection silent this long is given up (counted as a timeout)
        // instead of holding the run open after its duration.
        .arg(format!("-N{}", INACTIVITY_LIMIT.as_secs()));
    if shape.http1 {
        command.args(["-p", "http/1.1"]);
    }
    let seconds = shape.duration.as_secs_f64();
    let duration = format!("-D{}", seconds.ceil() as u64);
    let connections = shape.connections_opened();
    command.arg(format!("-c{connections}"));
    match shape.arrivals {
        Arrivals::Closed => command.arg(duration),
        Arrivals::Bursts { rate } => command.arg(duration).arg(format!("--rps={}", (rate / connections as u64).max(1))),
        Arrivals::Paced { rate } => {
            // `--rps=0` would send nothing and wait for the inactivity limit.
            let rate = rate.max(1);
            let period_steps = (1000.0 / PACED_RATE_PER_CONNECTION) as usize / START_STEP.as_millis() as usize;
            // h2load's -r (staggered starts) excludes -D: the run is the
            // request count that takes the duration at this rate.
            let requests = ((rate as f64 * seconds).round() as u64).max(connections as u64);
            command
                .arg(format!("-n{requests}"))
                .arg(format!("-r{}", connections.div_ceil(period_steps.max(1))))
                .arg(format!("--rate-period={}ms", START_STEP.as_millis()))
                .arg(format!("--rps={}", rate as f64 / connections as f64))
        }
    };
    command
}

/// Runs `command` (its log in `dir`) and reads its rate, answers and latencies.
async fn finish(
    mut command: tokio::process::Command,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    shape: Shape,
) -> anyhow::Result<Run> {
    let log = dir.path().join("requests.tsv");
    let limit = shape.duration + INACTIVITY_LIMIT * 2;
    let output = tokio::time::timeout(limit, command.stdin(Stdio::null()).kill_on_drop(true).output())
        .await
        .map_err(|_| anyhow::anyhow!("h2load via {addr} still ran after {limit:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Its command line holds the token: never echo it, only its summary.
    anyhow::ensure!(output.status.success(), "h2load failed ({}):\n{stdout}", output.status);
    let rate: f64 = line_after(&stdout, "finished in ")
        .and_then(|rest| rest.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no req/s in h2load's output:\n{stdout}"))?;
    let codes = line_after(&stdout, "status codes: ").unwrap_or_default();
    let count =
        |what: &str| -> u64 { codes.split(", ").find_map(|c| c.strip_suffix(what)?.trim().parse().ok()).unwrap_or(0) };
    let (succeeded, other) = (count(" 2xx"), count(" 3xx") + count(" 4xx") + count(" 5xx"));
    let requests = line_after(&stdout, "requests: ").unwrap_or_default();
    let counted =
        |what: &str| requests.split(", ").find_map(|c| c.strip_suffix(what)?.parse::<u64>().ok()).unwrap_or(0);
    let failed = counted(" failed") + counted(" timeout");
    // A few answers in a thousand may miss (a 503 when the shared cores
    // starve the authorizer past Envoy's 1 s timeout; streams cut when the
    // duration ends): counted and printed. More means a broken setup.
    let missed = other + failed;
    anyhow::ensure!(
        succeeded > 0 && missed * MISS_LIMIT_PER_MILLE <= succeeded,
        "h2load via {addr}: too many requests did not succeed: {requests}; {codes}"
    );
    let mut latencies_us: Vec<u64> = std::fs::read_to_string(&log)?
        .lines()
        .filter_map(|row| {
            let mut columns = row.split('\t');
            let status = columns.nth(1)?;
            status.starts_with('2').then_some(())?;
            columns.next()?.trim().parse().ok()
        })
        .collect();
    latencies_us.sort_unstable();
    Ok(Run { rate, succeeded, missed, latencies_us })
}

/// Whether h2load is on the PATH.
pub(crate) fn installed() -> bool {
    std::process::Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn line_after<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().find_map(|line| line.trim().strip_prefix(prefix))
}
