//! The counts `GetStats` reports are kept by the sled engine beside the
//! records, not recounted: the real binary is killed with SIGKILL while
//! rotations and revocations are in flight, three times over one
//! data directory, and after every restart the counts equal a full walk
//! of the listings.

use std::time::Duration;

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, revoke_request::Target};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, login, with_bearer};
use tonic::transport::Channel;

/// Walks every page of the active sessions and tokens, and the users.
async fn scanned(admin: &mut AdminServiceClient<Channel>, bearer: &str) -> (u64, u64, u64) {
    let mut users = 0;
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_users(with_bearer(pb::ListUsersRequest { page_size: 100, page_token }, bearer))
            .await
            .expect("users page")
            .into_inner();
        users += page.users.len() as u64;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut sessions = 0;
    let mut page_token = String::new();
    loop {
        let request = pb::ListSessionsRequest { page_size: 100, page_token, ..Default::default() };
        let page = admin.list_sessions(with_bearer(request, bearer)).await.expect("sessions page").into_inner();
        sessions += page.sessions.iter().filter(|s| s.state() == pb::SessionState::Active).count() as u64;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut tokens = 0;
    let mut page_token = String::new();
    loop {
        let request = pb::ListTokensRequest { page_size: 100, page_token, ..Default::default() };
        let page = admin.list_tokens(with_bearer(request, bearer)).await.expect("tokens page").into_inner();
        tokens += page.tokens.iter().filter(|t| t.state() == pb::TokenState::Active).count() as u64;
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    (users, sessions, tokens)
}

#[tokio::test]
async fn kept_counts_equal_a_full_scan_after_kill_9_mid_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    for round in 0..3 {
        let server = ChildServer::spawn(&data).await;
        let mut client = server.client().await;
        let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
        let bearer = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;

        // Whatever the previous round's kill interrupted, the counts agree.
        let stats = admin.get_stats(with_bearer(pb::GetStatsRequest {}, &bearer)).await.expect("stats").into_inner();
        let (users, sessions, tokens) = scanned(&mut admin, &bearer).await;
        assert_eq!(
            (stats.users, stats.active_sessions, stats.active_tokens),
            (users, sessions, tokens),
            "round {round}: GetStats (users, active sessions, active tokens) against a full scan"
        );

        // Writers that never stop: each rotates the refresh tokens of its
        // own sessions in turn and now and then revokes one of them. Their
        // sessions are opened before the load: a login in flight at the
        // kill stays counted against the account (the lockout's admission
        // is durable too) and would refuse the next round's logins.
        let mut writers = Vec::new();
        for writer in 0..4 {
            let mut client = server.client().await;
            let mut sessions = Vec::new();
            for _ in 0..3 {
                sessions.push(login(&mut client, "admin", ADMIN_PASSWORD).await);
            }
            writers.push(tokio::spawn(async move {
                for step in 0usize.. {
                    let i = step % sessions.len();
                    let written = if step % 11 == 10 && sessions.len() > 1 {
                        let ended = sessions.remove(i);
                        let target = if writer % 2 == 0 {
                            Target::RefreshToken(ended.refresh_token)
                        } else {
                            Target::AccessToken(ended.access_token)
                        };
                        let reason = format!("writer {writer}");
                        client.revoke(pb::RevokeRequest { target: Some(target), reason }).await.map(|_| ())
                    } else {
                        let request = pb::RefreshRequest { refresh_token: sessions[i].refresh_token.clone() };
                        client.refresh(request).await.map(|rotated| {
                            let rotated = rotated.into_inner();
                            sessions[i].refresh_token = rotated.refresh_token;
                            sessions[i].access_token = rotated.access_token;
                        })
                    };
                    // The server is gone (killed): this writer is done.
                    if written.is_err() {
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 300 * round)).await;
        // Killed while the writers are mid-transaction and mid-flush.
        server.kill_9().await;
        for writer in writers {
            writer.abort();
        }
    }
    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
    let bearer = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let stats = admin.get_stats(with_bearer(pb::GetStatsRequest {}, &bearer)).await.expect("stats").into_inner();
    let scan = scanned(&mut admin, &bearer).await;
    assert_eq!((stats.users, stats.active_sessions, stats.active_tokens), scan, "after the last kill");
    assert!(scan.1 > 5 && scan.2 > 10, "the writers wrote: {scan:?}");
    server.kill_9().await;
}
