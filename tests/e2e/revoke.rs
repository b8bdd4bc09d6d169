use sigil_proto::pb::{self, ValidationFailure, revoke_request::Target};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, validate, with_bearer};
use tonic::Code;

fn revoke(target: Target) -> pb::RevokeRequest {
    pb::RevokeRequest { target: Some(target), reason: "e2e".into() }
}

#[tokio::test]
async fn holding_an_access_token_revokes_it_and_its_session_at_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let refreshed = client
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner();
    let counts =
        client.revoke(revoke(Target::AccessToken(session.access_token.clone()))).await.expect("revoke").into_inner();
    // The session, its two access tokens and its live refresh token.
    assert_eq!((counts.revoked_sessions, counts.revoked_tokens), (1, 3));
    // Visible to Validate as soon as Revoke has returned.
    let verdict = validate(&mut client, &session.access_token).await;
    assert!(!verdict.valid);
    assert_eq!(verdict.failure(), ValidationFailure::SessionRevoked);
    assert_eq!(validate(&mut client, &refreshed.access_token).await.failure(), ValidationFailure::SessionRevoked);

    let again = client
        .revoke(revoke(Target::AccessToken(session.access_token.clone())))
        .await
        .expect("revoking twice is OK")
        .into_inner();
    assert_eq!((again.revoked_sessions, again.revoked_tokens), (0, 0));
}

#[tokio::test]
async fn holding_a_refresh_token_revokes_its_session() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let counts =
        client.revoke(revoke(Target::RefreshToken(session.refresh_token.clone()))).await.expect("revoke").into_inner();
    assert_eq!((counts.revoked_sessions, counts.revoked_tokens), (1, 2));
    assert_eq!(validate(&mut client, &session.access_token).await.failure(), ValidationFailure::SessionRevoked);
    let again = client.revoke(revoke(Target::RefreshToken(session.refresh_token))).await.expect("idempotent");
    assert_eq!(again.into_inner().revoked_sessions, 0);
}

#[tokio::test]
async fn id_targets_need_a_bearer_of_the_owner_or_an_admin() {
    let server = TestServer::start().await;
    server.create_user("erin", "erin-password", &[]).await;
    server.create_user("mallory", "mallory-password", &[]).await;
    let mut client = server.client().await;
    let erin = login(&mut client, "erin", "erin-password").await;
    let mallory = login(&mut client, "mallory", "mallory-password").await;

    let no_bearer = client.revoke(revoke(Target::SessionId(erin.session_id.clone()))).await.expect_err("refused");
    assert_eq!(no_bearer.code(), Code::Unauthenticated);

    let garbage = client
        .revoke(with_bearer(revoke(Target::SessionId(erin.session_id.clone())), "not-a-token"))
        .await
        .expect_err("refused");
    assert_eq!(garbage.code(), Code::Unauthenticated);

    for target in [
        Target::SessionId(erin.session_id.clone()),
        Target::UserId(erin.user_id.clone()),
        Target::TokenId(validate(&mut client, &erin.access_token).await.claims.expect("valid").token_id),
    ] {
        let stranger = client
            .revoke(with_bearer(revoke(target), &mallory.access_token))
            .await
            .expect_err("a stranger may not revoke");
        assert_eq!(stranger.code(), Code::PermissionDenied);
    }
    assert!(validate(&mut client, &erin.access_token).await.valid, "the victim's session lives on");

    // A non-admin asking about an id that does not exist learns nothing either.
    let unknown = client
        .revoke(with_bearer(revoke(Target::SessionId(uuid_like())), &mallory.access_token))
        .await
        .expect_err("refused");
    assert_eq!(unknown.code(), Code::PermissionDenied);

    let own = client
        .revoke(with_bearer(revoke(Target::SessionId(erin.session_id.clone())), &erin.access_token))
        .await
        .expect("the owner may")
        .into_inner();
    assert_eq!(own.revoked_sessions, 1);
    assert_eq!(validate(&mut client, &erin.access_token).await.failure(), ValidationFailure::SessionRevoked);
}

#[tokio::test]
async fn an_admin_revokes_by_token_id_session_id_and_user_id() {
    let server = TestServer::start().await;
    server.create_user("frank", "frank-password", &[]).await;
    let mut client = server.client().await;
    let admin = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let a = login(&mut client, "frank", "frank-password").await;
    let b = login(&mut client, "frank", "frank-password").await;
    let c = login(&mut client, "frank", "frank-password").await;

    let token_id = validate(&mut client, &a.access_token).await.claims.expect("valid").token_id;
    let by_token = client
        .revoke(with_bearer(revoke(Target::TokenId(token_id.clone())), &admin.access_token))
        .await
        .expect("admin revokes a token")
        .into_inner();
    assert_eq!((by_token.revoked_sessions, by_token.revoked_tokens), (0, 1));
    assert_eq!(validate(&mut client, &a.access_token).await.failure(), ValidationFailure::TokenRevoked);
    // Only that token: its session can still be refreshed.
    client
        .refresh(pb::RefreshRequest { refresh_token: a.refresh_token.clone() })
        .await
        .expect("session of a revoked access token still refreshes");

    let by_session = client
        .revoke(with_bearer(revoke(Target::SessionId(b.session_id.clone())), &admin.access_token))
        .await
        .expect("admin revokes a session")
        .into_inner();
    assert_eq!(by_session.revoked_sessions, 1);
    assert_eq!(validate(&mut client, &b.access_token).await.failure(), ValidationFailure::SessionRevoked);
    assert!(validate(&mut client, &c.access_token).await.valid);

    let by_user = client
        .revoke(with_bearer(revoke(Target::UserId(c.user_id.clone())), &admin.access_token))
        .await
        .expect("admin revokes a user")
        .into_inner();
    assert_eq!(by_user.revoked_sessions, 2, "sessions a and c were still active");
    assert_eq!(validate(&mut client, &c.access_token).await.failure(), ValidationFailure::SessionRevoked);
    assert!(validate(&mut client, &admin.access_token).await.valid, "the admin's own session is untouched");

    let again = client
        .revoke(with_bearer(revoke(Target::UserId(c.user_id)), &admin.access_token))
        .await
        .expect("idempotent")
        .into_inner();
    assert_eq!((again.revoked_sessions, again.revoked_tokens), (0, 0));

    let missing = client
        .revoke(with_bearer(revoke(Target::SessionId(uuid_like())), &admin.access_token))
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn malformed_revoke_requests_are_invalid_arguments() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let admin = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let no_target =
        client.revoke(pb::RevokeRequest { target: None, reason: String::new() }).await.expect_err("refused");
    assert_eq!(no_target.code(), Code::InvalidArgument);
    let bad_id = client
        .revoke(with_bearer(revoke(Target::SessionId("12".into())), &admin.access_token))
        .await
        .expect_err("refused");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().contains("session_id"), "{}", bad_id.message());
    let not_ours = client.revoke(revoke(Target::AccessToken("a.b.c".into()))).await.expect_err("refused");
    assert_eq!(not_ours.code(), Code::InvalidArgument);
    let long_reason = client
        .revoke(pb::RevokeRequest {
            target: Some(Target::AccessToken(admin.access_token.clone())),
            reason: "r".repeat(513),
        })
        .await
        .expect_err("refused");
    assert_eq!(long_reason.code(), Code::InvalidArgument);
    assert!(validate(&mut client, &admin.access_token).await.valid, "nothing was revoked");
}

fn uuid_like() -> String {
    sigil_server::domain::SessionId::generate().to_string()
}
