//! Why a token was refused, and the names each reason goes by.

/// Why a token was refused. Mirrors `sigil.v1.ValidationFailure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValidationFailure {
    /// Not a well-formed access token of ours.
    Malformed,
    /// The signature does not verify, or the algorithm is not allowed.
    BadSignature,
    /// The `kid` names no key of ours.
    UnknownKey,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// The requested audience is not in `aud`.
    WrongAudience,
    /// `iss` is not ours.
    WrongIssuer,
    /// The token was revoked.
    TokenRevoked,
    /// Its session was revoked.
    SessionRevoked,
    /// Its session expired.
    SessionExpired,
    /// Its user is disabled.
    UserDisabled,
}

impl ValidationFailure {
    /// Every failure, in the order of the protobuf enum.
    pub const ALL: [ValidationFailure; 11] = [
        ValidationFailure::Malformed,
        ValidationFailure::BadSignature,
        ValidationFailure::UnknownKey,
        ValidationFailure::Expired,
        ValidationFailure::NotYetValid,
        ValidationFailure::WrongAudience,
        ValidationFailure::WrongIssuer,
        ValidationFailure::TokenRevoked,
        ValidationFailure::SessionRevoked,
        ValidationFailure::SessionExpired,
        ValidationFailure::UserDisabled,
    ];

    /// A short human description, as status messages say it.
    pub const fn text(self) -> &'static str {
        match self {
            ValidationFailure::Malformed => "malformed token",
            ValidationFailure::BadSignature => "bad signature",
            ValidationFailure::UnknownKey => "unknown signing key",
            ValidationFailure::Expired => "token expired",
            ValidationFailure::NotYetValid => "token not yet valid",
            ValidationFailure::WrongAudience => "wrong audience",
            ValidationFailure::WrongIssuer => "wrong issuer",
            ValidationFailure::TokenRevoked => "token revoked",
            ValidationFailure::SessionRevoked => "session revoked",
            ValidationFailure::SessionExpired => "session expired",
            ValidationFailure::UserDisabled => "user disabled",
        }
    }

    /// Its metric label (`outcome`).
    pub const fn label(self) -> &'static str {
        match self {
            ValidationFailure::Malformed => "malformed",
            ValidationFailure::BadSignature => "bad_signature",
            ValidationFailure::UnknownKey => "unknown_key",
            ValidationFailure::Expired => "expired",
            ValidationFailure::NotYetValid => "not_yet_valid",
            ValidationFailure::WrongAudience => "wrong_audience",
            ValidationFailure::WrongIssuer => "wrong_issuer",
            ValidationFailure::TokenRevoked => "token_revoked",
            ValidationFailure::SessionRevoked => "session_revoked",
            ValidationFailure::SessionExpired => "session_expired",
            ValidationFailure::UserDisabled => "user_disabled",
        }
    }
}

#[cfg(feature = "proto")]
impl From<ValidationFailure> for sigil_proto::pb::ValidationFailure {
    fn from(failure: ValidationFailure) -> Self {
        use sigil_proto::pb::ValidationFailure as P;
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
}
