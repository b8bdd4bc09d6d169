//! validate-cold: `Validate` of many distinct tokens, so that most calls
//! verify a signature.

use super::{Bench, Scenario};
use crate::{
    client::{distinct_tokens, validate_round_robin},
    figures::Figures,
    load::drive,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("validate-cold"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    // Distinct tokens: one session refreshed many times gives a new
    // signed token per refresh without an argon2 hash each.
    let count = if bench.quick { 2_000 } else { 200_000 };
    let tokens = distinct_tokens(bench.chans, &bench.session.refresh_token, count).await?;
    println!("(validate-cold uses {} distinct tokens, each validated once per pass)", tokens.len());
    let figures =
        drive("validate-cold", bench.target, bench.chans, bench.streams, bench.duration, validate_round_robin(tokens))
            .await;
    Ok(vec![figures])
}
