//! A do-nothing ext_authz server: `envoy.service.auth.v3.Authorization/Check`
//! allows every request at once. Behind the same Envoy as Sigil, it is the
//! floor any authorizer costs (Envoy's side of ext_authz plus one gRPC round
//! trip), so Sigil ÷ it is what Sigil's decision itself costs.

use std::net::SocketAddr;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status { code: 0, message: String::new(), details: Vec::new() }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..CheckResponse::default()
        }))
    }
}

/// The allow-all server, on an ephemeral loopback port; stopped when dropped.
pub(crate) struct AllowAllServer {
    /// Where its gRPC listener is.
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AllowAllServer {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(AllowAll))
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
