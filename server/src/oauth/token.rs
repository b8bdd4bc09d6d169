//! `POST /oauth2/token`: the client credentials grant (RFC 6749 §4.4). The
//! request is checked for form first (grant type, scope syntax, one client
//! authentication), so a malformed request costs no store work; then the
//! domain authenticates the client and mints its token.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::Response,
};

use super::{
    Endpoint, OAuthState, answer,
    client_auth::{self, AuthMethod},
    error::{OAuthError, uncached_json},
    form::Form,
    from_domain,
};
use crate::domain::client_auth::ServiceTokenRequest;

/// The one grant served.
const CLIENT_CREDENTIALS: &str = "client_credentials";

pub(super) async fn grant(State(state): State<Arc<OAuthState>>, request: Request) -> Response {
    let mut method = None;
    let result = grant_token(&state, request, &mut method).await;
    answer(&state, Endpoint::Token, method, result)
}

async fn grant_token(
    state: &OAuthState,
    request: Request,
    method: &mut Option<AuthMethod>,
) -> Result<Response, OAuthError> {
    let (headers, form) = Form::read(request).await?;
    if form.required("grant_type")? != CLIENT_CREDENTIALS {
        return Err(OAuthError::UnsupportedGrantType);
    }
    let scope = form.get("scope");
    if let Some(scope) = scope {
        check_scope_syntax(scope)?;
    }
    let client = client_auth::client(&headers, &form)?;
    *method = Some(client.method);
    let (client_id, credential) = client.credentials.into_domain(&state.token_endpoint);
    let request = ServiceTokenRequest {
        client_id,
        credential,
        audience: form.get("audience").map(str::to_string),
        scope: scope.map(str::to_string),
    };
    let issued = state.identity.issue_service_token(request).await.map_err(from_domain)?;
    let body = serde_json::json!({
        "access_token": issued.access_token.expose(),
        "token_type": "Bearer",
        "expires_in": state.identity.settings().access_token_ttl.as_secs(),
        "scope": issued.scopes.join(" "),
    });
    Ok(uncached_json(StatusCode::OK, &body))
}

/// `scope` as RFC 6749 §3.3 writes it: scope tokens of visible ASCII
/// other than `"` and `\`, separated by single spaces.
fn check_scope_syntax(scope: &str) -> Result<(), OAuthError> {
    let well_formed = scope
        .split(' ')
        .all(|token| !token.is_empty() && token.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)));
    if well_formed {
        Ok(())
    } else {
        Err(OAuthError::InvalidScope(
            "scope must be scope tokens (visible ASCII except \" and \\) separated by single spaces (RFC 6749 §3.3)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_scope_syntax;

    #[test]
    fn scope_syntax_is_rfc_6749s() {
        for good in ["read", "read write", "orders:read https://x.example/y", "!#[]~"] {
            assert!(check_scope_syntax(good).is_ok(), "{good}");
        }
        for bad in ["read  write", " read", "read ", "a\"b", "a\\b", "é", "a\tb"] {
            assert!(check_scope_syntax(bad).is_err(), "{bad}");
        }
    }
}
