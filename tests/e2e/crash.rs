//! The real `sigil-server` is killed with SIGKILL right after acknowledged
//! writes, ten times over one data directory; after every restart each
//! acknowledged session, rotation and revocation is intact.

use sigil_proto::pb::{self, ValidationFailure, revoke_request::Target};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, login, login_request, validate};

/// What one round acknowledged, to be checked after the next restart.
struct Acknowledged {
    live_access: String,
    live_refresh: String,
    revoked_access: String,
    revoked_refresh: String,
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_ten_times_in_a_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut previous: Vec<Acknowledged> = Vec::new();
    let mut jwks: Option<String> = None;
    for round in 0..10 {
        let server = ChildServer::spawn(&data).await;
        let mut client = server.client().await;

        // Everything acknowledged in earlier rounds is still there.
        let keys = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
        assert_eq!(jwks.get_or_insert(keys.clone()), &keys, "round {round}: signing keys survived");
        for (i, ack) in previous.iter().enumerate() {
            let live = validate(&mut client, &ack.live_access).await;
            assert!(live.valid, "round {round}, ack {i}: live session lost: {live:?}");
            let revoked = validate(&mut client, &ack.revoked_access).await;
            assert_eq!(revoked.failure(), ValidationFailure::SessionRevoked, "round {round}, ack {i}: revocation lost");
            let refused = client
                .refresh(pb::RefreshRequest { refresh_token: ack.revoked_refresh.clone() })
                .await
                .expect_err("a revoked session stays revoked");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
        // The newest rotation of the previous round was acknowledged: its
        // refresh token must work now (and it is rotated again here).
        if let Some(last) = previous.last_mut() {
            let rotated = client
                .refresh(pb::RefreshRequest { refresh_token: last.live_refresh.clone() })
                .await
                .unwrap_or_else(|e| panic!("round {round}: acknowledged rotation lost: {e}"))
                .into_inner();
            last.live_refresh = rotated.refresh_token;
            last.live_access = rotated.access_token;
        }

        // New acknowledged writes: a login, a refresh, a revocation.
        let keep = login(&mut client, "admin", ADMIN_PASSWORD).await;
        let keep = client
            .refresh(pb::RefreshRequest { refresh_token: keep.refresh_token })
            .await
            .expect("refresh")
            .into_inner();
        let doomed = login(&mut client, "admin", ADMIN_PASSWORD).await;
        let counts = client
            .revoke(pb::RevokeRequest {
                target: Some(Target::AccessToken(doomed.access_token.clone())),
                reason: format!("round {round}"),
            })
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(counts.revoked_sessions, 1);
        previous.push(Acknowledged {
            live_access: keep.access_token,
            live_refresh: keep.refresh_token,
            revoked_access: doomed.access_token,
            revoked_refresh: doomed.refresh_token,
        });

        // No shutdown code runs.
        server.kill_9().await;
    }
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_the_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let output = server.output.clone();
    assert!(server.terminate().await, "exit status 0 on SIGTERM");
    let log = output.lock().expect("log").clone();
    assert!(log.contains("all acknowledged writes are durable"), "{log}");
    assert!(!log.contains(ADMIN_PASSWORD), "the admin password is never logged");
    assert!(!log.contains(&session.refresh_token), "refresh tokens are never logged");

    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    assert!(validate(&mut client, &session.access_token).await.valid);
    server.kill_9().await;
}

#[tokio::test]
async fn json_logs_carry_a_span_per_call_with_method_peer_and_status_and_no_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        ChildServer::spawn_logging(&dir.path().join("data"), &["--log-format", "json"], "info,sigil_server=debug")
            .await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client.authenticate(login_request("admin", "wrong-but-secret")).await.expect_err("refused");
    let output = server.output.clone();
    assert!(server.terminate().await);
    let log = output.lock().expect("log").clone();
    let spans: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "rpc finished")
        .map(|line| line["span"].clone())
        .collect();
    let refused = spans
        .iter()
        .find(|span| span["method"] == "/sigil.v1.IdentityService/Authenticate" && span["status"] == "Unauthenticated")
        .unwrap_or_else(|| panic!("no span for the refused login in {spans:?}"));
    assert!(refused["peer"].as_str().is_some_and(|peer| peer.starts_with("127.0.0.1:")), "{refused}");
    for secret in [ADMIN_PASSWORD, "wrong-but-secret", session.refresh_token.as_str(), session.access_token.as_str()] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}
