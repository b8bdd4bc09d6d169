//! The console's own session, with the real `sigil-console` binary in tmux
//! against a real server: quitting revokes it (no admin session is left
//! behind), and when it is revoked elsewhere the console says so in its
//! header instead of "● live", and `L` logs it in again.

use std::{process::Command, time::Duration};

use sigil_proto::pb;
use sigil_tests::{ADMIN_PASSWORD, TestServer, eventually, with_bearer};

use crate::console::Tmux;

/// Whether tmux is here; in CI (`CI=true`) its absence fails the test.
fn tmux_available() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "tmux is missing in CI (.ci/run installs it)");
    println!("skipped: tmux is not installed here (.ci/run installs it)");
    false
}

/// Starts the console in a tmux session of its own, 80×24.
fn start_console(server: &TestServer, socket: &str) -> Tmux {
    let tmux = Tmux { socket: socket.to_string() };
    let command = format!(
        "env SIGIL_PASSWORD={ADMIN_PASSWORD} {} --server http://{}",
        sigil_tests::console_binary().display(),
        server.grpc_addr()
    );
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "80", "-y", "24", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    tmux
}

/// Every session the console logged in with, active or not.
async fn console_sessions(server: &TestServer) -> Vec<pb::Session> {
    let (mut admin, token) = server.admin().await;
    let request = pb::ListSessionsRequest { include_inactive: true, page_size: 1000, ..Default::default() };
    let sessions = admin.list_sessions(with_bearer(request, &token)).await.expect("list").into_inner().sessions;
    sessions.into_iter().filter(|s| s.device_name == "sigil-console").collect()
}

async fn one_active_console_session(server: &TestServer) -> pb::Session {
    let found = eventually(Duration::from_secs(10), || async {
        let active: Vec<_> =
            console_sessions(server).await.into_iter().filter(|s| s.state() == pb::SessionState::Active).collect();
        (active.len() == 1).then(|| active[0].clone())
    })
    .await;
    found.expect("the console's session is listed, marked by its device name")
}

#[tokio::test]
async fn quitting_revokes_the_consoles_own_session() {
    if !tmux_available() {
        return;
    }
    let server = TestServer::start().await;
    let tmux = start_console(&server, &format!("sigil-e2e-quit-{}", std::process::id()));
    tmux.wait_for("● live").await;
    let own = one_active_console_session(&server).await;

    tmux.keys(&["q"]);
    let ended = eventually(Duration::from_secs(10), || {
        let alive = tmux.run(&["has-session", "-t", "console"]).status.success();
        async move { (!alive).then_some(()) }
    })
    .await;
    assert!(ended.is_some(), "the console did not exit on q:\n{}", tmux.screen());
    let after = console_sessions(&server).await;
    let row = after.iter().find(|s| s.session_id == own.session_id).expect("still listed");
    assert_eq!(row.state(), pb::SessionState::Revoked, "quitting left the console's admin session behind");
    assert_eq!(row.revoke_reason, "sigil-console quit");
}

#[tokio::test]
async fn a_console_whose_session_is_revoked_says_so_and_logs_in_again() {
    if !tmux_available() {
        return;
    }
    let server = TestServer::start().await;
    let tmux = start_console(&server, &format!("sigil-e2e-zombie-{}", std::process::id()));
    tmux.wait_for("● live").await;
    let own = one_active_console_session(&server).await;

    // Someone else revokes the console's session.
    let (mut admin_identity, token) = (server.client().await, server.admin().await.1);
    let request = pb::RevokeRequest {
        target: Some(pb::revoke_request::Target::SessionId(own.session_id.clone())),
        reason: "incident".into(),
    };
    admin_identity.revoke(with_bearer(request, &token)).await.expect("revoke");
    let screen = tmux.wait_for("● session ended · L log in").await;
    assert!(!screen.contains("● live"), "{screen}");

    // L asks for the password (hidden) and logs in again.
    tmux.keys(&["L"]);
    tmux.wait_for("Log in again").await;
    tmux.keys(&[ADMIN_PASSWORD]);
    let screen = tmux.screen();
    assert!(!screen.contains(ADMIN_PASSWORD), "the password is shown:\n{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("● live").await;
    tmux.wait_for("logged in again as admin").await;
    let fresh = one_active_console_session(&server).await;
    assert_ne!(fresh.session_id, own.session_id);
    tmux.keys(&["q"]);
}

#[tokio::test]
async fn the_events_view_opens_with_history_and_a_shows_ended_sessions() {
    if !tmux_available() {
        return;
    }
    let server = TestServer::start().await;
    // Before the console starts: a login, and a session that has ended.
    let mut client = server.client().await;
    let login = |device: &str| {
        let request = pb::AuthenticateRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            device_name: Some(device.into()),
            audience: None,
        };
        let mut client = client.clone();
        async move { client.authenticate(request).await.expect("login").into_inner() }
    };
    login("before-start").await;
    let ended = login("ended-laptop").await;
    let request = pb::RevokeRequest {
        target: Some(pb::revoke_request::Target::RefreshToken(ended.refresh_token)),
        reason: "lost".into(),
    };
    client.revoke(request).await.expect("revoke");

    let tmux = start_console(&server, &format!("sigil-e2e-history-{}", std::process::id()));
    tmux.wait_for("● live").await;
    let screen = tmux.wait_for("before-start").await;
    assert!(!screen.contains("ended-laptop"), "an ended session is listed without a:\n{screen}");
    // The Events view (key 4) holds what happened before the console started.
    tmux.keys(&["4"]);
    tmux.wait_for("Events (newest first)").await;
    tmux.wait_for("(ended-laptop").await;
    tmux.wait_for("session revoked").await;
    // Back on Sessions (key 1), `a` brings in the ended session.
    tmux.keys(&["1"]);
    tmux.keys(&["a"]);
    let screen = tmux.wait_for("ended-laptop").await;
    assert!(screen.contains("revoked"), "{screen}");
    tmux.wait_for("Sessions, ended too").await;
    tmux.keys(&["q"]);
}
