//! A revocation lives until the last token it covers can expire, whatever
//! the configuration says later: lowering `access_token_ttl` across a
//! restart must not revive a revoked token (the bound is stored with each
//! revocation-log entry, not recomputed from today's TTL).

use std::time::Duration;

use sigil_proto::pb::{self, revoke_request::Target};
use sigil_server::Config;
use sigil_tests::{TestServer, login, validate, with_bearer};

fn on(dir: &std::path::Path, ttl: Duration) -> impl FnOnce(&mut Config) {
    let dir = dir.to_path_buf();
    move |config| {
        config.data_dir = dir;
        config.access_token_ttl = ttl;
    }
}

#[tokio::test]
async fn lowering_the_access_token_ttl_across_a_restart_revives_no_revoked_token() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().join("data");

    // First life: one-hour access tokens, three kinds of revocation.
    let first = TestServer::start_with(on(&dir, Duration::from_secs(3600))).await;
    first.create_user("rita", "rita-password", &[]).await;
    first.create_user("dave", "dave-password", &[]).await;
    let mut client = first.client().await;
    let (mut admin, admin_token) = first.admin().await;
    let by_session = login(&mut client, "rita", "rita-password").await;
    let by_token = login(&mut client, "rita", "rita-password").await;
    let disabled = login(&mut client, "dave", "dave-password").await;
    let revoke = |target| pb::RevokeRequest { target: Some(target), reason: "e2e".into() };
    client
        .revoke(with_bearer(revoke(Target::SessionId(by_session.session_id.clone())), &admin_token))
        .await
        .expect("session revoked");
    let claims = validate(&mut client, &by_token.access_token).await.claims.expect("valid before");
    client.revoke(with_bearer(revoke(Target::TokenId(claims.token_id)), &admin_token)).await.expect("token revoked");
    admin
        .update_user(with_bearer(
            pb::UpdateUserRequest { user_id: disabled.user_id.clone(), disabled: Some(true), roles: None },
            &admin_token,
        ))
        .await
        .expect("user disabled");
    let tokens = [&by_session.access_token, &by_token.access_token, &disabled.access_token];
    for token in tokens {
        assert!(!validate(&mut client, token).await.valid, "refused before the restart");
    }
    first.stop().await;

    // Second life: one-second access tokens. The revocations are older than
    // that by the time the index is rebuilt, yet the tokens they cover were
    // minted for an hour and are still within their `exp`. Time must pass
    // here (it is what the defect is about), so this waits on the clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = TestServer::start_with(on(&dir, Duration::from_secs(1))).await;
    let mut client = second.client().await;
    for (token, what) in tokens.iter().zip(["revoked session", "revoked token", "disabled user"]) {
        let verdict = validate(&mut client, token).await;
        assert!(!verdict.valid, "the {what}'s token is valid again after the restart: {verdict:?}");
    }
    // The sweeper purges by the stored bound too, from memory and store.
    second.identity().sweep().await.expect("sweep");
    for (token, what) in tokens.iter().zip(["revoked session", "revoked token", "disabled user"]) {
        let verdict = validate(&mut client, token).await;
        assert!(!verdict.valid, "the {what}'s token is valid again after a sweep: {verdict:?}");
    }
    assert!(second.identity().revocations().len() >= 3, "the index still holds the three revocations");
    second.stop().await;

    // And a third life reads them back from the store, after the purge.
    let third = TestServer::start_with(on(&dir, Duration::from_secs(1))).await;
    let mut client = third.client().await;
    for token in tokens {
        assert!(!validate(&mut client, token).await.valid, "refused after the purge and another restart");
    }
    third.stop().await;
}
