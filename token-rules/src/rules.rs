//! Signature, issuer, claim shapes, lifetime cap and time window: the
//! checks every judge of a Sigil access token makes, in the same order, so
//! that the same token gets the same [`ValidationFailure`] everywhere.
//!
//! A token is decoded once: the header by [`header`], the signature checked
//! with `jsonwebtoken::crypto::verify`, the claims parsed once into
//! [`AccessClaims`]. That is what `jsonwebtoken::decode` checks (it decodes
//! the header twice and the claims twice, into the caller's struct and its
//! own), in its order, with the same verdicts; `rules/tests.rs` pins them.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use uuid::Uuid;

use crate::{AccessClaims, ValidationFailure, header};

/// The JWS algorithm name of Ed25519 signatures, the only one accepted.
pub const ALGORITHM_EDDSA: &str = "EdDSA";

/// The `typ` header of Sigil access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Longest access token anyone judges; ours are well under 1 KiB. A longer
/// one is malformed before any decoding.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 8 * 1024;

/// How long after a key was superseded a token it signed may still carry a
/// later `iat`: other instances sharing the store keep signing with it until
/// they catch up with the rotation (normally milliseconds, at worst one
/// sync interval), and `iat` has whole seconds only.
pub const KEY_HANDOVER_SECONDS: i64 = 5;

/// A public key trusted to verify tokens.
pub struct TrustedKey {
    /// The public key.
    pub decoding: DecodingKey,
    /// When it stopped signing (seconds since the epoch), for a superseded
    /// key: no token it signed can have been issued later.
    pub signing_ended_at: Option<i64>,
}

/// Where the trusted keys come from: the server's key ring, or the key set
/// a verifier received on the revocation stream. A `kid` is only ever a key
/// into it; nothing is fetched.
pub trait KeyLookup {
    /// The trusted key named `kid`, if there is one.
    fn trusted_key(&self, kid: &str) -> Option<&TrustedKey>;
}

/// A token whose header, signature, issuer, lifetime and claim shapes have
/// been verified: what cannot change over its life.
#[derive(Clone, Debug)]
pub struct SignedToken {
    /// Its claims.
    pub claims: AccessClaims,
    /// The `kid` of the key that signed it.
    pub kid: String,
    /// `sub`, parsed: a user's id, or a service account's client id.
    pub user_id: Uuid,
    /// `sid`, parsed; the nil UUID in a service account's token, which
    /// has no session (no session ever has the nil id).
    pub session_id: Uuid,
    /// `jti`, parsed.
    pub token_id: Uuid,
    /// `client_id`, parsed, in a service account's token (it equals `sub`).
    pub client_id: Option<Uuid>,
}

/// The rules for tokens of one issuer and one access-token TTL.
#[derive(Clone)]
pub struct TokenRules {
    leeway_seconds: i64,
    /// The longest `exp - iat` a token of ours can have: the access-token
    /// TTL, in whole seconds rounded up (Sigil never mints longer). A
    /// longer-lived token was not minted by Sigil, whatever its signature
    /// says (a leaked key's forgeries). No leeway is added: a revocation is
    /// kept for TTL + leeway after it was made, which covers a token living
    /// TTL plus the leeway on its expiry, and not a second leeway.
    max_lifetime_seconds: i64,
    /// The one `iss` accepted.
    issuer: String,
}

impl TokenRules {
    /// The rules for tokens of `issuer` that live at most `ttl`, with
    /// `leeway` on time checks.
    pub fn new(issuer: &str, ttl: Duration, leeway: Duration) -> Self {
        Self {
            leeway_seconds: i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX),
            max_lifetime_seconds: i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX),
            issuer: issuer.to_string(),
        }
    }

    /// The time window of verified claims at `now` (seconds since the
    /// epoch): not expired, not before `nbf`, not issued in the future.
    pub fn check_time(&self, claims: &AccessClaims, now: i64) -> Result<(), ValidationFailure> {
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

    /// Verifies what cannot change over a token's life: size, header,
    /// signature against a key of `keys`, issuer, lifetime cap, the signing
    /// window of a superseded key, and the ids. Costs one signature check:
    /// callers cache the result per exact token string.
    pub fn verify_signature(&self, token: &str, keys: &impl KeyLookup) -> Result<SignedToken, ValidationFailure> {
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(ValidationFailure::Malformed);
        }
        let header = header::inspect(token)?;
        let key = keys.trusted_key(&header.kid).ok_or(ValidationFailure::UnknownKey)?;
        header::check_members(&header)?;
        // `inspect` found exactly three segments.
        let (message, signature) = token.rsplit_once('.').ok_or(ValidationFailure::Malformed)?;
        let (_, payload) = message.split_once('.').ok_or(ValidationFailure::Malformed)?;
        // A signature that is not base64url is malformed; one that does not
        // verify (any length) is a bad signature.
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.decoding, Algorithm::EdDSA) {
            Ok(true) => {}
            Ok(false) => return Err(ValidationFailure::BadSignature),
            Err(_) => return Err(ValidationFailure::Malformed),
        }
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ValidationFailure::Malformed)?;
        let claims: AccessClaims = serde_json::from_slice(&payload).map_err(|_| ValidationFailure::Malformed)?;
        // jsonwebtoken reads `exp` and `nbf` as unsigned numbers and requires
        // both: a negative one is a missing claim, malformed, before the
        // issuer is looked at. Time checks are ours (`check_time`) so that
        // cached and uncached tokens are judged by exactly the same rule.
        if claims.exp < 0 || claims.nbf < 0 {
            return Err(ValidationFailure::Malformed);
        }
        if claims.iss != self.issuer {
            return Err(ValidationFailure::WrongIssuer);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime_seconds {
            return Err(ValidationFailure::Malformed);
        }
        // A key signs nothing after it was superseded: a token "issued"
        // later was forged with a copy of it.
        if let Some(ended) = key.signing_ended_at
            && claims.iat > ended.saturating_add(self.leeway_seconds + KEY_HANDOVER_SECONDS)
        {
            return Err(ValidationFailure::BadSignature);
        }
        let (Ok(user_id), Ok(token_id)) = (Uuid::try_parse(&claims.sub), Uuid::try_parse(&claims.jti)) else {
            return Err(ValidationFailure::Malformed);
        };
        // A user's token names its session; a service account's names no
        // session and carries `client_id` = `sub` (RFC 9068 §2.2).
        let (session_id, client_id) = match &claims.client_id {
            None => (Uuid::try_parse(&claims.sid).map_err(|_| ValidationFailure::Malformed)?, None),
            Some(client) if claims.sid.is_empty() && Uuid::try_parse(client).ok() == Some(user_id) => {
                (Uuid::nil(), Some(user_id))
            }
            Some(_) => return Err(ValidationFailure::Malformed),
        };
        Ok(SignedToken { claims, kid: header.kid, user_id, session_id, token_id, client_id })
    }
}

/// Whether the claims admit the audience a caller asked for (none asked:
/// any).
pub fn check_audience(claims: &AccessClaims, audience: Option<&str>) -> Result<(), ValidationFailure> {
    match audience {
        Some(wanted) if !claims.aud.iter().any(|a| a == wanted) => Err(ValidationFailure::WrongAudience),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
