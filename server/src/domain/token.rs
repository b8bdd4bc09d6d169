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
pub(crate) const ACCESS_TOKEN_TYPE: &str = "at+jwt";

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
    /// Session id; empty (absent) in a service account's token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    /// The user's name when the token was issued; empty (absent) in a
    /// service account's token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The user's (or service account's) roles when the token was issued.
    pub roles: Vec<String>,
    /// The service account's client id (RFC 9068 §2.2), equal to `sub`;
    /// absent in a user's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The granted scopes, space-separated (RFC 9068 §2.2.3); absent in a
    /// user's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
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
    /// The `kid` of the key that signed it.
    pub kid: String,
    /// The [`KeyRing::generation`] it was verified against: a cached
    /// verdict from an older ring is re-checked, so a key distrusted in an
    /// emergency stops verifying even tokens already in the cache.
    pub ring_generation: u64,
}

impl VerifiedToken {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.claims.roles.iter().any(|r| r == role)
    }

    /// When the token was minted, to the millisecond: the time inside its
    /// UUIDv7 `jti` (its `iat` has only whole seconds). `None` for an id
    /// that is not a UUIDv7, which Sigil never mints.
    pub fn minted_at(&self) -> Option<Timestamp> {
        self.token_id.created_at()
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

/// How long after a key was superseded a token it signed may still carry a
/// later `iat`: other instances sharing the store keep signing with it until
/// they catch up with the rotation (normally milliseconds, at worst one
/// sync interval), and `iat` has whole seconds only.
const KEY_HANDOVER_SECONDS: i64 = 5;

/// Verifies access tokens against a key ring and caches the verified ones.
pub(crate) struct TokenVerifier {
    leeway_seconds: i64,
    /// The longest `exp - iat` a token of ours can have: the access-token
    /// TTL, in whole seconds rounded up (Sigil never mints longer). A
    /// longer-lived token was not minted by Sigil, whatever its signature
    /// says (a leaked key's forgeries). No leeway is added: a revocation is
    /// kept for TTL + leeway after it was made, which covers a token living
    /// TTL plus the leeway on its expiry, and not a second leeway.
    max_lifetime_seconds: i64,
    validation: Validation,
    cache: quick_cache::sync::Cache<String, Arc<VerifiedToken>>,
}

impl TokenVerifier {
    /// A verifier for tokens of `issuer` that live at most `ttl`, with
    /// `leeway` on time checks and room for `cache_capacity` verified tokens.
    pub(crate) fn new(issuer: &str, ttl: Duration, leeway: Duration, cache_capacity: usize) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time checks are Sigil's own (below) so that cached and uncached
        // tokens are judged by exactly the same rule.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.set_issuer(&[issuer]);
        let leeway_seconds = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        Self {
            leeway_seconds,
            max_lifetime_seconds: i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX),
            validation,
            cache: quick_cache::sync::Cache::new(cache_capacity.max(1)),
        }
    }

    /// Verifies signature, header and claim shapes (cached), then the time
    /// window and the audience at `now`. Revocation is the caller's check.
    pub(crate) fn verify(
        &self,
        token: &str,
        keys: &KeyRing,
        audience: Option<&str>,
        now: Timestamp,
    ) -> Result<Arc<VerifiedToken>, ValidationFailure> {
        let verified = self.verify_signature(token, keys)?;
        self.check_time(&verified.claims, now)?;
        if let Some(wanted) = audience
            && !verified.claims.aud.iter().any(|a| a == wanted)
        {
            return Err(ValidationFailure::WrongAudience);
        }
        Ok(verified)
    }

    /// The time window of verified claims at `now`: not expired, not
    /// before `nbf`, not issued in the future.
    pub(crate) fn check_time(&self, claims: &AccessClaims, now: Timestamp) -> Result<(), ValidationFailure> {
        let now = now.as_unix_seconds();
        if now >= claims.exp.saturating_add(self.leeway_seconds) {
            return Err(ValidationFailure::Expired);
        }
        // A token issued in the future was not issued by this clock.
        if now < claims.nbf.saturating_sub(self.leeway_seconds) || now < claims.iat.saturating_sub(self.leeway_seconds)
        {
            return Err(ValidationFailure::NotYetValid);
        }
        Ok(())
    }

    /// Verifies only what cannot change over a token's life: header,
    /// signature, issuer and claim shapes. Results are cached.
    pub(crate) fn verify_signature(
        &self,
        token: &str,
        keys: &KeyRing,
    ) -> Result<Arc<VerifiedToken>, ValidationFailure> {
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(ValidationFailure::Malformed);
        }
        if let Some(hit) = self.cache.get(token)
            && hit.ring_generation == keys.generation()
        {
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
        let kid = header.kid.ok_or(ValidationFailure::UnknownKey)?;
        let key = keys.verifier(&kid).ok_or(ValidationFailure::UnknownKey)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation).map_err(|e| match e
            .kind()
        {
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
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_seconds {
            return Err(ValidationFailure::Malformed);
        }
        // A key signs nothing after it was superseded: a token "issued"
        // later was forged with a copy of it.
        if let Some(ended) = key.signing_ended_at
            && claims.iat > ended.as_unix_seconds().saturating_add(self.leeway_seconds + KEY_HANDOVER_SECONDS)
        {
            return Err(ValidationFailure::BadSignature);
        }
        let parsed = (claims.sub.parse(), claims.sid.parse(), claims.jti.parse());
        let (Ok(user_id), Ok(session_id), Ok(token_id)) = parsed else {
            return Err(ValidationFailure::Malformed);
        };
        Ok(VerifiedToken { claims, user_id, session_id, token_id, kid, ring_generation: keys.generation() })
    }
}

/// Signs `claims` with the ring's active key, with `typ: at+jwt` and `kid`.
pub(crate) fn sign(claims: &AccessClaims, keys: &KeyRing) -> Result<String, DomainError> {
    let active = keys.active();
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_string());
    header.kid = Some(active.kid.clone());
    jsonwebtoken::encode(&header, claims, &active.encoding)
        .map_err(|e| DomainError::internal_because("signing an access token failed", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::{KeyState, SigningKeyRecord};

    fn claims(iat: i64, ttl: i64) -> AccessClaims {
        AccessClaims {
            iss: "sigil".into(),
            sub: UserId::generate().to_string(),
            aud: vec!["sigil".into()],
            exp: iat + ttl,
            nbf: iat,
            iat,
            jti: TokenId::generate().to_string(),
            sid: SessionId::generate().to_string(),
            username: "u".into(),
            roles: vec![],
            client_id: None,
            scope: None,
        }
    }

    /// Signs with `record`'s private key, whatever its state.
    fn sign_with(record: &SigningKeyRecord, claims: &AccessClaims) -> String {
        let mut alone = record.clone();
        alone.state = KeyState::Active;
        sign(claims, &KeyRing::from_records(&[alone]).expect("ring")).expect("signs")
    }

    #[test]
    fn a_superseded_key_verifies_what_it_signed_before_but_nothing_issued_later() {
        let now = Timestamp::now();
        let mut old = SigningKeyRecord::generate_ed25519(now.minus(Duration::from_secs(7200))).expect("key");
        old.state = KeyState::Verifying;
        old.superseded_at = Some(now.minus(Duration::from_secs(600)));
        let new = SigningKeyRecord::generate_ed25519(now).expect("key");
        let ring = KeyRing::from_records(&[old.clone(), new]).expect("ring");
        let verifier = TokenVerifier::new("sigil", Duration::from_secs(900), Duration::ZERO, 16);

        let before = sign_with(&old, &claims(now.as_unix_seconds() - 700, 900));
        assert!(verifier.verify(&before, &ring, None, now).is_ok());
        // A leaked copy of the old key mints a token "issued" after it
        // stopped signing.
        let forged = sign_with(&old, &claims(now.as_unix_seconds(), 900));
        assert_eq!(verifier.verify(&forged, &ring, None, now).err(), Some(ValidationFailure::BadSignature));
    }

    #[test]
    fn a_lifetime_beyond_the_ttl_or_an_iat_in_the_future_is_refused() {
        let now = Timestamp::now();
        let key = SigningKeyRecord::generate_ed25519(now).expect("key");
        let ring = KeyRing::from_records(std::slice::from_ref(&key)).expect("ring");
        let verifier = TokenVerifier::new("sigil", Duration::from_secs(900), Duration::ZERO, 16);
        let longer = sign(&claims(now.as_unix_seconds(), 901), &ring).expect("signs");
        assert_eq!(verifier.verify(&longer, &ring, None, now).err(), Some(ValidationFailure::Malformed));
        let mut future = claims(now.as_unix_seconds() + 60, 900);
        future.nbf = now.as_unix_seconds();
        let future = sign(&future, &ring).expect("signs");
        assert_eq!(verifier.verify(&future, &ring, None, now).err(), Some(ValidationFailure::NotYetValid));
        let exact = sign(&claims(now.as_unix_seconds(), 900), &ring).expect("signs");
        assert!(verifier.verify(&exact, &ring, None, now).is_ok());
    }
}
