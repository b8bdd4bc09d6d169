use std::time::Duration;

use sigil_proto::pb::{
    self, EventKind, SessionState, TokenKind, TokenState, ValidationFailure, revoke_request::Target,
};
use sigil_tests::{ADMIN_PASSWORD, TestServer, login, login_request, maybe_bearer, validate, with_bearer};
use tonic::Code;

/// Calls every AdminService RPC with `bearer` and returns each outcome.
async fn call_every_admin_rpc(
    server: &TestServer,
    bearer: Option<&str>,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let (mut admin, _) = server.admin().await;
    let unknown = sigil_server::domain::UserId::generate().to_string();
    let mut outcomes = Vec::new();
    // `found` is false where the id is made up: NOT_FOUND then means the
    // call got past authorization.
    macro_rules! call {
        ($name:literal, $method:ident, $message:expr) => {
            call!($name, $method, $message, true)
        };
        ($name:literal, $method:ident, $message:expr, $found:expr) => {{
            let outcome = admin.$method(maybe_bearer($message, bearer)).await.map(|_| ());
            let outcome = match outcome {
                Err(status) if !$found && status.code() == Code::NotFound => Ok(()),
                other => other,
            };
            outcomes.push(($name, outcome));
        }};
    }
    let create =
        pb::CreateUserRequest { username: format!("matrix-{unknown}"), password: "pw-12345".into(), roles: vec![] };
    call!("CreateUser", create_user, create);
    let by_name = pb::GetUserRequest { key: Some(pb::get_user_request::Key::Username("admin".into())) };
    call!("GetUser", get_user, by_name);
    call!("ListUsers", list_users, pb::ListUsersRequest::default());
    let update = pb::UpdateUserRequest { user_id: unknown.clone(), disabled: None, roles: None };
    call!("UpdateUser", update_user, update, false);
    let password = pb::SetPasswordRequest { user_id: unknown.clone(), password: "pw".into(), revoke_sessions: false };
    call!("SetPassword", set_password, password, false);
    call!("DeleteUser", delete_user, pb::DeleteUserRequest { user_id: unknown.clone() }, false);
    call!("ListSessions", list_sessions, pb::ListSessionsRequest::default());
    call!("ListTokens", list_tokens, pb::ListTokensRequest::default());
    call!("WatchEvents", watch_events, pb::WatchEventsRequest::default());
    call!("RotateSigningKey", rotate_signing_key, pb::RotateSigningKeyRequest::default());
    call!("ListSigningKeys", list_signing_keys, pb::ListSigningKeysRequest {});
    call!("GetStats", get_stats, pb::GetStatsRequest {});
    outcomes
}

#[tokio::test]
async fn every_admin_rpc_checks_the_bearer_and_the_admin_role() {
    let server = TestServer::start().await;
    server.create_user("grace", "grace-password", &["reader"]).await;
    let mut client = server.client().await;
    let admin = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let grace = login(&mut client, "grace", "grace-password").await.access_token;
    let revoked = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client
        .revoke(pb::RevokeRequest {
            target: Some(Target::AccessToken(revoked.access_token.clone())),
            reason: String::new(),
        })
        .await
        .expect("revoke");

    for (bearer, expected, who) in [
        (None, Some(Code::Unauthenticated), "no token"),
        (Some("garbage"), Some(Code::Unauthenticated), "garbage token"),
        (Some(revoked.access_token.as_str()), Some(Code::Unauthenticated), "revoked admin token"),
        (Some(grace.as_str()), Some(Code::PermissionDenied), "non-admin"),
        (Some(admin.as_str()), None, "admin"),
    ] {
        for (rpc, outcome) in call_every_admin_rpc(&server, bearer).await {
            match (expected, outcome) {
                (Some(code), Err(status)) => assert_eq!(status.code(), code, "{who} calling {rpc}: {status:?}"),
                (Some(code), Ok(())) => panic!("{who} calling {rpc} succeeded; expected {code:?}"),
                (None, Err(status)) => panic!("{who} calling {rpc} failed: {status:?}"),
                (None, Ok(())) => {}
            }
        }
    }
}

#[tokio::test]
async fn users_are_created_found_listed_updated_and_deleted() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let created = admin
        .create_user(with_bearer(
            pb::CreateUserRequest {
                username: "Heidi".into(),
                password: "heidi-password".into(),
                roles: vec!["ops".into()],
            },
            &token,
        ))
        .await
        .expect("created")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        (created.username.as_str(), created.roles.as_slice(), created.disabled),
        ("heidi", &["ops".to_string()][..], false)
    );

    let taken = admin
        .create_user(with_bearer(
            pb::CreateUserRequest { username: "HEIDI".into(), password: "x".into(), roles: vec![] },
            &token,
        ))
        .await
        .expect_err("name taken");
    assert_eq!(taken.code(), Code::AlreadyExists);

    let by_name = admin
        .get_user(with_bearer(
            pb::GetUserRequest { key: Some(pb::get_user_request::Key::Username("heidi".into())) },
            &token,
        ))
        .await
        .expect("found")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(by_name.user_id, created.user_id);
    let missing = admin
        .get_user(with_bearer(
            pb::GetUserRequest { key: Some(pb::get_user_request::Key::Username("nobody".into())) },
            &token,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);

    let mut client = server.client().await;
    let session = login(&mut client, "heidi", "heidi-password").await;
    let updated = admin
        .update_user(with_bearer(
            pb::UpdateUserRequest {
                user_id: created.user_id.clone(),
                disabled: None,
                roles: Some(pb::RoleList { roles: vec!["ops".into(), "billing".into()] }),
            },
            &token,
        ))
        .await
        .expect("roles updated")
        .into_inner();
    assert_eq!(updated.user.expect("user").roles, vec!["billing".to_string(), "ops".to_string()]);
    assert_eq!(updated.revoked_sessions, 0, "a role change does not end sessions");
    // It ends the tokens that carry the old roles; the session mints new ones.
    assert_eq!(validate(&mut client, &session.access_token).await.failure(), ValidationFailure::TokenRevoked);
    let refreshed = client
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("the session lives on")
        .into_inner();
    let claims = validate(&mut client, &refreshed.access_token).await.claims.expect("valid");
    assert_eq!(claims.roles, vec!["billing".to_string(), "ops".to_string()]);

    // A new password: the old one stops working, the sessions end on request.
    let changed = admin
        .set_password(with_bearer(
            pb::SetPasswordRequest {
                user_id: created.user_id.clone(),
                password: "new-heidi-password".into(),
                revoke_sessions: true,
            },
            &token,
        ))
        .await
        .expect("password set")
        .into_inner();
    assert_eq!(changed.revoked_sessions, 1);
    assert_eq!(validate(&mut client, &session.access_token).await.failure(), ValidationFailure::SessionRevoked);
    let old = client.authenticate(login_request("heidi", "heidi-password")).await.expect_err("old password refused");
    assert_eq!(old.code(), Code::Unauthenticated);
    let session = login(&mut client, "heidi", "new-heidi-password").await;

    let deleted = admin
        .delete_user(with_bearer(pb::DeleteUserRequest { user_id: created.user_id.clone() }, &token))
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.revoked_sessions, 1);
    assert_eq!(validate(&mut client, &session.access_token).await.failure(), ValidationFailure::SessionRevoked);
    let gone = client
        .authenticate(login_request("heidi", "new-heidi-password"))
        .await
        .expect_err("deleted user cannot log in");
    assert_eq!(gone.message(), "invalid username or password");
}

#[tokio::test]
async fn disabling_a_user_kills_its_tokens_at_once_and_enabling_lets_it_back_in() {
    let server = TestServer::start().await;
    let ivan = server.create_user("ivan", "ivan-password", &[]).await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let session = login(&mut client, "ivan", "ivan-password").await;

    let disabled = admin
        .update_user(with_bearer(
            pb::UpdateUserRequest { user_id: ivan.id.to_string(), disabled: Some(true), roles: None },
            &token,
        ))
        .await
        .expect("disabled")
        .into_inner();
    assert_eq!(disabled.revoked_sessions, 1);
    assert!(disabled.user.expect("user").disabled);
    assert_eq!(validate(&mut client, &session.access_token).await.failure(), ValidationFailure::UserDisabled);
    let refused = client.authenticate(login_request("ivan", "ivan-password")).await.expect_err("disabled user refused");
    assert_eq!(refused.message(), "invalid username or password", "same message as a wrong password");
    let refresh = client
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect_err("no refresh");
    assert_eq!(refresh.code(), Code::Unauthenticated);

    admin
        .update_user(with_bearer(
            pb::UpdateUserRequest { user_id: ivan.id.to_string(), disabled: Some(false), roles: None },
            &token,
        ))
        .await
        .expect("enabled");
    let back = login(&mut client, "ivan", "ivan-password").await;
    assert!(validate(&mut client, &back.access_token).await.valid);
    assert_eq!(
        validate(&mut client, &session.access_token).await.failure(),
        ValidationFailure::SessionRevoked,
        "old sessions stay ended after re-enabling"
    );
}

#[tokio::test]
async fn session_and_token_listings_show_what_was_issued() {
    let server = TestServer::start().await;
    let judy = server.create_user("judy", "judy-password", &[]).await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(pb::AuthenticateRequest {
        username: "judy".into(),
        password: "judy-password".into(),
        device_name: Some("judy's phone".into()),
        audience: None,
    });
    request.metadata_mut().insert("user-agent", "judy-app/1.0".parse().expect("ascii"));
    let session = client.authenticate(request).await.expect("login").into_inner();
    let refreshed = client
        .refresh(pb::RefreshRequest { refresh_token: session.refresh_token.clone() })
        .await
        .expect("refresh")
        .into_inner();

    let sessions = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest { user_id: Some(judy.id.to_string()), ..Default::default() },
            &token,
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        (s.session_id.as_str(), s.username.as_str(), s.device_name.as_str()),
        (session.session_id.as_str(), "judy", "judy's phone")
    );
    assert!(s.user_agent.starts_with("judy-app/1.0"), "{}", s.user_agent);
    assert!(s.client_address.starts_with("127.0.0.1:"), "{}", s.client_address);
    assert_eq!(s.state(), SessionState::Active);

    let tokens = admin
        .list_tokens(with_bearer(
            pb::ListTokensRequest {
                session_id: Some(session.session_id.clone()),
                include_inactive: true,
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("list")
        .into_inner()
        .tokens;
    let kinds_states: Vec<(TokenKind, TokenState)> = tokens.iter().map(|t| (t.kind(), t.state())).collect();
    assert_eq!(
        kinds_states,
        [
            (TokenKind::Refresh, TokenState::Rotated),
            (TokenKind::Access, TokenState::Active),
            (TokenKind::Refresh, TokenState::Active),
            (TokenKind::Access, TokenState::Active),
        ]
    );
    let new_jti = validate(&mut client, &refreshed.access_token).await.claims.expect("valid").token_id;
    assert!(tokens.iter().any(|t| t.token_id == new_jti));
    // Only active ones without include_inactive.
    let active = admin
        .list_tokens(with_bearer(
            pb::ListTokensRequest { user_id: Some(judy.id.to_string()), ..Default::default() },
            &token,
        ))
        .await
        .expect("list")
        .into_inner()
        .tokens;
    assert_eq!(active.len(), 3);

    client
        .revoke(pb::RevokeRequest {
            target: Some(Target::RefreshToken(refreshed.refresh_token)),
            reason: "lost phone".into(),
        })
        .await
        .expect("revoke");
    let active_now = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest { user_id: Some(judy.id.to_string()), ..Default::default() },
            &token,
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert!(active_now.is_empty());
    let all = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest {
                user_id: Some(judy.id.to_string()),
                include_inactive: true,
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(all[0].state(), SessionState::Revoked);
    assert_eq!(all[0].revoke_reason, "lost phone");
    assert!(all[0].revoked_at.is_some());
}

#[tokio::test]
async fn paging_is_stable_while_sessions_are_created_and_revoked() {
    let server = TestServer::start().await;
    server.create_user("kim", "kim-password", &[]).await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let mut existing = Vec::new();
    for _ in 0..260 {
        existing.push(login(&mut client, "kim", "kim-password").await.session_id);
    }
    // Sessions that exist throughout: all but the ones the churn revokes.
    let (stable, churned) = existing.split_at(200);

    let churn = {
        let mut client = client.clone();
        let doomed: Vec<String> = churned.to_vec();
        tokio::spawn(async move {
            for (i, id) in doomed.into_iter().enumerate() {
                let kim = login(&mut client, "kim", "kim-password").await;
                let target =
                    if i % 2 == 0 { Target::SessionId(id) } else { Target::AccessToken(kim.access_token.clone()) };
                client
                    .revoke(with_bearer(
                        pb::RevokeRequest { target: Some(target), reason: "churn".into() },
                        &kim.access_token,
                    ))
                    .await
                    .expect("revoke");
            }
        })
    };

    let mut seen: Vec<String> = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_sessions(with_bearer(
                pb::ListSessionsRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    include_inactive: true,
                    user_id: None,
                },
                &token,
            ))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        seen.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        tokio::task::yield_now().await;
    }
    churn.await.expect("churn task");
    assert!(pages >= 3, "{pages} pages");
    for id in stable {
        assert_eq!(seen.iter().filter(|s| *s == id).count(), 1, "session {id} seen exactly once");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no session appears twice");

    let bad = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest { page_token: "not a token!".into(), ..Default::default() },
            &token,
        ))
        .await
        .expect_err("bad page token");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let capped = admin
        .list_sessions(with_bearer(
            pb::ListSessionsRequest { page_size: 100_000, include_inactive: true, ..Default::default() },
            &token,
        ))
        .await
        .expect("capped silently")
        .into_inner();
    assert!(capped.sessions.len() <= 1000);
}

#[tokio::test]
async fn a_watcher_sees_a_revocation_within_a_second() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let mut stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: None }, &token))
        .await
        .expect("watch")
        .into_inner();
    client
        .revoke(pb::RevokeRequest {
            target: Some(Target::SessionId(session.session_id.clone())),
            reason: "watched".into(),
        })
        .await
        .expect_err("needs a bearer");
    client
        .revoke(with_bearer(
            pb::RevokeRequest { target: Some(Target::SessionId(session.session_id.clone())), reason: "watched".into() },
            &token,
        ))
        .await
        .expect("revoked");
    let returned = tokio::time::Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(message) = stream.message().await.expect("stream ok") {
            let event = message.event.expect("event");
            if event.kind() == EventKind::SessionRevoked && event.session_id == session.session_id {
                return event;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("revocation event within 1 s");
    assert!(returned.elapsed() < Duration::from_secs(1));
    assert_eq!(seen.detail, "watched");
    assert_eq!(
        (seen.username.as_str(), seen.user_id.as_str()),
        ("admin", session.user_id.as_str()),
        "the event names whose session ended"
    );
    assert!(!seen.actor_user_id.is_empty(), "admin actions name who did them");
}

#[tokio::test]
async fn events_replay_after_a_sequence_and_never_carry_secrets() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    client.authenticate(login_request("admin", "wrong-secret-password")).await.expect_err("failed login");
    let mut stream = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &token))
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    // Everything stored so far arrives at once; then the stream goes quiet.
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        events.push(message.expect("no stream error").expect("open stream").event.expect("event"));
    }
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind()).collect();
    assert!(kinds.contains(&EventKind::UserCreated), "{kinds:?}");
    assert!(kinds.contains(&EventKind::SessionCreated), "{kinds:?}");
    let failed = events.iter().find(|e| e.kind() == EventKind::LoginFailed).expect("login failure recorded");
    assert_eq!(failed.username, "admin");
    let all = format!("{events:?}");
    assert!(!all.contains("wrong-secret-password") && !all.contains(ADMIN_PASSWORD), "no password in events");
    assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence), "sequences increase");

    let from = events[1].sequence;
    let mut resumed = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(from) }, &token))
        .await
        .expect("watch")
        .into_inner();
    let first = resumed.message().await.expect("ok").expect("event").event.expect("event");
    assert_eq!(first.sequence, events[2].sequence, "replay resumes right after the given sequence");
}

#[tokio::test]
async fn a_stalled_watcher_is_aborted_while_writes_keep_flowing() {
    // Sixteen writers log in as admin at once: more attempts in flight on
    // one account than the default lockout threshold admits.
    let server = TestServer::start_with(|config| config.lockout_threshold = 100).await;
    let (_, token) = server.admin().await;
    // A client with the smallest HTTP/2 windows, so that a few hundred
    // unread events fill them and the server side has to hold the rest.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("uri")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects");
    let mut admin = pb::admin_service_client::AdminServiceClient::new(channel);
    let stalled = admin
        .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: None }, &token))
        .await
        .expect("watch")
        .into_inner();

    // Enough events to overflow every buffer between the hub and the
    // stalled client (broadcast backlog, watcher queue, HTTP/2 window).
    let started = tokio::time::Instant::now();
    let writers = (0..16).map(|_| {
        let server_addr = server.grpc_addr();
        tokio::spawn(async move {
            let mut client = sigil_proto::pb::identity_service_client::IdentityServiceClient::new(
                sigil_tests::connect(server_addr).await,
            );
            let mut refresh = login(&mut client, "admin", ADMIN_PASSWORD).await.refresh_token;
            for _ in 0..100 {
                refresh = client
                    .refresh(pb::RefreshRequest { refresh_token: refresh })
                    .await
                    .expect("writes keep flowing")
                    .into_inner()
                    .refresh_token;
            }
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer");
    }
    let writing = started.elapsed();
    assert!(writing < Duration::from_secs(60), "3,200 events took {writing:?}");

    let mut stalled = stalled;
    let mut last = 0;
    let mut received = 0;
    let ending = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stalled.message()).await;
        match next.expect("the stream ends instead of going quiet") {
            Ok(Some(message)) => {
                last = message.event.expect("event").sequence;
                received += 1;
            }
            Ok(None) => panic!("stream ended without ABORTED after {received} events"),
            Err(status) => break status,
        }
    };
    assert_eq!(ending.code(), Code::Aborted, "{ending:?}");
    assert!(ending.message().contains(&format!("after_sequence={last}")), "{} (last seen {last})", ending.message());
    assert!(received < 3200, "the stalled watcher did not get everything ({received})");
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let before = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let old_kid = jsonwebtoken::decode_header(&before.access_token).expect("header").kid.expect("kid");
    let new_key = admin
        .rotate_signing_key(with_bearer(pb::RotateSigningKeyRequest::default(), &token))
        .await
        .expect("rotated")
        .into_inner()
        .key
        .expect("key");
    assert_ne!(new_key.kid, old_kid);
    let after = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let after_kid = jsonwebtoken::decode_header(&after.access_token).expect("header").kid.expect("kid");
    assert_eq!(after_kid, new_key.kid, "new tokens are signed with the new key");
    assert!(validate(&mut client, &before.access_token).await.valid, "old tokens still verify");
    assert!(validate(&mut client, &after.access_token).await.valid);

    let jwks = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("json");
    let kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_key.kid.as_str()), "{kids:?}");

    let keys = admin
        .list_signing_keys(with_bearer(pb::ListSigningKeysRequest {}, &token))
        .await
        .expect("keys")
        .into_inner()
        .keys;
    let states: Vec<(String, pb::SigningKeyState)> = keys.iter().map(|k| (k.kid.clone(), k.state())).collect();
    assert_eq!(states, [(old_kid, pb::SigningKeyState::Verifying), (new_key.kid, pb::SigningKeyState::Active)]);
    assert!(keys.iter().all(|k| !k.public_jwk_json.contains("\"d\"")), "public material only");
}

#[tokio::test]
async fn the_sweeper_expires_short_sessions_and_retires_old_keys() {
    let server = TestServer::start_with(|config| {
        config.access_token_ttl = Duration::from_secs(1);
        config.session_ttl = Duration::from_secs(1);
        config.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let mut client = server.client().await;
    let short = login(&mut client, "admin", ADMIN_PASSWORD).await;
    // A watcher's stream ends when its bearer expires, and tokens live one
    // second here: each look replays the trail with a fresh admin token.
    let expired = sigil_tests::eventually(Duration::from_secs(10), || {
        let (server, short) = (&server, &short);
        async move {
            let (mut admin, token) = server.admin().await;
            let mut watch = admin
                .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(0) }, &token))
                .await
                .ok()?
                .into_inner();
            while let Ok(Ok(Some(message))) = tokio::time::timeout(Duration::from_millis(200), watch.message()).await {
                let event = message.event.expect("event");
                if event.kind() == EventKind::SessionExpired && event.session_id == short.session_id {
                    return Some(event);
                }
            }
            None
        }
    })
    .await
    .expect("expiry event");
    assert_eq!(expired.username, "admin");
    assert_eq!(validate(&mut client, &short.access_token).await.failure(), ValidationFailure::Expired);
    let old_kid = jsonwebtoken::decode_header(&short.access_token).expect("header").kid.expect("kid");
    // Access tokens live at most one second here (`exp` has whole seconds,
    // so a token minted at x.999 s lives a millisecond): a fresh one per try.
    let rotated = sigil_tests::eventually(Duration::from_secs(10), || {
        let server = &server;
        async move {
            let (mut admin, token) = server.admin().await;
            admin.rotate_signing_key(with_bearer(pb::RotateSigningKeyRequest::default(), &token)).await.ok()
        }
    })
    .await;
    assert!(rotated.is_some(), "the key rotates");

    let retired = sigil_tests::eventually(Duration::from_secs(10), || {
        let old_kid = old_kid.clone();
        let server = &server;
        async move {
            // A fresh admin token each time: they live one second here.
            let (mut admin, token) = server.admin().await;
            let keys = admin
                .list_signing_keys(with_bearer(pb::ListSigningKeysRequest {}, &token))
                .await
                .ok()?
                .into_inner()
                .keys;
            keys.into_iter().find(|k| k.kid == old_kid && k.state() == pb::SigningKeyState::Retired)
        }
    })
    .await;
    assert!(retired.is_some(), "the superseded key retires once its tokens have expired");
    let jwks = client.get_jwks(pb::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json;
    assert!(!jwks.contains(&old_kid), "a retired key is no longer published");
}

#[tokio::test]
async fn my_sessions_marks_the_current_one_and_stats_count() {
    let server = TestServer::start().await;
    server.create_user("liam", "liam-password", &[]).await;
    let mut client = server.client().await;
    let first = login(&mut client, "liam", "liam-password").await;
    let second = login(&mut client, "liam", "liam-password").await;
    let mine = client
        .list_my_sessions(with_bearer(pb::ListMySessionsRequest::default(), &second.access_token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(mine.current_session_id, second.session_id);
    let ids: Vec<&str> = mine.sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [first.session_id.as_str(), second.session_id.as_str()]);
    let anonymous = client.list_my_sessions(pb::ListMySessionsRequest::default()).await.expect_err("needs a bearer");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    // "Sign out my other device."
    client
        .revoke(with_bearer(
            pb::RevokeRequest { target: Some(Target::SessionId(first.session_id.clone())), reason: String::new() },
            &second.access_token,
        ))
        .await
        .expect("own session");

    let (mut admin, token) = server.admin().await;
    let stats = admin.get_stats(with_bearer(pb::GetStatsRequest {}, &token)).await.expect("stats").into_inner();
    assert_eq!(stats.users, 2);
    assert_eq!(stats.active_sessions, 2, "liam's second and the admin's");
    assert_eq!(stats.active_tokens, 4);
    assert!(stats.logins_per_second > 0.0);
    assert!(stats.validations_per_second > 0.0);
    assert!(stats.revocation_index_entries >= 1);
}

#[tokio::test]
async fn validate_and_refresh_move_last_seen_without_a_write_per_call() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let session = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let listed = |admin: &mut pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>| {
        let request = with_bearer(pb::ListSessionsRequest { page_size: 1000, ..Default::default() }, &token);
        let mut admin = admin.clone();
        let id = session.session_id.clone();
        async move {
            let sessions = admin.list_sessions(request).await.expect("list").into_inner().sessions;
            sessions.into_iter().find(|s| s.session_id == id).expect("listed").last_seen_at.expect("last seen")
        }
    };
    let at_login = listed(&mut admin).await;
    // Validate notes the use in memory (at most once a second per session).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(validate(&mut client, &session.access_token).await.valid);
    let after_validate = listed(&mut admin).await;
    assert!(
        after_validate.seconds * 1000 + i64::from(after_validate.nanos / 1_000_000)
            > at_login.seconds * 1000 + i64::from(at_login.nanos / 1_000_000),
        "{at_login:?} -> {after_validate:?}"
    );
    // Maintenance writes it to the store; a fresh listing still shows it.
    server.identity().flush_last_seen().await.expect("flush");
    let stored =
        server.identity().session(session.session_id.parse().expect("id")).await.expect("read").expect("session");
    assert_eq!(
        stored.last_seen_at.as_millis(),
        after_validate.seconds * 1000 + i64::from(after_validate.nanos / 1_000_000)
    );
}

#[tokio::test]
async fn a_full_listing_page_is_served_however_large_its_rows() {
    // One account refreshing a few hundred times leaves more than 64 KiB of
    // token records: a full page must still be answered, not refused.
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    let mut refresh = login(&mut client, "admin", ADMIN_PASSWORD).await.refresh_token;
    for _ in 0..600 {
        refresh = client
            .refresh(pb::RefreshRequest { refresh_token: refresh })
            .await
            .expect("refresh")
            .into_inner()
            .refresh_token;
    }
    let request = pb::ListTokensRequest { page_size: 1000, include_inactive: true, ..Default::default() };
    let page = admin.list_tokens(with_bearer(request, &token)).await.expect("a full page").into_inner();
    assert_eq!(page.tokens.len(), 1000);
    assert!(!page.next_page_token.is_empty(), "more follow");
    assert!(prost::Message::encoded_len(&page) > 64 * 1024, "the page is larger than a request may be");
}

#[tokio::test]
async fn resuming_beyond_the_newest_event_is_refused_not_left_silent() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    for after in [1_000_000_000_000, u64::MAX] {
        let refused = admin
            .watch_events(with_bearer(pb::WatchEventsRequest { after_sequence: Some(after) }, &token))
            .await
            .expect_err("a sequence the store never reached");
        assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
        assert!(refused.message().contains("beyond the newest event"), "{}", refused.message());
    }
}

#[tokio::test]
async fn an_oversized_role_is_refused_without_being_echoed() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let role = "r".repeat(20_000);
    let create = pb::CreateUserRequest { username: "rory".into(), password: "rory-password".into(), roles: vec![role] };
    let refused = admin.create_user(with_bearer(create, &token)).await.expect_err("oversized role");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().len() < 200, "the role came back: {} bytes", refused.message().len());
}
