//! health: the bare gRPC baseline, `grpc.health.v1.Health/Check` with the
//! same load shape as every other scenario.

use super::{Bench, Scenario};
use crate::{figures::Figures, load::drive};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("health"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let figures =
        drive("health (bare)", bench.target, bench.chans, bench.streams, bench.duration, |ch, _| async move {
            let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
            Some(client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok())
        })
        .await;
    Ok(vec![figures])
}
