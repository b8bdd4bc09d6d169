//! The domain core: users, sessions, tokens, signing keys and the revocation
//! index, the persistence port the store engines implement ([`port`]), and
//! [`Identity`], the service that ties them together.
//!
//! Nothing here knows about gRPC: the adapters in [`crate::grpc`] translate
//! requests into calls on [`Identity`] and [`DomainError`]s into statuses.

pub(crate) mod admin;
pub(crate) mod cluster;
pub mod error;
pub mod event;
pub(crate) mod gateway;
pub mod identity;
pub mod ids;
pub(crate) mod key_rotation;
pub mod keys;
pub(crate) mod limits;
pub mod lockout;
pub(crate) mod maintenance;
pub(crate) mod password;
pub mod port;
pub(crate) mod recovery;
pub(crate) mod refresh_rotation;
pub mod revocation;
pub mod revocation_stream;
pub mod secret;
pub mod session;
pub(crate) mod session_revocation;
pub(crate) mod stats;
pub mod subscription;
pub mod time;
pub(crate) mod token;
pub mod user;
pub(crate) mod username_migration;

pub use error::DomainError;
pub use identity::{Identity, IdentitySettings};
pub use ids::{SessionId, TokenId, UserId};
pub use secret::Secret;
pub use time::Timestamp;
