//! Shutdown of the real binary: SIGTERM with long-lived streams open ends
//! within the grace period (default 10 s) with every acknowledged write
//! durable, and a second signal exits at once.

use std::time::Duration;

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient};
use sigil_tests::{ADMIN_PASSWORD, with_bearer};

use crate::process;

/// The default grace period, plus a generous margin for a loaded machine.
const GRACE_AND_MARGIN: Duration = Duration::from_secs(10 + 10);

/// Logs in as admin and opens a WatchEvents stream; returns the admin
/// client, its token and the open stream (its first event already read).
async fn watching(
    server: &process::Server,
) -> (AdminServiceClient<tonic::transport::Channel>, String, tonic::Streaming<pb::WatchEventsResponse>) {
    let channel = sigil_tests::connect(server.grpc()).await;
    let token = sigil_tests::login(&mut IdentityServiceClient::new(channel.clone()), "admin", ADMIN_PASSWORD)
        .await
        .access_token;
    let mut admin = AdminServiceClient::new(channel);
    let mut events = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &token))
        .await
        .expect("watch opens")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), events.message()).await.expect("an event arrives");
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    (admin, token, events)
}

/// SIGTERM with a WatchEvents stream open: the process exits within the
/// grace period, and a user created just before is there after a restart.
#[tokio::test]
async fn sigterm_with_an_open_watch_stream_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut server = process::start(&[], &data, &[]).await;
    let (mut admin, token, _events) = watching(&server).await;
    let created = admin
        .create_user(with_bearer(
            pb::CreateUserRequest { username: "kept".into(), password: "kept-password-1".into(), roles: vec![] },
            &token,
        ))
        .await
        .expect("user created");
    drop(created);
    server.signal("TERM");
    let status = server.wait_exit(GRACE_AND_MARGIN).await;
    let status =
        status.unwrap_or_else(|| panic!("still running {GRACE_AND_MARGIN:?} after SIGTERM:\n{}", server.text()));
    assert!(status.success(), "{status:?}\n{}", server.text());

    let mut again = process::start(&[], &data, &[]).await;
    let mut client = IdentityServiceClient::new(sigil_tests::connect(again.grpc()).await);
    sigil_tests::login(&mut client, "kept", "kept-password-1").await;
    again.signal("TERM");
    assert!(again.wait_exit(GRACE_AND_MARGIN).await.is_some());
}

/// A second SIGINT during a shutdown that is still waiting exits at once.
#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Long limits, so that only the second signal can end the wait.
    let flags = ["--request-timeout", "5m", "--shutdown-grace", "5m"];
    let mut server = process::start(&[], &dir.path().join("data"), &flags).await;
    let (_admin, _token, _events) = watching(&server).await;
    // A call whose body never comes keeps the graceful shutdown waiting
    // (open streams end at once; calls in flight are let finish).
    let tcp = tokio::net::TcpStream::connect(server.grpc()).await.expect("connects");
    let (send, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut ping_pong = connection.ping_pong().expect("ping-pong handle");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut ready = send.ready().await.expect("ready");
    let (_pending, _body) =
        ready.send_request(crate::limits::headers_only(server.grpc()), false).expect("stream opened");
    // The server answers frames in order: once it answers a ping sent after
    // the request's headers, the call is in flight on its side.
    ping_pong.ping(h2::Ping::opaque()).await.expect("pong");
    server.signal("INT");
    assert!(server.wait_for_output("shutting down", Duration::from_secs(10)).await, "{}", server.text());
    assert!(server.wait_exit(Duration::from_secs(2)).await.is_none(), "the first signal waits for the pending call");
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(5)).await;
    let status = status.unwrap_or_else(|| panic!("still running 5 s after a second SIGINT:\n{}", server.text()));
    assert_eq!(status.code(), Some(1), "the second signal's exit, not a graceful one:\n{}", server.text());
}

/// Connections that never sent their opening carry no call: a stranger's
/// silent connections to either port do not hold the shutdown for the
/// grace period.
#[tokio::test]
async fn silent_connections_do_not_hold_the_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--shutdown-grace", "60s", "--handshake-timeout", "60s"];
    let mut server = process::start(&[], &dir.path().join("data"), &flags).await;
    let mut silent = Vec::new();
    for addr in [server.grpc(), server.http()] {
        for _ in 0..3 {
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connects"));
        }
    }
    let signalled = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(20)).await;
    let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", server.text()));
    assert!(status.success(), "{status:?}\n{}", server.text());
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "silent connections held the shutdown for {:?}",
        signalled.elapsed()
    );
    drop(silent);
}
