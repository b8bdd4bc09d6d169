//! refresh: refresh-token rotation, each worker along its own chain.

use super::{Bench, Scenario};
use crate::{
    client::{refresh_along, refresh_chains},
    figures::Figures,
    load::drive,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("refresh"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    // Each worker rotates its own refresh-token chain.
    let chains = refresh_chains(&bench.chans[0], bench.password, bench.connections * bench.streams).await?;
    let figures =
        drive("refresh", bench.target, bench.chans, bench.streams, bench.duration, refresh_along(chains)).await;
    Ok(vec![figures])
}
