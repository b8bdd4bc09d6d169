//! The console's Dashboard and incident actions, driven in tmux: the real
//! `sigil-console` against the real `sigil-server` binary. The Dashboard's
//! rates move when validations, logins, failed logins and revocations
//! arrive; a bulk revoke by filter (`/` + `D` + `y`) ends exactly the
//! sessions the filter matched and no others, never the console's own; a
//! user is created, given a new password and new roles, and disabled, from
//! the keyboard.

use std::{process::Command, time::Duration};

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, connect, eventually, login, with_bearer};

use crate::console::Tmux;

/// Whether tmux is here. Without it the test says so and is skipped, but
/// in CI (`CI=true`, where .ci/run installs it) a missing tmux fails.
pub(crate) fn have_tmux() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return true;
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "tmux is missing in CI (.ci/run installs it)");
    println!("skipped: tmux is not installed here (.ci/run installs it)");
    false
}

/// The console in a 200×50 tmux window, logged in as admin.
pub(crate) fn console(server: &ChildServer, socket: &str) -> Tmux {
    let tmux = Tmux { socket: format!("{socket}-{}", std::process::id()) };
    let command = format!(
        "env SIGIL_PASSWORD={ADMIN_PASSWORD} {} --server http://{}",
        sigil_tests::console_binary().display(),
        server.grpc_addr
    );
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "200", "-y", "50", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    tmux
}

/// The current and peak rates a Dashboard chart's title shows:
/// "validations 12/s · peak 40/s over 3m".
fn rate(screen: &str, name: &str) -> Option<(u64, u64)> {
    screen.lines().find_map(|line| {
        let title = line.trim_start_matches(['│', '─', ' ']).strip_prefix(name)?.strip_prefix(' ')?;
        let (current, rest) = title.split_once("/s · peak ")?;
        let (peak, _) = rest.split_once("/s")?;
        Some((current.trim().parse().ok()?, peak.trim().parse().ok()?))
    })
}

#[tokio::test]
async fn the_dashboards_rates_move_under_load() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::spawn(dir.path()).await;
    let tmux = console(&server, "sigil-e2e-dashboard");
    tmux.wait_for("● live").await;
    tmux.keys(&["5"]);
    let screen = tmux.wait_for("active sessions 1 ").await;
    for name in ["validations", "logins", "failed logins", "revocations"] {
        assert_eq!(rate(&screen, name), Some((0, 0)), "{name} before any load:\n{screen}");
    }

    // Load: validations, logins, failed logins (three wrong passwords for
    // carol, below the lockout threshold) and revocations, for a few seconds.
    let mut client = server.client().await;
    let admin_login = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let mut admin = AdminServiceClient::new(connect(server.grpc_addr).await);
    let carol = pb::CreateUserRequest { username: "carol".into(), password: "carol-password-1".into(), roles: vec![] };
    admin.create_user(with_bearer(carol, &admin_login.access_token)).await.expect("carol created");
    let load = async {
        for round in 0..6 {
            let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
            for _ in 0..50 {
                sigil_tests::validate(&mut client, &session.access_token).await;
            }
            if round % 2 == 0 {
                let wrong = sigil_tests::login_request("carol", "wrong password");
                client.authenticate(wrong).await.expect_err("a wrong password is refused");
            }
            let revoke = pb::RevokeRequest {
                target: Some(pb::revoke_request::Target::RefreshToken(session.refresh_token)),
                reason: "load".into(),
            };
            client.revoke(revoke).await.expect("revoke");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    load.await;
    let moved = eventually(Duration::from_secs(10), || {
        let screen = tmux.screen();
        async move {
            let peaks: Vec<u64> = ["validations", "logins", "failed logins", "revocations"]
                .iter()
                .map(|name| rate(&screen, name).map_or(0, |(_, peak)| peak))
                .collect();
            peaks.iter().all(|&p| p > 0).then_some((peaks, screen))
        }
    })
    .await;
    let (peaks, screen) = moved.unwrap_or_else(|| panic!("the rates did not move:\n{}", tmux.screen()));
    // About 50 validations every half second: tens per second, not a trickle.
    assert!(peaks[0] >= 20, "validations peaked at {}/s:\n{screen}", peaks[0]);
    // Who failed is listed, by name and by address.
    let failures = eventually(Duration::from_secs(5), || {
        let screen = tmux.screen();
        // The server publishes the first failure per name at once and the
        // repeats as one summary a minute later: carol is listed now.
        async move { (screen.contains("  carol") && screen.contains("  127.0.0.1")).then_some(()) }
    })
    .await;
    assert!(failures.is_some(), "carol's failures are not listed:\n{}", tmux.screen());
    tmux.keys(&["q"]);
}

#[tokio::test]
async fn a_bulk_revoke_by_filter_ends_exactly_the_matching_sessions() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::spawn(dir.path()).await;
    let mut client = server.client().await;
    let mut sessions = Vec::new();
    for (n, device) in ["kiosk-lobby-1", "laptop-1", "kiosk-lobby-2", "kiosk-lobby-3", "laptop-2"].iter().enumerate() {
        let mut request = sigil_tests::login_request("admin", ADMIN_PASSWORD);
        request.device_name = Some((*device).to_string());
        let session = client.authenticate(request).await.expect("login").into_inner();
        sessions.push((device.starts_with("kiosk"), n, session));
    }
    let tmux = console(&server, "sigil-e2e-bulk-revoke");
    tmux.wait_for("● live").await;
    tmux.wait_for("laptop-2").await;
    tmux.keys(&["/", "kiosk", "Enter"]);
    tmux.wait_for("filter \"kiosk\"").await;
    tmux.keys(&["D"]);
    let screen = tmux.wait_for("Confirm").await;
    assert!(screen.contains("Revoke 3 active sessions matching \"kiosk\"?"), "{screen}");
    assert!(screen.contains("kiosk-lobby-1"), "the prompt names a sample: {screen}");
    tmux.keys(&["y"]);
    tmux.wait_for("revoked 3 sessions matching \"kiosk\"").await;

    // Exactly the three kiosks ended; the laptops and the console did not.
    let admin_login = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let mut admin = AdminServiceClient::new(connect(server.grpc_addr).await);
    let listed = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest { include_inactive: true, page_size: 1000, ..Default::default() },
            &admin_login.access_token,
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    for (kiosk, n, session) in &sessions {
        let row = listed.iter().find(|s| s.session_id == session.session_id).expect("listed");
        let expected = if *kiosk { pb::SessionState::Revoked } else { pb::SessionState::Active };
        assert_eq!(row.state(), expected, "session {n} ({})", row.device_name);
        let verdict = sigil_tests::validate(&mut client, &session.access_token).await;
        assert_eq!(verdict.valid, !kiosk, "session {n}: {:?}", verdict.failure());
    }
    let console_sessions = listed.iter().filter(|s| s.device_name == "sigil-console");
    assert!(
        console_sessions.clone().count() >= 1
            && console_sessions.into_iter().all(|s| s.state() == pb::SessionState::Active)
    );
    let revoked = listed.iter().filter(|s| s.state() == pb::SessionState::Revoked).count();
    assert_eq!(revoked, 3, "no other session ended");
    tmux.keys(&["q"]);
}

#[tokio::test]
async fn a_bulk_revoke_by_filter_keeps_the_consoles_own_session() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::spawn(dir.path()).await;
    let mut client = server.client().await;
    // Another console's session: the filter matches it and the console's own.
    let mut request = sigil_tests::login_request("admin", ADMIN_PASSWORD);
    request.device_name = Some("sigil-console".into());
    let other = client.authenticate(request).await.expect("login").into_inner();
    let tmux = console(&server, "sigil-e2e-bulk-keeps-own");
    tmux.wait_for("● live").await;
    tmux.keys(&["/", "sigil-console", "Enter"]);
    tmux.wait_for("filter \"sigil-console\"").await;
    tmux.wait_for("Sessions 1/2 ").await;
    tmux.keys(&["D"]);
    let screen = tmux.wait_for("Confirm").await;
    assert!(screen.contains("Revoke 1 active session matching \"sigil-console\"?"), "{screen}");
    assert!(screen.contains("(your own session is kept)"), "{screen}");
    tmux.keys(&["y"]);
    tmux.wait_for("revoked 1 session matching \"sigil-console\"").await;

    // The other console's session ended; this console's did not: it is
    // still live, and its own session is still active.
    let verdict = sigil_tests::validate(&mut client, &other.access_token).await;
    assert!(!verdict.valid, "the other console's session ended");
    let admin_login = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let mut admin = AdminServiceClient::new(connect(server.grpc_addr).await);
    let listed = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest { page_size: 1000, ..Default::default() },
            &admin_login.access_token,
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    let own: Vec<_> = listed.iter().filter(|s| s.device_name == "sigil-console").collect();
    assert_eq!(own.len(), 1, "the console's own session is the one left active: {own:?}");
    assert!(!tmux.screen().contains("session ended"), "the console stays logged in:\n{}", tmux.screen());
    tmux.keys(&["q"]);
}

#[tokio::test]
async fn daily_administration_from_the_console_creates_a_user_resets_its_password_and_edits_roles() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::spawn(dir.path()).await;
    let tmux = console(&server, "sigil-e2e-daily-admin");
    tmux.wait_for("● live").await;
    // n: a new user, its password typed hidden.
    tmux.keys(&["n"]);
    tmux.wait_for("New user").await;
    tmux.keys(&["dave", "Enter", "first-password-1", "Enter", "billing", "Enter"]);
    tmux.wait_for("created user dave").await;
    let mut client = server.client().await;
    login(&mut client, "dave", "first-password-1").await;
    // p on dave's row in Users: a new password, typed twice, never shown.
    tmux.keys(&["3", "/", "dave", "Enter"]);
    tmux.wait_for("filter \"dave\"").await;
    tmux.keys(&["p", "second-password-2", "Enter", "second-password-2"]);
    let screen = tmux.wait_for("New password for dave").await;
    assert!(!screen.contains("second-password"), "the password is drawn hidden:\n{screen}");
    tmux.keys(&["Enter"]);
    tmux.wait_for("new password for dave;").await;
    let refused = client.authenticate(sigil_tests::login_request("dave", "first-password-1")).await;
    assert_eq!(refused.expect_err("the old password no longer works").code(), tonic::Code::Unauthenticated);
    let session = login(&mut client, "dave", "second-password-2").await;
    // R: the roles, starting from the current ones.
    tmux.keys(&["R"]);
    tmux.wait_for("Roles of dave").await;
    tmux.keys(&[", ops", "Enter"]);
    tmux.wait_for("roles of dave: [billing, ops]").await;
    let fresh = client
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token })
        .await
        .expect("refresh")
        .into_inner();
    let claims = sigil_tests::validate(&mut client, &fresh.access_token).await.claims.expect("claims");
    assert_eq!(claims.roles, ["billing", "ops"]);
    // x: disabling dave ends his sessions in the same step.
    tmux.keys(&["x"]);
    tmux.wait_for("Every session of the user ends at once").await;
    tmux.keys(&["y"]);
    tmux.wait_for("disabled dave;").await;
    let verdict = sigil_tests::validate(&mut client, &fresh.access_token).await;
    assert!(!verdict.valid, "dave's token still validates after the disable");
    tmux.keys(&["q"]);
}
