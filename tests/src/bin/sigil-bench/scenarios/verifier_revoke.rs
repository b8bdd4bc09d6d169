//! verifier-revoke: from `Revoke`'s answer to the first refusal by a
//! verifier in this process — following the same instance (loopback, the
//! run's engine, sled by default), and, with `--database-url` or
//! `SIGIL_PG_BIN`, following a second instance on the same PostgreSQL
//! database while the revocations are made on the first.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient, revoke_request::Target as RevokeTarget};
use sigil_tests::postgres::Postgres;
use sigil_verifier::{Refusal, ValidationFailure, Verifier};

use super::{Bench, Scenario};
use crate::{
    client::{admin_request, login, token_id_of},
    edge::{self, verdict},
    figures::Figures,
    target::{Target, channels},
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("verifier-revoke"), run: |bench| Box::pin(run(bench)) };

/// Longest wait for one refusal before the trial counts as an error.
const GIVE_UP: Duration = Duration::from_secs(5);

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let trials = if bench.quick { 20 } else { 300 };
    let engine = if bench.database_url.is_some() { "postgres" } else { "sled" };
    let same =
        revoke_to_refusal(&format!("verifier-revoke-{engine}"), bench.target, bench.target, bench.password, trials)
            .await?;
    print_line(&same, "same instance, loopback", "p50 ≤ 1 ms, p99 ≤ 5 ms", |p50, p99| p50 <= 1e-3 && p99 <= 5e-3);
    let mut results = vec![same];

    // The second instance: on `--database-url`, or on a PostgreSQL of our own.
    let own_postgres;
    let url = match bench.database_url {
        Some(url) => Some((url.to_string(), bench.target, None)),
        None if std::env::var_os("SIGIL_PG_BIN").is_some() => {
            own_postgres = tokio::task::spawn_blocking(Postgres::start_new)
                .await?
                .ok_or_else(|| anyhow::anyhow!("SIGIL_PG_BIN is set but PostgreSQL did not start"))?;
            let url = own_postgres.fresh_database().await;
            let first = Target::start(None, Some(&url)).await?;
            Some((url, bench.target, Some(first)))
        }
        None => {
            println!(
                "verifier-revoke through a second instance on PostgreSQL: skipped: no --database-url, no SIGIL_PG_BIN"
            );
            None
        }
    };
    if let Some((url, main, own_first)) = url {
        let first = own_first.as_ref().unwrap_or(main);
        let peer = Target::start(None, Some(&url)).await?;
        let cross = revoke_to_refusal("verifier-revoke-pg-peer", first, &peer, bench.password, trials).await?;
        print_line(
            &cross,
            "revoked on one PostgreSQL instance, refused by a verifier following another",
            "p99 ≤ 50 ms",
            |_, p99| p99 <= 50e-3,
        );
        results.push(cross);
    }
    Ok(results)
}

/// `trials` times: a fresh access token of the reader (from a refresh
/// chain) is accepted by a verifier following `followed`, is revoked on
/// `revoker`, and the time from `Revoke`'s answer to the verifier's first
/// `token revoked` is recorded (0 when the refusal came first).
async fn revoke_to_refusal(
    name: &str,
    revoker: &Target,
    followed: &Target,
    password: &str,
    trials: usize,
) -> anyhow::Result<Figures> {
    let revoker_chan = channels(&revoker.address, 1).await?.remove(0);
    let admin = login(&revoker_chan, "admin", password).await?.access_token;
    let followed_chan = channels(&followed.address, 1).await?.remove(0);
    let bearer = login(&followed_chan, "admin", password).await?.access_token;
    let (verifier, _) = edge::follow(&followed.address, bearer, Duration::from_secs(30)).await?;
    let mut refresh = edge::reader(&revoker_chan, &admin).await?.refresh_token;
    let mut client = IdentityServiceClient::new(revoker_chan.clone());
    let mut latency = Histogram::new(3)?;
    let (mut errors, started) = (0, Instant::now());
    for _ in 0..trials {
        let fresh = client.refresh(pb::RefreshRequest { refresh_token: refresh }).await?.into_inner();
        refresh = fresh.refresh_token;
        let token = fresh.access_token;
        if !accepted(&verifier, &token).await {
            errors += 1;
            continue;
        }
        // By token id: revoking by the token itself would end its session
        // too, and the next trial refreshes that session.
        let id = token_id_of(&token).ok_or_else(|| anyhow::anyhow!("an access token without jti"))?;
        let revoke = pb::RevokeRequest { target: Some(RevokeTarget::TokenId(id)), reason: "bench".into() };
        client.revoke(admin_request(revoke, &admin)).await?;
        let answered = Instant::now();
        loop {
            match verifier.verify(&token, None) {
                Err(Refusal::Invalid(ValidationFailure::TokenRevoked)) => {
                    latency.record(answered.elapsed().as_nanos() as u64)?;
                    break;
                }
                Ok(_) if answered.elapsed() < GIVE_UP => tokio::task::yield_now().await,
                _ => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    Ok(edge::figures(name, latency.len(), errors, started.elapsed(), Some(latency)))
}

/// Waits (briefly) until the verifier accepts `token`: a token minted on
/// another instance is accepted once its key set arrived (at once, as a rule).
async fn accepted(verifier: &Verifier, token: &str) -> bool {
    let deadline = Instant::now() + GIVE_UP;
    while Instant::now() < deadline {
        if verifier.verify(token, None).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

fn print_line(figures: &Figures, what: &str, target: &str, met: impl Fn(f64, f64) -> bool) {
    let q = |p: f64| Duration::from_nanos(figures.latency.value_at_quantile(p));
    let (p50, p99) = (q(0.5), q(0.99));
    println!(
        "{}: Revoke's answer → first refusal ({what}): p50 {p50:.3?}, p90 {:.3?}, p99 {p99:.3?}, max {:.3?} ({} trials, {} errors); target {target}: {}",
        figures.name,
        q(0.9),
        Duration::from_nanos(figures.latency.max()),
        figures.requests,
        figures.errors,
        verdict(met(p50.as_secs_f64(), p99.as_secs_f64()))
    );
}
