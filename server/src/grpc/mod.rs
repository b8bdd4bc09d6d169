//! gRPC adapters. Handlers are thin: check and convert the request, call the
//! domain core, convert the answer. Domain errors become statuses in exactly
//! one place, [`status`].

pub mod admin;
pub mod client_address;
pub mod convert;
pub mod identity;
pub mod status;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::domain::{Identity, token::VerifiedToken};

/// The caller's verified bearer token, if the request carries
/// `authorization: Bearer <access token>`. It is validated through the very
/// path of `Validate`, so a revoked token stops working at once. A header
/// that is present but unusable is an error, not an anonymous call.
pub fn bearer<T>(identity: &Identity, request: &Request<T>) -> Result<Option<Arc<VerifiedToken>>, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Status::unauthenticated("authorization metadata is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization metadata must be `Bearer <access token>`"))?;
    identity
        .validate(token.trim(), None)
        .map(Some)
        .map_err(|failure| Status::unauthenticated(format!("bearer token refused: {}", status::failure_text(failure))))
}
