//! The way back for operators who lost every admin (issue #12, item 7):
//! `sigil-server reset-admin-password`, run on the host against the data
//! directory with the server stopped, and the start-up warning when
//! `SIGIL_ADMIN_PASSWORD` is set but ignored.

use std::{path::Path, process::Output, time::Duration};

use sigil_proto::pb;
use sigil_server::{
    SledStore,
    domain::{
        event::EventKind,
        port::{EventStore as _, Store as _, UserStore as _},
    },
};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, login, login_request, server_binary};
use tonic::Code;

/// Runs `sigil-server reset-admin-password --data-dir <data> <extra…>`,
/// with `SIGIL_ADMIN_PASSWORD` set to `password` when given.
async fn reset_admin_password(data: &Path, extra: &[&str], password: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(server_binary());
    command.arg("reset-admin-password").arg("--data-dir").arg(data).args(extra).env_remove("SIGIL_ADMIN_PASSWORD");
    if let Some(password) = password {
        command.env("SIGIL_ADMIN_PASSWORD", password);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("reset-admin-password finishes within 60 s")
        .expect("reset-admin-password runs")
}

/// Closes a store the test opened directly and waits (at most 10 s) until
/// sled's lock on `dir` is released: its flush thread lets go of the
/// database a moment after the last handle is dropped, and nothing signals
/// that, so the lock itself is polled.
pub(crate) async fn close_sled(store: std::sync::Arc<SledStore>, dir: &Path) {
    store.close().await.expect("closed");
    drop(store);
    let lock = std::fs::OpenOptions::new().read(true).write(true).open(dir.join("db")).expect("sled's db file");
    let released = sigil_tests::eventually(Duration::from_secs(10), || {
        let taken = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
        async move { taken.then_some(()) }
    })
    .await;
    assert!(released.is_some(), "sled still holds {} after 10 s", dir.display());
    // Closing the file releases the test's own lock.
}

/// Stops a server with SIGTERM once it answers a login, and checks that it
/// exited cleanly. (`main` installs its signal handlers only after the
/// "listening" line: a SIGTERM sent right after that line can still kill
/// the process by default action. A login first takes that window out of
/// these tests.)
pub(crate) async fn stop_when_serving(server: ChildServer) {
    login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    assert!(server.terminate().await, "sigil-server exited cleanly on SIGTERM");
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn reset_admin_password_refuses_while_the_server_runs_then_resets_enables_and_revokes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    let old_session = login(&mut client, "admin", ADMIN_PASSWORD).await;

    // sled holds a lock: say so, and change nothing.
    let busy = reset_admin_password(&data, &[], Some("new-admin-password-1")).await;
    assert!(!busy.status.success(), "ran against a live server: {}", text(&busy));
    assert!(text(&busy).contains("in use by a running sigil-server"), "{}", text(&busy));
    login(&mut client, "admin", ADMIN_PASSWORD).await;
    assert!(server.terminate().await);

    // Someone demoted and disabled the only admin behind the API's back
    // (an older version allowed it).
    {
        let store = SledStore::open(&data).expect("store");
        let mut admin = store.user_by_name("admin").await.expect("read").expect("admin");
        admin.roles = vec!["reader".into()];
        admin.disabled = true;
        store.update_user(&admin, None).await.expect("written");
        close_sled(store, &data).await;
    }

    let reset = reset_admin_password(&data, &[], Some("new-admin-password-1")).await;
    assert!(reset.status.success(), "{}", text(&reset));
    assert!(!text(&reset).contains("new-admin-password-1"), "a given password is never echoed: {}", text(&reset));

    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    let refused = client.authenticate(login_request("admin", ADMIN_PASSWORD)).await.expect_err("old password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let fresh = login(&mut client, "admin", "new-admin-password-1").await;
    let claims = sigil_tests::validate(&mut client, &fresh.access_token).await.claims.expect("claims");
    assert!(claims.roles.iter().any(|r| r == "admin"), "admin role restored: {claims:?}");
    let old = client.refresh(pb::RefreshRequest { refresh_token: old_session.refresh_token }).await;
    assert_eq!(old.expect_err("old sessions revoked").code(), Code::Unauthenticated);
    assert!(server.terminate().await);

    // The reset is in the audit trail.
    let store = SledStore::open(&data).expect("store");
    let events = store.events_after(0, 10_000).await.expect("events");
    assert!(
        events.iter().any(|e| e.kind == EventKind::UserUpdated && e.detail.contains("reset-admin-password")),
        "no audit event for the reset: {events:?}"
    );
    close_sled(store, &data).await;
}

#[tokio::test]
async fn reset_admin_password_generates_a_password_once_and_creates_admin_when_none_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    stop_when_serving(ChildServer::spawn(&data).await).await;
    {
        let store = SledStore::open(&data).expect("store");
        let admin = store.user_by_name("admin").await.expect("read").expect("admin");
        store.delete_user(admin.id).await.expect("deleted");
        close_sled(store, &data).await;
    }

    let reset = reset_admin_password(&data, &[], None).await;
    assert!(reset.status.success(), "{}", text(&reset));
    let stdout = String::from_utf8_lossy(&reset.stdout).to_string();
    let password = stdout
        .lines()
        .filter(|line| line.contains("New password"))
        .find_map(|line| line.rsplit_once(": ").map(|(_, p)| p.trim().to_string()))
        .unwrap_or_else(|| panic!("no generated password printed: {stdout}"));

    let server = ChildServer::spawn(&data).await;
    let mut client = server.client().await;
    let tokens = login(&mut client, "admin", &password).await;
    let claims = sigil_tests::validate(&mut client, &tokens.access_token).await.claims.expect("claims");
    assert!(claims.roles.iter().any(|r| r == "admin"));
    assert!(server.terminate().await);

    // A name that does not exist is not created while another admin exists.
    let typo = reset_admin_password(&data, &["--username", "admni"], Some("whatever-pw-1")).await;
    assert!(!typo.status.success(), "{}", text(&typo));
    assert!(text(&typo).contains("no user \"admni\""), "{}", text(&typo));
}

#[tokio::test]
async fn reset_admin_password_refuses_a_data_dir_that_holds_no_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let output = reset_admin_password(&missing, &[], Some("whatever-pw-1")).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("holds no Sigil store"), "{}", text(&output));
    assert!(!missing.exists(), "no store was created at {}", missing.display());
}

#[tokio::test]
async fn an_admin_password_set_while_users_exist_is_reported_as_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first = ChildServer::spawn(&data).await;
    let first_output = first.output.lock().expect("output").clone();
    stop_when_serving(first).await;
    assert!(!first_output.contains("SIGIL_ADMIN_PASSWORD is ignored"), "{first_output}");

    // ChildServer always sets SIGIL_ADMIN_PASSWORD: now users exist.
    let second = ChildServer::spawn(&data).await;
    let warning = sigil_tests::eventually(Duration::from_secs(10), || async {
        let output = second.output.lock().expect("output").clone();
        output.lines().find(|l| l.contains("SIGIL_ADMIN_PASSWORD is ignored")).map(str::to_string)
    })
    .await;
    let output = second.output.lock().expect("output").clone();
    let warning = warning.unwrap_or_else(|| panic!("no warning within 10 s:\n{output}"));
    assert!(warning.contains("WARN") && warning.contains("reset-admin-password"), "{warning}");
    assert!(!warning.contains(ADMIN_PASSWORD), "{warning}");
    stop_when_serving(second).await;
}

#[tokio::test]
async fn reset_admin_password_works_on_a_postgres_store() {
    let Some(postgres) = sigil_tests::postgres::Postgres::shared() else { return };
    let url = postgres.fresh_database().await;
    let database = sigil_server::DatabaseUrl::parse(&url).expect("url");
    let server = sigil_tests::TestServer::start_with(|c| c.database_url = Some(database.clone())).await;
    let old_session = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    server.stop().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(server_binary());
    command
        .args(["--database-url", &url, "reset-admin-password"])
        .env("SIGIL_DATA_DIR", dir.path().join("unused"))
        .env("SIGIL_ADMIN_PASSWORD", "pg-admin-password-2");
    let output = tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("in time").expect("runs");
    assert!(output.status.success(), "{}", text(&output));

    let server = sigil_tests::TestServer::start_with(|c| c.database_url = Some(database)).await;
    let mut client = server.client().await;
    login(&mut client, "admin", "pg-admin-password-2").await;
    let old = client.refresh(pb::RefreshRequest { refresh_token: old_session.refresh_token }).await;
    assert_eq!(old.expect_err("old sessions revoked").code(), Code::Unauthenticated);
    server.stop().await;
}
