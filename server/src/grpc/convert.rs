//! Conversions between domain values and `sigil.v1` messages.

use sigil_proto::pb;

use crate::domain::{
    Timestamp,
    identity::IssuedTokens,
    token::{ValidationFailure, VerifiedToken},
};

/// A domain instant as a protobuf timestamp.
pub(crate) fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let millis = t.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// JWT seconds as a protobuf timestamp.
pub(crate) fn unix_seconds(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// The claims of a verified token.
pub(crate) fn claims(token: &VerifiedToken) -> pb::Claims {
    let c = &token.claims;
    pb::Claims {
        user_id: c.sub.clone(),
        username: c.username.clone(),
        session_id: c.sid.clone(),
        token_id: c.jti.clone(),
        roles: c.roles.clone(),
        audience: c.aud.clone(),
        issuer: c.iss.clone(),
        issued_at: Some(unix_seconds(c.iat)),
        expires_at: Some(unix_seconds(c.exp)),
        subject_kind: match c.client_id {
            Some(_) => pb::SubjectKind::Service,
            None => pb::SubjectKind::User,
        }
        .into(),
        client_id: c.client_id.clone().unwrap_or_default(),
        scopes: c
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// `Validate`'s answer to `verdict`: the claims when valid, else the failure.
pub(crate) fn validate_response(verdict: Result<&VerifiedToken, ValidationFailure>) -> pb::ValidateResponse {
    match verdict {
        Ok(token) => pb::ValidateResponse {
            valid: true,
            failure: pb::ValidationFailure::Unspecified.into(),
            claims: Some(claims(token)),
        },
        Err(failure) => {
            pb::ValidateResponse { valid: false, failure: pb::ValidationFailure::from(failure).into(), claims: None }
        }
    }
}

/// A login's tokens as an `AuthenticateResponse`.
pub(crate) fn authenticate_response(issued: IssuedTokens) -> pb::AuthenticateResponse {
    pb::AuthenticateResponse {
        access_token: issued.access_token.into_exposed(),
        access_token_expires_at: Some(timestamp(issued.access_token_expires_at)),
        refresh_token: issued.refresh_token.into_exposed(),
        refresh_token_expires_at: Some(timestamp(issued.refresh_token_expires_at)),
        session_id: issued.session_id.to_string(),
        user_id: issued.user_id.to_string(),
    }
}

/// A refresh's tokens as a `RefreshResponse`.
pub(crate) fn refresh_response(issued: IssuedTokens) -> pb::RefreshResponse {
    let a = authenticate_response(issued);
    pb::RefreshResponse {
        access_token: a.access_token,
        access_token_expires_at: a.access_token_expires_at,
        refresh_token: a.refresh_token,
        refresh_token_expires_at: a.refresh_token_expires_at,
        session_id: a.session_id,
        user_id: a.user_id,
    }
}

use crate::domain::{
    admin::UserView,
    client_auth::IssuedServiceToken,
    event::{EventKind, EventRecord},
    keys::{KeyState, SigningKeyRecord},
    service_account::ServiceAccountRecord,
    session::{SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
};

/// Default page size of every listing.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size; larger requests are capped silently.
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

/// The page size to use for a requested one (0 or negative: the default).
pub(crate) fn page_size(requested: i32) -> usize {
    match usize::try_from(requested) {
        Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
    }
}

/// The token of the page after `rows`: empty when the page was not full
/// (it was the last), else an opaque cursor naming its last row's id.
pub(crate) fn next_page_token<T>(rows: &[T], limit: usize, id: impl Fn(&T) -> &[u8; 16]) -> String {
    match rows.last() {
        Some(last) if rows.len() == limit => crate::domain::password::base64_url(id(last)),
        _ => String::new(),
    }
}

/// Reads a page token back into an id; empty means the first page.
pub(crate) fn from_page_token<T>(token: &str, parse: impl Fn(&[u8]) -> Option<T>) -> Result<Option<T>, tonic::Status> {
    use base64::Engine as _;
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || tonic::Status::invalid_argument("page_token is not one this server returned");
    if token.len() > 64 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    parse(&bytes).map(Some).ok_or_else(invalid)
}

fn optional_timestamp(t: Option<Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

/// A user as the API shows it: never the hash.
pub(crate) fn user(view: &UserView) -> pb::User {
    let u = &view.user;
    pb::User {
        user_id: u.id.to_string(),
        username: u.username.clone(),
        roles: u.roles.clone(),
        disabled: u.disabled,
        created_at: Some(timestamp(u.created_at)),
        updated_at: Some(timestamp(u.updated_at)),
        active_sessions: view.active_sessions,
    }
}

/// A session as the API shows it.
pub(crate) fn session(s: &SessionRecord) -> pb::Session {
    pb::Session {
        session_id: s.id.to_string(),
        user_id: s.user_id.to_string(),
        username: s.username.clone(),
        state: match s.state {
            SessionState::Active => pb::SessionState::Active,
            SessionState::Revoked => pb::SessionState::Revoked,
            SessionState::Expired => pb::SessionState::Expired,
        }
        .into(),
        created_at: Some(timestamp(s.created_at)),
        last_seen_at: Some(timestamp(s.last_seen_at)),
        expires_at: Some(timestamp(s.expires_at)),
        client_address: s.client_address.clone(),
        user_agent: s.user_agent.clone(),
        device_name: s.device_name.clone(),
        revoked_at: optional_timestamp(s.revoked_at),
        revoke_reason: s.revoke_reason.clone().unwrap_or_default(),
    }
}

/// A token record as the API shows it.
pub(crate) fn token(t: &TokenRecord) -> pb::Token {
    pb::Token {
        token_id: t.id.to_string(),
        kind: match t.kind {
            TokenKind::Access => pb::TokenKind::Access,
            TokenKind::Refresh => pb::TokenKind::Refresh,
        }
        .into(),
        session_id: t.session_id.to_string(),
        user_id: t.user_id.to_string(),
        username: t.username.clone(),
        state: match t.state {
            TokenState::Active => pb::TokenState::Active,
            TokenState::Revoked => pb::TokenState::Revoked,
            TokenState::Expired => pb::TokenState::Expired,
            TokenState::Rotated => pb::TokenState::Rotated,
        }
        .into(),
        issued_at: Some(timestamp(t.issued_at)),
        expires_at: Some(timestamp(t.expires_at)),
        revoked_at: optional_timestamp(t.revoked_at),
    }
}

/// A signing key: public material only.
pub(crate) fn signing_key(k: &SigningKeyRecord) -> pb::SigningKey {
    pb::SigningKey {
        kid: k.kid.clone(),
        algorithm: k.algorithm.clone(),
        state: match k.state {
            KeyState::Active => pb::SigningKeyState::Active,
            KeyState::Verifying => pb::SigningKeyState::Verifying,
            KeyState::Retired => pb::SigningKeyState::Retired,
        }
        .into(),
        created_at: Some(timestamp(k.created_at)),
        superseded_at: optional_timestamp(k.superseded_at),
        retired_at: optional_timestamp(k.retired_at),
        public_jwk_json: k.public_jwk().to_string(),
    }
}

/// An audit event.
pub(crate) fn event(e: &EventRecord) -> pb::Event {
    use pb::EventKind as P;
    let kind = match e.kind {
        EventKind::SessionCreated => P::SessionCreated,
        EventKind::SessionRefreshed => P::SessionRefreshed,
        EventKind::SessionRevoked => P::SessionRevoked,
        EventKind::SessionExpired => P::SessionExpired,
        EventKind::TokenIssued => P::TokenIssued,
        EventKind::TokenRevoked => P::TokenRevoked,
        EventKind::UserCreated => P::UserCreated,
        EventKind::UserUpdated => P::UserUpdated,
        EventKind::UserDisabled => P::UserDisabled,
        EventKind::UserEnabled => P::UserEnabled,
        EventKind::UserDeleted => P::UserDeleted,
        EventKind::LoginFailed => P::LoginFailed,
        EventKind::KeyRotated => P::KeyRotated,
        EventKind::KeyRetired => P::KeyRetired,
        EventKind::RefreshReused => P::RefreshReused,
        EventKind::AccountLocked => P::AccountLocked,
        EventKind::StoreLossAccepted => P::StoreLossAccepted,
        EventKind::ServiceAccountCreated => P::ServiceAccountCreated,
        EventKind::ServiceAccountUpdated => P::ServiceAccountUpdated,
        EventKind::ServiceAccountDisabled => P::ServiceAccountDisabled,
        EventKind::ServiceAccountEnabled => P::ServiceAccountEnabled,
        EventKind::ServiceAccountDeleted => P::ServiceAccountDeleted,
        EventKind::ClientSecretAdded => P::ClientSecretAdded,
        EventKind::ClientSecretRevoked => P::ClientSecretRevoked,
        EventKind::ClientKeySet => P::ClientKeySet,
        EventKind::ServiceTokensRevoked => P::ServiceTokensRevoked,
        EventKind::ClientAuthFailed => P::ClientAuthFailed,
    };
    let text = |id: Option<String>| id.unwrap_or_default();
    pb::Event {
        sequence: e.sequence,
        occurred_at: Some(timestamp(e.occurred_at)),
        kind: kind.into(),
        actor_user_id: text(e.actor.map(|a| a.to_string())),
        user_id: text(e.user_id.map(|u| u.to_string())),
        username: e.username.clone().unwrap_or_default(),
        session_id: text(e.session_id.map(|s| s.to_string())),
        token_id: e.token_id.clone().unwrap_or_default(),
        detail: e.detail.clone(),
        client_id: text(e.client_id.map(|c| c.to_string())),
        session: e.session_record.as_deref().map(|s| Box::new(session(s))),
        token: e.token_record.as_deref().map(|t| Box::new(token(t))),
    }
}

/// A service account as the API shows it: never a secret or a hash.
pub(crate) fn service_account(a: &ServiceAccountRecord) -> pb::ServiceAccount {
    pb::ServiceAccount {
        client_id: a.client_id(),
        name: a.name.clone(),
        roles: a.roles.clone(),
        audiences: a.audiences.clone(),
        scopes: a.scopes.clone(),
        disabled: a.disabled,
        created_at: Some(timestamp(a.created_at)),
        updated_at: Some(timestamp(a.updated_at)),
        secrets: a
            .secrets
            .iter()
            .map(|s| pb::ClientSecret {
                secret_id: s.id.to_string(),
                created_at: Some(timestamp(s.created_at)),
                expires_at: optional_timestamp(s.expires_at),
                last_used_at: optional_timestamp(s.last_used_at),
            })
            .collect(),
        key: a.key.as_ref().map(|k| pb::ClientKey {
            algorithm: k.algorithm.name().to_string(),
            public_jwk_json: k.public_jwk().to_string(),
            registered_at: Some(timestamp(k.registered_at)),
        }),
    }
}

/// A service token as an `IssueServiceTokenResponse`.
pub(crate) fn issue_service_token_response(issued: IssuedServiceToken) -> pb::IssueServiceTokenResponse {
    pb::IssueServiceTokenResponse {
        access_token: issued.access_token.into_exposed(),
        expires_at: Some(timestamp(issued.expires_at)),
        audience: issued.audience,
        scopes: issued.scopes,
        token_id: issued.token_id.to_string(),
    }
}
