//! Brute force: repeated failures lock an account (even the right password
//! is refused, with a retry-after hint), other accounts are unaffected,
//! unknown names lock alike without harming a user created later under that
//! name, and the counters survive a restart.

use std::time::Duration;

use sigil_proto::pb::{self, EventKind};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, TestServer, login, login_request, with_bearer};
use tonic::Code;

async fn locking_server() -> TestServer {
    TestServer::start_with(|config| {
        config.lockout_threshold = 3;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
    })
    .await
}

#[tokio::test]
async fn repeated_failures_lock_the_account_and_only_that_account() {
    let server = locking_server().await;
    server.create_user("nina", "nina-password", &[]).await;
    server.create_user("oscar", "oscar-password", &[]).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        let wrong = client.authenticate(login_request("nina", "guess")).await.expect_err("wrong password");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let locked = client.authenticate(login_request("nina", "nina-password")).await.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    let retry_after: u64 = locked
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after hint in seconds");
    assert!((590..=600).contains(&retry_after), "{retry_after}");
    // Another account is unaffected.
    login(&mut client, "oscar", "oscar-password").await;

    // The lock is an audit event.
    let (mut admin, token) = server.admin().await;
    let mut stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &token))
        .await
        .expect("watch")
        .into_inner();
    let mut saw_lock = false;
    while let Ok(Ok(Some(message))) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        let event = message.event.expect("event");
        saw_lock |= event.kind() == EventKind::AccountLocked && event.username == "nina";
    }
    assert!(saw_lock, "an ACCOUNT_LOCKED event names the account");
}

#[tokio::test]
async fn unknown_names_lock_alike_but_a_later_user_of_that_name_starts_clean() {
    let server = locking_server().await;
    let mut client = server.client().await;
    for _ in 0..3 {
        client.authenticate(login_request("paula", "guess")).await.expect_err("no such user");
    }
    let locked = client.authenticate(login_request("paula", "guess")).await.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "an unknown name locks like a real one");
    server.create_user("paula", "paula-password", &[]).await;
    login(&mut client, "paula", "paula-password").await;
}

#[tokio::test]
async fn a_success_resets_the_count() {
    let server = locking_server().await;
    server.create_user("quinn", "quinn-password", &[]).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        client.authenticate(login_request("quinn", "guess")).await.expect_err("wrong");
    }
    login(&mut client, "quinn", "quinn-password").await;
    for _ in 0..2 {
        client.authenticate(login_request("quinn", "guess")).await.expect_err("wrong");
    }
    login(&mut client, "quinn", "quinn-password").await;
}

#[tokio::test]
async fn locks_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let flags = ["--lockout-threshold", "3", "--lockout-window", "1m", "--lockout-duration", "10m"];
    let server = ChildServer::spawn_with(&data, &flags).await;
    let mut client = server.client().await;
    for _ in 0..3 {
        client.authenticate(login_request("admin", "guess")).await.expect_err("wrong");
    }
    assert!(server.terminate().await, "clean exit");

    let server = ChildServer::spawn_with(&data, &flags).await;
    let mut client = server.client().await;
    let locked = client.authenticate(login_request("admin", ADMIN_PASSWORD)).await.expect_err("still locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    server.kill_9().await;
}

#[tokio::test]
async fn failures_sent_all_at_once_are_all_counted() {
    // A brute-forcer sending guesses in parallel must not slip past the
    // counter: every failure is counted atomically, not read-then-written.
    let server = TestServer::start_with(|config| {
        config.lockout_threshold = 10;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
    })
    .await;
    server.create_user("petra", "petra-password", &[]).await;
    let client = server.client().await;
    let guesses = (0..10).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move { client.authenticate(login_request("petra", &format!("guess-{i}"))).await })
    });
    for guess in guesses {
        let refused = guess.await.expect("task").expect_err("wrong password");
        assert!(matches!(refused.code(), Code::Unauthenticated | Code::ResourceExhausted), "{refused:?}");
    }
    let locked = client.clone().authenticate(login_request("petra", "petra-password")).await.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "ten parallel failures locked the account");
}

fn from_address(request: pb::AuthenticateRequest, forwarded_for: &str) -> tonic::Request<pb::AuthenticateRequest> {
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert("x-forwarded-for", forwarded_for.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn the_optional_per_address_limit_blocks_an_address_guessing_across_accounts() {
    let server = TestServer::start_with(|config| {
        config.lockout_threshold = 100;
        config.address_lockout_threshold = 3;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
        // The test client connects from 127.0.0.1: it plays a trusted proxy.
        config.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    server.create_user("quinn", "quinn-password", &[]).await;
    let mut client = server.client().await;
    // One address guesses three different accounts: each failure counts
    // against the address, not any one account.
    for name in ["quinn", "rita", "sam"] {
        let wrong =
            client.authenticate(from_address(login_request(name, "guess"), "203.0.113.7")).await.expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let blocked = client
        .authenticate(from_address(login_request("quinn", "quinn-password"), "198.51.100.1, 203.0.113.7"))
        .await
        .expect_err("the address is blocked, whatever a client prepends");
    assert_eq!(blocked.code(), Code::ResourceExhausted);
    assert!(blocked.metadata().get("retry-after").is_some());
    // Another client behind the same proxy, and the account itself, are fine.
    client
        .authenticate(from_address(login_request("quinn", "quinn-password"), "203.0.113.8"))
        .await
        .expect("another address logs in");
}

#[tokio::test]
async fn forwarded_addresses_are_ignored_from_peers_that_are_not_trusted_proxies() {
    let server = TestServer::start_with(|config| {
        config.lockout_threshold = 100;
        config.address_lockout_threshold = 3;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
    })
    .await;
    server.create_user("tess", "tess-password", &[]).await;
    let mut client = server.client().await;
    // Spoofing a new address per guess does not escape the limit: the
    // header is not believed, so all three count against 127.0.0.1.
    for (i, name) in ["tess", "uma", "vic"].iter().enumerate() {
        let spoofed = format!("203.0.113.{i}");
        let wrong = client.authenticate(from_address(login_request(name, "guess"), &spoofed)).await.expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    let blocked = client
        .authenticate(from_address(login_request("tess", "tess-password"), "203.0.113.99"))
        .await
        .expect_err("blocked");
    assert_eq!(blocked.code(), Code::ResourceExhausted);
}
