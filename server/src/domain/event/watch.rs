//! One watcher of the audit trail (`WatchEvents`): the stored events after
//! the sequence it names, then the live ones, each once and in order, for
//! as long as its caller may see them.
//!
//! The policy is the domain's, not the adapter's:
//! - the live receiver subscribes before the replay starts, so nothing
//!   falls between the two, and a live event the replay already sent is
//!   skipped;
//! - a replay is read in batches, and the caller is re-checked before each;
//! - writers never wait on a watcher: one that falls behind (the hub's
//!   backlog or its own buffer full) ends with [`WatchEnd::Lagged`], which
//!   names where to resume;
//! - the caller's token is re-checked whenever what a bearer may do can
//!   have changed and when it expires, so a caller who lost the right to
//!   see events is sent nothing more.

use std::sync::Arc;

use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc, oneshot, watch,
};

use super::EventRecord;
use crate::domain::{
    DomainError, Identity,
    subscription::{Subscription, WatchEnd, until_expiry},
    token::VerifiedToken,
};

/// Events a watcher may have in flight before it counts as too slow.
const WATCHER_BUFFER: usize = 256;
/// Stored events read per replay step.
const REPLAY_BATCH: usize = 500;

/// The events of one watch, in sequence order, then, unless the watcher
/// left first, why it ended.
pub type EventWatch = Subscription<Arc<EventRecord>>;

impl Identity {
    /// Starts a watch of the audit trail for `caller`, whose right to watch
    /// the adapter checked: the stored events after `after` (none when
    /// `None`), then the live ones. `after` beyond the newest event is
    /// [`DomainError::OutOfRange`].
    pub async fn watch_events(
        self: &Arc<Self>,
        caller: Arc<VerifiedToken>,
        after: Option<u64>,
    ) -> Result<EventWatch, DomainError> {
        // A sequence this store never reached: the watcher's store was
        // restored from an older copy, or it is another store. Resuming
        // there would wait in silence for a sequence that means something
        // else, or nothing, here.
        if let Some(after) = after {
            let newest = self.events().latest_sequence().await?;
            if after > newest {
                return Err(DomainError::OutOfRange(format!(
                    "after_sequence {after} is beyond the newest event, {newest} (was the store restored from a \
                     backup?): resume without after_sequence, or with after_sequence={newest} at most"
                )));
            }
        }
        // Subscribe before replaying so nothing falls between the two.
        let live = self.events().subscribe();
        let authorization = self.authorization_changes();
        let (sender, events) = mpsc::channel(WATCHER_BUFFER);
        let (end_sender, end) = oneshot::channel();
        let watcher = Watcher { identity: self.clone(), caller, sender, last: 0 };
        tokio::spawn(async move {
            if let Err(reason) = watcher.run(after, live, authorization).await {
                let _ = end_sender.send(reason);
            }
        });
        Ok(Subscription::new(events, end, None))
    }
}

/// The task behind one [`EventWatch`].
struct Watcher {
    identity: Arc<Identity>,
    caller: Arc<VerifiedToken>,
    sender: mpsc::Sender<Arc<EventRecord>>,
    /// The sequence of the last event sent.
    last: u64,
}

impl Watcher {
    /// Replays, then follows; `Ok` when the watcher left.
    async fn run(
        mut self,
        after: Option<u64>,
        live: broadcast::Receiver<Arc<EventRecord>>,
        authorization: watch::Receiver<u64>,
    ) -> Result<(), WatchEnd> {
        if let Some(after) = after {
            self.last = after;
            if !self.replay().await? {
                return Ok(());
            }
        }
        self.follow(live, authorization).await
    }

    /// Sends the stored events after `last`; `false` when the watcher left.
    async fn replay(&mut self) -> Result<bool, WatchEnd> {
        loop {
            // A replay is long: the caller is re-checked per batch.
            self.recheck()?;
            let batch = self.identity.events().replay(self.last, REPLAY_BATCH).await.map_err(WatchEnd::Failed)?;
            if batch.is_empty() {
                return Ok(true);
            }
            for event in batch {
                self.last = event.sequence;
                if self.sender.send(Arc::new(event)).await.is_err() {
                    return Ok(false);
                }
            }
        }
    }

    /// Sends live events until the watch ends; `Ok` when the watcher left.
    async fn follow(
        &mut self,
        mut live: broadcast::Receiver<Arc<EventRecord>>,
        mut authorization: watch::Receiver<u64>,
    ) -> Result<(), WatchEnd> {
        let shutting_down = self.identity.shutting_down();
        tokio::pin!(shutting_down);
        let expiry = tokio::time::sleep(until_expiry(&self.caller));
        tokio::pin!(expiry);
        loop {
            let event = tokio::select! {
                // Authorization first: nothing more is sent to a caller who
                // lost the right to see it.
                biased;
                changed = authorization.changed() => {
                    if changed.is_err() {
                        return Err(WatchEnd::Closed);
                    }
                    self.recheck()?;
                    continue;
                }
                () = &mut expiry => {
                    self.recheck()?;
                    expiry.as_mut().reset(tokio::time::Instant::now() + until_expiry(&self.caller));
                    continue;
                }
                () = &mut shutting_down => return Err(WatchEnd::ShuttingDown { resume_after: self.last }),
                event = live.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return Ok(()),
            };
            if event.sequence <= self.last {
                continue;
            }
            let sequence = event.sequence;
            // Never wait on a watcher: writers must not slow down for it.
            match self.sender.try_send(event) {
                Ok(()) => self.last = sequence,
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
        Err(WatchEnd::Lagged { resume_after: self.last })
    }

    /// Whether the caller may still watch.
    fn recheck(&self) -> Result<(), WatchEnd> {
        self.identity.recheck(&self.caller).map_err(WatchEnd::Refused)
    }
}
