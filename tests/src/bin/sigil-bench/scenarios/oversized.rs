//! oversized: over-the-cap fields are refused before any decoding, hashing
//! or store access, so these should cost about what a health check does.

use std::sync::Arc;

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{Bench, Scenario};
use crate::{figures::Figures, load::drive};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("oversized"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let password = Arc::new("p".repeat(2048));
    let login = drive("oversized login", bench.target, bench.chans, bench.streams, bench.duration, move |ch, _| {
        let password = password.to_string();
        async move {
            let request = pb::AuthenticateRequest { username: "admin".into(), password, ..Default::default() };
            let refused = IdentityServiceClient::new(ch).authenticate(request).await;
            Some(refused.is_err_and(|s| s.code() == tonic::Code::InvalidArgument))
        }
    })
    .await;
    let token = Arc::new("a".repeat(9000));
    let validate = drive("oversized token", bench.target, bench.chans, bench.streams, bench.duration, move |ch, _| {
        let token = token.to_string();
        async move {
            let answer = IdentityServiceClient::new(ch).validate(pb::ValidateRequest { token, audience: None }).await;
            Some(answer.is_ok_and(|a| a.into_inner().failure() == pb::ValidationFailure::Malformed))
        }
    })
    .await;
    Ok(vec![login, validate])
}
