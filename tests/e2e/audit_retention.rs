//! Strangers cannot flush the audit trail: admin and security events are
//! kept for a time, whatever the volume of failed logins, and repeated
//! failed logins are aggregated so a flood cannot fill even the share of
//! the log kept by count.

use sigil_proto::pb::{self, EventKind, admin_service_client::AdminServiceClient};
use sigil_tests::{TestServer, login_request, with_bearer};

/// Every stored event, replayed from the start by `WatchEvents`.
async fn replay_all(
    server: &TestServer,
    admin: &mut AdminServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<pb::Event> {
    let latest = server.identity().store().latest_event_sequence().await.expect("latest");
    let mut stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, token))
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    // The replay is over once the newest event stored before it arrived.
    while events.last().is_none_or(|e: &pb::Event| e.sequence < latest) {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("the replay goes on")
            .expect("no stream error")
            .expect("open stream");
        events.push(message.event.expect("event"));
    }
    events
}

#[tokio::test]
async fn a_flood_of_failed_logins_keeps_every_admin_action() {
    const RETAINED: usize = 50;
    let server = TestServer::start_with(|config| config.event_retention = RETAINED).await;
    let (mut admin, token) = server.admin().await;
    admin
        .create_user(with_bearer(
            pb::CreateUserRequest {
                username: "audited".into(),
                password: "audited-password".into(),
                roles: vec!["reader".into()],
            },
            &token,
        ))
        .await
        .expect("admin action");

    // Strangers: many names, each tried a few times, far beyond the count
    // retention, eight at a time (under the hashing queue's limit).
    let client = server.client().await;
    let attempts: Vec<String> = (0..240).map(|i| format!("stranger-{}", i % 120)).collect();
    for chunk in attempts.chunks(8) {
        let calls = chunk.iter().map(|name| {
            let mut client = client.clone();
            async move { client.authenticate(login_request(name, "guess")).await.expect_err("no such user") }
        });
        futures::future::join_all(calls).await;
    }
    // And one name, hammered.
    for _ in 0..60 {
        client.clone().authenticate(login_request("admin", "wrong")).await.expect_err("wrong password");
    }
    server.identity().sweep().await.expect("sweep trims the log");

    let events = replay_all(&server, &mut admin, &token).await;
    let created = events.iter().find(|e| e.kind() == EventKind::UserCreated && e.username == "audited");
    assert!(created.is_some(), "the admin action was flushed out of the audit trail by failed logins");
    let failed = events.iter().filter(|e| e.kind() == EventKind::LoginFailed).count();
    assert!(failed <= RETAINED, "{failed} failed-login events kept, more than the count retention of {RETAINED}");
    assert!(failed > 0, "failed logins are still recorded");
}
