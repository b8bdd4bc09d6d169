//! The fallback when stale: the server's own `Validate`, one call per token.

use std::sync::Arc;

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use sigil_token_rules::{AccessClaims, SignedToken, ValidationFailure};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::Refusal;

/// A lazily connected `IdentityService` client.
pub(crate) struct RemoteValidate {
    client: IdentityServiceClient<Channel>,
}

impl RemoteValidate {
    pub(crate) fn new(endpoint: &Endpoint) -> Self {
        Self { client: IdentityServiceClient::new(endpoint.connect_lazy()) }
    }

    /// `Validate`'s verdict; an unreachable server is still "cannot know".
    pub(crate) async fn validate(&self, token: &str, audience: Option<&str>) -> Result<Arc<SignedToken>, Refusal> {
        let request = pb::ValidateRequest { token: token.to_string(), audience: audience.map(str::to_string) };
        let response = match self.client.clone().validate(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "fallback Validate failed; refusing as stale");
                return Err(Refusal::Stale);
            }
        };
        if !response.valid {
            let failure = failure_of(response.failure()).unwrap_or(ValidationFailure::Malformed);
            return Err(Refusal::Invalid(failure));
        }
        response.claims.and_then(signed_token_of).map(Arc::new).ok_or(Refusal::Stale)
    }
}

/// The rules' failure for a protobuf value (`None` for UNSPECIFIED).
pub(crate) fn failure_of(proto: pb::ValidationFailure) -> Option<ValidationFailure> {
    ValidationFailure::ALL.into_iter().find(|f| pb::ValidationFailure::from(*f) == proto)
}

/// The claims `Validate` answered with, in the verifier's shape.
fn signed_token_of(claims: pb::Claims) -> Option<SignedToken> {
    let seconds = |t: Option<prost_types::Timestamp>| t.map_or(0, |t| t.seconds);
    // A service account's token has no session (see `SignedToken::session_id`).
    let service = claims.subject_kind() == pb::SubjectKind::Service;
    let (user_id, token_id) = (Uuid::try_parse(&claims.user_id).ok()?, Uuid::try_parse(&claims.token_id).ok()?);
    let session_id = if service { Uuid::nil() } else { Uuid::try_parse(&claims.session_id).ok()? };
    let client_id = service.then_some(user_id);
    let iat = seconds(claims.issued_at);
    Some(SignedToken {
        claims: AccessClaims {
            iss: claims.issuer,
            sub: claims.user_id,
            aud: claims.audience,
            exp: seconds(claims.expires_at),
            nbf: iat,
            iat,
            jti: claims.token_id,
            sid: claims.session_id,
            username: claims.username,
            roles: claims.roles,
            client_id: service.then(|| claims.client_id.clone()),
            scope: service.then(|| claims.scopes.join(" ")),
        },
        kid: String::new(),
        user_id,
        session_id,
        token_id,
        client_id,
    })
}
