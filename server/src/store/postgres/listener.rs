//! The `LISTEN` connection: one dedicated connection (not from the pool)
//! that turns every `NOTIFY` on [`CHANNEL`] into a raise of the store's
//! change signal, and reconnects by itself.
//!
//! Notifications are only a hint to catch up early. They can be lost (the
//! connection drops, the instance was down), so the domain also catches up
//! on a timer, and the signal is raised after every (re)connection.

use std::{sync::Arc, time::Duration};

use crate::domain::port::Changes;
use futures::StreamExt as _;
use tokio_postgres::{
    AsyncMessage, Socket,
    tls::{MakeTlsConnect, TlsConnect},
};

/// The notification channel every change is announced on.
pub(super) const CHANNEL: &str = "sigil_changes";

/// The payload announcing a change of the signing keys.
pub(super) const KEYS: &str = "keys";

/// Listens until the task is aborted.
pub(super) async fn listen<T>(config: tokio_postgres::Config, tls: T, signal: Arc<Changes>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let raise = signal.clone();
                // The connection must be polled for the LISTEN to complete, so
                // it is driven first and the command sent after.
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(note)) => raise.raise(note.payload() == KEYS),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL notification connection failed");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        tracing::debug!("listening for changes from other instances");
                        // Whatever was committed while nobody listened.
                        signal.raise(true);
                        // Until the connection ends.
                        let _ = driver.await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot LISTEN for changes");
                        driver.abort();
                    }
                }
                drop(client);
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the PostgreSQL notification connection; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
