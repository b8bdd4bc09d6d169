//! `RevocationService.WatchRevocations` against real servers: the snapshot
//! and the ordered entries after it, every target kind, resuming (same
//! epoch, restart, another store), the key set on rotation and distrust,
//! heartbeats, who may watch and when the stream ends, a slow subscriber,
//! the bound on streams (overall and per caller), and two instances on PostgreSQL.

use std::time::Duration;

use futures::{StreamExt as _, stream};
use sigil_proto::pb::{
    self, revocation::Target as Entry, revocation_service_client::RevocationServiceClient, revoke_request::Target,
    watch_revocations_response::Message,
};
use sigil_server::Config;
use sigil_tests::{ADMIN_PASSWORD, TestServer, connect, http_get, login, maybe_bearer, validate, with_bearer};
use tonic::{Code, Status, transport::Channel};

type Revocations = tonic::Streaming<pb::WatchRevocationsResponse>;

/// How long any one message may take to arrive.
const PATIENCE: Duration = Duration::from_secs(10);

/// Opens a stream with `token` (if any) as the bearer.
async fn open(channel: Channel, token: Option<&str>, after: u64, epoch: &str) -> Result<Revocations, Status> {
    let request = pb::WatchRevocationsRequest { after_sequence: after, epoch: epoch.into(), batches: false };
    RevocationServiceClient::new(channel).watch_revocations(maybe_bearer(request, token)).await.map(|r| r.into_inner())
}

/// The next message; panics when the stream ends or stays silent.
async fn next(stream: &mut Revocations) -> Message {
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Ok(Ok(Some(message))) => message.message.expect("a message in the oneof"),
        Ok(Ok(None)) => panic!("the stream ended without a status"),
        Ok(Err(status)) => panic!("the stream ended: {status:?}"),
        Err(_) => panic!("nothing arrived within {PATIENCE:?}"),
    }
}

/// The next message that is not a heartbeat.
async fn next_news(stream: &mut Revocations) -> Message {
    loop {
        match next(stream).await {
            Message::Heartbeat(_) => continue,
            other => return other,
        }
    }
}

/// The next revocation, skipping heartbeats (and nothing else).
async fn next_revocation(stream: &mut Revocations) -> pb::Revocation {
    match next_news(stream).await {
        Message::Revocation(entry) => entry,
        other => panic!("expected a revocation, got {other:?}"),
    }
}

/// The status the stream ends with, reading past what was still buffered.
async fn end_of(stream: &mut Revocations) -> (Vec<Message>, Status) {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Ok(Ok(Some(message))) => seen.push(message.message.expect("oneof")),
            Ok(Ok(None)) => panic!("the stream ended without a status after {} messages", seen.len()),
            Ok(Err(status)) => return (seen, status),
            Err(_) => panic!("the stream stayed open {PATIENCE:?} after it should have ended"),
        }
    }
}

/// A complete snapshot as received.
struct Snapshot {
    jwks_json: String,
    epoch: String,
    sequence: u64,
    entries: Vec<pb::Revocation>,
}

/// Reads the key set and then a whole snapshot, checking its framing.
async fn snapshot(stream: &mut Revocations) -> Snapshot {
    let Message::Keys(keys) = next(stream).await else { panic!("the stream starts with the key set") };
    let Message::SnapshotBegin(begin) = next(stream).await else { panic!("then a snapshot begins") };
    assert!(!begin.epoch.is_empty(), "the snapshot names the store's epoch");
    let mut entries = Vec::new();
    loop {
        match next(stream).await {
            Message::Revocation(entry) => entries.push(entry),
            Message::SnapshotEnd(end) => {
                assert_eq!((end.epoch.as_str(), end.sequence), (begin.epoch.as_str(), begin.sequence));
                break;
            }
            other => panic!("inside a snapshot: {other:?}"),
        }
    }
    let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "snapshot in sequence order: {sequences:?}");
    assert!(sequences.iter().all(|s| *s <= begin.sequence), "nothing after the snapshot's sequence: {sequences:?}");
    Snapshot { jwks_json: keys.jwks_json, epoch: begin.epoch, sequence: begin.sequence, entries }
}

/// A user with role `verifier` and its login.
async fn verifier(server: &TestServer, name: &str) -> pb::AuthenticateResponse {
    server.create_user(name, "verifier-password", &["verifier"]).await;
    login(&mut server.client().await, name, "verifier-password").await
}

fn revoke(target: Target) -> pb::RevokeRequest {
    pb::RevokeRequest { target: Some(target), reason: "revocation stream test".into() }
}

/// The target of an entry, for comparing with what a test revoked.
fn target(entry: &pb::Revocation) -> &Entry {
    entry.target.as_ref().expect("every entry has a target")
}

#[tokio::test]
async fn a_snapshot_carries_every_target_kind_then_live_entries_follow_in_order() {
    let server = TestServer::start().await;
    let edge = verifier(&server, "edge").await;
    let (mut admin, admin_token) = server.admin().await;
    let mut client = server.client().await;
    let bob = server.create_user("bob", "bob-password", &[]).await;
    let carol = server.create_user("carol", "carol-password", &[]).await;
    let dave = server.create_user("dave", "dave-password", &[]).await;
    let first = login(&mut client, "bob", "bob-password").await;
    let second = login(&mut client, "bob", "bob-password").await;
    let token_id = validate(&mut client, &first.access_token).await.claims.expect("valid").token_id;

    let by_admin = |target| with_bearer(revoke(target), &admin_token);
    client.revoke(by_admin(Target::TokenId(token_id.clone()))).await.expect("token revoked");
    client.revoke(by_admin(Target::SessionId(second.session_id.clone()))).await.expect("session revoked");
    client.revoke(by_admin(Target::UserId(carol.id.to_string()))).await.expect("carol logged out everywhere");
    let roles = Some(pb::RoleList { roles: vec!["editor".into()] });
    let update = pb::UpdateUserRequest { user_id: bob.id.to_string(), disabled: None, roles };
    admin.update_user(with_bearer(update, &admin_token)).await.expect("bob's roles changed");
    let disable = pb::UpdateUserRequest { user_id: dave.id.to_string(), disabled: Some(true), roles: None };
    admin.update_user(with_bearer(disable, &admin_token)).await.expect("dave disabled");

    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("stream opens");
    let snapshot = snapshot(&mut stream).await;
    assert!(snapshot.jwks_json.contains("\"keys\""), "a JWKS: {}", snapshot.jwks_json);
    let targets: Vec<&Entry> = snapshot.entries.iter().map(target).collect();
    for expected in [
        Entry::TokenId(token_id.clone()),
        Entry::SessionId(second.session_id.clone()),
        Entry::UserDisabled(dave.id.to_string()),
    ] {
        assert!(targets.contains(&&expected), "{expected:?} in the snapshot: {targets:?}");
    }
    let not_before = targets.iter().any(|t| matches!(t, Entry::UserNotBefore(b) if b.user_id == bob.id.to_string()));
    assert!(not_before, "bob's role change is a not-before: {targets:?}");
    let sessions_before =
        targets.iter().any(|t| matches!(t, Entry::UserSessionsBefore(b) if b.user_id == carol.id.to_string()));
    assert!(sessions_before, "carol's log-out-everywhere is a sessions bound: {targets:?}");
    for entry in &snapshot.entries {
        let (at, until) = (entry.revoked_at.expect("revoked_at"), entry.expires_at.expect("expires_at"));
        assert!(until.seconds > at.seconds, "an entry matters for a while: {entry:?}");
    }

    // Live: five revocations at once arrive in sequence order, after the snapshot.
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(login(&mut client, "bob", "bob-password").await.session_id);
    }
    let revokes = sessions.iter().map(|id| {
        let mut client = client.clone();
        let request = by_admin(Target::SessionId(id.clone()));
        async move { client.revoke(request).await.expect("revoked") }
    });
    futures::future::join_all(revokes).await;
    let mut live = Vec::new();
    while live.len() < 5 {
        let entry = next_revocation(&mut stream).await;
        if let Entry::SessionId(id) = target(&entry) {
            live.push((entry.sequence, id.clone()));
        }
    }
    assert!(live.windows(2).all(|w| w[0].0 < w[1].0), "live entries in order: {live:?}");
    assert!(live[0].0 > snapshot.sequence, "live entries come after the snapshot: {live:?}");
    let mut got: Vec<String> = live.into_iter().map(|(_, id)| id).collect();
    got.sort();
    sessions.sort();
    assert_eq!(got, sessions);

    // Enabling dave again is an entry too: a verifier must stop refusing him.
    let enable = pb::UpdateUserRequest { user_id: dave.id.to_string(), disabled: Some(false), roles: None };
    admin.update_user(with_bearer(enable, &admin_token)).await.expect("dave enabled");
    assert_eq!(target(&next_revocation(&mut stream).await), &Entry::UserEnabled(dave.id.to_string()));
}

#[tokio::test]
async fn resuming_with_the_same_epoch_sends_only_what_was_missed_and_anything_else_a_snapshot() {
    let server = TestServer::start().await;
    let edge = verifier(&server, "edge").await;
    let admin = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;
    let mut client = server.client().await;
    server.create_user("bob", "bob-password", &[]).await;
    let early = login(&mut client, "bob", "bob-password").await;
    client.revoke(revoke(Target::AccessToken(early.access_token))).await.expect("revoked");

    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
    let first = snapshot(&mut stream).await;
    drop(stream);
    let missed = login(&mut client, "bob", "bob-password").await;
    client.revoke(revoke(Target::AccessToken(missed.access_token))).await.expect("revoked while away");

    let mut resumed =
        open(server.channel().await, Some(&edge.access_token), first.sequence, &first.epoch).await.expect("resumes");
    assert!(matches!(next(&mut resumed).await, Message::Keys(_)), "the key set first");
    let mut caught_up = Vec::new();
    let latest = loop {
        match next(&mut resumed).await {
            Message::Revocation(entry) => caught_up.push(entry),
            Message::Heartbeat(beat) => break beat,
            other => panic!("a resume sends no snapshot: {other:?}"),
        }
    };
    assert!(!caught_up.is_empty(), "what was missed");
    assert!(caught_up.iter().all(|e| e.sequence > first.sequence), "only what was missed: {:?}", caught_up);
    assert!(
        caught_up.iter().any(|e| target(e) == &Entry::SessionId(missed.session_id.clone())),
        "the session revoked while away: {caught_up:?}"
    );
    assert_eq!(latest.epoch, first.epoch);
    assert_eq!(latest.latest_sequence, caught_up.last().expect("entries").sequence);

    // Another epoch, a sequence this store never reached, or none: a snapshot.
    for (after, epoch) in [(first.sequence, "another-store"), (latest.latest_sequence + 1000, first.epoch.as_str())] {
        let mut stream = open(server.channel().await, Some(&admin.access_token), after, epoch).await.expect("opens");
        let again = snapshot(&mut stream).await;
        assert_eq!(again.epoch, first.epoch);
        assert!(again.sequence >= latest.latest_sequence);
    }
}

#[tokio::test]
async fn a_restart_on_the_same_data_resumes_and_a_new_data_dir_is_a_new_epoch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let on_dir = |config: &mut Config| config.data_dir = dir.path().join("data");
    let server = TestServer::start_with(on_dir).await;
    let edge = verifier(&server, "edge").await;
    let mut client = server.client().await;
    let early = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client.revoke(revoke(Target::AccessToken(early.access_token))).await.expect("revoked");
    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
    let before = snapshot(&mut stream).await;
    assert!(before.sequence > 0, "the snapshot holds the early revocation");
    drop(stream);
    let away = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client.revoke(revoke(Target::AccessToken(away.access_token))).await.expect("revoked before the restart");
    server.stop().await;

    let restarted = TestServer::start_with(on_dir).await;
    let edge = login(&mut restarted.client().await, "edge", "verifier-password").await;
    let mut resumed = open(restarted.channel().await, Some(&edge.access_token), before.sequence, &before.epoch)
        .await
        .expect("resumes");
    assert!(matches!(next(&mut resumed).await, Message::Keys(_)));
    let entry = match next(&mut resumed).await {
        Message::Revocation(entry) => entry,
        other => panic!("the restarted server resumes without a snapshot: {other:?}"),
    };
    assert!(entry.sequence > before.sequence);
    drop(resumed);

    let elsewhere = TestServer::start().await;
    let admin = login(&mut elsewhere.client().await, "admin", ADMIN_PASSWORD).await;
    let mut stream = open(elsewhere.channel().await, Some(&admin.access_token), before.sequence, &before.epoch)
        .await
        .expect("opens");
    let fresh = snapshot(&mut stream).await;
    assert_ne!(fresh.epoch, before.epoch, "another data directory is another store");
    restarted.stop().await;
}

#[tokio::test]
async fn the_key_set_is_sent_on_rotation_and_on_emergency_distrust() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut stream = open(server.channel().await, Some(&token), 0, "").await.expect("opens");
    let start = snapshot(&mut stream).await;
    let kids = |jwks: &str| -> Vec<String> {
        let set: serde_json::Value = serde_json::from_str(jwks).expect("JWKS is JSON");
        set["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_string()).collect()
    };
    let old = kids(&start.jwks_json);
    assert_eq!(old.len(), 1);

    let rotated = admin.rotate_signing_key(with_bearer(pb::RotateSigningKeyRequest::default(), &token)).await;
    let new_kid = rotated.expect("rotated").into_inner().key.expect("key").kid;
    let Message::Keys(keys) = next_news(&mut stream).await else { panic!("a key set after the rotation") };
    let now = kids(&keys.jwks_json);
    assert!(now.contains(&new_kid) && now.contains(&old[0]), "both keys verify: {now:?}");

    // An emergency rotation distrusts every older key, the one that signed
    // this stream's bearer too: the subscriber still learns the new key set
    // (it is public), and then the stream ends.
    let request = pb::RotateSigningKeyRequest { distrust_previous: true };
    let newest = admin.rotate_signing_key(with_bearer(request, &token)).await.expect("rotated").into_inner();
    let newest = newest.key.expect("key").kid;
    let (seen, status) = end_of(&mut stream).await;
    let last_keys = seen.iter().rev().find_map(|m| if let Message::Keys(k) = m { Some(k) } else { None });
    let last_keys = last_keys.unwrap_or_else(|| panic!("a key set after the distrust: {seen:?}"));
    assert_eq!(kids(&last_keys.jwks_json), vec![newest], "only the new key verifies");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let server = TestServer::start_with(|c| c.revocation_heartbeat = Duration::from_millis(200)).await;
    let edge = verifier(&server, "edge").await;
    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
    let snapshot = snapshot(&mut stream).await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let Message::Heartbeat(beat) = next(&mut stream).await else { panic!("only heartbeats when idle") };
        assert_eq!((beat.latest_sequence, beat.epoch.as_str()), (snapshot.sequence, snapshot.epoch.as_str()));
        let server_time = beat.server_time.expect("server time");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        assert!(server_time.seconds.abs_diff(i64::try_from(now).expect("i64")) <= 5, "{server_time:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "three beats of 200 ms took {:?}", started.elapsed());
}

#[tokio::test]
async fn only_a_bearer_with_role_verifier_or_admin_may_watch() {
    let server = TestServer::start().await;
    server.create_user("plain", "plain-password", &["editor"]).await;
    let plain = login(&mut server.client().await, "plain", "plain-password").await;
    let edge = verifier(&server, "edge").await;
    let admin = login(&mut server.client().await, "admin", ADMIN_PASSWORD).await;

    let none = open(server.channel().await, None, 0, "").await.expect_err("no bearer");
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    assert!(none.message().contains("Bearer"), "says what is missing: {none:?}");
    let forged = open(server.channel().await, Some("not.a.token"), 0, "").await.expect_err("bad bearer");
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");
    let denied = open(server.channel().await, Some(&plain.access_token), 0, "").await.expect_err("no role");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("verifier"), "names the role: {denied:?}");
    for token in [&edge.access_token, &admin.access_token] {
        let mut stream = open(server.channel().await, Some(token), 0, "").await.expect("allowed");
        snapshot(&mut stream).await;
    }
    // An oversized epoch is refused, not stored or echoed.
    let long = "e".repeat(1000);
    let status = open(server.channel().await, Some(&edge.access_token), 1, &long).await.expect_err("oversized");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(!status.message().contains(&long[..100]), "the epoch is not echoed");
}

#[tokio::test]
async fn the_stream_ends_when_its_bearer_is_revoked_disabled_or_demoted() {
    let server = TestServer::start().await;
    let (mut admin, admin_token) = server.admin().await;
    let mut client = server.client().await;

    // Its own session revoked.
    let edge = verifier(&server, "edge").await;
    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
    snapshot(&mut stream).await;
    client.revoke(revoke(Target::AccessToken(edge.access_token.clone()))).await.expect("revoked");
    let (_, status) = end_of(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "says why: {status:?}");

    // Its user disabled, then another demoted.
    let disabled = verifier(&server, "edge-disabled").await;
    let demoted = verifier(&server, "edge-demoted").await;
    let mut streams = Vec::new();
    for login in [&disabled, &demoted] {
        let mut stream = open(server.channel().await, Some(&login.access_token), 0, "").await.expect("opens");
        snapshot(&mut stream).await;
        streams.push(stream);
    }
    let disable = pb::UpdateUserRequest { user_id: disabled.user_id.clone(), disabled: Some(true), roles: None };
    admin.update_user(with_bearer(disable, &admin_token)).await.expect("disabled");
    let (_, status) = end_of(&mut streams[0]).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let demote = pb::UpdateUserRequest {
        user_id: demoted.user_id.clone(),
        disabled: None,
        roles: Some(pb::RoleList { roles: vec![] }),
    };
    admin.update_user(with_bearer(demote, &admin_token)).await.expect("demoted");
    let (_, status) = end_of(&mut streams[1]).await;
    assert!(matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied), "{status:?}");
}

/// A client whose HTTP/2 window holds about one message, so that a stream
/// it does not read backs up into the server at once.
async fn narrow_channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr()))
        .expect("uri")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .expect("connects")
}

#[tokio::test]
async fn a_slow_subscriber_is_aborted_with_a_resume_point_and_resumes_from_it() {
    let server = TestServer::start().await;
    let (_, admin_token) = server.admin().await;
    let bob = server.create_user("bob", "bob-password", &[]).await;
    let mut slow = open(narrow_channel(&server).await, Some(&admin_token), 0, "").await.expect("opens");
    let start = snapshot(&mut slow).await;

    // Far more entries than a subscriber may have in flight (and than the
    // HTTP/2 send buffers hold), while it reads nothing: batches until the
    // server gave up on it, at most 40,000 entries.
    let client = server.client().await;
    let aborted = || async {
        let (_, metrics) = http_get(server.http_addr(), "/metrics").await;
        metric(&metrics, "sigil_revocation_streams_aborted_total")
    };
    let aborted_before = aborted().await;
    let mut revocations = 0;
    while aborted().await == aborted_before {
        assert!(revocations < 40_000, "{revocations} entries unread and the subscriber is still served");
        stream::iter(0..1000)
            .for_each_concurrent(64, |_| {
                let mut client = client.clone();
                let request = with_bearer(revoke(Target::UserId(bob.id.to_string())), &admin_token);
                async move {
                    client.revoke(request).await.expect("revoked");
                }
            })
            .await;
        revocations += 1000;
    }

    let (seen, status) = end_of(&mut slow).await;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let resume_after: u64 = status
        .message()
        .rsplit("after_sequence=")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("the status names where to resume: {status:?}"));
    let received: Vec<u64> =
        seen.iter().filter_map(|m| if let Message::Revocation(e) = m { Some(e.sequence) } else { None }).collect();
    assert!(received.len() < revocations, "it was cut short");
    assert_eq!(received.last().copied().unwrap_or(start.sequence), resume_after, "resume after the last one sent");

    // Resuming there sends the rest, no snapshot.
    let mut resumed =
        open(server.channel().await, Some(&admin_token), resume_after, &start.epoch).await.expect("opens");
    assert!(matches!(next(&mut resumed).await, Message::Keys(_)));
    let mut total = received.len();
    let mut last = resume_after;
    while total < revocations {
        let entry = next_revocation(&mut resumed).await;
        assert!(entry.sequence > last, "in order, nothing twice");
        last = entry.sequence;
        if matches!(target(&entry), Entry::UserSessionsBefore(_)) {
            total += 1;
        }
    }

    let (_, metrics) = http_get(server.http_addr(), "/metrics").await;
    assert!(metric(&metrics, "sigil_revocation_entries_sent_total") >= revocations as f64);
    assert!(metric(&metrics, "sigil_revocation_streams") >= 1.0, "the resumed stream is open");
}

/// The value of an unlabelled series in a /metrics page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

#[tokio::test]
async fn a_server_shutting_down_ends_the_stream_naming_where_to_resume() {
    let server = TestServer::start().await;
    let edge = verifier(&server, "edge").await;
    let mut client = server.client().await;
    let early = login(&mut client, "admin", ADMIN_PASSWORD).await;
    client.revoke(revoke(Target::AccessToken(early.access_token))).await.expect("revoked");
    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
    let start = snapshot(&mut stream).await;
    let stopping = tokio::spawn(server.stop());
    let (_, status) = end_of(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains(&format!("after_sequence={}", start.sequence)),
        "names where to resume (on another instance): {status:?}"
    );
    stopping.await.expect("the server stopped");
}

#[tokio::test]
async fn the_number_of_streams_is_bounded() {
    let server = TestServer::start_with(|c| c.max_revocation_streams = 2).await;
    let edge = verifier(&server, "edge").await;
    let mut open_streams = Vec::new();
    for _ in 0..2 {
        let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
        snapshot(&mut stream).await;
        open_streams.push(stream);
    }
    let refused = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect_err("one too many");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_revocation_streams"), "names the setting: {refused:?}");
    drop(open_streams.pop());
    let reopened = sigil_tests::eventually(Duration::from_secs(5), || {
        let channel = server.channel();
        let token = edge.access_token.clone();
        async move { open(channel.await, Some(&token), 0, "").await.ok() }
    })
    .await;
    assert!(reopened.is_some(), "a stream that ended frees its place");
}

#[tokio::test]
async fn one_caller_cannot_take_every_stream_place() {
    // Plenty of places overall: only the per-caller bound can refuse.
    let server = TestServer::start_with(|c| {
        c.max_revocation_streams = 16;
        c.max_revocation_streams_per_user = 2;
    })
    .await;
    let greedy = verifier(&server, "greedy").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = open(server.channel().await, Some(&greedy.access_token), 0, "").await.expect("opens");
        snapshot(&mut stream).await;
        held.push(stream);
    }
    let refused = open(server.channel().await, Some(&greedy.access_token), 0, "").await.expect_err("one too many");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_revocation_streams_per_user"), "names the setting: {refused:?}");
    // Another login of the same user is the same caller.
    let again = login(&mut server.client().await, "greedy", "verifier-password").await;
    let refused = open(server.channel().await, Some(&again.access_token), 0, "").await.expect_err("same user");
    assert_eq!(refused.code(), Code::ResourceExhausted, "a second session of the same user: {refused:?}");
    // Another caller still gets a place.
    let other = verifier(&server, "other").await;
    let mut stream = open(server.channel().await, Some(&other.access_token), 0, "").await.expect("another caller");
    snapshot(&mut stream).await;
    // A stream that ends gives its caller's place back.
    drop(held.pop());
    let reopened = sigil_tests::eventually(Duration::from_secs(5), || {
        let channel = server.channel();
        let token = greedy.access_token.clone();
        async move { open(channel.await, Some(&token), 0, "").await.ok() }
    })
    .await;
    assert!(reopened.is_some(), "a stream that ended frees its caller's place");
}

#[tokio::test]
async fn on_postgres_a_stream_from_one_instance_carries_revocations_made_on_another() {
    let Some(postgres) = sigil_tests::postgres::Postgres::shared() else { return };
    let cluster = crate::cluster::Cluster::start(postgres, 2).await;
    let (mut a, b) = (cluster.client(0).await, connect(cluster.servers[1].grpc_addr).await);
    let admin = login(&mut a, "admin", ADMIN_PASSWORD).await;
    let mut stream = open(b, Some(&admin.access_token), 0, "").await.expect("opens on B");
    let start = snapshot(&mut stream).await;
    let victim = login(&mut a, "admin", ADMIN_PASSWORD).await;
    a.revoke(revoke(Target::AccessToken(victim.access_token))).await.expect("revoked on A");
    let entry = loop {
        let entry = next_revocation(&mut stream).await;
        if target(&entry) == &Entry::SessionId(victim.session_id.clone()) {
            break entry;
        }
    };
    assert!(entry.sequence > start.sequence);

    // One database is one store: B's epoch and sequence resume on A,
    // which has nothing more to send than a heartbeat.
    let a_channel = connect(cluster.servers[0].grpc_addr).await;
    let mut resumed = open(a_channel, Some(&admin.access_token), entry.sequence, &start.epoch).await.expect("on A");
    assert!(matches!(next(&mut resumed).await, Message::Keys(_)));
    match next(&mut resumed).await {
        Message::Heartbeat(beat) => {
            assert_eq!(beat.epoch, start.epoch);
            assert!(beat.latest_sequence >= entry.sequence);
        }
        other => panic!("A resumes B's stream without a snapshot: {other:?}"),
    }
}

/// Revokes `bob` (one log entry each) `count` times, 64 at once.
async fn fill_log(server: &TestServer, admin_token: &str, bob: &str, count: usize) {
    let client = server.client().await;
    stream::iter(0..count)
        .for_each_concurrent(64, |_| {
            let mut client = client.clone();
            let request = with_bearer(revoke(Target::UserId(bob.to_string())), admin_token);
            async move {
                client.revoke(request).await.expect("revoked");
            }
        })
        .await;
}

#[tokio::test]
async fn a_subscriber_stalled_in_its_snapshot_is_ended_when_its_bearer_is_revoked_and_frees_its_place() {
    let server = TestServer::start_with(|c| c.max_revocation_streams = 1).await;
    let (_, admin_token) = server.admin().await;
    let bob = server.create_user("bob", "bob-password", &[]).await;
    // A snapshot larger than a subscriber may have in flight plus what the
    // HTTP/2 window of a narrow channel holds: the server waits on it.
    fill_log(&server, &admin_token, &bob.id.to_string(), 1500).await;
    let edge = verifier(&server, "edge").await;
    let mut stalled = open(narrow_channel(&server).await, Some(&edge.access_token), 0, "").await.expect("opens");
    assert!(matches!(next(&mut stalled).await, Message::Keys(_)), "the stream starts with the key set");
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.client().await.revoke(revoke(Target::AccessToken(edge.access_token.clone()))).await.expect("revoked");
    let other = verifier(&server, "edge-2").await;
    let reopened = sigil_tests::eventually(Duration::from_secs(5), || {
        let channel = server.channel();
        let token = other.access_token.clone();
        async move { open(channel.await, Some(&token), 0, "").await.ok() }
    })
    .await;
    assert!(reopened.is_some(), "a revoked bearer that stopped reading mid-snapshot still holds the only place");

    let (seen, status) = end_of(&mut stalled).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!seen.iter().any(|m| matches!(m, Message::SnapshotEnd(_))), "the snapshot is not completed for it");
}

#[tokio::test]
async fn the_stream_ends_when_its_bearers_user_is_deleted() {
    let server = TestServer::start().await;
    let (mut admin, admin_token) = server.admin().await;
    let edge = verifier(&server, "edge").await;
    let mut stream = open(server.channel().await, Some(&edge.access_token), 0, "").await.expect("opens");
    snapshot(&mut stream).await;
    let delete = pb::DeleteUserRequest { user_id: edge.user_id.clone() };
    admin.delete_user(with_bearer(delete, &admin_token)).await.expect("deleted");
    let (_, status) = end_of(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}
