//! `Validate` answers a valid token with an encoding kept per verified
//! token (`server/src/grpc/validate_route.rs`). These tests hold that cache
//! to the contract: every answer carries the claims of the very token asked
//! about, however tokens are interleaved, and whatever changes the verdict
//! (an audience the token lacks, a role change, disabling, a revocation)
//! changes the very next answer although the valid one is kept.

use sigil_proto::pb::{self, ValidationFailure, revoke_request::Target};
use sigil_tests::{TestServer, login, validate, with_bearer};

fn claims_of(answer: &pb::ValidateResponse) -> &pb::Claims {
    assert!(answer.valid, "expected a valid answer, got {answer:?}");
    answer.claims.as_ref().expect("a valid answer carries claims")
}

/// Refused for `failure`, and no claims: a refusal never reuses the kept answer.
fn assert_refused(answer: &pb::ValidateResponse, failure: ValidationFailure, what: &str) {
    assert!(!answer.valid, "{what}: still valid");
    assert_eq!(answer.failure(), failure, "{what}");
    assert_eq!(answer.claims, None, "{what}: a refusal carries no claims");
}

#[tokio::test]
async fn each_token_is_answered_with_its_own_claims_however_calls_interleave() {
    let server = TestServer::start().await;
    server.create_user("alice", "alice-password", &["reader"]).await;
    server.create_user("bob", "bob-password", &["writer"]).await;
    let mut client = server.client().await;
    let sessions = [
        login(&mut client, "alice", "alice-password").await,
        login(&mut client, "alice", "alice-password").await,
        login(&mut client, "bob", "bob-password").await,
    ];
    let first: Vec<pb::ValidateResponse> = {
        let mut answers = Vec::new();
        for session in &sessions {
            answers.push(validate(&mut client, &session.access_token).await);
        }
        answers
    };
    for (session, answer) in sessions.iter().zip(&first) {
        let claims = claims_of(answer);
        assert_eq!((&claims.user_id, &claims.session_id), (&session.user_id, &session.session_id));
    }
    assert_eq!(claims_of(&first[0]).username, "alice");
    assert_eq!(claims_of(&first[2]).roles, ["writer"]);
    // Again and again, interleaved and concurrently: each time the token's
    // own first answer, byte for byte the same message.
    for _ in 0..3 {
        let calls = sessions.iter().map(|session| {
            let mut client = client.clone();
            async move { validate(&mut client, &session.access_token).await }
        });
        let again = futures::future::join_all(calls).await;
        assert_eq!(again, first);
    }
}

#[tokio::test]
async fn the_next_answer_follows_current_state_although_the_valid_one_is_kept() {
    let server = TestServer::start().await;
    let carol = server.create_user("carol", "carol-password", &["reader"]).await;
    let dave = server.create_user("dave", "dave-password", &[]).await;
    let (mut admin, admin_token) = server.admin().await;
    let mut client = server.client().await;
    let carols = login(&mut client, "carol", "carol-password").await;
    let daves = login(&mut client, "dave", "dave-password").await;
    let daves_other = login(&mut client, "dave", "dave-password").await;
    for session in [&carols, &daves, &daves_other] {
        // Twice: the second answer is the kept one.
        claims_of(&validate(&mut client, &session.access_token).await);
        claims_of(&validate(&mut client, &session.access_token).await);
    }

    let elsewhere = client
        .validate(pb::ValidateRequest { token: carols.access_token.clone(), audience: Some("billing".into()) })
        .await
        .expect("validate answers")
        .into_inner();
    assert_refused(&elsewhere, ValidationFailure::WrongAudience, "an audience the token lacks");
    claims_of(&validate(&mut client, &carols.access_token).await);

    let roles = pb::RoleList { roles: vec!["writer".into()] };
    let change = pb::UpdateUserRequest { user_id: carol.id.to_string(), disabled: None, roles: Some(roles) };
    admin.update_user(with_bearer(change, &admin_token)).await.expect("roles changed");
    let answer = validate(&mut client, &carols.access_token).await;
    assert_refused(&answer, ValidationFailure::TokenRevoked, "a token carrying the old roles");

    let revoke =
        pb::RevokeRequest { target: Some(Target::AccessToken(daves.access_token.clone())), reason: "e2e".into() };
    client.revoke(revoke).await.expect("revoked");
    let answer = validate(&mut client, &daves.access_token).await;
    assert_refused(&answer, ValidationFailure::SessionRevoked, "a revoked session");
    claims_of(&validate(&mut client, &daves_other.access_token).await);

    let disable = pb::UpdateUserRequest { user_id: dave.id.to_string(), disabled: Some(true), roles: None };
    admin.update_user(with_bearer(disable, &admin_token)).await.expect("disabled");
    let answer = validate(&mut client, &daves_other.access_token).await;
    assert_refused(&answer, ValidationFailure::UserDisabled, "a disabled user");
}
