//! What every long-lived stream of the domain shares (`WatchEvents`,
//! `WatchRevocations`): the stream an adapter reads — the items a watcher
//! task sent, then, unless the subscriber left first, why it ended — and
//! the reasons a watch ends. What each stream sends, and when it ends, is
//! decided by its own module (`event::watch`, `revocation_stream`).

use std::{
    future::Future as _,
    pin::Pin,
    task::{Context, Poll, ready},
};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{DomainError, Timestamp, token::ValidationFailure, token::VerifiedToken};

/// Why a watch ended, when it was not the watcher who left.
#[derive(Debug)]
pub enum WatchEnd {
    /// The watcher fell too far behind.
    Lagged {
        /// The last sequence it was sent: where to resume.
        resume_after: u64,
    },
    /// The process is shutting down.
    ShuttingDown {
        /// The last sequence the watcher was sent: where to resume, on
        /// another instance.
        resume_after: u64,
    },
    /// The identity core is gone (the process is shutting down).
    Closed,
    /// The caller's token no longer authorizes the watch.
    Refused(ValidationFailure),
    /// The stored history could not be read.
    Failed(DomainError),
}

/// The items of one watch, in the order its task sent them, then, unless
/// the subscriber left first, why it ended. Dropping it tells the task to
/// stop (its sends fail) and frees the place it held, if any.
pub struct Subscription<T> {
    items: mpsc::Receiver<T>,
    end: Option<oneshot::Receiver<WatchEnd>>,
    /// The place among a bounded number of streams, given back on drop.
    _place: Option<OwnedSemaphorePermit>,
}

impl<T> Subscription<T> {
    /// The stream over what a task sends on `items`, ended by what it
    /// sends on `end`; holding `place` while it lives.
    pub(crate) fn new(
        items: mpsc::Receiver<T>,
        end: oneshot::Receiver<WatchEnd>,
        place: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self { items, end: Some(end), _place: place }
    }
}

impl<T> Stream for Subscription<T> {
    type Item = Result<T, WatchEnd>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(item) = ready!(self.items.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(item)));
        }
        // The watch is over: the buffered items first, then the reason.
        let Some(end) = self.end.as_mut() else { return Poll::Ready(None) };
        let reason = ready!(Pin::new(end).poll(cx));
        self.end = None;
        Poll::Ready(reason.ok().map(Err))
    }
}

/// How long until `token` expires (a watch re-checks its caller then).
pub(crate) fn until_expiry(token: &VerifiedToken) -> std::time::Duration {
    let now = Timestamp::now().as_millis();
    let exp = token.claims.exp.saturating_mul(1000);
    // At least a second, so that a clock at the edge cannot spin the loop.
    std::time::Duration::from_millis(u64::try_from(exp - now).unwrap_or(0).max(1000))
}
