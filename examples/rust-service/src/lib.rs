//! A small service protected by `sigil-verifier`: a tonic `Greeter` and one
//! axum route (`GET /hello`) on one listener, both behind
//! [`VerifierLayer`]. Handlers read the caller from the request extensions;
//! they never see a request the verifier refused.

use std::sync::Arc;

use axum::{Extension, Router, routing::get};
use sigil_verifier::{SignedToken, Verifier, VerifierLayer};
use tonic::{Request, Response, Status};

/// The generated code of `example.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("example.v1");
}

use pb::greeter_server::{Greeter, GreeterServer};

/// The role the example requires of its callers.
pub const REQUIRED_ROLE: &str = "reader";

/// The gRPC half.
struct Greetings;

#[tonic::async_trait]
impl Greeter for Greetings {
    async fn greet(&self, request: Request<pb::GreetRequest>) -> Result<Response<pb::GreetResponse>, Status> {
        // Unprotected (the benchmark's baseline), there is no caller.
        let caller = request.extensions().get::<Arc<SignedToken>>();
        Ok(Response::new(pb::GreetResponse {
            message: format!("hello, {}", caller.map_or("stranger", |c| c.claims.username.as_str())),
            roles: caller.map(|c| c.claims.roles.clone()).unwrap_or_default(),
        }))
    }
}

/// The HTTP half.
async fn hello(caller: Option<Extension<Arc<SignedToken>>>) -> String {
    format!("hello, {}", caller.as_ref().map_or("stranger", |c| c.claims.username.as_str()))
}

/// The service without any protection: the benchmark's baseline.
pub fn unprotected() -> Router {
    let grpc = tonic::service::Routes::new(GreeterServer::new(Greetings)).into_axum_router();
    grpc.route("/hello", get(hello))
}

/// The service behind the layer: a token of `audience` with role
/// [`REQUIRED_ROLE`] is needed for both halves.
pub fn protected(verifier: Arc<Verifier>, audience: &str) -> Router {
    unprotected().layer(VerifierLayer::new(verifier).require_audience(audience).require_any_role([REQUIRED_ROLE]))
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
