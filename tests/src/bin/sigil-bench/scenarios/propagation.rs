//! propagation (with `--database-url`): how soon a revocation on one
//! instance is enforced by a second instance on the same database.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;

use super::{Bench, Scenario};
use crate::{
    client::login,
    figures::Figures,
    target::{Target, channels},
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("propagation"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let Some(url) = bench.database_url else { return Ok(Vec::new()) };
    Ok(vec![propagation(&bench.chans[0], bench.password, url, if bench.quick { 10 } else { 100 }).await?])
}

/// With PostgreSQL: starts a second instance on the same database, then
/// `trials` times logs in, revokes the session on the first instance and
/// polls `Validate` on the second until it refuses the token. The latency
/// figures are the time from the revoke's answer to the first refusal.
async fn propagation(first: &Channel, password: &str, url: &str, trials: usize) -> anyhow::Result<Figures> {
    let peer = Target::start(None, Some(url)).await?;
    let mut peer_client = IdentityServiceClient::new(channels(&peer.address, 1).await?.remove(0));
    let mut client = IdentityServiceClient::new(first.clone());
    let mut latency = Histogram::new(3)?;
    let (mut errors, started) = (0, Instant::now());
    for _ in 0..trials {
        let token = login(first, "admin", password).await?.access_token;
        let validate = pb::ValidateRequest { token: token.clone(), audience: None };
        if !peer_client.validate(validate.clone()).await?.into_inner().valid {
            errors += 1;
            continue;
        }
        let revoke =
            pb::RevokeRequest { target: Some(pb::revoke_request::Target::AccessToken(token)), reason: "bench".into() };
        client.revoke(revoke).await?;
        let revoked = Instant::now();
        loop {
            let answer = peer_client.validate(validate.clone()).await?.into_inner();
            if !answer.valid {
                latency.record(revoked.elapsed().as_nanos() as u64)?;
                break;
            }
            if revoked.elapsed() > Duration::from_secs(5) {
                errors += 1;
                break;
            }
        }
    }
    let figures = Figures {
        name: "propagation".into(),
        requests: latency.len(),
        errors,
        elapsed: started.elapsed(),
        latency,
        server_cpu: None,
    };
    println!(
        "revocation enforced on a second instance after: median {:?}, max {:?} ({} trials)",
        Duration::from_nanos(figures.latency.value_at_quantile(0.5)),
        Duration::from_nanos(figures.latency.max()),
        figures.requests
    );
    Ok(figures)
}
