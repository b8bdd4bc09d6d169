//! revoke: each call revokes a distinct session by its refresh token.

use std::sync::Arc;

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{Bench, Scenario};
use crate::{client::login, figures::Figures, load::drive};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("revoke"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    // Distinct sessions, each revoked once by its refresh token (a
    // durable write of the session, its tokens and a log entry). The
    // logins that make them are argon2-bound, so they are made first.
    let count = if bench.quick { 64 } else { 4_000 };
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        sessions.push(login(&bench.chans[0], "admin", bench.password).await?.refresh_token);
    }
    let sessions = Arc::new(sessions);
    let figures = drive("revoke", bench.target, bench.chans, bench.streams, bench.duration, move |ch, n| {
        let sessions = sessions.clone();
        async move {
            let token = sessions.get(n as usize)?.clone();
            let request = pb::RevokeRequest {
                target: Some(pb::revoke_request::Target::RefreshToken(token)),
                reason: "bench".into(),
            };
            let r = IdentityServiceClient::new(ch).revoke(request).await;
            Some(r.is_ok_and(|r| r.into_inner().revoked_sessions == 1))
        }
    })
    .await;
    Ok(vec![figures])
}
