//! mixed: 90% validate, 5% refresh, 4% authenticate, 1% revoke.

use std::sync::Arc;

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{Bench, Scenario};
use crate::{
    client::{admin_request, login, refresh_chains, token_id_of},
    figures::Figures,
    load::drive,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("mixed"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    // 90% validate, 5% refresh, 4% authenticate, 1% revoke (of a token
    // of the worker's own chain, so every revoke is a durable write).
    let hot = Arc::new(login(&bench.chans[0], "admin", bench.password).await?.access_token);
    let chains = refresh_chains(&bench.chans[0], bench.password, bench.connections * bench.streams).await?;
    let password = bench.password.to_string();
    let figures = drive("mixed", bench.target, bench.chans, bench.streams, bench.duration, move |ch, n| {
        let (hot, chains, password) = (hot.clone(), chains.clone(), password.clone());
        async move {
            let mut identity = IdentityServiceClient::new(ch);
            let ok = match n % 100 {
                0..90 => identity
                    .validate(pb::ValidateRequest { token: hot.to_string(), audience: None })
                    .await
                    .is_ok_and(|r| r.into_inner().valid),
                90..95 | 99 => {
                    let mut chain = chains[n as usize % chains.len()].lock().await;
                    match identity.refresh(pb::RefreshRequest { refresh_token: chain.clone() }).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            *chain = r.refresh_token;
                            if n % 100 == 99 {
                                let revoke = pb::RevokeRequest {
                                    target: Some(pb::revoke_request::Target::TokenId(
                                        token_id_of(&r.access_token).unwrap_or_default(),
                                    )),
                                    reason: "bench".into(),
                                };
                                identity.revoke(admin_request(revoke, &r.access_token)).await.is_ok()
                            } else {
                                true
                            }
                        }
                        Err(_) => false,
                    }
                }
                _ => {
                    let request = pb::AuthenticateRequest { username: "admin".into(), password, ..Default::default() };
                    // A full argon2 queue refusing at once is the
                    // designed answer under overload, not an error.
                    match identity.authenticate(request).await {
                        Ok(_) => true,
                        Err(status) => status.code() == tonic::Code::ResourceExhausted,
                    }
                }
            };
            Some(ok)
        }
    })
    .await;
    Ok(vec![figures])
}
