//! authenticate: logins of one account, bound by argon2.

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};

use super::{Bench, Scenario};
use crate::{figures::Figures, load::drive};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("authenticate"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let password = bench.password.to_string();
    // At most 8 logins in flight per connection: more would only
    // queue behind argon2 (and past the queue, be refused).
    let figures =
        drive("authenticate", bench.target, bench.chans, bench.streams.min(8), bench.duration, move |ch, _| {
            let password = password.clone();
            async move {
                let request = pb::AuthenticateRequest { username: "admin".into(), password, ..Default::default() };
                Some(IdentityServiceClient::new(ch).authenticate(request).await.is_ok())
            }
        })
        .await;
    Ok(vec![figures])
}
