//! refresh: refresh-token rotation, each worker along its own chain.

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{Bench, Scenario};
use crate::{client::refresh_chains, figures::Figures, load::drive};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("refresh"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    // Each worker rotates its own refresh-token chain.
    let chains = refresh_chains(&bench.chans[0], bench.password, bench.connections * bench.streams).await?;
    let figures = drive("refresh", bench.target, bench.chans, bench.streams, bench.duration, move |ch, n| {
        let chains = chains.clone();
        async move {
            let mut chain = chains[n as usize % chains.len()].lock().await;
            let request = pb::RefreshRequest { refresh_token: chain.clone() };
            Some(match IdentityServiceClient::new(ch).refresh(request).await {
                Ok(r) => {
                    *chain = r.into_inner().refresh_token;
                    true
                }
                Err(_) => false,
            })
        }
    })
    .await;
    Ok(vec![figures])
}
