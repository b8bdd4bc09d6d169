//! list-sessions: admin listing pages of 100 sessions (seed a big store
//! first to make it mean something: `sigil-bench seed`).

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};

use super::{Bench, Scenario};
use crate::{
    client::{admin_request, login},
    figures::Figures,
    load::drive,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("list-sessions"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let admin_token = login(&bench.chans[0], "admin", bench.password).await?.access_token;
    let figures =
        drive("list-sessions", bench.target, bench.chans, bench.streams.min(8), bench.duration, move |ch, _| {
            let token = admin_token.clone();
            async move {
                let request = pb::ListSessionsRequest { page_size: 100, include_inactive: true, ..Default::default() };
                let r = AdminServiceClient::new(ch).list_sessions(admin_request(request, &token)).await;
                Some(r.is_ok_and(|r| !r.into_inner().sessions.is_empty()))
            }
        })
        .await;
    Ok(vec![figures])
}
