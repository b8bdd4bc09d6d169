//! Runs the example service: `SIGIL_SERVER` (default
//! `http://127.0.0.1:50051`), `SIGIL_VERIFIER_TOKEN` (an access token with
//! role `verifier`), `EXAMPLE_LISTEN` (default `127.0.0.1:8443`),
//! `EXAMPLE_AUDIENCE` (default `sigil`).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use sigil_verifier::{Verifier, VerifierConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("SIGIL_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("SIGIL_VERIFIER_TOKEN").context("SIGIL_VERIFIER_TOKEN is not set")?;
    let listen = std::env::var("EXAMPLE_LISTEN").unwrap_or_else(|_| "127.0.0.1:8443".into());
    let audience = std::env::var("EXAMPLE_AUDIENCE").unwrap_or_else(|_| "sigil".into());
    let endpoint = tonic::transport::Endpoint::from_shared(server).context("SIGIL_SERVER is not a URL")?;
    let verifier = Arc::new(Verifier::start(VerifierConfig::new(endpoint, token)));
    verifier.wait_until_current(Duration::from_secs(10)).await.context("the verifier did not become current")?;
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot bind {listen}"))?;
    println!("example service listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    sigil_example_service::serve(listener, sigil_example_service::protected(verifier, &audience), shutdown).await?;
    Ok(())
}
