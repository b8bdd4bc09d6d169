//! The persistence port: the capability traits the domain core depends on
//! and the store engines (sled, PostgreSQL) implement, with the values
//! that cross it.
//!
//! The port belongs to the domain (dependencies point from the engines to
//! the domain, never back): the traits speak of users, sessions, token
//! records, signing keys, the revocation log, audit events and login
//! counters, and know nothing of JWTs, gRPC or any engine. Every method
//! that writes returns only once the write is durable, so the domain may
//! acknowledge it. [`Store`] is everything the domain needs from one engine.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    SessionId, Timestamp, TokenId, UserId,
    event::EventRecord,
    keys::SigningKeyRecord,
    lockout::{AttemptOutcome, AttemptStep, FailureRecord, LockoutPolicy},
    revocation::{RevocationEntry, RevocationTarget},
    session::{RefreshRecord, RefreshTokenHash, SessionRecord, TokenRecord},
    user::UserRecord,
};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `create_user` with a username that is taken.
    #[error("username is taken")]
    UsernameTaken,
    /// A stored record could not be read back; a bug or corruption.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The engine failed (I/O, flush); the write is not acknowledged.
    #[error("{0}")]
    Backend(String),
    /// The store opened without history it had committed (found at open;
    /// the message names the directory, what is missing and the ways out).
    #[error("{0}")]
    DataLoss(String),
}

/// What a revocation changed, and the log entries it committed.
#[derive(Debug, Default, Clone)]
pub struct RevokeOutcome {
    /// Sessions that went from active to revoked.
    pub sessions: u32,
    /// Token records that went from active to revoked.
    pub tokens: u32,
    /// Revocation-log entries committed, for the in-memory index.
    pub entries: Vec<RevocationEntry>,
    /// The sessions this revocation ended, as they now stand (the domain
    /// derives the audit events from them).
    pub ended_sessions: Vec<SessionRecord>,
}

impl RevokeOutcome {
    /// Adds another outcome to this one.
    pub fn absorb(&mut self, other: RevokeOutcome) {
        self.sessions += other.sessions;
        self.tokens += other.tokens;
        self.entries.extend(other.entries);
        self.ended_sessions.extend(other.ended_sessions);
    }
}

/// Why a revocation happened and when, recorded with it.
#[derive(Debug, Clone)]
pub struct RevocationCause {
    /// When.
    pub at: Timestamp,
    /// Until when the log entries it writes matter: the domain's bound
    /// (`RevocationIndex::expiry_of`), stored with each entry.
    pub expires_at: Timestamp,
    /// Why, for the audit trail.
    pub reason: String,
}

/// A refresh-token rotation to apply if, and only if, the presented token
/// is still the session's current one.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The session.
    pub session_id: SessionId,
    /// The refresh token presented (must be current).
    pub presented: TokenId,
    /// The replacement refresh token's hash.
    pub next_hash: RefreshTokenHash,
    /// The replacement refresh token's record.
    pub next_refresh: TokenRecord,
    /// The access token issued with it.
    pub access: TokenRecord,
    /// The time of the rotation.
    pub now: Timestamp,
}

/// The result of [`SessionStore::rotate_refresh`].
#[derive(Debug, Clone)]
pub enum RotateOutcome {
    /// Rotated; the session as it now stands.
    Rotated(Box<SessionRecord>),
    /// The presented token is not the current one: it was used before.
    Reused,
    /// The session is unknown, revoked or expired, or the token was revoked.
    Ended,
}

/// Which sessions a listing returns: one page after a cursor.
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Only this user's sessions.
    pub user: Option<UserId>,
    /// Include revoked and expired sessions.
    pub include_inactive: bool,
    /// Start after this session (the previous page's last).
    pub after: Option<SessionId>,
    /// At most this many.
    pub limit: usize,
}

/// Which token records a listing returns: one page after a cursor.
#[derive(Debug, Clone, Default)]
pub struct TokenQuery {
    /// Only this session's tokens.
    pub session: Option<SessionId>,
    /// Only this user's tokens.
    pub user: Option<UserId>,
    /// Include revoked, expired and rotated tokens.
    pub include_inactive: bool,
    /// Start after this token (the previous page's last).
    pub after: Option<TokenId>,
    /// At most this many.
    pub limit: usize,
}

/// A session or token the sweeper marked expired.
#[derive(Debug, Clone)]
pub enum Expired {
    /// A session.
    Session(Box<SessionRecord>),
    /// A token.
    Token(Box<TokenRecord>),
}

/// Users and their credentials.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user; `UsernameTaken` if the normalized name exists.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// The user with this id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;
    /// The user with this normalized name.
    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// How many users exist.
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// Replaces a user's record (same id and name); with `revocation`,
    /// appends that revocation-log entry (its time and bound from the
    /// cause) in the same atomic write.
    async fn update_user(
        &self,
        user: &UserRecord,
        revocation: Option<(RevocationTarget, RevocationCause)>,
    ) -> Result<Option<RevocationEntry>, StoreError>;
    /// Replaces a user's record under a new name (`user.username`), freeing
    /// `old_username`; `UsernameTaken` if another user holds the new name.
    async fn rename_user(&self, user: &UserRecord, old_username: &str) -> Result<(), StoreError>;
    /// Deletes a user; `false` if there was none. Its sessions are the
    /// caller's to revoke first.
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError>;
    /// Users after `after` in id (creation) order, at most `limit`.
    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<UserRecord>, StoreError>;
    /// How many active sessions the user has.
    async fn count_active_sessions_of(&self, user: UserId) -> Result<u32, StoreError>;
    /// Serializes, across every process sharing this store, the changes
    /// that check a rule over all users before they write (the last-admin
    /// rule), until the returned guard is dropped. `None`, the default, for
    /// an engine only one process can open: the domain's in-process lock is
    /// enough there.
    async fn lock_user_rules(&self) -> Result<Option<UserRulesLock>, StoreError> {
        Ok(None)
    }
}

/// Held while a change checks a rule over all users and writes; see
/// [`UserStore::lock_user_rules`]. Dropping it releases the lock.
pub type UserRulesLock = Box<dyn std::any::Any + Send>;

/// Sessions, their refresh tokens and the records of issued tokens.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session with its token records; the record whose id is the
    /// session's `current_refresh` is the refresh token found by `refresh_hash`.
    async fn create_session(
        &self,
        session: &SessionRecord,
        refresh_hash: RefreshTokenHash,
        tokens: &[TokenRecord],
    ) -> Result<(), StoreError>;
    /// The session with this id.
    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// The refresh token with this hash (current or not).
    async fn refresh_record(&self, hash: RefreshTokenHash) -> Result<Option<RefreshRecord>, StoreError>;
    /// The token record with this id.
    async fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;
    /// Rotates the session's refresh token, atomically and only if
    /// `rotation.presented` is still current (a conditional update: two
    /// concurrent presentations of one token rotate at most once).
    async fn rotate_refresh(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;
    /// Revokes a session and its tokens; `None` if it does not exist.
    async fn revoke_session(&self, id: SessionId, cause: &RevocationCause)
    -> Result<Option<RevokeOutcome>, StoreError>;
    /// Revokes one token; `None` if it does not exist.
    async fn revoke_token(&self, id: TokenId, cause: &RevocationCause) -> Result<Option<RevokeOutcome>, StoreError>;
    /// Revokes every session of a user.
    async fn revoke_user_sessions(&self, user: UserId, cause: &RevocationCause) -> Result<RevokeOutcome, StoreError>;
    /// One page of sessions, in id (creation) order.
    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError>;
    /// One page of token records, in id (issue) order.
    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError>;
    /// Active sessions and active tokens.
    async fn count_active(&self) -> Result<(u64, u64), StoreError>;
    /// Raises sessions' `last_seen_at` (never lowers it). Not a durable
    /// write: last-seen times are advisory.
    async fn touch_sessions(&self, seen: &[(SessionId, Timestamp)]) -> Result<(), StoreError>;
    /// Marks up to `limit` active sessions and tokens whose expiry is at or
    /// before `now` as expired, and returns them.
    async fn expire_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Expired>, StoreError>;
    /// Deletes up to `limit` sessions and tokens that ended before `before`,
    /// with their index entries; returns how many records went.
    async fn purge_ended(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError>;
}

/// Signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every stored key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Stores `key` if no key exists yet, and returns the stored keys: on a
    /// first start exactly one candidate wins, even when several race.
    async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Makes `key` the active key; the previously active key becomes
    /// verifying as of `key.created_at`. Returns the stored keys.
    async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Marks a verifying key retired at `at`.
    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<(), StoreError>;
}

/// The durable log of revocations that the in-memory index is built from.
#[async_trait]
pub trait RevocationLog: Send + Sync {
    /// Entries whose stored bound (`expires_at`) is after `now`, in
    /// sequence order: what the in-memory index is rebuilt from.
    async fn revocations_live(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError>;
    /// Entries with a sequence above `after`, in sequence order, at most
    /// `limit`: how an instance catches up on revocations committed by
    /// others sharing its store.
    /// An entry is visible here only once every entry with a lower
    /// sequence is (sled commits its transactions one at a time, PostgreSQL
    /// takes sequences under a lock held to commit), so a reader that moved
    /// past a sequence never misses a later-committed entry below it:
    /// revocation streams rely on it.
    async fn revocations_after(&self, after: u64, limit: usize) -> Result<Vec<RevocationEntry>, StoreError>;
    /// Drops entries whose stored bound is at or before `now`; returns how many.
    async fn purge_revocations(&self, now: Timestamp) -> Result<usize, StoreError>;
    /// Appends one entry, durably, and returns it as committed: for
    /// revocations that change no record (a per-user bound).
    async fn append_revocation(
        &self,
        target: RevocationTarget,
        cause: &RevocationCause,
    ) -> Result<RevocationEntry, StoreError>;
}

/// The audit event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores events in order, assigning increasing sequences. They become
    /// durable with the engine's next flush; the writes they describe were
    /// made durable before.
    async fn append_events(&self, events: Vec<EventRecord>) -> Result<Vec<EventRecord>, StoreError>;
    /// The sequence of the newest stored event (0 when there is none).
    async fn latest_event_sequence(&self) -> Result<u64, StoreError>;
    /// Events with a sequence above `after`, oldest first, at most `limit`.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// Drops audit-class events (`EventKind::class`) that occurred before
    /// `audit_before`, and all but the newest `keep_noise` noise-class
    /// events, so that noise never pushes out audit events; returns how
    /// many went.
    async fn trim_events(&self, keep_noise: usize, audit_before: Timestamp) -> Result<usize, StoreError>;
}

/// Failed-login counters (see `domain::lockout`). Writes are durable before
/// they return, like every other write: a login attempt is counted before
/// it is evaluated, and a crash right after must not forget it (or a
/// guesser could reset the count with restarts).
#[async_trait]
pub trait LoginThrottle: Send + Sync {
    /// The counter under `key`.
    async fn login_failures(&self, key: &str) -> Result<Option<FailureRecord>, StoreError>;
    /// Counts one failure at `now` under `key`, atomically (concurrent
    /// failures, from this instance or others, are all counted), and returns
    /// the counter as stored and whether this failure locked the account.
    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<(FailureRecord, bool), StoreError>;
    /// Forgets the counter under `key` (after a successful login).
    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes up to `limit` counters that [`FailureRecord::is_stale`] at
    /// `now` for `window`; returns how many went.
    async fn purge_login_failures(
        &self,
        now: Timestamp,
        window: std::time::Duration,
        limit: usize,
    ) -> Result<usize, StoreError>;
    /// Applies one step of a login attempt to the counter under `key` with
    /// [`FailureRecord::apply`], atomically (concurrent attempts, from this
    /// instance or others, each see the others' steps) and durably.
    async fn login_attempt(
        &self,
        key: &str,
        step: AttemptStep,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<AttemptOutcome, StoreError>;
}

/// Everything the domain core needs from an engine.
#[async_trait]
pub trait Store: UserStore + SessionStore + KeyStore + RevocationLog + EventStore + LoginThrottle {
    /// Makes every acknowledged write durable and releases the engine.
    async fn close(&self) -> Result<(), StoreError>;

    /// Whether the engine can commit writes right now (for the write-path
    /// health status): an engine whose reads keep working when its writes
    /// fail (sled) makes a real write and flush.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the engine failed in a way it cannot recover from in this
    /// process although the cause is gone (sled's I/O errors are sticky:
    /// after a full disk, it writes nothing more even once space is
    /// freed). Only a new process brings writes back.
    fn needs_restart(&self) -> bool {
        false
    }

    /// For an engine shared by several instances: what other instances may
    /// have committed, for the domain to catch up on from the store. `None`
    /// for an engine that only this process writes.
    fn changes(&self) -> Option<Arc<Changes>> {
        None
    }
}

/// Raised by a shared engine when other instances may have committed
/// revocations, events or key changes (and on reconnecting, when some may
/// have been missed).
#[derive(Debug, Default)]
pub struct Changes {
    /// Raised on every change.
    pub signal: Notify,
    /// Set when the signing keys may have changed, so that the keys are
    /// read back only then (and on the periodic catch-up), not on every
    /// event or revocation.
    pub keys: AtomicBool,
}

impl Changes {
    /// Notes a change; `keys` when it may concern the signing keys.
    pub fn raise(&self, keys: bool) {
        if keys {
            self.keys.store(true, Ordering::Release);
        }
        self.signal.notify_one();
    }

    /// Whether the keys may have changed since the last call.
    pub fn take_keys(&self) -> bool {
        self.keys.swap(false, Ordering::AcqRel)
    }
}
