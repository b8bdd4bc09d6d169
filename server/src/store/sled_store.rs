//! The embedded engine: sled, one tree per kind of record or index; the
//! sessions, tokens and refresh pointers in a versioned binary encoding
//! ([`super::sled_codec`]), the other records as JSON.
//!
//! Every multi-record change (a login, a rotation, a revocation, an expiry)
//! is one sled transaction over the record trees, so records and their
//! indexes never disagree; every acknowledged write is then made durable
//! through [`GroupCommit`] before it returns. What a rotation, a revocation
//! or a key change writes is the domain's decision: the transaction reads
//! the records, asks the domain, and writes its answer.
//!
//! Durability: sled's `flush` writes and syncs its log with
//! `sync_file_range`, which survives the death of the process (`kill -9`)
//! but not every power loss; the README says so.
//!
//! Loss: sled takes the first bad checksum for the end of its log, so a
//! damaged file silently loses history. Each flush of the group commit
//! records a [`HighWaterMark`] beside the store (see [`super::high_water`]),
//! and [`SledStore::open_with`] refuses a store that opens behind it.
//!
//! Failure: once a write to its files fails (a full disk), sled fails every
//! later write and flush of this process, even after the cause is gone.
//! [`Store::ping`] makes a real write and flush; when it fails while the
//! disk takes writes again, [`Store::needs_restart`] says so, and the server
//! exits for its supervisor to start a fresh process.
//!
//! Layout (version 2, see [`layout`]): sessions and tokens are kept in two
//! trees each, by id: `sessions` and `tokens` hold the active ones,
//! `ended_sessions` and `ended_tokens` the revoked, expired and rotated
//! ones until they are purged. A record moves when its state changes, in
//! the transaction that changes it, so the tree a record is in always
//! agrees with its state: what is active is a walk of one tree, everything
//! a merge of two by id, and no index entry says it again. sled keeps a
//! resident page-table entry per page, and a page holds at most 16
//! entries, so every entry a session writes costs memory for as long as
//! the session is stored (BENCHMARKS.md, #18 item 2).
//!
//! Indexes (keys are fixed-width big-endian, so ranges sort by time):
//! - `user_sessions` user ++ session, `session_tokens` session ++ token:
//!   listings by owner (a user's tokens are its sessions' tokens).
//! - `expiry` expires-at ++ kind ++ id: what the sweeper must expire next.
//! - `ended` ended-at ++ kind ++ id: what the sweeper may purge next.
//! - `counts`: users and active sessions and tokens, kept in the same
//!   transactions (see [`super::sled_counts`]).
//!
//! Service accounts live in trees of their own ([`service_accounts`]).

use std::{
    io::Write as _,
    ops::Bound,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;
use serde::{Serialize, de::DeserializeOwned};
use sled::{
    Transactional, Tree,
    transaction::{ConflictableTransactionError, TransactionError, TransactionalTree, abort},
};

use super::{
    group_commit::GroupCommit,
    high_water::{HighWaterFile, HighWaterMark, HighWaterRecorder, OnDataLoss},
    sled_codec::{self, BinaryRecord},
    sled_counts::{self, Counted},
};
use crate::domain::{
    SessionId, Timestamp, TokenId, UserId,
    event::{EventClass, EventKind, EventRecord},
    key_rotation,
    keys::SigningKeyRecord,
    lockout::{AttemptOutcome, AttemptStep, FailureRecord, LockoutPolicy},
    port::{
        EventStore, Expired, KeyStore, LoginThrottle, RevocationCause, RevocationLog, RevokeOutcome, RotateOutcome,
        Rotation, SessionQuery, SessionStore, Store, StoreError, TokenQuery, UserStore,
    },
    refresh_rotation::{self, RotationDecision, RotationWrites},
    revocation::{RevocationEntry, RevocationTarget},
    session::{RefreshRecord, RefreshTokenHash, SessionRecord, SessionState, TokenRecord, TokenState},
    session_revocation::{self, RevocationWrites},
    user::UserRecord,
};

mod layout;
mod service_accounts;

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Bytes of sled's page cache.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

const SESSION: u8 = b'S';
const TOKEN: u8 = b'T';

/// Keys of the `sequences` tree: the highest revocation-log and event
/// sequences ever stored (u64, big-endian). Purges of the log and trims of
/// the events remove entries, never these, so the store's reach is known
/// even when the log is empty.
const REVOCATION_SEQUENCE: &[u8] = b"revocation";
const EVENT_SEQUENCE: &[u8] = b"event";
/// Key of the `sequences` tree that the health probe writes.
const PROBE: &[u8] = b"probe";

/// Bytes written (and removed) beside the store to learn whether the disk
/// takes writes again: a few of sled's 512 KiB log segments.
const SPACE_PROBE_BYTES: usize = 2 * 1024 * 1024;

/// The record and index trees that transactions span.
struct Trees {
    users: Tree,
    usernames: Tree,
    /// The active sessions.
    sessions: Tree,
    /// The revoked and expired sessions, until purged.
    ended_sessions: Tree,
    user_sessions: Tree,
    /// The active tokens.
    tokens: Tree,
    /// The revoked, expired and rotated tokens, until purged.
    ended_tokens: Tree,
    session_tokens: Tree,
    refresh: Tree,
    revocations: Tree,
    expiry: Tree,
    ended: Tree,
    /// The kept counts (see [`sled_counts`]).
    counts: Tree,
}

/// Which keys a listing walks.
enum Walk<'a> {
    /// An owner index (user ++ id or session ++ id) under one owner.
    Owned { index: &'a Tree, owner: &'a [u8; 16] },
    /// Every record of one tree (the active ones).
    Records(&'a Tree),
    /// Every record of two trees (the active and the ended ones), merged
    /// into one id order.
    Merged(&'a Tree, &'a Tree),
}

/// The same trees inside a transaction.
struct Tx<'a> {
    users: &'a TransactionalTree,
    usernames: &'a TransactionalTree,
    sessions: &'a TransactionalTree,
    ended_sessions: &'a TransactionalTree,
    user_sessions: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    ended_tokens: &'a TransactionalTree,
    session_tokens: &'a TransactionalTree,
    refresh: &'a TransactionalTree,
    revocations: &'a TransactionalTree,
    expiry: &'a TransactionalTree,
    ended: &'a TransactionalTree,
    counts: &'a TransactionalTree,
}

/// sled-backed implementation of every store trait.
pub struct SledStore {
    db: sled::Db,
    trees: Trees,
    /// kid → [`SigningKeyRecord`]
    keys: Tree,
    /// sequence → [`EventRecord`] of the noise class (trimmed by count), and
    /// of any class for events stored before classes existed
    events: Tree,
    /// sequence → [`EventRecord`] of the audit class (trimmed by age)
    audit_events: Tree,
    /// throttle key → [`FailureRecord`]
    login_failures: Tree,
    /// Service accounts and what their credentials leave behind (see
    /// [`service_accounts`]).
    clients: service_accounts::ClientTrees,
    /// name → u64, see [`REVOCATION_SEQUENCE`]
    sequences: Tree,
    commit: GroupCommit,
    reach: Reach,
    high_water: Arc<HighWaterRecorder>,
    dir: PathBuf,
    /// Set once a probe failed while the disk took writes again.
    needs_restart: AtomicBool,
    /// Serialises key rotations: each reads the keys before its
    /// transaction (sled transactions cannot iterate), and sled holds its
    /// directory for one process, so an in-process lock makes the read and
    /// the write one step.
    key_rotation: tokio::sync::Mutex<()>,
}

/// Reads how far the store's history reaches, for the high-water mark.
#[derive(Clone)]
struct Reach {
    revocations: Tree,
    /// The noise and the audit event trees.
    events: [Tree; 2],
    sequences: Tree,
    keys: Tree,
}

impl Reach {
    /// The store's mark as it stands in memory: what a flush started after
    /// this call makes durable.
    fn read(&self) -> Result<HighWaterMark, StoreError> {
        Ok(HighWaterMark {
            revocation_sequence: last_sequence(&self.revocations)?
                .max(stored_u64(&self.sequences, REVOCATION_SEQUENCE)?),
            event_sequence: last_sequence(&self.events[0])?
                .max(last_sequence(&self.events[1])?)
                .max(stored_u64(&self.sequences, EVENT_SEQUENCE)?),
            held_data: !self.keys.is_empty(),
        })
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, refusing one that lost data
    /// it had committed.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        Self::open_with(dir, OnDataLoss::Refuse)
    }

    /// Opens (or creates) the store in `dir`; checks it against its
    /// high-water mark and, if it opened behind it, refuses
    /// ([`StoreError::DataLoss`], naming the directory, what is missing and
    /// the ways out) or, with [`OnDataLoss::Accept`], starts over the loss,
    /// records it as a [`EventKind::StoreLossAccepted`] event and resets
    /// the mark.
    pub fn open_with(dir: &Path, on_loss: OnDataLoss) -> Result<Arc<Self>, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // sled's default page cache is 1 GiB and fills with every write;
            // the hot paths (Validate) never read the store, so a small cache
            // keeps the server's memory low without slowing them.
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree =
            |name: &str| db.open_tree(name).map_err(|e| StoreError::Backend(format!("cannot open tree {name}: {e}")));
        let keys = tree("keys")?;
        let events = tree("events")?;
        let audit_events = tree("audit_events")?;
        let sequences = tree("sequences")?;
        let revocations = tree("revocations")?;
        let reach = Reach {
            revocations,
            events: [events.clone(), audit_events.clone()],
            sequences: sequences.clone(),
            keys: keys.clone(),
        };
        let mark_file = HighWaterFile::in_dir(dir);
        let loss = check_reach(dir, &mark_file, &reach, on_loss)?;

        // The mark is written, at once, as the store now stands: on a first
        // start (or the first start of a version that keeps a mark, over an
        // existing store) it is created; after an accepted loss it is reset.
        if let Some(loss) = &loss {
            let event = EventRecord::new(EventKind::StoreLossAccepted)
                .detail(format!("started with --accept-data-loss over {}: {loss}", dir.display()));
            append_events_to(&db, [&events, &audit_events], &sequences, vec![event])?;
        }
        let mark = reach.read()?;
        db.flush().map_err(|e| StoreError::Backend(format!("flush failed: {e}")))?;
        mark_file.write(&mark).map_err(|e| {
            StoreError::Backend(format!("cannot write the high-water mark {}: {e}", mark_file.path().display()))
        })?;
        let counts = tree("counts")?;
        let (format, sessions, tokens) = (tree("format")?, tree("sessions")?, tree("tokens")?);
        let (ended_sessions, ended_tokens) = (tree("ended_sessions")?, tree("ended_tokens")?);
        // In this order: the records are binary before they move, and they
        // have moved before they are counted (the active trees are counted).
        sled_codec::migrate(&db, &format, &sessions, &tokens, &tree("refresh")?)?;
        layout::migrate(
            &db,
            &format,
            layout::Moves { sessions: [&sessions, &ended_sessions], tokens: [&tokens, &ended_tokens] },
        )?;
        sled_counts::ensure_kept(&counts, &tree("users")?, &sessions, &tokens)?;
        let high_water = Arc::new(
            HighWaterRecorder::start(mark_file, mark)
                .map_err(|e| StoreError::Backend(format!("cannot start the high-water mark's thread: {e}")))?,
        );

        let flusher = db.clone();
        let covered = reach.clone();
        let recorder = high_water.clone();
        let commit = GroupCommit::start(
            "sigil-group-commit",
            move || {
                // Read before the flush, so that the mark never claims more
                // than the flush made durable.
                let mark = covered.read()?;
                flusher.flush().map_err(|e| StoreError::Backend(format!("flush failed: {e}")))?;
                Ok(mark)
            },
            move |mark| recorder.covered(mark),
        )?;
        Ok(Arc::new(Self {
            trees: Trees {
                users: tree("users")?,
                usernames: tree("usernames")?,
                sessions,
                ended_sessions,
                user_sessions: tree("user_sessions")?,
                tokens,
                ended_tokens,
                session_tokens: tree("session_tokens")?,
                refresh: tree("refresh")?,
                revocations: reach.revocations.clone(),
                expiry: tree("expiry")?,
                ended: tree("ended")?,
                counts,
            },
            keys,
            events,
            audit_events,
            login_failures: tree("login_failures")?,
            clients: service_accounts::ClientTrees {
                accounts: tree("service_accounts")?,
                secret_uses: tree("client_secret_uses")?,
                assertion_ids: tree("client_assertion_ids")?,
            },
            sequences,
            db,
            commit,
            reach,
            high_water,
            dir: dir.to_path_buf(),
            needs_restart: AtomicBool::new(false),
            key_rotation: tokio::sync::Mutex::new(()),
        }))
    }

    /// Raises the stored highest revocation sequence to that of `entries`
    /// (committed just before). Done outside their transaction: the mark
    /// reads the larger of this and the log's last entry, so a crash in
    /// between loses nothing.
    fn note_revocations<'a>(&self, entries: impl IntoIterator<Item = &'a RevocationEntry>) -> Result<(), StoreError> {
        match entries.into_iter().map(|e| e.sequence).max() {
            Some(sequence) => raise_u64(&self.sequences, REVOCATION_SEQUENCE, sequence),
            None => Ok(()),
        }
    }

    /// Whether the disk under the store takes writes (and their sync)
    /// again: writes, syncs and removes a file of a few log segments.
    async fn disk_takes_writes(&self) -> bool {
        let path = self.dir.join("space-probe.tmp");
        let probe = move || {
            let written = std::fs::File::create(&path)
                .and_then(|mut file| file.write_all(&vec![0; SPACE_PROBE_BYTES]).and_then(|()| file.sync_all()));
            let _ = std::fs::remove_file(&path);
            written.is_ok()
        };
        tokio::task::spawn_blocking(probe).await.unwrap_or(false)
    }

    /// Runs `work` as one atomic transaction over all record trees.
    fn transact<T>(&self, work: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        let t = &self.trees;
        (
            &t.users,
            &t.usernames,
            &t.sessions,
            &t.ended_sessions,
            &t.user_sessions,
            &t.tokens,
            &t.ended_tokens,
            &t.session_tokens,
            &t.refresh,
            &t.revocations,
            &t.expiry,
            &t.ended,
            &t.counts,
        )
            .transaction(
                |(
                    users,
                    usernames,
                    sessions,
                    ended_sessions,
                    user_sessions,
                    tokens,
                    ended_tokens,
                    session_tokens,
                    refresh,
                    revocations,
                    expiry,
                    ended,
                    counts,
                )| {
                    work(&Tx {
                        users,
                        usernames,
                        sessions,
                        ended_sessions,
                        user_sessions,
                        tokens,
                        ended_tokens,
                        session_tokens,
                        refresh,
                        revocations,
                        expiry,
                        ended,
                        counts,
                    })
                },
            )
            .map_err(tx_error)
    }

    fn get<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key).map_err(backend)?.map(|bytes| decode(&bytes)).transpose()
    }

    /// A session, token or refresh pointer (binary, see [`sled_codec`]).
    fn record<T: BinaryRecord>(tree: &Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        tree.get(key).map_err(backend)?.map(|bytes| sled_codec::decode(&bytes)).transpose()
    }

    /// A session or token, active (`live`) or ended.
    fn record_in<T: BinaryRecord>([live, ended]: [&Tree; 2], id: &[u8]) -> Result<Option<T>, StoreError> {
        match Self::record(live, id)? {
            Some(record) => Ok(Some(record)),
            None => Self::record(ended, id),
        }
    }

    fn session_trees(&self) -> [&Tree; 2] {
        [&self.trees.sessions, &self.trees.ended_sessions]
    }

    fn token_trees(&self) -> [&Tree; 2] {
        [&self.trees.tokens, &self.trees.ended_tokens]
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
        let (trees, prefix): (Vec<&Tree>, Vec<u8>) = match walk {
            Walk::Owned { index, owner } => (vec![index], owner.to_vec()),
            Walk::Records(records) => (vec![records], Vec::new()),
            Walk::Merged(active, ended) => (vec![active, ended], Vec::new()),
        };
        let start = || match after {
            Some(after) => Bound::Excluded([prefix.as_slice(), after].concat()),
            None => Bound::Included(prefix.clone()),
        };
        let mut walks = trees.into_iter().map(|tree| tree.range::<Vec<u8>, _>((start(), Bound::Unbounded)).keys());
        let keys = match (walks.next(), walks.next()) {
            (Some(first), Some(second)) => Box::new(merge_keys(first, second)) as Box<dyn Iterator<Item = _>>,
            (Some(first), None) => Box::new(first),
            (None, _) => Box::new(std::iter::empty()),
        };
        let mut ids = Vec::with_capacity(limit.min(1024));
        for key in keys {
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

    /// Whether the session or token is active: whether it is in the
    /// active tree of its kind.
    fn is_active(&self, kind: u8, id: &[u8; 16]) -> Result<bool, StoreError> {
        let active = if kind == SESSION { &self.trees.sessions } else { &self.trees.tokens };
        active.contains_key(id).map_err(backend)
    }

    /// One page of a user's token ids after `after`, in id order, keeping
    /// those `keep` accepts: the tokens of the user's sessions, merged. It
    /// reads the keys of every token of the user (there is no index by
    /// user of its own: a user's tokens are its sessions' tokens, and one
    /// more entry per token would cost resident memory for every token).
    fn user_token_ids(
        &self,
        user: &[u8; 16],
        after: Option<&[u8; 16]>,
        mut keep: impl FnMut(&[u8; 16]) -> Result<bool, StoreError>,
        limit: usize,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let mut candidates = Vec::new();
        for session in Self::ids_under(&self.trees.user_sessions, user)? {
            let tokens = Self::ids_under(&self.trees.session_tokens, &session)?;
            candidates.extend(tokens.into_iter().filter(|token| after.is_none_or(|after| token > after)));
        }
        candidates.sort_unstable();
        let mut ids = Vec::with_capacity(limit.min(candidates.len()));
        for id in candidates {
            if ids.len() >= limit {
                break;
            }
            if keep(&id)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

impl Tx<'_> {
    /// Writes `value` under `id` in the tree its state puts it in: `active`
    /// (counted when it comes in) or `ended` (out of `active`, counted
    /// when it leaves). Records only ever go from active to ended.
    fn put_in(
        &self,
        [active, ended]: [&TransactionalTree; 2],
        counted: Counted,
        id: &[u8; 16],
        is_active: bool,
        value: Vec<u8>,
    ) -> TxResult<()> {
        if is_active {
            if active.insert(id.as_slice(), value)?.is_none() {
                sled_counts::add(self.counts, counted, id, 1)?;
            }
        } else {
            ended.insert(id.as_slice(), value)?;
            if active.remove(id.as_slice())?.is_some() {
                sled_counts::add(self.counts, counted, id, -1)?;
            }
        }
        Ok(())
    }

    fn put_session(&self, session: &SessionRecord) -> TxResult<()> {
        let is_active = session.state == SessionState::Active;
        let trees = [self.sessions, self.ended_sessions];
        self.put_in(trees, Counted::ActiveSessions, session.id.as_bytes(), is_active, encode_record(session)?)
    }

    fn put_token(&self, token: &TokenRecord) -> TxResult<()> {
        let is_active = token.state == TokenState::Active;
        let trees = [self.tokens, self.ended_tokens];
        self.put_in(trees, Counted::ActiveTokens, token.id.as_bytes(), is_active, encode_record(token)?)
    }

    /// The session with this id, active or ended.
    fn session(&self, id: &[u8; 16]) -> TxResult<Option<SessionRecord>> {
        match tx_record(self.sessions, id)? {
            Some(session) => Ok(Some(session)),
            None => tx_record(self.ended_sessions, id),
        }
    }

    /// The token with this id, active or ended.
    fn token(&self, id: &[u8; 16]) -> TxResult<Option<TokenRecord>> {
        match tx_record(self.tokens, id)? {
            Some(token) => Ok(Some(token)),
            None => tx_record(self.ended_tokens, id),
        }
    }

    fn put_new_session(&self, session: &SessionRecord) -> TxResult<()> {
        self.put_session(session)?;
        self.user_sessions.insert(pair_key(session.user_id.as_bytes(), session.id.as_bytes()), &[])?;
        self.expiry.insert(time_key(session.expires_at, SESSION, session.id.as_bytes()), &[])?;
        Ok(())
    }

    /// Records a token issued under `session` (as it stands after the
    /// issue). The session's current refresh token, when it expires with
    /// the session, gets no expiry entry of its own: the session's entry
    /// expires both ([`SledStore::expire_due`]); one entry fewer per
    /// session, and every entry costs resident memory.
    fn put_new_token(&self, token: &TokenRecord, session: &SessionRecord) -> TxResult<()> {
        self.put_token(token)?;
        self.session_tokens.insert(pair_key(token.session_id.as_bytes(), token.id.as_bytes()), &[])?;
        if !expires_with(token, session) {
            self.expiry.insert(time_key(token.expires_at, TOKEN, token.id.as_bytes()), &[])?;
        }
        if let Some(hash) = token.refresh_hash {
            let pointer = RefreshRecord { token_id: token.id, session_id: token.session_id };
            self.refresh.insert(hash.0.as_slice(), encode_record(&pointer)?)?;
        }
        Ok(())
    }

    /// Ends an active session (revoked or expired).
    fn end_session(&self, session: &mut SessionRecord, state: SessionState, at: Timestamp) -> TxResult<()> {
        session.end(state, at);
        self.put_ended_session(session, at)
    }

    /// Writes back a session that ended at `at` (into the ended sessions),
    /// and moves it from the expiry index to the ended one.
    fn put_ended_session(&self, session: &SessionRecord, at: Timestamp) -> TxResult<()> {
        self.put_session(session)?;
        self.expiry.remove(time_key(session.expires_at, SESSION, session.id.as_bytes()))?;
        self.ended.insert(time_key(at, SESSION, session.id.as_bytes()), &[])?;
        Ok(())
    }

    /// Ends an active token (revoked, expired or rotated).
    fn end_token(&self, token: &mut TokenRecord, state: TokenState, at: Timestamp) -> TxResult<()> {
        token.end(state, at);
        self.put_ended_token(token, at)
    }

    /// Writes back a token that ended at `at` (into the ended tokens), and
    /// moves it from the expiry index to the ended one.
    fn put_ended_token(&self, token: &TokenRecord, at: Timestamp) -> TxResult<()> {
        self.put_token(token)?;
        self.expiry.remove(time_key(token.expires_at, TOKEN, token.id.as_bytes()))?;
        self.ended.insert(time_key(at, TOKEN, token.id.as_bytes()), &[])?;
        Ok(())
    }

    /// The stored token records among `ids`.
    fn tokens_among(&self, ids: &[[u8; 16]]) -> TxResult<Vec<TokenRecord>> {
        let mut tokens = Vec::with_capacity(ids.len());
        for id in ids {
            tokens.extend(self.token(id)?);
        }
        Ok(tokens)
    }

    /// Writes what the domain decided a rotation changes.
    fn apply_rotation(&self, writes: &RotationWrites, at: Timestamp) -> TxResult<()> {
        self.put_ended_token(&writes.rotated, at)?;
        for token in &writes.issued {
            self.put_new_token(token, &writes.session)?;
        }
        self.put_session(&writes.session)
    }

    /// Writes what the domain decided a revocation ends, appends its log
    /// entries, and returns the outcome.
    fn apply_revocation(&self, writes: RevocationWrites, cause: &RevocationCause) -> TxResult<RevokeOutcome> {
        for session in &writes.ended_sessions {
            self.put_ended_session(session, cause.at)?;
        }
        for token in &writes.ended_tokens {
            self.put_ended_token(token, cause.at)?;
        }
        let entries = writes.log.iter().map(|target| self.log_revocation(*target, cause)).collect::<TxResult<_>>()?;
        Ok(writes.outcome(entries))
    }

    /// Appends to the revocation log, with the cause's time and bound; the
    /// sequence comes from sled's persistent id generator, so it only ever
    /// increases.
    fn log_revocation(&self, target: RevocationTarget, cause: &RevocationCause) -> TxResult<RevocationEntry> {
        log_revocation_in(self.revocations, target, cause)
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
            if tx.users.insert(user.id.as_bytes().as_slice(), encode(user)?)?.is_none() {
                sled_counts::add(tx.counts, Counted::Users, user.id.as_bytes(), 1)?;
            }
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
        sled_counts::read(&self.trees.counts, Counted::Users)
    }

    async fn update_user(
        &self,
        user: &UserRecord,
        revocation: Option<(RevocationTarget, RevocationCause)>,
    ) -> Result<Option<RevocationEntry>, StoreError> {
        let entry = self.transact(|tx| {
            tx.users.insert(user.id.as_bytes().as_slice(), encode(user)?)?;
            revocation.as_ref().map(|(target, cause)| tx.log_revocation(*target, cause)).transpose()
        })?;
        self.note_revocations(&entry)?;
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
            sled_counts::add(tx.counts, Counted::Users, id.as_bytes(), -1)?;
            tx.usernames.remove(user.username.as_bytes())?;
            Ok(true)
        })?;
        // Even when nothing was deleted: a delete of the same user still
        // flushing (or whose flush failed) must not be answered as done.
        self.commit.durable().await?;
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
        let tokens = refresh_rotation::carrying_hash(tokens, session.current_refresh, refresh_hash);
        self.transact(|tx| {
            tx.put_new_session(session)?;
            for token in &tokens {
                tx.put_new_token(token, session)?;
            }
            Ok(())
        })?;
        self.commit.durable().await
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Self::record_in(self.session_trees(), id.as_bytes())
    }

    async fn refresh_record(&self, hash: RefreshTokenHash) -> Result<Option<RefreshRecord>, StoreError> {
        Self::record(&self.trees.refresh, &hash.0)
    }

    async fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        Self::record_in(self.token_trees(), id.as_bytes())
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        // Both records are read inside the transaction, so that the
        // decision and its writes are one atomic step: of two
        // presentations of one token, only one rotates.
        let outcome = self.transact(|tx| {
            let session = tx.session(rotation.session_id.as_bytes())?;
            let presented = tx.token(rotation.presented.as_bytes())?;
            match refresh_rotation::decide(rotation, session, presented) {
                RotationDecision::Rotate(writes) => {
                    tx.apply_rotation(&writes, rotation.now)?;
                    Ok(writes.outcome())
                }
                RotationDecision::Refuse(outcome) => Ok(outcome),
            }
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
        let revoke = |tx: &Tx<'_>, token_ids: &[[u8; 16]]| {
            let Some(session) = tx.session(id.as_bytes())? else {
                return Ok(None);
            };
            let writes = session_revocation::revoke_session(&session, tx.tokens_among(token_ids)?, cause);
            tx.apply_revocation(writes, cause).map(Some)
        };
        let outcome = self.transact(|tx| revoke(tx, &token_ids))?;
        // A rotation that committed between the scan above and the
        // transaction added tokens the transaction did not see; mark them
        // too (the session, ended now, is not ended or logged again). They
        // are not counted, as before. (The session's log entry already
        // makes them fail Validate.)
        if outcome.as_ref().is_some_and(|o| o.sessions > 0) {
            let late: Vec<[u8; 16]> = Self::ids_under(&self.trees.session_tokens, id.as_bytes())?
                .into_iter()
                .filter(|t| !token_ids.contains(t))
                .collect();
            if !late.is_empty() {
                self.transact(|tx| revoke(tx, &late))?;
            }
        }
        if let Some(outcome) = &outcome {
            self.note_revocations(&outcome.entries)?;
        }
        // Even when this call changed nothing: the revocation it repeats
        // may still be flushing, or its flush may have failed, and "already
        // revoked" must not be answered before that one is durable.
        self.commit.durable().await?;
        Ok(outcome)
    }

    async fn revoke_token(&self, id: TokenId, cause: &RevocationCause) -> Result<Option<RevokeOutcome>, StoreError> {
        let outcome = self.transact(|tx| {
            let Some(token) = tx.token(id.as_bytes())? else {
                return Ok(None);
            };
            tx.apply_revocation(session_revocation::revoke_token(&token, cause), cause).map(Some)
        })?;
        if let Some(outcome) = &outcome {
            self.note_revocations(&outcome.entries)?;
        }
        // As in `revoke_session`: never "already revoked" before durable.
        self.commit.durable().await?;
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
            None if query.include_inactive => Walk::Merged(&self.trees.sessions, &self.trees.ended_sessions),
            None => Walk::Records(&self.trees.sessions),
        };
        // Owner indexes hold ended sessions too; the others need no check.
        let check_active = query.user.is_some() && !query.include_inactive;
        let keep = |id: &[u8; 16]| if check_active { self.is_active(SESSION, id) } else { Ok(true) };
        let ids = self.page_ids(walk, query.after.as_ref().map(SessionId::as_bytes), keep, query.limit)?;
        ids.iter().filter_map(|id| Self::record_in(self.session_trees(), id).transpose()).collect()
    }

    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        let owned = query.session.is_some() || query.user.is_some();
        let check_active = owned && !query.include_inactive;
        let keep = |id: &[u8; 16]| if check_active { self.is_active(TOKEN, id) } else { Ok(true) };
        let after = query.after.as_ref().map(TokenId::as_bytes);
        let limit = query.limit;
        let ids = match (&query.session, &query.user) {
            (Some(session), _) => {
                let walk = Walk::Owned { index: &self.trees.session_tokens, owner: session.as_bytes() };
                self.page_ids(walk, after, keep, limit)?
            }
            (None, Some(user)) => self.user_token_ids(user.as_bytes(), after, keep, limit)?,
            (None, None) if query.include_inactive => {
                self.page_ids(Walk::Merged(&self.trees.tokens, &self.trees.ended_tokens), after, keep, limit)?
            }
            (None, None) => self.page_ids(Walk::Records(&self.trees.tokens), after, keep, limit)?,
        };
        let records: Vec<TokenRecord> = ids
            .iter()
            .filter_map(|id| Self::record_in(self.token_trees(), id).transpose())
            .collect::<Result<_, _>>()?;
        // With both filters, the session index was walked; the user must match.
        Ok(records.into_iter().filter(|t| query.user.is_none_or(|u| t.user_id == u)).collect())
    }

    async fn count_active(&self) -> Result<(u64, u64), StoreError> {
        let sessions = sled_counts::read(&self.trees.counts, Counted::ActiveSessions)?;
        let tokens = sled_counts::read(&self.trees.counts, Counted::ActiveTokens)?;
        Ok((sessions, tokens))
    }

    async fn touch_sessions(&self, seen: &[(SessionId, Timestamp)]) -> Result<(), StoreError> {
        for (id, at) in seen {
            self.transact(|tx| {
                if let Some(mut session) = tx.session(id.as_bytes())?
                    && session.last_seen_at < *at
                {
                    session.last_seen_at = *at;
                    tx.put_session(&session)?;
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
            let items = self.transact(|tx| {
                tx.expiry.remove(key.as_slice())?;
                let mut items = Vec::new();
                match kind {
                    SESSION => {
                        if let Some(mut s) = tx_record::<SessionRecord>(tx.sessions, &id)?
                            && s.state == SessionState::Active
                        {
                            // Its current refresh token has no expiry
                            // entry when it expires with the session.
                            if let Some(mut t) = tx_record::<TokenRecord>(tx.tokens, s.current_refresh.as_bytes())?
                                && expires_with(&t, &s)
                            {
                                tx.end_token(&mut t, TokenState::Expired, now)?;
                                items.push(Expired::Token(Box::new(t)));
                            }
                            tx.end_session(&mut s, SessionState::Expired, now)?;
                            items.push(Expired::Session(Box::new(s)));
                        }
                    }
                    _ => {
                        if let Some(mut t) = tx_record::<TokenRecord>(tx.tokens, &id)?
                            && t.state == TokenState::Active
                        {
                            tx.end_token(&mut t, TokenState::Expired, now)?;
                            items.push(Expired::Token(Box::new(t)));
                        }
                    }
                }
                Ok(items)
            })?;
            expired.extend(items);
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
                // Only ended records are in the `ended` index.
                if kind == SESSION {
                    let Some(s) = tx_record::<SessionRecord>(tx.ended_sessions, &id)? else { return Ok(0) };
                    tx.ended_sessions.remove(id.as_slice())?;
                    tx.user_sessions.remove(pair_key(s.user_id.as_bytes(), &id))?;
                } else {
                    let Some(t) = tx_record::<TokenRecord>(tx.ended_tokens, &id)? else { return Ok(0) };
                    tx.ended_tokens.remove(id.as_slice())?;
                    tx.session_tokens.remove(pair_key(t.session_id.as_bytes(), &id))?;
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
        // start, so the check and the insert cannot race.
        if let Some(first) = key_rotation::first_key(&self.signing_keys().await?, key) {
            self.keys.insert(first.kid.as_bytes(), encode_plain(first)?).map_err(backend)?;
            self.commit.durable().await?;
        }
        self.signing_keys().await
    }

    async fn rotate_signing_key(&self, key: &SigningKeyRecord) -> Result<Vec<SigningKeyRecord>, StoreError> {
        // Rotations are rare and made by admins; reading the keys before
        // the transaction keeps it to plain writes, and the lock keeps two
        // rotations from superseding the same key (two active keys).
        let _rotating = self.key_rotation.lock().await;
        let rotation = key_rotation::rotate(&self.signing_keys().await?, key);
        self.keys
            .transaction(|keys| {
                for old in &rotation.superseded {
                    keys.insert(old.kid.as_bytes(), encode(old)?)?;
                }
                keys.insert(rotation.activated.kid.as_bytes(), encode(&rotation.activated)?)?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.commit.durable().await?;
        self.signing_keys().await
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<(), StoreError> {
        // Read and written in one transaction: of two retirements at once
        // (the sweep and an emergency rotation), the first one's time stays.
        self.keys
            .transaction(|keys| {
                if let Some(key) = tx_get::<SigningKeyRecord>(keys, kid.as_bytes())?
                    && let Some(retired) = key_rotation::retire(&key, at)
                {
                    keys.insert(kid.as_bytes(), encode(&retired)?)?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        // Even when already retired: that retirement may still be flushing.
        self.commit.durable().await
    }
}

#[async_trait]
impl RevocationLog for SledStore {
    async fn append_revocation(
        &self,
        target: RevocationTarget,
        cause: &RevocationCause,
    ) -> Result<RevocationEntry, StoreError> {
        let entry = self.transact(|tx| tx.log_revocation(target, cause))?;
        self.note_revocations([&entry])?;
        self.commit.durable().await?;
        Ok(entry)
    }

    async fn revocations_live(&self, now: Timestamp) -> Result<Vec<RevocationEntry>, StoreError> {
        let mut entries = Vec::new();
        for value in self.trees.revocations.iter().values() {
            let entry: RevocationEntry = decode(&value.map_err(backend)?)?;
            if entry.expires_at > now {
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

    async fn purge_revocations(&self, now: Timestamp) -> Result<usize, StoreError> {
        // Bounds were set under whatever TTL was in force, so they do not
        // follow sequence order: every entry is looked at (the log holds
        // only entries that still matter, plus those purged next).
        let mut purged = 0;
        for item in self.trees.revocations.iter() {
            let (key, value) = item.map_err(backend)?;
            let entry: RevocationEntry = decode(&value)?;
            if entry.expires_at <= now {
                self.trees.revocations.remove(key).map_err(backend)?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

impl SledStore {
    /// Drops all but the newest `keep` events of the noise tree. An audit
    /// event found there (stored before classes existed) moves to the audit
    /// tree instead, to be kept by age like the others.
    fn trim_noise(&self, keep: usize, audit_before: Timestamp) -> Result<usize, StoreError> {
        let excess = self.events.len().saturating_sub(keep);
        let doomed: Vec<(sled::IVec, sled::IVec)> =
            self.events.iter().take(excess).collect::<Result<_, _>>().map_err(backend)?;
        let mut trimmed = 0;
        for (key, value) in &doomed {
            let event: EventRecord = decode(value)?;
            if event.kind.class() == EventClass::Audit && event.occurred_at >= audit_before {
                self.audit_events.insert(key, value).map_err(backend)?;
            } else {
                trimmed += 1;
            }
            self.events.remove(key).map_err(backend)?;
        }
        Ok(trimmed)
    }

    /// Drops audit events that occurred before `before`, oldest first.
    fn trim_audit(&self, before: Timestamp) -> Result<usize, StoreError> {
        let mut trimmed = 0;
        for item in self.audit_events.iter() {
            let (key, value) = item.map_err(backend)?;
            let event: EventRecord = decode(&value)?;
            // Sequence order is (near enough) time order: stop at the first
            // event still to keep.
            if event.occurred_at >= before {
                break;
            }
            self.audit_events.remove(key).map_err(backend)?;
            trimmed += 1;
        }
        Ok(trimmed)
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn append_events(&self, events: Vec<EventRecord>) -> Result<Vec<EventRecord>, StoreError> {
        append_events_to(&self.db, [&self.events, &self.audit_events], &self.sequences, events)
    }

    async fn latest_event_sequence(&self) -> Result<u64, StoreError> {
        let mut latest = 0;
        for tree in [&self.events, &self.audit_events] {
            latest = latest.max(last_sequence(tree)?);
        }
        Ok(latest)
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        // The two trees merged by sequence (big-endian keys sort as numbers).
        let from = || (Bound::Excluded(after.to_be_bytes()), Bound::Unbounded);
        let mut noise = self.events.range(from()).peekable();
        let mut audit = self.audit_events.range(from()).peekable();
        let mut out = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let take_noise = match (noise.peek(), audit.peek()) {
                (None, None) => break,
                (Some(Ok((a, _))), Some(Ok((b, _)))) => a <= b,
                (Some(_), None) | (Some(Err(_)), _) => true,
                (None, Some(_)) | (_, Some(Err(_))) => false,
            };
            let next = if take_noise { noise.next() } else { audit.next() };
            let Some(item) = next else { break };
            let (_, value) = item.map_err(backend)?;
            out.push(decode(&value)?);
        }
        Ok(out)
    }

    async fn trim_events(&self, keep_noise: usize, audit_before: Timestamp) -> Result<usize, StoreError> {
        Ok(self.trim_noise(keep_noise, audit_before)? + self.trim_audit(audit_before)?)
    }
}

impl SledStore {
    /// Runs `change` on the failed-login counter under `key` as a
    /// compare-and-swap: sled reruns it if another attempt changed the
    /// counter in between, so none is lost, and the winning run's outcome
    /// is returned once durable. A counter left with nothing in it goes.
    async fn update_counter<R>(
        &self,
        key: &str,
        mut change: impl FnMut(&mut FailureRecord) -> R,
    ) -> Result<R, StoreError> {
        let mut outcome = None;
        self.login_failures
            .update_and_fetch(key.as_bytes(), |old| {
                let mut record: FailureRecord = old.and_then(|bytes| decode(bytes).ok()).unwrap_or_default();
                outcome = Some(change(&mut record));
                if record.is_clear() { None } else { encode_plain(&record).ok() }
            })
            .map_err(backend)?;
        self.commit.durable().await?;
        outcome.ok_or_else(|| StoreError::Backend("the failed-login counter was not updated".into()))
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
        self.update_counter(key, |record| {
            let locked = record.record_failure(now, policy);
            (record.clone(), locked)
        })
        .await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        if self.login_failures.remove(key.as_bytes()).map_err(backend)?.is_some() {
            self.commit.durable().await?;
        }
        Ok(())
    }

    async fn purge_login_failures(
        &self,
        now: Timestamp,
        window: std::time::Duration,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut purged = 0;
        for item in self.login_failures.iter() {
            let (key, value) = item.map_err(backend)?;
            let record: FailureRecord = decode(&value)?;
            // Only if unchanged since read: a concurrent attempt wins.
            if record.is_stale(now, window)
                && self.login_failures.compare_and_swap(&key, Some(value), None::<&[u8]>).map_err(backend)?.is_ok()
            {
                purged += 1;
                if purged >= limit {
                    break;
                }
            }
        }
        Ok(purged)
    }

    async fn login_attempt(
        &self,
        key: &str,
        step: AttemptStep,
        now: Timestamp,
        policy: &LockoutPolicy,
    ) -> Result<AttemptOutcome, StoreError> {
        self.update_counter(key, |record| record.apply(step, now, policy)).await
    }
}

#[async_trait]
impl Store for SledStore {
    async fn close(&self) -> Result<(), StoreError> {
        let mark = self.reach.read()?;
        self.commit.durable().await?;
        self.db.flush_async().await.map(|_| ()).map_err(backend)?;
        // Everything is durable: the mark records all of it.
        self.high_water
            .write_now(mark)
            .map_err(|e| StoreError::Backend(format!("cannot write the high-water mark: {e}")))
    }

    /// A real write and a real flush: sled's reads (and its in-memory
    /// writes) keep working when its files cannot be written.
    async fn ping(&self) -> Result<(), StoreError> {
        let probe = async {
            self.sequences.insert(PROBE, &Timestamp::now().as_millis().to_be_bytes()).map_err(backend)?;
            self.commit.durable().await
        };
        let result = probe.await;
        if result.is_err() && self.disk_takes_writes().await {
            // sled's I/O errors are sticky: it will not write again in
            // this process, although the disk would.
            self.needs_restart.store(true, Ordering::Release);
        }
        result
    }

    fn needs_restart(&self) -> bool {
        self.needs_restart.load(Ordering::Acquire)
    }
}

/// Appends `events` with increasing sequences and raises the stored
/// highest event sequence.
fn append_events_to(
    db: &sled::Db,
    [noise, audit]: [&Tree; 2],
    sequences: &Tree,
    events: Vec<EventRecord>,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut stored = Vec::with_capacity(events.len());
    for mut event in events {
        // Sequences start at 1: `after_sequence = 0` means "from the start".
        // One generator for both trees: one order for replay.
        event.sequence = db.generate_id().map_err(backend)? + 1;
        let tree = match event.kind.class() {
            EventClass::Audit => audit,
            EventClass::Noise => noise,
        };
        tree.insert(event.sequence.to_be_bytes(), encode_plain(&event)?).map_err(backend)?;
        stored.push(event);
    }
    if let Some(last) = stored.last() {
        raise_u64(sequences, EVENT_SEQUENCE, last.sequence)?;
    }
    Ok(stored)
}

/// Why sled could not open `dir`; when its files are damaged (a bad
/// checksum in `conf`, or a corrupt snapshot), says what to do.
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => StoreError::DataLoss(format!(
            "cannot open the sled store in {}: its files are damaged or not sled's ({e}); \
             restore the data directory from a backup (the whole directory, {} included)",
            dir.display(),
            super::high_water::FILE_NAME
        )),
        e => StoreError::Backend(format!("cannot open sled store at {}: {e}", dir.display())),
    }
}

/// Compares the store as it opened with its high-water mark; returns the
/// loss accepted (with [`OnDataLoss::Accept`]), or refuses.
fn check_reach(
    dir: &Path,
    mark_file: &HighWaterFile,
    reach: &Reach,
    on_loss: OnDataLoss,
) -> Result<Option<String>, StoreError> {
    let recovered = reach.read()?;
    let loss = match mark_file.read() {
        Err(unreadable) => Some(format!(
            "{unreadable}, so the store cannot be checked against it (restore the file from a backup of the whole directory, or accept that what the store lost, if anything, stays unknown)"
        )),
        Ok(None) if recovered.held_data => {
            // No mark beside a store with data: the first start of a
            // version that keeps one (an upgrade). Not a loss; the mark is
            // created from what the store holds.
            tracing::info!(data_dir = %dir.display(), "no high-water mark yet beside this store; recording one now");
            None
        }
        Ok(None) => None,
        Ok(Some(recorded)) => recorded.shortfall(&recovered),
    };
    let Some(loss) = loss else {
        if on_loss == OnDataLoss::Accept {
            tracing::warn!(data_dir = %dir.display(), "--accept-data-loss is set but the store lost nothing; remove it, or a later loss would be accepted without asking");
        }
        return Ok(None);
    };
    match on_loss {
        OnDataLoss::Refuse => Err(StoreError::DataLoss(format!(
            "refusing to start: the store in {dir} has lost data it had committed: {loss}. \
             The high-water mark {mark} records how far its history had reached. Ways out: \
             (1) stop, restore the data directory {dir} from a backup (the whole directory, {file} included), and start again; or \
             (2) to serve what the store still holds, start once with --accept-data-loss (SIGIL_ACCEPT_DATA_LOSS=true): \
             lost revocations make the sessions and tokens they ended valid again until those expire, \
             a store without signing key gets a new key and bootstrap admin, \
             and the loss is recorded as a STORE_LOSS_ACCEPTED audit event",
            dir = dir.display(),
            mark = mark_file.path().display(),
            file = super::high_water::FILE_NAME,
        ))),
        OnDataLoss::Accept => {
            tracing::error!(
                data_dir = %dir.display(),
                loss = %loss,
                "ACCEPTING DATA LOSS (--accept-data-loss): serving what the store still holds; the loss is recorded as a STORE_LOSS_ACCEPTED audit event and the high-water mark is reset"
            );
            Ok(Some(loss))
        }
    }
}

/// The sequence in the last key of a tree keyed by big-endian u64 (0 when
/// empty).
fn last_sequence(tree: &Tree) -> Result<u64, StoreError> {
    let last = tree.last().map_err(backend)?;
    Ok(last.and_then(|(key, _)| key.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
}

fn stored_u64(tree: &Tree, key: &[u8]) -> Result<u64, StoreError> {
    let value = tree.get(key).map_err(backend)?;
    Ok(value.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
}

/// Raises the u64 under `key` to at least `value`, atomically.
fn raise_u64(tree: &Tree, key: &[u8], value: u64) -> Result<(), StoreError> {
    tree.fetch_and_update(key, |old| {
        let old = old.and_then(|v| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        Some(old.max(value).to_be_bytes().to_vec())
    })
    .map(|_| ())
    .map_err(backend)
}

/// Whether `token` is `session`'s current refresh token and expires with
/// it (the only active refresh token of a session is its current one).
fn expires_with(token: &TokenRecord, session: &SessionRecord) -> bool {
    token.id == session.current_refresh && token.expires_at == session.expires_at
}

/// Two walks of keys merged into one ascending order (an error is passed
/// on as soon as it is met).
fn merge_keys(
    first: impl Iterator<Item = sled::Result<sled::IVec>>,
    second: impl Iterator<Item = sled::Result<sled::IVec>>,
) -> impl Iterator<Item = sled::Result<sled::IVec>> {
    let (mut first, mut second) = (first.peekable(), second.peekable());
    std::iter::from_fn(move || {
        let take_first = match (first.peek(), second.peek()) {
            (None, None) => return None,
            (Some(Ok(a)), Some(Ok(b))) => a <= b,
            (Some(_), None) | (Some(Err(_)), _) => true,
            (None, Some(_)) | (_, Some(Err(_))) => false,
        };
        if take_first { first.next() } else { second.next() }
    })
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

/// Appends a revocation-log entry inside a transaction over `revocations`
/// (see [`Tx::log_revocation`]).
fn log_revocation_in(
    revocations: &TransactionalTree,
    target: RevocationTarget,
    cause: &RevocationCause,
) -> TxResult<RevocationEntry> {
    // + 1: sequence 0 means "before every entry" to `revocations_after`, and
    // sled's ids start at 0. Ids only grow, so a store written before this
    // never sees one reused.
    let sequence = revocations.generate_id()? + 1;
    let entry = RevocationEntry { sequence, target, at: cause.at, expires_at: cause.expires_at };
    revocations.insert(sequence.to_be_bytes().as_slice(), encode(&entry)?)?;
    Ok(entry)
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn tx_record<T: BinaryRecord>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => sled_codec::decode(&bytes).map(Some).map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

fn encode_record<T: BinaryRecord>(record: &T) -> TxResult<Vec<u8>> {
    record.encode().map_err(ConflictableTransactionError::Abort)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{event::EventKind, keys::KeyState, session::TokenKind};

    /// Before events had classes, every event was in `events`: an old
    /// admin action is kept by age once trimmed, old noise goes by count.
    #[tokio::test]
    async fn legacy_audit_events_move_to_the_audit_tree_instead_of_being_trimmed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path()).expect("opens");
        let old = [(1u64, EventKind::UserCreated), (2, EventKind::LoginFailed), (3, EventKind::LoginFailed)];
        for (sequence, kind) in old {
            let mut event = EventRecord::new(kind).detail(format!("e{sequence}"));
            event.sequence = sequence;
            store.events.insert(sequence.to_be_bytes(), encode_plain(&event).expect("encode")).expect("insert");
        }
        store.trim_events(1, Timestamp::now().minus(Duration::from_secs(3600))).await.expect("trim");
        let kept: Vec<String> =
            store.events_after(0, 10).await.expect("replay").into_iter().map(|e| e.detail).collect();
        assert_eq!(kept, ["e1", "e3"]);
        assert!(store.audit_events.contains_key(1u64.to_be_bytes()).expect("read"), "moved to the audit tree");
        assert_eq!(store.latest_event_sequence().await.expect("latest"), 3);
    }

    /// Every entry of every tree of the store but the kept counts (a
    /// fixed few keys, shared by every session).
    fn entries(store: &SledStore) -> usize {
        let names = store.db.tree_names();
        names
            .iter()
            .filter(|name| name.as_ref() != b"counts")
            .map(|name| store.db.open_tree(name).expect("tree").len())
            .sum()
    }

    /// sled keeps a page-table entry in memory for every page of every
    /// tree, and a leaf page holds at most 16 entries, so the resident
    /// memory of a large store follows the number of entries a session
    /// leaves (BENCHMARKS.md, #18 item 2): a login (a session, its access
    /// and refresh tokens) may write no more than this layout's 9.
    #[tokio::test]
    async fn a_login_leaves_nine_sled_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path()).expect("opens");
        let now = Timestamp::now();
        let session = crate::domain::session::fixtures::session(now);
        let before = entries(&store);
        let refresh = crate::domain::session::NewRefreshToken::generate().expect("random");
        let tokens = [
            crate::domain::session::fixtures::token(&session, session.current_refresh, TokenKind::Refresh),
            crate::domain::session::fixtures::token(&session, TokenId::generate(), TokenKind::Access),
        ];
        store.create_session(&session, refresh.hash, &tokens).await.expect("login");
        assert_eq!(entries(&store) - before, 9, "sled entries one login writes");
    }

    /// Two admins rotating at once: each rotation reads the keys before
    /// its transaction (sled transactions cannot iterate), so without
    /// serialising them both would supersede the same key and leave two
    /// active keys.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_rotations_leave_one_active_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("opens"));
        let first = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
        store.insert_first_signing_key(&first).await.expect("first key");
        for round in 0..20 {
            let start = Arc::new(tokio::sync::Barrier::new(4));
            let rotations: Vec<_> = (0..4)
                .map(|_| {
                    let (store, start) = (Arc::clone(&store), Arc::clone(&start));
                    tokio::spawn(async move {
                        let key = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
                        start.wait().await;
                        store.rotate_signing_key(&key).await.expect("rotate");
                    })
                })
                .collect();
            for rotation in rotations {
                rotation.await.expect("joined");
            }
            let keys = store.signing_keys().await.expect("keys");
            let active = keys.iter().filter(|k| k.state == KeyState::Active).count();
            assert_eq!(active, 1, "round {round}: {active} active keys");
        }
    }
}
