//! Authorization follows current state, never a stale claim: a role change
//! takes effect on the very next call, Sigil's own APIs accept only tokens
//! minted for Sigil, a stream ends when its caller loses the right to it,
//! lockout holds against guesses sent all at once and against kill -9, and
//! a leaked signing key can be contained.

use std::time::Duration;

use sigil_proto::pb::{self, EventKind, ValidationFailure};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, TestServer, login, login_request, validate, with_bearer};
use tonic::Code;

fn list_users() -> pb::ListUsersRequest {
    pb::ListUsersRequest { page_size: 10, page_token: String::new() }
}

fn set_roles(user_id: &str, roles: &[&str]) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user_id: user_id.to_string(),
        disabled: None,
        roles: Some(pb::RoleList { roles: roles.iter().map(|r| r.to_string()).collect() }),
    }
}

#[tokio::test]
async fn a_demoted_admin_loses_the_admin_api_on_the_very_next_call() {
    let server = TestServer::start().await;
    let bob = server.create_user("bob", "bob-password", &["admin"]).await;
    let mut client = server.client().await;
    let bob_login = login(&mut client, "bob", "bob-password").await;
    let (mut admin, admin_token) = server.admin().await;
    admin.list_users(with_bearer(list_users(), &bob_login.access_token)).await.expect("bob is an admin");

    admin.update_user(with_bearer(set_roles(&bob.id.to_string(), &[]), &admin_token)).await.expect("admin demotes bob");

    // The token minted while bob was admin no longer speaks for him: not to
    // the admin API, not to give himself the role back, not to Validate.
    let refused = admin.list_users(with_bearer(list_users(), &bob_login.access_token)).await.expect_err("demoted");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let regain = admin
        .update_user(with_bearer(set_roles(&bob.id.to_string(), &["admin"]), &bob_login.access_token))
        .await
        .expect_err("a demoted admin cannot promote itself back");
    assert_eq!(regain.code(), Code::Unauthenticated);
    let verdict = validate(&mut client, &bob_login.access_token).await;
    assert!(!verdict.valid, "Validate never reports a role the user no longer has");
    assert_eq!(verdict.failure(), ValidationFailure::TokenRevoked);

    // Bob's session lives on: a refresh gives a token with his new roles.
    let refreshed = client
        .refresh(pb::RefreshRequest { refresh_token: bob_login.refresh_token.clone() })
        .await
        .expect("the session survives a role change")
        .into_inner();
    let verdict = validate(&mut client, &refreshed.access_token).await;
    assert!(verdict.valid, "{verdict:?}");
    assert!(verdict.claims.expect("claims").roles.is_empty());
    let denied = admin.list_users(with_bearer(list_users(), &refreshed.access_token)).await.expect_err("not admin");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Promotion works the same way round: the new role needs a new token.
    admin.update_user(with_bearer(set_roles(&bob.id.to_string(), &["admin"]), &admin_token)).await.expect("promote");
    let again = login(&mut client, "bob", "bob-password").await;
    admin.list_users(with_bearer(list_users(), &again.access_token)).await.expect("admin again");
    // Updating other fields keeps the roles, and so keeps the tokens.
    let same = pb::UpdateUserRequest { user_id: bob.id.to_string(), disabled: Some(false), roles: None };
    admin.update_user(with_bearer(same, &admin_token)).await.expect("no-op update");
    admin.list_users(with_bearer(list_users(), &again.access_token)).await.expect("still admin");
}

#[tokio::test]
async fn a_token_minted_for_another_audience_opens_none_of_sigils_apis() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut request = login_request("admin", ADMIN_PASSWORD);
    request.audience = Some("wiki.example".into());
    let wiki = client.authenticate(request).await.expect("login for the wiki").into_inner();
    let (mut admin, _) = server.admin().await;

    let create = pb::CreateUserRequest { username: "mallory".into(), password: "mallory-pass".into(), roles: vec![] };
    let refused = admin.create_user(with_bearer(create, &wiki.access_token)).await.expect_err("wrong audience");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("audience"), "the message says why: {}", refused.message());

    let mine = client
        .list_my_sessions(with_bearer(pb::ListMySessionsRequest::default(), &wiki.access_token))
        .await
        .expect_err("ListMySessions needs Sigil's audience");
    assert_eq!(mine.code(), Code::Unauthenticated);

    let by_id = pb::RevokeRequest {
        target: Some(pb::revoke_request::Target::SessionId(wiki.session_id.clone())),
        reason: String::new(),
    };
    let revoke = client.revoke(with_bearer(by_id, &wiki.access_token)).await.expect_err("id targets too");
    assert_eq!(revoke.code(), Code::Unauthenticated);

    let watch = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &wiki.access_token))
        .await
        .expect_err("WatchEvents too");
    assert_eq!(watch.code(), Code::Unauthenticated);

    // The token is still good where it was meant to be used.
    let verdict = client
        .validate(pb::ValidateRequest { token: wiki.access_token.clone(), audience: Some("wiki.example".into()) })
        .await
        .expect("validate")
        .into_inner();
    assert!(verdict.valid);
}

/// Opens WatchEvents for a fresh admin `name` and returns the stream and
/// that admin's login.
async fn watcher(
    server: &TestServer,
    name: &str,
) -> (tonic::Streaming<pb::WatchEventsResponse>, pb::AuthenticateResponse, sigil_server::domain::UserId) {
    let user = server.create_user(name, "watcher-password", &["admin"]).await;
    let mut client = server.client().await;
    let session = login(&mut client, name, "watcher-password").await;
    let (mut admin, _) = server.admin().await;
    let stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: None }, &session.access_token))
        .await
        .expect("watch")
        .into_inner();
    (stream, session, user.id)
}

/// Reads the stream until it ends; returns the events seen and how it ended.
async fn drain(stream: &mut tonic::Streaming<pb::WatchEventsResponse>) -> (Vec<pb::Event>, tonic::Status) {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(message))) => events.push(message.event.expect("event")),
            Ok(Ok(None)) => panic!("the stream ended without a status; events: {events:?}"),
            Ok(Err(status)) => return (events, status),
            Err(_) => panic!("the stream stayed open 10 s after its caller lost the right to it"),
        }
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_callers_session_is_revoked_and_shows_nothing_after() {
    let server = TestServer::start().await;
    server.create_user("later", "later-password", &[]).await;
    let (_, admin_token) = server.admin().await;
    let mut client = server.client().await;
    let (mut stream, session, _) = watcher(&server, "wendy").await;
    let revoke = pb::RevokeRequest {
        target: Some(pb::revoke_request::Target::SessionId(session.session_id.clone())),
        reason: "watcher revoked".into(),
    };
    client.revoke(with_bearer(revoke, &admin_token)).await.expect("revoke the watcher's session");
    // A login after the revocation must not reach the revoked watcher.
    login(&mut client, "later", "later-password").await;
    let (events, status) = drain(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("session revoked"), "{}", status.message());
    assert!(events.iter().all(|e| e.username != "later"), "the revoked watcher saw a later login: {events:?}");
}

#[tokio::test]
async fn a_stream_ends_when_its_caller_is_demoted_or_disabled() {
    let server = TestServer::start().await;
    let (_, admin_token) = server.admin().await;
    let (mut admin, _) = server.admin().await;

    let (mut demoted, _, demoted_id) = watcher(&server, "xavier").await;
    admin.update_user(with_bearer(set_roles(&demoted_id.to_string(), &[]), &admin_token)).await.expect("demote");
    let (_, status) = drain(&mut demoted).await;
    assert!(matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied), "{status:?}");

    let (mut disabled, _, disabled_id) = watcher(&server, "yvonne").await;
    let disable = pb::UpdateUserRequest { user_id: disabled_id.to_string(), disabled: Some(true), roles: None };
    admin.update_user(with_bearer(disable, &admin_token)).await.expect("disable");
    let (_, status) = drain(&mut disabled).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("disabled"), "{}", status.message());
}

#[tokio::test]
async fn a_stream_ends_when_its_callers_token_expires() {
    let server = TestServer::start_with(|config| config.access_token_ttl = Duration::from_secs(2)).await;
    let (mut stream, _, _) = watcher(&server, "zoe").await;
    let (_, status) = drain(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{}", status.message());
}

#[tokio::test]
async fn a_stream_ends_with_unavailable_when_the_server_shuts_down() {
    let server = TestServer::start().await;
    let (mut stream, _, _) = watcher(&server, "walter").await;
    let stopping = tokio::spawn(server.stop());
    let (_, status) = drain(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown does not wait for the open stream")
        .expect("shutdown task");
}

#[tokio::test]
async fn guesses_sent_all_at_once_evaluate_no_more_than_the_threshold() {
    let server = TestServer::start_with(|config| {
        config.lockout_threshold = 10;
        config.lockout_window = Duration::from_secs(60);
        config.lockout_duration = Duration::from_secs(600);
    })
    .await;
    server.create_user("petra", "petra-password", &[]).await;
    let client = server.client().await;
    // 59 wrong guesses at once, then the right password as guess 60.
    let guesses: Vec<_> = (0..59)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { client.authenticate(login_request("petra", &format!("guess-{i}"))).await })
        })
        .collect();
    let mut evaluated = 0;
    for guess in guesses {
        let refused = guess.await.expect("task").expect_err("wrong password");
        match refused.code() {
            Code::Unauthenticated => evaluated += 1,
            Code::ResourceExhausted => {}
            other => panic!("unexpected {other:?}: {refused:?}"),
        }
    }
    assert!(evaluated <= 10, "{evaluated} guesses were evaluated; the threshold is 10");
    let right = client.clone().authenticate(login_request("petra", "petra-password")).await;
    let locked = right.expect_err("the right password as guess 60 is refused: the account is locked");
    assert_eq!(locked.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn failed_logins_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let flags = ["--lockout-threshold", "10", "--lockout-window", "10m", "--lockout-duration", "10m"];
    let server = ChildServer::spawn_with(&data, &flags).await;
    let mut client = server.client().await;
    for _ in 0..9 {
        let wrong = client.authenticate(login_request("admin", "guess")).await.expect_err("wrong");
        assert_eq!(wrong.code(), Code::Unauthenticated);
    }
    // Killed right after the ninth answer: every answered failure counts.
    server.kill_9().await;

    let server = ChildServer::spawn_with(&data, &flags).await;
    let mut client = server.client().await;
    let tenth = client.authenticate(login_request("admin", "guess")).await.expect_err("wrong");
    assert_eq!(tenth.code(), Code::Unauthenticated);
    let locked = client.authenticate(login_request("admin", ADMIN_PASSWORD)).await.expect_err("locked");
    assert_eq!(locked.code(), Code::ResourceExhausted, "the ten failures locked the account across kill -9");
    server.kill_9().await;
}

#[tokio::test]
async fn a_name_that_is_no_users_never_reaches_the_audit_trail() {
    let server = TestServer::start().await;
    server.create_user("carol", "carol-password", &[]).await;
    let mut client = server.client().await;
    // A password typed into the username field.
    let typed = "correct horse battery staple";
    client.authenticate(login_request(typed, "whatever")).await.expect_err("unknown user");
    client.authenticate(login_request("carol", "wrong")).await.expect_err("wrong password");

    let (mut admin, token) = server.admin().await;
    let mut stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &token))
        .await
        .expect("watch")
        .into_inner();
    let mut failures = Vec::new();
    while let Ok(Ok(Some(message))) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        let event = message.event.expect("event");
        assert!(!format!("{event:?}").contains(typed), "the typed name reached the audit trail: {event:?}");
        if event.kind() == EventKind::LoginFailed {
            failures.push(event);
        }
    }
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].username.is_empty() && failures[0].detail.contains("unknown username"), "{:?}", failures[0]);
    assert_eq!(failures[1].username, "carol", "a real user's failures still name it");
}

#[tokio::test]
async fn a_forged_token_living_longer_than_the_ttl_is_refused_even_with_our_key() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let genuine = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let ring = server.identity().key_ring();
    let payload = genuine.access_token.split('.').nth(1).expect("payload");
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).expect("base64"),
    )
    .expect("json");
    claims["exp"] = serde_json::json!(claims["iat"].as_i64().expect("iat") + 365 * 24 * 3600);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(ring.active().kid.clone());
    let forged = jsonwebtoken::encode(&header, &claims, &ring.active().encoding).expect("signs");
    let verdict = validate(&mut client, &forged).await;
    assert!(!verdict.valid);
    assert_eq!(verdict.failure(), ValidationFailure::Malformed);
    let (mut admin, _) = server.admin().await;
    let refused = admin.list_users(with_bearer(list_users(), &forged)).await.expect_err("no backdoor admin");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_emergency_rotation_distrusts_the_old_key_at_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (mut admin, token) = server.admin().await;
    let old = login(&mut client, "admin", ADMIN_PASSWORD).await;
    // Validated once, so its verdict sits in the signature cache.
    assert!(validate(&mut client, &old.access_token).await.valid);

    // An ordinary rotation keeps the old key verifying.
    admin.rotate_signing_key(with_bearer(pb::RotateSigningKeyRequest::default(), &token)).await.expect("rotate");
    assert!(validate(&mut client, &old.access_token).await.valid);

    // An emergency one does not: neither the old key's tokens nor the JWKS.
    let emergency = pb::RotateSigningKeyRequest { distrust_previous: true };
    let fresh = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let new_key = admin
        .rotate_signing_key(with_bearer(emergency, &fresh.access_token))
        .await
        .expect("emergency rotation")
        .into_inner()
        .key
        .expect("key");
    for token in [&old.access_token, &fresh.access_token] {
        let verdict = validate(&mut client, token).await;
        assert_eq!(verdict.failure(), ValidationFailure::UnknownKey, "{verdict:?}");
    }
    let jwks = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("json");
    let kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, vec![new_key.kid.as_str()], "only the new key is published");
    // Holders log in (or refresh) again and carry on.
    let after = client
        .refresh(pb::RefreshRequest { refresh_token: fresh.refresh_token })
        .await
        .expect("refresh after the emergency")
        .into_inner();
    assert!(validate(&mut client, &after.access_token).await.valid);
}

type AdminClient = pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;
type IdentityClient = pb::identity_service_client::IdentityServiceClient<tonic::transport::Channel>;

/// What an admin does to a user while that user's login is in flight.
#[derive(Clone, Copy, Debug)]
enum RacingChange {
    Demote,
    Delete,
    LogOutEverywhere,
    DisableThenEnable,
    NewPasswordEndingSessions,
}

/// Starts a login of a fresh admin, makes `change` while the login is
/// inside its password hash, and returns what the login got (if anything)
/// once the change has returned.
async fn login_racing(
    server: &TestServer,
    (admin, identity): (&mut AdminClient, &mut IdentityClient),
    admin_token: &str,
    round: usize,
    change: RacingChange,
) -> (Option<pb::AuthenticateResponse>, std::time::SystemTime) {
    let name = format!("racer-{change:?}-{round}").to_lowercase();
    let user = server.create_user(&name, "racer-password", &["admin"]).await.id.to_string();
    let client = server.client().await;
    let login = tokio::spawn({
        let mut client = client.clone();
        async move { client.authenticate(login_request(&name, "racer-password")).await }
    });
    // The hash takes ~15 ms: the change lands while it runs (or just
    // before or after; every ordering must hold).
    tokio::time::sleep(Duration::from_millis(3 + (round as u64 % 4) * 3)).await;
    let changing_at = std::time::SystemTime::now();
    let update = |disabled, roles: Option<Vec<String>>| pb::UpdateUserRequest {
        user_id: user.clone(),
        disabled,
        roles: roles.map(|roles| pb::RoleList { roles }),
    };
    match change {
        RacingChange::Demote => {
            admin.update_user(with_bearer(update(None, Some(vec![])), admin_token)).await.expect("demote");
        }
        RacingChange::Delete => {
            admin
                .delete_user(with_bearer(pb::DeleteUserRequest { user_id: user.clone() }, admin_token))
                .await
                .expect("delete");
        }
        RacingChange::LogOutEverywhere => {
            let target = Some(pb::revoke_request::Target::UserId(user.clone()));
            identity
                .revoke(with_bearer(pb::RevokeRequest { target, reason: "all".into() }, admin_token))
                .await
                .expect("revoke");
        }
        RacingChange::DisableThenEnable => {
            admin.update_user(with_bearer(update(Some(true), None), admin_token)).await.expect("disable");
            admin.update_user(with_bearer(update(Some(false), None), admin_token)).await.expect("enable");
        }
        RacingChange::NewPasswordEndingSessions => {
            let request = pb::SetPasswordRequest {
                user_id: user.clone(),
                password: "another-password".into(),
                revoke_sessions: true,
            };
            admin.set_password(with_bearer(request, admin_token)).await.expect("set password");
        }
    }
    (login.await.expect("task").ok().map(tonic::Response::into_inner), changing_at)
}

/// When a session was created: the time in its UUIDv7 id.
fn created_at(session_id: &str) -> std::time::SystemTime {
    let (seconds, nanos) = uuid::Uuid::parse_str(session_id).expect("uuid").get_timestamp().expect("v7").to_unix();
    std::time::UNIX_EPOCH + Duration::new(seconds, nanos)
}

#[tokio::test]
async fn a_login_in_flight_never_outlives_a_change_made_meanwhile() {
    let server = TestServer::start_with(|config| config.lockout_threshold = 1000).await;
    let (mut admin, admin_token) = server.admin().await;
    let mut client = server.client().await;
    for change in [
        RacingChange::Demote,
        RacingChange::Delete,
        RacingChange::LogOutEverywhere,
        RacingChange::DisableThenEnable,
        RacingChange::NewPasswordEndingSessions,
    ] {
        for round in 0..8 {
            let clients = (&mut admin, &mut client);
            let (won, changing_at) = login_racing(&server, clients, &admin_token, round, change).await;
            let Some(won) = won else { continue };
            let verdict = validate(&mut client, &won.access_token).await;
            let admin_call = admin.list_users(with_bearer(list_users(), &won.access_token)).await;
            let refreshed = client.refresh(pb::RefreshRequest { refresh_token: won.refresh_token.clone() }).await;
            match change {
                // The session may live on, but never with the old role.
                RacingChange::Demote => {
                    let roles = verdict.claims.map(|c| c.roles).unwrap_or_default();
                    assert!(!roles.contains(&"admin".to_string()), "{change:?} round {round}: token kept admin");
                    assert!(admin_call.is_err(), "{change:?} round {round}: the admin API still opened");
                    if let Ok(r) = refreshed {
                        let roles = validate(&mut client, &r.into_inner().access_token).await.claims.map(|c| c.roles);
                        assert_eq!(roles, Some(vec![]), "{change:?} round {round}: refresh kept the old role");
                    }
                }
                // A login whose check of the user comes after the change is
                // a new login (the user is enabled again, or only logged
                // out, with the same password): it may stand, but only with
                // a session created after the change began.
                RacingChange::DisableThenEnable | RacingChange::LogOutEverywhere if verdict.valid => {
                    assert!(
                        created_at(&won.session_id) > changing_at,
                        "{change:?} round {round}: a session created before the disabling survived it"
                    );
                }
                // Everything the login got is ended.
                _ => {
                    assert!(!verdict.valid, "{change:?} round {round}: the racing login's token is valid: {verdict:?}");
                    assert!(admin_call.is_err(), "{change:?} round {round}: the admin API still opened");
                    assert!(refreshed.is_err(), "{change:?} round {round}: the racing login's session refreshes");
                }
            }
        }
    }
}
