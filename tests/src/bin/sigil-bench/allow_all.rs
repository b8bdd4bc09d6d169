//! A do-nothing ext_authz server: `envoy.service.auth.v3.Authorization/Check`
//! allows every request at once. Behind the same Envoy as Sigil, it is the
//! floor any authorizer costs (Envoy's side of ext_authz plus one gRPC round
//! trip), so Sigil ÷ it is what Sigil's decision itself costs.
//!
//! It answers either a bare OK (the baseline) or, replayed, one
//! answer Sigil gave: the same OK with the same header mutations, so that
//! what Envoy spends applying them is told apart from what Sigil spends
//! deciding.
//!
//! It runs in a process of its own (this binary's hidden `allow-all`
//! subcommand), as Sigil does: served from the bench's own process, whose
//! runtime is already awake for the echo upstream, each `Check` skipped the
//! wake-up of another process that each of Sigil's pays (~25 µs on these
//! VMs: `perf bench sched pipe` takes ~49 µs a round trip).

use std::{net::SocketAddr, path::Path, process::Stdio};

use prost::Message as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::{
    envoy::service::auth::v3::{AttributeContext, attribute_context, authorization_client::AuthorizationClient},
    google::rpc,
};
use tonic::{
    Request, Response, Status,
    transport::{Channel, server::TcpIncoming},
};

/// Answers every `Check` with `answer`, without reading the request.
struct AllowAll {
    answer: CheckResponse,
}

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }
}

/// The allow-all server: a child process on an ephemeral loopback port,
/// killed when dropped.
pub(crate) struct AllowAllServer {
    /// Where its gRPC listener is.
    pub(crate) addr: SocketAddr,
    child: tokio::process::Child,
    _answer: tempfile::TempDir,
}

/// What the child prints once it listens, before its address.
const LISTENING: &str = "allow-all listening on ";

/// How long the child may take to listen.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

impl AllowAllServer {
    /// Answers a bare OK: no header to set or remove.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::answering(CheckResponse {
            status: Some(rpc::Status { code: 0, message: String::new(), details: Vec::new() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..CheckResponse::default()
        })
        .await
    }

    /// Asks Sigil (at `sigil`) once about a request bearing `token`, as
    /// the benchmark's requests do, and answers what Sigil answered to
    /// every `Check`: the same OK with the same header mutations.
    pub(crate) async fn replaying(sigil: Channel, token: &str) -> anyhow::Result<Self> {
        let headers = [("authorization", format!("Bearer {token}")), (":path", "/".into()), (":method", "GET".into())];
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        method: "GET".into(),
                        path: "/".into(),
                        headers: headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let answer = AuthorizationClient::new(sigil).check(request).await?.into_inner();
        anyhow::ensure!(
            matches!(answer.http_response, Some(HttpResponse::OkResponse(_))),
            "Sigil did not allow the benchmark's token: {answer:?}"
        );
        Self::answering(answer).await
    }

    /// Starts the child answering `answer` to every `Check` (handed over
    /// encoded in a file) and waits until it listens.
    async fn answering(answer: CheckResponse) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let answer_file = dir.path().join("answer.pb");
        std::fs::write(&answer_file, answer.encode_to_vec())?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("allow-all")
            .arg("--answer")
            .arg(&answer_file)
            // Its stdin is its lifeline: it ends when the bench does, even
            // killed (kill_on_drop covers only a bench that unwinds).
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("allow-all: no stdout"))?;
        let line = tokio::time::timeout(START_LIMIT, BufReader::new(stdout).lines().next_line())
            .await
            .map_err(|_| anyhow::anyhow!("allow-all did not listen within {START_LIMIT:?}"))??
            .unwrap_or_default();
        let addr = line
            .strip_prefix(LISTENING)
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("allow-all did not start: {line:?}"))?;
        Ok(Self { addr, child, _answer: dir })
    }

    /// Its process id (for its CPU time).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The `allow-all` subcommand: answers the `CheckResponse` encoded in
/// `answer_file` to every `Check`, on an ephemeral loopback port it prints,
/// until its stdin closes (the bench that started it ended) or it is killed.
pub(crate) async fn serve(answer_file: &Path) -> anyhow::Result<()> {
    let answer = CheckResponse::decode(std::fs::read(answer_file)?.as_slice())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{LISTENING}{}", listener.local_addr()?);
    // A blocking read on a thread of its own: it returns at end of file.
    let (ended, orphaned) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        let _ = ended.send(());
    });
    let orphaned = async {
        let _ = orphaned.await;
    };
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll { answer }))
        // No Nagle delay on the replies, as on Sigil's listener.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), orphaned)
        .await?;
    Ok(())
}
