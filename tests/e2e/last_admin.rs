//! No way to lock every admin out (issue #12, item 7): a change that would
//! leave no enabled admin is refused with FAILED_PRECONDITION, also when two
//! admins demote each other at the same moment.

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, get_user_request::Key};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, with_bearer};
use tonic::{Code, transport::Channel};

async fn id_of(admin: &mut AdminServiceClient<Channel>, token: &str, username: &str) -> String {
    let request = pb::GetUserRequest { key: Some(Key::Username(username.into())) };
    admin.get_user(with_bearer(request, token)).await.expect("user").into_inner().user.expect("user").user_id
}

fn set_roles(user_id: &str, roles: &[&str]) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user_id: user_id.into(),
        disabled: None,
        roles: Some(pb::RoleList { roles: roles.iter().map(|r| r.to_string()).collect() }),
    }
}

fn set_disabled(user_id: &str, disabled: bool) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest { user_id: user_id.into(), disabled: Some(disabled), roles: None }
}

fn assert_last_admin_refusal(outcome: Result<(), tonic::Status>, what: &str) {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), Code::FailedPrecondition, "{what}: {status:?}");
    assert!(status.message().contains("last enabled admin"), "{what}: {}", status.message());
}

#[tokio::test]
async fn the_last_enabled_admin_cannot_demote_disable_or_delete_itself() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let admin_id = id_of(&mut admin, &token, "admin").await;

    let demote = admin.update_user(with_bearer(set_roles(&admin_id, &["reader"]), &token)).await.map(drop);
    assert_last_admin_refusal(demote, "demoting the last admin");
    let disable = admin.update_user(with_bearer(set_disabled(&admin_id, true), &token)).await.map(drop);
    assert_last_admin_refusal(disable, "disabling the last admin");
    let delete =
        admin.delete_user(with_bearer(pb::DeleteUserRequest { user_id: admin_id.clone() }, &token)).await.map(drop);
    assert_last_admin_refusal(delete, "deleting the last admin");

    // Nothing changed: admin still logs in and administers.
    let token = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await.access_token;
    let request = pb::GetUserRequest { key: Some(Key::UserId(admin_id.clone())) };
    let user = admin.get_user(with_bearer(request, &token)).await.expect("admin works").into_inner().user;
    let user = user.expect("user");
    assert_eq!((user.roles, user.disabled), (vec!["admin".to_string()], false));

    // A disabled admin does not count; an enabled one does.
    let carol = server.create_user("carol", "carol-password", &["admin"]).await.id.to_string();
    admin.update_user(with_bearer(set_disabled(&carol, true), &token)).await.expect("another admin may be disabled");
    let demote = admin.update_user(with_bearer(set_roles(&admin_id, &[]), &token)).await.map(drop);
    assert_last_admin_refusal(demote, "a disabled admin does not count");
    admin.update_user(with_bearer(set_disabled(&carol, false), &token)).await.expect("enabled again");
    admin
        .update_user(with_bearer(set_roles(&admin_id, &[]), &token))
        .await
        .expect("carol remains: admin may step down");
    // Changes that keep admin-ness are never refused, even for the last one.
    let carol_token = login(&mut server.client().await, "carol", "carol-password").await.access_token;
    admin
        .update_user(with_bearer(set_roles(&carol, &["admin", "auditor"]), &carol_token))
        .await
        .expect("adding a role to the last admin");
    // A role change ends the tokens minted before it: carol logs in again.
    let carol_token = login(&mut server.client().await, "carol", "carol-password").await.access_token;
    admin.update_user(with_bearer(set_disabled(&carol, false), &carol_token)).await.expect("enabling an enabled admin");
}

/// Exactly one of two racing removals wins; the other is refused for the
/// rule (or, where authorization reads current roles, because its caller
/// has just lost the role) — never for an unrelated failure.
fn assert_one_wins(outcomes: &[Result<(), tonic::Status>; 2], round: usize) {
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(succeeded, 1, "round {round}: expected exactly one removal to win: {outcomes:?}");
    for status in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(
            matches!(status.code(), Code::FailedPrecondition | Code::PermissionDenied | Code::Unauthenticated),
            "round {round}: the loser failed for another reason: {status:?}"
        );
    }
}

/// The enabled admins of `server`, read from its domain core.
async fn enabled_admins(server: &TestServer) -> Vec<String> {
    let users = server.identity().list_users(None, 1000).await.expect("users");
    users.into_iter().filter(|v| v.user.has_role("admin") && !v.user.disabled).map(|v| v.user.username).collect()
}

#[tokio::test]
async fn two_admins_demoting_or_deleting_each_other_at_once_never_both_succeed() {
    for round in 0..6 {
        let server = TestServer::start().await;
        let ann = server.create_user("ann", "pw-ann-12345", &["admin"]).await.id.to_string();
        let ben = server.create_user("ben", "pw-ben-12345", &["admin"]).await.id.to_string();
        let (admin, token) = server.admin().await;
        let admin_id = id_of(&mut admin.clone(), &token, "admin").await;
        admin
            .clone()
            .delete_user(with_bearer(pb::DeleteUserRequest { user_id: admin_id }, &token))
            .await
            .expect("admin leaves");
        let mut client = server.client().await;
        let ann_token = login(&mut client, "ann", "pw-ann-12345").await.access_token;
        let ben_token = login(&mut client, "ben", "pw-ben-12345").await.access_token;

        let (mut by_ann, mut by_ben) = (admin.clone(), admin.clone());
        let outcomes: [Result<(), tonic::Status>; 2] = if round % 2 == 0 {
            let (a, b) = tokio::join!(
                by_ann.update_user(with_bearer(set_roles(&ben, &[]), &ann_token)),
                by_ben.update_user(with_bearer(set_roles(&ann, &[]), &ben_token)),
            );
            [a.map(drop), b.map(drop)]
        } else {
            let (a, b) = tokio::join!(
                by_ann.delete_user(with_bearer(pb::DeleteUserRequest { user_id: ben.clone() }, &ann_token)),
                by_ben.delete_user(with_bearer(pb::DeleteUserRequest { user_id: ann.clone() }, &ben_token)),
            );
            [a.map(drop), b.map(drop)]
        };
        assert_one_wins(&outcomes, round);
        let left = enabled_admins(&server).await;
        assert!(!left.is_empty(), "round {round}: no enabled admin left ({outcomes:?})");
        server.stop().await;
    }
}

#[tokio::test]
async fn two_instances_on_one_postgres_database_never_both_remove_an_admin() {
    let Some(postgres) = sigil_tests::postgres::Postgres::shared() else { return };
    for round in 0..6 {
        let url = postgres.fresh_database().await;
        let database = sigil_server::DatabaseUrl::parse(&url).expect("url");
        let first = TestServer::start_with(|c| c.database_url = Some(database.clone())).await;
        let second = TestServer::start_with(|c| c.database_url = Some(database.clone())).await;
        let ann = first.create_user("ann", "pw-ann-12345", &["admin"]).await.id.to_string();
        let ben = first.create_user("ben", "pw-ben-12345", &["admin"]).await.id.to_string();
        let (mut admin, token) = first.admin().await;
        let admin_id = id_of(&mut admin, &token, "admin").await;
        admin
            .delete_user(with_bearer(pb::DeleteUserRequest { user_id: admin_id }, &token))
            .await
            .expect("admin leaves");
        let ann_token = login(&mut first.client().await, "ann", "pw-ann-12345").await.access_token;
        let ben_token = login(&mut second.client().await, "ben", "pw-ben-12345").await.access_token;

        let mut on_first = AdminServiceClient::new(first.channel().await);
        let mut on_second = AdminServiceClient::new(second.channel().await);
        let (a, b) = tokio::join!(
            on_first.update_user(with_bearer(set_roles(&ben, &[]), &ann_token)),
            on_second.update_user(with_bearer(set_disabled(&ann, true), &ben_token)),
        );
        let outcomes = [a.map(drop), b.map(drop)];
        assert_one_wins(&outcomes, round);
        assert!(!enabled_admins(&first).await.is_empty(), "round {round}: no enabled admin left ({outcomes:?})");
        first.stop().await;
        second.stop().await;
    }
}

#[tokio::test]
async fn the_console_says_why_x_y_on_the_last_admin_is_refused() {
    if std::process::Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIPPED: tmux is not installed here (.ci/run installs it)");
        return;
    }
    let server = TestServer::start().await;
    let tmux = crate::console::Tmux { socket: format!("sigil-e2e-last-admin-{}", std::process::id()) };
    let command = format!(
        "env SIGIL_PASSWORD={ADMIN_PASSWORD} {} --server http://{}",
        sigil_tests::console_binary().display(),
        server.grpc_addr()
    );
    let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "200", "-y", "40", &command]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    tmux.wait_for("● live").await;
    // Sessions → Tokens → Users, which opens on `admin`, the only user.
    tmux.keys(&["Tab", "Tab"]);
    // The table's title, once admin's row is in (the tab's "Users" shows
    // before the list has loaded, and x on no row names no user).
    tmux.wait_for("Users 1/1").await;
    tmux.keys(&["x"]);
    tmux.wait_for("Confirm").await;
    tmux.keys(&["y"]);
    tmux.wait_for("last enabled admin").await;

    let users = server.identity().list_users(None, 10).await.expect("users");
    assert!(users.iter().all(|v| !v.user.disabled), "admin was disabled");
    let _ = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    tmux.keys(&["q"]);
}
