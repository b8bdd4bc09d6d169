//! What the sled upgrade tests (`sled_json_upgrade`, `sled_layout_upgrade`)
//! share: the checked-in stores under tests/fixtures, copied before a
//! server opens them, and the scans that check what it found.

use std::{path::Path, time::Duration};

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};
use sigil_tests::with_bearer;
use tonic::transport::Channel;

/// The admin password of the fixture (sigil-bench's).
pub(crate) const FIXTURE_ADMIN_PASSWORD: &str = "bench-admin-password";

/// The folder of the checked-in fixtures.
pub(crate) fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Copies a fixture store, so that the test converts a copy.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
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

/// Every session, active or not, through the pages of `page_size`.
pub(crate) async fn all_sessions(
    admin: &mut AdminServiceClient<Channel>,
    bearer: &str,
    page_size: i32,
) -> Vec<pb::Session> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListSessionsRequest { page_size, page_token, include_inactive: true, ..Default::default() };
        let page = admin.list_sessions(with_bearer(request, bearer)).await.expect("sessions page").into_inner();
        all.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// GetStats' counts equal a scan of the listings (the sweeper may expire
/// the seeded access tokens in between: then both are read again).
pub(crate) async fn assert_counts_match_a_scan(admin: &mut AdminServiceClient<Channel>, bearer: &str) {
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
        let sessions = all_sessions(admin, bearer, 7).await;
        let active_sessions = sessions.iter().filter(|s| s.state() == pb::SessionState::Active).count() as u64;
        let request = pb::ListTokensRequest { page_size: 1000, ..Default::default() };
        let tokens = admin.list_tokens(with_bearer(request, bearer)).await.expect("tokens").into_inner().tokens;
        let tokens = tokens.iter().filter(|t| t.state() == pb::TokenState::Active).count() as u64;
        let request = pb::ListUsersRequest { page_size: 1000, ..Default::default() };
        let users =
            admin.list_users(with_bearer(request, bearer)).await.expect("users").into_inner().users.len() as u64;
        if stats(admin).await == before {
            assert_eq!(before, (users, active_sessions, tokens), "GetStats (users, sessions, tokens) against a scan");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the counts never held still for a scan");
}
