//! Kept counts for the sled engine: how many users, active sessions and
//! active tokens the store holds, without walking a tree.
//!
//! sled's `Tree::len` visits every entry: at a million sessions
//! `GetStats` and every `/metrics` scrape walked three million keys. Instead, the transaction that adds or
//! removes an entry of the counted tree changes its count in the same
//! transaction, and only when the entry really came or went (sled's
//! `insert` and `remove` return what was there), so the count mirrors the
//! tree exactly.
//!
//! Crash safety: the count and the entry it counts are written in one sled
//! transaction, which sled recovers whole or not at all after a `kill -9`;
//! so a count can never disagree with its tree, and recovery never
//! recounts. The only recount is for a store written before counts were
//! kept (no [`COUNTED`] marker): once, at open, before anything writes.
//!
//! Every transaction that adds a session or a token changes a count, so
//! one key per count would make concurrent transactions conflict (sled
//! reruns a transaction whose reads changed before it committed). Each
//! count is spread over [`STRIPES`] keys, chosen by the record id's last
//! (random) byte; a read sums them.

use sled::{Tree, transaction::TransactionalTree};

use crate::domain::port::StoreError;

/// What is counted: the byte each count's keys start with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Entries of the `users` tree.
    Users,
    /// Entries of the active `sessions` tree.
    ActiveSessions,
    /// Entries of the active `tokens` tree.
    ActiveTokens,
}

impl Counted {
    fn tag(self) -> u8 {
        match self {
            Self::Users => b'U',
            Self::ActiveSessions => b'S',
            Self::ActiveTokens => b'T',
        }
    }
}

/// Keys per count.
const STRIPES: u8 = 16;

/// Present once the counts are kept (written with the first counts).
const COUNTED: &[u8] = b"counted";

/// The key of `id`'s stripe of `what`.
fn stripe_key(what: Counted, id: &[u8; 16]) -> [u8; 2] {
    [what.tag(), id[15] % STRIPES]
}

fn read_i64(bytes: &[u8]) -> Result<i64, StoreError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt("a kept count is not 8 bytes".into()))?;
    Ok(i64::from_be_bytes(bytes))
}

/// Changes `what` by `delta` for the record `id`, inside a transaction.
pub(crate) fn add(
    counts: &TransactionalTree,
    what: Counted,
    id: &[u8; 16],
    delta: i64,
) -> Result<(), sled::transaction::ConflictableTransactionError<StoreError>> {
    let key = stripe_key(what, id);
    let old = match counts.get(key)? {
        Some(bytes) => read_i64(&bytes).map_err(sled::transaction::ConflictableTransactionError::Abort)?,
        None => 0,
    };
    counts.insert(&key, &(old + delta).to_be_bytes())?;
    Ok(())
}

/// The current value of `what`: the sum of its stripes.
pub(crate) fn read(counts: &Tree, what: Counted) -> Result<u64, StoreError> {
    let mut total = 0i64;
    for item in counts.scan_prefix([what.tag()]) {
        let (_, value) = item.map_err(|e| StoreError::Backend(e.to_string()))?;
        total += read_i64(&value)?;
    }
    u64::try_from(total).map_err(|_| StoreError::Corrupt(format!("the kept count of {what:?} is negative ({total})")))
}

/// Makes sure the counts are kept: on a store written before they were,
/// counts `users` and the active `sessions` and `tokens` once and records
/// the marker with them. Runs at open, while nothing else writes (sled
/// holds the directory for this process and the store is not yet shared),
/// after the records have moved to the trees of their state.
pub(crate) fn ensure_kept(counts: &Tree, users: &Tree, sessions: &Tree, tokens: &Tree) -> Result<(), StoreError> {
    let backend = |e: sled::Error| StoreError::Backend(e.to_string());
    if counts.contains_key(COUNTED).map_err(backend)? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let totals = [
        (Counted::Users, users.len()),
        (Counted::ActiveSessions, sessions.len()),
        (Counted::ActiveTokens, tokens.len()),
    ];
    let mut batch = sled::Batch::default();
    for (what, total) in totals {
        for stripe in 0..STRIPES {
            let value = if stripe == 0 { total as i64 } else { 0 };
            batch.insert(&[what.tag(), stripe], &value.to_be_bytes());
        }
    }
    batch.insert(COUNTED, &[]);
    counts.apply_batch(batch).map_err(backend)?;
    tracing::info!(
        users = totals[0].1,
        active_sessions = totals[1].1,
        active_tokens = totals[2].1,
        took_ms = started.elapsed().as_millis() as u64,
        "counted the store once; the counts are kept from now on"
    );
    Ok(())
}
