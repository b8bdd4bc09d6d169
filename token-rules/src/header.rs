//! The JOSE header, inspected before any signature work (RFC 8725 §3.1).
//!
//! Only `alg: EdDSA` is accepted (no `none`, no HMAC keyed with a public
//! key), `typ` must be `at+jwt` (RFC 9068), and headers that point elsewhere
//! for key material (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions
//! (`crit`) make the token malformed: nothing is ever fetched.

use base64::Engine as _;
use serde::Deserialize;

use crate::{
    ValidationFailure,
    rules::{ACCESS_TOKEN_TYPE, ALGORITHM_EDDSA},
};

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

/// Checks the header of a compact JWS and returns the `kid` it names.
pub(crate) fn inspect(token: &str) -> Result<String, ValidationFailure> {
    let mut segments = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(ValidationFailure::Malformed);
    };
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| ValidationFailure::Malformed)?;
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
    header.kid.ok_or(ValidationFailure::UnknownKey)
}
