//! `POST /oauth2/introspect` (RFC 7662): whether a token is active now,
//! with its claims. The caller is a service account with the
//! [`INTROSPECT_ROLE`] role (authenticating as at the token endpoint) or
//! holds an admin's access token. The verdict is `Validate`'s, from memory:
//! anything not currently valid — expired, revoked, forged, not ours, a
//! refresh token — is `{"active": false}` and nothing else, so the answer
//! never says why (RFC 7662 §2.2).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::Response,
};

use super::{
    Endpoint, OAuthState, answer,
    client_auth::{self, AuthMethod, Caller},
    error::{OAuthError, uncached_json},
    form::Form,
    from_domain,
};
use crate::domain::{token::VerifiedToken, user::ADMIN_ROLE};

/// The role a service account needs to introspect tokens.
pub(crate) const INTROSPECT_ROLE: &str = "introspect";

pub(super) async fn introspect(State(state): State<Arc<OAuthState>>, request: Request) -> Response {
    let mut method = None;
    let result = introspect_token(&state, request, &mut method).await;
    answer(&state, Endpoint::Introspect, method, result)
}

async fn introspect_token(
    state: &OAuthState,
    request: Request,
    method: &mut Option<AuthMethod>,
) -> Result<Response, OAuthError> {
    let (headers, form) = Form::read(request).await?;
    let token = form.required("token")?;
    // `token_type_hint` may name any type: it is only a hint (RFC 7662
    // §2.1), and every token is looked up the same way.
    let caller = client_auth::client_or_bearer(&headers, &form)?;
    *method = Some(caller.method());
    authorize(state, caller).await?;
    let body = match state.identity.validate(token, None) {
        Ok(verified) => active(&verified),
        Err(_) => serde_json::json!({ "active": false }),
    };
    Ok(uncached_json(StatusCode::OK, &body))
}

/// Admits an introspecting caller: a client with the introspect role, or
/// a valid token of an admin user minted for Sigil itself.
async fn authorize(state: &OAuthState, caller: Caller) -> Result<(), OAuthError> {
    let identity = &state.identity;
    match caller {
        Caller::Bearer(token) => {
            let verified = identity
                .validate(token.expose(), Some(identity.own_audience()))
                .map_err(|_| OAuthError::InvalidToken)?;
            // An admin is a user: a service account's roles are claims for
            // other services, and never make it Sigil's admin (as for the
            // admin API); a service introspects as a client with the role.
            if !verified.is_user() || !verified.has_role(ADMIN_ROLE) {
                return Err(OAuthError::InsufficientScope(
                    "introspection needs an admin user's token or a client with the introspect role".into(),
                ));
            }
        }
        Caller::Client(client) => {
            let (client_id, credential) = client.credentials.into_domain(&state.token_endpoint);
            let account = identity.authenticate_client(client_id.as_deref(), &credential).await.map_err(from_domain)?;
            if !account.roles.iter().any(|role| role == INTROSPECT_ROLE) {
                return Err(OAuthError::UnauthorizedClient(format!(
                    "this client lacks the {INTROSPECT_ROLE} role that introspection needs"
                )));
            }
        }
    }
    Ok(())
}

/// The answer for an active token: RFC 7662 §2.2's members, from its
/// claims (`username` for a user's token, `client_id` and `scope` for a
/// service's), and its roles.
fn active(token: &VerifiedToken) -> serde_json::Value {
    let claims = &token.claims;
    let mut body = serde_json::json!({
        "active": true,
        "token_type": "Bearer",
        "iss": claims.iss,
        "sub": claims.sub,
        "aud": claims.aud,
        "exp": claims.exp,
        "iat": claims.iat,
        "nbf": claims.nbf,
        "jti": claims.jti,
        "roles": claims.roles,
    });
    if let Some(client_id) = &claims.client_id {
        body["client_id"] = client_id.clone().into();
    }
    if let Some(scope) = &claims.scope {
        body["scope"] = scope.clone().into();
    }
    if !claims.username.is_empty() {
        body["username"] = claims.username.clone().into();
    }
    body
}
