//! Test harness for Sigil's end-to-end tests: real servers on ephemeral
//! ports with temporary data directories, spoken to over gRPC.
//!
//! [`TestServer`] runs the server in the test's own process (fast, and the
//! test can reach the domain core, e.g. to sign forged tokens with the real
//! key). [`ChildServer`] runs the real `sigil-server` binary as a child
//! process, for the tests that kill it with SIGKILL.

pub mod postgres;
pub mod proxies;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient};
use sigil_server::{
    Config, RunningServer,
    domain::{Identity, Secret, user::UserRecord},
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tonic::transport::Channel;

/// Password of the bootstrap `admin` in every test server.
pub const ADMIN_PASSWORD: &str = "test-admin-password-1";

/// A Sigil server running inside the test process.
pub struct TestServer {
    running: RunningServer,
    /// Its data directory (removed when the server is dropped).
    pub data_dir: tempfile::TempDir,
    /// Where its sled store is (`data_dir`'s, unless the test chose another).
    store_dir: PathBuf,
}

impl TestServer {
    /// Starts a server with the default configuration on ephemeral ports.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            data_dir: data_dir.path().join("data"),
            ..Config::default()
        };
        adjust(&mut config);
        let running =
            sigil_server::start(&config, Some(Secret::new(ADMIN_PASSWORD.to_string()))).await.expect("server starts");
        Self { running, data_dir, store_dir: config.data_dir }
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.running.grpc_addr
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.running.http_addr
    }

    /// The domain core of the server.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.running.identity
    }

    /// A connected gRPC channel.
    pub async fn channel(&self) -> Channel {
        connect(self.grpc_addr()).await
    }

    /// A client of `IdentityService`.
    pub async fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel().await)
    }

    /// A client of `AdminService`, and an admin access token for it.
    pub async fn admin(&self) -> (AdminServiceClient<Channel>, String) {
        let token = login(&mut self.client().await, "admin", ADMIN_PASSWORD).await.access_token;
        (AdminServiceClient::new(self.channel().await), token)
    }

    /// Creates a user directly through the domain core.
    pub async fn create_user(&self, username: &str, password: &str, roles: &[&str]) -> UserRecord {
        self.identity()
            .create_user(
                None,
                username,
                &Secret::new(password.to_string()),
                roles.iter().map(|r| r.to_string()).collect(),
            )
            .await
            .expect("user created")
    }

    /// Stops the server gracefully, and returns once its sled store is
    /// released, so that a test can start another server on the same data
    /// directory. (The engine's own threads let go of the store's lock a
    /// moment after the last handle is dropped; a process would just exit.)
    pub async fn stop(self) {
        self.running.shutdown().await.expect("clean shutdown");
        let db = self.store_dir.join("db");
        let released = eventually(Duration::from_secs(10), || {
            let free = std::fs::File::open(&db).map_or(true, |file| file.try_lock().is_ok());
            async move { free.then_some(()) }
        })
        .await;
        assert!(
            released.is_some(),
            "the sled store in {} is still locked 10 s after shutdown",
            self.store_dir.display()
        );
    }
}

/// Connects to a gRPC server on `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connects")
}

/// An `AuthenticateRequest` with just a username and a password.
pub fn login_request(username: &str, password: &str) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest { username: username.into(), password: password.into(), ..Default::default() }
}

/// Logs in over gRPC and returns the response.
pub async fn login(
    client: &mut IdentityServiceClient<Channel>,
    username: &str,
    password: &str,
) -> pb::AuthenticateResponse {
    client
        .authenticate(pb::AuthenticateRequest { device_name: Some("e2e".into()), ..login_request(username, password) })
        .await
        .expect("login succeeds")
        .into_inner()
}

/// Validates a token over gRPC.
pub async fn validate(client: &mut IdentityServiceClient<Channel>, token: &str) -> pb::ValidateResponse {
    client
        .validate(pb::ValidateRequest { token: token.into(), audience: None })
        .await
        .expect("validate answers")
        .into_inner()
}

/// A request carrying `authorization: Bearer <token>`.
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

/// A request carrying `authorization: Bearer <token>` when `token` is given.
pub fn maybe_bearer<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    match token {
        Some(token) => with_bearer(message, token),
        None => tonic::Request::new(message),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("http connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response read");
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// The real `sigil-server` binary running as a child process.
pub struct ChildServer {
    child: tokio::process::Child,
    /// Its gRPC address.
    pub grpc_addr: SocketAddr,
    /// Everything it printed so far.
    pub output: Arc<std::sync::Mutex<String>>,
}

impl ChildServer {
    /// Starts `sigil-server` on `data_dir` on ephemeral ports and waits for
    /// the line in which it logs the address it bound.
    pub async fn spawn(data_dir: &Path) -> Self {
        Self::spawn_with(data_dir, &[]).await
    }

    /// Like [`ChildServer::spawn`], with extra command-line flags.
    pub async fn spawn_with(data_dir: &Path, flags: &[&str]) -> Self {
        Self::spawn_logging(data_dir, flags, "info").await
    }

    /// Like [`ChildServer::spawn_with`], with a log filter (`SIGIL_LOG`).
    pub async fn spawn_logging(data_dir: &Path, flags: &[&str], log_filter: &str) -> Self {
        // A test that restarts a server on the port its clients know passes
        // its own `--listen`.
        let listen: &[&str] = if flags.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        let mut child = tokio::process::Command::new(server_binary())
            .args(listen)
            .args(["--http-listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--data-dir")
            .arg(data_dir)
            .env("SIGIL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SIGIL_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("sigil-server starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = bound_grpc_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                if let Ok(mut all) = sink.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
            }
        });
        let grpc_addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
            .await
            .expect("sigil-server logged its address within 30 s")
            .expect("sigil-server logged its address before exiting");
        Self { child, grpc_addr, output }
    }

    /// A client of `IdentityService`.
    pub async fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(connect(self.grpc_addr).await)
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub async fn kill_9(mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        self.child.wait().await.expect("child reaped");
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited 0.
    pub async fn terminate(mut self) -> bool {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s")
            .expect("child reaped");
        exit.success()
    }
}

/// The gRPC address in sigil-server's "listening" log line (text or JSON).
pub fn bound_grpc_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("sigil-server listening") {
        return None;
    }
    // `--log-format json`: {"fields":{"message":"sigil-server listening","grpc_addr":"…"}}
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["fields"]["grpc_addr"].as_str()?.parse().ok();
    }
    let rest = &line[line.find("grpc_addr=")? + "grpc_addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Path of the `sigil-server` binary built alongside this test binary.
/// `cargo test --workspace` builds it (the server package has an
/// integration test, which makes cargo build its binary).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("sigil-server");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so that it is built",
        binary.display()
    );
    binary
}

/// Path of the `sigil-console` binary, built beside `sigil-server`
/// (the console package's integration test makes cargo build it).
pub fn console_binary() -> PathBuf {
    let binary = server_binary().with_file_name("sigil-console");
    assert!(binary.exists(), "{} is missing: run `cargo test --workspace`", binary.display());
    binary
}

/// A CA (`ca.pem`), a server certificate for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`,
/// `client.key`), written as PEM files into `dir`.
pub fn make_test_pki(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (curl) takes a leaf whose issuer equals its
    // subject for self-signed, and rcgen's default name is the same for all.
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "Sigil test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("sigil test {stem}"));
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("signed");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write");
    };
    leaf(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
    leaf(vec!["sigil-client".into()], ExtendedKeyUsagePurpose::ClientAuth, "client");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
}
