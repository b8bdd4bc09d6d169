//! gRPC adapters. Handlers are thin: check and convert the request, call the
//! domain core, convert the answer. Domain errors become statuses in exactly
//! one place, [`status`].

pub(crate) mod admin;
pub(crate) mod check_request;
pub(crate) mod client_address;
pub(crate) mod convert;
pub(crate) mod ext_authz;
pub(crate) mod identity;
pub(crate) mod revocation;
pub(crate) mod status;
pub(crate) mod validate_route;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::domain::{
    Identity,
    token::{ValidationFailure, VerifiedToken},
};

/// The caller's verified bearer token, if the request carries
/// `authorization: Bearer <access token>`. It is validated through the very
/// path of `Validate`, so a revoked token stops working at once, and it must
/// be minted for Sigil's own audience: a token a user obtained for another
/// service never speaks to Sigil's APIs. A header that is present but
/// unusable is an error, not an anonymous call; so are two, as at every
/// other door (`/authz`, the OAuth endpoints, the verifier's layer), since a
/// proxy in front may have acted on the other one.
pub(crate) fn bearer<T>(identity: &Identity, request: &Request<T>) -> Result<Option<Arc<VerifiedToken>>, Status> {
    let mut values = request.metadata().get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Status::invalid_argument("send one authorization header: this request has several"));
    }
    let value = value.to_str().map_err(|_| Status::unauthenticated("authorization metadata is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization metadata must be `Bearer <access token>`"))?;
    identity
        .validate(token.trim(), Some(identity.own_audience()))
        .map(Some)
        .map_err(|failure| bearer_refused(identity, failure))
}

/// The status of a bearer token that no longer (or never did) authorize.
pub(crate) fn bearer_refused(identity: &Identity, failure: ValidationFailure) -> Status {
    let text = status::FailureNames::of(failure).text;
    match failure {
        ValidationFailure::WrongAudience => Status::unauthenticated(format!(
            "bearer token refused: {text}: Sigil's own APIs need a token minted for audience {:?} (log in without an audience)",
            identity.own_audience()
        )),
        _ => Status::unauthenticated(format!("bearer token refused: {text}")),
    }
}
