//! propagation (with `--database-url`): how soon a revocation on one
//! instance is enforced by a second instance on the same database. The
//! trial itself ([`enforced_by_all`]) takes any number of other instances;
//! `scaleout` runs it across three.

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

/// Longest wait for an instance to refuse a revoked token before the trial
/// counts as an error.
const GIVE_UP: Duration = Duration::from_secs(5);

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
    let peers = channels(&peer.address, 1).await?;
    let mut latency = Histogram::new(3)?;
    let (mut errors, started) = (0, Instant::now());
    for _ in 0..trials {
        match enforced_by_all(first, &peers, password).await? {
            Some(elapsed) => latency.record(elapsed.as_nanos() as u64)?,
            None => errors += 1,
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

/// One trial: logs in on `revoker`, checks that every instance of `others`
/// accepts the token, revokes the session on `revoker`, then polls
/// `Validate` on every other instance at once until each refuses the token.
/// The time from the revoke's answer to the last of those first refusals,
/// or `None` when an instance did not accept the token, or did not refuse
/// it within [`GIVE_UP`].
pub(super) async fn enforced_by_all(
    revoker: &Channel,
    others: &[Channel],
    password: &str,
) -> anyhow::Result<Option<Duration>> {
    let token = login(revoker, "admin", password).await?.access_token;
    let validate = pb::ValidateRequest { token: token.clone(), audience: None };
    for other in others {
        if !IdentityServiceClient::new(other.clone()).validate(validate.clone()).await?.into_inner().valid {
            return Ok(None);
        }
    }
    let revoke =
        pb::RevokeRequest { target: Some(pb::revoke_request::Target::AccessToken(token)), reason: "bench".into() };
    IdentityServiceClient::new(revoker.clone()).revoke(revoke).await?;
    let revoked = Instant::now();
    let refusals = others.iter().map(|other| {
        let (mut client, validate) = (IdentityServiceClient::new(other.clone()), validate.clone());
        async move {
            loop {
                if !client.validate(validate.clone()).await?.into_inner().valid {
                    return Ok::<_, tonic::Status>(Some(revoked.elapsed()));
                }
                if revoked.elapsed() > GIVE_UP {
                    return Ok(None);
                }
            }
        }
    });
    let mut last = Duration::ZERO;
    for refusal in futures::future::join_all(refusals).await {
        match refusal? {
            Some(elapsed) => last = last.max(elapsed),
            None => return Ok(None),
        }
    }
    Ok(Some(last))
}
