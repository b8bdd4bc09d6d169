//! Access tokens: their claims, signing, and verification with a cache of
//! verified signatures.
//!
//! Verification follows RFC 8725: the header is inspected by Sigil before
//! any signature work. Only `alg: EdDSA` is accepted (no `none`, no HMAC
//! keyed with a public key), `typ` must be `at+jwt` (RFC 9068), the `kid`
//! must name a key of the in-memory ring, and headers that point elsewhere
//! for key material (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions
//! (`crit`) make the token malformed: nothing is ever fetched.
//!
//! A verified token's claims are cached per exact token string, so a hot
//! token costs one hash-map look-up; expiry, audience and revocation are
//! checked on every call, cached or not.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use super::{
    DomainError, SessionId, Timestamp, TokenId, UserId,
    keys::{ALGORITHM_EDDSA, KeyRing},
    limits::MAX_ACCESS_TOKEN_BYTES,
};

/// The `typ` header of Sigil access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

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

/// The claims of a Sigil access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// User id.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Session id.
    pub sid: String,
    /// The user's name when the token was issued.
    pub username: String,
    /// The user's roles when the token was issued.
    pub roles: Vec<String>,
}

/// A token whose signature, issuer and shape have been verified.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: AccessClaims,
    /// `sub`, parsed.
    pub user_id: UserId,
    /// `sid`, parsed.
    pub session_id: SessionId,
    /// `jti`, parsed.
    pub token_id: TokenId,
}

impl VerifiedToken {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|r| r == role)
    }
}

/// The header members Sigil looks at. Members that would make a verifier
/// fetch or trust outside key material are captured only to refuse them.
#[derive(Deserialize)]
struct InspectedHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    jwk: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

/// Verifies access tokens against a key ring and caches the verified ones.
pub struct TokenVerifier {
    issuer: String,
    leeway_seconds: i64,
    validation: Validation,
    cache: quick_cache::sync::Cache<String, Arc<VerifiedToken>>,
}

impl TokenVerifier {
    /// A verifier for tokens of `issuer`, with `leeway` on time checks and
    /// room for `cache_capacity` verified tokens.
    pub fn new(issuer: &str, leeway: Duration, cache_capacity: usize) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time checks are Sigil's own (below) so that cached and uncached
        // tokens are judged by exactly the same rule.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.set_issuer(&[issuer]);
        Self {
            issuer: issuer.to_string(),
            leeway_seconds: i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX),
            validation,
            cache: quick_cache::sync::Cache::new(cache_capacity.max(1)),
        }
    }

    /// The issuer this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies signature, header and claim shapes (cached), then the time
    /// window and the audience at `now`. Revocation is the caller's check.
    pub fn verify(
        &self,
        token: &str,
        keys: &KeyRing,
        audience: Option<&str>,
        now: Timestamp,
    ) -> Result<Arc<VerifiedToken>, ValidationFailure> {
        let verified = self.verify_signature(token, keys)?;
        let now = now.as_unix_seconds();
        let claims = &verified.claims;
        if now >= claims.exp.saturating_add(self.leeway_seconds) {
            return Err(ValidationFailure::Expired);
        }
        if now < claims.nbf.saturating_sub(self.leeway_seconds) {
            return Err(ValidationFailure::NotYetValid);
        }
        if let Some(wanted) = audience
            && !claims.aud.iter().any(|a| a == wanted)
        {
            return Err(ValidationFailure::WrongAudience);
        }
        Ok(verified)
    }

    /// Verifies only what cannot change over a token's life: header,
    /// signature, issuer and claim shapes. Results are cached.
    pub fn verify_signature(&self, token: &str, keys: &KeyRing) -> Result<Arc<VerifiedToken>, ValidationFailure> {
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(ValidationFailure::Malformed);
        }
        if let Some(hit) = self.cache.get(token) {
            return Ok(hit);
        }
        let verified = Arc::new(self.verify_uncached(token, keys)?);
        self.cache.insert(token.to_string(), verified.clone());
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str, keys: &KeyRing) -> Result<VerifiedToken, ValidationFailure> {
        let mut segments = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(ValidationFailure::Malformed);
        };
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| ValidationFailure::Malformed)?;
        let header: InspectedHeader = serde_json::from_slice(&header).map_err(|_| ValidationFailure::Malformed)?;
        if header.alg != ALGORITHM_EDDSA {
            return Err(ValidationFailure::BadSignature);
        }
        let outside_key_material = header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.jwk.is_some()
            || header.crit.is_some();
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt"));
        if outside_key_material || !typ_ok {
            return Err(ValidationFailure::Malformed);
        }
        let key = header.kid.as_deref().and_then(|kid| keys.verifier(kid)).ok_or(ValidationFailure::UnknownKey)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm => ValidationFailure::BadSignature,
            ErrorKind::InvalidIssuer => ValidationFailure::WrongIssuer,
            ErrorKind::ExpiredSignature => ValidationFailure::Expired,
            ErrorKind::ImmatureSignature => ValidationFailure::NotYetValid,
            _ => ValidationFailure::Malformed,
        })?;
        let claims = data.claims;
        let parsed = (claims.sub.parse(), claims.sid.parse(), claims.jti.parse());
        let (Ok(user_id), Ok(session_id), Ok(token_id)) = parsed else {
            return Err(ValidationFailure::Malformed);
        };
        Ok(VerifiedToken { claims, user_id, session_id, token_id })
    }
}

/// Signs `claims` with the ring's active key, with `typ: at+jwt` and `kid`.
pub fn sign(claims: &AccessClaims, keys: &KeyRing) -> Result<String, DomainError> {
    let active = keys.active();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
    header.kid = Some(active.kid.clone());
    jsonwebtoken::encode(&header, claims, &active.encoding)
        .map_err(|e| DomainError::Internal(format!("signing an access token failed: {e}")))
}
