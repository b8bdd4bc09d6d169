//! RFC 7523 client assertions (`private_key_jwt`): a JWT the client signs
//! with its registered key to authenticate, checked here before the
//! single-use rule (`jti`) is applied by the caller.
//!
//! As for access tokens (RFC 8725), the header is inspected before any
//! signature work: the algorithm must be the registered key's own (so
//! `none`, and HS256 "signed" with the public key as an HMAC secret, are
//! refused without being tried), and headers that point at other key
//! material (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions (`crit`) are
//! refused. The claims follow RFC 7523 §3: `iss` and `sub` are the
//! client id, `aud` names this server (its issuer or its token endpoint),
//! `exp` is required and near (a long-lived assertion would be a password
//! by another name), and `jti` is required.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::Validation;
use serde::Deserialize;

use super::{Timestamp, client_key::ClientKeyRecord, limits::MAX_ACCESS_TOKEN_BYTES};

/// Longest `jti` accepted (it is stored until the assertion expires).
pub(crate) const MAX_JTI_BYTES: usize = 256;

/// Why an assertion was refused: logged at debug level, never told to the
/// caller, which gets `invalid_client` whatever the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AssertionRefusal {
    /// Not three base64url segments with a JSON header and payload.
    Malformed,
    /// `alg` is not the registered key's (none, HS256, another curve).
    WrongAlgorithm,
    /// A header that points at other key material or demands extensions.
    ForeignKeyMaterial,
    /// The signature does not verify with the registered key.
    BadSignature,
    /// `aud` does not name this server.
    WrongAudience,
    /// `iss` or `sub` is not the client.
    WrongClient,
    /// Expired, not yet valid, or valid for longer than allowed.
    BadLifetime,
    /// No usable `jti`.
    NoJti,
}

/// What a verified assertion says for the single-use rule.
#[derive(Debug)]
pub(crate) struct VerifiedAssertion {
    /// Its `jti`.
    pub jti: String,
    /// When it expires: until then its `jti` must be remembered.
    pub expires_at: Timestamp,
}

/// How assertions are judged.
pub(crate) struct AssertionRules<'a> {
    /// Audiences that name this server: its issuer and token endpoint.
    pub audiences: &'a [&'a str],
    /// The longest an assertion may be valid for from now (and from its `iat`).
    pub max_lifetime: Duration,
    /// Clock leeway on `exp` and `nbf`.
    pub leeway: Duration,
}

#[derive(Deserialize)]
struct InspectedHeader {
    alg: String,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    jwk: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    sub: String,
    exp: i64,
    iat: Option<i64>,
    jti: Option<String>,
}

/// The payload member naming the client, read before verification to
/// find whose key verifies it (RFC 7521 §4.2: the client may send no
/// `client_id`).
#[derive(Deserialize)]
struct ClaimedSubject {
    sub: Option<String>,
}

/// The client id an assertion claims to come from (its `sub`), unverified.
pub(crate) fn claimed_client(assertion: &str) -> Option<String> {
    if assertion.len() > MAX_ACCESS_TOKEN_BYTES {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<ClaimedSubject>(&bytes).ok()?.sub
}

/// Verifies `assertion` as `client_id`'s, signed with `key`, at `now`.
pub(crate) fn verify(
    assertion: &str,
    client_id: &str,
    key: &ClientKeyRecord,
    rules: &AssertionRules<'_>,
    now: Timestamp,
) -> Result<VerifiedAssertion, AssertionRefusal> {
    if assertion.len() > MAX_ACCESS_TOKEN_BYTES {
        return Err(AssertionRefusal::Malformed);
    }
    let header = assertion.split('.').next().ok_or(AssertionRefusal::Malformed)?;
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| AssertionRefusal::Malformed)?;
    let header: InspectedHeader = serde_json::from_slice(&header).map_err(|_| AssertionRefusal::Malformed)?;
    if header.alg != key.algorithm.name() {
        return Err(AssertionRefusal::WrongAlgorithm);
    }
    if header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
        || header.jwk.is_some()
        || header.crit.is_some()
    {
        return Err(AssertionRefusal::ForeignKeyMaterial);
    }
    let decoding = key.decoding_key().map_err(|_| AssertionRefusal::BadSignature)?;
    let mut validation = Validation::new(key.algorithm.jws());
    // Time is judged below against `now`, with the lifetime cap.
    validation.validate_exp = false;
    validation.validate_nbf = true;
    validation.leeway = rules.leeway.as_secs();
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_audience(rules.audiences);
    validation.set_issuer(&[client_id]);
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &decoding, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AssertionRefusal::BadSignature
            }
            ErrorKind::InvalidAudience => AssertionRefusal::WrongAudience,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => AssertionRefusal::WrongClient,
            ErrorKind::ImmatureSignature | ErrorKind::ExpiredSignature => AssertionRefusal::BadLifetime,
            _ => AssertionRefusal::Malformed,
        }
    })?;
    let claims = data.claims;
    if claims.sub != client_id {
        return Err(AssertionRefusal::WrongClient);
    }
    let now_seconds = now.as_unix_seconds();
    let leeway = i64::try_from(rules.leeway.as_secs()).unwrap_or(i64::MAX);
    let max = i64::try_from(rules.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    let expired = now_seconds >= claims.exp.saturating_add(leeway);
    let too_long = claims.exp.saturating_sub(now_seconds) > max.saturating_add(leeway)
        || claims
            .iat
            .is_some_and(|iat| claims.exp.saturating_sub(iat) > max || iat > now_seconds.saturating_add(leeway));
    if expired || too_long {
        return Err(AssertionRefusal::BadLifetime);
    }
    let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES).ok_or(AssertionRefusal::NoJti)?;
    Ok(VerifiedAssertion { jti, expires_at: Timestamp::from_unix_seconds(claims.exp.saturating_add(leeway)) })
}
