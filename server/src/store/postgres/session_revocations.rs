//! Session revocations, several callers' in one transaction (group commit).
//!
//! A revocation's log entry takes its sequence under an advisory lock held
//! until commit (sequence order is commit order: see the engine's module
//! docs). With a transaction per revocation, that lock serialises every
//! revocation's commit, WAL flush included. So an instance revokes sessions
//! through one writer task: it takes every revocation queued (up to
//! [`MAX_REVOCATIONS`]), and in one transaction locks the sessions (in id
//! order, so that two instances' batches cannot deadlock) and then their
//! active tokens, asks the domain what each revocation ends, writes that
//! with a few statements for the whole batch, appends the log entries under
//! the lock, taken last, and commits: one lock hold and one flush for the
//! batch. Each caller is answered only once that transaction committed.
//!
//! Each caller's outcome stays its own: if the batch fails before its
//! commit, every revocation is made again in a transaction of its own, so
//! one caller's failure never fails another's. A failed `COMMIT` is
//! reported to all of that batch's callers, none of whom was acknowledged.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Pool};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::{REVOCATION_LOCK, announce, body, checkout, execute, pg, query};
use crate::domain::{
    SessionId,
    port::{RevocationCause, RevokeOutcome, StoreError},
    revocation::RevocationEntry,
    session::{SessionRecord, SessionState, TokenRecord},
    session_revocation::{self, RevocationWrites},
};

/// Revocations waiting for the writer; a caller past it waits to queue.
const QUEUE: usize = 1024;
/// Revocations made by one transaction.
const MAX_REVOCATIONS: usize = 128;

type Answer = Result<Option<RevokeOutcome>, StoreError>;

/// One caller's revocation and where to answer it.
struct Revocation {
    session: SessionId,
    cause: RevocationCause,
    answer: oneshot::Sender<Answer>,
}

/// Why a batch was not committed.
enum Failure {
    /// Nothing was committed: each revocation may be retried on its own.
    BeforeCommit(StoreError),
    /// `COMMIT` failed: the outcome is PostgreSQL's to tell, not retried.
    Commit(StoreError),
}

/// The instance's session revoker; the task stops when this is dropped.
pub(super) struct SessionRevoker {
    queue: mpsc::Sender<Revocation>,
    task: JoinHandle<()>,
}

impl SessionRevoker {
    pub(super) fn start(pool: Pool) -> Self {
        let (queue, revocations) = mpsc::channel(QUEUE);
        Self { queue, task: tokio::spawn(write(pool, revocations)) }
    }

    /// Revokes `session` for `cause`, durably: `None` if it is not stored.
    pub(super) async fn revoke(&self, session: SessionId, cause: &RevocationCause) -> Answer {
        let stopped = || StoreError::Backend("the session revoker stopped".into());
        let (answer, answered) = oneshot::channel();
        let revocation = Revocation { session, cause: cause.clone(), answer };
        self.queue.send(revocation).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl Drop for SessionRevoker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The writer task: a batch of what is queued, committed, answered; again.
async fn write(pool: Pool, mut queue: mpsc::Receiver<Revocation>) {
    let mut batch = Vec::with_capacity(MAX_REVOCATIONS);
    while queue.recv_many(&mut batch, MAX_REVOCATIONS).await > 0 {
        let mut revocations = std::mem::take(&mut batch);
        // Id order: the order every batch locks its sessions in.
        revocations.sort_by_key(|r| r.session.uuid());
        match commit(&pool, &revocations).await {
            Ok(outcomes) => {
                for (revocation, outcome) in revocations.into_iter().zip(outcomes) {
                    // A caller that gave up no longer listens; its revocation stands.
                    let _ = revocation.answer.send(Ok(outcome));
                }
            }
            Err(Failure::BeforeCommit(_)) if revocations.len() > 1 => {
                for revocation in revocations {
                    let outcome = commit(&pool, std::slice::from_ref(&revocation)).await;
                    let _ = revocation.answer.send(match outcome {
                        Ok(mut outcomes) => Ok(outcomes.pop().flatten()),
                        Err(Failure::BeforeCommit(e) | Failure::Commit(e)) => Err(e),
                    });
                }
            }
            Err(Failure::BeforeCommit(e) | Failure::Commit(e)) => {
                for revocation in revocations {
                    let _ = revocation.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Makes `revocations` (in id order) in one transaction; the outcome of
/// each, in their order.
async fn commit(pool: &Pool, revocations: &[Revocation]) -> Result<Vec<Option<RevokeOutcome>>, Failure> {
    let mut client = checkout(pool).await.map_err(Failure::BeforeCommit)?;
    let tx = client.transaction().await.map_err(|e| Failure::BeforeCommit(pg(e)))?;
    let outcomes = revoke_all(&tx, revocations).await.map_err(Failure::BeforeCommit)?;
    tx.commit().await.map_err(|e| Failure::Commit(pg(e)))?;
    Ok(outcomes)
}

async fn revoke_all<C: GenericClient + Sync>(
    tx: &C,
    revocations: &[Revocation],
) -> Result<Vec<Option<RevokeOutcome>>, StoreError> {
    let ids: Vec<Uuid> = revocations.iter().map(|r| r.session.uuid()).collect();
    // Sessions before tokens, as a rotation takes them: the rotation then
    // finds its session inactive, or has committed its new tokens, which
    // the second read (its own snapshot, after the first's locks) sees.
    // One round trip: see `rotate_refresh`.
    let ids: [&(dyn ToSql + Sync); 1] = [&ids];
    let (session_rows, token_rows) = futures::try_join!(
        query(tx, "SELECT body FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE", &ids),
        query(tx, "SELECT body FROM tokens WHERE session_id = ANY($1) AND active ORDER BY id FOR UPDATE", &ids),
    )?;
    let mut sessions: HashMap<SessionId, SessionRecord> = HashMap::with_capacity(session_rows.len());
    for row in &session_rows {
        let session: SessionRecord = body(row)?;
        sessions.insert(session.id, session);
    }
    let mut tokens: HashMap<SessionId, Vec<TokenRecord>> = HashMap::new();
    for row in &token_rows {
        let token: TokenRecord = body(row)?;
        tokens.entry(token.session_id).or_default().push(token);
    }

    // What each ends, as if made one after the other: a session named
    // twice is ended by the first and found ended by the second.
    let mut decided: Vec<Option<RevocationWrites>> = Vec::with_capacity(revocations.len());
    for revocation in revocations {
        let Some(session) = sessions.get_mut(&revocation.session) else {
            decided.push(None);
            continue;
        };
        let active = tokens.remove(&revocation.session).unwrap_or_default();
        let writes = session_revocation::revoke_session(session, active, &revocation.cause);
        if let Some(ended) = writes.ended_sessions.first() {
            *session = ended.clone();
        }
        decided.push(Some(writes));
    }
    let causes = revocations.iter().map(|r| &r.cause);
    let done: Vec<(&RevocationCause, &RevocationWrites)> =
        causes.zip(&decided).filter_map(|(cause, writes)| Some((cause, writes.as_ref()?))).collect();
    futures::try_join!(end_sessions(tx, &done), end_tokens(tx, &done))?;
    let mut entries = log(tx, &done).await?.into_iter();

    Ok(decided
        .into_iter()
        .map(|writes| {
            writes.map(|writes| {
                let mine = entries.by_ref().take(writes.log.len()).collect();
                writes.outcome(mine)
            })
        })
        .collect())
}

/// Writes back every session ended, in one statement.
async fn end_sessions<C: GenericClient + Sync>(
    tx: &C,
    done: &[(&RevocationCause, &RevocationWrites)],
) -> Result<(), StoreError> {
    let ended: Vec<(&RevocationCause, &SessionRecord)> =
        done.iter().flat_map(|(cause, writes)| writes.ended_sessions.iter().map(move |s| (*cause, s))).collect();
    if ended.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ended.iter().map(|(_, s)| s.id.uuid()).collect();
    let active: Vec<bool> = ended.iter().map(|(_, s)| s.state == SessionState::Active).collect();
    let current: Vec<Uuid> = ended.iter().map(|(_, s)| s.current_refresh.uuid()).collect();
    let at: Vec<i64> = ended.iter().map(|(cause, _)| cause.at.as_millis()).collect();
    let bodies: Vec<Json<&SessionRecord>> = ended.iter().map(|(_, s)| Json(*s)).collect();
    execute(
        tx,
        "UPDATE sessions s SET active = v.active, current_refresh = v.current_refresh, ended_at = v.ended_at,
                body = v.body
         FROM unnest($1::uuid[], $2::bool[], $3::uuid[], $4::bigint[], $5::jsonb[])
           AS v(id, active, current_refresh, ended_at, body)
         WHERE s.id = v.id",
        &[&ids, &active, &current, &at, &bodies],
    )
    .await
    .map(drop)
}

/// Writes back every token ended, in one statement.
async fn end_tokens<C: GenericClient + Sync>(
    tx: &C,
    done: &[(&RevocationCause, &RevocationWrites)],
) -> Result<(), StoreError> {
    let ended: Vec<(&RevocationCause, &TokenRecord)> =
        done.iter().flat_map(|(cause, writes)| writes.ended_tokens.iter().map(move |t| (*cause, t))).collect();
    if ended.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ended.iter().map(|(_, t)| t.id.uuid()).collect();
    let at: Vec<i64> = ended.iter().map(|(cause, _)| cause.at.as_millis()).collect();
    let bodies: Vec<Json<&TokenRecord>> = ended.iter().map(|(_, t)| Json(*t)).collect();
    execute(
        tx,
        "UPDATE tokens t SET active = false, ended_at = v.ended_at, body = v.body
         FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[]) AS v(id, ended_at, body)
         WHERE t.id = v.id",
        &[&ids, &at, &bodies],
    )
    .await
    .map(drop)
}

/// Appends every revocation's log entries, in the batch's order, under
/// the log's lock (the last lock the transaction takes: its holder waits
/// on nobody until it commits).
async fn log<C: GenericClient + Sync>(
    tx: &C,
    done: &[(&RevocationCause, &RevocationWrites)],
) -> Result<Vec<RevocationEntry>, StoreError> {
    let total: usize = done.iter().map(|(_, writes)| writes.log.len()).sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    let count = i64::try_from(total).unwrap_or(i64::MAX);
    let (lock, count): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&REVOCATION_LOCK], [&count]);
    let (_, rows) = futures::try_join!(
        execute(tx, "SELECT pg_advisory_xact_lock($1)", &lock),
        query(tx, "SELECT nextval('revocation_sequence') FROM generate_series(1, $1::bigint)", &count),
    )?;
    let mut sequences: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    if sequences.len() != total {
        return Err(StoreError::Corrupt(format!("nextval returned {} of {total} sequences", sequences.len())));
    }
    // Taken under the lock: every one is above every committed one.
    sequences.sort_unstable();
    let targets = done.iter().flat_map(|(cause, writes)| writes.log.iter().map(move |target| (*cause, *target)));
    let entries: Vec<RevocationEntry> = targets
        .zip(&sequences)
        .map(|((cause, target), sequence)| RevocationEntry {
            sequence: u64::try_from(*sequence).unwrap_or(0),
            target,
            at: cause.at,
            expires_at: cause.expires_at,
        })
        .collect();
    let at: Vec<i64> = entries.iter().map(|e| e.at.as_millis()).collect();
    let expires_at: Vec<i64> = entries.iter().map(|e| e.expires_at.as_millis()).collect();
    let bodies: Vec<Json<&RevocationEntry>> = entries.iter().map(Json).collect();
    let columns: [&(dyn ToSql + Sync); 4] = [&sequences, &at, &expires_at, &bodies];
    futures::try_join!(
        execute(
            tx,
            "INSERT INTO revocations (sequence, at, expires_at, body)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::jsonb[])",
            &columns,
        ),
        announce(tx, "revocation"),
    )?;
    Ok(entries)
}
