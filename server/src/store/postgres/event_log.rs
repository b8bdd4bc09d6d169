//! The event log's writer: one transaction for the events of every caller
//! waiting at that moment (group commit).
//!
//! Event sequences are taken under an advisory lock held until commit, so
//! that sequence order is commit order (see the engine's module docs). With
//! a transaction per caller, that lock serialises the callers' commits, WAL
//! flush included, and every write that announces an event (a login, a
//! refresh, a revocation) then waits its turn for one flush per call. So an
//! instance appends through one writer task: it takes every append queued
//! (up to [`MAX_APPENDS`]), stores them in one transaction (one lock hold,
//! one flush) and answers each caller only once that transaction committed.
//!
//! Each caller's outcome stays its own: if the batch fails before its
//! commit, every caller's events are stored again in a transaction of
//! their own, so one caller's unstorable events never fail another's. A
//! failed `COMMIT` is reported to all of that batch's callers, none of
//! whom was acknowledged.

use deadpool_postgres::{GenericClient, Pool};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_postgres::types::Json;

use super::{EVENT_LOCK, announce, checkout, execute, pg, query};
use crate::domain::{
    event::{EventClass, EventRecord},
    port::StoreError,
};

/// Appends waiting for the writer; a caller past it waits to queue.
const QUEUE: usize = 1024;
/// Appends stored by one transaction.
const MAX_APPENDS: usize = 256;

/// One caller's events and where to answer it.
struct Append {
    events: Vec<EventRecord>,
    stored: oneshot::Sender<Result<Vec<EventRecord>, StoreError>>,
}

/// Why a batch was not stored.
enum Failure {
    /// Nothing was committed: each append may be retried on its own.
    BeforeCommit(StoreError),
    /// `COMMIT` failed: the outcome is PostgreSQL's to tell, not retried.
    Commit(StoreError),
}

/// The instance's event writer; the task stops when this is dropped.
pub(super) struct EventWriter {
    queue: mpsc::Sender<Append>,
    task: JoinHandle<()>,
}

impl EventWriter {
    pub(super) fn start(pool: Pool) -> Self {
        let (queue, appends) = mpsc::channel(QUEUE);
        Self { queue, task: tokio::spawn(write(pool, appends)) }
    }

    /// Stores `events` in order with increasing sequences, durably, and
    /// returns them with their sequences.
    pub(super) async fn append(&self, events: Vec<EventRecord>) -> Result<Vec<EventRecord>, StoreError> {
        if events.is_empty() {
            return Ok(events);
        }
        let stopped = || StoreError::Backend("the event log's writer stopped".into());
        let (stored, answer) = oneshot::channel();
        self.queue.send(Append { events, stored }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The writer task: a batch of what is queued, stored, answered; again.
async fn write(pool: Pool, mut queue: mpsc::Receiver<Append>) {
    let mut batch = Vec::with_capacity(MAX_APPENDS);
    while queue.recv_many(&mut batch, MAX_APPENDS).await > 0 {
        let mut appends = std::mem::take(&mut batch);
        match store(&pool, &mut appends).await {
            Ok(()) => answer_all(appends, Ok),
            Err(Failure::Commit(e)) => answer_all(appends, |_| Err(e.clone())),
            Err(Failure::BeforeCommit(e)) if appends.len() == 1 => answer_all(appends, |_| Err(e.clone())),
            Err(Failure::BeforeCommit(_)) => {
                for mut append in appends {
                    let outcome = match store(&pool, std::slice::from_mut(&mut append)).await {
                        Ok(()) => Ok(append.events),
                        Err(Failure::BeforeCommit(e) | Failure::Commit(e)) => Err(e),
                    };
                    // A caller that gave up no longer listens; its events stand.
                    let _ = append.stored.send(outcome);
                }
            }
        }
    }
}

fn answer_all(appends: Vec<Append>, outcome: impl Fn(Vec<EventRecord>) -> Result<Vec<EventRecord>, StoreError>) {
    for append in appends {
        let _ = append.stored.send(outcome(append.events));
    }
}

/// Stores every append's events in one transaction, numbering them in
/// queue order (the sequences set in place).
async fn store(pool: &Pool, appends: &mut [Append]) -> Result<(), Failure> {
    let mut client = checkout(pool).await.map_err(Failure::BeforeCommit)?;
    let tx = client.transaction().await.map_err(|e| Failure::BeforeCommit(pg(e)))?;
    insert(&tx, appends).await.map_err(Failure::BeforeCommit)?;
    tx.commit().await.map_err(|e| Failure::Commit(pg(e)))
}

async fn insert<C: GenericClient + Sync>(tx: &C, appends: &mut [Append]) -> Result<(), StoreError> {
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    // One global sequence for all instances, in commit order.
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOCK]).await?;
    let rows = query(
        tx,
        "SELECT nextval('event_sequence') FROM generate_series(1, $1::bigint)",
        &[&i64::try_from(total).unwrap_or(i64::MAX)],
    )
    .await?;
    let mut sequences: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    if sequences.len() != total {
        return Err(StoreError::Corrupt(format!("nextval returned {} of {total} sequences", sequences.len())));
    }
    // Under the lock every number taken is above every committed one; in
    // ascending order they number the events in the order queued.
    sequences.sort_unstable();
    let events = appends.iter_mut().flat_map(|a| a.events.iter_mut());
    for (event, sequence) in events.zip(&sequences) {
        event.sequence = u64::try_from(*sequence).unwrap_or(0);
    }
    let events = || appends.iter().flat_map(|a| a.events.iter());
    let audit: Vec<bool> = events().map(|e| e.kind.class() == EventClass::Audit).collect();
    let occurred: Vec<i64> = events().map(|e| e.occurred_at.as_millis()).collect();
    let bodies: Vec<Json<&EventRecord>> = events().map(Json).collect();
    execute(
        tx,
        "INSERT INTO events (sequence, audit, occurred_at, body)
         SELECT * FROM unnest($1::bigint[], $2::bool[], $3::bigint[], $4::jsonb[])",
        &[&sequences, &audit, &occurred, &bodies],
    )
    .await?;
    announce(tx, "events").await
}
