//! `sigil.v1.AdminService` over [`Identity`]. Every call passes through
//! [`AdminGuard`] first: the one place where the admin role is checked.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt as _};
use sigil_proto::pb::{self, admin_service_server::AdminService, get_user_request::Key};
use tonic::{Request, Response, Status};

use super::{bearer, convert, identity::parse_id};
use crate::domain::{
    Identity, Secret, SessionId, TokenId, UserId, admin::UserChanges, event::WatchEnd, token::VerifiedToken,
    user::ADMIN_ROLE,
};

/// The verified admin making a call, put in the request's extensions by
/// [`AdminGuard`].
#[derive(Clone)]
pub(crate) struct Caller(pub Arc<VerifiedToken>);

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

fn actor<T>(request: &Request<T>) -> Option<UserId> {
    request.extensions().get::<Caller>().map(|c| c.0.user_id)
}

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

/// The status a watch ends with (of the audit trail, or of revocations).
pub(super) fn watch_end_status(identity: &Identity, end: WatchEnd) -> Status {
    match end {
        WatchEnd::Lagged { resume_after } => {
            Status::aborted(format!("watcher fell too far behind; resume with after_sequence={resume_after}"))
        }
        WatchEnd::ShuttingDown { resume_after } => Status::unavailable(format!(
            "the server is shutting down; reconnect (to another instance) with after_sequence={resume_after}"
        )),
        WatchEnd::Closed => Status::unavailable("the server is shutting down; reconnect"),
        WatchEnd::Refused(failure) => super::bearer_refused(identity, failure),
        WatchEnd::Failed(error) => error.into(),
    }
}

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
        let watch = self.identity.watch_events(caller, after).await?;
        let identity = self.identity.clone();
        let events = watch.map(move |item| match item {
            Ok(event) => Ok(pb::WatchEventsResponse { event: Some(convert::event(&event)) }),
            Err(end) => Err(watch_end_status(&identity, end)),
        });
        Ok(Response::new(Box::pin(events)))
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
            validations_total: s.validations_total,
            logins_total: s.logins_total,
            login_failures_total: s.login_failures_total,
        }))
    }
}
