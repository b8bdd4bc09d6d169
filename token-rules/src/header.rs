//! The JOSE header, inspected before any signature work (RFC 8725 §3.1).
//!
//! Only `alg: EdDSA` is accepted (no `none`, no HMAC keyed with a public
//! key), `typ` must be `at+jwt` (RFC 9068), and headers that point elsewhere
//! for key material (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions
//! (`crit`) make the token malformed: nothing is ever fetched.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use crate::{
    ValidationFailure,
    rules::{ACCESS_TOKEN_TYPE, ALGORITHM_EDDSA},
};

/// The header members Sigil looks at. Members that would make a verifier
/// fetch or trust outside key material are captured only to refuse them.
#[derive(Deserialize)]
struct InspectedHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    jwk: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

/// A header that passed [`inspect`]: the key it names, and its JSON for
/// [`check_members`].
pub(crate) struct Inspected {
    pub(crate) kid: String,
    json: Vec<u8>,
}

/// Checks the header of a compact JWS and returns the `kid` it names.
pub(crate) fn inspect(token: &str) -> Result<Inspected, ValidationFailure> {
    let mut segments = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(ValidationFailure::Malformed);
    };
    let json =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| ValidationFailure::Malformed)?;
    let header: InspectedHeader<'_> = serde_json::from_slice(&json).map_err(|_| ValidationFailure::Malformed)?;
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
    let kid = header.kid.ok_or(ValidationFailure::UnknownKey)?.into_owned();
    Ok(Inspected { kid, json })
}

/// Every header member as jsonwebtoken reads it (its `Header`: `cty`,
/// `x5t`, … typed, unknown members as JSON values): a header it cannot read
/// is malformed, as it always was when jsonwebtoken's `decode` read it (after
/// the key look-up, before the signature).
pub(crate) fn check_members(inspected: &Inspected) -> Result<(), ValidationFailure> {
    serde_json::from_slice::<jsonwebtoken::Header>(&inspected.json).map(drop).map_err(|_| ValidationFailure::Malformed)
}
