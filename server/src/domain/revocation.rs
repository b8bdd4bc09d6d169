//! The in-memory revocation index consulted by every `Validate`.
//!
//! A revoked access token only matters until its `exp`, so an entry is kept
//! only while a token issued before the revocation could still be live:
//! `revoked_at + access-token TTL + leeway`, with the TTL and leeway in
//! force when the revocation was made. That bound is decided once, here,
//! and stored with the entry ([`RevocationEntry::expires_at`]): a restart
//! with a shorter TTL must not forget a revocation whose tokens were minted
//! under the longer one. Memory grows with recent revocations, not with the
//! number of sessions, and `Validate` never touches the store. The index is
//! rebuilt at start from every log entry whose bound is still ahead.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigil_token_rules::RevocationMatches;

use super::{
    Identity, ServiceAccountId, SessionId, Timestamp, TokenId, UserId, ids::IdMap, port::RevocationCause,
    token::ValidationFailure, token::VerifiedToken,
};

/// What a revocation log entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RevocationTarget {
    /// One access token, by `jti`.
    Token(TokenId),
    /// A session and every token issued under it.
    Session(SessionId),
    /// A user was disabled: all its tokens fail.
    UserDisabled(UserId),
    /// A user was enabled again (its old sessions stay revoked).
    UserEnabled(UserId),
    /// Every access token of the user minted before the entry's `at` fails:
    /// its roles changed, so tokens carrying the old ones must not speak
    /// for it any more. Its sessions live on and mint tokens with the new
    /// roles at their next refresh.
    UserNotBefore(UserId),
    /// Every session of the user created before the entry's `at` is ended,
    /// with its tokens: "log out everywhere", disabling, deleting and a
    /// password reset. A bound, not a list, so that a session whose login
    /// was still in flight when the list of sessions was read is ended too.
    UserSessionsBefore(UserId),
    /// Every access token of the service account minted before the entry's
    /// `at` fails: its tokens were revoked, it was disabled or deleted, or
    /// its roles, audiences or scopes changed.
    ServiceAccountNotBefore(ServiceAccountId),
}

/// One durable revocation, in the order the store committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredRevocationEntry")]
pub struct RevocationEntry {
    /// Position in the store's revocation log (increasing).
    pub sequence: u64,
    /// What was revoked.
    pub target: RevocationTarget,
    /// When.
    pub at: Timestamp,
    /// Until when it matters: no token it covers can be accepted after
    /// this. Decided when the revocation is made (see
    /// [`RevocationIndex::expiry_of`]), whatever the configuration says later.
    pub expires_at: Timestamp,
}

/// How long an entry written before entries carried their bound is kept.
///
/// Such an entry cannot know the TTL that minted the tokens it covers, and
/// the store cannot know today's configuration either. 30 days is the
/// default session lifetime, and no access token outlives its session, so
/// under default session settings this covers every token an old entry can
/// concern, whatever access-token TTL was in force (the old rule kept
/// entries for the TTL, at most the session lifetime). The cost is a one-time
/// one: the pre-upgrade entries stay in memory for a month.
pub const LEGACY_ENTRY_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// A log entry as stored, with or without its bound.
#[derive(Deserialize)]
struct StoredRevocationEntry {
    sequence: u64,
    target: RevocationTarget,
    at: Timestamp,
    #[serde(default)]
    expires_at: Option<Timestamp>,
}

impl From<StoredRevocationEntry> for RevocationEntry {
    fn from(stored: StoredRevocationEntry) -> Self {
        let expires_at = stored.expires_at.unwrap_or_else(|| stored.at.plus(LEGACY_ENTRY_LIFETIME));
        Self { sequence: stored.sequence, target: stored.target, at: stored.at, expires_at }
    }
}

/// Recent revocations, each kept until the tokens it could affect expire.
pub struct RevocationIndex {
    tokens: IdMap<TokenId, Timestamp>,
    sessions: IdMap<SessionId, Timestamp>,
    disabled_users: IdMap<UserId, Timestamp>,
    /// Per user: tokens minted before the first time fail; kept until the second.
    not_before: IdMap<UserId, (Timestamp, Timestamp)>,
    /// Per user: sessions created before the first time are ended; kept until the second.
    sessions_before: IdMap<UserId, (Timestamp, Timestamp)>,
    /// Per service account: tokens minted before the first time fail; kept until the second.
    service_not_before: IdMap<ServiceAccountId, (Timestamp, Timestamp)>,
    retention: Duration,
}

impl RevocationIndex {
    /// An empty index whose new revocations matter for `retention` (the
    /// access-token TTL plus the clock leeway in force).
    pub fn new(retention: Duration) -> Self {
        Self {
            tokens: IdMap::default(),
            sessions: IdMap::default(),
            disabled_users: IdMap::default(),
            not_before: IdMap::default(),
            sessions_before: IdMap::default(),
            service_not_before: IdMap::default(),
            retention,
        }
    }

    /// How long a revocation made now matters.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The bound of a revocation of any target made at `at`: every token it
    /// covers was issued before `at` with the TTL in force, so none is
    /// accepted after `at + TTL + leeway`.
    pub fn expiry(&self, at: Timestamp) -> Timestamp {
        at.plus(self.retention)
    }

    /// The bound to store with a revocation of `target` made at `at`:
    /// [`RevocationIndex::expiry`], except that re-enabling a user must
    /// outlive the disabling it cancels, or a rebuild after the enabling
    /// entry went would find the user disabled again.
    pub fn expiry_of(&self, target: &RevocationTarget, at: Timestamp) -> Timestamp {
        let bound = self.expiry(at);
        match target {
            RevocationTarget::UserEnabled(id) => self.disabled_users.get(id).map_or(bound, |d| bound.max(*d)),
            _ => bound,
        }
    }

    /// Applies one committed revocation, kept until its stored bound.
    pub fn apply(&self, entry: &RevocationEntry) {
        let keep_until = entry.expires_at;
        // An entry past its bound covers no token any more (a catch-up can
        // read such entries back); re-enabling is applied all the same.
        if keep_until <= Timestamp::now() && !matches!(entry.target, RevocationTarget::UserEnabled(_)) {
            return;
        }
        match entry.target {
            RevocationTarget::Token(id) => {
                self.tokens.insert(id, keep_until);
            }
            RevocationTarget::Session(id) => {
                self.sessions.insert(id, keep_until);
            }
            RevocationTarget::UserDisabled(id) => {
                self.disabled_users.insert(id, keep_until);
            }
            RevocationTarget::UserEnabled(id) => {
                self.disabled_users.remove(&id);
            }
            RevocationTarget::UserNotBefore(id) => raise_bound(&self.not_before, id, entry.at, keep_until),
            RevocationTarget::UserSessionsBefore(id) => raise_bound(&self.sessions_before, id, entry.at, keep_until),
            RevocationTarget::ServiceAccountNotBefore(id) => {
                raise_bound(&self.service_not_before, id, entry.at, keep_until)
            }
        }
    }

    /// Why `token` must be refused, if a revocation applies to it.
    pub fn check(&self, token: &VerifiedToken) -> Option<ValidationFailure> {
        if let Some(client) = token.client_id {
            return self.check_service(token, client);
        }
        RevocationMatches {
            user_disabled: self.disabled_users.contains_key(&token.user_id),
            session_revoked: self.sessions.contains_key(&token.session_id),
            token_revoked: self.tokens.contains_key(&token.token_id),
            session_before_bound: self.ends_session(token.user_id, token.session_id),
            minted_before_bound: self
                .not_before
                .get(&token.user_id)
                .is_some_and(|bound| token.minted_at().is_none_or(|minted| minted < bound.0)),
        }
        .verdict()
    }

    /// Why a service account's token must be refused: revoked by its id,
    /// or minted before its account's not-before bound. (It has no user
    /// and no session, so no user or session entry can cover it.)
    fn check_service(&self, token: &VerifiedToken, client: ServiceAccountId) -> Option<ValidationFailure> {
        RevocationMatches {
            token_revoked: self.tokens.contains_key(&token.token_id),
            minted_before_bound: self
                .service_not_before
                .get(&client)
                .is_some_and(|bound| token.minted_at().is_none_or(|minted| minted < bound.0)),
            ..RevocationMatches::default()
        }
        .verdict()
    }

    /// Whether token `id` is revoked by its own id.
    pub fn covers_token(&self, id: TokenId) -> bool {
        self.tokens.contains_key(&id)
    }

    /// Whether a per-user bound ends `session` of `user` (the time inside
    /// its UUIDv7 id is when it was created).
    pub fn ends_session(&self, user: UserId, session: SessionId) -> bool {
        self.sessions_before
            .get(&user)
            .is_some_and(|bound| session.created_at().is_none_or(|created| created < bound.0))
    }

    /// Drops entries no live token can be affected by any more.
    pub fn purge(&self, now: Timestamp) -> usize {
        let before = self.len();
        self.tokens.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
        self.disabled_users.retain(|_, until| *until > now);
        self.not_before.retain(|_, (_, until)| *until > now);
        self.sessions_before.retain(|_, (_, until)| *until > now);
        self.service_not_before.retain(|_, (_, until)| *until > now);
        before - self.len()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.tokens.len()
            + self.sessions.len()
            + self.disabled_users.len()
            + self.not_before.len()
            + self.sessions_before.len()
            + self.service_not_before.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Raises a per-user bound: entries may be replayed out of order, and the
/// latest bound (and the longest keep) wins.
fn raise_bound<K: std::hash::Hash + Eq>(
    bounds: &IdMap<K, (Timestamp, Timestamp)>,
    key: K,
    at: Timestamp,
    keep_until: Timestamp,
) {
    let mut bound = bounds.entry(key).or_insert((at, keep_until));
    bound.0 = bound.0.max(at);
    bound.1 = bound.1.max(keep_until);
}

impl Identity {
    /// The cause of a revocation of sessions and tokens made at `at`, with
    /// the bound its log entries are stored with.
    pub(super) fn revocation_cause(&self, at: Timestamp, reason: &str) -> RevocationCause {
        RevocationCause { at, expires_at: self.revocations.expiry(at), reason: reason.to_string() }
    }

    /// The cause of a revocation of `target` made at `at`, with its bound.
    pub(super) fn revocation_cause_of(
        &self,
        target: &RevocationTarget,
        at: Timestamp,
        reason: &str,
    ) -> RevocationCause {
        RevocationCause { at, expires_at: self.revocations.expiry_of(target, at), reason: reason.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::AccessClaims;

    fn token(user_id: UserId, session_id: SessionId, token_id: TokenId) -> VerifiedToken {
        let claims = AccessClaims {
            iss: "t".into(),
            sub: user_id.to_string(),
            aud: vec![],
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: token_id.to_string(),
            sid: session_id.to_string(),
            username: "u".into(),
            roles: vec![],
            client_id: None,
            scope: None,
        };
        VerifiedToken {
            claims,
            user_id,
            session_id,
            token_id,
            client_id: None,
            kid: "k".into(),
            ring_generation: 0,
            valid_answer: Default::default(),
        }
    }

    #[test]
    fn each_target_refuses_the_matching_tokens_only() {
        let index = RevocationIndex::new(Duration::from_secs(900));
        let (user, session, tok) = (UserId::generate(), SessionId::generate(), TokenId::generate());
        let victim = token(user, session, tok);
        let bystander = token(UserId::generate(), SessionId::generate(), TokenId::generate());
        assert_eq!(index.check(&victim), None);

        let at = Timestamp::now();
        let entry = |sequence, target| RevocationEntry { sequence, target, at, expires_at: index.expiry(at) };
        index.apply(&entry(1, RevocationTarget::Token(tok)));
        assert_eq!(index.check(&victim), Some(ValidationFailure::TokenRevoked));
        index.apply(&entry(2, RevocationTarget::Session(session)));
        assert_eq!(index.check(&victim), Some(ValidationFailure::SessionRevoked));
        index.apply(&entry(3, RevocationTarget::UserDisabled(user)));
        assert_eq!(index.check(&victim), Some(ValidationFailure::UserDisabled));
        index.apply(&entry(4, RevocationTarget::UserEnabled(user)));
        assert_eq!(index.check(&victim), Some(ValidationFailure::SessionRevoked));
        assert_eq!(index.check(&bystander), None);
    }

    /// Two fresh tokens of `user` (fresh session and token ids, whose
    /// UUIDv7 times the per-user bounds compare) and a moment between them.
    fn minted_around_a_moment(user: UserId) -> (VerifiedToken, Timestamp, VerifiedToken) {
        let older = token(user, SessionId::generate(), TokenId::generate());
        std::thread::sleep(Duration::from_millis(3));
        let at = Timestamp::now();
        std::thread::sleep(Duration::from_millis(3));
        (older, at, token(user, SessionId::generate(), TokenId::generate()))
    }

    #[test]
    fn a_not_before_refuses_the_users_older_tokens_only() {
        let index = RevocationIndex::new(Duration::from_secs(900));
        let user = UserId::generate();
        let (older, at, newer) = minted_around_a_moment(user);
        let someone_else = token(UserId::generate(), SessionId::generate(), TokenId::generate());
        let target = RevocationTarget::UserNotBefore(user);
        index.apply(&RevocationEntry { sequence: 1, target, at, expires_at: index.expiry(at) });
        assert_eq!(index.check(&older), Some(ValidationFailure::TokenRevoked));
        assert_eq!(index.check(&newer), None);
        assert_eq!(index.check(&someone_else), None);
        // An older bound replayed later does not lower it.
        let earlier = at.minus(Duration::from_secs(60));
        index.apply(&RevocationEntry { sequence: 0, target, at: earlier, expires_at: index.expiry(earlier) });
        assert_eq!(index.check(&older), Some(ValidationFailure::TokenRevoked));
    }

    #[test]
    fn a_sessions_bound_ends_the_users_older_sessions_only() {
        let index = RevocationIndex::new(Duration::from_secs(900));
        let user = UserId::generate();
        let (older, at, newer) = minted_around_a_moment(user);
        let target = RevocationTarget::UserSessionsBefore(user);
        index.apply(&RevocationEntry { sequence: 1, target, at, expires_at: index.expiry(at) });
        assert_eq!(index.check(&older), Some(ValidationFailure::SessionRevoked));
        assert!(index.ends_session(user, older.session_id));
        assert_eq!(index.check(&newer), None);
        assert!(!index.ends_session(UserId::generate(), older.session_id), "another user's bound");
    }

    #[test]
    fn entries_are_purged_once_no_affected_token_can_be_live() {
        let index = RevocationIndex::new(Duration::from_secs(60));
        let at = Timestamp::now();
        let target = RevocationTarget::Token(TokenId::generate());
        index.apply(&RevocationEntry { sequence: 1, target, at, expires_at: index.expiry(at) });
        assert_eq!(index.purge(at.plus(Duration::from_secs(59))), 0);
        assert_eq!(index.purge(at.plus(Duration::from_secs(61))), 1);
        assert!(index.is_empty());
    }

    #[test]
    fn an_entry_is_kept_by_its_stored_bound_not_by_todays_ttl() {
        // Made under a one-hour TTL, applied by an index whose TTL is a second.
        let index = RevocationIndex::new(Duration::from_secs(1));
        let at = Timestamp::now();
        let target = RevocationTarget::Session(SessionId::generate());
        index.apply(&RevocationEntry { sequence: 1, target, at, expires_at: at.plus(Duration::from_secs(3600)) });
        assert_eq!(index.purge(at.plus(Duration::from_secs(60))), 0);
        assert_eq!(index.purge(at.plus(Duration::from_secs(3601))), 1);
    }

    #[test]
    fn re_enabling_outlives_the_disabling_it_cancels() {
        let user = UserId::generate();
        let at = Timestamp::now();
        let long_ago = at.plus(Duration::from_secs(3600));
        let index = RevocationIndex::new(Duration::from_secs(1));
        let disabled =
            RevocationEntry { sequence: 1, target: RevocationTarget::UserDisabled(user), at, expires_at: long_ago };
        index.apply(&disabled);
        assert_eq!(index.expiry_of(&RevocationTarget::UserEnabled(user), at), long_ago);
        let other = RevocationTarget::UserEnabled(UserId::generate());
        assert_eq!(index.expiry_of(&other, at), at.plus(Duration::from_secs(1)));
    }

    #[test]
    fn entries_stored_without_a_bound_get_the_legacy_one() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let old = format!(
            r#"{{"sequence":7,"target":{{"kind":"token","id":"{}"}},"at":{}}}"#,
            TokenId::generate(),
            at.as_millis()
        );
        let entry: RevocationEntry = serde_json::from_str(&old).expect("old entries decode");
        assert_eq!(entry.expires_at, at.plus(LEGACY_ENTRY_LIFETIME));
        let again: RevocationEntry =
            serde_json::from_str(&serde_json::to_string(&entry).expect("encode")).expect("decode");
        assert_eq!(again, entry, "a bound, once stored, is read back as stored");
    }
}
