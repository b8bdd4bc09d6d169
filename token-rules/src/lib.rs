//! The rules that decide whether a Sigil access token is accepted, written
//! once for every place that judges one: the server's `Validate` and the
//! edge verifier (`sigil-verifier`).
//!
//! Verification follows RFC 8725: the header is inspected before any
//! signature work ([`header`]), the signature and claim shapes are checked
//! against a key the caller trusts ([`TokenRules::verify_signature`]), and
//! the time window and audience are checked on every call
//! ([`TokenRules::check_time`], [`check_audience`]). What is *revoked* is
//! looked up in the revocation index, which each side keeps in its own
//! shape; which revocation's verdict wins is decided here
//! ([`RevocationMatches::verdict`]).
//!
//! This crate knows nothing of gRPC or storage: it depends on jsonwebtoken
//! and serde only.

mod claims;
mod failure;
mod header;
mod revocation;
mod rules;

pub use claims::AccessClaims;
pub use failure::ValidationFailure;
pub use revocation::RevocationMatches;
pub use rules::{
    ACCESS_TOKEN_TYPE, ALGORITHM_EDDSA, KEY_HANDOVER_SECONDS, KeyLookup, MAX_ACCESS_TOKEN_BYTES, SignedToken,
    TokenRules, TrustedKey, check_audience,
};
