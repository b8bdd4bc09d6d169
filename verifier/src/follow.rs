//! Following `WatchRevocations`: connect, take the keys, load a snapshot
//! or resume, apply entries in order, note heartbeats; on any end,
//! reconnect with a doubling backoff and resume from the last sequence.

use std::{
    sync::{Arc, PoisonError},
    time::{Duration, SystemTime},
};

use sigil_proto::pb::{
    self, WatchRevocationsRequest, revocation_service_client::RevocationServiceClient,
    watch_revocations_response::Message,
};
use tonic::metadata::MetadataValue;

use crate::{
    config::VerifierConfig,
    keys::{KeySet, KeySetError},
    revocations::{RevocationSet, UnknownTarget},
    state::set_count,
    verifier::{Shared, unix_now},
};

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the bearer token is not valid metadata")]
    BadBearer,
    #[error(transparent)]
    Keys(#[from] KeySetError),
    #[error(transparent)]
    UnknownTarget(#[from] UnknownTarget),
    #[error("the server's epoch changed from {ours:?} to {theirs:?}: reloading")]
    EpochChanged { ours: String, theirs: String },
    #[error("the server ended the stream")]
    Ended,
}

/// Follows the stream for as long as the verifier lives.
pub(crate) async fn follow(shared: Arc<Shared>, config: VerifierConfig) {
    let mut backoff = config.reconnect_min;
    let mut key_generation = 0;
    loop {
        let mut progressed = false;
        let end = follow_once(&shared, &config, &mut key_generation, &mut progressed).await;
        shared.stream.set_connected(false);
        if let Err(StreamEnd::UnknownTarget(_)) = &end {
            // An entry this version cannot apply: the copy is incomplete
            // until upgraded, whatever the clock says.
            shared.stream.block();
        }
        let end = end.err().unwrap_or(StreamEnd::Ended);
        tracing::warn!(error = %end, "sigil revocation stream ended; reconnecting");
        if progressed {
            backoff = config.reconnect_min;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

async fn follow_once(
    shared: &Shared,
    config: &VerifierConfig,
    key_generation: &mut u64,
    progressed: &mut bool,
) -> Result<(), StreamEnd> {
    let channel = config.endpoint.connect().await?;
    let bearer = config.bearer.bearer().await?;
    let (epoch, after_sequence) = {
        let position = shared.stream.position.lock().unwrap_or_else(PoisonError::into_inner);
        (position.epoch.clone(), position.sequence)
    };
    let mut request = tonic::Request::new(WatchRevocationsRequest { after_sequence, epoch, batches: true });
    let value: MetadataValue<_> = format!("Bearer {bearer}").parse().map_err(|_| StreamEnd::BadBearer)?;
    request.metadata_mut().insert("authorization", value);
    let mut stream = RevocationServiceClient::new(channel).watch_revocations(request).await?.into_inner();
    shared.stream.set_connected(true);
    let mut snapshot: Option<RevocationSet> = None;
    while let Some(response) = stream.message().await? {
        *progressed = true;
        let Some(message) = response.message else { continue };
        match message {
            Message::Keys(keys) => {
                *key_generation += 1;
                let set = KeySet::from_message(&keys, *key_generation)?;
                set_count(&shared.stream.metrics.keys, set.len());
                shared.keys.store(Arc::new(set));
            }
            Message::SnapshotBegin(_) => snapshot = Some(RevocationSet::default()),
            Message::Revocation(entry) => match snapshot.as_mut() {
                Some(building) => building.apply(&entry, unix_now())?,
                None => apply_live(shared, std::slice::from_ref(&entry))?,
            },
            Message::Revocations(batch) => match snapshot.as_mut() {
                Some(building) => {
                    let now = unix_now();
                    for entry in &batch.revocations {
                        building.apply(entry, now)?;
                    }
                }
                None => apply_live(shared, &batch.revocations)?,
            },
            Message::SnapshotEnd(end) => {
                let loaded = snapshot.take().unwrap_or_default();
                set_count(&shared.stream.metrics.entries, loaded.len());
                *shared.revocations.write().unwrap_or_else(PoisonError::into_inner) = loaded;
                let mut position = shared.stream.position.lock().unwrap_or_else(PoisonError::into_inner);
                // A snapshot replaces everything, the resume point too.
                position.epoch = end.epoch;
                position.sequence = end.sequence;
                set_count(&shared.stream.metrics.sequence, position.sequence);
                drop(position);
                shared.stream.metrics.snapshots.inc();
                shared.stream.set_usable(true);
                shared.stream.heard();
            }
            Message::Heartbeat(beat) if snapshot.is_none() => {
                let ours = shared.stream.position.lock().unwrap_or_else(PoisonError::into_inner).epoch.clone();
                if ours != beat.epoch {
                    return Err(StreamEnd::EpochChanged { ours, theirs: beat.epoch });
                }
                // Every entry up to `latest_sequence` was sent on this
                // stream: that is the resume point now.
                move_to(shared, beat.epoch, beat.latest_sequence);
                note_lag(shared, beat.server_time.as_ref());
                shared.stream.set_usable(true);
                shared.stream.heard();
            }
            Message::Heartbeat(_) => {}
        }
    }
    Ok(())
}

/// Entries outside a snapshot (live, or a resume's catch-up, in sequence
/// order): applied at once, under one lock, and news in themselves.
fn apply_live(shared: &Shared, entries: &[pb::Revocation]) -> Result<(), UnknownTarget> {
    let Some(last) = entries.last() else { return Ok(()) };
    {
        let mut set = shared.revocations.write().unwrap_or_else(PoisonError::into_inner);
        let now = unix_now();
        for entry in entries {
            set.apply(entry, now)?;
        }
        set_count(&shared.stream.metrics.entries, set.len());
    }
    let epoch = shared.stream.position.lock().unwrap_or_else(PoisonError::into_inner).epoch.clone();
    move_to(shared, epoch, last.sequence);
    shared.stream.heard();
    Ok(())
}

fn move_to(shared: &Shared, epoch: String, sequence: u64) {
    let mut position = shared.stream.position.lock().unwrap_or_else(PoisonError::into_inner);
    position.epoch = epoch;
    position.sequence = position.sequence.max(sequence);
    set_count(&shared.stream.metrics.sequence, position.sequence);
}

fn note_lag(shared: &Shared, server_time: Option<&prost_types::Timestamp>) {
    let Some(server_time) = server_time.and_then(|t| SystemTime::try_from(*t).ok()) else { return };
    let lag = SystemTime::now().duration_since(server_time).unwrap_or(Duration::ZERO);
    set_count(&shared.stream.metrics.lag_ms, lag.as_millis());
}

/// How many gauge ticks (seconds) between sweeps of expired entries: a
/// sweep holds the write lock for a few milliseconds per million entries,
/// and an entry kept a little past its bound covers only expired tokens.
const TICKS_PER_PURGE: u32 = 10;

/// Drops entries that no longer matter, and refreshes the clock-driven
/// gauges once a second.
pub(crate) async fn maintain(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u32.. {
        tick.tick().await;
        if round % TICKS_PER_PURGE == 0 {
            let mut set = shared.revocations.write().unwrap_or_else(PoisonError::into_inner);
            set.purge(unix_now());
            set_count(&shared.stream.metrics.entries, set.len());
        }
        shared.stream.tick();
    }
}
