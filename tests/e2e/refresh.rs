use sigil_proto::pb::{self, ValidationFailure};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, validate};
use tonic::Code;

fn refresh_request(token: &str) -> pb::RefreshRequest {
    pb::RefreshRequest { refresh_token: token.into() }
}

#[tokio::test]
async fn refresh_rotates_the_token_and_keeps_the_session() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let second = client.refresh(refresh_request(&first.refresh_token)).await.expect("refresh").into_inner();
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(second.user_id, first.user_id);
    assert_ne!(second.refresh_token, first.refresh_token, "refresh token rotated");
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.refresh_token_expires_at, first.refresh_token_expires_at, "absolute session expiry");
    let claims = validate(&mut client, &second.access_token).await.claims.expect("new access token valid");
    assert_eq!(claims.session_id, first.session_id);
    // The first access token stays valid: rotation is not revocation.
    assert!(validate(&mut client, &first.access_token).await.valid);
    let third = client.refresh(refresh_request(&second.refresh_token)).await.expect("refresh again").into_inner();
    assert!(validate(&mut client, &third.access_token).await.valid);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_session() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let second = client.refresh(refresh_request(&first.refresh_token)).await.expect("refresh").into_inner();

    // The thief (or the victim) replays the old refresh token.
    let reuse = client.refresh(refresh_request(&first.refresh_token)).await.expect_err("reuse refused");
    assert_eq!(reuse.code(), Code::Unauthenticated);

    // The newest token of the family is dead too, and so are access tokens.
    let newest = client.refresh(refresh_request(&second.refresh_token)).await.expect_err("family revoked");
    assert_eq!(newest.code(), Code::Unauthenticated);
    for access in [&first.access_token, &second.access_token] {
        let verdict = validate(&mut client, access).await;
        assert_eq!(verdict.failure(), ValidationFailure::SessionRevoked);
    }
    // Other sessions of the same user are untouched.
    let other = login(&mut client, "admin", ADMIN_PASSWORD).await;
    assert!(validate(&mut client, &other.access_token).await.valid);
}

#[tokio::test]
async fn concurrent_presentations_of_one_refresh_token_rotate_at_most_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let attempts = (0..8).map(|_| {
        let mut client = client.clone();
        let token = session.refresh_token.clone();
        tokio::spawn(async move { client.refresh(refresh_request(&token)).await })
    });
    let results = futures::future::join_all(attempts).await;
    let successes = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert!(successes <= 1, "{successes} rotations of one token");
    // Whatever raced, the replays mean theft: the session ends.
    let verdict = validate(&mut client, &session.access_token).await;
    assert_eq!(verdict.failure(), ValidationFailure::SessionRevoked);
}

#[tokio::test]
async fn unknown_empty_and_oversized_refresh_tokens_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let unknown = client
        .refresh(refresh_request("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .expect_err("unknown refused");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let empty = client.refresh(refresh_request("")).await.expect_err("empty refused");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let huge = client.refresh(refresh_request(&"r".repeat(4096))).await.expect_err("oversized refused");
    assert_eq!(huge.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_revoked_session_cannot_be_refreshed() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client
        .revoke(pb::RevokeRequest {
            target: Some(pb::revoke_request::Target::RefreshToken(session.refresh_token.clone())),
            reason: "logout".into(),
        })
        .await
        .expect("revoke");
    let status = client.refresh(refresh_request(&session.refresh_token)).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}
