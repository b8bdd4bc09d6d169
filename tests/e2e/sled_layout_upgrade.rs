//! A sled store of layout 1 (tests/fixtures/sled-layout1-store, binary
//! records, every session and token in one tree whatever its state, with
//! the `active` and `user_tokens` indexes; written by the `sigil-server` of
//! int at c73088e, how is in its `.tokens.json`) is converted to layout 2
//! at its first open by this version: every session, token, user and
//! revocation is found in the state it had, the counts agree with a scan,
//! the old index trees are gone, and the next start converts nothing.
//!
//! A checked-in store for the same reasons as `sled_json_upgrade`: the
//! bytes are those the previous binary really wrote.

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};
use sigil_tests::{ChildServer, login, validate, with_bearer};
use tonic::transport::Channel;

use super::sled_fixture::{FIXTURE_ADMIN_PASSWORD, all_sessions, assert_counts_match_a_scan, copy_dir, fixture};

/// The lifetimes the fixture's tokens were issued under (ten years, so
/// that its revoked access token is still one that matters): the server
/// refuses an access token that outlives its own access-token TTL.
const FIXTURE_TTLS: [&str; 4] = ["--access-token-ttl", "3650d", "--session-ttl", "3650d"];

async fn tokens_of_session(admin: &mut AdminServiceClient<Channel>, bearer: &str, session: &str) -> Vec<pb::Token> {
    let request = pb::ListTokensRequest {
        session_id: Some(session.to_string()),
        include_inactive: true,
        page_size: 100,
        ..Default::default()
    };
    admin.list_tokens(with_bearer(request, bearer)).await.expect("tokens").into_inner().tokens
}

#[tokio::test]
async fn a_layout_1_sled_store_is_converted_at_first_open_keeping_every_record_and_its_state() {
    let facts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("sled-layout1-store.tokens.json")).expect("fixture facts"),
    )
    .expect("json");
    let fact = |name: &str| facts[name].as_str().expect(name).to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    copy_dir(&fixture().join("sled-layout1-store"), &data);

    let server = ChildServer::spawn_with(&data, &FIXTURE_TTLS).await;
    let log = server.output.clone();
    let mut client = server.client().await;
    let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
    let bearer = login(&mut client, "admin", FIXTURE_ADMIN_PASSWORD).await.access_token;

    // Every session, in one id order whatever the page size, in its state.
    let sessions = all_sessions(&mut admin, &bearer, 10).await;
    assert_eq!(sessions.len(), 20 + 3 + 1, "20 seeded, 3 logins of the old version, this login");
    for page_size in [1, 3, 100] {
        let ids: Vec<String> =
            all_sessions(&mut admin, &bearer, page_size).await.into_iter().map(|s| s.session_id).collect();
        let expected: Vec<String> = sessions.iter().map(|s| s.session_id.clone()).collect();
        assert_eq!(ids, expected, "pages of {page_size}");
    }
    let disabled_user = fact("disabled_user_id");
    let seeded: Vec<&pb::Session> = sessions.iter().filter(|s| s.user_agent == "sigil-bench/seed").collect();
    assert_eq!(seeded.len(), 20);
    for session in &seeded {
        let expected =
            if session.user_id == disabled_user { pb::SessionState::Revoked } else { pb::SessionState::Active };
        assert_eq!(
            session.state(),
            expected,
            "a seeded session of the disabled user ends, the others live: {session:?}"
        );
    }
    assert_eq!(seeded.iter().filter(|s| s.user_id == disabled_user).count(), 10);
    let state_of = |id: &str| sessions.iter().find(|s| s.session_id == id).expect(id).state();
    assert_eq!(state_of(&fact("kept_session_id")), pb::SessionState::Active);
    assert_eq!(state_of(&fact("revoked_session_id")), pb::SessionState::Revoked);
    let revoked = sessions.iter().find(|s| s.session_id == fact("revoked_session_id")).expect("revoked");
    assert_eq!(revoked.revoke_reason, "fixture");
    assert_eq!(state_of(&fact("token_revoked_session_id")), pb::SessionState::Active);

    // Every token in its state: the kept session's rotation, the revoked
    // session's two, the token revoked by id (its session lives on).
    let kept = tokens_of_session(&mut admin, &bearer, &fact("kept_session_id")).await;
    let states = |tokens: &[pb::Token]| {
        let mut states: Vec<i32> = tokens.iter().map(|t| t.state).collect();
        states.sort_unstable();
        states
    };
    use pb::TokenState::{Active, Revoked, Rotated};
    assert_eq!(states(&kept), [Active as i32, Active as i32, Active as i32, Rotated as i32], "{kept:?}");
    let ended = tokens_of_session(&mut admin, &bearer, &fact("revoked_session_id")).await;
    assert_eq!(states(&ended), [Revoked as i32, Revoked as i32], "{ended:?}");
    let one_revoked = tokens_of_session(&mut admin, &bearer, &fact("token_revoked_session_id")).await;
    assert_eq!(states(&one_revoked), [Active as i32, Revoked as i32], "{one_revoked:?}");
    let revoked_access = one_revoked.iter().find(|t| t.state() == Revoked).expect("revoked");
    assert_eq!(revoked_access.kind(), pb::TokenKind::Access);

    // The user's tokens (derived from its sessions now) hold them all.
    let request = pb::ListUsersRequest { page_size: 100, ..Default::default() };
    let users = admin.list_users(with_bearer(request, &bearer)).await.expect("users").into_inner().users;
    assert_eq!(users.len(), 3, "admin and two seeded users");
    let admin_id = users.iter().find(|u| u.username == "admin").expect("admin").user_id.clone();
    let request =
        pb::ListTokensRequest { user_id: Some(admin_id), include_inactive: true, page_size: 100, ..Default::default() };
    let admin_tokens = admin.list_tokens(with_bearer(request, &bearer)).await.expect("tokens").into_inner().tokens;
    assert_eq!(admin_tokens.len(), 4 + 2 + 2 + 2, "three old sessions' tokens and this login's");
    assert!(users.iter().find(|u| u.user_id == disabled_user).expect("disabled user").disabled);

    // The revocation log: the token revoked by id stays revoked, the
    // rotated and the revoked refresh tokens are refused, the kept ones work.
    let verdict = validate(&mut client, &fact("token_revoked_access_token")).await;
    assert!(!verdict.valid);
    assert_eq!(verdict.failure(), pb::ValidationFailure::TokenRevoked);
    assert!(validate(&mut client, &fact("kept_access_token")).await.valid, "the kept access token");
    for refused in ["revoked_refresh_token", "rotated_refresh_token"] {
        let answer = client.refresh(pb::RefreshRequest { refresh_token: fact(refused) }).await;
        assert_eq!(answer.expect_err(refused).code(), tonic::Code::Unauthenticated, "{refused}");
    }
    // A reuse of the rotated token revoked the kept session (theft
    // detection reads the rotated hash, kept across the conversion).
    let sessions = all_sessions(&mut admin, &bearer, 10).await;
    let kept = sessions.iter().find(|s| s.session_id == fact("kept_session_id")).expect("kept");
    assert_eq!(kept.state(), pb::SessionState::Revoked, "reuse of a rotated refresh token ends its session");
    let refreshed = client.refresh(pb::RefreshRequest { refresh_token: fact("token_revoked_refresh_token") }).await;
    assert!(refreshed.is_ok(), "the session whose access token was revoked still refreshes: {refreshed:?}");
    assert_counts_match_a_scan(&mut admin, &bearer).await;
    assert!(server.terminate().await, "clean stop");
    let first = log.lock().expect("log").clone();
    assert!(first.contains("converted the store to layout 2"), "{first}");
    assert!(!first.contains("counted the store once"), "the counts were kept already: {first}");

    // The next start converts nothing, and finds it all again.
    let server = ChildServer::spawn_with(&data, &FIXTURE_TTLS).await;
    let mut client = server.client().await;
    let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
    let bearer = login(&mut client, "admin", FIXTURE_ADMIN_PASSWORD).await.access_token;
    assert_eq!(all_sessions(&mut admin, &bearer, 10).await.len(), 20 + 3 + 2);
    assert_counts_match_a_scan(&mut admin, &bearer).await;
    let output = server.output.clone();
    assert!(server.terminate().await);
    let second = output.lock().expect("log").clone();
    assert!(!second.contains("converted the store"), "{second}");
}
