//! `sigil.v1.AdminService` over [`Identity`]. Every call passes through
//! [`AdminGuard`] first: the one place where the admin role is checked.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt as _};
use sigil_proto::pb::{self, admin_service_server::AdminService, get_user_request::Key};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tonic::{Request, Response, Status};

use super::{bearer, convert, identity::parse_id};
use crate::domain::{
    Identity, Secret, SessionId, TokenId, UserId, admin::UserChanges, token::VerifiedToken, user::ADMIN_ROLE,
};

/// The verified admin making a call, put in the request's extensions by
/// [`AdminGuard`].
#[derive(Clone)]
pub struct Caller(pub Arc<VerifiedToken>);

/// Interceptor admitting only bearers of a valid access token with role
/// `admin`. Validation is the very path of `Validate`, so a revoked admin
/// token stops working at once.
#[derive(Clone)]
pub struct AdminGuard {
    identity: Arc<Identity>,
}

impl AdminGuard {
    /// A guard validating against `identity`.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

impl tonic::service::Interceptor for AdminGuard {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = bearer(&self.identity, &request)?.ok_or_else(|| {
            Status::unauthenticated("the admin API needs `authorization: Bearer <access token>` metadata")
        })?;
        if !caller.has_role(ADMIN_ROLE) {
            return Err(Status::permission_denied("the admin API needs role admin"));
        }
        request.extensions_mut().insert(Caller(caller));
        Ok(request)
    }
}

/// How long until `token` expires (a stream re-checks its caller then).
fn until_expiry(token: &VerifiedToken) -> std::time::Duration {
    let now = crate::domain::Timestamp::now().as_millis();
    let exp = token.claims.exp.saturating_mul(1000);
    // At least a second, so that a clock at the edge cannot spin the loop.
    std::time::Duration::from_millis(u64::try_from(exp - now).unwrap_or(0).max(1000))
}

fn actor<T>(request: &Request<T>) -> Option<UserId> {
    request.extensions().get::<Caller>().map(|c| c.0.user_id)
}

/// Events a watcher may have in flight before it counts as too slow.
const WATCHER_BUFFER: usize = 256;
/// Stored events read per replay step.
const REPLAY_BATCH: usize = 500;

/// The gRPC face of the admin use cases.
#[derive(Clone)]
pub struct AdminApi {
    identity: Arc<Identity>,
}

impl AdminApi {
    /// Serves `identity`.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let user = self.identity.create_user(actor, &req.username, &Secret::new(req.password), req.roles).await?;
        let view = self.identity.user(user.id).await?;
        Ok(Response::new(pb::CreateUserResponse { user: Some(convert::user(&view)) }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let view = match request.into_inner().key {
            Some(Key::UserId(id)) => self.identity.user(parse_id("user_id", &id)?).await?,
            Some(Key::Username(name)) => self.identity.user_named(&name).await?,
            None => return Err(Status::invalid_argument("name the user by user_id or username")),
        };
        Ok(Response::new(pb::GetUserResponse { user: Some(convert::user(&view)) }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let limit = convert::page_size(req.page_size);
        let after = convert::from_page_token(&req.page_token, UserId::from_slice)?;
        let users = self.identity.list_users(after, limit).await?;
        let next = convert::next_page_token(&users, limit, |u| u.user.id.as_bytes());
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
            next_page_token: next,
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let id = parse_id("user_id", &req.user_id)?;
        let changes = UserChanges { disabled: req.disabled, roles: req.roles.map(|r| r.roles) };
        let (view, revoked_sessions) = self.identity.update_user(actor, id, changes).await?;
        Ok(Response::new(pb::UpdateUserResponse { user: Some(convert::user(&view)), revoked_sessions }))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let id = parse_id("user_id", &req.user_id)?;
        let revoked_sessions =
            self.identity.set_password(actor, id, &Secret::new(req.password), req.revoke_sessions).await?;
        Ok(Response::new(pb::SetPasswordResponse { revoked_sessions }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let actor = actor(&request);
        let id = parse_id("user_id", &request.into_inner().user_id)?;
        let revoked_sessions = self.identity.delete_user(actor, id).await?;
        Ok(Response::new(pb::DeleteUserResponse { revoked_sessions }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let req = request.into_inner();
        let user = req.user_id.as_deref().filter(|u| !u.is_empty()).map(|u| parse_id("user_id", u)).transpose()?;
        let after = convert::from_page_token(&req.page_token, SessionId::from_slice)?;
        let limit = convert::page_size(req.page_size);
        let sessions = self.identity.list_sessions(user, req.include_inactive, after, limit).await?;
        let next = convert::next_page_token(&sessions, limit, |s| s.id.as_bytes());
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.iter().map(convert::session).collect(),
            next_page_token: next,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let req = request.into_inner();
        let session =
            req.session_id.as_deref().filter(|s| !s.is_empty()).map(|s| parse_id("session_id", s)).transpose()?;
        let user = req.user_id.as_deref().filter(|u| !u.is_empty()).map(|u| parse_id("user_id", u)).transpose()?;
        let after = convert::from_page_token(&req.page_token, TokenId::from_slice)?;
        let limit = convert::page_size(req.page_size);
        let tokens = self.identity.list_tokens(session, user, req.include_inactive, after, limit).await?;
        let next = convert::next_page_token(&tokens, limit, |t| t.id.as_bytes());
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(convert::token).collect(),
            next_page_token: next,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .map(|c| c.0.clone())
            .ok_or_else(|| Status::unauthenticated("WatchEvents needs an admin bearer token"))?;
        let after = request.into_inner().after_sequence;
        let identity = self.identity.clone();
        // A sequence this store never reached: the watcher's store was
        // restored from an older copy, or it is another store. Resuming
        // there would wait in silence for a sequence that means something
        // else, or nothing, here.
        if let Some(after) = after {
            let newest = identity.events().latest_sequence().await?;
            if after > newest {
                return Err(Status::out_of_range(format!(
                    "after_sequence {after} is beyond the newest event, {newest} (was the store restored from a \
                     backup?): resume without after_sequence, or with after_sequence={newest} at most"
                )));
            }
        }
        // Subscribe before replaying so nothing falls between the two.
        let mut live = identity.events().subscribe();
        let mut authorization = identity.authorization_changes();
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<Status>();
        tokio::spawn(async move {
            let ending = async {
                let mut last = 0;
                if let Some(after) = after {
                    last = after;
                    loop {
                        // A replay is long: the caller is re-checked per batch.
                        identity.recheck(&caller).map_err(|f| super::bearer_refused(&identity, f))?;
                        let batch = identity.events().replay(last, REPLAY_BATCH).await.map_err(Status::from)?;
                        if batch.is_empty() {
                            break;
                        }
                        for event in batch {
                            last = event.sequence;
                            if tx
                                .send(Ok(pb::WatchEventsResponse { event: Some(convert::event(&event)) }))
                                .await
                                .is_err()
                            {
                                return Ok(());
                            }
                        }
                    }
                }
                let shutting_down = identity.shutting_down();
                tokio::pin!(shutting_down);
                let expiry = tokio::time::sleep(until_expiry(&caller));
                tokio::pin!(expiry);
                loop {
                    let event = tokio::select! {
                        // Authorization first: nothing more is sent to a
                        // caller who lost the right to see it.
                        biased;
                        changed = authorization.changed() => {
                            if changed.is_err() {
                                return Err(Status::unavailable("the server is shutting down; reconnect"));
                            }
                            identity.recheck(&caller).map_err(|f| super::bearer_refused(&identity, f))?;
                            continue;
                        }
                        () = &mut expiry => {
                            identity.recheck(&caller).map_err(|f| super::bearer_refused(&identity, f))?;
                            expiry.as_mut().reset(tokio::time::Instant::now() + until_expiry(&caller));
                            continue;
                        }
                        () = &mut shutting_down => {
                            return Err(Status::unavailable(format!(
                                "the server is shutting down; reconnect (to another instance) with after_sequence={last}"
                            )));
                        }
                        event = live.recv() => event,
                    };
                    let event = match event {
                        Ok(event) => event,
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return Ok(()),
                    };
                    if event.sequence <= last {
                        continue;
                    }
                    // Never wait on a watcher: writers must not slow down for it.
                    match tx.try_send(Ok(pb::WatchEventsResponse { event: Some(convert::event(&event)) })) {
                        Ok(()) => last = event.sequence,
                        Err(mpsc::error::TrySendError::Full(_)) => break,
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                    }
                }
                Err(Status::aborted(format!("watcher fell too far behind; resume with after_sequence={last}")))
            };
            if let Err(status) = ending.await {
                let _ = end_tx.send(status);
            }
        });
        // The buffered events first, then the reason the stream ended.
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        let ending = futures::stream::once(end_rx).filter_map(|end| async move { end.ok().map(Err) });
        Ok(Response::new(Box::pin(events.chain(ending))))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let actor = actor(&request);
        let distrust_previous = request.into_inner().distrust_previous;
        let key = self.identity.rotate_signing_key(actor, distrust_previous).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse { key: Some(convert::signing_key(&key)) }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let keys = self.identity.signing_keys().await?;
        Ok(Response::new(pb::ListSigningKeysResponse { keys: keys.iter().map(convert::signing_key).collect() }))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let s = self.identity.stats().await?;
        Ok(Response::new(pb::GetStatsResponse {
            users: s.users,
            active_sessions: s.active_sessions,
            active_tokens: s.active_tokens,
            validations_per_second: s.validations_per_second,
            logins_per_second: s.logins_per_second,
            login_failures_per_second: s.login_failures_per_second,
            revocation_index_entries: s.revocation_index_entries,
        }))
    }
}
