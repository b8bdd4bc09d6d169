//! Access tokens: signing, and verification with a cache of verified
//! signatures.
//!
//! The rules that decide a verdict (RFC 8725 header checks, `typ`, the
//! algorithm allow-list, issuer, lifetime cap, time window, audience) live
//! in `sigil-token-rules`, shared with the edge verifier; this module adds
//! the server's id types and the cache.
//!
//! A verified token's claims are cached per exact token string, so a hot
//! token costs one hash-map look-up; expiry, audience and revocation are
//! checked on every call, cached or not.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, Header};
use sigil_token_rules::{ACCESS_TOKEN_TYPE, MAX_ACCESS_TOKEN_BYTES, TokenRules, check_audience};
pub(crate) use sigil_token_rules::{AccessClaims, ValidationFailure};

use super::{DomainError, ServiceAccountId, SessionId, Timestamp, TokenId, UserId, keys::KeyRing};

/// A token whose signature, issuer and shape have been verified.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: AccessClaims,
    /// `sub`, parsed. For a service account's token this is no user: see
    /// [`VerifiedToken::client_id`], and never treat it as a user's id.
    pub user_id: UserId,
    /// `sid`, parsed; nil for a service account's token (no session).
    pub session_id: SessionId,
    /// The service account, for a service account's token (`client_id`).
    pub client_id: Option<ServiceAccountId>,
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
        self.claims.has_role(role)
    }

    /// Whether a user holds it (not a service account).
    pub fn is_user(&self) -> bool {
        self.client_id.is_none()
    }

    /// When the token was minted, to the millisecond: the time inside its
    /// UUIDv7 `jti` (its `iat` has only whole seconds). `None` for an id
    /// that is not a UUIDv7, which Sigil never mints.
    pub fn minted_at(&self) -> Option<Timestamp> {
        self.token_id.created_at()
    }
}

/// Verifies access tokens against a key ring and caches the verified ones.
pub(crate) struct TokenVerifier {
    rules: TokenRules,
    cache: quick_cache::sync::Cache<String, Arc<VerifiedToken>>,
}

impl TokenVerifier {
    /// A verifier for tokens of `issuer` that live at most `ttl`, with
    /// `leeway` on time checks and room for `cache_capacity` verified tokens.
    pub(crate) fn new(issuer: &str, ttl: Duration, leeway: Duration, cache_capacity: usize) -> Self {
        Self {
            rules: TokenRules::new(issuer, ttl, leeway),
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
        check_audience(&verified.claims, audience)?;
        Ok(verified)
    }

    /// The time window of verified claims at `now`: not expired, not
    /// before `nbf`, not issued in the future.
    pub(crate) fn check_time(&self, claims: &AccessClaims, now: Timestamp) -> Result<(), ValidationFailure> {
        self.rules.check_time(claims, now.as_unix_seconds())
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
        let signed = self.rules.verify_signature(token, keys)?;
        let verified = Arc::new(VerifiedToken {
            claims: signed.claims,
            user_id: UserId::from_uuid(signed.user_id),
            session_id: SessionId::from_uuid(signed.session_id),
            client_id: signed.client_id.map(ServiceAccountId::from_uuid),
            token_id: TokenId::from_uuid(signed.token_id),
            kid: signed.kid,
            ring_generation: keys.generation(),
        });
        self.cache.insert(token.to_string(), verified.clone());
        Ok(verified)
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
