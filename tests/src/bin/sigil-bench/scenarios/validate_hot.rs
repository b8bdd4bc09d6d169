//! validate-hot: `Validate` of a few tokens in turn, each already in the
//! server's signature cache.

use super::{Bench, Scenario};
use crate::{
    client::{login, validate_round_robin},
    figures::Figures,
    load::drive,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("validate-hot"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let mut hot = Vec::new();
    for _ in 0..if bench.quick { 4 } else { 16 } {
        hot.push(login(&bench.chans[0], "admin", bench.password).await?.access_token);
    }
    let figures =
        drive("validate-hot", bench.target, bench.chans, bench.streams, bench.duration, validate_round_robin(hot))
            .await;
    Ok(vec![figures])
}
