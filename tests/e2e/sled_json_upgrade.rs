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

use std::{path::Path, time::Duration};

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};
use sigil_tests::{ChildServer, login, with_bearer};
use tonic::transport::Channel;

/// The admin password of the fixture (sigil-bench's).
const FIXTURE_ADMIN_PASSWORD: &str = "bench-admin-password";

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every session, active or not.
async fn all_sessions(admin: &mut AdminServiceClient<Channel>, bearer: &str) -> Vec<pb::Session> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request =
            pb::ListSessionsRequest { page_size: 10, page_token, include_inactive: true, ..Default::default() };
        let page = admin.list_sessions(with_bearer(request, bearer)).await.expect("sessions page").into_inner();
        all.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// GetStats' counts equal a scan of the listings (the sweeper may expire
/// tokens in between: then both are read again).
async fn assert_counts_match_a_scan(admin: &mut AdminServiceClient<Channel>, bearer: &str) {
    for _ in 0..5 {
        let stats = |admin: &mut AdminServiceClient<Channel>| {
            let mut admin = admin.clone();
            let bearer = bearer.to_string();
            async move {
                let s =
                    admin.get_stats(with_bearer(pb::GetStatsRequest {}, &bearer)).await.expect("stats").into_inner();
                (s.users, s.active_sessions, s.active_tokens)
            }
        };
        let before = stats(admin).await;
        let sessions =
            all_sessions(admin, bearer).await.iter().filter(|s| s.state() == pb::SessionState::Active).count() as u64;
        let request = pb::ListTokensRequest { page_size: 1000, ..Default::default() };
        let tokens = admin.list_tokens(with_bearer(request, bearer)).await.expect("tokens").into_inner().tokens;
        let tokens = tokens.iter().filter(|t| t.state() == pb::TokenState::Active).count() as u64;
        let request = pb::ListUsersRequest { page_size: 1000, ..Default::default() };
        let users =
            admin.list_users(with_bearer(request, bearer)).await.expect("users").into_inner().users.len() as u64;
        if stats(admin).await == before {
            assert_eq!(before, (users, sessions, tokens), "GetStats (users, sessions, tokens) against a scan");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the counts never held still for a scan");
}

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
    let sessions = all_sessions(&mut admin, &bearer).await;
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
    assert_eq!(all_sessions(&mut admin, &bearer).await.len(), 20 + 2 + 2);
    assert_counts_match_a_scan(&mut admin, &bearer).await;
    let output = server.output.clone();
    assert!(server.terminate().await);
    let second = output.lock().expect("log").clone();
    assert!(!second.contains("converted the store's") && !second.contains("counted the store once"), "{second}");
}
