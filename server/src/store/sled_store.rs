//! The embedded engine: sled, one tree per kind of record or index, values
//! as JSON.
//!
//! Every multi-record change (a login, a rotation, a revocation, an expiry)
//! is one sled transaction over the record trees, so records and their
//! indexes never disagree; every acknowledged write is then made durable
//! through [`GroupCommit`] before it returns.
//!
//! Durability: sled's `flush` writes and syncs its log with
//! `sync_file_range`, which survives the death of the process (`kill -9`)
//! but not every power loss; the README says so.
//!
//! Indexes (keys are fixed-width big-endian, so ranges sort by time):
//! - `user_sessions` user ++ session, `session_tokens` session ++ token,
//!   `user_tokens` user ++ token: listings by owner.
//! - `active` kind ++ id: what is active now (listings, counts).
//! - `expiry` expires-at ++ kind ++ id: what the sweeper must expire next.
//! - `ended` ended-at ++ kind ++ id: what the sweeper may purge next.

use std::{ops::Bound, path::Path, sync::Arc};

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use sled::{
    Transactional, Tree,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree, abort},
};

use super::{
    EventStore, Expired, KeyStore, LoginThrottle, RevocationCause, RevocationLog, RevokeOutcome, RotateOutcome,
    Rotation, SessionQuery, SessionStore, Store, StoreError, TokenQuery, UserStore, group_commit::GroupCommit,
};
use crate::domain::{
    SessionId, Timestamp, TokenId, UserId,
    event::EventRecord,
    keys::{KeyState, SigningKeyRecord},
    lockout::{FailureRecord, LockoutPolicy},
    revocation::{RevocationEntry, RevocationTarget},
    session::{RefreshRecord, RefreshTokenHash, SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
    user::UserRecord,
};

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Bytes of sled's page cache.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

const SESSION: u8 = b'S';
const TOKEN: u8 = b'T';

/// The record and index trees that transactions span.
struct Trees {
    users: Tree,
    usernames: Tree,
    sessions: Tree,
    user_sessions: Tree,
    tokens: Tree,
    session_tokens: Tree,
    user_tokens: Tree,
    refresh: Tree,
    revocations: Tree,
    active: Tree,
    expiry: Tree,
    ended: Tree,
}

/// Which index a listing walks.
enum Walk<'a> {
    /// An owner index (user ++ id or session ++ id) under one owner.
    Owned { index: &'a Tree, owner: &'a [u8; 16] },
    /// The `active` index under one kind.
    Active(u8),
    /// Every record of a tree.
    All(&'a Tree),
}

/// The same trees inside a transaction.
struct Tx<'a> {
    users: &'a TransactionalTree,
    usernames: &'a TransactionalTree,
    sessions: &'a TransactionalTree,
    user_sessions: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    session_tokens: &'a TransactionalTree,
    user_tokens: &'a TransactionalTree,
    refresh: &'a TransactionalTree,
    revocations: &'a TransactionalTree,
    active: &'a TransactionalTree,
    expiry: &'a TransactionalTree,
    ended: &'a TransactionalTree,
}

/// sled-backed implementation of every store trait.
pub struct SledStore {
    db: sled::Db,
    trees: Trees,
    /// kid → [`SigningKeyRecord`]
    keys: Tree,
    /// sequence → [`EventRecord`]
    events: Tree,
    /// throttle key → [`FailureRecord`]
    login_failures: Tree,
    commit: GroupCommit,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // sled's default page cache is 1 GiB and fills with every write;
            // the hot paths (Validate) never read the store, so a small cache
            // keeps the server's memory low without slowing them.
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| StoreError::Backend(format!("cannot open sled store at {}: {e}", dir.display())))?;
        let tree =
            |name: &str| db.open_tree(name).map_err(|e| StoreError::Backend(format!("cannot open tree {name}: {e}")));
        let flusher = db.clone();
        let commit = GroupCommit::start("sigil-group-commit", move || {
            flusher.flush().map(|_| ()).map_err(|e| StoreError::Backend(format!("flush failed: {e}")))
        })?;
        Ok(Arc::new(Self {
            trees: Trees {
                users: tree("users")?,
                usernames: tree("usernames")?,
                sessions: tree("sessions")?,
                user_sessions: tree("user_sessions")?,
                tokens: tree("tokens")?,
                session_tokens: tree("session_tokens")?,
                user_tokens: tree("user_tokens")?,
                refresh: tree("refresh")?,
                revocations: tree("revocations")?,
                active: tree("active")?,
                expiry: tree("expiry")?,
                ended: tree("ended")?,
            },
            keys: tree("keys")?,
            events: tree("events")?,
            login_failures: tree("login_failures")?,
            db,
            commit,
        }))
    }

    /// Runs `work` as one atomic transaction over all record trees.
    fn transact<T>(&self, work: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        let t = &self.trees;
        (
            &t.users,
            &t.usernames,
            &t.sessions,
            &t.user_sessions,
            &t.tokens,
            &t.session_tokens,
            &t.user_tokens,
            &t.refresh,
            &t.revocations,
            &t.active,
            &t.expiry,
            &t.ended,
        )
            .transaction(
                |(
                    users,
                    usernames,
                    sessions,
                    user_sessions,
                    tokens,
                    session_tokens,
                    user_tokens,
                    refresh,
                    revocations,
                    active,
                    expiry,
                    ended,
                )| {
                    work(&Tx {
                        users,
                        usernames,
                        sessions,
                        user_sessions,
                        tokens,
                        session_tokens,
                        user_tokens,
                        refresh,
                        revocations,
                        active,
                        expiry,
                        ended,
                    })
                },
            )
            .map_err(tx_error)
    }

    fn get<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key).map_err(backend)?.map(|bytes| decode(&bytes)).transpose()
    }

    /// The ids stored after a 16-byte `prefix` in an owner index, in order.
    fn ids_under(tree: &Tree, prefix: &[u8; 16]) -> Result<Vec<[u8; 16]>, StoreError> {
        tree.scan_prefix(prefix).keys().map(|key| suffix_id(&key.map_err(backend)?)).collect()
    }

    /// One page of ids after `after`, walking `walk`, keeping those `keep` accepts.
    fn page_ids(
        &self,
        walk: Walk<'_>,
        after: Option<&[u8; 16]>,
        mut keep: impl FnMut(&[u8; 16]) -> Result<bool, StoreError>,
        limit: usize,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let (tree, prefix): (&Tree, Vec<u8>) = match walk {
            Walk::Owned { index, owner } => (index, owner.to_vec()),
            Walk::Active(kind) => (&self.trees.active, vec![kind]),
            Walk::All(records) => (records, Vec::new()),
        };
        let start = match after {
            Some(after) => Bound::Excluded([prefix.as_slice(), after].concat()),
            None => Bound::Included(prefix.clone()),
        };
        let mut ids = Vec::with_capacity(limit.min(1024));
        for key in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)).keys() {
            let key = key.map_err(backend)?;
            if !key.starts_with(&prefix) || ids.len() >= limit {
                break;
            }
            let id = suffix_id(&key)?;
            if keep(&id)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn is_active(&self, kind: u8, id: &[u8; 16]) -> Result<bool, StoreError> {
        self.trees.active.contains_key(kind_key(kind, id)).map_err(backend)
    }
}

impl Tx<'_> {
    fn put_new_session(&self, session: &SessionRecord) -> TxResult<()> {
        self.sessions.insert(session.id.as_bytes().as_slice(), encode(session)?)?;
        self.user_sessions.insert(pair_key(session.user_id.as_bytes(), session.id.as_bytes()), &[])?;
        self.active.insert(kind_key(SESSION, session.id.as_bytes()), &[])?;
        self.expiry.insert(time_key(session.expires_at, SESSION, session.id.as_bytes()), &[])?;
        Ok(())
    }

    fn put_new_token(&self, token: &TokenRecord) -> TxResult<()> {
        self.tokens.insert(token.id.as_bytes().as_slice(), encode(token)?)?;
        self.session_tokens.insert(pair_key(token.session_id.as_bytes(), token.id.as_bytes()), &[])?;
        self.user_tokens.insert(pair_key(token.user_id.as_bytes(), token.id.as_bytes()), &[])?;
        self.active.insert(kind_key(TOKEN, token.id.as_bytes()), &[])?;
        self.expiry.insert(time_key(token.expires_at, TOKEN, token.id.as_bytes()), &[])?;
        if let Some(hash) = token.refresh_hash {
            let pointer = RefreshRecord { token_id: token.id, session_id: token.session_id };
            self.refresh.insert(hash.0.as_slice(), encode(&pointer)?)?;
        }
        Ok(())
    }

    /// Ends an active session: state, indexes, optional revocation log entry.
    fn end_session(&self, session: &mut SessionRecord, state: SessionState, at: Timestamp) -> TxResult<()> {
        session.end(state, at);
        self.sessions.insert(session.id.as_bytes().as_slice(), encode(&*session)?)?;
        self.active.remove(kind_key(SESSION, session.id.as_bytes()))?;
        self.expiry.remove(time_key(session.expires_at, SESSION, session.id.as_bytes()))?;
        self.ended.insert(time_key(at, SESSION, session.id.as_bytes()), &[])?;
        Ok(())
    }

    /// Ends an active token (revoked, expired or rotated).
    fn end_token(&self, token: &mut TokenRecord, state: TokenState, at: Timestamp) -> TxResult<()> {
        token.end(state, at);
        self.tokens.insert(token.id.as_bytes().as_slice(), encode(&*token)?)?;
        self.active.remove(kind_key(TOKEN, token.id.as_bytes()))?;
        self.expiry.remove(time_key(token.expires_at, TOKEN, token.id.as_bytes()))?;
        self.ended.insert(time_key(at, TOKEN, token.id.as_bytes()), &[])?;
        Ok(())
    }

    /// Revokes every still-active token among `ids`; returns how many.
    fn revoke_tokens(&self, ids: &[[u8; 16]], at: Timestamp) -> TxResult<u32> {
        let mut revoked = 0;
        for id in ids {
            if let Some(mut token) = tx_get::<TokenRecord>(self.tokens, id)?
                && token.state == TokenState::Active
            {
                self.end_token(&mut token, TokenState::Revoked, at)?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Appends to the revocation log; the sequence comes from sled's
    /// persistent id generator, so it only ever increases.
    fn log_revocation(&self, target: RevocationTarget, at: Timestamp) -> TxResult<RevocationEntry> {
        let sequence = self.revocations.generate_id()?;
        let entry = RevocationEntry { sequence, target, at };
        self.revocations.insert(sequence.to_be_bytes().as_slice(), encode(&entry)?)?;
        Ok(entry)
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.transact(|tx| {
            if tx.usernames.get(user.username.as_bytes())?.is_some() {
                return abort(StoreError::UsernameTaken);
            }
            tx.usernames.insert(user.username.as_bytes(), user.id.as_bytes().as_slice())?;
            tx.users.insert(user.id.as_bytes().as_slice(), encode(user)?)?;
            Ok(())
        })?;
        self.commit.durable().await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        Self::get(&self.trees.users, id.as_bytes())
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(id) = self.trees.usernames.get(username.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        Self::get(&self.trees.users, &id)
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        Ok(self.trees.users.len() as u64)
    }

    async fn update_user(
        &self,
        user: &UserRecord,
        revocation: Option<(RevocationTarget, Timestamp)>,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        let entry = self.transact(|tx| {
            tx.users.insert(user.id.as_bytes().as_slice(), encode(user)?)?;
            revocation.map(|(target, at)| tx.log_revocation(target, at)).transpose()
        })?;
        self.commit.durable().await?;
        Ok(entry)
    }

    async fn rename_user(&self, user: &UserRecord, old_username: &str) -> Result<(), StoreError> {
        self.transact(|tx| {
            if let Some(holder) = tx.usernames.get(user.username.as_bytes())?
                && holder.as_ref() != user.id.as_bytes().as_slice()
            {
                return abort(StoreError::UsernameTaken);
            }
            if tx.usernames.get(old_username.as_bytes())?.is_some_and(|id| id.as_ref() == user.id.as_bytes().as_slice())
            {
                tx.usernames.remove(old_username.as_bytes())?;
            }
            tx.usernames.insert(user.username.as_bytes(), user.id.as_bytes().as_slice())?;
            tx.users.insert(user.id.as_bytes().as_slice(), encode(user)?)?;
            Ok(())
        })?;
        self.commit.durable().await
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let deleted = self.transact(|tx| {
            let Some(user) = tx_get::<UserRecord>(tx.users, id.as_bytes())? else {
                return Ok(false);
            };
            tx.users.remove(id.as_bytes().as_slice())?;
            tx.usernames.remove(user.username.as_bytes())?;
            Ok(true)
        })?;
        if deleted {
            self.commit.durable().await?;
        }
        Ok(deleted)
    }

    async fn list_users(&self, after: Option<UserId>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        self.trees
            .users
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .values()
            .take(limit)
            .map(|v| decode(&v.map_err(backend)?))
            .collect()
    }

    async fn count_active_sessions_of(&self, user: UserId) -> Result<u32, StoreError> {
        let mut count = 0;
        for session in Self::ids_under(&self.trees.user_sessions, user.as_bytes())? {
            if self.is_active(SESSION, &session)? {
                count += 1;
            }
        }
        Ok(count)
    }
}

#[async_trait]
impl SessionStore for SledStore {
    async fn create_session(
        &self,
        session: &SessionRecord,
        refresh_hash: RefreshTokenHash,
        tokens: &[TokenRecord],
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            tx.put_new_session(session)?;
            for token in tokens {
                if token.id == session.current_refresh {
                    // The refresh token is found, and later purged, by its hash.
                    let mut refresh = token.clone();
                    refresh.refresh_hash = Some(refresh_hash);
                    tx.put_new_token(&refresh)?;
                } else {
                    tx.put_new_token(token)?;
                }
            }
            Ok(())
        })?;
        self.commit.durable().await
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Self::get(&self.trees.sessions, id.as_bytes())
    }

    async fn refresh_record(&self, hash: RefreshTokenHash) -> Result<Option<RefreshRecord>, StoreError> {
        Self::get(&self.trees.refresh, &hash.0)
    }

    async fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        Self::get(&self.trees.tokens, id.as_bytes())
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let outcome = self.transact(|tx| {
            let Some(mut session) = tx_get::<SessionRecord>(tx.sessions, rotation.session_id.as_bytes())? else {
                return Ok(RotateOutcome::Ended);
            };
            if !session.is_live(rotation.now) {
                return Ok(RotateOutcome::Ended);
            }
            if session.current_refresh != rotation.presented {
                return Ok(RotateOutcome::Reused);
            }
            let Some(mut presented) = tx_get::<TokenRecord>(tx.tokens, rotation.presented.as_bytes())? else {
                return Ok(RotateOutcome::Ended);
            };
            if presented.state != TokenState::Active {
                return Ok(RotateOutcome::Ended);
            }
            tx.end_token(&mut presented, TokenState::Rotated, rotation.now)?;
            let mut next_refresh = rotation.next_refresh.clone();
            next_refresh.refresh_hash = Some(rotation.next_hash);
            tx.put_new_token(&next_refresh)?;
            tx.put_new_token(&rotation.access)?;
            session.current_refresh = rotation.next_refresh.id;
            session.last_seen_at = rotation.now;
            tx.sessions.insert(session.id.as_bytes().as_slice(), encode(&session)?)?;
            Ok(RotateOutcome::Rotated(Box::new(session)))
        })?;
        if matches!(outcome, RotateOutcome::Rotated(_)) {
            self.commit.durable().await?;
        }
        Ok(outcome)
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        cause: &RevocationCause,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        let token_ids = Self::ids_under(&self.trees.session_tokens, id.as_bytes())?;
        let outcome = self.transact(|tx| {
            let Some(mut session) = tx_get::<SessionRecord>(tx.sessions, id.as_bytes())? else {
                return Ok(None);
            };
            let mut outcome = RevokeOutcome::default();
            if session.state == SessionState::Active {
                session.revoke_reason = Some(cause.reason.clone());
                tx.end_session(&mut session, SessionState::Revoked, cause.at)?;
                outcome.sessions = 1;
                outcome.owners.push((id, session.user_id, session.username.clone()));
                outcome.entries.push(tx.log_revocation(RevocationTarget::Session(id), cause.at)?);
            }
            outcome.tokens = tx.revoke_tokens(&token_ids, cause.at)?;
            Ok(Some(outcome))
        })?;
        // A rotation that committed between the scan above and the
        // transaction added tokens the transaction did not see; mark them
        // too. (The session's log entry already makes them fail Validate.)
        if outcome.as_ref().is_some_and(|o| o.sessions > 0) {
            let late: Vec<[u8; 16]> = Self::ids_under(&self.trees.session_tokens, id.as_bytes())?
                .into_iter()
                .filter(|t| !token_ids.contains(t))
                .collect();
            if !late.is_empty() {
                self.transact(|tx| tx.revoke_tokens(&late, cause.at))?;
            }
        }
        if outcome.as_ref().is_some_and(|o| o.sessions + o.tokens > 0) {
            self.commit.durable().await?;
        }
        Ok(outcome)
    }

    async fn revoke_token(&self, id: TokenId, cause: &RevocationCause) -> Result<Option<RevokeOutcome>, StoreError> {
        let outcome = self.transact(|tx| {
            let Some(mut token) = tx_get::<TokenRecord>(tx.tokens, id.as_bytes())? else {
                return Ok(None);
            };
            let mut outcome = RevokeOutcome::default();
            if token.state == TokenState::Active {
                tx.end_token(&mut token, TokenState::Revoked, cause.at)?;
                outcome.tokens = 1;
                // Refresh tokens are checked against their record on use;
                // only access tokens need the in-memory index.
                if token.kind == TokenKind::Access {
                    outcome.entries.push(tx.log_revocation(RevocationTarget::Token(id), cause.at)?);
                }
            }
            Ok(Some(outcome))
        })?;
        if outcome.as_ref().is_some_and(|o| o.tokens > 0) {
            self.commit.durable().await?;
        }
        Ok(outcome)
    }

    async fn revoke_user_sessions(&self, user: UserId, cause: &RevocationCause) -> Result<RevokeOutcome, StoreError> {
        let mut total = RevokeOutcome::default();
        for session in Self::ids_under(&self.trees.user_sessions, user.as_bytes())? {
            let session = SessionId::from_slice(&session).ok_or_else(|| StoreError::Corrupt("session id".into()))?;
            if let Some(outcome) = self.revoke_session(session, cause).await? {
                total.absorb(outcome);
            }
        }
        Ok(total)
    }

    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let walk = match &query.user {
            Some(user) => Walk::Owned { index: &self.trees.user_sessions, owner: user.as_bytes() },
            None if query.include_inactive => Walk::All(&self.trees.sessions),
            None => Walk::Active(SESSION),
        };
        // Owner indexes hold ended sessions too; the others need no check.
        let check_active = query.user.is_some() && !query.include_inactive;
        let keep = |id: &[u8; 16]| if check_active { self.is_active(SESSION, id) } else { Ok(true) };
        let ids = self.page_ids(walk, query.after.as_ref().map(SessionId::as_bytes), keep, query.limit)?;
        ids.iter().filter_map(|id| Self::get(&self.trees.sessions, id).transpose()).collect()
    }

    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        let walk = match (&query.session, &query.user) {
            (Some(session), _) => Walk::Owned { index: &self.trees.session_tokens, owner: session.as_bytes() },
            (None, Some(user)) => Walk::Owned { index: &self.trees.user_tokens, owner: user.as_bytes() },
            (None, None) if query.include_inactive => Walk::All(&self.trees.tokens),
            (None, None) => Walk::Active(TOKEN),
        };
        let owned = query.session.is_some() || query.user.is_some();
        let check_active = owned && !query.include_inactive;
        let keep = |id: &[u8; 16]| if check_active { self.is_active(TOKEN, id) } else { Ok(true) };
        let ids = self.page_ids(walk, query.after.as_ref().map(TokenId::as_bytes), keep, query.limit)?;
        let records: Vec<TokenRecord> =
            ids.iter().filter_map(|id| Self::get(&self.trees.tokens, id).transpose()).collect::<Result<_, _>>()?;
        // With both filters, the session index was walked; the user must match.
        Ok(records.into_iter().filter(|t| query.user.is_none_or(|u| t.user_id == u)).collect())
    }

    async fn count_active(&self) -> Result<(u64, u64), StoreError> {
        let sessions = self.trees.active.scan_prefix([SESSION]).keys().count() as u64;
        let tokens = self.trees.active.scan_prefix([TOKEN]).keys().count() as u64;
        Ok((sessions, tokens))
    }

    async fn touch_sessions(&self, seen: &[(SessionId, Timestamp)]) -> Result<(), StoreError> {
        for (id, at) in seen {
            self.transact(|tx| {
                if let Some(mut session) = tx_get::<SessionRecord>(tx.sessions, id.as_bytes())?
                    && session.last_seen_at < *at
                {
                    session.last_seen_at = *at;
                    tx.sessions.insert(id.as_bytes().as_slice(), encode(&session)?)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    async fn expire_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Expired>, StoreError> {
        let end = time_key(now, u8::MAX, &[u8::MAX; 16]);
        let due: Vec<Vec<u8>> = self
            .trees
            .expiry
            .range(..=end)
            .keys()
            .take(limit)
            .map(|k| k.map(|k| k.to_vec()).map_err(backend))
            .collect::<Result<_, _>>()?;
        let mut expired = Vec::with_capacity(due.len());
        for key in due {
            let (kind, id) = (key[8], suffix_id(&key)?);
            let item = self.transact(|tx| {
                tx.expiry.remove(key.as_slice())?;
                match kind {
                    SESSION => match tx_get::<SessionRecord>(tx.sessions, &id)? {
                        Some(mut s) if s.state == SessionState::Active => {
                            tx.end_session(&mut s, SessionState::Expired, now)?;
                            Ok(Some(Expired::Session(Box::new(s))))
                        }
                        _ => Ok(None),
                    },
                    _ => match tx_get::<TokenRecord>(tx.tokens, &id)? {
                        Some(mut t) if t.state == TokenState::Active => {
                            tx.end_token(&mut t, TokenState::Expired, now)?;
                            Ok(Some(Expired::Token(Box::new(t))))
                        }
                        _ => Ok(None),
                    },
                }
            })?;
            expired.extend(item);
        }
        if !expired.is_empty() {
            self.commit.durable().await?;
        }
        Ok(expired)
    }

    async fn purge_ended(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let end = time_key(before, 0, &[0; 16]);
        let due: Vec<Vec<u8>> = self
            .trees
            .ended
            .range(..end)
            .keys()
            .take(limit)
            .map(|k| k.map(|k| k.to_vec()).map_err(backend))
            .collect::<Result<_, _>>()?;
        let mut purged = 0;
        for key in due {
            let (kind, id) = (key[8], suffix_id(&key)?);
            purged += self.transact(|tx| {
                tx.ended.remove(key.as_slice())?;
                if kind == SESSION {
                    let Some(s) = tx_get::<SessionRecord>(tx.sessions, &id)? else { return Ok(0) };
                    tx.sessions.remove(id.as_slice())?;
                    tx.user_sessions.remove(pair_key(s.user_id.as_bytes(), &id))?;
                } else {
                    let Some(t) = tx_get::<TokenRecord>(tx.tokens, &id)? else { return Ok(0) };
                    tx.tokens.remove(id.as_slice())?;
                    tx.session_tokens.remove(pair_key(t.session_id.as_bytes(), &id))?;
                    tx.user_tokens.remove(pair_key(t.user_id.as_bytes(), &id))?;
                    if let Some(hash) = t.refresh_hash {
                        tx.refresh.remove(hash.0.as_slice())?;
                    }
                }
                Ok(1)
            })?;
        }
        Ok(purged)
    }
}

#[async_trait]
impl KeyStore for SledStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut keys: Vec<SigningKeyRecord> =
            self.keys.iter().values().map(|v| decode(&v.map_err(backend)?)).collect::<Result<_, _>>()?;
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn insert_first_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError> {
        // sled locks its directory to one process, and this runs once at
        // start, so the emptiness check and the insert cannot race.
        if self.keys.is_empty() {
            self.keys.insert(key.kid.as_bytes(), encode_plain(key)?).map_err(backend)?;
            self.commit.durable().await?;
        }
        self.signing_keys().await
    }

    async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError> {
        // Rotations are rare and made by admins; reading the keys before
        // the transaction keeps it to plain writes.
        let mut superseded = Vec::new();
        for mut old in self.signing_keys().await? {
            if old.state == KeyState::Active {
                old.state = KeyState::Verifying;
                old.superseded_at = Some(key.created_at);
                superseded.push(old);
            }
        }
        self.keys
            .transaction(|keys| {
                for old in &superseded {
                    keys.insert(old.kid.as_bytes(), encode(old)?)?;
                }
                keys.insert(key.kid.as_bytes(), encode(key)?)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.commit.durable().await?;
        self.signing_keys().await
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<(), StoreError> {
        let Some(mut key) = Self::get::<SigningKeyRecord>(&self.keys, kid.as_bytes())? else {
            return Ok(());
        };
        key.state = KeyState::Retired;
        key.retired_at = Some(at);
        self.keys.insert(kid.as_bytes(), encode_plain(&key)?).map_err(backend)?;
        self.commit.durable().await
    }
}

#[async_trait]
impl RevocationLog for SledStore {
    async fn revocations_since(&self, since: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        let mut entries = Vec::new();
        for value in self.trees.revocations.iter().values() {
            let entry: RevocationEntry = decode(&value.map_err(backend)?)?;
            if entry.at >= since {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    async fn revocations_after(&self, after: u64, limit: usize) -> Result<Vec<RevocationEntry>, StoreError> {
        self.trees
            .revocations
            .range((Bound::Excluded(after.to_be_bytes()), Bound::Unbounded))
            .values()
            .take(limit)
            .map(|v| decode(&v.map_err(backend)?))
            .collect()
    }

    async fn purge_revocations(&self, before: Timestamp) -> Result<usize, StoreError> {
        let mut purged = 0;
        for item in self.trees.revocations.iter() {
            let (key, value) = item.map_err(backend)?;
            let entry: RevocationEntry = decode(&value)?;
            // Sequence order is commit order, so entries are oldest first.
            if entry.at >= before {
                break;
            }
            self.trees.revocations.remove(key).map_err(backend)?;
            purged += 1;
        }
        Ok(purged)
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn append_events(&self, events: Vec<EventRecord>) -> Result<Vec<EventRecord>, StoreError> {
        let mut stored = Vec::with_capacity(events.len());
        for mut event in events {
            // Sequences start at 1: `after_sequence = 0` means "from the start".
            event.sequence = self.db.generate_id().map_err(backend)? + 1;
            self.events.insert(event.sequence.to_be_bytes(), encode_plain(&event)?).map_err(backend)?;
            stored.push(event);
        }
        Ok(stored)
    }

    async fn latest_event_sequence(&self) -> Result<u64, StoreError> {
        let last = self.events.last().map_err(backend)?;
        Ok(last.and_then(|(key, _)| key.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.events
            .range((Bound::Excluded(after.to_be_bytes()), Bound::Unbounded))
            .values()
            .take(limit)
            .map(|v| decode(&v.map_err(backend)?))
            .collect()
    }

    async fn trim_events(&self, keep: usize) -> Result<usize, StoreError> {
        let excess = self.events.len().saturating_sub(keep);
        let doomed: Vec<sled::IVec> =
            self.events.iter().keys().take(excess).collect::<Result<_, _>>().map_err(backend)?;
        for key in &doomed {
            self.events.remove(key).map_err(backend)?;
        }
        Ok(doomed.len())
    }
}

#[async_trait]
impl LoginThrottle for SledStore {
    async fn login_failures(&self, key: &str) -> Result<Option<FailureRecord>, StoreError> {
        Self::get(&self.login_failures, key.as_bytes())
    }

    async fn record_login_failure(
        &self,
        key: &str,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<(FailureRecord, bool), StoreError> {
        // A compare-and-swap loop: sled reruns the closure if another
        // failure landed in between, so none is lost. The outcome of the
        // run that won is the one kept.
        let mut outcome = (FailureRecord::default(), false);
        self.login_failures
            .update_and_fetch(key.as_bytes(), |old| {
                let mut record: FailureRecord = old.and_then(|bytes| decode(bytes).ok()).unwrap_or_default();
                let locked = record.record_failure(now, policy);
                let bytes = encode_plain(&record).ok();
                outcome = (record, locked);
                bytes
            })
            .map_err(backend)?;
        Ok(outcome)
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        self.login_failures.remove(key.as_bytes()).map(|_| ()).map_err(backend)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn close(&self) -> Result<(), StoreError> {
        self.commit.durable().await?;
        self.db.flush_async().await.map(|_| ()).map_err(backend)
    }
}

fn kind_key(kind: u8, id: &[u8; 16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(kind);
    key.extend_from_slice(id);
    key
}

/// `at` (as milliseconds, big-endian, offset so that order is preserved) ++ kind ++ id.
fn time_key(at: Timestamp, kind: u8, id: &[u8; 16]) -> Vec<u8> {
    let ordered = (at.as_millis() as u64) ^ (1 << 63);
    let mut key = Vec::with_capacity(25);
    key.extend_from_slice(&ordered.to_be_bytes());
    key.push(kind);
    key.extend_from_slice(id);
    key
}

fn pair_key(first: &[u8; 16], second: &[u8; 16]) -> Vec<u8> {
    [first.as_slice(), second.as_slice()].concat()
}

/// The trailing 16-byte id of an index key.
fn suffix_id(key: &[u8]) -> Result<[u8; 16], StoreError> {
    key.len()
        .checked_sub(16)
        .and_then(|start| key[start..].try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("index key too short".into()))
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn encode<T: Serialize>(value: &T) -> TxResult<Vec<u8>> {
    encode_plain(value).map_err(ConflictableTransactionError::Abort)
}

fn encode_plain<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}")))
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => backend(e),
    }
}
