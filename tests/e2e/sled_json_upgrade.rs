//! A sled store written by a version that kept sessions, tokens and
//! refresh pointers as JSON (tests/fixtures/sled-json-store, made by the
//! `sigil-server` of main at c00ec46; how is in its `.tokens.json`) is
//! converted to binary records at its first open by this version: every
//! record keeps every field, the revoked session stays revoked, the counts
//! are taken once and agree with a full scan, and the next start converts
//! nothing more.
//!
//! A checked-in store rather than one made in the test: the test must run
//! where only this version's binary exists (CI), and the bytes are those
//! the old binary really wrote, not this version's idea of them.

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};
use sigil_tests::{ChildServer, login, with_bearer};

use super::sled_fixture::{FIXTURE_ADMIN_PASSWORD, all_sessions, assert_counts_match_a_scan, copy_dir, fixture};

#[tokio::test]
async fn a_json_sled_store_of_the_previous_version_is_converted_at_first_open_keeping_every_record() {
    let facts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("sled-json-store.tokens.json")).expect("fixture facts"),
    )
    .expect("json");
    let fact = |name: &str| facts[name].as_str().expect(name).to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    copy_dir(&fixture().join("sled-json-store"), &data);

    let server = ChildServer::spawn(&data).await;
    let log = server.output.clone();
    let mut client = server.client().await;
    let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
    let bearer = login(&mut client, "admin", FIXTURE_ADMIN_PASSWORD).await.access_token;

    // Every record is there with every field.
    let sessions = all_sessions(&mut admin, &bearer, 10).await;
    assert_eq!(sessions.len(), 20 + 2 + 1, "20 seeded, 2 logins of the old version, this login");
    let seeded: Vec<&pb::Session> = sessions.iter().filter(|s| s.user_agent == "sigil-bench/seed").collect();
    assert_eq!(seeded.len(), 20);
    for session in &seeded {
        let n: usize = session.device_name.strip_prefix("seed-").expect("seeded device name").parse().expect("n");
        assert_eq!(session.client_address, format!("10.0.{}.{}:443", n / 250 % 250, n % 250));
        assert!(session.username.starts_with("seed-user-"), "{session:?}");
        assert!(session.created_at.is_some() && session.expires_at.is_some() && session.last_seen_at.is_some());
    }
    let revoked = sessions.iter().find(|s| s.session_id == fact("revoked_session_id")).expect("revoked session");
    assert_eq!(revoked.state(), pb::SessionState::Revoked);
    assert_eq!((revoked.revoke_reason.as_str(), revoked.device_name.as_str()), ("fixture", "fixture-revoked"));
    assert!(revoked.revoked_at.is_some());
    let kept = sessions.iter().find(|s| s.session_id == fact("kept_session_id")).expect("kept session");
    assert_eq!(kept.device_name, "fixture-kept");
    let request = pb::ListTokensRequest {
        session_id: Some(kept.session_id.clone()),
        include_inactive: true,
        page_size: 10,
        ..Default::default()
    };
    let tokens = admin.list_tokens(with_bearer(request, &bearer)).await.expect("tokens").into_inner().tokens;
    let rotated = tokens.iter().filter(|t| t.state() == pb::TokenState::Rotated).count();
    assert_eq!((tokens.len(), rotated), (4, 1), "login's two tokens, the rotation's two; one refresh token rotated");

    // The refresh pointers were converted too: the revoked session's token
    // is refused, the kept one rotates while its session lives.
    let refused = client
        .refresh(pb::RefreshRequest { refresh_token: fact("revoked_refresh_token") })
        .await
        .expect_err("a revoked session stays revoked");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let kept_until = facts["kept_refresh_expires_at_unix_ms"].as_i64().expect("expiry");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let refreshed = client.refresh(pb::RefreshRequest { refresh_token: fact("kept_refresh_token") }).await;
    match refreshed {
        Ok(_) => assert!(now < kept_until, "a refresh token past its expiry was accepted"),
        Err(e) => {
            // The fixture's session lives 30 days from when it was made.
            assert!(now >= kept_until, "the kept session's refresh token was refused: {e}");
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
    }
    assert_counts_match_a_scan(&mut admin, &bearer).await;
    assert!(server.terminate().await, "clean stop");
    let first = log.lock().expect("log").clone();
    assert!(first.contains("converted the store's sessions, tokens and refresh pointers"), "{first}");
    assert!(first.contains("counted the store once"), "{first}");

    // The next start converts and counts nothing, and finds it all again.
    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
    let bearer = login(&mut client, "admin", FIXTURE_ADMIN_PASSWORD).await.access_token;
    assert_eq!(all_sessions(&mut admin, &bearer, 10).await.len(), 20 + 2 + 2);
    assert_counts_match_a_scan(&mut admin, &bearer).await;
    let output = server.output.clone();
    assert!(server.terminate().await);
    let second = output.lock().expect("log").clone();
    assert!(!second.contains("converted the store's") && !second.contains("counted the store once"), "{second}");
}
