//! `sigil.v1.RevocationService` over [`Identity`]: checks the bearer and
//! the request, then converts the domain's revocation stream (see
//! `domain::revocation_stream`, which decides what is sent and when the
//! stream ends) into `WatchRevocationsResponse`s and statuses: a chunk of
//! entries becomes one `RevocationBatch` for a subscriber that asked for
//! batches, and one `revocation` message per entry for one that did not.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt as _, stream};
use sigil_proto::pb::{self, revocation::Target, revocation_service_server::RevocationService};
use tonic::{Request, Response, Status};

use super::{admin::watch_end_status, bearer, convert::timestamp};
use crate::{
    domain::{
        Identity,
        revocation::{RevocationEntry, RevocationTarget},
        revocation_stream::{ResumePoint, RevocationUpdate, StreamKeys},
    },
    telemetry::METRICS,
};

/// The gRPC face of the revocation stream.
#[derive(Clone)]
pub(crate) struct RevocationApi {
    identity: Arc<Identity>,
}

impl RevocationApi {
    /// Serves `identity`.
    pub(crate) fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

type RevocationStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    type WatchRevocationsStream = RevocationStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = bearer(&self.identity, &request)?.ok_or_else(|| {
            Status::unauthenticated(
                "WatchRevocations needs `authorization: Bearer <access token>` metadata of a user with role verifier \
                 or admin",
            )
        })?;
        let pb::WatchRevocationsRequest { after_sequence, epoch, batches } = request.into_inner();
        let watch = self.identity.watch_revocations(caller, ResumePoint { after_sequence, epoch }).await?;
        let identity = self.identity.clone();
        let updates = watch.flat_map(move |item| {
            let messages = match item {
                Ok(update) => responses(update, batches).into_iter().map(Ok).collect(),
                Err(end) => vec![Err(watch_end_status(&identity, end))],
            };
            stream::iter(messages)
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

/// The messages of one update: a chunk of entries is one batch, or one
/// message per entry for a subscriber that did not ask for `batches`.
fn responses(update: RevocationUpdate, batches: bool) -> Vec<pb::WatchRevocationsResponse> {
    use pb::watch_revocations_response::Message;
    let message = |message| pb::WatchRevocationsResponse { message: Some(message) };
    let single = match update {
        RevocationUpdate::Entries(entries) => {
            METRICS.revocation_entries_sent.inc_by(entries.len() as u64);
            if batches {
                let revocations = entries.into_iter().map(Into::into).collect();
                return vec![message(Message::Revocations(pb::RevocationBatch { revocations }))];
            }
            return entries.into_iter().map(|entry| message(Message::Revocation(entry.into()))).collect();
        }
        RevocationUpdate::Entry(entry) => {
            METRICS.revocation_entries_sent.inc();
            Message::Revocation(entry.into())
        }
        RevocationUpdate::Keys(keys) => Message::Keys(keys.into()),
        RevocationUpdate::SnapshotBegin { epoch, sequence } => {
            Message::SnapshotBegin(pb::SnapshotBegin { epoch: epoch.to_string(), sequence })
        }
        RevocationUpdate::SnapshotEnd { epoch, sequence } => {
            Message::SnapshotEnd(pb::SnapshotEnd { epoch: epoch.to_string(), sequence })
        }
        RevocationUpdate::Heartbeat { epoch, latest_sequence, at } => Message::Heartbeat(pb::Heartbeat {
            latest_sequence,
            server_time: Some(timestamp(at)),
            epoch: epoch.to_string(),
        }),
    };
    vec![message(single)]
}

impl From<StreamKeys> for pb::Keys {
    fn from(keys: StreamKeys) -> Self {
        let key_statuses = keys
            .signing_ends
            .into_iter()
            .map(|(kid, ended)| pb::KeyStatus {
                kid,
                signing_ended_at: Some(prost_types::Timestamp { seconds: ended, nanos: 0 }),
            })
            .collect();
        Self { jwks_json: keys.jwks_json, key_statuses }
    }
}

impl From<RevocationEntry> for pb::Revocation {
    fn from(entry: RevocationEntry) -> Self {
        let at = timestamp(entry.at);
        let target = match entry.target {
            RevocationTarget::Token(id) => Target::TokenId(id.to_string()),
            RevocationTarget::Session(id) => Target::SessionId(id.to_string()),
            RevocationTarget::UserDisabled(id) => Target::UserDisabled(id.to_string()),
            RevocationTarget::UserEnabled(id) => Target::UserEnabled(id.to_string()),
            RevocationTarget::UserNotBefore(id) => {
                Target::UserNotBefore(pb::UserNotBefore { user_id: id.to_string(), not_before: Some(at) })
            }
            RevocationTarget::UserSessionsBefore(id) => {
                Target::UserSessionsBefore(pb::UserSessionsBefore { user_id: id.to_string(), created_before: Some(at) })
            }
            RevocationTarget::ServiceAccountNotBefore(id) => {
                Target::ServiceAccountNotBefore(pb::ServiceAccountNotBefore {
                    client_id: id.to_string(),
                    not_before: Some(at),
                })
            }
        };
        Self {
            sequence: entry.sequence,
            revoked_at: Some(at),
            expires_at: Some(timestamp(entry.expires_at)),
            target: Some(target),
        }
    }
}
