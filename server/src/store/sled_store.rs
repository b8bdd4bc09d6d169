//! The embedded engine: sled, one tree per kind of record, values as JSON.
//!
//! Multi-record changes (a login, a rotation, a revocation) are sled
//! transactions over the trees involved, so they are atomic; every write is
//! then made durable through [`GroupCommit`] before it returns.
//!
//! Durability: sled's `flush` writes and syncs its log with
//! `sync_file_range`, which survives the death of the process (`kill -9`)
//! but not every power loss; the README says so.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use sled::{
    Transactional, Tree,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree, abort},
};

use super::{
    KeyStore, RevocationCause, RevocationLog, RevokeOutcome, RotateOutcome, Rotation, SessionStore,
    Store, StoreError, UserStore, group_commit::GroupCommit,
};
use crate::domain::{
    SessionId, Timestamp, TokenId, UserId,
    keys::SigningKeyRecord,
    revocation::{RevocationEntry, RevocationTarget},
    session::{
        RefreshRecord, RefreshTokenHash, SessionRecord, SessionState, TokenKind, TokenRecord,
        TokenState,
    },
    user::UserRecord,
};

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// sled-backed implementation of every store trait.
pub struct SledStore {
    db: sled::Db,
    /// user id → [`UserRecord`]
    users: Tree,
    /// normalized username → user id
    usernames: Tree,
    /// session id → [`SessionRecord`]
    sessions: Tree,
    /// user id ++ session id → ()
    user_sessions: Tree,
    /// token id → [`TokenRecord`]
    tokens: Tree,
    /// session id ++ token id → ()
    session_tokens: Tree,
    /// SHA-256 of a refresh token → [`RefreshRecord`]
    refresh: Tree,
    /// kid → [`SigningKeyRecord`]
    keys: Tree,
    /// sequence (u64 big-endian) → [`RevocationEntry`]
    revocations: Tree,
    commit: GroupCommit,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            StoreError::Backend(format!("cannot open sled store at {}: {e}", dir.display()))
        })?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| StoreError::Backend(format!("cannot open tree {name}: {e}")))
        };
        let flusher = db.clone();
        let commit = GroupCommit::start("sigil-group-commit", move || {
            flusher
                .flush()
                .map(|_| ())
                .map_err(|e| StoreError::Backend(format!("flush failed: {e}")))
        })?;
        Ok(Arc::new(Self {
            users: tree("users")?,
            usernames: tree("usernames")?,
            sessions: tree("sessions")?,
            user_sessions: tree("user_sessions")?,
            tokens: tree("tokens")?,
            session_tokens: tree("session_tokens")?,
            refresh: tree("refresh")?,
            keys: tree("keys")?,
            revocations: tree("revocations")?,
            db,
            commit,
        }))
    }

    fn get<T: DeserializeOwned>(&self, tree: &Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key)
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Token ids recorded under a session.
    fn tokens_of_session(&self, session: SessionId) -> Result<Vec<TokenId>, StoreError> {
        self.session_tokens
            .scan_prefix(session.as_bytes())
            .keys()
            .map(|key| {
                let key = key.map_err(backend)?;
                TokenId::from_slice(&key[16..])
                    .ok_or_else(|| StoreError::Corrupt("session_tokens key".into()))
            })
            .collect()
    }

    /// Marks every still-active token of a session revoked.
    fn revoke_tokens_in_tx(
        tokens: &TransactionalTree,
        ids: &[TokenId],
        at: Timestamp,
    ) -> TxResult<u32> {
        let mut revoked = 0;
        for id in ids {
            let Some(mut record) = tx_get::<TokenRecord>(tokens, id.as_bytes())? else {
                continue;
            };
            if record.state == TokenState::Active {
                record.state = TokenState::Revoked;
                record.revoked_at = Some(at);
                tokens.insert(id.as_bytes().as_slice(), encode(&record)?)?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        (&self.users, &self.usernames)
            .transaction(|(users, usernames)| {
                if usernames.get(user.username.as_bytes())?.is_some() {
                    return abort(StoreError::UsernameTaken);
                }
                usernames.insert(user.username.as_bytes(), user.id.as_bytes().as_slice())?;
                users.insert(user.id.as_bytes().as_slice(), encode(user)?)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.commit.durable().await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.get(&self.users, id.as_bytes())
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(id) = self.usernames.get(username.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        self.get(&self.users, &id)
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        Ok(self.users.len() as u64)
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
        let refresh = RefreshRecord {
            token_id: session.current_refresh,
            session_id: session.id,
        };
        (
            &self.sessions,
            &self.user_sessions,
            &self.tokens,
            &self.session_tokens,
            &self.refresh,
        )
            .transaction(
                |(sessions, user_sessions, token_tree, session_tokens, refresh_tree)| {
                    sessions.insert(session.id.as_bytes().as_slice(), encode(session)?)?;
                    user_sessions.insert(
                        pair_key(session.user_id.as_bytes(), session.id.as_bytes()),
                        &[],
                    )?;
                    refresh_tree.insert(refresh_hash.0.as_slice(), encode(&refresh)?)?;
                    for token in tokens {
                        token_tree.insert(token.id.as_bytes().as_slice(), encode(token)?)?;
                        session_tokens
                            .insert(pair_key(session.id.as_bytes(), token.id.as_bytes()), &[])?;
                    }
                    Ok(())
                },
            )
            .map_err(tx_error)?;
        self.commit.durable().await
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.get(&self.sessions, id.as_bytes())
    }

    async fn refresh_record(
        &self,
        hash: RefreshTokenHash,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        self.get(&self.refresh, &hash.0)
    }

    async fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        self.get(&self.tokens, id.as_bytes())
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let next = RefreshRecord {
            token_id: rotation.next_refresh.id,
            session_id: rotation.session_id,
        };
        let outcome = (
            &self.sessions,
            &self.tokens,
            &self.session_tokens,
            &self.refresh,
        )
            .transaction(|(sessions, tokens, session_tokens, refresh)| {
                let Some(mut session) =
                    tx_get::<SessionRecord>(sessions, rotation.session_id.as_bytes())?
                else {
                    return Ok(RotateOutcome::Ended);
                };
                if !session.is_live(rotation.now) {
                    return Ok(RotateOutcome::Ended);
                }
                if session.current_refresh != rotation.presented {
                    return Ok(RotateOutcome::Reused);
                }
                let Some(mut presented) =
                    tx_get::<TokenRecord>(tokens, rotation.presented.as_bytes())?
                else {
                    return Ok(RotateOutcome::Ended);
                };
                if presented.state != TokenState::Active {
                    return Ok(RotateOutcome::Ended);
                }
                presented.state = TokenState::Rotated;
                presented.revoked_at = Some(rotation.now);
                tokens.insert(presented.id.as_bytes().as_slice(), encode(&presented)?)?;
                for token in [&rotation.next_refresh, &rotation.access] {
                    tokens.insert(token.id.as_bytes().as_slice(), encode(token)?)?;
                    session_tokens
                        .insert(pair_key(session.id.as_bytes(), token.id.as_bytes()), &[])?;
                }
                refresh.insert(rotation.next_hash.0.as_slice(), encode(&next)?)?;
                session.current_refresh = rotation.next_refresh.id;
                session.last_seen_at = rotation.now;
                sessions.insert(session.id.as_bytes().as_slice(), encode(&session)?)?;
                Ok(RotateOutcome::Rotated(Box::new(session)))
            })
            .map_err(tx_error)?;
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
        let token_ids = self.tokens_of_session(id)?;
        let outcome = (&self.sessions, &self.tokens, &self.revocations)
            .transaction(|(sessions, tokens, revocations)| {
                let Some(mut session) = tx_get::<SessionRecord>(sessions, id.as_bytes())? else {
                    return Ok(None);
                };
                let mut outcome = RevokeOutcome::default();
                if session.state == SessionState::Active {
                    session.state = SessionState::Revoked;
                    session.revoked_at = Some(cause.at);
                    session.revoke_reason = Some(cause.reason.clone());
                    sessions.insert(id.as_bytes().as_slice(), encode(&session)?)?;
                    outcome.sessions = 1;
                    outcome.entries.push(append_revocation(
                        revocations,
                        RevocationTarget::Session(id),
                        cause.at,
                    )?);
                }
                outcome.tokens = Self::revoke_tokens_in_tx(tokens, &token_ids, cause.at)?;
                Ok(Some(outcome))
            })
            .map_err(tx_error)?;
        // A rotation that committed between the scan above and the
        // transaction added a token the transaction did not see; its record
        // is marked here. (The session entry already makes it fail Validate.)
        if outcome.as_ref().is_some_and(|o| o.sessions > 0) {
            let late: Vec<TokenId> = self
                .tokens_of_session(id)?
                .into_iter()
                .filter(|t| !token_ids.contains(t))
                .collect();
            if !late.is_empty() {
                self.tokens
                    .transaction(|tokens| Self::revoke_tokens_in_tx(tokens, &late, cause.at))
                    .map_err(tx_error)?;
            }
        }
        if outcome.as_ref().is_some_and(|o| o.sessions + o.tokens > 0) {
            self.commit.durable().await?;
        }
        Ok(outcome)
    }

    async fn revoke_token(
        &self,
        id: TokenId,
        cause: &RevocationCause,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        let outcome = (&self.tokens, &self.revocations)
            .transaction(|(tokens, revocations)| {
                let Some(mut token) = tx_get::<TokenRecord>(tokens, id.as_bytes())? else {
                    return Ok(None);
                };
                let mut outcome = RevokeOutcome::default();
                if token.state == TokenState::Active {
                    token.state = TokenState::Revoked;
                    token.revoked_at = Some(cause.at);
                    tokens.insert(id.as_bytes().as_slice(), encode(&token)?)?;
                    outcome.tokens = 1;
                    // Refresh tokens are checked against their record on
                    // use; only access tokens need the in-memory index.
                    if token.kind == TokenKind::Access {
                        outcome.entries.push(append_revocation(
                            revocations,
                            RevocationTarget::Token(id),
                            cause.at,
                        )?);
                    }
                }
                Ok(Some(outcome))
            })
            .map_err(tx_error)?;
        if outcome.as_ref().is_some_and(|o| o.tokens > 0) {
            self.commit.durable().await?;
        }
        Ok(outcome)
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        cause: &RevocationCause,
    ) -> Result<RevokeOutcome, StoreError> {
        let sessions: Vec<SessionId> = self
            .user_sessions
            .scan_prefix(user.as_bytes())
            .keys()
            .map(|key| {
                let key = key.map_err(backend)?;
                SessionId::from_slice(&key[16..])
                    .ok_or_else(|| StoreError::Corrupt("user_sessions key".into()))
            })
            .collect::<Result<_, _>>()?;
        let mut total = RevokeOutcome::default();
        for session in sessions {
            if let Some(outcome) = self.revoke_session(session, cause).await? {
                total.absorb(outcome);
            }
        }
        Ok(total)
    }
}

#[async_trait]
impl KeyStore for SledStore {
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let mut keys: Vec<SigningKeyRecord> = self
            .keys
            .iter()
            .values()
            .map(|v| decode(&v.map_err(backend)?))
            .collect::<Result<_, _>>()?;
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn insert_first_signing_key(
        &self,
        key: &SigningKeyRecord,
    ) -> Result<Vec<SigningKeyRecord>, StoreError> {
        // The store is opened by one process at a time (sled locks the
        // directory), so an emptiness check and insert cannot race here.
        if self.keys.is_empty() {
            self.keys
                .insert(key.kid.as_bytes(), encode_plain(key)?)
                .map_err(backend)?;
            self.commit.durable().await?;
        }
        self.signing_keys().await
    }
}

#[async_trait]
impl RevocationLog for SledStore {
    async fn revocations_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<RevocationEntry>, StoreError> {
        let mut entries = Vec::new();
        for value in self.revocations.iter().values() {
            let entry: RevocationEntry = decode(&value.map_err(backend)?)?;
            if entry.at >= since {
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn close(&self) -> Result<(), StoreError> {
        self.commit.durable().await?;
        self.db.flush_async().await.map(|_| ()).map_err(backend)
    }
}

/// Appends to the revocation log inside a transaction; the sequence comes
/// from sled's persistent id generator, so it only ever increases.
fn append_revocation(
    revocations: &TransactionalTree,
    target: RevocationTarget,
    at: Timestamp,
) -> TxResult<RevocationEntry> {
    let sequence = revocations.generate_id()?;
    let entry = RevocationEntry {
        sequence,
        target,
        at,
    };
    revocations.insert(sequence.to_be_bytes().as_slice(), encode(&entry)?)?;
    Ok(entry)
}

fn pair_key(first: &[u8; 16], second: &[u8; 16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(first);
    key.extend_from_slice(second);
    key
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
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
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}")))
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
