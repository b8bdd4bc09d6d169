//! `sigil.v1.IdentityService` over [`Identity`].

use std::sync::Arc;

use sigil_proto::pb::{
    self, identity_service_server::IdentityService, issue_service_token_request::Credential, revoke_request::Target,
};
use tonic::{Request, Response, Status};

use super::{bearer, convert, status};
use crate::{
    domain::{
        Identity, Secret, SessionId,
        client_auth::{ClientCredential, ServiceTokenRequest},
        identity::{Login, RevokeTarget},
    },
    telemetry::{LoginOutcome, METRICS, Metrics},
};

/// The gRPC face of the identity core.
#[derive(Clone)]
pub struct IdentityApi {
    identity: Arc<Identity>,
}

impl IdentityApi {
    /// Serves `identity`.
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let client = super::client_address::client_address(
            request.remote_addr(),
            request.metadata(),
            &self.identity.settings().trusted_proxies,
        );
        let user_agent =
            request.metadata().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let req = request.into_inner();
        let login = Login {
            username: req.username,
            password: Secret::new(req.password),
            device_name: req.device_name,
            audience: req.audience,
            client_address: client.display,
            client_ip: client.ip,
            user_agent,
        };
        let outcome = self.identity.authenticate(login).await;
        Metrics::count(&METRICS.logins, LoginOutcome::of(&outcome).label());
        Ok(Response::new(convert::authenticate_response(outcome?)))
    }

    async fn validate(&self, request: Request<pb::ValidateRequest>) -> Result<Response<pb::ValidateResponse>, Status> {
        let req = request.into_inner();
        if req.token.is_empty() {
            return Err(Status::invalid_argument("token is empty"));
        }
        let audience = req.audience.as_deref().filter(|a| !a.is_empty());
        let verdict = self.identity.validate(&req.token, audience);
        let outcome = match &verdict {
            Ok(_) => "valid",
            Err(failure) => status::FailureNames::of(*failure).label,
        };
        Metrics::count(&METRICS.validations, outcome);
        let response = match verdict {
            Ok(verified) => pb::ValidateResponse {
                valid: true,
                failure: pb::ValidationFailure::Unspecified.into(),
                claims: Some(convert::claims(&verified)),
            },
            Err(failure) => pb::ValidateResponse {
                valid: false,
                failure: pb::ValidationFailure::from(failure).into(),
                claims: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        let presented = Secret::new(request.into_inner().refresh_token);
        let issued = self.identity.refresh(presented).await?;
        Ok(Response::new(convert::refresh_response(issued)))
    }

    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = bearer(&self.identity, &request)?;
        let req = request.into_inner();
        let target = match req.target {
            None => {
                return Err(Status::invalid_argument(
                    "target is required: one of access_token, refresh_token, session_id, token_id, user_id",
                ));
            }
            Some(Target::AccessToken(t)) => RevokeTarget::AccessToken(Secret::new(non_empty("access_token", t)?)),
            Some(Target::RefreshToken(t)) => RevokeTarget::RefreshToken(Secret::new(non_empty("refresh_token", t)?)),
            Some(Target::SessionId(id)) => RevokeTarget::Session(parse_id("session_id", &id)?),
            Some(Target::TokenId(id)) => RevokeTarget::Token(parse_id("token_id", &id)?),
            Some(Target::UserId(id)) => RevokeTarget::User(parse_id("user_id", &id)?),
        };
        let counts = self.identity.revoke(target, &req.reason, caller.as_deref()).await?;
        Ok(Response::new(pb::RevokeResponse { revoked_sessions: counts.sessions, revoked_tokens: counts.tokens }))
    }

    async fn list_my_sessions(
        &self,
        request: Request<pb::ListMySessionsRequest>,
    ) -> Result<Response<pb::ListMySessionsResponse>, Status> {
        let caller = bearer(&self.identity, &request)?.ok_or_else(|| {
            Status::unauthenticated("ListMySessions needs `authorization: Bearer <access token>` metadata")
        })?;
        let req = request.into_inner();
        let after = convert::from_page_token(&req.page_token, SessionId::from_slice)?;
        let limit = convert::page_size(req.page_size);
        let sessions = self.identity.list_my_sessions(&caller, req.include_inactive, after, limit).await?;
        let next = convert::next_page_token(&sessions, limit, |s| s.id.as_bytes());
        Ok(Response::new(pb::ListMySessionsResponse {
            sessions: sessions.iter().map(convert::session).collect(),
            next_page_token: next,
            current_session_id: caller.session_id.to_string(),
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse { jwks_json: self.identity.jwks_json() }))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::IssueServiceTokenResponse>, Status> {
        let req = request.into_inner();
        let credential = match req.credential {
            Some(Credential::ClientSecret(secret)) => ClientCredential::Secret(Secret::new(secret)),
            Some(Credential::ClientAssertion(assertion)) => {
                ClientCredential::Assertion { assertion: Secret::new(assertion), token_endpoint: None }
            }
            None => return Err(Status::invalid_argument("credential is required: client_secret or client_assertion")),
        };
        let grant = ServiceTokenRequest {
            client_id: Some(req.client_id).filter(|c| !c.is_empty()),
            credential,
            audience: Some(req.audience).filter(|a| !a.is_empty()),
            scope: Some(req.scope).filter(|s| !s.is_empty()),
        };
        let issued = self.identity.issue_service_token(grant).await?;
        Ok(Response::new(convert::issue_service_token_response(issued)))
    }
}

fn non_empty(field: &str, value: String) -> Result<String, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is empty")));
    }
    Ok(value)
}

/// Parses an id field; the error names the field and the expected form.
pub(crate) fn parse_id<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, Status> {
    if value.len() > 64 {
        return Err(Status::invalid_argument(format!("{field} is not an id (too long)")));
    }
    value.parse().map_err(|_| Status::invalid_argument(format!("{field} {value:?} is not an id (expected a UUID)")))
}
