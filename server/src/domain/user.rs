//! Users: the stored record and the rules for usernames.

use serde::{Deserialize, Serialize};

use super::{DomainError, Timestamp, UserId, limits::MAX_USERNAME_BYTES};

/// The role that grants the admin API.
pub const ADMIN_ROLE: &str = "admin";

/// A user as stored. The password is only ever an argon2id PHC string.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Stable id.
    pub id: UserId,
    /// Normalized username (see [`normalize_username`]).
    pub username: String,
    /// Argon2id hash in PHC string format.
    pub password_hash: String,
    /// Roles granted to the user, e.g. `admin`.
    pub roles: Vec<String>,
    /// A disabled user cannot log in and its tokens fail validation.
    pub disabled: bool,
    /// When the user was created.
    pub created_at: Timestamp,
    /// When the user was last changed.
    pub updated_at: Timestamp,
}

impl UserRecord {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

// The hash is not a secret in the sense of a password, but it is offline
// attack material: keep it out of logs along with everything else.
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Checks a username and returns its normalized form: surrounding
/// whitespace trimmed and lower-cased, so `Alice` and ` alice` are one user.
/// Empty, whitespace-only, oversized names and names with control
/// characters (NUL included) are refused.
pub fn normalize_username(raw: &str) -> Result<String, DomainError> {
    if raw.len() > MAX_USERNAME_BYTES {
        return Err(DomainError::invalid(format!("username is longer than {MAX_USERNAME_BYTES} bytes")));
    }
    if raw.chars().any(char::is_control) {
        return Err(DomainError::invalid("username contains control characters"));
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid("username is empty"));
    }
    Ok(trimmed.to_lowercase())
}

/// Checks a role name: non-empty, short, printable ASCII without spaces.
pub fn check_role(role: &str) -> Result<(), DomainError> {
    let printable = role.bytes().all(|b| b.is_ascii_graphic());
    if role.is_empty() || role.len() > 64 || !printable {
        return Err(DomainError::invalid(format!(
            "role {role:?} must be 1 to 64 printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_and_lowercased() {
        assert_eq!(normalize_username("  Alice ").ok().as_deref(), Some("alice"));
    }

    #[test]
    fn empty_blank_control_and_oversized_usernames_are_refused() {
        for bad in ["", "   ", "al\0ice", "bob\n", &"x".repeat(MAX_USERNAME_BYTES + 1)] {
            assert!(normalize_username(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(normalize_username(&"x".repeat(MAX_USERNAME_BYTES)).is_ok());
    }

    #[test]
    fn roles_must_be_printable_words() {
        assert!(check_role("admin").is_ok());
        assert!(check_role("").is_err());
        assert!(check_role("a b").is_err());
    }
}
