//! Group commit: many concurrent writers share one `flush`.
//!
//! A writer applies its change to the engine's memory, then waits on
//! [`GroupCommit::durable`]. One dedicated thread collects every waiter that
//! arrived, flushes once, and wakes them all: under load one fsync pays for
//! a whole batch, and at rest a lone writer waits for exactly one flush.
//! Only this thread ever flushes, because sled 0.34.7 can deadlock when
//! `flush_async` runs concurrently (spacejam/sled#1308).
//!
//! A flush may return what it covered (the embedded engine returns its
//! high-water mark, read just before flushing); once the waiters are
//! woken, the same thread hands that to `settled` (which records the
//! mark), so the bookkeeping never delays an acknowledgement and never
//! runs concurrently with itself.

use std::{sync::mpsc, thread};

use tokio::sync::oneshot;

use crate::domain::port::StoreError;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the flushing thread.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    requests: mpsc::Sender<Waiter>,
}

impl GroupCommit {
    /// Starts the flushing thread; `flush` makes all prior writes durable.
    /// After each successful flush, once its waiters are woken, `settled`
    /// gets what the flush returned.
    pub(crate) fn start<T, F, S>(name: &str, flush: F, settled: S) -> Result<Self, StoreError>
    where
        F: Fn() -> Result<T, StoreError> + Send + 'static,
        S: Fn(T) + Send + 'static,
    {
        let (requests, incoming) = mpsc::channel::<Waiter>();
        thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // Ends when every handle is dropped.
                while let Ok(first) = incoming.recv() {
                    let mut batch = vec![first];
                    batch.extend(incoming.try_iter());
                    let started = std::time::Instant::now();
                    let result = flush();
                    crate::telemetry::METRICS.flush_seconds.observe(started.elapsed().as_secs_f64());
                    crate::telemetry::METRICS.flush_batch.observe(batch.len() as f64);
                    let (answer, covered) = match result {
                        Ok(covered) => (Ok(()), Some(covered)),
                        Err(e) => {
                            tracing::error!(error = %e, "store flush failed; writes in this batch are not acknowledged");
                            (Err(e), None)
                        }
                    };
                    for waiter in batch {
                        // A waiter whose caller went away needs no answer.
                        let _ = waiter.send(answer.clone());
                    }
                    if let Some(covered) = covered {
                        settled(covered);
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the flush thread: {e}")))?;
        Ok(Self { requests })
    }

    /// Returns once every write made before this call is durable.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| StoreError::Backend("store is closed".into()))?;
        rx.await.map_err(|_| StoreError::Backend("flush thread stopped".into()))?
    }
}
