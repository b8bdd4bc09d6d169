//! The domain core: users, sessions, tokens, signing keys and the revocation
//! index, the persistence port the store engines implement ([`port`]), and
//! [`Identity`], the service that ties them together.
//!
//! Nothing here knows about gRPC: the adapters in [`crate::grpc`] translate
//! requests into calls on [`Identity`] and [`DomainError`]s into statuses.

pub mod admin;
pub mod cluster;
pub mod error;
pub mod event;
pub mod identity;
pub mod ids;
pub mod key_rotation;
pub mod keys;
pub mod limits;
pub mod lockout;
pub mod maintenance;
pub mod password;
pub mod port;
pub mod recovery;
pub mod refresh_rotation;
pub mod revocation;
pub mod secret;
pub mod session;
pub mod session_revocation;
pub mod stats;
pub mod time;
pub mod token;
pub mod user;
pub mod username_migration;

pub use error::DomainError;
pub use identity::{Identity, IdentitySettings};
pub use ids::{SessionId, TokenId, UserId};
pub use secret::Secret;
pub use time::Timestamp;
