//! A do-nothing ext_authz server: `envoy.service.auth.v3.Authorization/Check`
//! allows every request at once. Behind the same Envoy as Sigil, it is the
//! floor any authorizer costs (Envoy's side of ext_authz plus one gRPC round
//! trip), so Sigil ÷ it is what Sigil's decision itself costs.
//!
//! It answers either a bare OK (the baseline) or, replayed, one
//! answer Sigil gave: the same OK with the same header mutations, so that
//! what Envoy spends applying them is told apart from what Sigil spends
//! deciding.

use std::net::SocketAddr;

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

/// The allow-all server, on an ephemeral loopback port; stopped when dropped.
pub(crate) struct AllowAllServer {
    /// Where its gRPC listener is.
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

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

    /// Answers `answer` to every `Check`.
    async fn answering(answer: CheckResponse) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(AllowAll { answer }))
                // No Nagle delay on the replies, as on Sigil's listener.
                .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, stop: Some(stop) })
    }
}

impl Drop for AllowAllServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
