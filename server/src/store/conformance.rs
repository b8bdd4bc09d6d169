//! The store conformance suite: behaviour every engine must show, written
//! once against the traits. The end-to-end tests run it against sled (and
//! against every later engine) on a fresh, empty store.

mod service_accounts;

use std::sync::Arc;

use std::time::Duration;

use crate::domain::port::{
    Expired, RevocationCause, RevokeOutcome, RotateOutcome, Rotation, SessionQuery, Store, StoreError, TokenQuery,
};
use crate::domain::{
    SessionId, Timestamp, TokenId, UserId,
    event::{EventKind, EventRecord},
    keys::{KeyState, SigningKeyRecord},
    lockout::LockoutPolicy,
    revocation::RevocationTarget,
    session::{
        NewRefreshToken, RefreshTokenHash, SessionRecord, SessionState, TokenKind, TokenRecord, TokenState,
        fixtures::token,
    },
    user::UserRecord,
};

/// Runs every check in turn on `store`, which must be empty.
pub async fn run_all(store: Arc<dyn Store>) {
    // First: it needs a store whose very first write is a revocation.
    the_first_revocation_of_a_fresh_store_is_after_sequence_0(&*store).await;
    users_have_unique_names(&*store).await;
    sessions_are_found_by_refresh_hash(&*store).await;
    rotation_is_a_conditional_update(store.clone()).await;
    revoking_a_session_counts_once_and_logs_it(&*store).await;
    revoking_a_token_logs_access_tokens_only(&*store).await;
    revoking_a_user_ends_all_its_sessions(&*store).await;
    the_first_signing_key_wins(&*store).await;
    rotation_keeps_one_active_key(&*store).await;
    users_are_updated_listed_and_deleted(&*store).await;
    users_are_renamed_only_onto_a_free_name(&*store).await;
    listings_page_by_cursor_and_filter(&*store).await;
    listings_hold_active_and_ended_records_in_one_id_order(&*store).await;
    expiry_and_purge_walk_the_time_indexes(&*store).await;
    revocations_live_and_go_by_their_stored_bound(&*store).await;
    events_are_kept_in_order_and_trimmed(&*store).await;
    audit_events_outlive_any_amount_of_noise(&*store).await;
    login_failure_counters_are_kept_and_cleared(store.clone()).await;
    login_attempts_admit_no_more_than_the_threshold(store.clone()).await;
    stale_login_counters_are_purged(&*store).await;
    refresh_hashes_are_attached_to_the_current_token(&*store).await;
    refresh_rotates_only_the_current_token_of_a_live_session(&*store).await;
    revoking_a_session_ends_its_active_tokens_only(&*store).await;
    revoking_a_token_ends_that_token_only(&*store).await;
    revoking_a_user_names_each_session_it_ended(&*store).await;
    key_rotation_supersedes_only_the_active_key(&*store).await;
    retiring_a_key_twice_keeps_the_first_time(&*store).await;
    a_revocation_racing_a_rotation_leaves_nothing_active(store.clone()).await;
    service_accounts::run_all(store.clone()).await;
    // Last: it expires and purges whatever the checks above left due.
    counts_equal_a_full_scan_after_random_operations(&*store).await;
}

fn user(name: &str) -> UserRecord {
    let now = Timestamp::now();
    UserRecord {
        id: UserId::generate(),
        username: name.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_string(),
        roles: vec!["reader".to_string()],
        disabled: false,
        created_at: now,
        updated_at: now,
    }
}

struct Fixture {
    session: SessionRecord,
    refresh_hash: RefreshTokenHash,
    access: TokenRecord,
}

async fn open_session(store: &dyn Store, user: &UserRecord) -> Fixture {
    let now = Timestamp::now();
    let session = SessionRecord {
        id: SessionId::generate(),
        user_id: user.id,
        username: user.username.clone(),
        audience: vec!["test".into()],
        created_at: now,
        last_seen_at: now,
        expires_at: now.plus(std::time::Duration::from_secs(3600)),
        client_address: "127.0.0.1:1".into(),
        user_agent: "conformance".into(),
        device_name: "suite".into(),
        state: SessionState::Active,
        revoked_at: None,
        revoke_reason: None,
        current_refresh: TokenId::generate(),
    };
    let refresh = NewRefreshToken::generate().expect("random");
    let access = token(&session, TokenId::generate(), TokenKind::Access);
    let refresh_record = token(&session, session.current_refresh, TokenKind::Refresh);
    store.create_session(&session, refresh.hash, &[refresh_record, access.clone()]).await.expect("create_session");
    Fixture { session, refresh_hash: refresh.hash, access }
}

/// The id, owner and owner's name of each session `outcome` ended.
fn owners_of(outcome: &RevokeOutcome) -> Vec<(SessionId, UserId, String)> {
    outcome.ended_sessions.iter().map(|s| (s.id, s.user_id, s.username.clone())).collect()
}

fn cause(reason: &str) -> RevocationCause {
    let at = Timestamp::now();
    RevocationCause { at, expires_at: at.plus(Duration::from_secs(900)), reason: reason.to_string() }
}

/// Users are found by id and by name; a taken name is refused.
pub async fn users_have_unique_names(store: &dyn Store) {
    let alice = user("conformance-alice");
    store.create_user(&alice).await.expect("create alice");
    let by_name = store.user_by_name("conformance-alice").await.expect("lookup").expect("found by name");
    assert_eq!(by_name.id, alice.id);
    let by_id = store.user_by_id(alice.id).await.expect("lookup").expect("found by id");
    assert_eq!(by_id.username, "conformance-alice");
    assert_eq!(by_id.roles, vec!["reader".to_string()]);
    let twin = user("conformance-alice");
    assert!(matches!(store.create_user(&twin).await, Err(StoreError::UsernameTaken)));
    assert!(store.user_by_id(twin.id).await.expect("lookup").is_none());
    assert!(store.user_by_name("nobody-by-that-name").await.expect("lookup").is_none());
    assert!(store.count_users().await.expect("count") >= 1);
}

/// A session is found by id and by its refresh token's hash.
pub async fn sessions_are_found_by_refresh_hash(store: &dyn Store) {
    let owner = user("conformance-sessions");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let stored = store.session(f.session.id).await.expect("lookup").expect("session stored");
    assert_eq!(stored.user_id, owner.id);
    assert_eq!(stored.state, SessionState::Active);
    let pointer = store.refresh_record(f.refresh_hash).await.expect("lookup").expect("refresh stored");
    assert_eq!(pointer.session_id, f.session.id);
    assert_eq!(pointer.token_id, f.session.current_refresh);
    let access = store.token(f.access.id).await.expect("lookup").expect("token recorded");
    assert_eq!(access.kind, TokenKind::Access);
    let unknown = RefreshTokenHash([7; 32]);
    assert!(store.refresh_record(unknown).await.expect("lookup").is_none());
}

/// Two concurrent rotations of one refresh token: exactly one wins, the
/// other sees the token as reused.
pub async fn rotation_is_a_conditional_update(store: Arc<dyn Store>) {
    let owner = user("conformance-rotation");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(&*store, &owner).await;
    let rotation = |session: &SessionRecord| {
        let next = NewRefreshToken::generate().expect("random");
        Rotation {
            session_id: session.id,
            presented: session.current_refresh,
            next_hash: next.hash,
            next_refresh: token(session, TokenId::generate(), TokenKind::Refresh),
            access: token(session, TokenId::generate(), TokenKind::Access),
            now: Timestamp::now(),
        }
    };
    let (a, b) = (rotation(&f.session), rotation(&f.session));
    let (sa, sb) = (store.clone(), store.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { sa.rotate_refresh(&a).await }),
        tokio::spawn(async move { sb.rotate_refresh(&b).await })
    );
    let outcomes = [ra.expect("task").expect("rotate"), rb.expect("task").expect("rotate")];
    let rotated = outcomes.iter().filter(|o| matches!(o, RotateOutcome::Rotated(_))).count();
    let reused = outcomes.iter().filter(|o| matches!(o, RotateOutcome::Reused)).count();
    assert_eq!((rotated, reused), (1, 1), "outcomes: {outcomes:?}");
    let old = store.token(f.session.current_refresh).await.expect("lookup").expect("old refresh");
    assert_eq!(old.state, TokenState::Rotated);
}

/// Revoking a session marks it and its tokens, logs it once, and a second
/// revocation changes nothing.
pub async fn revoking_a_session_counts_once_and_logs_it(store: &dyn Store) {
    let owner = user("conformance-revoke-session");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let before = Timestamp::now();
    let first = store.revoke_session(f.session.id, &cause("test")).await.expect("revoke").expect("exists");
    assert_eq!((first.sessions, first.tokens), (1, 2));
    assert_eq!(first.entries.len(), 1);
    assert_eq!(first.entries[0].target, RevocationTarget::Session(f.session.id));
    assert_eq!(owners_of(&first), vec![(f.session.id, owner.id, owner.username.clone())], "the ended session's owner");
    let again = store.revoke_session(f.session.id, &cause("again")).await.expect("revoke").expect("exists");
    assert_eq!((again.sessions, again.tokens, again.entries.len()), (0, 0, 0));
    let stored = store.session(f.session.id).await.expect("lookup").expect("session");
    assert_eq!(stored.state, SessionState::Revoked);
    assert_eq!(stored.revoke_reason.as_deref(), Some("test"));
    let access = store.token(f.access.id).await.expect("lookup").expect("token");
    assert_eq!(access.state, TokenState::Revoked);
    let log = store.revocations_live(before).await.expect("log");
    assert!(log.iter().any(|e| e.target == RevocationTarget::Session(f.session.id)));
    assert!(store.revoke_session(SessionId::generate(), &cause("x")).await.expect("revoke").is_none());
    // A revoked session cannot be rotated.
    let next = NewRefreshToken::generate().expect("random");
    let rotation = Rotation {
        session_id: f.session.id,
        presented: f.session.current_refresh,
        next_hash: next.hash,
        next_refresh: token(&f.session, TokenId::generate(), TokenKind::Refresh),
        access: token(&f.session, TokenId::generate(), TokenKind::Access),
        now: Timestamp::now(),
    };
    assert!(matches!(store.rotate_refresh(&rotation).await.expect("rotate"), RotateOutcome::Ended));
}

/// Revoking an access token logs it for the index; a refresh token is
/// marked but needs no log entry; sequences increase.
pub async fn revoking_a_token_logs_access_tokens_only(store: &dyn Store) {
    let owner = user("conformance-revoke-token");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let access = store.revoke_token(f.access.id, &cause("t")).await.expect("revoke").expect("exists");
    assert_eq!((access.sessions, access.tokens), (0, 1));
    assert_eq!(access.entries.len(), 1);
    let refresh = store.revoke_token(f.session.current_refresh, &cause("t")).await.expect("revoke").expect("exists");
    assert_eq!((refresh.tokens, refresh.entries.len()), (1, 0));
    let again = store.revoke_token(f.access.id, &cause("t")).await.expect("revoke").expect("exists");
    assert_eq!(again.tokens, 0);
    let f2 = open_session(store, &owner).await;
    let later = store.revoke_token(f2.access.id, &cause("t")).await.expect("revoke").expect("exists");
    assert!(later.entries[0].sequence > access.entries[0].sequence, "sequences increase");
    // Catching up after a sequence returns what came after it, in order.
    let after = store.revocations_after(access.entries[0].sequence, 10).await.expect("log");
    assert_eq!(after.first(), later.entries.first(), "the next entry, and not the one caught up on");
    assert!(store.revocations_after(later.entries[0].sequence, 10).await.expect("log").is_empty());
    assert!(store.revoke_token(TokenId::generate(), &cause("t")).await.expect("revoke").is_none());
}

/// Revoking a user ends every one of its sessions and no one else's.
pub async fn revoking_a_user_ends_all_its_sessions(store: &dyn Store) {
    let owner = user("conformance-revoke-user");
    let bystander = user("conformance-bystander");
    store.create_user(&owner).await.expect("create user");
    store.create_user(&bystander).await.expect("create user");
    let sessions = [open_session(store, &owner).await, open_session(store, &owner).await];
    let other = open_session(store, &bystander).await;
    let outcome = store.revoke_user_sessions(owner.id, &cause("user")).await.expect("revoke");
    assert_eq!(outcome.sessions, 2);
    for f in &sessions {
        let s = store.session(f.session.id).await.expect("lookup").expect("session");
        assert_eq!(s.state, SessionState::Revoked);
    }
    let s = store.session(other.session.id).await.expect("lookup").expect("session");
    assert_eq!(s.state, SessionState::Active);
    let again = store.revoke_user_sessions(owner.id, &cause("user")).await.expect("revoke");
    assert_eq!((again.sessions, again.tokens), (0, 0));
}

/// Of two candidate first keys, the first stored stays; the second is not added.
pub async fn the_first_signing_key_wins(store: &dyn Store) {
    let existing = store.signing_keys().await.expect("keys");
    let first = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
    let second = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
    let after_first = store.insert_first_signing_key(&first).await.expect("insert");
    let after_second = store.insert_first_signing_key(&second).await.expect("insert");
    assert_eq!(after_first.len(), existing.len().max(1));
    assert_eq!(
        after_first.iter().map(|k| &k.kid).collect::<Vec<_>>(),
        after_second.iter().map(|k| &k.kid).collect::<Vec<_>>()
    );
    assert!(!after_second.iter().any(|k| k.kid == second.kid));
    if existing.is_empty() {
        let stored = &after_first[0];
        assert_eq!(stored.kid, first.kid);
        assert_eq!(stored.private_pkcs8.expose(), first.private_pkcs8.expose(), "private key round-trips");
    }
}

/// Rotation: the new key is active, the old one verifying from then on.
pub async fn rotation_keeps_one_active_key(store: &dyn Store) {
    if store.signing_keys().await.expect("keys").is_empty() {
        let first = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
        store.insert_first_signing_key(&first).await.expect("insert");
    }
    let next = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
    let keys = store.rotate_signing_key(&next).await.expect("rotate");
    let active: Vec<&str> = keys.iter().filter(|k| k.state == KeyState::Active).map(|k| k.kid.as_str()).collect();
    assert_eq!(active, [next.kid.as_str()]);
    assert!(keys.iter().any(|k| k.state == KeyState::Verifying && k.superseded_at == Some(next.created_at)));
    let old = keys.iter().find(|k| k.state == KeyState::Verifying).expect("old key").kid.clone();
    store.retire_signing_key(&old, Timestamp::now()).await.expect("retire");
    let keys = store.signing_keys().await.expect("keys");
    let retired = keys.iter().find(|k| k.kid == old).expect("still listed");
    assert_eq!(retired.state, KeyState::Retired);
    assert!(retired.retired_at.is_some());
}

/// Users change, list in creation order after a cursor, and go away.
pub async fn users_are_updated_listed_and_deleted(store: &dyn Store) {
    let mut a = user("conformance-list-a");
    let b = user("conformance-list-b");
    store.create_user(&a).await.expect("create");
    store.create_user(&b).await.expect("create");
    a.disabled = true;
    let entry = store
        .update_user(&a, Some((RevocationTarget::UserDisabled(a.id), cause("disabled"))))
        .await
        .expect("update")
        .expect("log entry");
    assert_eq!(entry.target, RevocationTarget::UserDisabled(a.id));
    assert!(store.user_by_id(a.id).await.expect("lookup").expect("user").disabled);
    let after_a = store.list_users(Some(a.id), 10).await.expect("list");
    assert_eq!(after_a.first().map(|u| u.id), Some(b.id), "the page after a starts with b");
    assert!(store.delete_user(a.id).await.expect("delete"));
    assert!(!store.delete_user(a.id).await.expect("delete twice"));
    assert!(store.user_by_name("conformance-list-a").await.expect("lookup").is_none());
    // The name is free again.
    store.create_user(&user("conformance-list-a")).await.expect("name reusable");
}

/// A rename moves the name index with the record; a taken name is refused.
pub async fn users_are_renamed_only_onto_a_free_name(store: &dyn Store) {
    let mut legacy = user("conformance-rename-old");
    let holder = user("conformance-rename-taken");
    store.create_user(&legacy).await.expect("create");
    store.create_user(&holder).await.expect("create");
    legacy.username = "conformance-rename-taken".into();
    let refused = store.rename_user(&legacy, "conformance-rename-old").await;
    assert!(matches!(refused, Err(StoreError::UsernameTaken)), "{refused:?}");
    assert_eq!(store.user_by_name("conformance-rename-old").await.expect("lookup").map(|u| u.id), Some(legacy.id));
    legacy.username = "conformance-rename-new".into();
    store.rename_user(&legacy, "conformance-rename-old").await.expect("rename onto a free name");
    let found = store.user_by_name("conformance-rename-new").await.expect("lookup").expect("found by the new name");
    assert_eq!((found.id, found.username.as_str()), (legacy.id, "conformance-rename-new"));
    assert!(store.user_by_name("conformance-rename-old").await.expect("lookup").is_none(), "old name freed");
    store.create_user(&user("conformance-rename-old")).await.expect("the old name is reusable");
    store.rename_user(&legacy, "conformance-rename-new").await.expect("renaming to its own name is a no-op");
}

/// Session and token listings: active-only and inactive, by owner, paged.
pub async fn listings_page_by_cursor_and_filter(store: &dyn Store) {
    let owner = user("conformance-paging");
    store.create_user(&owner).await.expect("create user");
    let mut fixtures = Vec::new();
    for _ in 0..5 {
        fixtures.push(open_session(store, &owner).await);
    }
    store.revoke_session(fixtures[1].session.id, &cause("paging")).await.expect("revoke");
    let query = |after, include_inactive| SessionQuery { user: Some(owner.id), include_inactive, after, limit: 2 };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_sessions(&query(after, true)).await.expect("page");
        after = page.last().map(|s| s.id);
        let done = page.len() < 2;
        all.extend(page.into_iter().map(|s| s.id));
        if done {
            break;
        }
    }
    let expected: Vec<SessionId> = fixtures.iter().map(|f| f.session.id).collect();
    assert_eq!(all, expected, "every session once, oldest first");
    let active = store.list_sessions(&SessionQuery { limit: 10, ..query(None, false) }).await.expect("page");
    assert_eq!(active.len(), 4);
    assert!(active.iter().all(|s| s.id != fixtures[1].session.id));

    let tokens = store
        .list_tokens(&TokenQuery {
            session: Some(fixtures[0].session.id),
            include_inactive: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("tokens");
    assert_eq!(tokens.len(), 2);
    let active_tokens = store
        .list_tokens(&TokenQuery { user: Some(owner.id), limit: 100, ..Default::default() })
        .await
        .expect("tokens");
    assert_eq!(active_tokens.len(), 8, "two per active session");
    let (sessions, tokens) = store.count_active().await.expect("counts");
    assert!(sessions >= 4 && tokens >= 8);
    assert_eq!(store.count_active_sessions_of(owner.id).await.expect("count"), 4);
}

/// Every page of a listing through the cursor: the ids in the order met.
async fn all_session_ids(store: &dyn Store, query: SessionQuery) -> Vec<(SessionId, SessionState)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_sessions(&SessionQuery { after, ..query.clone() }).await.expect("sessions page");
        let done = page.len() < query.limit;
        after = page.last().map(|s| s.id);
        all.extend(page.into_iter().map(|s| (s.id, s.state)));
        if done {
            return all;
        }
    }
}

async fn all_token_ids(store: &dyn Store, query: TokenQuery) -> Vec<(TokenId, TokenState)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_tokens(&TokenQuery { after, ..query.clone() }).await.expect("tokens page");
        let done = page.len() < query.limit;
        after = page.last().map(|t| t.id);
        all.extend(page.into_iter().map(|t| (t.id, t.state)));
        if done {
            return all;
        }
    }
}

/// Active and ended sessions and tokens are listed together in one id
/// order, each once, whether the listing is of everything, of one user or
/// of one session; without `include_inactive`, only what is active. (An
/// engine may keep ended records apart from active ones: its listings
/// still interleave them by id.)
pub async fn listings_hold_active_and_ended_records_in_one_id_order(store: &dyn Store) {
    let owner = user("conformance-interleaved");
    store.create_user(&owner).await.expect("create user");
    let mut fixtures = Vec::new();
    for _ in 0..4 {
        fixtures.push(open_session(store, &owner).await);
    }
    // Ended records between active ones: a revoked session, a rotated
    // refresh token (and the rotation's new tokens), a revoked access token.
    store.revoke_session(fixtures[1].session.id, &cause("interleaved")).await.expect("revoke session");
    let rotation = rotation_at(&fixtures[2].session, fixtures[2].session.current_refresh, Timestamp::now());
    let rotated = store.rotate_refresh(&rotation).await.expect("rotate");
    assert!(matches!(rotated, RotateOutcome::Rotated(_)), "{rotated:?}");
    store.revoke_token(fixtures[3].access.id, &cause("interleaved")).await.expect("revoke token");

    let ours: Vec<SessionId> = fixtures.iter().map(|f| f.session.id).collect();
    for limit in [1, 2, 3, 100] {
        let every = all_session_ids(store, SessionQuery { include_inactive: true, limit, ..Default::default() }).await;
        assert!(every.windows(2).all(|w| w[0].0 < w[1].0), "all sessions, pages of {limit}: one id order, each once");
        let found: Vec<(SessionId, SessionState)> = every.into_iter().filter(|(id, _)| ours.contains(id)).collect();
        let states: Vec<SessionState> = found.iter().map(|(_, state)| *state).collect();
        assert_eq!(found.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ours, "pages of {limit}");
        use SessionState::{Active, Revoked};
        assert_eq!(states, [Active, Revoked, Active, Active], "pages of {limit}");
        let active = all_session_ids(store, SessionQuery { limit, ..Default::default() }).await;
        assert!(active.iter().all(|(_, state)| *state == Active), "active sessions only, pages of {limit}");
        assert!(!active.iter().any(|(id, _)| *id == ours[1]), "the revoked session is not active");
        assert_eq!(active.iter().filter(|(id, _)| ours.contains(id)).count(), 3, "pages of {limit}");
        let mine =
            all_session_ids(store, SessionQuery { user: Some(owner.id), include_inactive: true, limit, after: None })
                .await;
        assert_eq!(mine.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ours, "the user's sessions, pages of {limit}");
    }

    // 4 logins x 2 tokens, 2 more from the rotation.
    let issued = |query: TokenQuery| all_token_ids(store, query);
    for limit in [1, 3, 100] {
        let mine =
            issued(TokenQuery { user: Some(owner.id), include_inactive: true, limit, ..Default::default() }).await;
        assert_eq!(mine.len(), 10, "every token of the user, pages of {limit}");
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "the user's tokens, pages of {limit}: one id order");
        let ended = mine.iter().filter(|(_, state)| *state != TokenState::Active).count();
        // The revoked session's two, the rotated refresh token, the revoked access token.
        assert_eq!(ended, 4, "pages of {limit}: {mine:?}");
        let active = issued(TokenQuery { user: Some(owner.id), limit, ..Default::default() }).await;
        let expected: Vec<(TokenId, TokenState)> =
            mine.iter().filter(|(_, state)| *state == TokenState::Active).copied().collect();
        assert_eq!(active, expected, "the user's active tokens, pages of {limit}");
        let every = issued(TokenQuery { include_inactive: true, limit, ..Default::default() }).await;
        assert!(every.windows(2).all(|w| w[0].0 < w[1].0), "all tokens, pages of {limit}: one id order, each once");
        let found: Vec<(TokenId, TokenState)> =
            every.into_iter().filter(|(id, _)| mine.iter().any(|(m, _)| m == id)).collect();
        assert_eq!(found, mine, "all tokens hold the user's, pages of {limit}");
        let all_active = issued(TokenQuery { limit, ..Default::default() }).await;
        assert!(all_active.iter().all(|(_, state)| *state == TokenState::Active), "pages of {limit}");
        let found: Vec<(TokenId, TokenState)> =
            all_active.into_iter().filter(|(id, _)| mine.iter().any(|(m, _)| m == id)).collect();
        assert_eq!(found, expected, "active tokens hold the user's active ones, pages of {limit}");
        let of_session = issued(TokenQuery {
            session: Some(fixtures[2].session.id),
            user: Some(owner.id),
            include_inactive: true,
            limit,
            ..Default::default()
        })
        .await;
        assert_eq!(of_session.len(), 4, "the rotated session's tokens, pages of {limit}");
    }
    assert_eq!(store.count_active_sessions_of(owner.id).await.expect("count"), 3);
}

/// The sweeper's store side: due records expire once, ended ones purge.
pub async fn expiry_and_purge_walk_the_time_indexes(store: &dyn Store) {
    let owner = user("conformance-expiry");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let later = f.session.expires_at.plus(Duration::from_secs(1));
    let mut expired_sessions = Vec::new();
    loop {
        let batch = store.expire_due(later, 100).await.expect("expire");
        if batch.is_empty() {
            break;
        }
        for item in batch {
            if let Expired::Session(s) = item {
                expired_sessions.push(s.id);
            }
        }
    }
    assert!(expired_sessions.contains(&f.session.id));
    let stored = store.session(f.session.id).await.expect("lookup").expect("session");
    assert_eq!(stored.state, SessionState::Expired);
    // Its tokens expire with it (they were issued to expire no later).
    for id in [f.session.current_refresh, f.access.id] {
        let token = store.token(id).await.expect("lookup").expect("token");
        assert_eq!(token.state, TokenState::Expired, "{:?} token", token.kind);
    }
    assert!(store.expire_due(later, 100).await.expect("expire").is_empty(), "expired once only");

    let purged = store.purge_ended(later.plus(Duration::from_secs(1)), 10_000).await.expect("purge");
    assert!(purged >= 3, "the session and its two tokens, at least ({purged})");
    assert!(store.session(f.session.id).await.expect("lookup").is_none());
    assert!(store.token(f.access.id).await.expect("lookup").is_none());
    assert!(store.refresh_record(f.refresh_hash).await.expect("lookup").is_none(), "look-up entry purged too");
}

/// A revocation-log entry keeps the bound it was written with: it is read
/// back (for the index rebuild) while that bound is ahead, however old the
/// entry, and purged only once the bound has passed, out of sequence order.
/// Sequence 0 means "before every entry" to `revocations_after` (and to a
/// revocation stream's `after_sequence`), so no entry may have it: a fresh
/// store's first revocation would otherwise be missing from every snapshot
/// and from every peer's catch-up.
pub async fn the_first_revocation_of_a_fresh_store_is_after_sequence_0(store: &dyn Store) {
    let now = Timestamp::now();
    let cause =
        RevocationCause { at: now, expires_at: now.plus(Duration::from_secs(3600)), reason: "first write".into() };
    let entry = store.append_revocation(RevocationTarget::Token(TokenId::generate()), &cause).await.expect("append");
    assert!(entry.sequence > 0, "the first revocation got sequence 0");
    let listed = store.revocations_after(0, 10).await.expect("log");
    assert!(listed.iter().any(|e| e.sequence == entry.sequence), "the first revocation is not after 0: {listed:?}");
}

pub async fn revocations_live_and_go_by_their_stored_bound(store: &dyn Store) {
    let owner = user("conformance-revocation-bound");
    store.create_user(&owner).await.expect("create user");
    let now = Timestamp::now();
    let with_bound = |hours: u64| RevocationCause {
        at: now,
        expires_at: now.plus(Duration::from_secs(hours * 3600)),
        reason: "bound".into(),
    };
    let (long, short) = (open_session(store, &owner).await, open_session(store, &owner).await);
    // The long-lived entry comes first: bounds need not follow sequences.
    let long = store.revoke_session(long.session.id, &with_bound(10)).await.expect("revoke").expect("exists");
    let short = store.revoke_session(short.session.id, &with_bound(1)).await.expect("revoke").expect("exists");
    assert_eq!(long.entries[0].expires_at, now.plus(Duration::from_secs(36_000)), "the bound is the cause's");
    let mut disabled = owner.clone();
    disabled.disabled = true;
    let user_entry = store
        .update_user(&disabled, Some((RevocationTarget::UserDisabled(owner.id), with_bound(5))))
        .await
        .expect("update")
        .expect("log entry");
    assert_eq!(user_entry.expires_at, now.plus(Duration::from_secs(18_000)));

    let ours = |entries: &[crate::domain::revocation::RevocationEntry]| {
        let mut found: Vec<u64> = entries
            .iter()
            .filter(|e| {
                [long.entries[0].sequence, short.entries[0].sequence, user_entry.sequence].contains(&e.sequence)
            })
            .map(|e| e.sequence)
            .collect();
        found.sort_unstable();
        found
    };
    let two_hours_on = now.plus(Duration::from_secs(2 * 3600));
    let live = store.revocations_live(two_hours_on).await.expect("live");
    assert_eq!(ours(&live), vec![long.entries[0].sequence, user_entry.sequence], "past its bound, one is not live");
    let read_back = live.iter().find(|e| e.sequence == long.entries[0].sequence).expect("read back");
    assert_eq!(read_back, &long.entries[0], "read back as written, bound included");

    store.purge_revocations(two_hours_on).await.expect("purge");
    let left = store.revocations_after(0, 100_000).await.expect("log");
    assert_eq!(ours(&left), vec![long.entries[0].sequence, user_entry.sequence], "only the passed bound is purged");
    store.purge_revocations(now.plus(Duration::from_secs(11 * 3600))).await.expect("purge");
    assert!(ours(&store.revocations_after(0, 100_000).await.expect("log")).is_empty(), "all bounds passed");
}

/// Events get increasing sequences from 1, replay after a sequence, and trim.
pub async fn events_are_kept_in_order_and_trimmed(store: &dyn Store) {
    let stored = store
        .append_events((0..5).map(|i| EventRecord::new(EventKind::LoginFailed).detail(format!("e{i}"))).collect())
        .await
        .expect("append");
    assert!(stored[0].sequence >= 1);
    assert!(stored.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(store.latest_event_sequence().await.expect("latest"), stored[4].sequence);
    let after = store.events_after(stored[1].sequence, 100).await.expect("replay");
    let details: Vec<&str> = after.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details, ["e2", "e3", "e4"]);
    store.trim_events(2, Timestamp::from_millis(0)).await.expect("trim");
    let kept = store.events_after(0, 100).await.expect("replay");
    let details: Vec<&str> = kept.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details, ["e3", "e4"]);
}

/// Audit events (admin and security) are kept by age, never pushed out by
/// any number of noise events; noise is kept by count; replay interleaves
/// both in sequence order.
pub async fn audit_events_outlive_any_amount_of_noise(store: &dyn Store) {
    let noise = |i: usize| EventRecord::new(EventKind::LoginFailed).detail(format!("noise-{i}"));
    let audit = |detail: &str| EventRecord::new(EventKind::UserCreated).detail(detail);
    let mut old = audit("audit-old");
    old.occurred_at = Timestamp::now().minus(Duration::from_secs(48 * 3600));
    let mut batch = vec![old, noise(0)];
    batch.push(audit("audit-1"));
    batch.extend((1..40).map(noise));
    batch.push(audit("audit-2"));
    batch.extend((40..80).map(noise));
    let stored = store.append_events(batch).await.expect("append");
    let first = stored[0].sequence - 1;
    assert_eq!(store.latest_event_sequence().await.expect("latest"), stored.last().expect("stored").sequence);
    let replayed = store.events_after(first, 1000).await.expect("replay");
    assert_eq!(replayed.len(), stored.len());
    assert!(replayed.windows(2).all(|w| w[0].sequence < w[1].sequence), "one order across classes");
    assert_eq!(replayed[2].detail, "audit-1", "in sequence order");
    let limited = store.events_after(first, 3).await.expect("replay");
    assert_eq!(limited.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(), ["audit-old", "noise-0", "audit-1"]);

    // Keep 5 noise events and audit events of the last day.
    store.trim_events(5, Timestamp::now().minus(Duration::from_secs(24 * 3600))).await.expect("trim");
    let kept = store.events_after(0, 100_000).await.expect("replay");
    let details: Vec<&str> = kept.iter().map(|e| e.detail.as_str()).collect();
    assert!(
        details.contains(&"audit-1") && details.contains(&"audit-2"),
        "audit events survive the noise: {details:?}"
    );
    assert!(!details.contains(&"audit-old"), "audit events older than the retention go");
    let noise_left: Vec<&str> = details.iter().copied().filter(|d| d.starts_with("noise-")).collect();
    assert_eq!(noise_left, ["noise-75", "noise-76", "noise-77", "noise-78", "noise-79"]);
    // Replay after a trimmed-away sequence still starts at the next kept one.
    let resumed = store.events_after(stored[5].sequence, 2).await.expect("replay");
    assert_eq!(resumed.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(), ["audit-2", "noise-75"]);
}

/// Failed-login counters are stored per key, count every one of many
/// concurrent failures, lock once, and are cleared on request.
pub async fn login_failure_counters_are_kept_and_cleared(store: Arc<dyn Store>) {
    let key = "conformance-throttle\u{0}-";
    let policy = LockoutPolicy { threshold: 10, window: Duration::from_secs(60), duration: Duration::from_secs(60) };
    assert!(store.login_failures(key).await.expect("read").is_none());
    let now = Timestamp::now();
    let (record, locked) = store.record_login_failure(key, now, &policy).await.expect("write");
    assert_eq!((record.failures.len(), locked), (1, false));
    assert_eq!(store.login_failures(key).await.expect("read"), Some(record));
    assert!(store.login_failures("another\u{0}-").await.expect("read").is_none());

    // Nine more at once: none lost, so exactly one of them locks.
    let concurrent = (0..9).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.record_login_failure(key, now, &policy).await.expect("write").1 })
    });
    let mut locks = 0;
    for handle in concurrent {
        locks += usize::from(handle.await.expect("task"));
    }
    assert_eq!(locks, 1, "the tenth failure locks, once");
    let stored = store.login_failures(key).await.expect("read").expect("counter");
    assert!(stored.locked_for(now).is_some(), "{stored:?}");

    store.clear_login_failures(key).await.expect("clear");
    assert!(store.login_failures(key).await.expect("read").is_none());
}

/// Attempts begun all at once are admitted up to the threshold and no
/// further, and ending them applies the domain's rule.
pub async fn login_attempts_admit_no_more_than_the_threshold(store: Arc<dyn Store>) {
    use crate::domain::lockout::{AttemptOutcome, AttemptStep};
    let key = "conformance-attempts\u{0}-";
    let policy = LockoutPolicy { threshold: 5, window: Duration::from_secs(60), duration: Duration::from_secs(60) };
    let now = Timestamp::now();
    let begun = (0..12).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.login_attempt(key, AttemptStep::Begin, now, &policy).await.expect("begin") })
    });
    let mut admitted = Vec::new();
    for handle in begun {
        match handle.await.expect("task") {
            AttemptOutcome::Admitted(ticket) => admitted.push(ticket),
            AttemptOutcome::Busy => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(admitted.len(), 5, "exactly the threshold is admitted");
    let mut locks = 0;
    for ticket in admitted {
        let end = AttemptStep::End { ticket, succeeded: false };
        if store.login_attempt(key, end, now, &policy).await.expect("end") == (AttemptOutcome::Ended { locked: true }) {
            locks += 1;
        }
    }
    assert_eq!(locks, 1, "the fifth failure locks, once");
    let locked = store.login_attempt(key, AttemptStep::Begin, now, &policy).await.expect("begin");
    assert!(matches!(locked, AttemptOutcome::Locked(_)), "{locked:?}");
    store.clear_login_failures(key).await.expect("clear");
}

/// Counters with nothing recent and no lock are purged; others stay.
pub async fn stale_login_counters_are_purged(store: &dyn Store) {
    let policy = LockoutPolicy { threshold: 3, window: Duration::from_secs(60), duration: Duration::from_secs(600) };
    let now = Timestamp::now();
    let (old, locked, recent) = ("conformance-old\u{0}-", "conformance-locked\u{0}-", "conformance-recent\u{0}-");
    let long_ago = now.minus(Duration::from_secs(3600));
    store.record_login_failure(old, long_ago, &policy).await.expect("write");
    for _ in 0..3 {
        store.record_login_failure(locked, now.minus(Duration::from_secs(120)), &policy).await.expect("write");
    }
    store.record_login_failure(recent, now, &policy).await.expect("write");
    let purged = store.purge_login_failures(now, policy.window, 1000).await.expect("purge");
    assert!(purged >= 1, "{purged}");
    assert!(store.login_failures(old).await.expect("read").is_none(), "stale: purged");
    assert!(store.login_failures(locked).await.expect("read").is_some(), "locked: kept");
    assert!(store.login_failures(recent).await.expect("read").is_some(), "recent: kept");
    store.clear_login_failures(locked).await.expect("clear");
    store.clear_login_failures(recent).await.expect("clear");
}

/// A rotation of `session`'s refresh token `presented` at `now`, to fresh
/// tokens.
fn rotation_at(session: &SessionRecord, presented: TokenId, now: Timestamp) -> Rotation {
    let next = NewRefreshToken::generate().expect("random");
    Rotation {
        session_id: session.id,
        presented,
        next_hash: next.hash,
        next_refresh: token(session, TokenId::generate(), TokenKind::Refresh),
        access: token(session, TokenId::generate(), TokenKind::Access),
        now,
    }
}

/// The refresh hash goes on the current refresh token's record, and only
/// there: at login on the session's first refresh token, at a rotation on
/// the next one. The old hash still leads to the old token, so that its
/// reuse is recognised.
pub async fn refresh_hashes_are_attached_to_the_current_token(store: &dyn Store) {
    let owner = user("conformance-refresh-hash");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let first = store.token(f.session.current_refresh).await.expect("lookup").expect("refresh token");
    assert_eq!(first.refresh_hash, Some(f.refresh_hash), "the login's refresh token carries its hash");
    let access = store.token(f.access.id).await.expect("lookup").expect("access token");
    assert_eq!(access.refresh_hash, None, "an access token carries none");

    let rotation = rotation_at(&f.session, f.session.current_refresh, Timestamp::now());
    let outcome = store.rotate_refresh(&rotation).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Rotated(_)), "{outcome:?}");
    let next = store.token(rotation.next_refresh.id).await.expect("lookup").expect("next refresh token");
    assert_eq!(next.refresh_hash, Some(rotation.next_hash), "the next refresh token carries the next hash");
    let issued = store.token(rotation.access.id).await.expect("lookup").expect("access token");
    assert_eq!(issued.refresh_hash, None);
    let pointer = store.refresh_record(rotation.next_hash).await.expect("lookup").expect("next hash stored");
    assert_eq!((pointer.token_id, pointer.session_id), (rotation.next_refresh.id, f.session.id));
    let old = store.refresh_record(f.refresh_hash).await.expect("lookup").expect("old hash kept");
    assert_eq!(old.token_id, f.session.current_refresh, "the old hash still names the old token");
}

/// The refresh decision: the current token of a live session rotates (it
/// is marked rotated at the rotation's time, the new tokens are recorded,
/// the session's current token and last-seen time move); an older token
/// of a live session is reused; an unknown, revoked or expired session, or
/// a revoked current token, has ended. A refused rotation writes nothing.
pub async fn refresh_rotates_only_the_current_token_of_a_live_session(store: &dyn Store) {
    let owner = user("conformance-refresh-decision");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let now = Timestamp::now();
    let first = rotation_at(&f.session, f.session.current_refresh, now);
    let RotateOutcome::Rotated(session) = store.rotate_refresh(&first).await.expect("rotate") else {
        panic!("the current token of a live session rotates");
    };
    assert_eq!((session.current_refresh, session.last_seen_at), (first.next_refresh.id, now));
    assert_eq!(session.state, SessionState::Active);
    let stored = store.session(f.session.id).await.expect("lookup").expect("session");
    assert_eq!((stored.current_refresh, stored.last_seen_at), (first.next_refresh.id, now), "as returned");
    let old = store.token(f.session.current_refresh).await.expect("lookup").expect("old refresh");
    assert_eq!((old.state, old.revoked_at), (TokenState::Rotated, Some(now)));
    for id in [first.next_refresh.id, first.access.id] {
        let new = store.token(id).await.expect("lookup").expect("new token recorded");
        assert_eq!(new.state, TokenState::Active);
    }

    let replay = rotation_at(&f.session, f.session.current_refresh, now);
    let outcome = store.rotate_refresh(&replay).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Reused), "an older token is reused: {outcome:?}");
    for id in [replay.next_refresh.id, replay.access.id] {
        assert!(store.token(id).await.expect("lookup").is_none(), "a refused rotation records no token");
    }
    let unchanged = store.session(f.session.id).await.expect("lookup").expect("session");
    assert_eq!(unchanged.current_refresh, first.next_refresh.id, "a refused rotation leaves the session");

    let revoked_token = open_session(store, &owner).await;
    store.revoke_token(revoked_token.session.current_refresh, &cause("t")).await.expect("revoke").expect("exists");
    let rotation = rotation_at(&revoked_token.session, revoked_token.session.current_refresh, now);
    let outcome = store.rotate_refresh(&rotation).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Ended), "a revoked current token has ended: {outcome:?}");
    assert!(store.token(rotation.access.id).await.expect("lookup").is_none(), "nothing recorded");
    let session = store.session(revoked_token.session.id).await.expect("lookup").expect("session");
    assert_eq!(session.current_refresh, revoked_token.session.current_refresh, "the session is left as it was");

    let expired = open_session(store, &owner).await;
    let at_expiry = rotation_at(&expired.session, expired.session.current_refresh, expired.session.expires_at);
    let outcome = store.rotate_refresh(&at_expiry).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Ended), "a session at its expiry has ended: {outcome:?}");
    let current = store.token(expired.session.current_refresh).await.expect("lookup").expect("refresh");
    assert_eq!(current.state, TokenState::Active, "and its token is not marked rotated");

    store.revoke_session(f.session.id, &cause("ended")).await.expect("revoke").expect("exists");
    let old_of_revoked = rotation_at(&f.session, f.session.current_refresh, now);
    let outcome = store.rotate_refresh(&old_of_revoked).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Ended), "an old token of a revoked session has ended: {outcome:?}");

    let mut unknown = f.session.clone();
    unknown.id = SessionId::generate();
    let outcome = store.rotate_refresh(&rotation_at(&unknown, unknown.current_refresh, now)).await.expect("rotate");
    assert!(matches!(outcome, RotateOutcome::Ended), "an unknown session has ended: {outcome:?}");
}

/// What revoking a session ends: the session (revoked at the cause's time,
/// with its reason) and every token of it still active, revoked at that
/// time; a token already rotated keeps its state and time. One log entry,
/// with the cause's time and bound; the outcome names the session ended,
/// with its owner.
pub async fn revoking_a_session_ends_its_active_tokens_only(store: &dyn Store) {
    let owner = user("conformance-revoke-what");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let rotated_at = Timestamp::now();
    let rotation = rotation_at(&f.session, f.session.current_refresh, rotated_at);
    store.rotate_refresh(&rotation).await.expect("rotate");
    let c = RevocationCause { reason: "what it ends".into(), ..cause("") };
    let outcome = store.revoke_session(f.session.id, &c).await.expect("revoke").expect("exists");
    assert_eq!((outcome.sessions, outcome.tokens), (1, 3), "the next refresh token and both access tokens");
    let entries: Vec<_> = outcome.entries.iter().map(|e| (e.target, e.at, e.expires_at)).collect();
    assert_eq!(entries, [(RevocationTarget::Session(f.session.id), c.at, c.expires_at)]);
    assert_eq!(owners_of(&outcome), vec![(f.session.id, owner.id, owner.username.clone())]);
    let session = store.session(f.session.id).await.expect("lookup").expect("session");
    assert_eq!((session.state, session.revoked_at), (SessionState::Revoked, Some(c.at)));
    assert_eq!(session.revoke_reason.as_deref(), Some("what it ends"));
    let old = store.token(f.session.current_refresh).await.expect("lookup").expect("old refresh");
    assert_eq!((old.state, old.revoked_at), (TokenState::Rotated, Some(rotated_at)), "a rotated token stays so");
    for id in [f.access.id, rotation.next_refresh.id, rotation.access.id] {
        let t = store.token(id).await.expect("lookup").expect("token");
        assert_eq!((t.state, t.revoked_at), (TokenState::Revoked, Some(c.at)));
    }
}

/// What revoking a token ends: that token only, its session stays active.
/// An access token is logged for the index with the cause's time and
/// bound; the outcome names no session.
pub async fn revoking_a_token_ends_that_token_only(store: &dyn Store) {
    let owner = user("conformance-revoke-one-token");
    store.create_user(&owner).await.expect("create user");
    let f = open_session(store, &owner).await;
    let c = cause("one token");
    let outcome = store.revoke_token(f.access.id, &c).await.expect("revoke").expect("exists");
    let entries: Vec<_> = outcome.entries.iter().map(|e| (e.target, e.at, e.expires_at)).collect();
    assert_eq!(entries, [(RevocationTarget::Token(f.access.id), c.at, c.expires_at)]);
    assert!(outcome.ended_sessions.is_empty(), "no session ended");
    let access = store.token(f.access.id).await.expect("lookup").expect("token");
    assert_eq!((access.state, access.revoked_at), (TokenState::Revoked, Some(c.at)));
    let session = store.session(f.session.id).await.expect("lookup").expect("session");
    assert_eq!(session.state, SessionState::Active, "the session stays active");
    let refresh = store.token(f.session.current_refresh).await.expect("lookup").expect("refresh");
    assert_eq!(refresh.state, TokenState::Active, "and its other tokens too");
}

/// Revoking a user's sessions logs one entry per session it ended and
/// names each, with its owner; sessions already ended are not named again.
pub async fn revoking_a_user_names_each_session_it_ended(store: &dyn Store) {
    let owner = user("conformance-revoke-user-named");
    store.create_user(&owner).await.expect("create user");
    let ended_before = open_session(store, &owner).await;
    store.revoke_session(ended_before.session.id, &cause("before")).await.expect("revoke").expect("exists");
    let sessions = [open_session(store, &owner).await, open_session(store, &owner).await];
    let outcome = store.revoke_user_sessions(owner.id, &cause("user")).await.expect("revoke");
    let mut logged: Vec<_> = outcome.entries.iter().map(|e| e.target).collect();
    let mut expected: Vec<_> = sessions.iter().map(|f| RevocationTarget::Session(f.session.id)).collect();
    logged.sort_by_key(|t| format!("{t:?}"));
    expected.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(logged, expected);
    let mut named = owners_of(&outcome);
    named.sort_by_key(|(s, _, _)| *s);
    let mut owners: Vec<_> = sessions.iter().map(|f| (f.session.id, owner.id, owner.username.clone())).collect();
    owners.sort_by_key(|(s, _, _)| *s);
    assert_eq!(named, owners);
}

/// Key rotation: the active key becomes verifying as of the new key's
/// creation; keys already verifying or retired keep their state and times.
pub async fn key_rotation_supersedes_only_the_active_key(store: &dyn Store) {
    let base = Timestamp::now().plus(Duration::from_secs(60));
    let at = |minutes: u64| base.plus(Duration::from_secs(minutes * 60));
    let rotate = |created: Timestamp| async move {
        let key = SigningKeyRecord::generate_ed25519(created).expect("key");
        store.rotate_signing_key(&key).await.expect("rotate");
        key.kid
    };
    let (a, b) = (rotate(at(1)).await, rotate(at(2)).await);
    store.retire_signing_key(&a, at(3)).await.expect("retire");
    let c = rotate(at(4)).await;
    let keys = store.signing_keys().await.expect("keys");
    let find = |kid: &str| keys.iter().find(|k| k.kid == kid).expect("listed").clone();
    let (a, b, c) = (find(&a), find(&b), find(&c));
    assert_eq!(
        (a.state, a.superseded_at, a.retired_at),
        (KeyState::Retired, Some(at(2)), Some(at(3))),
        "retired stays"
    );
    assert_eq!((b.state, b.superseded_at, b.retired_at), (KeyState::Verifying, Some(at(4)), None));
    assert_eq!((c.state, c.superseded_at), (KeyState::Active, None));
    assert_eq!(keys.iter().filter(|k| k.state == KeyState::Active).count(), 1, "one active key");
}

/// A key is retired once: retiring it again keeps the first time, the
/// truthful record of when it stopped verifying. An unknown kid changes
/// nothing.
pub async fn retiring_a_key_twice_keeps_the_first_time(store: &dyn Store) {
    let created = Timestamp::now().plus(Duration::from_secs(3600));
    let next = SigningKeyRecord::generate_ed25519(created).expect("key");
    let keys = store.rotate_signing_key(&next).await.expect("rotate");
    let old = keys.iter().find(|k| k.state == KeyState::Verifying).expect("a verifying key").kid.clone();
    let first = created.plus(Duration::from_secs(60));
    store.retire_signing_key(&old, first).await.expect("retire");
    store.retire_signing_key(&old, first.plus(Duration::from_secs(60))).await.expect("retire again");
    let keys = store.signing_keys().await.expect("keys");
    let retired = keys.iter().find(|k| k.kid == old).expect("still listed");
    assert_eq!((retired.state, retired.retired_at), (KeyState::Retired, Some(first)), "the first retirement stands");
    store.retire_signing_key("no-such-key", first).await.expect("retire unknown");
    assert_eq!(store.signing_keys().await.expect("keys").len(), keys.len(), "an unknown kid adds nothing");
}

/// A revocation racing a rotation of the same session: both calls succeed
/// (no lock-order deadlock), and whichever commits first, the session ends
/// revoked with none of its tokens left active.
pub async fn a_revocation_racing_a_rotation_leaves_nothing_active(store: Arc<dyn Store>) {
    let owner = user("conformance-revoke-race");
    store.create_user(&owner).await.expect("create user");
    for _ in 0..5 {
        let f = open_session(&*store, &owner).await;
        let rotation = rotation_at(&f.session, f.session.current_refresh, Timestamp::now());
        let (rotating, revoking) = (store.clone(), store.clone());
        let (rotated, revoked) = tokio::join!(
            tokio::spawn(async move { rotating.rotate_refresh(&rotation).await }),
            tokio::spawn(async move { revoking.revoke_session(f.session.id, &cause("race")).await })
        );
        let rotated = rotated.expect("task").expect("rotate");
        assert!(matches!(rotated, RotateOutcome::Rotated(_) | RotateOutcome::Ended), "{rotated:?}");
        assert_eq!(revoked.expect("task").expect("revoke").expect("exists").sessions, 1);
        let session = store.session(f.session.id).await.expect("lookup").expect("session");
        assert_eq!(session.state, SessionState::Revoked);
        let query = TokenQuery { session: Some(f.session.id), include_inactive: true, limit: 10, ..Default::default() };
        let tokens = store.list_tokens(&query).await.expect("tokens");
        assert!(tokens.iter().all(|t| t.state != TokenState::Active), "{tokens:?}");
    }
}

/// The counts `GetStats` reports (users, active sessions, active tokens)
/// equal what a full walk of the listings finds, after every step of a
/// long run of random writes: logins, rotations, reuse, revocations of
/// sessions, tokens and users, expiry, purges, users created and deleted.
pub async fn counts_equal_a_full_scan_after_random_operations(store: &dyn Store) {
    // A fixed seed: a failure names the step, and the step replays.
    let mut random = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |bound: usize| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        (random % bound as u64) as usize
    };
    let mut users = Vec::new();
    for i in 0..3 {
        let owner = user(&format!("conformance-counts-{i}"));
        store.create_user(&owner).await.expect("create user");
        users.push(owner);
    }
    let mut sessions: Vec<Fixture> = Vec::new();
    assert_counts_match_a_scan(store, "start").await;
    for step in 0..200 {
        let now = Timestamp::now();
        let op = next(9);
        match op {
            0..=2 => sessions.push(open_session(store, &users[next(users.len())]).await),
            3 if !sessions.is_empty() => {
                let f = &sessions[next(sessions.len())];
                let current = store.session(f.session.id).await.expect("session");
                // Sometimes the current token, sometimes a stale one (reuse).
                let presented = match current {
                    Some(s) if next(2) == 0 => s.current_refresh,
                    _ => f.session.current_refresh,
                };
                store.rotate_refresh(&rotation_at(&f.session, presented, now)).await.expect("rotate");
            }
            4 if !sessions.is_empty() => {
                let f = &sessions[next(sessions.len())];
                store.revoke_session(f.session.id, &cause("counts")).await.expect("revoke session");
            }
            5 if !sessions.is_empty() => {
                let f = &sessions[next(sessions.len())];
                store.revoke_token(f.access.id, &cause("counts")).await.expect("revoke token");
            }
            6 => {
                store.revoke_user_sessions(users[next(users.len())].id, &cause("counts")).await.expect("revoke user");
            }
            7 => {
                let extra = user(&format!("conformance-counts-extra-{step}"));
                store.create_user(&extra).await.expect("create user");
                if next(2) == 0 {
                    assert!(store.delete_user(extra.id).await.expect("delete"), "deleted");
                }
                // Deleting twice (or a stranger) changes nothing.
                assert!(!store.delete_user(UserId::generate()).await.expect("delete"), "nothing to delete");
            }
            _ => {
                // Everything due a while from now expires; what ended goes.
                let later = now.plus(Duration::from_secs(2 * 3600));
                while !store.expire_due(later, 1 + next(50)).await.expect("expire").is_empty() {}
                store.purge_ended(later.plus(Duration::from_secs(1)), 1 + next(20)).await.expect("purge");
                sessions.retain(|_| next(3) != 0);
            }
        }
        assert_counts_match_a_scan(store, &format!("step {step} (operation {op})")).await;
    }
}

/// Counts every user, active session and active token by walking the
/// listings page by page, and compares with the store's counts.
async fn assert_counts_match_a_scan(store: &dyn Store, when: &str) {
    let mut users = 0;
    let mut after = None;
    loop {
        let page = store.list_users(after, 100).await.expect("users page");
        users += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == 100 => after = Some(last.id),
            _ => break,
        }
    }
    let mut sessions = 0;
    let mut after = None;
    loop {
        let page = store
            .list_sessions(&SessionQuery { user: None, include_inactive: false, after, limit: 100 })
            .await
            .expect("sessions page");
        sessions += page.iter().filter(|s| s.state == SessionState::Active).count() as u64;
        match page.last() {
            Some(last) if page.len() == 100 => after = Some(last.id),
            _ => break,
        }
    }
    let mut tokens = 0;
    let mut after = None;
    loop {
        let page =
            store.list_tokens(&TokenQuery { after, limit: 100, ..Default::default() }).await.expect("tokens page");
        tokens += page.iter().filter(|t| t.state == TokenState::Active).count() as u64;
        match page.last() {
            Some(last) if page.len() == 100 => after = Some(last.id),
            _ => break,
        }
    }
    assert_eq!(store.count_users().await.expect("count users"), users, "users counted at {when}");
    assert_eq!(store.count_active().await.expect("count active"), (sessions, tokens), "active counted at {when}");
}
