//! The claims of a Sigil access token.

use serde::{Deserialize, Serialize};

/// The claims of a Sigil access token.
///
/// New kinds of subject add their claims here (optional, so that every
/// token minted before still decodes); the rules read only the registered
/// claims and the ids.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// User id, or a service account's client id.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Session id; empty (absent) in a service account's token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    /// The user's name when the token was issued; empty (absent) in a
    /// service account's token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The user's (or service account's) roles when the token was issued.
    pub roles: Vec<String>,
    /// The service account's client id (RFC 9068 §2.2), equal to `sub`;
    /// absent in a user's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The granted scopes, space-separated (RFC 9068 §2.2.3); absent in a
    /// user's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl AccessClaims {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
