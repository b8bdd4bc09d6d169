//! `POST /oauth2/revoke` (RFC 7009): a client hands back a token it holds.
//! The answer is 200 whatever the token (§2.2: an invalid token is no
//! error the client could act on); only a failed client authentication
//! (401) or a store that cannot take the write (503, §2.2.1) is refused.
//!
//! What is revoked:
//! - a service token of the calling client: that token. A service token
//!   of another client is left alone, as §2.1 asks ("verifies whether the
//!   token was issued to the client making the revocation request").
//! - a user's access token: the token and its session; a user's refresh
//!   token: its session (and so every access token of it, as §2 advises).
//!   A user's tokens are issued to no OAuth client, and Sigil's contract
//!   (gRPC `Revoke`) already lets whoever holds one revoke it: a service
//!   that was handed a user's token — a backend that logs users in and
//!   keeps their refresh tokens — can end that session with a standard
//!   library here, and can do nothing it could not do over gRPC.
//! - a token that is no longer valid (expired, revoked, forged): nothing,
//!   since it can be used nowhere already.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse as _, Response},
};

use super::{
    Endpoint, OAuthState, answer,
    client_auth::{self, AuthMethod},
    error::OAuthError,
    form::Form,
    from_domain,
};
use crate::domain::{DomainError, Secret, identity::RevokeTarget};

/// The reason recorded with what this endpoint revokes.
const REASON: &str = "revoked by its holder (OAuth revocation endpoint)";

pub(super) async fn revoke(State(state): State<Arc<OAuthState>>, request: Request) -> Response {
    let mut method = None;
    let result = revoke_token(&state, request, &mut method).await;
    answer(&state, Endpoint::Revoke, method, result)
}

async fn revoke_token(
    state: &OAuthState,
    request: Request,
    method: &mut Option<AuthMethod>,
) -> Result<Response, OAuthError> {
    let (headers, form) = Form::read(request).await?;
    let token = form.required("token")?;
    let client = client_auth::client(&headers, &form)?;
    *method = Some(client.method);
    let (client_id, credential) = client.credentials.into_domain(&state.token_endpoint);
    let identity = &state.identity;
    let account = identity.authenticate_client(client_id.as_deref(), &credential).await.map_err(from_domain)?;
    // `token_type_hint` is only a hint (§2.1): every token is looked at
    // the same way, whatever it says.
    let target = match identity.validate(token, None) {
        Ok(verified) => match &verified.claims.client_id {
            Some(owner) if *owner != account.client_id() => None,
            _ => Some(RevokeTarget::AccessToken(Secret::new(token.to_string()))),
        },
        // A refresh token is no JWT: Validate calls it malformed.
        Err(_) if !token.contains('.') => Some(RevokeTarget::RefreshToken(Secret::new(token.to_string()))),
        Err(_) => None,
    };
    if let Some(target) = target {
        match identity.revoke(target, REASON, None).await {
            Ok(_) => {}
            Err(e @ DomainError::Store(_)) => return Err(from_domain(e)),
            // Unknown, malformed, already ended: nothing to revoke.
            Err(_) => {}
        }
    }
    Ok((StatusCode::OK, [(axum::http::header::CACHE_CONTROL, "no-store")]).into_response())
}
