//! Conversions between domain values and `sigil.v1` messages.

use sigil_proto::pb;

use crate::domain::{
    Timestamp, identity::IssuedTokens, token::ValidationFailure, token::VerifiedToken,
};

/// A domain instant as a protobuf timestamp.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let millis = t.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// JWT seconds as a protobuf timestamp.
pub fn unix_seconds(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// The proto enum value of a validation failure.
pub fn failure(failure: ValidationFailure) -> pb::ValidationFailure {
    use pb::ValidationFailure as P;
    match failure {
        ValidationFailure::Malformed => P::Malformed,
        ValidationFailure::BadSignature => P::BadSignature,
        ValidationFailure::UnknownKey => P::UnknownKey,
        ValidationFailure::Expired => P::Expired,
        ValidationFailure::NotYetValid => P::NotYetValid,
        ValidationFailure::WrongAudience => P::WrongAudience,
        ValidationFailure::WrongIssuer => P::WrongIssuer,
        ValidationFailure::TokenRevoked => P::TokenRevoked,
        ValidationFailure::SessionRevoked => P::SessionRevoked,
        ValidationFailure::SessionExpired => P::SessionExpired,
        ValidationFailure::UserDisabled => P::UserDisabled,
    }
}

/// The claims of a verified token.
pub fn claims(token: &VerifiedToken) -> pb::Claims {
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
    }
}

/// A login's tokens as an `AuthenticateResponse`.
pub fn authenticate_response(issued: IssuedTokens) -> pb::AuthenticateResponse {
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
pub fn refresh_response(issued: IssuedTokens) -> pb::RefreshResponse {
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
