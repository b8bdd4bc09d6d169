//! What one edge verifier's revocation stream (`WatchRevocations`) sends,
//! and when it ends. The adapter only converts.
//!
//! The stream rests on the durable revocation log, not on a copy of it:
//! - it starts with the key set; then, unless the subscriber can resume, a
//!   snapshot: every entry that can still matter up to one sequence `S`
//!   (the highest known committed when it starts), read from the log in
//!   chunks, framed by [`RevocationUpdate::SnapshotBegin`] /
//!   [`RevocationUpdate::SnapshotEnd`];
//! - then it follows the log: whenever a revocation is committed (here, or
//!   by another instance and caught up on), it reads the entries after the
//!   last one it covered, up to the highest known committed, in sequence
//!   order. Both engines make an entry visible only once every entry with
//!   a lower sequence is (see [`RevocationLog::revocations_after`]), so no
//!   entry is skipped; entries past their bound are skipped, since they
//!   cover no live token;
//! - the key set (with when each superseded key stopped signing) again
//!   whenever it changes, and a heartbeat every
//!   `revocation_heartbeat`;
//! - a subscriber may resume: with the store's epoch and a sequence this
//!   store reached, it gets only the entries after it. Anything else gets
//!   a snapshot, which is always safe (the subscriber replaces what it held).
//!
//! The epoch is the store's identity: the key id of its first signing key.
//! A store gets that key on its first start and never deletes a key, so
//! the epoch lasts as long as the store and a new data directory or
//! database has another.
//!
//! Writers never wait on a subscriber: once live, one whose buffer is full
//! ends with [`WatchEnd::Lagged`] naming where to resume (the snapshot and
//! a resume wait for the subscriber instead, since they read the durable
//! log at its pace). The snapshot and a resume send the log a chunk per
//! update ([`RevocationUpdate::Entries`]), live entries come one per
//! update; either way a subscriber has at most about `SUBSCRIBER_BUFFER`
//! entries waiting for it. The caller is re-checked from current state
//! whenever a revocation or the keys change (also while the snapshot waits
//! on a subscriber that does not read), per snapshot chunk, and when its
//! token expires; a caller who lost the right is sent nothing more, apart
//! from the new key set (public anyway), which tells a verifier at once
//! that a key was distrusted.
//!
//! [`RevocationLog::revocations_after`]: super::port::RevocationLog::revocations_after

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::{
    DomainError, Identity, Timestamp, UserId,
    keys::{KeyRing, SigningKeyRecord},
    revocation::RevocationEntry,
    subscription::{Subscription, WatchEnd, until_expiry},
    token::VerifiedToken,
    user::{ADMIN_ROLE, VERIFIER_ROLE},
};

/// Updates a subscriber may have in flight before it counts as too slow.
const SUBSCRIBER_BUFFER: usize = 1024;
/// Log entries read per step of a snapshot or a catch-up (and sent as one
/// update): a million-entry snapshot is a few thousand updates, each small
/// enough to encode without holding up the connection.
const CHUNK: usize = 256;
/// Updates a snapshot or a catch-up may have queued for its subscriber:
/// each holds up to `CHUNK` entries, so as many entries wait for a slow
/// reader as live updates may.
const CHUNKS_AHEAD: usize = SUBSCRIBER_BUFFER / CHUNK;
/// The longest epoch accepted in a request (an epoch is a key id, 43
/// characters; anything longer is no epoch of any store).
pub const MAX_EPOCH_BYTES: usize = 64;

/// The verification keys as a stream sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    /// The key set (JWKS JSON).
    pub jwks_json: String,
    /// When each superseded key of it stopped signing (seconds since the
    /// epoch), by `kid`: without it a verifier would accept what a leaked
    /// old key signs after its end, which `Validate` refuses.
    pub signing_ends: Vec<(String, i64)>,
}

impl StreamKeys {
    fn of(ring: &KeyRing) -> Self {
        Self { jwks_json: ring.jwks_json().to_string(), signing_ends: ring.signing_ends() }
    }
}

/// One message of a revocation stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationUpdate {
    /// The verification keys.
    Keys(StreamKeys),
    /// A snapshot consistent at `sequence` starts.
    SnapshotBegin {
        /// The store's identity.
        epoch: Arc<str>,
        /// Every entry up to here that still matters follows.
        sequence: u64,
    },
    /// One log entry (live).
    Entry(RevocationEntry),
    /// Consecutive log entries, in sequence order (a chunk of a snapshot or
    /// of a catch-up).
    Entries(Vec<RevocationEntry>),
    /// The snapshot is complete.
    SnapshotEnd {
        /// The store's identity.
        epoch: Arc<str>,
        /// The same as the snapshot's beginning.
        sequence: u64,
    },
    /// The subscriber has every entry through `latest_sequence`.
    Heartbeat {
        /// The store's identity.
        epoch: Arc<str>,
        /// The last sequence this stream covered.
        latest_sequence: u64,
        /// The server's clock.
        at: Timestamp,
    },
}

/// Where a subscriber stands: what it asks to resume from.
#[derive(Debug, Clone, Default)]
pub struct ResumePoint {
    /// The last sequence it applied; 0 for none.
    pub after_sequence: u64,
    /// The epoch it saw; empty when unknown.
    pub epoch: String,
}

/// The updates of one revocation stream, then, unless the subscriber left
/// first, why it ended.
pub type RevocationWatch = Subscription<RevocationUpdate>;

/// The open revocation streams: their bounds (overall and per caller), and
/// how many were ended for falling behind (counted when it happens, not
/// when the subscriber, still reading its backlog, gets to hear of it).
pub(crate) struct RevocationStreams {
    places: Arc<Semaphore>,
    limit: usize,
    /// Streams open per caller; holds only callers with one open, so it
    /// never has more entries than `limit`.
    per_caller: Arc<Mutex<HashMap<UserId, usize>>>,
    per_caller_limit: usize,
    aborted: AtomicU64,
}

/// One stream's place, overall and among its caller's: given back when the
/// stream's task ends.
struct Place {
    _overall: OwnedSemaphorePermit,
    caller: UserId,
    per_caller: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.per_caller.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

impl RevocationStreams {
    /// At most `limit` streams at once, and `per_caller_limit` of one caller.
    pub(crate) fn new(limit: usize, per_caller_limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            places: Arc::new(Semaphore::new(limit)),
            limit,
            per_caller: Arc::default(),
            per_caller_limit: per_caller_limit.max(1),
            aborted: AtomicU64::new(0),
        }
    }

    /// A place for a stream of `caller` (a user, or a service account by
    /// its client id): one credential must not be able to take every place
    /// and lock the other verifiers out.
    fn take(&self, caller: UserId) -> Result<Place, DomainError> {
        let mut open = self.per_caller.lock().unwrap_or_else(PoisonError::into_inner);
        let held = open.get(&caller).copied().unwrap_or(0);
        if held >= self.per_caller_limit {
            tracing::warn!(limit = self.per_caller_limit, "revocation stream refused: too many open for one caller");
            return Err(DomainError::ResourceExhausted {
                message: format!(
                    "this caller already holds {held} revocation streams (max_revocation_streams_per_user = {}); \
                     close one or retry later",
                    self.per_caller_limit
                ),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        let overall = self.take_overall()?;
        *open.entry(caller).or_insert(0) += 1;
        Ok(Place { _overall: overall, caller, per_caller: self.per_caller.clone() })
    }

    fn take_overall(&self) -> Result<OwnedSemaphorePermit, DomainError> {
        self.places.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(limit = self.limit, "revocation stream refused: too many open");
            DomainError::ResourceExhausted {
                message: format!(
                    "too many revocation streams are open (max_revocation_streams = {}); retry later",
                    self.limit
                ),
                retry_after: Some(Duration::from_secs(1)),
            }
        })
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.limit - self.places.available_permits()
    }

    /// Streams ended for falling behind, since the start.
    pub(crate) fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::Relaxed)
    }
}

/// The store's epoch from its signing keys: the id of the first key.
pub(crate) fn epoch_of(records: &[SigningKeyRecord]) -> Arc<str> {
    records.iter().min_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid))).map_or_else(
        // A store always holds a key once opened; an empty list is only
        // seen by a caller that did not open one.
        || Arc::from(""),
        |first| Arc::from(first.kid.as_str()),
    )
}

impl Identity {
    /// Starts a revocation stream for `caller` (a bearer the adapter
    /// validated): refused unless it has role `verifier` or `admin`, when
    /// the resume point is malformed, or when every place is taken.
    pub async fn watch_revocations(
        self: &Arc<Self>,
        caller: Arc<VerifiedToken>,
        resume: ResumePoint,
    ) -> Result<RevocationWatch, DomainError> {
        if !caller.has_role(VERIFIER_ROLE) && !caller.has_role(ADMIN_ROLE) {
            return Err(DomainError::PermissionDenied(
                "WatchRevocations needs a bearer token of a user with role verifier or admin".into(),
            ));
        }
        if resume.epoch.len() > MAX_EPOCH_BYTES {
            return Err(DomainError::InvalidArgument(format!(
                "epoch is at most {MAX_EPOCH_BYTES} bytes: send back the epoch of a snapshot_begin, or none"
            )));
        }
        let place = self.revocation_streams.take(caller.user_id)?;
        // Subscribe before reading where the log stands, so that a
        // revocation committed in between wakes the stream.
        let changes = self.authorization_changes();
        let (sender, updates) = mpsc::channel(SUBSCRIBER_BUFFER);
        let (end_sender, end) = oneshot::channel();
        let keys = self.key_ring();
        let rechecks = changes.clone();
        let subscriber = Subscriber { identity: self.clone(), caller, sender, last: 0, keys, rechecks };
        let identity = self.clone();
        tokio::spawn(async move {
            // The task, not the subscription, holds the place: a stream
            // that ended (its bearer revoked, say) gives it back at once,
            // even while its subscriber, not reading, keeps the updates
            // still buffered for it.
            let _place = place;
            if let Err(reason) = subscriber.run(resume, changes).await {
                if matches!(reason, WatchEnd::Lagged { .. }) {
                    identity.revocation_streams.aborted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("revocation stream ended: the subscriber fell too far behind");
                }
                let _ = end_sender.send(reason);
            }
        });
        Ok(Subscription::new(updates, end, None))
    }

    /// The store's identity, as revocation streams name it.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// Revocation streams open now.
    pub fn revocation_streams(&self) -> usize {
        self.revocation_streams.open()
    }

    /// Revocation streams ended for falling behind, since the start.
    pub fn revocation_streams_aborted(&self) -> u64 {
        self.revocation_streams.aborted()
    }

    /// Whether a subscriber at `resume` can be sent only what it missed:
    /// it follows this store and names a sequence this store reached.
    fn can_resume(&self, resume: &ResumePoint) -> bool {
        resume.after_sequence > 0
            && *resume.epoch == *self.epoch
            && resume.after_sequence <= self.peers.committed_through()
    }
}

/// Whether the subscriber is still there.
enum Delivery {
    Sent,
    Gone,
}

/// The task behind one [`RevocationWatch`].
struct Subscriber {
    identity: Arc<Identity>,
    caller: Arc<VerifiedToken>,
    sender: mpsc::Sender<RevocationUpdate>,
    /// Every entry up to this sequence has been sent (or skipped as past
    /// its bound).
    last: u64,
    /// The key ring whose key set was sent last.
    keys: Arc<KeyRing>,
    /// When to re-check the caller while waiting on the subscriber (a
    /// receiver of its own, so that `follow` still sees every change).
    rechecks: watch::Receiver<u64>,
}

impl Subscriber {
    /// Sends the key set and the snapshot or what was missed, then follows;
    /// `Ok` when the subscriber left.
    async fn run(mut self, resume: ResumePoint, changes: watch::Receiver<u64>) -> Result<(), WatchEnd> {
        let keys = RevocationUpdate::Keys(StreamKeys::of(&self.keys));
        if let Delivery::Gone = self.wait_send(keys).await? {
            return Ok(());
        }
        let delivered = if self.identity.can_resume(&resume) {
            self.last = resume.after_sequence;
            self.catch_up().await?
        } else {
            self.snapshot().await?
        };
        match delivered {
            Delivery::Sent => self.follow(changes).await,
            Delivery::Gone => Ok(()),
        }
    }

    /// Every entry that still matters up to the highest known committed,
    /// framed; the caller re-checked per chunk.
    async fn snapshot(&mut self) -> Result<Delivery, WatchEnd> {
        let epoch = self.identity.epoch().clone();
        let sequence = self.identity.peers.committed_through();
        if let Delivery::Gone =
            self.wait_send(RevocationUpdate::SnapshotBegin { epoch: epoch.clone(), sequence }).await?
        {
            return Ok(Delivery::Gone);
        }
        self.last = 0;
        if let Delivery::Gone = self.send_through(sequence).await? {
            return Ok(Delivery::Gone);
        }
        self.wait_send(RevocationUpdate::SnapshotEnd { epoch, sequence }).await
    }

    /// The entries after `last` up to the highest known committed, at the
    /// subscriber's pace (a resume).
    async fn catch_up(&mut self) -> Result<Delivery, WatchEnd> {
        let through = self.identity.peers.committed_through();
        self.send_through(through).await
    }

    /// Sends the entries after `last` up to `through` chunk by chunk, at the
    /// subscriber's pace, re-checking the caller before each chunk.
    async fn send_through(&mut self, through: u64) -> Result<Delivery, WatchEnd> {
        while self.last < through {
            self.recheck()?;
            let (entries, covered) = self.read_through(through).await?;
            if !entries.is_empty()
                && let Delivery::Gone = self.wait_send(RevocationUpdate::Entries(entries)).await?
            {
                return Ok(Delivery::Gone);
            }
            self.last = covered;
        }
        Ok(Delivery::Sent)
    }

    /// Follows the log, the keys and the caller's right until the stream
    /// ends; `Ok` when the subscriber left.
    async fn follow(&mut self, mut changes: watch::Receiver<u64>) -> Result<(), WatchEnd> {
        let shutting_down = self.identity.shutting_down();
        tokio::pin!(shutting_down);
        let expiry = tokio::time::sleep(until_expiry(&self.caller));
        tokio::pin!(expiry);
        let period = self.identity.settings.revocation_heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sender = self.sender.clone();
        loop {
            let delivery = tokio::select! {
                biased;
                () = sender.closed() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(WatchEnd::Closed);
                    }
                    // The key set first: it is public, and a verifier
                    // whose bearer a distrust just ended must still learn
                    // that the key is gone.
                    if let Delivery::Gone = self.offer_keys()? {
                        return Ok(());
                    }
                    self.recheck()?;
                    self.forward().await?
                }
                () = &mut expiry => {
                    self.recheck()?;
                    expiry.as_mut().reset(tokio::time::Instant::now() + until_expiry(&self.caller));
                    continue;
                }
                () = &mut shutting_down => return Err(WatchEnd::ShuttingDown { resume_after: self.last }),
                _ = heartbeat.tick() => {
                    // A change whose signal was coalesced is picked up here
                    // at the latest.
                    match self.forward().await? {
                        Delivery::Sent => self.offer(RevocationUpdate::Heartbeat {
                            epoch: self.identity.epoch().clone(),
                            latest_sequence: self.last,
                            at: Timestamp::now(),
                        })?,
                        Delivery::Gone => Delivery::Gone,
                    }
                }
            };
            if let Delivery::Gone = delivery {
                return Ok(());
            }
        }
    }

    /// Sends the live entries after `last`, never waiting on the subscriber.
    async fn forward(&mut self) -> Result<Delivery, WatchEnd> {
        let through = self.identity.peers.committed_through();
        while self.last < through {
            let (entries, covered) = self.read_through(through).await?;
            for entry in entries {
                let sequence = entry.sequence;
                // A subscriber cut short resumes after the last entry it got.
                if let Delivery::Gone = self.offer(RevocationUpdate::Entry(entry))? {
                    return Ok(Delivery::Gone);
                }
                self.last = sequence;
            }
            self.last = covered;
        }
        Ok(Delivery::Sent)
    }

    /// The next chunk of entries after `last` with a sequence up to
    /// `through`, without those past their bound (they cover no live
    /// token), and the sequence the chunk covers the log through.
    async fn read_through(&self, through: u64) -> Result<(Vec<RevocationEntry>, u64), WatchEnd> {
        let mut chunk = self
            .identity
            .store
            .revocations_after(self.last, CHUNK)
            .await
            .map_err(|e| WatchEnd::Failed(DomainError::from(e)))?;
        let full = chunk.len() == CHUNK;
        chunk.retain(|entry| entry.sequence <= through);
        let covered = match chunk.last() {
            // A full chunk within `through`: more may follow it.
            Some(last) if full && chunk.len() == CHUNK => last.sequence,
            _ => through,
        };
        let now = Timestamp::now();
        chunk.retain(|entry| entry.expires_at > now);
        Ok((chunk, covered))
    }

    /// Sends the key set if it changed since it was last sent.
    fn offer_keys(&mut self) -> Result<Delivery, WatchEnd> {
        let ring = self.identity.key_ring();
        if Arc::ptr_eq(&ring, &self.keys) {
            return Ok(Delivery::Sent);
        }
        let (sent, keys) = (StreamKeys::of(&self.keys), StreamKeys::of(&ring));
        self.keys = ring;
        if keys != sent { self.offer(RevocationUpdate::Keys(keys)) } else { Ok(Delivery::Sent) }
    }

    /// Sends a live update without waiting: a full buffer ends the stream.
    fn offer(&self, update: RevocationUpdate) -> Result<Delivery, WatchEnd> {
        match self.sender.try_send(update) {
            Ok(()) => Ok(Delivery::Sent),
            Err(mpsc::error::TrySendError::Full(_)) => Err(WatchEnd::Lagged { resume_after: self.last }),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Delivery::Gone),
        }
    }

    /// Sends an update at the subscriber's pace (once fewer than
    /// `CHUNKS_AHEAD` updates wait for it), re-checking the caller whenever
    /// a revocation or the keys change, and when its token expires, while
    /// the subscriber does not read: a bearer that lost the right ends the
    /// stream instead of holding its place for as long as it stalls.
    async fn wait_send(&mut self, update: RevocationUpdate) -> Result<Delivery, WatchEnd> {
        let expiry = tokio::time::sleep(until_expiry(&self.caller));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                biased;
                // Every slot but the ones the queued updates may hold: the
                // permits not used go back when `room` is dropped.
                room = self.sender.reserve_many(SUBSCRIBER_BUFFER + 1 - CHUNKS_AHEAD) => {
                    let Some(slot) = room.ok().and_then(|mut room| room.next()) else { return Ok(Delivery::Gone) };
                    slot.send(update);
                    return Ok(Delivery::Sent);
                }
                changed = self.rechecks.changed() => {
                    if changed.is_err() {
                        return Err(WatchEnd::Closed);
                    }
                    self.recheck()?;
                }
                () = &mut expiry => {
                    self.recheck()?;
                    expiry.as_mut().reset(tokio::time::Instant::now() + until_expiry(&self.caller));
                }
            }
        }
    }

    /// Whether the caller may still watch.
    fn recheck(&self) -> Result<(), WatchEnd> {
        self.identity.recheck(&self.caller).map_err(WatchEnd::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_the_first_key_whatever_came_after() {
        let first = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
        let later = SigningKeyRecord::generate_ed25519(first.created_at.plus(Duration::from_secs(60))).expect("key");
        let epoch = epoch_of(std::slice::from_ref(&first));
        assert_eq!(&*epoch, first.kid.as_str());
        assert_eq!(epoch_of(&[later.clone(), first.clone()]), epoch, "a rotation keeps the epoch");
        assert_ne!(epoch_of(std::slice::from_ref(&later)), epoch, "another store, another epoch");
        assert!(epoch.len() <= MAX_EPOCH_BYTES, "an epoch fits the request's bound");
    }
}
