//! The real reverse proxies (Envoy, nginx, Caddy) in front of a Sigil
//! server, for the gateway tests and the gateway figures.
//!
//! Each proxy runs from the very configuration file under `deploy/` that the
//! README shows, with its `{{PLACEHOLDERS}}` (ports, a run directory)
//! filled in, on ephemeral ports, as a child process killed when dropped.
//! Behind it sits [`EchoUpstream`], which answers every request with the
//! headers it received, so a test sees exactly what the proxy let through.
//!
//! A proxy binary comes from `SIGIL_ENVOY` / `SIGIL_NGINX` / `SIGIL_CADDY`
//! (set by `.ci/run`) or from `PATH`. When it is missing a test prints
//! `skipped: …` and returns, except in CI (`CI=true`), where a missing proxy
//! fails the test: CI installs them, so absence there is a broken install,
//! not a reason to pass.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, http::HeaderMap, serve::ListenerExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a proxy may take to open its listener.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long one request through a proxy may take in a test.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// The largest response a test reads (the echo of a few headers).
const RESPONSE_LIMIT: usize = 1 << 20;

/// The headers one request arrived with at the upstream, as the upstream
/// echoes them: lower-case name → every value, in order.
pub type EchoedHeaders = BTreeMap<String, Vec<String>>;

/// A tiny HTTP server that answers any method on any path with 200 and a
/// JSON object of the request headers it received, counting requests.
pub struct EchoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl EchoUpstream {
    /// Starts it on an ephemeral port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("echo upstream binds");
        let addr = listener.local_addr().expect("echo upstream address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new().fallback(move |headers: HeaderMap| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Json(echo(&headers)) }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // No Nagle delay on its answers, as on Sigil's listeners: a head and
        // a body written apart would wait for the proxy's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { addr, hits, stop: Some(stop) }
    }

    /// How many requests reached it so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn echo(headers: &HeaderMap) -> EchoedHeaders {
    let mut echoed = EchoedHeaders::new();
    for (name, value) in headers {
        echoed
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    echoed
}

/// One of the proxies whose configuration `deploy/` ships and the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// Envoy with the `ext_authz` HTTP filter asking Sigil's gRPC `Check`.
    Envoy,
    /// nginx with `auth_request` to Sigil's `/authz`.
    Nginx,
    /// Caddy with `forward_auth` to Sigil's `/authz`.
    Caddy,
}

/// The ports a proxy configuration refers to.
#[derive(Clone, Copy, Debug)]
pub struct ProxyPorts {
    /// Where the proxy listens for clients.
    pub listen: u16,
    /// Sigil's gRPC port (Envoy's `ext_authz` cluster).
    pub sigil_grpc: u16,
    /// Sigil's HTTP port (`/authz` for nginx and Caddy).
    pub sigil_http: u16,
    /// The application behind the proxy.
    pub upstream: u16,
}

impl ProxyKind {
    /// Its name, as in `deploy/`.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Caddy => "caddy",
        }
    }

    fn binary_variable(self) -> &'static str {
        match self {
            ProxyKind::Envoy => "SIGIL_ENVOY",
            ProxyKind::Nginx => "SIGIL_NGINX",
            ProxyKind::Caddy => "SIGIL_CADDY",
        }
    }

    /// The configuration template under `deploy/`.
    pub fn config_template(self) -> PathBuf {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        match self {
            ProxyKind::Envoy => deploy.join("envoy/envoy.yaml"),
            ProxyKind::Nginx => deploy.join("nginx/nginx.conf"),
            ProxyKind::Caddy => deploy.join("caddy/Caddyfile"),
        }
    }

    /// The proxy's binary, if it can be found and runs. When it cannot, says
    /// why: `skipped: …` locally, a panic in CI.
    pub fn locate(self) -> Option<PathBuf> {
        let binary = std::env::var_os(self.binary_variable()).map_or_else(|| PathBuf::from(self.name()), PathBuf::from);
        let version_flag = match self {
            ProxyKind::Envoy => "--version",
            ProxyKind::Nginx => "-v",
            ProxyKind::Caddy => "version",
        };
        let runs = std::process::Command::new(&binary)
            .arg(version_flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if runs {
            return Some(binary);
        }
        let why =
            format!("{} is not installed here ({} or PATH; .ci/run installs it)", self.name(), self.binary_variable());
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {why}");
        println!("skipped: {why}");
        None
    }

    /// Starts the proxy from its `deploy/` configuration and waits until it
    /// accepts connections.
    pub async fn start(self, binary: &Path, ports: ProxyPorts) -> RunningProxy {
        self.start_edited(binary, ports, str::to_string).await
    }

    /// Like [`ProxyKind::start`], with the rendered main configuration file
    /// passed through `edit` first: the benchmark's variants without the
    /// authorizer (Envoy without `ext_authz`, nginx without `auth_request`)
    /// come from the same template, so they differ only by what `edit` cut.
    pub async fn start_edited(self, binary: &Path, ports: ProxyPorts, edit: impl Fn(&str) -> String) -> RunningProxy {
        self.start_under(None, binary, ports, edit).await
    }

    /// Like [`ProxyKind::start_edited`], with the proxy run under `wrapper`
    /// when one is given (the benchmark's instruction counts run Envoy
    /// under valgrind).
    pub async fn start_under(
        self,
        wrapper: Option<&Wrapper>,
        binary: &Path,
        ports: ProxyPorts,
        edit: impl Fn(&str) -> String,
    ) -> RunningProxy {
        let run_dir = tempfile::tempdir().expect("proxy run dir");
        // The whole folder, rendered: a configuration may include files
        // beside it (nginx's snippets).
        let template = self.config_template();
        let folder = template.parent().expect("deploy/<proxy>/");
        for entry in std::fs::read_dir(folder).expect("deploy/ folder readable") {
            let path = entry.expect("deploy/ entry").path();
            let text = std::fs::read_to_string(&path).expect("deploy/ file readable");
            let name = path.file_name().expect("a file name");
            let mut rendered = render(&text, ports, run_dir.path());
            if path == template {
                rendered = edit(&rendered);
            }
            std::fs::write(run_dir.path().join(name), rendered).expect("configuration written");
        }
        let config_path = run_dir.path().join(template.file_name().expect("a file name"));
        let log_path = run_dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path).expect("proxy log");
        let mut command = match wrapper {
            Some(wrapper) => {
                let mut command = tokio::process::Command::new(&wrapper.program);
                command.args(&wrapper.args).arg(binary);
                command
            }
            None => tokio::process::Command::new(binary),
        };
        match self {
            // No hot restart: several Envoys at once must not share memory.
            ProxyKind::Envoy => command.arg("-c").arg(&config_path).args([
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--concurrency",
                "1",
            ]),
            // In the foreground as one process, so that killing it frees the
            // port (a worker would outlive a killed master).
            ProxyKind::Nginx => command.arg("-p").arg(run_dir.path()).arg("-c").arg(&config_path).args([
                "-e",
                "stderr",
                "-g",
                "daemon off; master_process off;",
            ]),
            ProxyKind::Caddy => command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&config_path)
                .env("HOME", run_dir.path())
                .env("XDG_DATA_HOME", run_dir.path())
                .env("XDG_CONFIG_HOME", run_dir.path()),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("proxy starts");
        let mut proxy = RunningProxy {
            kind: self,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], ports.listen)),
            log_path,
            _run_dir: run_dir,
        };
        proxy.wait_ready(wrapper.map_or(START_LIMIT, |w| w.start_limit)).await;
        proxy
    }
}

/// A program a proxy runs under, such as a profiler: `program args… proxy
/// proxy-args…`.
#[derive(Clone, Debug)]
pub struct Wrapper {
    /// The program started in the proxy's place.
    pub program: PathBuf,
    /// Its arguments, before the proxy's binary.
    pub args: Vec<String>,
    /// How long the proxy may take to listen under it.
    pub start_limit: Duration,
}

/// Fills a `deploy/` template: `{{LISTEN_PORT}}`, `{{SIGIL_GRPC_PORT}}`,
/// `{{SIGIL_HTTP_PORT}}`, `{{UPSTREAM_PORT}}` and `{{RUN_DIR}}`.
pub fn render(template: &str, ports: ProxyPorts, run_dir: &Path) -> String {
    template
        .replace("{{LISTEN_PORT}}", &ports.listen.to_string())
        .replace("{{SIGIL_GRPC_PORT}}", &ports.sigil_grpc.to_string())
        .replace("{{SIGIL_HTTP_PORT}}", &ports.sigil_http.to_string())
        .replace("{{UPSTREAM_PORT}}", &ports.upstream.to_string())
        .replace("{{RUN_DIR}}", &run_dir.display().to_string())
}

/// A port that was free a moment ago, for a proxy to listen on (proxies
/// take their port from a configuration file, not from a bound socket).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A proxy running as a child process; killed when dropped.
pub struct RunningProxy {
    kind: ProxyKind,
    child: tokio::process::Child,
    /// Where it listens for clients.
    pub addr: SocketAddr,
    log_path: PathBuf,
    _run_dir: tempfile::TempDir,
}

impl RunningProxy {
    async fn wait_ready(&mut self, start_limit: Duration) {
        let deadline = tokio::time::Instant::now() + start_limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited at start ({status}):\n{}", self.kind.name(), self.log());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not listen on {} within {start_limit:?}:\n{}",
                self.kind.name(),
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id (for its CPU time), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the proxy printed so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends one HTTP/1.1 request through the proxy.
    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        http_request(self.addr, method, path, headers).await
    }
}

/// A response as a test reads it.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from chunks if it was chunked.
    pub body: String,
}

impl HttpReply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The headers the echo upstream received, when the reply is its echo.
    pub fn echoed(&self) -> EchoedHeaders {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not the upstream's echo ({e}): {self:?}"))
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end, within
/// [`REQUEST_LIMIT`].
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    tokio::time::timeout(REQUEST_LIMIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("proxy connects");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("request sent");
        let mut raw = Vec::new();
        stream.take(RESPONSE_LIMIT as u64).read_to_end(&mut raw).await.expect("response read");
        parse_reply(&raw)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path} via {addr} took longer than {REQUEST_LIMIT:?}"))
}

fn parse_reply(raw: &[u8]) -> HttpReply {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    HttpReply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let data = &rest[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    body
}
