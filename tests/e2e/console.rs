//! The real `sigil-console` binary, driven inside tmux against a real
//! server: it shows the sessions, picks up a new login without a key press,
//! refreshes its own short-lived token, revokes a session with filter + `d`
//! + `y`, and quits on `q`.

use std::{process::Command, time::Duration};

use sigil_proto::pb;
use sigil_tests::{ADMIN_PASSWORD, TestServer, eventually};

/// A tmux server of our own (its own socket), killed when dropped.
pub(crate) struct Tmux {
    pub(crate) socket: String,
}

impl Tmux {
    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs")
    }

    pub(crate) fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "console"]).stdout).to_string()
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success(), "send-keys {keys:?}");
    }

    pub(crate) async fn wait_for(&self, text: &str) -> String {
        let found = eventually(Duration::from_secs(15), || {
            let screen = self.screen();
            async move { screen.contains(text).then_some(screen) }
        })
        .await;
        found.unwrap_or_else(|| panic!("{text:?} never appeared; screen:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[tokio::test]
async fn the_console_shows_live_logins_and_revokes_with_two_keys() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIPPED: tmux is not installed here (.ci/run installs it)");
        return;
    }
    // Access tokens live three seconds, so the revocation below only works
    // if the console has refreshed its own token in the meantime.
    let server = TestServer::start_with(|config| config.access_token_ttl = Duration::from_secs(3)).await;
    let tmux = Tmux { socket: format!("sigil-e2e-{}", std::process::id()) };
    let command = format!(
        "env SIGIL_PASSWORD={ADMIN_PASSWORD} {} --server http://{}",
        sigil_tests::console_binary().display(),
        server.grpc_addr()
    );
    let launched = tokio::time::Instant::now();
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "160", "-y", "40", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    // The session list shows up, with the console's own session in it.
    let screen = tmux.wait_for("● live").await;
    assert!(screen.contains("Sessions"), "{screen}");
    tmux.wait_for("sigil-console").await;

    // A login elsewhere appears without a key press.
    let mut client = server.client().await;
    let victim = client
        .authenticate(pb::AuthenticateRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            device_name: Some("stolen-laptop".into()),
            audience: None,
        })
        .await
        .expect("login")
        .into_inner();
    tmux.wait_for("stolen-laptop").await;

    // Outlive the console's first access token.
    tokio::time::sleep_until(launched + Duration::from_secs(4)).await;

    // Filter to it, revoke it, confirm.
    tmux.keys(&["/", "stolen", "Enter"]);
    tmux.wait_for("filter \"stolen\"").await;
    tmux.keys(&["d"]);
    tmux.wait_for("Confirm").await;
    tmux.keys(&["y"]);
    tmux.wait_for("revoked 1 session,").await;
    // The victim's access token has expired by now (3 s); its refresh token
    // would still work for 30 days had the session not been revoked.
    let refused = client
        .refresh(pb::RefreshRequest { refresh_token: victim.refresh_token.clone() })
        .await
        .expect_err("the revoked session cannot be refreshed");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let (mut admin, token) = server.admin().await;
    let sessions = admin
        .list_sessions(sigil_tests::with_bearer(
            pb::ListSessionsRequest { include_inactive: true, page_size: 1000, ..Default::default() },
            &token,
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    let row = sessions.iter().find(|s| s.session_id == victim.session_id).expect("listed");
    assert_eq!(row.state(), pb::SessionState::Revoked);
    assert_eq!(row.revoke_reason, "revoked from sigil-console");

    // q quits and the tmux session ends with it.
    tmux.keys(&["q"]);
    let ended = eventually(Duration::from_secs(10), || {
        let alive = tmux.run(&["has-session", "-t", "console"]).status.success();
        async move { (!alive).then_some(()) }
    })
    .await;
    assert!(ended.is_some(), "the console did not exit on q:\n{}", tmux.screen());
}

#[tokio::test]
async fn an_emergency_key_rotation_from_the_console_keeps_the_console_working() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIPPED: tmux is not installed here (.ci/run installs it)");
        return;
    }
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let before = sigil_tests::login(&mut client, "admin", ADMIN_PASSWORD).await;
    let tmux = Tmux { socket: format!("sigil-e2e-keys-{}", std::process::id()) };
    let command = format!(
        "env SIGIL_PASSWORD={ADMIN_PASSWORD} {} --server http://{}",
        sigil_tests::console_binary().display(),
        server.grpc_addr()
    );
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "160", "-y", "40", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    tmux.wait_for("● live").await;

    tmux.keys(&["K"]);
    tmux.wait_for("Emergency key rotation").await;
    // One key is not enough any more: the word must be typed.
    tmux.keys(&["y", "Enter"]);
    tmux.wait_for("type the word \"rotate\"").await;
    tmux.keys(&["BSpace", "rotate", "Enter"]);
    tmux.wait_for("every older key is distrusted").await;
    // Tokens signed before are refused at once.
    let verdict = sigil_tests::validate(&mut client, &before.access_token).await;
    assert_eq!(verdict.failure(), pb::ValidationFailure::UnknownKey);

    // The console refreshed its own token: it still follows logins live
    // and its commands still work.
    client
        .authenticate(pb::AuthenticateRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            device_name: Some("after-the-leak".into()),
            audience: None,
        })
        .await
        .expect("login");
    tmux.wait_for("after-the-leak").await;
    tmux.keys(&["/", "after-the", "Enter"]);
    tmux.wait_for("filter \"after-the\"").await;
    tmux.keys(&["d"]);
    tmux.wait_for("Confirm").await;
    tmux.keys(&["y"]);
    tmux.wait_for("revoked 1 session,").await;
    tmux.keys(&["q"]);
}
